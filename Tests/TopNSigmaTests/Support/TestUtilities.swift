import Foundation
import TopNSigma
import TopNSigmaIO

// The helpers every suite shares: the `nsigma` binary, temporary input files, the real-logits
// fixture, seeded test data and the truncation reference. The float64 oracle itself is in
// Reference.swift.

// MARK: - The nsigma binary

/// The `nsigma` binary built beside this test bundle, run as a child process.
enum CLI {
    /// One run of the binary: its exit status and everything it printed.
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String

        /// stdout as JSON lines, one object per line.
        var lines: [[String: Any]] {
            stdout.split(separator: "\n").map {
                try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
        }

        /// The flat number array `key` of each stdout line, read with `Double(_:)`: exact where
        /// ``lines`` is not (JSONSerialization on Linux can round a 17-digit number off by an
        /// ulp). Nil for a line without the key.
        func exactNumbers(_ key: String) -> [[Double]?] {
            stdout.split(separator: "\n").map { line in
                guard let start = line.range(of: "\"\(key)\": ["),
                    let end = line[start.upperBound...].firstIndex(of: "]")
                else { return nil }
                return line[start.upperBound..<end].split(separator: ",").map {
                    Double($0.trimmingCharacters(in: .whitespaces))!
                }
            }
        }
    }

    /// The `nsigma` binary: in the test bundle's directory or up to three directories above it.
    static var executable: URL {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<3 where !FileManager.default.fileExists(atPath: directory.appendingPathComponent("nsigma").path) {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("nsigma")
    }

    /// Runs `nsigma` with `arguments` to completion.
    static func run(_ arguments: [String]) throws -> Run {
        try run(executable, arguments)
    }

    /// Runs `nsigma` with `arguments` in an address space of at most `kibibytes` (`ulimit -v`),
    /// so that an allocation the size of a huge vocabulary's fails here as it would on a machine
    /// without the memory, from a small file. One OpenBLAS thread: OpenBLAS's own threads retry
    /// a failed allocation forever. Killed after 60 s (status 137), should anything still hang.
    static func run(_ arguments: [String], addressSpaceKiB kibibytes: Int) throws -> Run {
        try run(
            URL(fileURLWithPath: "/bin/sh"),
            ["-c", "ulimit -v \(kibibytes) && exec timeout -s KILL 60 \"$0\" \"$@\"", executable.path] + arguments,
            environment: ["OPENBLAS_NUM_THREADS": "1"])
    }

    private static func run(_ program: URL, _ arguments: [String], environment: [String: String] = [:]) throws -> Run {
        let process = Process()
        process.executableURL = program
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }
}

// MARK: - Temporary files

/// Writes `data` to a new file in the temporary directory whose name ends in `name`; its path.
func temporaryFile(_ name: String, _ data: Data) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("nsigma-test-\(UUID().uuidString)-\(name)")
        .path
    try data.write(to: URL(fileURLWithPath: path))
    return path
}

/// A raw little-endian float32 logits file holding `values`; its path.
func rawFile(_ values: [Float]) throws -> String {
    try temporaryFile("logits.f32", values.withUnsafeBytes { Data($0) })
}

/// A text file (JSON options, drafts) holding `text`; its path.
func textFile(_ name: String, _ text: String) throws -> String {
    try temporaryFile(name, Data(text.utf8))
}

/// The bytes of a version-1 `.npy` file: the magic, the header dict text `header` padded with
/// spaces and a newline to a multiple of 64 bytes, then `data`.
func numPy(_ header: String, data: [UInt8] = []) -> Data {
    var text = header
    while (10 + text.utf8.count + 1) % 64 != 0 { text += " " }
    text += "\n"
    var bytes = Data([
        0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(text.utf8.count & 0xFF), UInt8(text.utf8.count >> 8)
    ])
    bytes.append(contentsOf: Array(text.utf8))
    bytes.append(contentsOf: data)
    return bytes
}

// MARK: - The real-logits fixture

/// The real-logits fixture: 8 rows of SmolLM2-135M (vocab 49152) copied from shared/data.
enum Fixture {
    static let logits: LogitsFile = {
        let url = Bundle.module.url(forResource: "smollm2-135m-8rows", withExtension: "npy", subdirectory: "Fixtures")!
        return try! LogitsFile.read(path: url.path)
    }()

    static var path: String {
        Bundle.module.url(forResource: "smollm2-135m-8rows", withExtension: "npy", subdirectory: "Fixtures")!.path
    }

    static func row(_ r: Int) -> [Float] {
        Array(logits.values[(r * logits.vocab)..<((r + 1) * logits.vocab)])
    }
}

// MARK: - Seeded test data

/// A seeded generator for test data (SplitMix64), independent of the library's Philox.
struct TestRandom {
    var generator: SplitMix64

    init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    mutating func next() -> UInt64 { generator.next() }

    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    mutating func gaussian() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * .pi * u2)
    }

    mutating func row(count: Int, mean: Double = 0, std: Double = 4) -> [Float] {
        (0..<count).map { _ in Float(mean + std * gaussian()) }
    }
}

// MARK: - The truncation reference

extension Reference {
    /// The distribution a row is drawn from under `parameters`' truncations, in float64 from the
    /// combination rule: Top-nσ, top-k and min-p intersected (top-k ties to the lower id), then
    /// top-p keeps the smallest most-probable prefix of the renormalized rest. Most probable
    /// first, ties by lower id.
    static func truncated(_ row: [Float], _ parameters: SamplingParameters) -> [(token: Int, probability: Double)] {
        let t = Double(parameters.temperature)
        var kept = Reference.kept(row, n: parameters.nSigma.map(Double.init))
        let maximum = kept.map { Double(row[$0]) }.max()!
        if let minP = parameters.minP {
            kept = kept.filter { Foundation.exp((Double(row[$0]) - maximum) / t) >= Double(minP) }
        }
        if let k = parameters.topK {
            kept = Array(kept.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k))
        }
        func normalized(_ ids: [Int]) -> [(token: Int, probability: Double)] {
            let weights = ids.map { Foundation.exp((Double(row[$0]) - maximum) / t) }
            let total = weights.reduce(0, +)
            return zip(ids, weights).map { ($0, $1 / total) }.sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        }
        var distribution = normalized(kept)
        if let p = parameters.topP {
            var mass = 0.0, count = 0
            for entry in distribution {
                mass += entry.probability
                count += 1
                if mass >= Double(p) { break }
            }
            distribution = normalized(distribution.prefix(count).map(\.token))
        }
        return distribution
    }
}

/// How many units in the last place of `expected` `got` lies from it: the tests state a result's
/// known error bound this way (as swift-numerics does), not as a fixed absolute constant.
func ulps(_ got: Double, from expected: Double) -> Double {
    got == expected ? 0 : Swift.abs(got - expected) / expected.ulp
}

/// ``ulps(_:from:)-(Double,Double)`` for Float results.
func ulps(_ got: Float, from expected: Float) -> Float {
    got == expected ? 0 : Swift.abs(got - expected) / expected.ulp
}
