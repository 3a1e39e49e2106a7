import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// `nsigma`: the TopNSigma command-line tool.
///
/// Exit status: 0 success; 1 a benchmark regression (`bench --baseline`); 2 unreadable input or a
/// bad option (message on stderr, nothing on stdout); 3 at least one row failed (its line on
/// stdout carries the error, every other row is printed).
@main
struct NSigma: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nsigma",
        abstract: "Top-nσ sampling on the CPU: filter, sample, verify drafts, benchmark, inspect the machine.",
        subcommands: [Bench.self, Filter.self, Sample.self, Verify.self, Info.self]
    )

    static func main() {
        quietOpenBLASThreadsForBench()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let exit as ExitCode {
            exitProcess(exit.rawValue)
        } catch let error as UsageError {
            writeStandardError("nsigma: \(error.message)\n")
            exitProcess(2)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                exitProcess(0)
            }
            writeStandardError(fullMessage(for: error) + "\n")
            exitProcess(2)
        }
    }
}

/// An input or option error: reported on stderr, exit status 2.
struct UsageError: Error {
    var message: String
}

func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

func exitProcess(_ code: Int32) -> Never {
    fflush(nil)
    exit(code)
}

/// OpenBLAS's worker threads busy-wait for about 2^28 cycles after each call (its
/// OPENBLAS_THREAD_TIMEOUT default); during `bench` they would steal the cores the sampler is being
/// timed on (a 2-thread single-row sample measured 90 µs instead of 13 µs here). OpenBLAS reads the
/// variable when it loads, so `bench` re-executes itself once with OPENBLAS_THREAD_TIMEOUT=4 (the
/// minimum: 2^4 cycles of spinning) unless the caller set it.
func quietOpenBLASThreadsForBench() {
    let arguments = CommandLine.arguments
    guard arguments.count > 1, arguments[1] == "bench", getenv("OPENBLAS_THREAD_TIMEOUT") == nil else { return }
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
    argv.append(nil)
    execv("/proc/self/exe", argv)
    // exec failed (no /proc): run on, with OpenBLAS's default spinning.
}
