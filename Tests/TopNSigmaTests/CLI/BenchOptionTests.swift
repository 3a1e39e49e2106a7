import CAllocationCounter
import Foundation
import Testing

/// `nsigma bench` options out of range: each exits 2 with a message naming the option, before
/// anything is allocated (no trap, no abort on allocation, no run that goes on for minutes).
@Suite struct BenchOptionTests {
    @Test(
        "bench options out of range exit 2 naming the option",
        .timeLimit(.minutes(1)),
        arguments: [
            (["--threads", "2000"], "--threads"),
            (["--threads", "0"], "--threads"),
            (["--batch", "100000000"], "--batch"),
            (["--lm-head", "1000000000"], "--lm-head"),
            (["--lm-head", "0"], "--lm-head"),
            (["--vocab", "9223372036854775807"], "--vocab"),
            (["--vocab", "3000000000"], "--vocab"),
            (["--vocab", "1"], "--vocab"),
            (["--vocab", "99999999999999999999999"], "--vocab"),
            (["--vocab", "49152", "--lm-head", "50000"], "--lm-head"),
            (["--vocab", "2000000000", "--batch", "1", "--threads", "1024"], "memory"),
            (["--seconds", "1e300"], "--seconds"),
            (["--strict"], "--strict")
        ])
    func outOfRange(options: [String], named: String) throws {
        let run = try CLI.run(["bench", "--seconds", "0.001", "--methods", "fused-topnsigma"] + options)
        #expect(run.status == 2, "\(options): status \(run.status), stderr \(run.stderr)")
        #expect(run.stdout.isEmpty, "\(options): \(run.stdout)")
        #expect(run.stderr.hasPrefix("nsigma: "), "\(options): \(run.stderr)")
        #expect(run.stderr.contains(named), "\(options): \(run.stderr)")
    }

    @Test("a baseline none of whose entries this run has fails (exit 1), naming the entries")
    func unmatchedBaseline() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "nsigma-bench-options-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let json = directory.appendingPathComponent("small.json").path
        let tiny = ["bench", "--batch", "1", "--threads", "1", "--seconds", "0.001", "--methods", "fused-topnsigma"]
        let first = try CLI.run(tiny + ["--vocab", "2000", "--json", json])
        #expect(first.status == 0, "\(first.stderr)")
        // The same options: every entry matches, nothing regressed by 1000%.
        let same = try CLI.run(tiny + ["--vocab", "2000", "--baseline", json, "--max-regression", "1000"])
        #expect(same.status == 0, "\(same.stdout) \(same.stderr)")
        #expect(same.stdout.contains("no result regressed"))
        // Another vocab: no entry of the baseline has a twin in this run.
        let other = try CLI.run(tiny + ["--vocab", "3000", "--baseline", json, "--max-regression", "1000"])
        #expect(other.status == 1, "\(other.stdout) \(other.stderr)")
        #expect(other.stdout.contains("UNMATCHED baseline entry fused-topnsigma batch 1 vocab 2000 threads 1"))
        #expect(other.stdout.contains("nothing compared"))
    }

    #if os(Linux)
    /// Issue 20: a signal to the bench's pid (as a CI timeout sends it) during the busy-core
    /// check left its `sh` spinner running at 100 % forever. The script starts `--checks`, waits
    /// for the spinner (the bench's `sh` child, found in /proc: no procps needed), signals the bench, and reports the bench's exit
    /// status and whether the spinner is still alive 0.3 s later. After SIGKILL no handler runs:
    /// the spinner must notice by itself that its parent is gone.
    @Test(
        "a signal to bench --checks during the busy-core check leaves no spinner behind",
        .timeLimit(.minutes(2)),
        .disabled(
            if: !topnsigma_allocation_counting_available(),
            "a sanitizer build: --checks takes minutes under ThreadSanitizer; the release suite runs this test"),
        arguments: [("TERM", 143), ("INT", 130), ("HUP", 129), ("KILL", 137)])
    func spinnerCleanup(signal: String, status: Int) throws {
        let script = """
            set -m
            "$0" bench --checks --seconds 0.05 >/dev/null 2>&1 &
            pid=$!
            for _ in $(seq 1 2000); do
              child=$(for s in /proc/[0-9]*/stat; do
                read -r p c _ pp _ < "$s" 2>/dev/null && [ "$pp" = "$pid" ] && [ "$c" = "(sh)" ] && echo "$p"
              done)
              if [ -n "$child" ]; then
                kill -\(signal) "$pid"; wait "$pid"; echo "exit $?"
                sleep 0.3
                # Gone, or a zombie (it exited; where pid 1 does not reap, it stays one).
                state=$(sed -n 's/^State:[[:space:]]*\\([A-Z]\\).*/\\1/p' "/proc/$child/status" 2>/dev/null)
                if [ -n "$state" ] && [ "$state" != Z ]; then echo "spinner alive"; kill -KILL "$child"; else echo "spinner gone"; fi
                exit 0
              fi
              kill -0 "$pid" 2>/dev/null || { echo "bench ended without a spinner"; exit 0; }
              sleep 0.05
            done
            kill -KILL "$pid"; echo "no spinner within 100 s"
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script, CLI.executable.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(text == "exit \(status)\nspinner gone\n", "SIG\(signal): \(text)")
    }
    #endif
}
