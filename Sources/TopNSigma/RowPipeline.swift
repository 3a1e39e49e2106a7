import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The per-row pipeline shared by whole-row and split-row scheduling.
///
/// Each chunk of ``StatisticsKernel/chunkLength`` logits is reduced and, while it is still in L1,
/// compacted against a *provisional* threshold `max' - 1.2·n·std'` built from the chunks reduced so
/// far (primed values: statistics of a prefix of the row). The survivors go to the chunk's own slot
/// of the row's candidate region (slot `c` starts at `c · chunkLength`, so a chunk can never
/// overflow into the next). Once the row's statistics are final, each chunk whose provisional
/// threshold was at or below the final one is filtered in its slot (its survivors are a superset
/// of the final ones); a chunk whose provisional threshold came out stricter is compacted again
/// from the row. The slots are then gathered in chunk order.
///
/// Since the prefix maximum never exceeds the row maximum and the prefix std is close to the
/// row's after one chunk, rescans are rare, and the row is read from memory once. The final
/// candidate set is exactly `{ i : x_i >= threshold }` in id order, whatever the provisional
/// thresholds were, so how chunks are grouped into tasks never changes a result.
package enum RowPipeline {
    typealias ChunkPartial = StatisticsKernel.ChunkPartial

    /// One row's scratch: a candidate slot and a weight per logit, and per chunk a provisional
    /// threshold, a survivor count and (split rows) partial statistics. Laid out in one block by
    /// ``Layout``.
    package struct Scratch {
        var thresholds: UnsafeMutablePointer<Float>
        var counts: UnsafeMutablePointer<Int>
        package var candidates: UnsafeMutablePointer<Candidate>
        /// Top-p's weights, one per candidate slot.
        package var weights: UnsafeMutablePointer<Double>
        /// Split rows: each chunk's partial statistics, merged in chunk order by the task that
        /// settles the row.
        var partials: UnsafeMutablePointer<StatisticsKernel.ChunkPartial>

        /// Where each array of a ``Scratch`` lives in its block: offsets computed from the
        /// element types' own strides and alignments, each array on a 64-byte boundary.
        struct Layout {
            let vocab: Int
            let chunks: Int
            let candidates: Int, weights: Int, partials: Int, counts: Int, thresholds: Int
            /// Bytes of one block.
            let byteCount: Int

            /// The layout for rows of `vocab` logits, or nil when its size overflows `Int`.
            init?(vocab: Int) {
                let chunks = StatisticsKernel.chunkCount(length: vocab)
                var offset = 0
                func place<T>(_ type: T.Type, count: Int) -> Int? {
                    let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
                    guard !overflow, offset <= Int.max - bytes - 64 else { return nil }
                    let start = offset
                    offset = (offset + bytes + 63) & ~63
                    return start
                }
                guard let candidates = place(Candidate.self, count: vocab),
                      let weights = place(Double.self, count: vocab),
                      let partials = place(StatisticsKernel.ChunkPartial.self, count: chunks),
                      let counts = place(Int.self, count: chunks),
                      let thresholds = place(Float.self, count: chunks)
                else { return nil }
                self.vocab = vocab
                self.chunks = chunks
                (self.candidates, self.weights, self.partials, self.counts, self.thresholds) =
                    (candidates, weights, partials, counts, thresholds)
                byteCount = max(offset, 64)
            }

            /// Binds and initializes a scratch in `block` (at least ``byteCount`` bytes, 64-byte
            /// aligned).
            func bind(_ block: UnsafeMutableRawPointer) -> Scratch {
                let partials = (block + self.partials).bindMemory(to: StatisticsKernel.ChunkPartial.self, capacity: chunks)
                partials.initialize(repeating: StatisticsKernel.ChunkPartial(), count: chunks)
                let counts = (block + self.counts).bindMemory(to: Int.self, capacity: chunks)
                counts.initialize(repeating: 0, count: chunks)
                let thresholds = (block + self.thresholds).bindMemory(to: Float.self, capacity: chunks)
                thresholds.initialize(repeating: 0, count: chunks)
                return Scratch(
                    thresholds: thresholds, counts: counts,
                    candidates: (block + candidates).bindMemory(to: Candidate.self, capacity: vocab),
                    weights: (block + weights).bindMemory(to: Double.self, capacity: vocab),
                    partials: partials)
            }
        }
    }

    /// How many rows had their moments recomputed in double precision because a survivor lay
    /// within the Float sums' error bound of the threshold (diagnostics for tests and benchmarks).
    package static let exactRecomputations = Atomic<Int>(0)

    /// Reduces chunks `first..<end` of the row at `p`, merging them in order into an accumulator;
    /// when `collect`, compacts each chunk against the provisional threshold of the chunks merged so
    /// far (this one included) into `scratch`. When `partials` is given, each chunk's partial is
    /// also stored there (indexed by chunk). Stops at the first invalid logit.
    static func reduce<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunks first: Int, _ end: Int, collect: Bool, parameters: SamplingParameters,
        scratch: Scratch?, partials: UnsafeMutablePointer<ChunkPartial>?, shared: SharedThreshold? = nil
    ) -> StatisticsKernel.RowAccumulator {
        let chunkLength = StatisticsKernel.chunkLength
        var accumulator = StatisticsKernel.RowAccumulator()
        for c in first..<end {
            let start = c * chunkLength
            let length = min(chunkLength, vocab - start)
            let part = StatisticsKernel.chunkPartial(p + start, count: length)
            partials?[c] = part
            accumulator.merge(part, chunk: c, start: start)
            if accumulator.error != nil { break }
            if collect, let scratch {
                var threshold = provisionalThreshold(accumulator, parameters)
                // A split row's tasks share the strictest provisional threshold any of them has
                // found, so a task over a few chunks does not collect as if it saw the row alone.
                if let shared { threshold = shared.raise(to: threshold) }
                scratch.thresholds[c] = threshold
                // Most chunks hold no survivor at all: their maximum says so without a compare pass.
                scratch.counts[c] = part.maximum >= threshold
                    ? compactBlocks(p + start, count: length, threshold: threshold, indexBase: start, maxima: part.blockMaxima, into: scratch.candidates + start)
                    : 0
            }
        }
        return accumulator
    }

    /// Compacts the blocks of one chunk whose maximum reaches `threshold` (see
    /// ``StatisticsKernel/blockLength``); returns the survivors written, in id order.
    @inline(__always)
    static func compactBlocks<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, threshold: Float, indexBase: Int, maxima: StatisticsKernel.BlockMaxima,
        into out: UnsafeMutablePointer<Candidate>
    ) -> Int {
        let blockLength = StatisticsKernel.blockLength
        var written = 0
        var start = 0
        var block = 0
        while start < n {
            let length = min(blockLength, n - start)
            let maximum = block < StatisticsKernel.blocksPerChunk ? maxima[block] : .infinity
            if maximum >= threshold {
                written += CandidateKernel.compact(
                    p + start, count: length, threshold: threshold, indexBase: indexBase + start, into: out + written)
            }
            start += length
            block += 1
        }
        return written
    }

    /// Brings chunks `first..<end` to the final `threshold`: filters each chunk's slot in place, or
    /// compacts the chunk again when its provisional threshold was stricter.
    static func finalize<E: LogitElement>(_ p: UnsafePointer<E>, vocab: Int, chunks first: Int, _ end: Int, threshold: Float, scratch: Scratch) {
        let chunkLength = StatisticsKernel.chunkLength
        for c in first..<end {
            let start = c * chunkLength
            let slot = scratch.candidates + start
            if scratch.thresholds[c] <= threshold {
                var kept = 0
                for j in 0..<scratch.counts[c] where slot[j].logit >= threshold {
                    slot[kept] = slot[j]
                    kept &+= 1
                }
                scratch.counts[c] = kept
            } else {
                scratch.counts[c] = CandidateKernel.compact(
                    p + start, count: min(chunkLength, vocab - start), threshold: threshold, indexBase: start, into: slot)
            }
        }
    }

    /// Moves every chunk's survivors to the front of the region, in chunk order; returns the count.
    static func gather(chunks: Int, scratch: Scratch) -> Int {
        let chunkLength = StatisticsKernel.chunkLength
        var count = 0
        for c in 0..<chunks {
            let n = scratch.counts[c]
            if n > 0 && count != c * chunkLength {
                (scratch.candidates + count).update(from: scratch.candidates + c * chunkLength, count: n)
            }
            count += n
        }
        return count
    }

    /// Settles a row whose chunks are all reduced (``reduce``, merged in chunk order into
    /// `accumulator`) and whose survivors sit in their chunk slots: the one step that decides a
    /// row, for whole rows and split rows alike.
    ///
    /// Errors and greedy rows are settled from the statistics. Otherwise the survivors are
    /// brought to the threshold and gathered in id order. The threshold is exact: when a
    /// survivor lies within the Float sums' error bound of it (``thresholdRange``), the row's
    /// moments are recomputed in double precision (rare: a few rows in a thousand), so the kept
    /// set is always `{ i : Double(x_i) >= threshold }` with the float64 statistics.
    ///
    /// - Returns: the fused pass's statistics (within their error bound of the float64 ones) and
    ///   the number of survivors gathered at the front of `scratch.candidates` in id order (nil
    ///   for a greedy row); top-k and top-p are not applied yet.
    static func settleSurvivors<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, accumulator: StatisticsKernel.RowAccumulator, parameters: SamplingParameters,
        scratch: Scratch
    ) -> Result<(statistics: RowStatistics, count: Int?), RowError> {
        if let error = parameters.validationError { return .failure(error) }
        let statistics: RowStatistics
        switch accumulator.finish(row: p, count: vocab) {
        case .failure(let error): return .failure(error)
        case .success(let s): statistics = s
        }
        guard statistics.finiteCount > 0 else { return .failure(.noFiniteLogit) }
        if parameters.temperature == 0 { return .success((statistics, nil)) }
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let range = thresholdRange(statistics, parameters, m2Error: accumulator.m2Error)
        let low = TopNSigma.floatThreshold(range.lower)
        finalize(p, vocab: vocab, chunks: 0, chunks, threshold: low, scratch: scratch)
        var count = gather(chunks: chunks, scratch: scratch)
        var threshold = low
        if range.upper > range.lower {
            // Survivors in [low, high) are undecided by the Float statistics.
            let high = TopNSigma.floatThreshold(range.upper)
            var undecided = false
            for j in 0..<count where scratch.candidates[j].logit < high {
                undecided = true
                break
            }
            if undecided {
                // Decide the cut with float64 moments. The statistics reported stay the fused
                // pass's, so they never depend on the parameters (min-p, temperature) that made
                // a logit undecided.
                exactRecomputations.add(1, ordering: .relaxed)
                let exact = StatisticsKernel.exactMoments(p, count: vocab)
                var exactStatistics = statistics
                exactStatistics.mean = exact.mean
                exactStatistics.sumOfSquaredDeviations = exact.m2
                threshold = TopNSigma.floatThreshold(logitThreshold(exactStatistics, parameters))
            } else {
                threshold = high
            }
        }
        if threshold > low {
            var kept = 0
            for j in 0..<count where scratch.candidates[j].logit >= threshold {
                scratch.candidates[kept] = scratch.candidates[j]
                kept &+= 1
            }
            count = kept
        }
        return .success((statistics, count))
    }

    /// The threshold survivors of one row on the calling thread: ``reduceRow(_:vocab:parameters:scratch:)``
    /// then ``settleSurvivors``. Package-visible for the C ABI's allocation-free single-row calls.
    package static func survivors<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, scratch: Scratch
    ) -> Result<(statistics: RowStatistics, count: Int?), RowError> {
        if let error = parameters.validationError { return .failure(error) }
        let accumulator = reduceRow(p, vocab: vocab, parameters: parameters, scratch: scratch)
        return settleSurvivors(p, vocab: vocab, accumulator: accumulator, parameters: parameters, scratch: scratch)
    }

    /// Every chunk of one row on the calling thread, collecting survivors unless the row is
    /// greedy.
    @inline(__always)
    static func reduceRow<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, scratch: Scratch
    ) -> StatisticsKernel.RowAccumulator {
        reduce(
            p, vocab: vocab, chunks: 0, StatisticsKernel.chunkCount(length: vocab), collect: parameters.temperature != 0,
            parameters: parameters, scratch: scratch, partials: nil)
    }

    /// Runs `body` with a scratch region for one row of `vocab` logits, allocated for the call:
    /// for the single-row convenience APIs (the sampler keeps its own). Nil when the row is too
    /// large to have one.
    package static func withTemporaryScratch<R>(vocab: Int, _ body: (Scratch) -> R) -> R? {
        guard let layout = Scratch.Layout(vocab: vocab) else { return nil }
        let block = UnsafeMutableRawPointer.allocate(byteCount: layout.byteCount, alignment: 64)
        defer { block.deallocate() }
        return body(layout.bind(block))
    }

    /// One row start to finish on the calling thread.
    static func sampleRow<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, step: UInt64, scratch: Scratch
    ) -> SampleResult {
        if let error = parameters.validationError { return .failure(error) }
        let accumulator = reduceRow(p, vocab: vocab, parameters: parameters, scratch: scratch)
        return settle(p, vocab: vocab, accumulator: accumulator, parameters: parameters, step: step, scratch: scratch)
    }

    /// Settles a reduced row (``settleSurvivors``), then truncates and draws.
    static func settle<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, accumulator: StatisticsKernel.RowAccumulator, parameters: SamplingParameters,
        step: UInt64, scratch: Scratch
    ) -> SampleResult {
        switch settleSurvivors(p, vocab: vocab, accumulator: accumulator, parameters: parameters, scratch: scratch) {
        case .failure(let error):
            return .failure(error)
        case .success(let (statistics, count)):
            guard let count else { return .success(SampledToken(token: statistics.argmax, logProbability: 0, candidateCount: 1)) }
            return draw(statistics: statistics, parameters: parameters, step: step, count: count, scratch: scratch)
        }
    }

    /// top-k and top-p over the gathered survivors, then the draw.
    static func draw(statistics: RowStatistics, parameters: SamplingParameters, step: UInt64, count: Int, scratch: Scratch) -> SampleResult {
        let kept = Truncation.apply(
            scratch.candidates, count: count, weights: scratch.weights, maximum: statistics.maximum, parameters: parameters)
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        return .success(DrawKernel.draw(
            UnsafeBufferPointer(start: scratch.candidates, count: kept), maximum: statistics.maximum,
            temperature: parameters.temperature, uniform: u, weights: scratch.weights))
    }
}
