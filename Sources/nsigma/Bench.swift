import ArgumentParser
import COpenBLAS
import Dispatch
import Foundation
import TopNSigma
import TopNSigmaBaselines
import TopNSigmaIO

/// `nsigma bench`: the fused sampler against its opponents and the memory-read floor, on the same
/// buffers in one run.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark fused Top-nσ against naive Top-nσ, sort-based top-p and the memory-read floor.",
        discussion: """
            Every timing is a median of repeats on the same buffer, reported as µs per row, GB/s of
            logits consumed and its ratio to the floor: the faster of floor-read (a plain SIMD read
            of the same bytes, in this binary, on the sampler's threads) and cblas_sasum over that
            buffer at the same thread count.
            Real logits (SmolLM2-135M, vocab 49152) are used for vocab 49152 when --data finds them;
            every other vocab uses synthetic rows shaped like them.
            """
    )

    @Option(help: "Comma-separated vocabulary sizes.")
    var vocab: String = "49152,128256"

    @Option(help: "Comma-separated batch sizes.")
    var batch: String = "1,64"

    @Option(help: "Comma-separated thread counts ('all' = every core).")
    var threads: String = "1,all"

    @Option(
        help:
            "Methods to run (comma-separated): fused-topnsigma, fused-statistics, fused-topnsigma-gcd, fused-topnsigma-f16, fused-topnsigma-bf16, fused-greedy, fused-plain, fused-topk, fused-topp, fused-chain, fused-zoo, fused-logprobs, fused-processed, naive-topnsigma, sort-topp."
    )
    var methods: String =
        "fused-topnsigma,fused-topnsigma-gcd,fused-topnsigma-f16,fused-topnsigma-bf16,fused-greedy,fused-plain,fused-topk,fused-topp,fused-chain,naive-topnsigma,sort-topp"

    @Option(help: "Top-nσ's n.")
    var n: Float = 1.0

    @Option(help: "Temperature of every method.")
    var temperature: Float = 1.0

    @Option(help: "Top-p's p.")
    var topP: Float = 0.9

    @Option(help: "Top-k's k (fused-topk).")
    var topK: Int = 50

    @Option(help: "Seconds of measurement per method and workload (at least 3 repeats, at most 200).")
    var seconds: Double = 0.25

    @Option(help: "Real logits file (128 × 49152 float32); default: ../shared/data or shared/data if present.")
    var data: String?

    @Option(help: "Write every result with machine information as JSON to this path.")
    var json: String?

    @Option(help: "Compare with an earlier --json file; exit 1 naming every result whose ratio to the floor regressed.")
    var baseline: String?

    @Option(help: "Allowed regression in percent for --baseline.")
    var maxRegression: Double = 10

    @Option(help: "Draw throughput against vocab size per method as an SVG file.")
    var svg: String?

    @Flag(
        help:
            "Run the kernel's targets as named checks (ratios to the floor, half precision, threads, split rows), print each with PASS or FAIL, and exit 1 if any fails."
    )
    var checks = false

    @Option(
        help:
            "Hidden size H: add a decode step, logits = hidden[B, H] × W[V, H]ᵀ (cblas_sgemm), and report sampling as a share of it."
    )
    var lmHead: Int?

    @Flag(help: "With --checks: a check that cannot apply here (SKIP) counts as a failure.")
    var strict = false

    /// The largest `--vocab`: the sampler takes rows of fewer than 2³¹ logits.
    static let maximumVocab = 2_147_483_646
    /// The largest `--batch`: the sampler's batch bound (fewer than 2³¹ rows).
    static let maximumBatch = 2_147_483_646

    func run() throws {
        // Every option is checked against its range before any size is computed from it.
        let vocabs = try parseList(vocab, name: "--vocab", range: 2...Self.maximumVocab)
        let batches = try parseList(batch, name: "--batch", range: 1...Self.maximumBatch)
        let threadCounts = try parseList(
            threads, name: "--threads", range: 1...BatchSampler.maximumThreadCount, allowAll: true)
        let methodList = methods.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        for method in methodList where BenchMethod(rawValue: method) == nil {
            throw UsageError(
                message: "unknown method '\(method)' (\(BenchMethod.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard methodList.contains(where: { !$0.isEmpty }) else { throw UsageError(message: "--methods is empty") }
        guard seconds > 0, seconds <= 3600 else {
            throw UsageError(message: "--seconds must be in (0, 3600], got \(seconds)")
        }
        guard n >= 0, n.isFinite, temperature > 0, temperature.isFinite, topP > 0, topP <= 1 else {
            throw UsageError(message: "--temperature must be finite and > 0, --n finite and >= 0, --top-p in (0, 1]")
        }
        guard topK >= 0, topK <= Self.maximumVocab else {
            throw UsageError(message: "--top-k must be in 0...\(Self.maximumVocab), got \(topK)")
        }
        if let lmHead, !(1...Int(Int32.max)).contains(lmHead) {
            throw UsageError(message: "--lm-head must be in 1...\(Int32.max), got \(lmHead)")
        }
        if baseline != nil && !(maxRegression >= 0 && maxRegression.isFinite) {
            throw UsageError(message: "--max-regression must be finite and >= 0")
        }
        if strict && !checks { throw UsageError(message: "--strict applies to --checks only") }
        let baselineResults = try baseline.map { try BenchReport.load(path: $0) }
        let realPath = data ?? BenchReport.defaultDataPath()
        if let data, !FileManager.default.fileExists(atPath: data) {
            throw UsageError(message: "--data \(data): no such file")
        }
        if checks {
            let passed = try BenchChecks(seconds: seconds, realPath: realPath, strict: strict).run()
            if !passed { throw ExitCode(1) }
            return
        }
        let benchMethods = methodList.compactMap(BenchMethod.init)
        try BenchLimits.check(
            vocabs: vocabs, batches: batches, threads: threadCounts, methods: benchMethods, lmHead: lmHead)

        let runner = BenchRunner(
            methods: benchMethods, n: n, temperature: temperature, topP: topP,
            topK: topK, seconds: seconds)
        var results: [BenchResult] = []
        var workloads: [(vocab: Int, batch: Int, threads: Int)] = []
        for v in vocabs { for b in batches { for t in threadCounts { workloads.append((v, b, t)) } } }
        var cache: [Int: Workload] = [:]
        defer { cache.values.forEach { $0.free() } }
        for (index, w) in workloads.enumerated() {
            let progress = "[\(index + 1)/\(workloads.count)] vocab \(w.vocab) batch \(w.batch) threads \(w.threads)"
            let rowsPerEntry = runner.methods.map(\.rowsPerEntry).max() ?? 1
            if cache[w.vocab].map({ $0.rows < w.batch * rowsPerEntry }) ?? true {
                cache[w.vocab]?.free()
                cache[w.vocab] = try Workload.make(
                    vocab: w.vocab, rows: batches.max()! * rowsPerEntry, realPath: realPath)
            }
            let workload = cache[w.vocab]!
            let rows = try runner.measure(workload: workload, batch: w.batch, threads: w.threads, progress: progress)
            results += rows
            printTable(rows, workload: workload)
            if let lmHead {
                let step = try runner.measureDecodeStep(
                    vocab: w.vocab, batch: w.batch, threads: w.threads, hidden: lmHead, progress: progress)
                results += step
                printDecodeTable(step)
            }
        }
        writeStandardError("\r\u{1B}[K")
        let report = BenchReport(machine: MachineDescription.current(), results: results)
        if let warning = Self.sasumWarning(results, coreType: report.machine.openblasCoreType) { print(warning) }
        if let json {
            do { try report.write(path: json) } catch {
                throw UsageError(message: "cannot write \(json): \(error.localizedDescription)")
            }
            print("wrote \(json)")
        }
        if let svg {
            do { try BenchChart.svg(results).write(toFile: svg, atomically: true, encoding: .utf8) } catch {
                throw UsageError(message: "cannot write \(svg): \(error.localizedDescription)")
            }
            print("wrote \(svg)")
        }
        if let baselineResults {
            let comparison = BenchReport.compare(
                current: results, baseline: baselineResults, maxRegressionPercent: maxRegression)
            for line in comparison.regressions { print("REGRESSION \(line)") }
            for key in comparison.unmatched {
                print("UNMATCHED baseline entry \(key): no result of this run has its key")
            }
            if comparison.compared == 0 {
                print("baseline: nothing compared (no result of this run matches an entry of \(baseline ?? ""))")
            }
            if comparison.failed { throw ExitCode(1) }
            print(
                "baseline: \(comparison.compared) results compared, no result regressed by more than \(maxRegression)% (ratio to the floor)"
            )
        }
    }

    /// A warning when OpenBLAS's sasum reads far slower than a plain SIMD read of the same bytes:
    /// OpenBLAS misdetected the CPU and runs slow kernels, so it is no floor.
    static func sasumWarning(_ results: [BenchResult], coreType: String) -> String? {
        var worst = 0.0
        for read in results where read.method == "floor-read" {
            guard
                let sasum = results.first(where: {
                    $0.method == "floor-sasum" && $0.vocab == read.vocab && $0.batch == read.batch
                        && $0.threads == read.threads
                })
            else { continue }
            worst = max(worst, sasum.medianSeconds / read.medianSeconds)
        }
        guard worst > 1.5 else { return nil }
        return
            "\nwarning: cblas_sasum read the logits up to \(fmt(worst, 1))× slower than floor-read: OpenBLAS runs its "
            + "'\(coreType)' kernels on this CPU. Ratios use the faster floor; to compare against OpenBLAS's fast kernels, "
            + "run with OPENBLAS_CORETYPE=Haswell (AVX2) or OPENBLAS_CORETYPE=SkylakeX (AVX-512)."
    }

    /// A comma-separated list of integers in `range` (duplicates dropped); `all` (with
    /// `allowAll`) is every core, at most the range's upper bound.
    func parseList(_ text: String, name: String, range: ClosedRange<Int>, allowAll: Bool = false) throws -> [Int] {
        let values = try text.split(separator: ",").map { part -> Int in
            let item = part.trimmingCharacters(in: .whitespaces)
            if allowAll && item == "all" { return min(BatchSampler.defaultThreadCount, range.upperBound) }
            guard let value = Int(item), value > 0 else {
                throw UsageError(message: "\(name): '\(item)' is not a positive integer")
            }
            guard range.contains(value) else {
                throw UsageError(
                    message: "\(name): \(value) is out of range (must be in \(range.lowerBound)...\(range.upperBound))")
            }
            return value
        }
        guard !values.isEmpty else { throw UsageError(message: "\(name) is empty") }
        var seen = Set<Int>()
        return values.filter { seen.insert($0).inserted }
    }

    func printTable(_ rows: [BenchResult], workload: Workload) {
        guard let first = rows.first else { return }
        print("\nvocab \(first.vocab) (\(workload.source)), batch \(first.batch), threads \(first.threads)")
        print(
            pad("method", 22) + pad("µs/row", 11, right: true) + pad("GB/s", 9, right: true)
                + pad("× floor", 10, right: true)
                + pad("vs naive", 11, right: true) + pad("vs sort-topp", 14, right: true) + pad("kept", 8, right: true))
        for r in rows {
            print(
                pad(r.method, 22) + pad(fmt(r.usPerRow, 2), 11, right: true)
                    + pad(fmt(r.gbPerSecond, 2), 9, right: true)
                    + pad(fmt(r.ratioToFloor, 2), 10, right: true)
                    + pad(r.speedupOverNaive.map { fmt($0, 1) + "×" } ?? "", 11, right: true)
                    + pad(r.speedupOverSortTopP.map { fmt($0, 1) + "×" } ?? "", 14, right: true)
                    + pad(r.medianKept.map { fmt($0, 0) } ?? "", 8, right: true))
        }
        for r in rows {
            if let ratio = r.ratioToPlainSampling {
                print(
                    "  \(r.method): \(fmt(ratio, 3)) × sampling the same \(BenchRunner.verifyK + 1) × \(r.batch) rows plainly"
                )
            }
        }
    }

    func printDecodeTable(_ rows: [BenchResult]) {
        guard let gemm = rows.first(where: { $0.method == "lm-head-sgemm" }) else { return }
        print(
            "  decode step: lm-head sgemm \(fmt(gemm.usPerRow * Double(gemm.batch), 1)) µs per step (H = \(gemm.hidden ?? 0))"
        )
        for r in rows where r.method != "lm-head-sgemm" {
            print(
                "  " + pad(r.method, 22) + "sampling is " + fmt(100 * (r.shareOfDecodeStep ?? 0), 2) + "% of the step")
        }
    }
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let count = s.count
    if count >= width { return s + " " }
    let padding = String(repeating: " ", count: width - count)
    return right ? padding + s : s + padding
}

func fmt(_ x: Double, _ digits: Int) -> String {
    String(format: "%.\(digits)f", x)
}

/// The methods `nsigma bench` compares.
enum BenchMethod: String, CaseIterable {
    case fused = "fused-topnsigma"
    /// The statistics pass alone (max, mean, std; no survivors, no draw): the kernel's own cost.
    case statistics = "fused-statistics"
    case fusedDispatch = "fused-topnsigma-gcd"
    /// The same logits stored as float16 / bfloat16 (half the bytes), converted in registers.
    case fusedHalf = "fused-topnsigma-f16"
    case fusedBrain = "fused-topnsigma-bf16"
    /// Sort-free top-p (Top-nσ off), the fused pipeline's answer to `sort-topp`.
    case fusedTopP = "fused-topp"
    /// Greedy (T = 0): the maximum and its id only.
    case fusedGreedy = "fused-greedy"
    /// Plain temperature sampling over the whole row (no truncation: the OpenAI API default).
    case fusedPlain = "fused-plain"
    /// top-k alone (``BenchRunner/topK``, Top-nσ off).
    case fusedTopK = "fused-topk"
    /// llama.cpp's default chain: top-k 40, top-p 0.95, min-p 0.05, T 0.8 (Top-nσ off).
    case fusedChain = "fused-chain"
    /// Every sampler of the zoo at once (``BenchMethod/zoo``): typical, ε, η, XTC, dynamic
    /// temperature and p-less.
    case fusedZoo = "fused-zoo"
    case naive = "naive-topnsigma"
    case sortTopP = "sort-topp"
    /// Speculative verification, k = ``BenchRunner/verifyK``: `batch` requests of k + 1 rows,
    /// timed with the plain sampling of the same rows (`fused-verify-plain`).
    case fusedVerify = "fused-verify"
    /// The separate-pass opponent: a softmax of each row, then the rejection loop.
    case separateVerify = "separate-verify"
    /// Every row a server-like request (``SyntheticRequests/serverLike(vocab:seed:topLogprobs:)``:
    /// grammar bitmask, 20 biased tokens, 512-token history, three penalties), processed in the
    /// fused pass.
    case fusedProcessed = "fused-processed"
    /// Top-nσ with 20 top logprobs per row, nothing else processed.
    case fusedLogprobs = "fused-logprobs"
    /// The same requests as `fused-processed`, processed as vLLM does (a copy, then separate
    /// passes: bitmask, bias, penalties), then sampled by the same fused sampler.
    case separateProcessed = "separate-processed"

    /// The request a fused sampling method sends for every row.
    func parameters(n: Float, temperature: Float, topP: Float, topK: Int) -> SamplingParameters {
        switch self {
        case .fusedTopP: SamplingParameters(temperature: temperature, nSigma: nil, seed: 7, topP: topP)
        case .fusedGreedy: SamplingParameters(temperature: 0, nSigma: nil, seed: 7)
        case .fusedPlain: SamplingParameters(temperature: temperature, nSigma: nil, seed: 7)
        case .fusedTopK: SamplingParameters(temperature: temperature, nSigma: nil, seed: 7, topK: topK)
        case .fusedChain: SamplingParameters(temperature: 0.8, nSigma: nil, seed: 7, topK: 40, topP: 0.95, minP: 0.05)
        case .fusedZoo: Self.zoo
        default: SamplingParameters(temperature: temperature, nSigma: n, seed: 7)
        }
    }

    /// typical 0.95, ε and η 3e-4, XTC 0.1 at probability 0.5, dynamic temperature ±0.5 and
    /// p-less together at T = 1 (Top-nσ off).
    static let zoo = SamplingParameters(
        temperature: 1, nSigma: nil, seed: 7, typicalP: 0.95, epsilon: 3e-4, eta: 3e-4, xtcThreshold: 0.1,
        xtcProbability: 0.5, dynamicTemperatureRange: 0.5, pLess: true)

    /// Rows read per batch entry: k + 1 for the verification methods.
    var rowsPerEntry: Int { self == .fusedVerify || self == .separateVerify ? BenchRunner.verifyK + 1 : 1 }
}

/// A block of logits to benchmark on.
struct Workload {
    let vocab: Int
    let rows: Int
    /// "real" (SmolLM2-135M rows, repeated to fill the batch) or "synthetic".
    let source: String
    let logits: UnsafeMutableBufferPointer<Float>

    func free() { Foundation.free(logits.baseAddress) }

    /// `rows` rows of `vocab` logits (real ones where `realPath` holds them for this vocab); throws
    /// a ``UsageError`` where the memory cannot be had (malloc fails, nothing traps).
    static func make(vocab: Int, rows: Int, realPath: String?) throws -> Workload {
        let buffer = try allocateFloats(vocab, rows, what: "--vocab \(vocab) × \(rows) rows of logits")
        if vocab == 49_152, let realPath, let real = try? LogitsFile.read(path: realPath, vocab: vocab), real.rows > 0 {
            for r in 0..<rows {
                let source = r % real.rows
                for i in 0..<vocab { buffer[r * vocab + i] = real.values[source * vocab + i] }
            }
            return Workload(vocab: vocab, rows: rows, source: "real SmolLM2-135M", logits: buffer)
        }
        let synthetic = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 42)
        _ = buffer.initialize(from: synthetic)
        return Workload(vocab: vocab, rows: rows, source: "synthetic", logits: buffer)
    }
}

/// One prepared sampler call on a workload in a given format (16-bit copies made up front).
final class FusedCall: @unchecked Sendable {
    let sampler: BatchSampler
    let batch: Int
    let format: LogitFormat
    let source: UnsafeRawPointer
    let bits: UnsafeMutablePointer<UInt16>?
    let parameters: UnsafeMutableBufferPointer<SamplingParameters>
    let steps: UnsafeMutableBufferPointer<UInt64>
    let results: UnsafeMutableBufferPointer<SampleResult>
    let processing: UnsafeMutableBufferPointer<RequestProcessing>?
    let logprobs: UnsafeMutableBufferPointer<TopLogprobs>

    init(
        sampler: BatchSampler, workload: Workload, batch: Int, format: LogitFormat,
        parameters: SamplingParameters = SamplingParameters(temperature: 1, nSigma: 1, seed: 7),
        processing: [RequestProcessing]? = nil
    ) {
        self.sampler = sampler
        self.batch = batch
        self.format = format
        let count = batch * workload.vocab
        if format == .float32 {
            bits = nil
            source = UnsafeRawPointer(workload.logits.baseAddress!)
        } else {
            let b = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
            for i in 0..<count {
                let x = workload.logits[i]
                b[i] = format == .float16 ? halfBits(x) : UInt16(x.bitPattern >> 16)
            }
            bits = b
            source = UnsafeRawPointer(b)
        }
        self.parameters = .allocate(capacity: batch)
        self.parameters.initialize(repeating: parameters)
        steps = .allocate(capacity: batch)
        steps.initialize(repeating: 1)
        results = .allocate(capacity: batch)
        results.initialize(repeating: .failure(.noFiniteLogit))
        if let processing {
            let buffer = UnsafeMutableBufferPointer<RequestProcessing>.allocate(capacity: batch)
            _ = buffer.initialize(from: processing.prefix(batch))
            self.processing = buffer
        } else {
            self.processing = nil
        }
        logprobs = .allocate(capacity: batch)
        logprobs.initialize(repeating: TopLogprobs())
    }

    func run() {
        sampler.sample(
            logits: source, format: format, rows: batch, parameters: UnsafeBufferPointer(parameters),
            processing: processing.map { UnsafeBufferPointer($0) }, steps: UnsafeBufferPointer(steps), into: results,
            logprobs: logprobs)
    }

    func free() {
        if let processing {
            processing.deinitialize()
            processing.deallocate()
        }
        logprobs.deallocate()
        bits?.deallocate()
        parameters.deallocate()
        steps.deallocate()
        results.deallocate()
    }
}

/// One measurement, as printed and as written to JSON.
struct BenchResult: Codable {
    var method: String
    var batch: Int
    var vocab: Int
    var threads: Int
    var workload: String
    var usPerRow: Double
    var gbPerSecond: Double
    /// Median time over the floor's: the faster of `floor-read` and `floor-sasum` timed in the
    /// same group of interleaved rounds.
    var ratioToFloor: Double
    /// Which floor `ratioToFloor` divides by.
    var floor: String?
    var speedupOverNaive: Double?
    var speedupOverSortTopP: Double?
    var medianSeconds: Double
    var repeats: Int
    var medianKept: Double?
    var hidden: Int?
    var shareOfDecodeStep: Double?
    /// Verification methods: median time over that of sampling the same rows plainly
    /// (`fused-verify-plain`, same run).
    var ratioToPlainSampling: Double?
}

extension BenchResult {
    /// Median over the float32 floor (the faster of floor-read and floor-sasum) recorded in
    /// `rows`: the floors of the fused methods' group, which every `fused-*` result was timed in.
    func floatScaleRatio(in rows: [BenchResult]) -> Double {
        let floors = rows.filter { $0.method == "floor-read" || $0.method == "floor-sasum" }.map(\.medianSeconds)
        guard let floor = floors.min(), floor > 0 else { return ratioToFloor }
        return medianSeconds / floor
    }
}

/// Runs the methods on a workload.
struct BenchRunner {
    let methods: [BenchMethod]
    let n: Float
    let temperature: Float
    let topP: Float
    var topK = 50
    let seconds: Double

    /// A method to time: a name, its body, and what it kept (read after the timing).
    struct Timed {
        var name: String
        var body: () -> Void
        var kept: () -> Double? = { nil }
        /// Runs before each timed call, untimed (e.g. evicting the caches).
        var prepare: (() -> Void)? = nil
        /// Rows read per batch entry (k + 1 for verification): per-row figures divide by it.
        var rowsPerEntry = 1
    }

    /// Draft tokens per request of the verification methods.
    static let verifyK = 4

    /// Consecutive calls of one body per round: a decode loop calls the sampler back to back, and
    /// the worker pool's threads are then awake (a cold wake costs tens of µs on a VM).
    static let burst = 3

    /// Median seconds of each body. The bodies run interleaved, a burst of ``burst`` repeats of
    /// each per round, so that a drift in the machine's speed (other tenants, frequency) hits
    /// every method alike and the ratios stay meaningful. Rounds continue until `seconds × bodies` have passed (at least
    /// 3 rounds, at most 200); every body runs once before as a warm-up.
    func interleaved(_ timed: [Timed], status: (String) -> Void) -> [(median: Double, repeats: Int)] {
        for t in timed {
            status(t.name)
            t.body()
        }
        status(timed.map(\.name).joined(separator: ", "))
        var samples = [[Double]](repeating: [], count: timed.count)
        let budget = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * Double(timed.count) * 1e9)
        var rounds = 0
        while rounds < 3 || (rounds < 200 && DispatchTime.now().uptimeNanoseconds < budget) {
            for (i, t) in timed.enumerated() {
                for _ in 0..<Self.burst {
                    t.prepare?()
                    let start = DispatchTime.now().uptimeNanoseconds
                    t.body()
                    samples[i].append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
                }
            }
            rounds += 1
        }
        return samples.map { s in
            let sorted = s.sorted()
            return (sorted[sorted.count / 2], sorted.count)
        }
    }

    /// Median seconds of `body` alone (used for the LM-head sgemm).
    func time(_ body: @escaping () -> Void) -> (median: Double, repeats: Int) {
        interleaved([Timed(name: "sgemm", body: body)], status: { _ in })[0]
    }

    func measure(workload: Workload, batch: Int, threads: Int, progress: String) throws -> [BenchResult] {
        let vocab = workload.vocab
        let logits = UnsafePointer(workload.logits.baseAddress!)
        let bytes = Double(batch * vocab * 4)
        openblas_set_num_threads(Int32(threads))

        let sink = Box<Float>(0)
        // The floor: a plain SIMD read of the same bytes, compiled with the library's flags and
        // run on a sampler's own worker threads (same wake-ups, same claiming of chunks).
        let floorSampler = try makeSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads)
        var timed: [Timed] = [
            Timed(
                name: "floor-read",
                body: {
                    sink.value += floorSampler.readFloor(UnsafeRawPointer(logits), rows: batch, bytesPerRow: vocab * 4)
                }),
            Timed(name: "floor-sasum", body: { sink.value += cblas_sasum(Int32(batch * vocab), logits, 1) }),
            Timed(
                name: "floor-sasum-rows",
                body: { for r in 0..<batch { sink.value += cblas_sasum(Int32(vocab), logits + r * vocab, 1) } })
        ]
        // The 16-bit methods' floor: floor-read over a 16-bit block (2 bytes per logit), the
        // bytes those methods read (cblas_sasum reads float32 only).
        let halfFloor: UnsafeMutableBufferPointer<UInt16>?
        if methods.contains(where: { $0 == .fusedHalf || $0 == .fusedBrain }) {
            let bits = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: batch * vocab)
            for i in bits.indices { bits[i] = UInt16(truncatingIfNeeded: logits[i].bitPattern >> 16) }
            halfFloor = bits
            timed.append(
                Timed(
                    name: Self.halfFloorName,
                    body: {
                        sink.value += floorSampler.readFloor(
                            UnsafeRawPointer(bits.baseAddress!), rows: batch, bytesPerRow: vocab * 2)
                    }))
        } else {
            halfFloor = nil
        }
        defer { halfFloor?.deallocate() }
        let floorCount = timed.count
        let parameters = UnsafeMutableBufferPointer<SamplingParameters>.allocate(capacity: batch)
        _ = parameters.initialize(
            from: repeatElement(SamplingParameters(temperature: temperature, nSigma: n, seed: 7), count: batch))
        var fusedCalls: [FusedCall] = []
        let kept = UnsafeMutableBufferPointer<Int>.allocate(capacity: batch)
        kept.initialize(repeating: 0)
        defer {
            parameters.deallocate()
            fusedCalls.forEach { $0.free() }
            kept.deallocate()
        }
        /// An opponent sampling row by row over `threads` workers, each with its own scratch.
        func opponent<Scratch>(
            _ name: String, _ makeScratch: () -> Scratch,
            _ draw: @escaping (inout Scratch, UnsafeBufferPointer<Float>) -> SampledToken?
        ) -> Timed {
            let scratch = (0..<threads).map { _ in Box(makeScratch()) }
            return Timed(
                name: name,
                body: {
                    parallelRows(batch, threads: threads) { worker, r in
                        let row = UnsafeBufferPointer(start: logits + r * vocab, count: vocab)
                        kept[r] = draw(&scratch[worker].value, row)?.candidateCount ?? 0
                    }
                }, kept: { median(Array(kept)) })
        }
        for method in methods {
            switch method {
            case .fused, .fusedDispatch, .fusedHalf, .fusedBrain, .fusedTopP, .fusedGreedy, .fusedPlain, .fusedTopK,
                .fusedChain, .fusedZoo:
                let sampler = try makeSampler(
                    vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads,
                    executor: method == .fusedDispatch ? .concurrentPerform : .workerPool)
                // 16-bit methods read the workload stored as 16-bit values, converted once (not timed).
                let call = FusedCall(
                    sampler: sampler, workload: workload, batch: batch,
                    format: method == .fusedHalf ? .float16 : method == .fusedBrain ? .bfloat16 : .float32,
                    parameters: method.parameters(n: n, temperature: temperature, topP: topP, topK: topK))
                fusedCalls.append(call)
                timed.append(
                    Timed(
                        name: method.rawValue, body: call.run,
                        kept: { median(call.results.compactMap { try? $0.get().candidateCount }) }))
            case .statistics:
                timed.append(
                    Timed(
                        name: method.rawValue,
                        body: {
                            for r in 0..<batch {
                                if let s = try? RowStatistics.of(
                                    UnsafeBufferPointer(start: logits + r * vocab, count: vocab))
                                {
                                    sink.value += s.maximum
                                }
                            }
                        }))
            case .naive:
                let (n, temperature) = (n, temperature)
                timed.append(
                    opponent(method.rawValue, { NaiveTopNSigma(vocabularySize: vocab) }) { naive, row in
                        naive.sample(row, n: n, temperature: temperature, seed: 7, step: 1)
                    })
            case .sortTopP:
                let (topP, temperature) = (topP, temperature)
                timed.append(
                    opponent(method.rawValue, { SortTopP(vocabularySize: vocab) }) { sorter, row in
                        sorter.sample(row, p: topP, temperature: temperature, seed: 7, step: 1)
                    })
            case .fusedVerify, .separateVerify:
                timed += try verification(
                    method, logits: logits, vocab: vocab, batch: batch, threads: threads, parameters: parameters)
            case .fusedProcessed, .fusedLogprobs:
                let sampler = try makeSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads)
                let requests =
                    method == .fusedProcessed
                    ? (0..<batch).map { SyntheticRequests.serverLike(vocab: vocab, seed: UInt64($0)) }
                    : [RequestProcessing](repeating: RequestProcessing(topLogprobs: 20), count: batch)
                let call = FusedCall(
                    sampler: sampler, workload: workload, batch: batch, format: .float32,
                    parameters: SamplingParameters(temperature: temperature, nSigma: n, seed: 7), processing: requests)
                fusedCalls.append(call)
                timed.append(
                    Timed(
                        name: method.rawValue, body: call.run,
                        kept: { median(call.results.compactMap { try? $0.get().candidateCount }) }))
            case .separateProcessed:
                timed.append(
                    try separateProcessing(workload: workload, batch: batch, threads: threads, parameters: parameters))
            }
        }
        var results: [BenchResult] = []
        // Each opponent's `kept` is read right after its own timing: run them one at a time
        // against the floors, and the fused methods together with the floors. Every group times
        // floor-read and floor-sasum, and each float32 result is a ratio to the faster of the two
        // in its own group; the 16-bit methods' ratio is to floor-read-16 (the 16-bit block).
        let floors = Array(timed[0..<floorCount])
        var groups: [[Timed]] = [floors + timed[floorCount...].filter { $0.name.hasPrefix("fused") }]
        for t in timed[floorCount...] where !t.name.hasPrefix("fused") { groups.append([floors[0], floors[1], t]) }
        for group in groups {
            let timings = interleaved(group) { writeStandardError("\r\u{1B}[K\(progress): \($0)") }
            func median(_ name: String) -> Double? { zip(group, timings).first { $0.0.name == name }?.1.median }
            let floorRead = median("floor-read")!, floorSasum = median("floor-sasum")!
            let floor = min(floorRead, floorSasum)
            let floorName = floorRead <= floorSasum ? "floor-read" : "floor-sasum"
            let halfFloor = median(Self.halfFloorName)
            for (t, timing) in zip(group, timings) {
                if t.name.hasPrefix("floor") && results.contains(where: { $0.method == t.name }) { continue }
                let isHalf = Self.isHalf(t.name)
                let rows = Double(t.rowsPerEntry)
                let (divisor, divisorName) =
                    isHalf && t.name != Self.halfFloorName
                    ? (halfFloor ?? floor, Self.halfFloorName) : (floor, floorName)
                results.append(
                    BenchResult(
                        method: t.name, batch: batch, vocab: vocab, threads: threads, workload: workload.source,
                        usPerRow: timing.median * 1e6 / (Double(batch) * rows),
                        gbPerSecond: (isHalf ? bytes / 2 : bytes) * rows / timing.median * 1e-9,
                        ratioToFloor: timing.median / (divisor * rows), floor: divisorName,
                        medianSeconds: timing.median, repeats: timing.repeats, medianKept: t.kept()))
            }
        }
        blackHole(sink.value)
        return Self.relate(results)
    }

    /// The floor of the 16-bit methods: floor-read over the same logits stored in 16 bits.
    static let halfFloorName = "floor-read-16"

    /// Whether `method` reads 16-bit logits (2 bytes per logit).
    static func isHalf(_ method: String) -> Bool { method.hasSuffix("f16") || method == halfFloorName }

    /// Fills the speedups over the opponents as ratios of ratios: each method's ratio to the
    /// floor timed in its own group of interleaved rounds, over the opponent's ratio to the floor
    /// of its group (medians from different groups are never divided: the machine drifts between
    /// groups, and each group's floor carries that drift).
    static func relate(_ rows: [BenchResult]) -> [BenchResult] {
        let naive = rows.first { $0.method == BenchMethod.naive.rawValue }?.ratioToFloor
        let sort = rows.first { $0.method == BenchMethod.sortTopP.rawValue }?.ratioToFloor
        let plain = rows.first { $0.method == BenchRunner.verifyPlainName }?.ratioToFloor
        return rows.map { r in
            var r = r
            // A 16-bit method's ratio is to its own 16-bit floor; against float32 opponents it is
            // put on the float32 floor's scale through its medians (same group as floor-read).
            let own = r.ratioToFloor
            if let plain,
                r.method == BenchMethod.fusedVerify.rawValue || r.method == BenchMethod.separateVerify.rawValue
            {
                r.ratioToPlainSampling = own / plain
            }
            if !r.method.hasPrefix("floor") {
                let scaled = Self.isHalf(r.method) ? r.floatScaleRatio(in: rows) : own
                if let naive { r.speedupOverNaive = naive / scaled }
                if let sort { r.speedupOverSortTopP = sort / scaled }
            }
            return r
        }
    }

    /// A decode step: `logits = hidden × Wᵀ` with `cblas_sgemm`, then each method samples it.
    func measureDecodeStep(
        vocab: Int, batch: Int, threads: Int, hidden: Int, progress: String
    ) throws -> [BenchResult] {
        writeStandardError("\r\u{1B}[K\(progress): lm-head sgemm")
        openblas_set_num_threads(Int32(threads))
        var weights = SyntheticLogits.generate(rows: 1, vocab: vocab * hidden, seed: 9)
        for i in weights.indices { weights[i] *= 0.02 }
        let states = SyntheticLogits.generate(rows: 1, vocab: batch * hidden, seed: 10).map { $0 * 0.25 }
        let logits = try allocateFloats(batch, vocab, what: "--lm-head logits (--batch \(batch) × --vocab \(vocab))")
        defer { free(logits.baseAddress) }
        let gemm = time {
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(vocab), Int32(hidden), 1,
                states, Int32(hidden), weights, Int32(hidden), 0, logits.baseAddress, Int32(vocab))
        }
        let workload = Workload(vocab: vocab, rows: batch, source: "lm-head H=\(hidden)", logits: logits)
        var rows = try measure(workload: workload, batch: batch, threads: threads, progress: progress).filter {
            !$0.method.hasPrefix("floor")
        }
        for i in rows.indices {
            rows[i].hidden = hidden
            rows[i].shareOfDecodeStep = rows[i].medianSeconds / (rows[i].medianSeconds + gemm.median)
            rows[i].method += "+lm-head"
        }
        let bytes = Double(vocab * hidden * 4)
        rows.insert(
            BenchResult(
                method: "lm-head-sgemm", batch: batch, vocab: vocab, threads: threads, workload: workload.source,
                usPerRow: gemm.median * 1e6 / Double(batch), gbPerSecond: bytes / gemm.median * 1e-9, ratioToFloor: 0,
                floor: nil,
                medianSeconds: gemm.median, repeats: gemm.repeats, hidden: hidden), at: 0)
        return rows
    }
}

/// Rows `0..<rows` over `threads` workers (`DispatchQueue.concurrentPerform`), worker `w` taking
/// rows `w, w + threads, …` with its own scratch.
func parallelRows(_ rows: Int, threads: Int, _ body: (Int, Int) -> Void) {
    let workers = min(threads, rows)
    if workers <= 1 {
        for r in 0..<rows { body(0, r) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let shared = UnsafeSendable(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for r in stride(from: w, to: rows, by: workers) { shared.value(w, r) }
        }
    }
}

struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// A mutable box so each worker owns its opponent's scratch.
final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

func median(_ values: [Int]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    return Double(sorted[sorted.count / 2])
}

@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}

/// The binary16 nearest to `x` (round to nearest even; overflow to ±inf), for bench workloads.
func halfBits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let magnitude = x.magnitude
    if magnitude.isNaN { return sign | 0x7E00 }
    if magnitude >= 65520 { return sign | 0x7C00 }
    if magnitude < 0x1p-14 {
        // Subnormal half: a multiple of 2^-24, rounded to nearest even.
        return sign | UInt16((magnitude * 0x1p24).rounded(.toNearestOrEven))
    }
    let exponent = Int(magnitude.exponent)
    let scaled = (magnitude / Float(sign: .plus, exponent: exponent, significand: 1) - 1) * 1024
    var mantissa = Int(scaled.rounded(.toNearestOrEven))
    var e = exponent + 15
    if mantissa == 1024 { mantissa = 0; e += 1 }
    return sign | UInt16(e << 10 | mantissa)
}

extension BenchRunner {
    /// `separate-processed`: each row copied and processed by ``SeparateProcessing`` (separate
    /// full-row passes, as vLLM), rows spread over `threads` workers, then the processed block
    /// sampled by a sampler with the same threads.
    func separateProcessing(
        workload: Workload, batch: Int, threads: Int, parameters: UnsafeMutableBufferPointer<SamplingParameters>
    ) throws -> Timed {
        let vocab = workload.vocab
        let logits = UnsafePointer(workload.logits.baseAddress!)
        let requests = (0..<batch).map { SyntheticRequests.serverLike(vocab: vocab, seed: UInt64($0)) }
        let scratch = (0..<threads).map { _ in Box(SeparateProcessing(vocabularySize: vocab)) }
        let processed = Slots(floats: batch * vocab)
        let sampler = try makeSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads)
        let steps = [UInt64](repeating: 1, count: batch)
        let results = Box([SampleResult](repeating: .failure(.noFiniteLogit), count: batch))
        let rowParameters = Array(parameters.prefix(batch))
        return Timed(
            name: BenchMethod.separateProcessed.rawValue,
            body: {
                parallelRows(batch, threads: threads) { worker, r in
                    scratch[worker].value.apply(
                        UnsafeBufferPointer(start: logits + r * vocab, count: vocab), requests[r])
                    scratch[worker].value.processed.withUnsafeBufferPointer {
                        (processed.floats + r * vocab).update(from: $0.baseAddress!, count: vocab)
                    }
                }
                rowParameters.withUnsafeBufferPointer { p in
                    steps.withUnsafeBufferPointer { s in
                        results.value.withUnsafeMutableBufferPointer { out in
                            sampler.sample(logits: processed.floats, rows: batch, parameters: p, steps: s, into: out)
                        }
                    }
                }
            }, kept: { median(results.value.compactMap { try? $0.get().candidateCount }) })
    }

    /// The plain sampling of the verification rows, the yardstick of `fused-verify`.
    static let verifyPlainName = "fused-verify-plain"

    /// The verification methods' timings over `batch` requests of `verifyK + 1` rows each (the
    /// workload's first `batch × (verifyK + 1)` rows). Each request's draft proposes the argmax of
    /// its first `verifyK` rows with q = 0.9 (a deterministic draft: `q` is the point mass), so
    /// that some requests accept several tokens.
    func verification(
        _ method: BenchMethod, logits: UnsafePointer<Float>, vocab: Int, batch: Int, threads: Int,
        parameters: UnsafeMutableBufferPointer<SamplingParameters>
    ) throws -> [Timed] {
        let k = Self.verifyK, rows = batch * (k + 1)
        let proposals = (0..<batch).map { r in
            DraftProposal(
                tokens: (0..<k).map { i in
                    let row = UnsafeBufferPointer(start: logits + (r * (k + 1) + i) * vocab, count: vocab)
                    return TokenID(row.indices.max { row[$0] < row[$1] } ?? 0)
                },
                probabilities: [Double](repeating: 0.9, count: k))
        }
        let steps = [UInt64](repeating: 1, count: rows)
        // Median accepted count, shown in the "kept" column (each worker writes its own requests' slots).
        let accepted = Slots(count: batch)
        switch method {
        case .fusedVerify:
            let verifier = try makeSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads)
            let plain = try makeSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
            let requestParameters = Array(parameters.prefix(batch))
            let rowParameters = [SamplingParameters](repeating: parameters[0], count: rows)
            let outcomes = Box([VerificationOutcome](repeating: .failure(.row(0, .noFiniteLogit)), count: batch))
            let samples = Box([SampleResult](repeating: .failure(.noFiniteLogit), count: rows))
            return [
                Timed(
                    name: method.rawValue,
                    body: {
                        requestParameters.withUnsafeBufferPointer { p in
                            proposals.withUnsafeBufferPointer { q in
                                steps.withUnsafeBufferPointer { s in
                                    outcomes.value.withUnsafeMutableBufferPointer { out in
                                        verifier.verify(
                                            logits: UnsafeRawPointer(logits), format: .float32, requests: batch, k: k,
                                            proposals: q, parameters: p, steps: s, into: out)
                                    }
                                }
                            }
                        }
                    }, kept: { median(outcomes.value.map { (try? $0.get().accepted) ?? 0 }) }, rowsPerEntry: k + 1),
                Timed(
                    name: Self.verifyPlainName,
                    body: {
                        rowParameters.withUnsafeBufferPointer { p in
                            steps.withUnsafeBufferPointer { s in
                                samples.value.withUnsafeMutableBufferPointer { out in
                                    plain.sample(logits: logits, rows: rows, parameters: p, steps: s, into: out)
                                }
                            }
                        }
                    }, kept: { median(samples.value.compactMap { try? $0.get().candidateCount }) }, rowsPerEntry: k + 1)
            ]
        default:
            let scratch = (0..<threads).map { _ in Box(SeparateVerify(vocabularySize: vocab, k: k)) }
            let (n, temperature) = (n, temperature)
            return [
                Timed(
                    name: method.rawValue,
                    body: {
                        parallelRows(batch, threads: threads) { worker, r in
                            let request = UnsafeBufferPointer(
                                start: logits + r * (k + 1) * vocab, count: (k + 1) * vocab)
                            accepted.values[r] =
                                scratch[worker].value.verify(
                                    request, tokens: proposals[r].tokens, q: proposals[r].probabilities, n: n,
                                    temperature: temperature,
                                    seed: 7, step: 1)?.accepted ?? 0
                        }
                    }, kept: { median(Array(accepted.values)) }, rowsPerEntry: k + 1)
            ]
        }
    }
}

/// Integer (or Float) slots that threads write without exclusivity checks (each its own), freed
/// with the last closure that holds them.
final class Slots: @unchecked Sendable {
    let values: UnsafeMutableBufferPointer<Int>
    let floats: UnsafeMutablePointer<Float>
    init(count: Int) {
        values = .allocate(capacity: count)
        values.initialize(repeating: 0)
        floats = .allocate(capacity: 1)
    }
    init(floats count: Int) {
        values = .allocate(capacity: 1)
        floats = .allocate(capacity: count)
        floats.initialize(repeating: 0, count: count)
    }
    deinit {
        values.deallocate()
        floats.deallocate()
    }
}

/// A sampler for the bench, its configuration errors as usage errors (exit 2) naming the options.
func makeSampler(
    vocabularySize: Int, maximumBatchSize: Int, threadCount: Int, executor: BatchSampler.Executor = .workerPool
) throws -> BatchSampler {
    do {
        return try BatchSampler(
            vocabularySize: vocabularySize, maximumBatchSize: maximumBatchSize, threadCount: threadCount,
            executor: executor)
    } catch {
        throw UsageError(
            message:
                "--vocab \(vocabularySize), --batch \(maximumBatchSize), --threads \(threadCount): cannot create the sampler: \(error)"
        )
    }
}

/// `first × second` floats from malloc (uninitialized), or a ``UsageError`` naming `what` when the
/// product overflows or the memory cannot be had.
func allocateFloats(_ first: Int, _ second: Int, what: String) throws -> UnsafeMutableBufferPointer<Float> {
    let (count, overflow) = first.multipliedReportingOverflow(by: second)
    let (bytes, overflowBytes) = count.multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
    guard !overflow, !overflowBytes, count > 0, let raw = malloc(bytes) else {
        throw UsageError(message: "\(what): cannot allocate \(first) × \(second) floats")
    }
    return UnsafeMutableBufferPointer(start: raw.bindMemory(to: Float.self, capacity: count), count: count)
}

/// The bench's size limits, checked after every option is in its range and before anything is
/// allocated: counts that `cblas_sasum` and `cblas_sgemm` take as `Int32`, and the memory the
/// run will hold against the machine's physical memory.
enum BenchLimits {
    /// Sampler scratch per thread and logit (``RowPipeline/scratchByteCount(vocab:)`` is about 70 B
    /// per logit); used where the exact figure overflows.
    static let scratchBytesPerLogit = 70

    /// `values` multiplied, or nil on overflow.
    static func product(_ values: Int...) -> Int? {
        var result = 1
        for v in values {
            let (next, overflow) = result.multipliedReportingOverflow(by: v)
            if overflow { return nil }
            result = next
        }
        return result
    }

    /// `values` added, or nil on overflow.
    static func sum(_ values: Int?...) -> Int? {
        var result = 0
        for v in values {
            guard let v else { return nil }
            let (next, overflow) = result.addingReportingOverflow(v)
            if overflow { return nil }
            result = next
        }
        return result
    }

    static func check(
        vocabs: [Int], batches: [Int], threads: [Int], methods: [BenchMethod], lmHead: Int?,
        physicalMemory: UInt64 = ProcessInfo.processInfo.physicalMemory
    ) throws {
        let int32 = Int(Int32.max)
        let maxBatch = batches.max() ?? 1, maxThreads = threads.max() ?? 1
        let rowsPerEntry = methods.map(\.rowsPerEntry).max() ?? 1
        let rowsNote = rowsPerEntry > 1 ? " × \(rowsPerEntry) rows per entry (verification methods)" : ""
        for v in vocabs {
            guard let logits = product(v, maxBatch, rowsPerEntry), logits <= int32 else {
                throw UsageError(
                    message:
                        "--vocab \(v) × --batch \(maxBatch)\(rowsNote) is more than \(int32) logits per call "
                        + "(cblas_sasum takes an Int32 count); lower --vocab or --batch")
            }
            if let lmHead {
                guard let weights = product(v, lmHead), weights <= int32 else {
                    throw UsageError(
                        message:
                            "--vocab \(v) × --lm-head \(lmHead) is more than \(int32) weights (cblas_sgemm takes Int32 sizes); lower --lm-head"
                    )
                }
                guard let states = product(maxBatch, lmHead), states <= int32 else {
                    throw UsageError(
                        message:
                            "--batch \(maxBatch) × --lm-head \(lmHead) is more than \(int32) hidden-state values; lower --lm-head or --batch"
                    )
                }
            }
        }
        // Memory: every vocab's block stays cached for the run; the largest one's transients
        // (its synthetic source, 16-bit copies, processed copy, the samplers' per-thread
        // scratch, the LM head) come on top.
        let halfCopies = methods.filter { $0 == .fusedHalf || $0 == .fusedBrain }.count + 1
        let samplers =
            1
            + methods.map { m -> Int in
                switch m {
                case .fusedVerify: 2
                case .naive, .sortTopP, .statistics, .separateVerify: 0
                default: 1
                }
            }.reduce(0, +)
        let opponents = methods.filter { [.naive, .sortTopP, .separateVerify, .separateProcessed].contains($0) }.count
        var cached: Int? = 0, largestTransient: Int? = 0
        for v in vocabs {
            let rows = maxBatch * rowsPerEntry
            let scratch = BatchSampler.scratchByteCount(vocab: v) ?? product(v, scratchBytesPerLogit)
            let transient = sum(
                product(v, rows, 4), product(v, maxBatch, 2, halfCopies), product(v, maxBatch, 4),
                scratch.flatMap { product($0, maxThreads, samplers) }, product(v, 16, maxThreads, opponents),
                lmHead.flatMap { h in sum(product(v, h, 4), product(maxBatch, h, 8), product(maxBatch, v, 4)) } ?? 0)
            cached = sum(cached, product(v, rows, 4))
            largestTransient = transient.flatMap { t in largestTransient.map { max($0, t) } }
        }
        let needed = sum(cached, largestTransient)
        let available = Int(clamping: physicalMemory)
        guard let needed, needed <= available else {
            let figure = needed.map { "about \(fmt(Double($0) / 1e9, 1)) GB" } ?? "more than 2^63 bytes"
            throw UsageError(
                message:
                    "--vocab \(vocabs.map(String.init).joined(separator: ",")), --batch \(maxBatch), --threads \(maxThreads)"
                    + (lmHead.map { ", --lm-head \($0)" } ?? "")
                    + ": the run needs \(figure) of memory (logits, 16-bit copies, per-thread sampler scratch"
                    + (lmHead == nil ? "" : ", LM-head weights")
                    + "), more than this machine's \(fmt(Double(available) / 1e9, 1)) GB of physical memory")
        }
    }
}
