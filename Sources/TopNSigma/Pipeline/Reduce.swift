import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RowPipeline {
    /// Reduces chunks `first..<end` of the row at `p`, merging them in order into an accumulator;
    /// when `collect`, leaves in `scratch` what the settle compacts the chunk from (its blocks'
    /// maxima, or top-k's group maxima; a greedy row with logprobs compacts the ties of the
    /// running maximum). When `partials` is given, each chunk's partial is
    /// also stored there (indexed by chunk). Stops at the first invalid logit.
    ///
    /// With request processing (`state`), the chunks are read through the effective bitmask
    /// (masked and edited tokens take no part; the edited ones join when the row settles), and a
    /// row that asks for logprobs also gets each chunk's exp-sum and top tokens while the chunk
    /// is in L1 (``LogprobKernel``).
    static func reduce<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunks first: Int, _ end: Int, collect: Bool, parameters: SamplingParameters,
        scratch: Scratch?, partials: UnsafeMutablePointer<ChunkPartial>?, shared: SharedThreshold? = nil,
        state: ProcessingState = ProcessingState(), sampling: Bool = false
    ) -> StatisticsKernel.RowAccumulator {
        let chunkLength = StatisticsKernel.chunkLength
        var accumulator = StatisticsKernel.RowAccumulator()
        var running = LogprobKernel.RunningTop()
        let route = scratch == nil || !sampling ? nil : softmaxRoute(parameters, state)
        // A sampled greedy row (or one whose draw is its argmax: top-k 1) without processing
        // needs the maximum alone: no moments.
        let greedy = isGreedy(parameters, sampling: sampling)
        let maximumOnly = sampling && greedy && state.mask == nil && state.editCount == 0 && state.topLogprobs < 0
        let momentsFree = scratch != nil && momentsFree(parameters, state, sampling: sampling)
        // The softmax routes collect nothing: plain sampling's draw needs only the chunks' sums,
        // and the others' cuts are known only once the row's maximum or mass is.
        let collectSurvivors = collect && route == nil
        // Top-k rows collect nothing during the pass: each chunk leaves its group maxima, and the
        // row settles its survivors from them (``TopKBound``).
        let topK = collectSurvivors && !greedy ? topKRoute(parameters, state) : nil
        let vectorMaxima =
            topK.map { usesVectorMaxima(E.self, keep: $0, parameters, state, sampling: sampling) } ?? false
        if maximumOnly, let (part, chunk) = StatisticsKernel.maximumRange(p, vocab: vocab, chunks: first, end) {
            // The whole range in one partial, at the chunk of its maximum (the others empty).
            if let partials { for c in first..<end { partials[c] = c == chunk ? part : .init() } }
            accumulator.merge(part, chunk: chunk, start: chunk * chunkLength)
            return accumulator
        }
        // The softmax routes but the dynamic temperature's, without processing: every chunk after
        // the row's first is read once, its sums or moments taken against a reference from the
        // chunk before it
        // (``LogprobKernel/referencedChunk(_:count:previous:temperature:blockSums:moments:ahead:)``).
        // A task that starts inside the row reads the maximum of the chunk before its first, as
        // that chunk's own reduce reports it (the maximum-only loop's, or the statistics' where a
        // logit is not finite).
        let referenced = momentsFree && route != nil && route != .dynamicTemperature
        let momentsTemperature = route?.momentsTemperature(parameters)
        var previous =
            referenced && first > 0
            ? (StatisticsKernel.maximumPartial(p + (first - 1) * chunkLength, count: chunkLength)
                ?? StatisticsKernel.chunkPartial(p + (first - 1) * chunkLength, count: chunkLength)).maximum
            : nil
        for c in first..<end {
            let start = c * chunkLength
            let length = min(chunkLength, vocab - start)
            let mask = state.mask.map { UnsafePointer($0 + start / 32) }
            let groups = topK != nil ? scratch.map { $0.groupMaxima + c * TopKBound.groupsPerChunk } : nil
            if let scratch, let before = previous,
                let read = LogprobKernel.referencedChunk(
                    p + start, count: length, previous: before,
                    temperature: momentsTemperature ?? parameters.temperature,
                    blockSums: momentsTemperature == nil ? scratch.drawSums + c * StatisticsKernel.blocksPerChunk : nil,
                    moments: momentsTemperature == nil ? nil : scratch.chunkMoments + 3 * c,
                    ahead: LogprobKernel.Prefetch(chunk: p + start, count: length))
            {
                // Every logit finite; no M2, as the maximum-only loop's.
                let part = StatisticsKernel.ChunkPartial(
                    count: length, mean: read.mean, maximum: read.maximum, blockMaxima: read.blockMaxima)
                partials?[c] = part
                accumulator.merge(part, chunk: c, start: start)
                UnsafeMutableRawPointer(scratch.blockMaxima + c * StatisticsKernel.blocksPerChunk).storeBytes(
                    of: part.blockMaxima, as: StatisticsKernel.BlockMaxima.self)
                // The sums' reference, which the draws and the routes' second sums take as the chunk's.
                scratch.chunkMaxima[c] = read.reference
                previous = read.maximum
                continue
            }
            // Top-k rows with vector maxima take their loop (and the moments loop without groups
            // where its sum is not finite); rows without moments the maximum-only loop that keeps
            // each block's maximum where `momentsFree` allows it; the softmax routes' chunks in the
            // other builds the one without block maxima (`+inf`: no block is skipped).
            let part =
                (vectorMaxima
                    ? UnsafeRawPointer(p + start).withMemoryRebound(to: Float.self, capacity: length) {
                        TopKBound.maximumVectors($0, count: length, into: groups!)
                    } ?? StatisticsKernel.chunkPartial(p + start, count: length, mask: nil, groups: nil)
                    : nil)
                ?? (momentsFree ? StatisticsKernel.maximumBlocks(p + start, count: length, groups: groups) : nil)
                ?? (route != nil && mask == nil && !momentsFree
                    ? StatisticsKernel.maximumPartial(p + start, count: length) : nil)
                ?? StatisticsKernel.chunkPartial(
                    p + start, count: length, mask: mask, groups: groups,
                    fineGroups: parameters.passNSigma == nil && parameters.passMinP == nil)
            partials?[c] = part
            accumulator.merge(part, chunk: c, start: start)
            if accumulator.error != nil { break }
            if referenced { previous = part.maximum }
            guard let scratch else { continue }
            // Every chunk's block maxima: the settle's compactions and the routes' gathers read only
            // the blocks whose maximum reaches their cut (``compactChunk``).
            UnsafeMutableRawPointer(scratch.blockMaxima + c * StatisticsKernel.blocksPerChunk).storeBytes(
                of: part.blockMaxima, as: StatisticsKernel.BlockMaxima.self)
            if collectSurvivors && !greedy {
                // Nothing collected: stricter than any threshold, so that the settle compacts the
                // chunk from the row. Threshold rows (Top-nσ, min-p) compact it there at their
                // final cut, from cache, reading only the blocks that reach it: a provisional cut
                // from the running statistics lay deep in the row until its top token had been
                // read (half of it on average for a top token at a random id). Top-k rows compact
                // from their group maxima first (``TopKBound``).
                scratch.counts[c] = 0
                scratch.thresholds[c] = .infinity
            } else if collectSurvivors {
                // Greedy rows collect only for their rank (logprobs): the ties of the maximum.
                var threshold = accumulator.maximum
                // A split row's tasks share the largest running maximum any of them has found, so
                // a task over a few chunks does not collect as if it saw the row alone.
                if let shared { threshold = shared.raise(to: threshold) }
                scratch.thresholds[c] = threshold
                // Most chunks hold no survivor at all: their maximum says so without a compare pass.
                scratch.counts[c] =
                    part.maximum >= threshold
                    ? compactBlocks(
                        p + start, count: length, threshold: threshold, indexBase: start, maxima: part.blockMaxima,
                        mask: mask,
                        into: scratch.candidates + start)
                    : 0
            }
            if route != nil {
                scratch.chunkMaxima[c] = part.maximum
                // The dynamic temperature's sums wait for the row's maximum (the settle,
                // ``dynamicTemperatureSums``): their double part is cut from it.
                if route == .dynamicTemperature { continue }
                let ahead = LogprobKernel.Prefetch(chunk: p + start, count: length)
                if let temperature = route?.momentsTemperature(parameters) {
                    scratch.storeMoments(
                        LogprobKernel.chunkMoments(
                            p + start, count: length, mask: mask, maximum: part.maximum, temperature: temperature,
                            ahead: ahead), chunk: c)
                    continue
                }
                blockSums(
                    p, vocab: vocab, chunk: c, mask: state.mask.map { UnsafePointer($0) },
                    temperature: parameters.temperature, scratch: scratch, ahead: ahead)
            }
            // The edited tokens of this chunk, read while it is in L1.
            if state.editCount > 0 {
                for k in scratch.editStarts[c]..<scratch.editStarts[c + 1] {
                    let edit = scratch.edits[k]
                    scratch.edits[k].value = state.process(E.float(p, Int(edit.token)), edit)
                }
            }
            if state.topLogprobs >= 0 {
                let keep = state.topLogprobs
                let top = scratch.topTokens + c * TopLogprobs.maximumCount
                var bound = running.bound(keep: keep)
                scratch.chunkMaxima[c] = part.maximum
                let ahead = LogprobKernel.Prefetch(chunk: p + start, count: length)
                scratch.expSums[c] = LogprobKernel.chunk(
                    p + start, count: length, mask: mask, maximum: part.maximum, indexBase: start, keep: keep,
                    bound: &bound, into: top, found: &scratch.topCounts[c], ahead: ahead)
                if keep > 0 { running.merge(top, count: scratch.topCounts[c], keep: keep) }
            }
        }
        return accumulator
    }

    /// Whether a sampled row's filters need no moments, so that its chunks reduce with the
    /// maximum-only loop (``StatisticsKernel/maximumBlocks(_:count:groups:)``, AVX-512 builds):
    /// every row without Top-nσ, a bitmask, edited tokens or logprobs. min-p, top-k and the others
    /// need the maximum, top-k's bound the mean, which the loop's sum gives, and the softmax routes
    /// the maximum and the finite count.
    @inline(__always)
    static func momentsFree(_ parameters: SamplingParameters, _ state: ProcessingState, sampling: Bool) -> Bool {
        BuildTarget.hasAVX512 && sampling && parameters.temperature != 0 && parameters.passNSigma == nil
            && state.mask == nil && state.editCount == 0 && state.topLogprobs < 0
    }

    /// Whether a top-k row's pass leaves *vector maxima* (the maximum of every 16 consecutive
    /// logits, ``TopKBound/maximumVectors(_:count:into:)``) instead of the statistics loop's lane
    /// groups: float rows whose pass needs no moments (``momentsFree(_:_:sampling:)``). A group
    /// that reaches the bound is then one vector to compact
    /// (``TopKBound/compactVectors(_:vocab:chunk:threshold:groups:into:)``), not a lane of the 16
    /// vectors of a quarter: for top-k 1000, where about a seventh of the groups reach it, the
    /// lane groups made the settle read and compress nearly the whole row again. With min-p
    /// beside a small `k` (at most 64: llama.cpp's default chain has top-k 40 and min-p 0.05) the
    /// lane groups stay: min-p's cut leaves few quarters to compact, which cost less than the
    /// vector maxima's three operations per 16 logits in the pass. The reduce and the settle
    /// decide it alike from this.
    static func usesVectorMaxima<E: LogitElement>(
        _: E.Type, keep k: Int, _ parameters: SamplingParameters, _ state: ProcessingState, sampling: Bool
    ) -> Bool {
        (k > 64 || parameters.passMinP == nil) && E.self == Float.self
            && momentsFree(parameters, state, sampling: sampling)
    }

    /// Whether the row settles as greedy does (its maximum and, for logprobs, the ties of it): a
    /// sampled row whose draw is its argmax (``SamplingParameters/drawsArgmax``), or any row at
    /// temperature 0.
    @inline(__always)
    static func isGreedy(_ parameters: SamplingParameters, sampling: Bool) -> Bool {
        sampling ? parameters.drawsArgmax : parameters.temperature == 0
    }

    /// Compacts the blocks of one chunk whose maximum reaches `threshold` (see
    /// ``StatisticsKernel/blockLength``); returns the survivors written, in id order.
    @inline(__always)
    static func compactBlocks<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, threshold: Float, indexBase: Int, maxima: StatisticsKernel.BlockMaxima,
        mask: UnsafePointer<UInt32>?, into out: UnsafeMutablePointer<Candidate>
    ) -> Int {
        let blockLength = StatisticsKernel.blockLength
        var written = 0
        var start = 0
        var block = 0
        while start < n {
            let length = min(blockLength, n - start)
            let maximum = block < StatisticsKernel.blocksPerChunk ? maxima[block] : .infinity
            if maximum >= threshold {
                written +=
                    mask.map {
                        CandidateKernel.compact(
                            p + start, count: length, threshold: threshold, indexBase: indexBase + start,
                            mask: $0 + start / 32,
                            into: out + written)
                    }
                    ?? CandidateKernel.compact(
                        p + start, count: length, threshold: threshold, indexBase: indexBase + start,
                        into: out + written)
            }
            start += length
            block += 1
        }
        return written
    }

    /// Brings chunks `first..<end` to the final `threshold`: filters each chunk's slot in place, or
    /// compacts the chunk from the row (``compactChunk``) when the threshold its slot holds was
    /// stricter (`+inf`: not compacted yet).
    static func finalize<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunks first: Int, _ end: Int, threshold: Float, scratch: Scratch,
        mask: UnsafePointer<UInt32>? = nil
    ) {
        for c in first..<end {
            if scratch.thresholds[c] <= threshold {
                let slot = scratch.candidates + c * StatisticsKernel.chunkLength
                scratch.counts[c] = filter(slot, count: scratch.counts[c], atLeast: threshold)
                scratch.thresholds[c] = threshold
            } else {
                compactChunk(p, vocab: vocab, chunk: c, threshold: threshold, scratch: scratch, mask: mask)
            }
        }
    }

    /// Compacts chunk `c` of the row at `p` (through the row's bitmask `mask`) at `threshold` into
    /// its slot, whatever the slot held, reading only the blocks whose maximum in the pass
    /// (``Scratch/blockMaxima``, stored for every reduced chunk) reaches it.
    static func compactChunk<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunk c: Int, threshold: Float, scratch: Scratch,
        mask: UnsafePointer<UInt32>?
    ) {
        let start = c * StatisticsKernel.chunkLength
        let maxima = UnsafeRawPointer(scratch.blockMaxima + c * StatisticsKernel.blocksPerChunk)
            .loadUnaligned(as: StatisticsKernel.BlockMaxima.self)
        scratch.counts[c] = compactBlocks(
            p + start, count: min(StatisticsKernel.chunkLength, vocab - start), threshold: threshold,
            indexBase: start, maxima: maxima, mask: mask.map { $0 + start / 32 }, into: scratch.candidates + start)
        scratch.thresholds[c] = threshold
    }

    /// Keeps the candidates of `c[0..<n]` whose logit is at least `threshold`, in order, at the
    /// front; returns how many. Without a branch per candidate (`topnsigma_filter_candidates`:
    /// compressed eight at a time with AVX-512): a top-k 1000 slot keeps an unpredictable half
    /// or so.
    @inline(__always)
    static func filter(_ c: UnsafeMutablePointer<Candidate>, count n: Int, atLeast threshold: Float) -> Int {
        topnsigma_filter_candidates(UnsafeMutableRawPointer(c), n, threshold)
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

    /// The threshold survivors of one row on the calling thread: ``prepare(_:vocab:scratch:logprobs:)``,
    /// ``reduceRow(_:vocab:parameters:scratch:state:)`` then ``settleSurvivors``. Package-visible
    /// for the C ABI's allocation-free single-row calls.
    package static func survivors<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, processing: RequestProcessing? = nil,
        scratch: Scratch
    ) -> Result<(statistics: RowStatistics, count: Int?), RowError> {
        prepare(processing, vocab: vocab, scratch: scratch, logprobs: .ignored)
        let state = scratch.state.pointee
        if let error = parameters.validationError ?? state.error { return .failure(error) }
        let accumulator = reduceRow(p, vocab: vocab, parameters: parameters, scratch: scratch, state: state)
        return settleSurvivors(
            p, vocab: vocab, accumulator: accumulator, parameters: parameters, scratch: scratch, state: state)
    }

    /// Every chunk of one row on the calling thread, collecting survivors unless the row is
    /// greedy without logprobs.
    @inline(__always)
    static func reduceRow<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, scratch: Scratch,
        state: ProcessingState = ProcessingState(), sampling: Bool = false
    ) -> StatisticsKernel.RowAccumulator {
        reduce(
            p, vocab: vocab, chunks: 0, StatisticsKernel.chunkCount(length: vocab),
            collect: !isGreedy(parameters, sampling: sampling) || state.topLogprobs >= 0, parameters: parameters,
            scratch: scratch,
            partials: nil, state: state, sampling: sampling)
    }

    /// Statistics of a whole row on the calling thread (the sampler's reduction, collecting no
    /// survivors).
    static func rowStatistics<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) -> Result<RowStatistics, RowError> {
        reduce(
            p, vocab: n, chunks: 0, StatisticsKernel.chunkCount(length: n), collect: false,
            parameters: SamplingParameters(),
            scratch: nil, partials: nil
        ).finish(row: p, count: n)
    }
}
