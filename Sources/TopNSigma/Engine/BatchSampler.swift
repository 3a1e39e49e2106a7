import Synchronization

/// The batched Top-nσ sampler: one token per row of a `[batch, vocab]` block of logits.
///
/// Create one per (vocabulary size, maximum batch size, thread count) and keep it: it owns every
/// scratch buffer, so a call allocates nothing on the heap in steady state.
///
/// Per row, with that row's ``SamplingParameters`` and decode `step`:
/// 1. one fused pass computes max, argmax, finite count, mean and M2 (see ``RowStatistics``);
/// 2. `T = 0` returns the argmax (lowest id on ties) with log-probability 0;
/// 3. otherwise the survivors `x >= max - n·std` (every finite logit when `nSigma` is `nil`)
///    are compacted into scratch at the final threshold (exactly the float64 definition's), from
///    cache, reading only the 1024-logit blocks whose maximum in the pass reaches it, so the row
///    is read from memory once;
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
/// or `nSigma` fail that row only (``RowError``); every other row still gets its token. Sizes
/// out of range fail ``init(vocabularySize:maximumBatchSize:threadCount:executor:spinMicroseconds:placement:topology:)``
/// with a ``ConfigurationError``. Buffers shorter than the call says are programmer errors and
/// trap with a message.
///
/// **Threads.** A call is cut into tasks: whole rows when the batch has at least as many rows
/// as threads, otherwise ranges of chunks of each row. Workers and the caller claim tasks from
/// atomic counters (one per NUMA node group; a worker whose group is done helps the others).
/// The task that completes a row's last chunk settles that row (threshold, survivors, draw). No
/// thread ever waits for another to start: a worker that is descheduled or still asleep simply
/// claims nothing, and the caller does the work itself. The caller waits only for tasks that a
/// worker has already claimed. Sleeping workers are woken only for calls large enough to
/// repay the wake-up (``wakeThresholdBytes``); spinning ones (back-to-back calls) always join.
/// ``Executor/concurrentPerform`` runs the same claiming loop on `DispatchQueue.concurrentPerform`
/// (libdispatch allocates a few blocks per call there).
///
/// **Thread safety.** One sampler serves one call at a time: its scratch is shared by the call's
/// workers. A second call entering while one is running traps with a message (it never corrupts
/// results silently). Any number of samplers may run at once on different threads.
///
/// ```swift
/// let sampler = try BatchSampler(vocabularySize: 4, maximumBatchSize: 2)
/// let logits: [Float] = [1, 5, 2, 0,    // row 0
///                        3, 3, -.infinity, 1]   // row 1 (token 2 masked)
/// let parameters = [SamplingParameters(temperature: 0.7, nSigma: 1, seed: 42),
///                   SamplingParameters(temperature: 0)]   // greedy
/// for case .success(let drawn) in sampler.sample(logits: logits, parameters: parameters, steps: [0, 0]) {
///     print(drawn.token, drawn.logProbability, drawn.candidateCount)
/// }
/// ```
public final class BatchSampler: @unchecked Sendable, PoolJob {
    /// Logits per row.
    public let vocabularySize: Int
    /// The largest batch a call may pass.
    public let maximumBatchSize: Int
    /// Threads a call can use, the caller included: the requested count, less any thread the
    /// system refused to start (see ``requestedThreadCount``).
    public let threadCount: Int
    /// The thread count asked for at creation.
    public let requestedThreadCount: Int
    /// How the work of a call is spread over threads.
    public let executor: Executor
    /// Where the workers run and their memory lives.
    public let plan: NUMAPlan
    /// The placement policy.
    public let placement: NUMAPlacement

    /// The most threads a sampler accepts. More than the rows and chunks of a call can use only
    /// costs memory (a scratch region per thread).
    public static let maximumThreadCount = 1024

    /// Calls reading fewer bytes than this do not wake sleeping workers (spinning ones still
    /// join): a wake-up costs the caller a syscall, and a sleeping thread takes tens of
    /// microseconds to run on a virtual machine, longer than such a call takes alone.
    public static let wakeThresholdBytes = 1 << 20

    /// How a call's work is spread over threads.
    public enum Executor: Sendable, Equatable {
        /// The sampler's own `threadCount - 1` persistent threads plus the caller: no heap
        /// allocation per call.
        case workerPool
        /// `DispatchQueue.concurrentPerform`: no threads of the sampler's own, but libdispatch
        /// allocates a few blocks per call.
        case concurrentPerform
    }

    /// Why a sampler cannot be created.
    public enum ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
        /// The vocabulary size is not in `1..<2³¹`.
        case invalidVocabularySize(Int)
        /// The maximum batch size is not in `1..<2³¹`.
        case invalidBatchSize(Int)
        /// The thread count is not in `1...maximumThreadCount`.
        case invalidThreadCount(Int)
        /// The scratch memory (`bytes`) could not be allocated.
        case outOfMemory(bytes: Int)

        /// What is wrong, with the allowed range: `thread count 0 is invalid (must be in 1...1024)`.
        public var description: String {
            switch self {
            case .invalidVocabularySize(let v):
                return "vocabulary size \(v) is invalid (must be in 1...\(Vocabulary.maximumSize))"
            case .invalidBatchSize(let b): return "maximum batch size \(b) is invalid (must be in 1..<2^31)"
            case .invalidThreadCount(let t):
                return "thread count \(t) is invalid (must be in 1...\(BatchSampler.maximumThreadCount))"
            case .outOfMemory(let bytes): return "cannot allocate \(bytes) bytes of sampler scratch"
            }
        }
    }

    let chunksPerRow: Int
    /// One scratch region per thread: row tasks use their worker's region, split rows (fewer
    /// rows than threads) the region of their row. Region `w` is one block on worker `w`'s node.
    let regions: [RowPipeline.Scratch]
    private let regionBlocks: [NodeMemory.Block]
    private let placementStatus: PlacementStatus
    let busy = Atomic<Bool>(false)
    let pool: WorkerPool?

    // Per-call coordination, allocated once; the scheduler that uses it is in Scheduler.swift.
    /// Per node group: `first` is the call number, `second` packs the group's task range as
    /// `end << 32 | next`. Claiming is a double-word compare-and-swap that also checks the call
    /// number, so a worker that wakes after its call is over can never claim a later call's
    /// task by mistake (no ABA).
    let claims: UnsafeMutablePointer<Atomic<WordPair>>
    /// Tasks of the current call that are finished.
    let tasksDone = Atomic<Int>(0)
    /// Threads (the caller included) that claimed at least one task of the current call.
    let threadsWorked = Atomic<Int>(0)

    /// Threads that worked on the last call (claimed at least one of its tasks), and the ranges
    /// each of its rows was cut into (1: whole rows). For the bench's split-row checks; read
    /// only between calls.
    package var lastCall: (threadsWorked: Int, rangesPerRow: Int) {
        (threadsWorked.load(ordering: .relaxed), call.rangesPerRow)
    }
    /// Split rows: chunks of each row reduced so far; the task that completes the count settles
    /// the row.
    let chunksDone: UnsafeMutablePointer<Atomic<Int>>
    /// Split rows: the largest running maximum each row's tasks have found (greedy rows with
    /// logprobs collect the ties of the maximum as they go).
    let sharedThresholds: UnsafeMutablePointer<Atomic<UInt32>>
    /// Each worker's floor sum (``readFloor``), one cache line apart.
    let floorSums: UnsafeMutablePointer<Float>
    /// The node group each worker claims from first.
    let workerGroups: [Int]
    var callNumber: UInt = 0
    /// The current call; written by the caller before it publishes the claim counters, read by
    /// a worker only after it has claimed a task of the call.
    var call = Call()

    /// Worker threads that could not be bound to their node (libnuma refused); they run unbound.
    /// Settled when `init` returns (each worker binds itself as it starts, and `init` waits
    /// for them to start).
    public var unboundWorkerCount: Int { placementStatus.unbound.load(ordering: .relaxed) }

    /// Counts of the worker threads' binding outcomes.
    final class PlacementStatus: Sendable {
        let unbound = Atomic<Int>(0)
    }

    /// The thread count used when none is given: every active processor.
    public static var defaultThreadCount: Int { max(1, activeProcessorCount()) }

    /// Creates a sampler for rows of `vocabularySize` logits and batches of up to
    /// `maximumBatchSize` rows: allocates all of its scratch (on the workers' NUMA nodes) and
    /// starts its `threadCount - 1` worker threads. Create it once per model and keep it.
    ///
    /// - Parameters:
    ///   - vocabularySize: logits per row, `1..<2³¹`.
    ///   - maximumBatchSize: the largest number of rows a call passes, `1..<2³¹`.
    ///   - threadCount: threads per call, the caller included, `1...maximumThreadCount`; default
    ///     every active processor. A thread the system refuses to start is left out
    ///     (``threadCount`` then says how many run).
    ///   - executor: the sampler's own threads (default) or `concurrentPerform`.
    ///   - spinMicroseconds: with the worker pool, how long an idle worker spins waiting for the
    ///     next call before it sleeps (default 50). 0 never spins.
    ///   - placement: NUMA placement of workers, scratch and rows (default automatic; see
    ///     ``NUMAPlacement``). On a single-node machine or without libnuma nothing is bound.
    ///   - topology: the machine; default the detected one (inject one to plan for another).
    /// - Throws: ``ConfigurationError`` for sizes out of range or scratch that cannot be
    ///   allocated.
    public convenience init(
        vocabularySize: Int, maximumBatchSize: Int, threadCount: Int? = nil, executor: Executor = .workerPool,
        spinMicroseconds: Int = 50, placement: NUMAPlacement = .automatic, topology: NUMATopology = .current
    ) throws(ConfigurationError) {
        try self.init(
            vocabularySize: vocabularySize, maximumBatchSize: maximumBatchSize, threadCount: threadCount,
            executor: executor, spinMicroseconds: spinMicroseconds, placement: placement, topology: topology,
            systemThreadLimit: .max)
    }

    /// The designated initializer. `systemThreadLimit` stands in, for tests, for a system that
    /// refuses to start more than that many worker threads (see ``WorkerPool``).
    package init(
        vocabularySize: Int, maximumBatchSize: Int, threadCount: Int?, executor: Executor,
        spinMicroseconds: Int, placement: NUMAPlacement, topology: NUMATopology, systemThreadLimit: Int
    ) throws(ConfigurationError) {
        guard vocabularySize > 0 && vocabularySize <= Vocabulary.maximumSize else {
            throw .invalidVocabularySize(vocabularySize)
        }
        guard maximumBatchSize > 0 && maximumBatchSize < Int(Int32.max) else {
            throw .invalidBatchSize(maximumBatchSize)
        }
        let requested = threadCount ?? Self.defaultThreadCount
        guard requested > 0 && requested <= Self.maximumThreadCount else { throw .invalidThreadCount(requested) }
        guard let layout = RowPipeline.Scratch.Layout(vocab: vocabularySize) else {
            throw .outOfMemory(bytes: Int.max)
        }
        let requestedPlan = NUMAPlan(threads: requested, topology: topology, placement: placement)
        // Bind only where it changes something: several nodes, or one node asked for by name.
        let binds =
            topology.available
            && (topology.nodes.count > 1 || { if case .node = placement { return true } else { return false } }())
        let status = PlacementStatus()
        var onStart: (@Sendable (Int) -> Void)?
        if binds {
            onStart = { index in
                if let node = requestedPlan.workerNodes[index], !NodeMemory.bindCurrentThread(toNode: node) {
                    status.unbound.add(1, ordering: .relaxed)
                }
            }
        }
        let pool =
            executor == .workerPool && requested > 1
            ? WorkerPool(
                threadCount: requested, spinMicroseconds: spinMicroseconds, onStart: onStart,
                systemThreadLimit: systemThreadLimit, run: BatchSampler.runUnretained)
            : nil
        let threads = pool?.threadCount ?? requested
        // With fewer threads than asked for, plan for the threads that run.
        let plan =
            threads == requested ? requestedPlan : NUMAPlan(threads: threads, topology: topology, placement: placement)
        var regions: [RowPipeline.Scratch] = []
        var blocks: [NodeMemory.Block] = []
        for region in 0..<threads {
            let node = placement == .disabled ? nil : plan.workerNodes[region]
            let block =
                placement == .disabled
                ? NodeMemory.allocateFromHeap(byteCount: layout.byteCount)
                : NodeMemory.allocate(byteCount: layout.byteCount, node: node, topology: topology)
            guard let block else {
                blocks.forEach(NodeMemory.free)
                pool?.shutdown()
                throw .outOfMemory(bytes: layout.byteCount)
            }
            regions.append(layout.bind(block.pointer))
            blocks.append(block)
        }
        self.vocabularySize = vocabularySize
        self.maximumBatchSize = maximumBatchSize
        self.requestedThreadCount = requested
        self.threadCount = threads
        self.executor = executor
        self.chunksPerRow = StatisticsKernel.chunkCount(length: vocabularySize)
        self.placement = placement
        self.plan = plan
        self.placementStatus = status
        self.pool = pool
        self.regions = regions
        self.regionBlocks = blocks
        claims = .allocate(capacity: plan.groups.count)
        for g in 0..<plan.groups.count { (claims + g).initialize(to: Atomic(WordPair(first: 0, second: 0))) }
        chunksDone = .allocate(capacity: threads)
        for r in 0..<threads { (chunksDone + r).initialize(to: Atomic(0)) }
        sharedThresholds = .allocate(capacity: threads)
        for r in 0..<threads { (sharedThresholds + r).initialize(to: Atomic(0)) }
        floorSums = .allocate(capacity: threads * 16)
        floorSums.initialize(repeating: 0, count: threads * 16)
        workerGroups = (0..<threads).map { w in plan.groups.firstIndex { $0.workers.contains(w) } ?? 0 }
    }

    deinit {
        // No worker may touch this sampler once its memory goes: stop them first.
        pool?.shutdown()
        regionBlocks.forEach(NodeMemory.free)
        claims.deinitialize(count: plan.groups.count)
        claims.deallocate()
        chunksDone.deinitialize(count: threadCount)
        chunksDone.deallocate()
        sharedThresholds.deinitialize(count: threadCount)
        sharedThresholds.deallocate()
        floorSums.deallocate()
    }

    /// Bytes of scratch a sampler allocates per thread for rows of `vocab` logits, or nil when
    /// that overflows `Int` (for callers sizing a machine: the bench's memory check).
    package static func scratchByteCount(vocab: Int) -> Int? { RowPipeline.Scratch.byteCount(vocab: vocab) }

    /// Samples one token per row.
    ///
    /// - Parameters:
    ///   - logits: row 0's first logit; row `r` starts at `logits + r * rowStride`.
    ///   - rows: rows to sample, `0...maximumBatchSize`.
    ///   - rowStride: elements between row starts, `>= vocabularySize` (default `vocabularySize`).
    ///   - parameters: each row's parameters (at least `rows`).
    ///   - processing: each row's request processing (at least `rows`), or nil for none: its
    ///     bitmask, bias and penalties are applied inside the pass (``RequestProcessing``).
    ///   - steps: each row's decode step, the generator's counter (at least `rows`).
    ///   - results: filled with each row's token or error (at least `rows` slots).
    ///   - logprobs: where rows that ask for ``RequestProcessing/topLogprobs`` get them (at
    ///     least `rows` slots; slot `r` is written only for such a row, or emptied when it
    ///     fails). A row that asks without this buffer fails with
    ///     ``RowError/missingLogprobsBuffer``.
    /// - Complexity: one pass over the logits from memory, a compare pass from cache, and
    ///   O(survivors) for the draw; with processing, O(bitmask words + bias + history) more per
    ///   row. No heap allocation.
    public func sample(
        logits: UnsafePointer<Float>, rows: Int, rowStride: Int? = nil,
        parameters: UnsafeBufferPointer<SamplingParameters>,
        processing: UnsafeBufferPointer<RequestProcessing>? = nil,
        steps: UnsafeBufferPointer<UInt64>,
        into results: UnsafeMutableBufferPointer<SampleResult>,
        logprobs: UnsafeMutableBufferPointer<TopLogprobs>? = nil
    ) {
        sample(
            logits: UnsafeRawPointer(logits), format: .float32, rows: rows, rowStride: rowStride,
            parameters: parameters,
            processing: processing, steps: steps, into: results, logprobs: logprobs)
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
    ///   - processing: each row's request processing (at least `rows`), or nil for none.
    ///   - steps: each row's decode step (at least `rows`).
    ///   - results: filled with each row's token or error (at least `rows` slots).
    ///   - logprobs: where rows that ask for top logprobs get them (at least `rows` slots).
    public func sample(
        logits: UnsafeRawPointer, format: LogitFormat, rows: Int, rowStride: Int? = nil,
        parameters: UnsafeBufferPointer<SamplingParameters>,
        processing: UnsafeBufferPointer<RequestProcessing>? = nil,
        steps: UnsafeBufferPointer<UInt64>,
        into results: UnsafeMutableBufferPointer<SampleResult>,
        logprobs: UnsafeMutableBufferPointer<TopLogprobs>? = nil
    ) {
        let stride = rowStride ?? vocabularySize
        precondition(
            rows >= 0 && rows <= maximumBatchSize,
            "rows (\(rows)) must be in 0...maximumBatchSize (\(maximumBatchSize))")
        precondition(
            stride >= vocabularySize, "rowStride (\(stride)) must be at least vocabularySize (\(vocabularySize))")
        precondition(parameters.count >= rows, "parameters holds \(parameters.count) entries for \(rows) rows")
        precondition(steps.count >= rows, "steps holds \(steps.count) entries for \(rows) rows")
        precondition(results.count >= rows, "results holds \(results.count) slots for \(rows) rows")
        if let processing {
            precondition(processing.count >= rows, "processing holds \(processing.count) entries for \(rows) rows")
        }
        if let logprobs {
            precondition(logprobs.count >= rows, "logprobs holds \(logprobs.count) slots for \(rows) rows")
        }
        guard rows > 0 else { return }
        run(
            Call(
                kind: .sample, logits: logits, format: format, stride: stride, rows: rows,
                parameters: parameters.baseAddress!, steps: steps.baseAddress!, results: results.baseAddress!,
                bytes: rows * vocabularySize * format.byteCount,
                processing: processing.map { .requests($0.baseAddress!) },
                logprobs: logprobs?.baseAddress))
    }

    /// ``sample(logits:format:rows:rowStride:parameters:processing:steps:into:logprobs:)`` with
    /// each row's processing given as pointers (nil: none), for the C ABI, which has checked
    /// every size: no allocation, no array.
    package func sample(
        logits: UnsafeRawPointer, format: LogitFormat, rows: Int, rowStride: Int,
        parameters: UnsafePointer<SamplingParameters>, processing: UnsafePointer<ProcessingView>?,
        steps: UnsafePointer<UInt64>, into results: UnsafeMutablePointer<SampleResult>,
        logprobs: UnsafeMutablePointer<TopLogprobs>?
    ) {
        precondition(rows >= 0 && rows <= maximumBatchSize && rowStride >= vocabularySize)
        guard rows > 0 else { return }
        run(
            Call(
                kind: .sample, logits: logits, format: format, stride: rowStride, rows: rows,
                parameters: parameters, steps: steps, results: results,
                bytes: rows * vocabularySize * format.byteCount, processing: processing.map { .views($0) },
                logprobs: logprobs))
    }

    /// Array convenience with request processing: `logits` holds `rows × vocabularySize`
    /// values, row-major; one ``RequestProcessing`` per row.
    ///
    /// ```swift
    /// var processing = RequestProcessing(logitBias: [LogitBias(token: 7, bias: 5)], topLogprobs: 3)
    /// processing.outputTokens = [3, 3, 9]
    /// processing.frequencyPenalty = 0.5
    /// let (results, logprobs) = sampler.sample(
    ///     logits: logits, parameters: [SamplingParameters(temperature: 0.8)], processing: [processing])
    /// logprobs[0].entries   // the 3 most probable tokens of the processed row, at T = 1
    /// ```
    ///
    /// - Returns: each row's token or error, and each row's logprobs (empty for rows that did
    ///   not ask or failed).
    public func sample(
        logits: [Float], parameters: [SamplingParameters], processing: [RequestProcessing], steps: [UInt64]? = nil
    ) -> (results: [SampleResult], logprobs: [TopLogprobs]) {
        logits.withUnsafeBytes {
            sample(
                raw: $0, format: .float32, parameters: parameters, processing: processing, steps: steps, what: "logits")
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
        logits.withUnsafeBytes {
            sample(raw: $0, format: .float32, parameters: parameters, processing: nil, steps: steps, what: "logits")
                .results
        }
    }

    /// Array convenience for logits stored as raw bits: `bits` holds `rows × vocabularySize`
    /// logits, row-major, each ``LogitFormat/byteCount`` bytes (little-endian): one `UInt16` per
    /// float16 or bfloat16 logit, two per float32 logit.
    public func sample(
        bits: [UInt16], format: LogitFormat, parameters: [SamplingParameters], steps: [UInt64]? = nil
    ) -> [SampleResult] {
        bits.withUnsafeBytes {
            sample(raw: $0, format: format, parameters: parameters, processing: nil, steps: steps, what: "bits").results
        }
    }

    /// Array convenience for logits stored as raw bits, with request processing: the 16-bit
    /// counterpart of ``sample(logits:parameters:processing:steps:)``.
    ///
    /// - Returns: each row's token or error, and each row's logprobs (empty for rows that did
    ///   not ask or failed).
    public func sample(
        bits: [UInt16], format: LogitFormat, parameters: [SamplingParameters], processing: [RequestProcessing],
        steps: [UInt64]? = nil
    ) -> (results: [SampleResult], logprobs: [TopLogprobs]) {
        bits.withUnsafeBytes {
            sample(raw: $0, format: format, parameters: parameters, processing: processing, steps: steps, what: "bits")
        }
    }

    /// The array APIs' one body: the block's size checked against `parameters.count` rows, then
    /// ``sample(logits:format:rows:rowStride:parameters:processing:steps:into:logprobs:)``. The
    /// logprobs are empty without processing (no buffer is passed: no row can ask).
    private func sample(
        raw: UnsafeRawBufferPointer, format: LogitFormat, parameters: [SamplingParameters],
        processing: [RequestProcessing]?, steps: [UInt64]?, what: String
    ) -> (results: [SampleResult], logprobs: [TopLogprobs]) {
        let rows = parameters.count
        let unit = what == "bits" ? 2 : 4
        precondition(
            raw.count == rows * vocabularySize * format.byteCount,
            "\(what) holds \(raw.count / unit) values, expected \(rows) rows × \(vocabularySize) logits × \(format.byteCount / unit)"
        )
        if let processing {
            precondition(processing.count == rows, "processing holds \(processing.count) entries for \(rows) rows")
        }
        let steps = steps ?? [UInt64](repeating: 0, count: rows)
        precondition(steps.count == rows, "steps holds \(steps.count) entries for \(rows) rows")
        // `Array(unsafeUninitializedCapacity: 0)` writes the shared empty array's count (a race
        // ThreadSanitizer reports against any thread reading another empty array).
        guard rows > 0 else { return ([], []) }
        var logprobs = processing == nil ? [] : [TopLogprobs](repeating: TopLogprobs(), count: rows)
        let results = [SampleResult](unsafeUninitializedCapacity: rows) { out, initialized in
            out.initialize(repeating: .failure(.noFiniteLogit))
            parameters.withUnsafeBufferPointer { p in
                steps.withUnsafeBufferPointer { s in
                    logprobs.withUnsafeMutableBufferPointer { o in
                        if let processing {
                            processing.withUnsafeBufferPointer { q in
                                sample(
                                    logits: raw.baseAddress!, format: format, rows: rows, parameters: p, processing: q,
                                    steps: s, into: out, logprobs: o)
                            }
                        } else {
                            sample(
                                logits: raw.baseAddress!, format: format, rows: rows, parameters: p, steps: s, into: out
                            )
                        }
                    }
                }
            }
            initialized = rows
        }
        return (results, logprobs)
    }

    /// The memory-read floor of a call's bytes: `rows` rows of `bytesPerRow` bytes each, one
    /// row every `bytesPerRow` bytes, summed by ``ReadFloor`` on this sampler's threads with the
    /// same tasks, claiming and wake-ups as ``sample(logits:format:rows:rowStride:parameters:processing:steps:into:logprobs:)``.
    /// For `nsigma bench`.
    package func readFloor(_ logits: UnsafeRawPointer, rows: Int, bytesPerRow: Int) -> Float {
        precondition(rows >= 1 && rows <= maximumBatchSize && bytesPerRow >= 1)
        for w in 0..<threadCount { floorSums[w * 16] = 0 }
        run(Call(kind: .floor(bytesPerRow: bytesPerRow), logits: logits, rows: rows, bytes: rows * bytesPerRow))
        var total: Float = 0
        for w in 0..<threadCount { total += floorSums[w * 16] }
        return total
    }

    /// Schedules a verification call (``verify(logits:format:requests:k:rowStride:proposals:parameters:steps:into:)``):
    /// one task per request, never split.
    func runVerification(
        logits: UnsafeRawPointer, format: LogitFormat, stride: Int, requests: Int, verification: VerificationCall,
        parameters: UnsafePointer<SamplingParameters>, steps: UnsafePointer<UInt64>
    ) {
        run(
            Call(
                kind: .verify, logits: logits, format: format, stride: stride, rows: requests,
                parameters: parameters, steps: steps,
                bytes: requests * (verification.k + 1) * vocabularySize * format.byteCount,
                verification: verification))
    }

    /// Runs `body` with this sampler's first scratch region (a row of `vocabularySize`), for
    /// single-row calls that must not allocate (the C ABI's `tns_sampler_filter`); nil, without
    /// running `body`, while a call is running on this sampler.
    package func withRowScratch<R>(_ body: (RowPipeline.Scratch) -> R) -> R? {
        let (exchanged, _) = busy.compareExchange(expected: false, desired: true, ordering: .acquiring)
        guard exchanged else { return nil }
        defer { busy.store(false, ordering: .releasing) }
        return body(regions[0])
    }
}
