import ArgumentParser
import COpenBLAS
import Dispatch
import Foundation
import TopNSigma
import TopNSigmaBaselines
import TopNSigmaIO

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
    /// What the method is (absent from files written before it was recorded).
    var kind: MethodKind?
}

extension BenchResult {
    /// Median over the float32 floor (the faster of floor-read and floor-sasum) recorded in
    /// `rows`: the floors of the fused methods' group, which every `fused-*` result was timed in.
    func floatScaleRatio(in rows: [BenchResult]) -> Double {
        let floors = rows.filter { $0.kind?.dividesResults == true }.map(\.medianSeconds)
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
        /// Runs before each call, untimed (e.g. evicting the caches).
        var prepare: (() -> Void)? = nil
        /// Rows read per batch entry (k + 1 for verification): per-row figures divide by it.
        var rowsPerEntry = 1
        /// What the method is (by default one of ours, reading float32).
        var kind = MethodKind(role: .fused)
        /// Runs after each timed call, untimed (e.g. reading what the call reports of itself).
        var afterTimed: (() -> Void)? = nil
    }

    /// How ``interleaved(_:rounds:status:)`` repeats the bodies.
    struct Rounds {
        /// Consecutive calls of one body per round (``burst``).
        var burst = BenchRunner.burst
        /// How many of each burst's calls are untimed, at its start (each body's first call after
        /// another body's burst may find the worker threads asleep).
        var untimed = 0
        /// Whether every body runs once before the first round.
        var warmUp = true
        var minimum = 3
        var maximum = 200
        /// Rounds continue (past `minimum`) until this many seconds have passed.
        var seconds: Double
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
    func interleaved(
        _ timed: [Timed], rounds plan: Rounds? = nil, status: (String) -> Void
    ) -> [(median: Double, repeats: Int)] {
        let plan = plan ?? Rounds(seconds: seconds * Double(timed.count))
        if plan.warmUp {
            for t in timed {
                status(t.name)
                t.body()
            }
        }
        status(timed.map(\.name).joined(separator: ", "))
        var samples = [[Double]](repeating: [], count: timed.count)
        let budget = DispatchTime.now().uptimeNanoseconds + UInt64(plan.seconds * 1e9)
        var rounds = 0
        while rounds < plan.minimum || (rounds < plan.maximum && DispatchTime.now().uptimeNanoseconds < budget) {
            for (i, t) in timed.enumerated() {
                for call in 0..<plan.burst {
                    t.prepare?()
                    let start = DispatchTime.now().uptimeNanoseconds
                    t.body()
                    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
                    guard call >= plan.untimed else { continue }
                    samples[i].append(elapsed)
                    t.afterTimed?()
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
                name: FloorMethod.read.rawValue,
                body: {
                    sink.value += floorSampler.readFloor(UnsafeRawPointer(logits), rows: batch, bytesPerRow: vocab * 4)
                }, kind: FloorMethod.read.kind),
            Timed(
                name: FloorMethod.sasum.rawValue, body: { sink.value += cblas_sasum(Int32(batch * vocab), logits, 1) },
                kind: FloorMethod.sasum.kind),
            Timed(
                name: FloorMethod.sasumRows.rawValue,
                body: { for r in 0..<batch { sink.value += cblas_sasum(Int32(vocab), logits + r * vocab, 1) } },
                kind: FloorMethod.sasumRows.kind)
        ]
        // The 16-bit methods' floor: floor-read over a 16-bit block (2 bytes per logit), the
        // bytes those methods read (cblas_sasum reads float32 only).
        let halfFloor: UnsafeMutableBufferPointer<UInt16>?
        if methods.contains(where: { $0.kind.bytesPerLogit == 2 }) {
            let bits = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: batch * vocab)
            for i in bits.indices { bits[i] = UInt16(truncatingIfNeeded: logits[i].bitPattern >> 16) }
            halfFloor = bits
            timed.append(
                Timed(
                    name: FloorMethod.read16.rawValue,
                    body: {
                        sink.value += floorSampler.readFloor(
                            UnsafeRawPointer(bits.baseAddress!), rows: batch, bytesPerRow: vocab * 2)
                    }, kind: FloorMethod.read16.kind))
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
                }, kept: { median(Array(kept)) }, kind: MethodKind(role: .opponent))
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
                    format: method.format,
                    parameters: method.parameters(n: n, temperature: temperature, topP: topP, topK: topK))
                fusedCalls.append(call)
                timed.append(
                    Timed(
                        name: method.rawValue, body: call.run,
                        kept: { median(call.results.compactMap { try? $0.get().candidateCount }) }, kind: method.kind))
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
                        kept: { median(call.results.compactMap { try? $0.get().candidateCount }) }, kind: method.kind))
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
        var groups: [[Timed]] = [floors + timed[floorCount...].filter { $0.kind.role == .fused }]
        for t in timed[floorCount...] where t.kind.role == .opponent { groups.append([floors[0], floors[1], t]) }
        for group in groups {
            let timings = interleaved(group) { writeStandardError("\r\u{1B}[K\(progress): \($0)") }
            func median(_ floor: FloorMethod) -> Double? {
                zip(group, timings).first { $0.0.name == floor.rawValue }?.1.median
            }
            let floorRead = median(.read)!, floorSasum = median(.sasum)!
            let floor = min(floorRead, floorSasum)
            let floorName = (floorRead <= floorSasum ? FloorMethod.read : .sasum).rawValue
            let halfFloor = median(.read16)
            for (t, timing) in zip(group, timings) {
                if t.kind.role == .floor && results.contains(where: { $0.method == t.name }) { continue }
                let isHalf = t.kind.bytesPerLogit == 2
                let rows = Double(t.rowsPerEntry)
                let (divisor, divisorName) =
                    isHalf && t.kind.role != .floor
                    ? (halfFloor ?? floor, FloorMethod.read16.rawValue) : (floor, floorName)
                results.append(
                    BenchResult(
                        method: t.name, batch: batch, vocab: vocab, threads: threads, workload: workload.source,
                        usPerRow: timing.median * 1e6 / (Double(batch) * rows),
                        gbPerSecond: (isHalf ? bytes / 2 : bytes) * rows / timing.median * 1e-9,
                        ratioToFloor: timing.median / (divisor * rows), floor: divisorName,
                        medianSeconds: timing.median, repeats: timing.repeats, medianKept: t.kept(), kind: t.kind))
            }
        }
        blackHole(sink.value)
        return Self.relate(results)
    }

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
            if let kind = r.kind, kind.role != .floor {
                let scaled = kind.bytesPerLogit == 2 ? r.floatScaleRatio(in: rows) : own
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
            $0.kind?.role != .floor
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
            }, kept: { median(results.value.compactMap { try? $0.get().candidateCount }) },
            kind: BenchMethod.separateProcessed.kind)
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
                    }, kept: { median(Array(accepted.values)) }, rowsPerEntry: k + 1, kind: method.kind)
            ]
        }
    }
}
