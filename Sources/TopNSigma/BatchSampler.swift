import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The batched Top-nσ sampler: one token per row of a `[batch, vocab]` block of logits.
///
/// Create one per (vocabulary size, maximum batch size, thread count) and keep it: it owns every
/// scratch buffer, so a call allocates nothing on the heap in steady state.
///
/// Per row, with that row's ``SamplingParameters`` and decode `step`:
/// 1. one fused pass computes max, argmax, finite count, mean and M2 (see ``RowStatistics``);
/// 2. `T = 0` returns the argmax (lowest id on ties) with log-probability 0;
/// 3. otherwise the survivors `x >= max - n·std` (every finite logit when `nSigma` is `nil`)
///    are compacted into per-worker scratch: each chunk, while still in L1 after its reduction,
///    against a provisional threshold from the chunks before it, then filtered to the final
///    threshold (the library's internal row pipeline), so the row is read from memory once;
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
/// from an atomic counter. With fewer rows than threads, rows are split into chunk ranges: each
/// task reduces its chunks, then (after a barrier) merges its row's chunk statistics in chunk
/// order and compacts its chunks' survivors, then (after a second barrier) one task per row
/// gathers the survivors in order and draws. By default the work runs on the sampler's own
/// persistent threads (``Executor/workerPool``), which allocate nothing per call;
/// ``Executor/concurrentPerform`` runs the same tasks with `DispatchQueue.concurrentPerform`
/// (libdispatch allocates a few blocks per call there).
///
/// **Thread safety.** One sampler serves one call at a time: its scratch is shared by the call's
/// workers. A second call entering while one is running traps with a message (it never corrupts
/// results silently). Any number of samplers may run at once on different threads.
///
/// ```swift
/// let sampler = BatchSampler(vocabularySize: 4, maximumBatchSize: 2)
/// let logits: [Float] = [1, 5, 2, 0,    // row 0
///                        3, 3, -.infinity, 1]   // row 1 (token 2 masked)
/// let parameters = [SamplingParameters(temperature: 0.7, nSigma: 1, seed: 42),
///                   SamplingParameters(temperature: 0)]   // greedy
/// for case .success(let drawn) in sampler.sample(logits: logits, parameters: parameters, steps: [0, 0]) {
///     print(drawn.token, drawn.logProbability, drawn.candidateCount)
/// }
/// ```
public final class BatchSampler: @unchecked Sendable, ParallelJob {
    /// Logits per row.
    public let vocabularySize: Int
    /// The largest batch a call may pass.
    public let maximumBatchSize: Int
    /// Workers a call uses (at most this many run at once).
    public let threadCount: Int
    /// How the work of a call is spread over threads.
    public let executor: Executor

    /// How a call's work is spread over threads.
    public enum Executor: Sendable, Equatable {
        /// The sampler's own `threadCount - 1` persistent threads plus the caller: no heap
        /// allocation per call, and one wake-up per call.
        case workerPool
        /// `DispatchQueue.concurrentPerform`: no threads of the sampler's own, but libdispatch
        /// allocates a few blocks per call and split rows take three dispatches.
        case concurrentPerform
    }

    private let chunksPerRow: Int
    /// Where the workers run and their memory lives.
    public let plan: NUMAPlan
    /// The topology the plan was made for.
    public let topology: NUMATopology
    /// The placement policy.
    public let placement: NUMAPlacement
    /// One scratch region per worker (row mode) or per row (split mode): a candidate slot per
    /// logit; per chunk a provisional threshold, a survivor count and (split mode) partial
    /// statistics; (split mode) the row's merged statistics and threshold. Region `w` is one
    /// allocation on worker `w`'s node.
    private let regions: [RowPipeline.Scratch]
    private let regionPartials: [UnsafeMutablePointer<StatisticsKernel.ChunkPartial>]
    private let regionBlocks: [NodeMemory.Block]
    /// Row mode: per node group, the next row of its range to take.
    private let groupCounters: UnsafeMutablePointer<Atomic<Int>>
    private let placementStatus: PlacementStatus

    /// Worker threads that could not be bound to their node (libnuma refused); they run unbound.
    /// Binding happens as each thread starts, so this may grow shortly after `init`.
    public var unboundWorkerCount: Int { placementStatus.unbound.load(ordering: .relaxed) }

    /// Counts of the worker threads' binding outcomes.
    final class PlacementStatus: Sendable {
        let unbound = Atomic<Int>(0)
    }
    private let busy = Atomic<Bool>(false)
    private let pool: WorkerPool?
    private let barrier = SpinBarrier()
    /// The current call's buffers and work, set before the workers start.
    private var batch: Batch?
    private var work = Work.rows(0)

    /// What ``execute(_:)`` does for the current call.
    private enum Work {
        /// Whole rows from the atomic counter.
        case rows(Int)
        /// Split rows: `phase` nil runs all three phases with barriers (own threads only).
        case split(SplitPlan, tasks: Int, phase: Int?)
    }

    /// The thread count used when none is given: every active processor.
    public static var defaultThreadCount: Int { max(1, activeProcessorCount()) }

    /// Creates a sampler for rows of `vocabularySize` logits and batches of up to
    /// `maximumBatchSize` rows: allocates all of its scratch (on the workers' NUMA nodes) and
    /// starts its `threadCount - 1` worker threads. Create it once per model and keep it.
    ///
    /// - Parameters:
    ///   - vocabularySize: logits per row (`> 0`).
    ///   - maximumBatchSize: the largest number of rows a call passes (`> 0`).
    ///   - threadCount: workers per call; default every active processor.
    ///   - executor: the sampler's own threads (default) or `concurrentPerform`.
    ///   - spinMicroseconds: with the worker pool, how long an idle worker spins waiting for the
    ///     next call before it sleeps (default 50). Spinning makes back-to-back calls start at
    ///     once; a sleeping worker takes tens of microseconds to wake on a virtual machine, which
    ///     matters for a single split row. 0 never spins.
    ///   - placement: NUMA placement of workers, scratch and rows (default automatic; see
    ///     ``NUMAPlacement``). On a single-node machine or without libnuma nothing is bound.
    ///   - topology: the machine; default the detected one (inject one to plan for another).
    /// - Precondition: positive sizes, vocabulary below 2³¹.
    public init(
        vocabularySize: Int, maximumBatchSize: Int, threadCount: Int? = nil, executor: Executor = .workerPool,
        spinMicroseconds: Int = 50, placement: NUMAPlacement = .automatic, topology: NUMATopology = .current
    ) {
        precondition(vocabularySize > 0 && vocabularySize < Int(Int32.max), "vocabularySize must be in 1..<2^31, got \(vocabularySize)")
        precondition(maximumBatchSize > 0, "maximumBatchSize must be positive, got \(maximumBatchSize)")
        let threads = threadCount ?? Self.defaultThreadCount
        precondition(threads > 0, "threadCount must be positive, got \(threads)")
        self.vocabularySize = vocabularySize
        self.maximumBatchSize = maximumBatchSize
        self.threadCount = threads
        self.executor = executor
        self.chunksPerRow = StatisticsKernel.chunkCount(length: vocabularySize)
        self.topology = topology
        self.placement = placement
        let plan = NUMAPlan(threads: threads, topology: topology, placement: placement)
        self.plan = plan
        // Bind only where it changes something: several nodes, or one node asked for by name.
        let binds = topology.available && (topology.nodes.count > 1 || { if case .node = placement { return true } else { return false } }())
        let status = PlacementStatus()
        self.placementStatus = status
        var onStart: (@Sendable (Int) -> Void)?
        if binds {
            onStart = { index in
                if let node = plan.workerNodes[index], !NodeMemory.bindCurrentThread(toNode: node) {
                    status.unbound.add(1, ordering: .relaxed)
                }
            }
        }
        self.pool = executor == .workerPool && threads > 1
            ? WorkerPool(threadCount: threads, spinMicroseconds: spinMicroseconds, onStart: onStart)
            : nil
        // One block per region, on the region's node: candidates, partials, counts, thresholds.
        let chunks = chunksPerRow
        let candidateBytes = (vocabularySize * MemoryLayout<Candidate>.stride + 63) / 64 * 64
        let partialBytes = (chunks * MemoryLayout<StatisticsKernel.ChunkPartial>.stride + 63) / 64 * 64
        let countBytes = (chunks * MemoryLayout<Int>.stride + 63) / 64 * 64
        let thresholdBytes = (chunks * MemoryLayout<Float>.stride + 63) / 64 * 64
        let statisticsBytes = (MemoryLayout<RowStatistics>.stride + MemoryLayout<Float>.stride + 63) / 64 * 64
        let weightBytes = vocabularySize * MemoryLayout<Double>.stride
        let regionBytes = candidateBytes + partialBytes + countBytes + thresholdBytes + statisticsBytes + weightBytes
        var regions: [RowPipeline.Scratch] = []
        var regionPartials: [UnsafeMutablePointer<StatisticsKernel.ChunkPartial>] = []
        var blocks: [NodeMemory.Block] = []
        for region in 0..<threads {
            let node = placement == .disabled ? nil : plan.workerNodes[region]
            let block = placement == .disabled
                ? NodeMemory.allocateFromHeap(byteCount: regionBytes)
                : NodeMemory.allocate(byteCount: regionBytes, node: node, topology: topology)
            let base = block.pointer
            let candidates = base.bindMemory(to: Candidate.self, capacity: vocabularySize)
            let partials = (base + candidateBytes).bindMemory(to: StatisticsKernel.ChunkPartial.self, capacity: chunks)
            partials.initialize(repeating: StatisticsKernel.ChunkPartial(), count: chunks)
            let counts = (base + candidateBytes + partialBytes).bindMemory(to: Int.self, capacity: chunks)
            counts.initialize(repeating: 0, count: chunks)
            let thresholds = (base + candidateBytes + partialBytes + countBytes).bindMemory(to: Float.self, capacity: chunks)
            thresholds.initialize(repeating: 0, count: chunks)
            let statisticsBase = base + candidateBytes + partialBytes + countBytes + thresholdBytes
            let rowStatistics = statisticsBase.bindMemory(to: RowStatistics.self, capacity: 1)
            rowStatistics.initialize(to: RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0))
            let rowThreshold = (statisticsBase + MemoryLayout<RowStatistics>.stride).bindMemory(to: Float.self, capacity: 1)
            rowThreshold.initialize(to: .nan)
            let weights = (statisticsBase + statisticsBytes).bindMemory(to: Double.self, capacity: vocabularySize)
            regions.append(RowPipeline.Scratch(
                thresholds: thresholds, counts: counts, candidates: candidates, rowStatistics: rowStatistics, rowThreshold: rowThreshold,
                weights: weights))
            regionPartials.append(partials)
            blocks.append(block)
        }
        self.regions = regions
        self.regionPartials = regionPartials
        self.regionBlocks = blocks
        groupCounters = .allocate(capacity: plan.groups.count)
        for g in 0..<plan.groups.count { (groupCounters + g).initialize(to: Atomic<Int>(0)) }
    }

    deinit {
        regionBlocks.forEach(NodeMemory.free)
        groupCounters.deinitialize(count: plan.groups.count)
        groupCounters.deallocate()
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
        sample(
            logits: UnsafeRawPointer(logits), format: .float32, rows: rows, rowStride: rowStride, parameters: parameters,
            steps: steps, into: results)
    }

    /// Samples one token per row of half-precision or float logits, read in their stored format
    /// and converted in registers (no row is converted into a buffer). Same semantics, tokens and
    /// log-probabilities as the Float API on the converted values.
    ///
    /// - Parameters:
    ///   - logits: row 0's first logit, stored as `format` (`UInt16` bits for the 16-bit formats).
    ///   - format: ``LogitFormat/float32``, ``LogitFormat/float16`` or ``LogitFormat/bfloat16``.
    ///   - rows: rows to sample, `0...maximumBatchSize`.
    ///   - rowStride: elements (not bytes) between row starts, `>= vocabularySize`.
    ///   - parameters: each row's parameters (at least `rows`).
    ///   - steps: each row's decode step (at least `rows`).
    ///   - results: filled with each row's token or error (at least `rows` slots).
    public func sample(
        logits: UnsafeRawPointer, format: LogitFormat, rows: Int, rowStride: Int? = nil,
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
        batch = Batch(
            logits: logits, format: format, stride: stride, parameters: parameters.baseAddress!, steps: steps.baseAddress!,
            results: results.baseAddress!)
        defer { batch = nil }
        if rows < threadCount && chunksPerRow > 1 {
            sampleSplit(rows: rows)
        } else {
            work = .rows(rows)
            for g in 0..<plan.groups.count { groupCounters[g].store(plan.rowStart(group: g, batch: rows), ordering: .relaxed) }
            parallel(threadCount)
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

    /// Array convenience for 16-bit logits: `bits` holds `rows × vocabularySize` float16 or
    /// bfloat16 values, row-major.
    public func sample(bits: [UInt16], format: LogitFormat, parameters: [SamplingParameters], steps: [UInt64]? = nil) -> [SampleResult] {
        precondition(format != .float32, "use sample(logits:parameters:steps:) for Float logits")
        let rows = parameters.count
        precondition(bits.count == rows * vocabularySize, "bits holds \(bits.count) values, expected \(rows) rows × \(vocabularySize)")
        let steps = steps ?? [UInt64](repeating: 0, count: rows)
        precondition(steps.count == rows, "steps holds \(steps.count) entries for \(rows) rows")
        return [SampleResult](unsafeUninitializedCapacity: rows) { out, initialized in
            out.initialize(repeating: .failure(.noFiniteLogit))
            bits.withUnsafeBytes { raw in
                parameters.withUnsafeBufferPointer { p in
                    steps.withUnsafeBufferPointer { s in
                        sample(logits: raw.baseAddress!, format: format, rows: rows, parameters: p, steps: s, into: out)
                    }
                }
            }
            initialized = rows
        }
    }

    // MARK: - scheduling

    /// The caller's buffers for one call; valid for the call's duration only.
    private struct Batch: @unchecked Sendable {
        let logits: UnsafeRawPointer
        let format: LogitFormat
        /// Elements between row starts.
        let stride: Int
        let parameters: UnsafePointer<SamplingParameters>
        let steps: UnsafePointer<UInt64>
        let results: UnsafeMutablePointer<SampleResult>

        /// Row `row` as elements of type `E`.
        @inline(__always)
        func row<E: LogitElement>(_ row: Int, as type: E.Type) -> UnsafePointer<E> {
            (logits + row * stride * MemoryLayout<E>.stride).assumingMemoryBound(to: E.self)
        }
    }

    /// Runs ``execute(_:)`` for `0..<count` on the executor; with the worker pool every index
    /// has its own thread, so tasks may meet at ``barrier``.
    private func parallel(_ count: Int) {
        if count == 1 {
            execute(0)
        } else if let pool {
            pool.run(participants: count, self)
        } else {
            DispatchQueue.concurrentPerform(iterations: count) { self.execute($0) }
        }
    }

    /// One task of the current call (``ParallelJob``), in the batch's logit format.
    func execute(_ index: Int) {
        guard let batch else { preconditionFailure("execute outside a sample call") }
        switch batch.format {
        case .float32: execute(index, batch, Float.self)
        case .float16: execute(index, batch, Half.self)
        case .bfloat16: execute(index, batch, BFloat16.self)
        }
    }

    private func execute<E: LogitElement>(_ index: Int, _ batch: Batch, _ type: E.Type) {
        switch work {
        case .rows(let rows):
            rowWorker(index, batch, rows: rows, type)
        case .split(let plan, let tasks, let phase):
            if phase == nil || phase == 0 { reduceChunks(index, plan, batch, type) }
            if phase == nil { barrier.wait(participants: tasks) }
            if phase == nil || phase == 1 { thresholdAndCompact(index, plan, batch, type) }
            if phase == nil { barrier.wait(participants: tasks) }
            if phase == nil || phase == 2 { gatherAndDraw(index, plan, batch) }
        }
    }

    /// Row mode: worker `w` takes rows of its node group's range from the group's counter.
    private func rowWorker<E: LogitElement>(_ worker: Int, _ batch: Batch, rows: Int, _ type: E.Type) {
        let scratch = regions[worker]
        var group = 0
        while !plan.groups[group].workers.contains(worker) { group += 1 }
        let end = plan.rowStart(group: group + 1, batch: rows)
        while true {
            let row = groupCounters[group].wrappingAdd(1, ordering: .relaxed).oldValue
            if row >= end { break }
            batch.results[row] = RowPipeline.sampleRow(
                batch.row(row, as: E.self), vocab: vocabularySize, parameters: batch.parameters[row],
                step: batch.steps[row], scratch: scratch)
        }
    }

    /// Fewer rows than threads: each row cut into ranges of whole chunks, one task per range.
    private func sampleSplit(rows: Int) {
        let perRow = min(chunksPerRow, max(1, threadCount / rows))
        let plan = SplitPlan(chunksPerRow: chunksPerRow, rangesPerRow: perRow)
        let tasks = rows * perRow
        if pool != nil || tasks == 1 {
            work = .split(plan, tasks: tasks, phase: nil)
            parallel(tasks)
        } else {
            for phase in 0..<3 {
                work = .split(plan, tasks: tasks, phase: phase)
                parallel(tasks)
            }
        }
    }

    /// Split phase 1: reduce the task's chunks (partials stored per chunk) and collect their
    /// survivors against provisional thresholds from the task's own chunks.
    private func reduceChunks<E: LogitElement>(_ task: Int, _ plan: SplitPlan, _ batch: Batch, _ type: E.Type) {
        let (row, first, end) = plan.range(task)
        let parameters = batch.parameters[row]
        if parameters.validationError != nil { return }
        _ = RowPipeline.reduce(
            batch.row(row, as: E.self), vocab: vocabularySize, chunks: first, end, collect: parameters.temperature != 0,
            parameters: parameters, scratch: regions[row], partials: regionPartials[row])
    }

    /// Split phase 2: every task of a row merges the row's partials in chunk order (the same
    /// arithmetic, so the same result in each); the row's first task settles errors and greedy
    /// rows; each task brings its own chunks' survivors to the final threshold.
    private func thresholdAndCompact<E: LogitElement>(_ task: Int, _ plan: SplitPlan, _ batch: Batch, _ type: E.Type) {
        let (row, first, end) = plan.range(task)
        let isFirst = first == 0
        let parameters = batch.parameters[row]
        let p = batch.row(row, as: E.self)
        if isFirst { regions[row].rowThreshold.pointee = .nan }
        if let error = parameters.validationError {
            if isFirst { batch.results[row] = .failure(error) }
            return
        }
        let chunkLength = StatisticsKernel.chunkLength
        var accumulator = StatisticsKernel.RowAccumulator()
        for c in 0..<chunksPerRow { accumulator.merge(regionPartials[row][c], chunk: c, start: c * chunkLength) }
        let statistics: RowStatistics
        switch accumulator.finish(row: p, count: vocabularySize) {
        case .failure(let error):
            if isFirst { batch.results[row] = .failure(error) }
            return
        case .success(let s):
            statistics = s
        }
        guard statistics.finiteCount > 0 else {
            if isFirst { batch.results[row] = .failure(.noFiniteLogit) }
            return
        }
        guard let threshold = RowPipeline.compareThreshold(statistics, parameters) else {
            if isFirst { batch.results[row] = .success(SampledToken(token: statistics.argmax, logProbability: 0, candidateCount: 1)) }
            return
        }
        if isFirst {
            regions[row].rowStatistics.pointee = statistics
            regions[row].rowThreshold.pointee = threshold
        }
        RowPipeline.finalize(p, vocab: vocabularySize, chunks: first, end, threshold: threshold, scratch: regions[row])
    }

    /// Split phase 3: the row's first task gathers the survivors in chunk order and draws.
    private func gatherAndDraw(_ task: Int, _ plan: SplitPlan, _ batch: Batch) {
        let (row, first, _) = plan.range(task)
        guard first == 0, !regions[row].rowThreshold.pointee.isNaN else { return }
        let rowScratch = regions[row]
        batch.results[row] = RowPipeline.draw(
            statistics: rowScratch.rowStatistics.pointee, parameters: batch.parameters[row], step: batch.steps[row],
            count: RowPipeline.gather(chunks: chunksPerRow, scratch: rowScratch), scratch: rowScratch)
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
