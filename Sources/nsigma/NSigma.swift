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
        abstract: "Top-nσ sampling on the CPU: filter, sample, benchmark, inspect the machine.",
        subcommands: [Bench.self, Filter.self, Sample.self, Info.self]
    )

    static func main() {
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
