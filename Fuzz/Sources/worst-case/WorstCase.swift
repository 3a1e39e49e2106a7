#if canImport(Glibc)
import Glibc
#endif
import TopNSigma
import TopNSigmaBaselines

// Worst-case rows for top-k / top-p, timed: a bounded check for CI, not a unit test.
//
//   worst-case [--vocab 128256] [--limit-ms 250] [--skip-quadratic-adversary] [--dump DIR]
//
// For each adversarial row (organ pipe, sorted, reverse sorted, McIlroy's adversary against the
// former first/middle/last pivot and against the current sampled pivot) and a shuffled control,
// times one BatchSampler call (one row, one thread; the best of three) for top-p 0.9 at T = 1
// and T = 5, top-k V/2, and top-k V/2 with top-p 0.9, Top-nσ off (every logit survives, so the
// selection sees the whole row). Prints a table in milliseconds and exits 1 if any call took
// longer than --limit-ms (default 250; the shuffled row takes a few ms; before the introselect
// the organ pipe took 1.8–4.2 s). --dump DIR also writes each row as a raw float32 file there
// (for `nsigma filter --logits DIR/organ-pipe.f32 --vocab V --n off --top-p 0.9`).

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String, default value: Int) -> Int {
    guard let i = arguments.firstIndex(of: name) else { return value }
    guard i + 1 < arguments.count, let v = Int(arguments[i + 1]), v > 0 else {
        print("worst-case: \(name) needs a positive integer")
        exit(2)
    }
    arguments.removeSubrange(i...(i + 1))
    return v
}
let vocab = option("--vocab", default: 128_256)
let limitMilliseconds = option("--limit-ms", default: 250)
let skipQuadratic = arguments.contains("--skip-quadratic-adversary")
let dump: String? = arguments.firstIndex(of: "--dump").flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }

var rows: [(String, [Float])] = []
var shuffled = AdversarialLogits.organPipe(vocab: vocab)
var state: UInt64 = 0x9E37_79B9_7F4A_7C15
for i in stride(from: vocab - 1, to: 0, by: -1) {  // Fisher–Yates with SplitMix64
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    shuffled.swapAt(i, Int(z % UInt64(i + 1)))
}
rows.append(("shuffled (control)", shuffled))
rows.append(("organ pipe", AdversarialLogits.organPipe(vocab: vocab)))
rows.append(("sorted ascending", AdversarialLogits.sorted(vocab: vocab, ascending: true)))
rows.append(("sorted descending", AdversarialLogits.sorted(vocab: vocab, ascending: false)))
if !skipQuadratic {
    let started = now()
    let row = AdversarialLogits.mcIlroy(vocab: vocab, k: vocab / 2, pivot: .firstMiddleLast).row
    print("(McIlroy adversary against the former pivot generated in \(Int((now() - started) * 1000)) ms)")
    rows.append(("McIlroy vs former pivot", row))
}
rows.append(("McIlroy vs current pivot", AdversarialLogits.mcIlroy(vocab: vocab, k: vocab / 2, pivot: .sampled).row))

if let dump {
    for (name, row) in rows {
        let path = dump + "/" + name.split(separator: " ").filter { !$0.hasPrefix("(") }.joined(separator: "-") + ".f32"
        guard let file = fopen(path, "wb") else {
            print("worst-case: cannot write \(path)")
            exit(2)
        }
        _ = row.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
        print("wrote \(path)")
    }
}

let cases: [(String, SamplingParameters)] = [
    ("top-p 0.9", SamplingParameters(temperature: 1, nSigma: nil, topP: 0.9)),
    ("top-p 0.9 T 5", SamplingParameters(temperature: 5, nSigma: nil, topP: 0.9)),
    ("top-k V/2", SamplingParameters(temperature: 1, nSigma: nil, topK: vocab / 2)),
    ("top-k V/2 + top-p 0.9", SamplingParameters(temperature: 1, nSigma: nil, topK: vocab / 2, topP: 0.9))
]
let sampler = try! BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
let nameWidth = rows.map(\.0.count).max()!
print("vocab \(vocab), one row, one thread, best of 3, milliseconds per call (limit \(limitMilliseconds) ms)")
print("row".padding(nameWidth) + cases.map { "  " + $0.0.padding(22) }.joined())
var worst = 0.0, worstName = ""
for (name, row) in rows {
    var line = name.padding(nameWidth)
    for (caseName, parameters) in cases {
        var best = Double.infinity
        for step in 0..<3 {
            let started = now()
            let result = sampler.sample(logits: row, parameters: [parameters], steps: [UInt64(step)])[0]
            best = min(best, now() - started)
            guard case .success = result else {
                print("worst-case: \(name), \(caseName): \(result)")
                exit(1)
            }
        }
        if best > worst { (worst, worstName) = (best, "\(name), \(caseName)") }
        line += "  " + String(format3(best * 1000)).padding(22)
    }
    print(line)
}
print("slowest: \(worstName), \(format3(worst * 1000)) ms")
if worst * 1000 > Double(limitMilliseconds) {
    print("worst-case: FAILED: \(worstName) took \(format3(worst * 1000)) ms, over the \(limitMilliseconds) ms limit")
    exit(1)
}

func format3(_ x: Double) -> String {
    let scaled = (x * 1000).rounded() / 1000
    return "\(scaled)"
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
