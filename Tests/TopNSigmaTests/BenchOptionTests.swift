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
}
