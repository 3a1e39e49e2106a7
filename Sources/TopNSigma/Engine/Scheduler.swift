import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// BatchSampler's scheduling: how a call is cut into tasks, published to the node groups' claim
// counters, claimed by the workers and the caller, and run. The state it works on (claims,
// tasksDone, chunksDone, sharedThresholds, the current call) is stored in the class, in
// BatchSampler.swift.

extension BatchSampler {
    /// One call's buffers and shape; valid for the call's duration only.
    struct Call: @unchecked Sendable {
        enum Kind { case sample, floor(bytesPerRow: Int), verify }
        var kind = Kind.sample
        var logits = UnsafeRawPointer(bitPattern: 64)!
        var format = LogitFormat.float32
        /// Elements between row starts.
        var stride = 0
        var rows = 0
        var parameters = UnsafePointer<SamplingParameters>(bitPattern: 64)!
        var steps = UnsafePointer<UInt64>(bitPattern: 64)!
        var results = UnsafeMutablePointer<SampleResult>(bitPattern: 64)!
        /// Bytes the call reads.
        var bytes = 0
        /// Ranges each row is cut into: 1 for row tasks (as many rows as threads, or more).
        var rangesPerRow = 1
        /// A verification call's proposals and results (`rows` counts requests then).
        var verification: VerificationCall?
        /// Each row's request processing, if the call has any.
        var processing: ProcessingSource?
        /// Where rows that ask for logprobs get them.
        var logprobs: UnsafeMutablePointer<TopLogprobs>?

        var isSplit: Bool { rangesPerRow > 1 }

        /// Row `row` as elements of type `E`.
        @inline(__always)
        func row<E: LogitElement>(_ row: Int, as type: E.Type) -> UnsafePointer<E> {
            (logits + row * stride * MemoryLayout<E>.stride).assumingMemoryBound(to: E.self)
        }
    }

    /// Runs one call: publishes its tasks, works on them, and waits for the tasks workers
    /// claimed.
    func run(_ newCall: Call) {
        let (exchanged, _) = busy.compareExchange(expected: false, desired: true, ordering: .acquiring)
        precondition(
            exchanged,
            "BatchSampler.sample was called while another call on the same sampler was running; use one sampler per concurrent caller"
        )
        defer { busy.store(false, ordering: .releasing) }
        var call = newCall
        let rows = call.rows
        // Threads that will work on this call: the caller, the workers spinning for work, and
        // the sleeping ones if the call is large enough to wake them.
        let wake = call.bytes >= Self.wakeThresholdBytes
        let available = pool.map { 1 + $0.helpersAvailable(wakeSleepers: wake) } ?? threadCount
        // Fewer rows than those threads: cut each row into ranges of whole chunks, about four
        // per thread so that the threads that show up share the work evenly.
        if rows < available && chunksPerRow > 1 && call.verification == nil {
            call.rangesPerRow = min(chunksPerRow, max(2, (4 * available + rows - 1) / rows))
        }
        self.call = call
        callNumber &+= 1
        let tasks = rows * call.rangesPerRow
        tasksDone.store(0, ordering: .relaxed)
        threadsWorked.store(0, ordering: .relaxed)
        if call.isSplit {
            for r in 0..<rows {
                chunksDone[r].store(0, ordering: .relaxed)
                RowPipeline.SharedThreshold(word: sharedThresholds + r).reset()
                // A split row's tasks share its region: its processing is prepared once, here.
                RowPipeline.prepare(
                    call.processing, index: r, vocab: vocabularySize, scratch: regions[r],
                    logprobs: call.logprobs != nil ? .buffer : .missing)
            }
            claims[0].store(WordPair(first: callNumber, second: UInt(tasks) << 32), ordering: .releasing)
            for g in 1..<plan.groups.count {
                claims[g].store(WordPair(first: callNumber, second: 0), ordering: .releasing)
            }
        } else {
            for g in 0..<plan.groups.count {
                let start = UInt(plan.rowStart(group: g, batch: rows)),
                    end = UInt(plan.rowStart(group: g + 1, batch: rows))
                claims[g].store(WordPair(first: callNumber, second: end << 32 | start), ordering: .releasing)
            }
        }
        let participants = min(available, tasks)
        if participants > 1, let pool {
            pool.dispatch(Unmanaged.passUnretained(self), participants: threadCount, wakeSleepers: wake)
            work(worker: 0)
        } else if participants > 1 {
            DispatchQueue.concurrentPerform(iterations: participants) { work(worker: $0) }
        } else {
            work(worker: 0)
        }
        // Only tasks that a worker has claimed can still be running.
        var spins = 0
        while tasksDone.load(ordering: .acquiring) < tasks {
            spins &+= 1
            if spins > 1000 { sched_yield() }
        }
    }

    /// Claims the next task of group `group`'s range, if any is left in the current call.
    @inline(__always)
    private func claim(group: Int) -> Int? {
        var current = claims[group].load(ordering: .acquiring)
        while true {
            let next = current.second & 0xFFFF_FFFF, end = current.second >> 32
            guard next < end else { return nil }
            let (exchanged, original) = claims[group].compareExchange(
                expected: current, desired: WordPair(first: current.first, second: current.second &+ 1),
                ordering: .acquiringAndReleasing)
            if exchanged { return Int(next) }
            current = original
        }
    }

    /// Claims and runs tasks until none is left (``PoolJob``): first from the worker's own node
    /// group, then from the others.
    func work(worker: Int) {
        let groups = plan.groups.count
        let home = workerGroups[worker]
        var claimed = false
        for k in 0..<groups {
            let group = (home + k) % groups
            while let task = claim(group: group) {
                // Counted before the task runs, so before the caller can see the call finished.
                if !claimed {
                    claimed = true
                    threadsWorked.add(1, ordering: .relaxed)
                }
                switch call.format {
                case .float32: run(task: task, worker: worker, Float.self)
                case .float16: run(task: task, worker: worker, Half.self)
                case .bfloat16: run(task: task, worker: worker, BFloat16.self)
                }
                tasksDone.add(1, ordering: .releasing)
            }
        }
    }

    /// Task `task` of the current call: a whole row, or a range of one row's chunks.
    private func run<E: LogitElement>(task: Int, worker: Int, _ type: E.Type) {
        let call = self.call
        let row = task / call.rangesPerRow, part = task % call.rangesPerRow
        let first = part * chunksPerRow / call.rangesPerRow, end = (part + 1) * chunksPerRow / call.rangesPerRow
        if case .floor(let bytesPerRow) = call.kind {
            let chunkBytes = StatisticsKernel.chunkLength * 4
            let start = min(bytesPerRow, first * chunkBytes),
                stop = call.isSplit ? min(bytesPerRow, end * chunkBytes) : bytesPerRow
            floorSums[worker * 16] += ReadFloor.sum(call.logits + row * bytesPerRow + start, byteCount: stop - start)
            return
        }
        if let verification = call.verification {
            // A whole request: its k + 1 rows in order, on this worker's region.
            let rowsPerRequest = verification.k + 1
            switch verification.source {
            case .proposals(let proposals, let results):
                results[row] = RowPipeline.verifyRequest(
                    row: { call.row(row * rowsPerRequest + $0, as: E.self) }, vocab: vocabularySize, k: verification.k,
                    proposal: proposals[row], parameters: call.parameters[row], step: call.steps[row],
                    scratch: regions[worker])
            case .views(let drafts, let tokens, let logProbabilities, let outcomes):
                outcomes[row] = RowPipeline.verifyRequest(
                    row: { call.row(row * rowsPerRequest + $0, as: E.self) }, vocab: vocabularySize, k: verification.k,
                    draft: drafts[row], parameters: call.parameters[row], step: call.steps[row],
                    scratch: regions[worker], tokens: tokens + row * rowsPerRequest,
                    logProbabilities: logProbabilities.map { $0 + row * rowsPerRequest })
            }
            return
        }
        let p = call.row(row, as: E.self)
        let parameters = call.parameters[row]
        guard call.isSplit else {
            call.results[row] = RowPipeline.sampleRow(
                p, vocab: vocabularySize, parameters: parameters, processing: call.processing, index: row,
                step: call.steps[row], scratch: regions[worker], logprobs: call.logprobs.map { $0 + row })
            return
        }
        // Split row: reduce this range's chunks into the row's region; the task that completes
        // the row settles it.
        let scratch = regions[row]
        let state = scratch.state.pointee
        let valid = parameters.validationError == nil && state.error == nil
        if valid {
            _ = RowPipeline.reduce(
                p, vocab: vocabularySize, chunks: first, end,
                collect: !parameters.drawsArgmax || state.topLogprobs >= 0,
                parameters: parameters, scratch: scratch, partials: scratch.partials,
                shared: RowPipeline.SharedThreshold(word: sharedThresholds + row), state: state, sampling: true)
        }
        guard chunksDone[row].add(end - first, ordering: .acquiringAndReleasing).newValue == chunksPerRow else {
            return
        }
        var accumulator = StatisticsKernel.RowAccumulator()
        if valid {
            let chunkLength = StatisticsKernel.chunkLength
            for c in 0..<chunksPerRow { accumulator.merge(scratch.partials[c], chunk: c, start: c * chunkLength) }
        }
        call.results[row] = RowPipeline.settle(
            p, vocab: vocabularySize, accumulator: accumulator, parameters: parameters, step: call.steps[row],
            scratch: scratch,
            logprobs: call.logprobs.map { $0 + row })
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
