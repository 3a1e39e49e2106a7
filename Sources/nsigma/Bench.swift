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
        for read in results where read.method == FloorMethod.read.rawValue {
            guard
                let sasum = results.first(where: {
                    $0.method == FloorMethod.sasum.rawValue && $0.vocab == read.vocab && $0.batch == read.batch
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
