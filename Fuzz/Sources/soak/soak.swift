#if canImport(Glibc)
import Glibc
#endif
import TopNSigma
import TopNSigmaBaselines

// Soak test: a million sampler calls (default) with the resident set size steady.
//
//   soak [calls] [--vocab V] [--batch B] [--threads T] [--max-growth-kib K]
//
// One BatchSampler on its own worker threads samples a small batch over and over, the rows'
// parameters cycling through plain Top-nσ, greedy, top-k, top-p, min-p and their combination,
// the steps advancing every call; every 1000th call also runs FilteredDistribution.of (which
// allocates and frees its scratch) and RowStatistics.of. RSS is read from /proc/self/statm
// every `calls / 40` calls; after a warm-up of a tenth of the calls it must not grow by more than
// `--max-growth-kib` (default 1024 KiB). Exit 0 with a summary, or 1 naming the growth.

func fail(_ message: String) -> Never {
    var text = Array("soak: \(message)\n".utf8)
    _ = text.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

/// Resident set size in KiB, from /proc/self/statm ("size resident shared …", in pages).
func residentKiB() -> Int {
    guard let file = fopen("/proc/self/statm", "r") else { return -1 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 256)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return -1 }
    let fields = String(cString: buffer).split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int($0) }
    guard fields.count >= 2 else { return -1 }
    return fields[1] * sysconf(Int32(_SC_PAGESIZE)) / 1024
}

var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String, default value: Int) -> Int {
    guard let i = arguments.firstIndex(of: name) else { return value }
    guard i + 1 < arguments.count, let v = Int(arguments[i + 1]), v > 0 else {
        fail("\(name) needs a positive integer")
    }
    arguments.removeSubrange(i...(i + 1))
    return v
}
let vocab = option("--vocab", default: 1000)
let batch = option("--batch", default: 4)
let threads = option("--threads", default: BatchSampler.defaultThreadCount)
let maxGrowthKiB = option("--max-growth-kib", default: 1024)
guard arguments.count <= 1, let calls = arguments.isEmpty ? 1_000_000 : Int(arguments[0]), calls >= 40 else {
    fail("usage: soak [calls >= 40] [--vocab V] [--batch B] [--threads T] [--max-growth-kib K]")
}

let logits = SyntheticLogits.generate(rows: batch, vocab: vocab, seed: 11)
let menu = [
    SamplingParameters(temperature: 1, nSigma: 1),
    SamplingParameters(temperature: 0, nSigma: 1),
    SamplingParameters(temperature: 0.8, nSigma: nil, topK: 40),
    SamplingParameters(temperature: 1.2, nSigma: nil, topP: 0.9),
    SamplingParameters(temperature: 1, nSigma: nil, minP: 0.05),
    SamplingParameters(temperature: 0.7, nSigma: 2, topK: 50, topP: 0.95, minP: 0.01)
]
var parameters = (0..<batch).map { r in
    var p = menu[r % menu.count]
    p.seed = UInt64(r)
    return p
}
var steps = [UInt64](repeating: 0, count: batch)
var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: batch)
let sampler = try! BatchSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads)
let interval = calls / 40, warmUp = calls / 10
var baseline = -1, peak = 0, samples: [Int] = []
var tokenSum = 0
var clock = timespec()
clock_gettime(CLOCK_MONOTONIC, &clock)
let started = Double(clock.tv_sec) + Double(clock.tv_nsec) * 1e-9

logits.withUnsafeBufferPointer { l in
    results.withUnsafeMutableBufferPointer { out in
        for call in 0..<calls {
            for r in 0..<batch {
                steps[r] = UInt64(call)
                parameters[r] = {
                    var p = menu[(r + call) % menu.count]; p.seed = UInt64(r); return p
                }()
            }
            parameters.withUnsafeBufferPointer { p in
                steps.withUnsafeBufferPointer { s in
                    sampler.sample(logits: l.baseAddress!, rows: batch, parameters: p, steps: s, into: out)
                }
            }
            switch out[call % batch] {
            case .success(let token): tokenSum &+= Int(token.token)
            case .failure(let error): fail("call \(call): row \(call % batch) failed: \(error)")
            }
            if call % 1000 == 999 {
                let row = UnsafeBufferPointer(rebasing: l[0..<vocab])
                guard (try? FilteredDistribution.of(row, parameters: menu[call / 1000 % menu.count])) != nil,
                    (try? RowStatistics.of(row)) != nil
                else { fail("call \(call): the one-row APIs failed") }
            }
            if call % interval == interval - 1 {
                let rss = residentKiB()
                guard rss > 0 else { fail("cannot read /proc/self/statm") }
                samples.append(rss)
                if call >= warmUp {
                    if baseline < 0 { baseline = rss }
                    peak = max(peak, rss)
                    if rss - baseline > maxGrowthKiB {
                        fail(
                            "RSS grew from \(baseline) KiB to \(rss) KiB after \(call + 1) calls (limit \(maxGrowthKiB) KiB); samples \(samples)"
                        )
                    }
                }
            }
        }
    }
}
clock_gettime(CLOCK_MONOTONIC, &clock)
let seconds = Double(clock.tv_sec) + Double(clock.tv_nsec) * 1e-9 - started
print(
    "soak: \(calls) calls (vocab \(vocab), batch \(batch), \(threads) threads) in \(Int(seconds)) s; RSS after warm-up \(baseline) KiB, peak \(peak) KiB (growth \(peak - baseline) KiB, limit \(maxGrowthKiB) KiB); token checksum \(tokenSum)"
)
print("soak: RSS samples (KiB): \(samples.map(String.init).joined(separator: " "))")
