import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The batched Top-nσ sampler: one token per row of a `[batch, vocab]` block of logits.
///
/// Create one per (vocabulary size, maximum batch size, thread count) and keep it: it owns every
/// scratch buffer, so a call allocates nothing on the heap in steady state.
///
/// Per row, with that row's ``SamplingParameters`` and decode `step`:
/// 1. one fused pass computes max, argmax, finite count, mean and M2 (see ``RowStatistics``);
/// 2. `T = 0` returns the argmax (lowest id on ties) with log-probability 0;
/// 3. otherwise one compare pass keeps `x >= max - n·std` (every finite logit when `nSigma` is
///    `nil`) and compacts the survivors into per-worker scratch; the second pass reads the row
///    from cache when it fits there (a row of 128256 logits is 501 KiB);
/// 4. softmax at temperature `T` over the survivors only, an inverse-CDF draw with a 53-bit
///    uniform from Philox4x32-10 keyed by `seed` at counter `step`, and the log-probability of
///    the drawn token under that renormalized distribution.
///
/// **Determinism.** The token is a pure function of (row logits, parameters, seed, step): the
/// same for any thread count, batch size or position of the row in the batch. Rows are reduced
/// in fixed chunks of 4096 logits merged in chunk order whether one thread or several reduce
/// them.
///
/// **Errors.** A NaN or `+inf` logit, a row without finite logits, a negative or NaN temperature
/// or `nSigma` fail that row only (``RowError``); every other row still gets its token.
/// Shape mismatches in the pointer API are programmer errors and trap with a message.
///
/// **Threads.** With a batch at least as large as the thread count, workers take whole rows
/// from an atomic counter. With fewer rows than threads, rows are split into chunk ranges: one
/// parallel pass computes the chunk statistics, one merges them per row in a fixed order, one
/// parallel pass compacts the survivors, and the draw runs per row.
///
/// **Thread safety.** One sampler serves one call at a time: its scratch is shared by the call's
/// workers. A second call entering while one is running traps with a message (it never corrupts
/// results silently). Any number of samplers may run at once on different threads.
public final class BatchSampler: @unchecked Sendable {
    /// Logits per row.
    public let vocabularySize: Int
    /// The largest batch a call may pass.
    public let maximumBatchSize: Int
    /// Workers a call uses (at most this many run at once).
    public let threadCount: Int

    private let chunksPerRow: Int
    /// Survivor scratch: `max(threadCount, 1)` regions of `vocabularySize` candidates.
    private let candidates: UnsafeMutablePointer<Candidate>
    /// Split mode: the partial statistics and survivor counts of each chunk of each row.
    private let partials: UnsafeMutablePointer<StatisticsKernel.ChunkPartial>
    private let chunkCandidateCounts: UnsafeMutablePointer<Int>
    /// Split mode: per row, the Float threshold, or NaN when the row needs no compaction.
    private let rowThresholds: UnsafeMutablePointer<Float>
    /// Split mode: per row, the merged statistics.
    private let splitStatistics: UnsafeMutablePointer<RowStatistics>
    private let nextTask = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)

    /// The thread count used when none is given: every active processor.
    public static var defaultThreadCount: Int { max(1, activeProcessorCount()) }

    /// - Parameters:
    ///   - vocabularySize: logits per row (`> 0`).
    ///   - maximumBatchSize: the largest number of rows a call passes (`> 0`).
    ///   - threadCount: workers per call; default every active processor.
    /// - Precondition: positive sizes, vocabulary below 2³¹.
    public init(vocabularySize: Int, maximumBatchSize: Int, threadCount: Int? = nil) {
        precondition(vocabularySize > 0 && vocabularySize < Int(Int32.max), "vocabularySize must be in 1..<2^31, got \(vocabularySize)")
        precondition(maximumBatchSize > 0, "maximumBatchSize must be positive, got \(maximumBatchSize)")
        let threads = threadCount ?? Self.defaultThreadCount
        precondition(threads > 0, "threadCount must be positive, got \(threads)")
        self.vocabularySize = vocabularySize
        self.maximumBatchSize = maximumBatchSize
        self.threadCount = threads
        self.chunksPerRow = StatisticsKernel.chunkCount(length: vocabularySize)
        let regions = threads
        candidates = .allocate(capacity: regions * vocabularySize)
        partials = .allocate(capacity: regions * chunksPerRow)
        partials.initialize(repeating: StatisticsKernel.ChunkPartial(), count: regions * chunksPerRow)
        chunkCandidateCounts = .allocate(capacity: regions * chunksPerRow)
        chunkCandidateCounts.initialize(repeating: 0, count: regions * chunksPerRow)
        rowThresholds = .allocate(capacity: regions)
        rowThresholds.initialize(repeating: .nan, count: regions)
        splitStatistics = .allocate(capacity: regions)
        splitStatistics.initialize(
            repeating: RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0),
            count: regions)
    }

    deinit {
        candidates.deallocate()
        partials.deallocate()
        chunkCandidateCounts.deallocate()
        rowThresholds.deallocate()
        splitStatistics.deallocate()
    }

    /// Samples one token per row.
    ///
    /// - Parameters:
    ///   - logits: row 0's first logit; row `r` starts at `logits + r * rowStride`.
    ///   - rows: rows to sample, `0...maximumBatchSize`.
    ///   - rowStride: elements between row starts, `>= vocabularySize` (default `vocabularySize`).
    ///   - parameters: each row's parameters (at least `rows`).
    ///   - steps: each row's decode step, the generator's counter (at least `rows`).
    ///   - results: filled with each row's token or error (at least `rows` slots).
    /// - Complexity: one pass over the logits from memory, a compare pass from cache, and
    ///   O(survivors) for the draw. No heap allocation.
    public func sample(
        logits: UnsafePointer<Float>, rows: Int, rowStride: Int? = nil,
        parameters: UnsafeBufferPointer<SamplingParameters>,
        steps: UnsafeBufferPointer<UInt64>,
        into results: UnsafeMutableBufferPointer<SampleResult>
    ) {
        let stride = rowStride ?? vocabularySize
        precondition(rows >= 0 && rows <= maximumBatchSize, "rows (\(rows)) must be in 0...maximumBatchSize (\(maximumBatchSize))")
        precondition(stride >= vocabularySize, "rowStride (\(stride)) must be at least vocabularySize (\(vocabularySize))")
        precondition(parameters.count >= rows, "parameters holds \(parameters.count) entries for \(rows) rows")
        precondition(steps.count >= rows, "steps holds \(steps.count) entries for \(rows) rows")
        precondition(results.count >= rows, "results holds \(results.count) slots for \(rows) rows")
        let (exchanged, _) = busy.compareExchange(expected: false, desired: true, ordering: .acquiring)
        precondition(exchanged, "BatchSampler.sample was called while another call on the same sampler was running; use one sampler per concurrent caller")
        defer { busy.store(false, ordering: .releasing) }
        guard rows > 0 else { return }
        let batch = Batch(
            logits: logits, stride: stride, parameters: parameters.baseAddress!, steps: steps.baseAddress!,
            results: results.baseAddress!)
        if rows < threadCount && chunksPerRow > 1 {
            sampleSplit(batch, rows: rows)
        } else {
            sampleByRows(batch, rows: rows)
        }
    }

    /// Array convenience: `logits` holds `rows × vocabularySize` values, row-major.
    ///
    /// - Parameters:
    ///   - logits: the block, `parameters.count` rows.
    ///   - parameters: one entry per row.
    ///   - steps: one decode step per row; default all 0.
    /// - Returns: each row's token or error, in row order.
    public func sample(logits: [Float], parameters: [SamplingParameters], steps: [UInt64]? = nil) -> [SampleResult] {
        let rows = parameters.count
        precondition(logits.count == rows * vocabularySize, "logits holds \(logits.count) values, expected \(rows) rows × \(vocabularySize)")
        let steps = steps ?? [UInt64](repeating: 0, count: rows)
        precondition(steps.count == rows, "steps holds \(steps.count) entries for \(rows) rows")
        return [SampleResult](unsafeUninitializedCapacity: rows) { out, initialized in
            let placeholder = SampleResult.failure(.noFiniteLogit)
            out.initialize(repeating: placeholder)
            logits.withUnsafeBufferPointer { l in
                parameters.withUnsafeBufferPointer { p in
                    steps.withUnsafeBufferPointer { s in
                        sample(logits: l.baseAddress!, rows: rows, parameters: p, steps: s, into: out)
                    }
                }
            }
            initialized = rows
        }
    }

    // MARK: - scheduling

    /// The caller's buffers for one call; valid for the call's duration only.
    private struct Batch: @unchecked Sendable {
        let logits: UnsafePointer<Float>
        let stride: Int
        let parameters: UnsafePointer<SamplingParameters>
        let steps: UnsafePointer<UInt64>
        let results: UnsafeMutablePointer<SampleResult>
    }

    /// Workers take whole rows from an atomic counter; worker `w` uses scratch region `w`.
    private func sampleByRows(_ batch: Batch, rows: Int) {
        nextTask.store(0, ordering: .relaxed)
        let workers = min(threadCount, rows)
        let vocab = vocabularySize
        let work: @Sendable (Int) -> Void = { worker in
            let scratch = self.candidates + worker * vocab
            while true {
                let row = self.nextTask.wrappingAdd(1, ordering: .relaxed).oldValue
                if row >= rows { break }
                let p = batch.logits + row * batch.stride
                batch.results[row] = Self.sampleRow(
                    p, vocab: vocab, parameters: batch.parameters[row], step: batch.steps[row], scratch: scratch)
            }
        }
        if workers == 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: workers, execute: work) }
    }

    /// One row, start to finish, on the calling thread.
    static func sampleRow(
        _ p: UnsafePointer<Float>, vocab: Int, parameters: SamplingParameters, step: UInt64,
        scratch: UnsafeMutablePointer<Candidate>
    ) -> SampleResult {
        if let error = parameters.validationError { return .failure(error) }
        switch StatisticsKernel.rowStatistics(p, count: vocab) {
        case .failure(let error):
            return .failure(error)
        case .success(let statistics):
            return finishRow(p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch, compacted: nil)
        }
    }

    /// The Float threshold of a row, or nil when the row is greedy.
    @inline(__always)
    static func compareThreshold(_ statistics: RowStatistics, _ parameters: SamplingParameters) -> Float? {
        if parameters.temperature == 0 { return nil }
        guard let n = parameters.nSigma else { return -Float.greatestFiniteMagnitude }
        return TopNSigma.floatThreshold(TopNSigma.threshold(for: statistics, n: Double(n)))
    }

    /// Given the row's statistics: greedy, or compaction (unless already done: `compacted`
    /// survivors sit at `scratch`) and the draw.
    static func finishRow(
        _ p: UnsafePointer<Float>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters,
        step: UInt64, scratch: UnsafeMutablePointer<Candidate>, compacted: Int?
    ) -> SampleResult {
        guard statistics.finiteCount > 0 else { return .failure(.noFiniteLogit) }
        guard let threshold = compareThreshold(statistics, parameters) else {
            return .success(SampledToken(token: statistics.argmax, logProbability: 0, candidateCount: 1))
        }
        let count = compacted ?? CandidateKernel.compact(p, count: vocab, threshold: threshold, indexBase: 0, into: scratch)
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        return .success(DrawKernel.draw(
            UnsafeBufferPointer(start: scratch, count: count), maximum: statistics.maximum,
            temperature: parameters.temperature, uniform: u))
    }

    /// Fewer rows than threads: rows split into chunk ranges, four phases.
    private func sampleSplit(_ batch: Batch, rows: Int) {
        let vocab = vocabularySize
        let chunks = chunksPerRow
        let chunkLength = StatisticsKernel.chunkLength
        // Tasks: each row cut into `perRow` ranges of whole chunks. Any grouping gives the same
        // result: partials are stored per chunk and merged in chunk order.
        let perRow = min(chunks, max(1, threadCount / rows))
        let tasks = rows * perRow
        let plan = SplitPlan(chunksPerRow: chunks, rangesPerRow: perRow)

        // Phase 1: chunk statistics (rows with bad parameters are skipped).
        DispatchQueue.concurrentPerform(iterations: tasks) { task in
            let (row, first, end) = plan.range(task)
            if batch.parameters[row].validationError != nil { return }
            let p = batch.logits + row * batch.stride
            for c in first..<end {
                let start = c * chunkLength
                self.partials[row * chunks + c] = StatisticsKernel.chunkPartial(p + start, count: min(chunkLength, vocab - start))
            }
        }
        // Phase 2: merge per row in chunk order; settle errors and greedy rows.
        for row in 0..<rows {
            rowThresholds[row] = .nan
            let parameters = batch.parameters[row]
            if let error = parameters.validationError {
                batch.results[row] = .failure(error)
                continue
            }
            var accumulator = StatisticsKernel.RowAccumulator()
            for c in 0..<chunks { accumulator.merge(partials[row * chunks + c], chunk: c, start: c * chunkLength) }
            switch accumulator.finish(row: batch.logits + row * batch.stride, count: vocab) {
            case .failure(let error):
                batch.results[row] = .failure(error)
            case .success(let s):
                splitStatistics[row] = s
                if s.finiteCount == 0 {
                    batch.results[row] = .failure(.noFiniteLogit)
                } else if let threshold = Self.compareThreshold(s, parameters) {
                    rowThresholds[row] = threshold
                } else {
                    batch.results[row] = .success(SampledToken(token: s.argmax, logProbability: 0, candidateCount: 1))
                }
            }
        }
        // Phase 3: compaction of each chunk into its own slot of the row's scratch region.
        DispatchQueue.concurrentPerform(iterations: tasks) { task in
            let (row, first, end) = plan.range(task)
            let threshold = self.rowThresholds[row]
            if threshold.isNaN { return }
            let p = batch.logits + row * batch.stride
            let region = self.candidates + row * vocab
            for c in first..<end {
                let start = c * chunkLength
                self.chunkCandidateCounts[row * chunks + c] = CandidateKernel.compact(
                    p + start, count: min(chunkLength, vocab - start), threshold: threshold, indexBase: start,
                    into: region + start)
            }
        }
        // Phase 4: gather each row's survivors in order, then draw.
        for row in 0..<rows where !rowThresholds[row].isNaN {
            let region = candidates + row * vocab
            var count = 0
            for c in 0..<chunks {
                let n = chunkCandidateCounts[row * chunks + c]
                if n > 0 && count != c * chunkLength {
                    (region + count).update(from: region + c * chunkLength, count: n)
                }
                count += n
            }
            batch.results[row] = Self.finishRow(
                batch.logits + row * batch.stride, vocab: vocab, statistics: splitStatistics[row], parameters: batch.parameters[row],
                step: batch.steps[row], scratch: region, compacted: count)
        }
    }
}

/// How split mode cuts rows into tasks of whole chunks.
private struct SplitPlan: Sendable {
    let chunksPerRow: Int
    let rangesPerRow: Int

    /// Task `task` covers chunks `first..<end` of row `row`.
    func range(_ task: Int) -> (row: Int, first: Int, end: Int) {
        let row = task / rangesPerRow, part = task % rangesPerRow
        return (row, part * chunksPerRow / rangesPerRow, (part + 1) * chunksPerRow / rangesPerRow)
    }
}

/// Processors the scheduler may use.
func activeProcessorCount() -> Int {
    #if os(Linux)
    return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    #else
    return 1
    #endif
}
