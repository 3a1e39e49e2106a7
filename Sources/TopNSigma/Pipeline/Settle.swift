import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RowPipeline {
    /// Settles a row whose chunks are all reduced (``reduce``, merged in chunk order into
    /// `accumulator`) and whose survivors sit in their chunk slots: the one step that decides a
    /// row, for whole rows and split rows alike.
    ///
    /// Errors and greedy rows are settled from the statistics. Otherwise the survivors are
    /// brought to the threshold and gathered in id order. The threshold is exact: when a
    /// survivor lies within the Float sums' error bound of it (``thresholdRange``), the row's
    /// moments are recomputed in double precision (rare: see
    /// ``StatisticsKernel/m2ErrorBound(shiftedSquares:depth:)``), so the kept set is always
    /// `{ i : Double(x_i) >= threshold }` with the float64 statistics.
    ///
    /// With request processing, the edited tokens' processed logits are computed here, merged
    /// into the statistics of the rest (Chan's formula, exactly as chunks merge) and into the
    /// survivors in id order.
    ///
    /// - Returns: the fused pass's statistics (within their error bound of the float64 ones) and
    ///   the number of survivors gathered at the front of `scratch.candidates` in id order (for
    ///   a greedy row: nil, or with logprobs the ties of the maximum); top-k and top-p are not
    ///   applied yet.
    ///
    /// When `sampling` (the row was reduced with `sampling`), a row on a softmax route
    /// (``softmaxRoute(_:_:)``) returns no survivors: the pass collected none, and the route's
    /// draw gathers what it needs.
    static func settleSurvivors<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, accumulator: StatisticsKernel.RowAccumulator, parameters: SamplingParameters,
        scratch: Scratch, state: ProcessingState = ProcessingState(), sampling: Bool = false
    ) -> Result<(statistics: RowStatistics, count: Int?), RowError> {
        if let error = parameters.validationError ?? state.error { return .failure(error) }
        let mask = state.mask.map { UnsafePointer($0) }
        var statistics: RowStatistics
        var m2Error = accumulator.m2Error
        switch accumulator.finish(row: p, count: vocab, mask: mask) {
        case .failure(let error): return .failure(error)
        case .success(let s): statistics = s
        }
        if state.editCount > 0 {
            switch mergeEdits(p, accumulator: accumulator, untouched: statistics, state: state, scratch: scratch) {
            case .failure(let error): return .failure(error)
            case .success(let merged): (statistics, m2Error) = merged
            }
        }
        guard statistics.finiteCount > 0 else { return .failure(.noFiniteLogit) }
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        if isGreedy(parameters, sampling: sampling) {
            guard state.topLogprobs >= 0 else { return .success((statistics, nil)) }
            // A greedy row's rank counts the ties of its maximum.
            finalize(p, vocab: vocab, chunks: 0, chunks, threshold: statistics.maximum, scratch: scratch, mask: mask)
            let ties = mergeEditSurvivors(
                threshold: statistics.maximum, count: gather(chunks: chunks, scratch: scratch), state: state,
                scratch: scratch)
            return .success((statistics, ties))
        }
        // The softmax routes gather their survivors, if any, when they draw.
        if sampling && softmaxRoute(parameters, state) != nil { return .success((statistics, nil)) }
        let range = thresholdRange(statistics, parameters, m2Error: m2Error)
        var low = floatThreshold(range.lower)
        if let k = topKRoute(parameters, state) {
            // The groups' k-th largest maximum is at or below the row's k-th largest logit: every
            // slot takes its chunk's logits at or above it (and at or above the other filters'
            // lower bound), from the groups that reach it. If at least k survive, their k-th
            // largest is the row's and no slot's threshold lies above it; if fewer, the row's
            // k-th lies below the other filters' cut, and top-k changes nothing.
            let bound = TopKBound.groupBound(
                groups: scratch.groupMaxima, count: chunks * TopKBound.groupsPerChunk, keep: k,
                maximum: statistics.maximum,
                floor: parameters.passNSigma == nil && parameters.passMinP != nil
                    ? low : max(Float(statistics.mean), low))
            let collect = max(low, bound > -.infinity ? bound : -.greatestFiniteMagnitude)
            let vectorMaxima = usesVectorMaxima(E.self, keep: k, parameters, state, sampling: sampling)
            for c in 0..<chunks {
                let groups = scratch.groupMaxima + c * TopKBound.groupsPerChunk
                let slot = scratch.candidates + c * StatisticsKernel.chunkLength
                scratch.counts[c] =
                    vectorMaxima
                    ? UnsafeRawPointer(p).withMemoryRebound(to: Float.self, capacity: vocab) {
                        TopKBound.compactVectors(
                            $0, vocab: vocab, chunk: c, threshold: collect, groups: groups, into: slot)
                    }
                    : TopKBound.compactGroups(
                        p, vocab: vocab, chunk: c, threshold: collect, groups: groups, mask: mask, into: slot)
                scratch.thresholds[c] = collect
            }
            // A slot whose threshold lies above the k-th is compacted again at it first.
            var kth = kthSurvivor(scratch: scratch, chunks: 0..<chunks, keep: k)
            if kth > -.infinity {
                var strictest = -Float.infinity
                for c in 0..<chunks { strictest = max(strictest, scratch.thresholds[c]) }
                if strictest > kth {
                    finalize(p, vocab: vocab, chunks: 0, chunks, threshold: kth, scratch: scratch, mask: mask)
                    kth = kthSurvivor(scratch: scratch, chunks: 0..<chunks, keep: k)
                }
                low = max(low, kth)
            }
        }
        finalize(p, vocab: vocab, chunks: 0, chunks, threshold: low, scratch: scratch, mask: mask)
        var count = mergeEditSurvivors(
            threshold: low, count: gather(chunks: chunks, scratch: scratch), state: state, scratch: scratch)
        var threshold = low
        if range.upper > range.lower {
            // Survivors in [low, high) are undecided by the Float statistics.
            let high = floatThreshold(range.upper)
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
                let exact =
                    mask == nil
                    ? StatisticsKernel.exactMoments(p, count: vocab)
                    : exactProcessedMoments(p, vocab: vocab, state: state, scratch: scratch)
                var exactStatistics = statistics
                exactStatistics.mean = exact.mean
                exactStatistics.sumOfSquaredDeviations = exact.m2
                threshold = floatThreshold(logitThreshold(exactStatistics, parameters))
            } else {
                threshold = high
            }
        }
        threshold = max(threshold, low)
        if threshold > low { count = filter(scratch.candidates, count: count, atLeast: threshold) }
        return .success((statistics, count))
    }

    /// The processed logits of the row's edited tokens (computed in the pass, in
    /// `scratch.edits`), merged into the statistics of the untouched tokens. Returns the merged statistics and the bound on
    /// their `M2`'s error, or the row's error (an edited logit that is NaN or `+inf`, before or
    /// after processing).
    static func mergeEdits<E: LogitElement>(
        _ p: UnsafePointer<E>, accumulator: StatisticsKernel.RowAccumulator, untouched: RowStatistics,
        state: ProcessingState,
        scratch: Scratch
    ) -> Result<(RowStatistics, Double), RowError> {
        let edits = scratch.edits
        var count = 0, sum = 0.0, maximum = -Float.infinity, argmax = Int.max
        for k in 0..<state.editCount {
            // Processed in the pass (masked ones are -inf from the start).
            let v = edits[k].value, token = Int(edits[k].token)
            if v.isNaN { return .failure(.notANumber(index: token)) }
            if v == .infinity { return .failure(.positiveInfinity(index: token)) }
            guard v > -.infinity else { continue }
            count += 1
            sum += Double(v)
            if v > maximum || (v == maximum && token < argmax) {
                maximum = v
                argmax = token
            }
        }
        var statistics = untouched
        guard count > 0 else { return .success((statistics, accumulator.m2Error)) }
        let mean = sum / Double(count)
        var m2 = 0.0
        for k in 0..<state.editCount where edits[k].value > -.infinity {
            let d = Double(edits[k].value) - mean
            m2 += d * d
        }
        var merged = accumulator
        merged.merge(
            ChunkPartial(
                count: count, mean: mean, m2: m2, maximum: -.infinity, m2Error: m2 * 0x1p-40,
                meanError: (abs(mean) + (m2 / Double(count)).squareRoot()) * 0x1p-40),
            chunk: -1, start: 0)
        statistics.finiteCount = merged.count
        statistics.mean = merged.mean
        statistics.sumOfSquaredDeviations = merged.m2
        if maximum > untouched.maximum || (maximum == untouched.maximum && argmax < untouched.argmax) {
            statistics.maximum = maximum
            statistics.argmax = argmax
        }
        return .success((statistics, merged.m2Error))
    }

    /// Merges the edited tokens whose processed logit is at or above `threshold` into the
    /// `count` gathered survivors, in id order; returns the new count. (The edited tokens are
    /// masked out of the pass, so no token is counted twice.)
    static func mergeEditSurvivors(threshold: Float, count: Int, state: ProcessingState, scratch: Scratch) -> Int {
        guard state.editCount > 0 else { return count }
        // Sorted by id in the weights region, which is free until truncation.
        return scratch.weights.withMemoryRebound(to: Candidate.self, capacity: state.editCount) { extra in
            var m = 0
            for k in 0..<state.editCount where scratch.edits[k].value >= threshold {
                extra[m] = Candidate(index: scratch.edits[k].token, logit: scratch.edits[k].value)
                m += 1
            }
            guard m > 0 else { return count }
            Truncation.sortByIndex(extra, count: m)
            let c = scratch.candidates
            var i = count - 1, j = m - 1, k = count + m - 1
            while j >= 0 {
                if i >= 0 && c[i].index > extra[j].index {
                    c[k] = c[i]
                    i -= 1
                } else {
                    c[k] = extra[j]
                    j -= 1
                }
                k -= 1
            }
            return count + m
        }
    }

    /// The float64 two-pass moments of the processed row (allowed, untouched tokens and the
    /// edited tokens' processed logits): the exact-threshold fallback for processed rows.
    static func exactProcessedMoments<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, state: ProcessingState, scratch: Scratch
    ) -> (mean: Double, m2: Double) {
        guard state.mask != nil else { return StatisticsKernel.exactMoments(p, count: vocab) }
        var count = 0, sum = 0.0
        forEachProcessedLogit(p, vocab: vocab, state: state, scratch: scratch) { x in
            count += 1
            sum += Double(x)
        }
        guard count > 0 else { return (0, 0) }
        let mean = sum / Double(count)
        var m2 = 0.0
        forEachProcessedLogit(p, vocab: vocab, state: state, scratch: scratch) { x in
            let d = Double(x) - mean
            m2 += d * d
        }
        return (mean, m2)
    }

    /// The `keep`-th largest logit held by the candidate slots of chunks `chunks` (each slot
    /// `c · chunkLength`, `scratch.counts[c]` long), or `-inf` when they hold fewer. Uses the
    /// weights region under those chunks as its buffer.
    static func kthSurvivor(scratch: Scratch, chunks: Range<Int>, keep: Int) -> Float {
        let chunkLength = StatisticsKernel.chunkLength
        let buffer = scratch.kthBuffer(fromChunk: chunks.lowerBound)
        var n = 0
        for c in chunks {
            let slot = scratch.candidates + c * chunkLength
            for j in 0..<scratch.counts[c] {
                buffer[n] = slot[j].logit
                n &+= 1
            }
        }
        guard n >= keep else { return -.infinity }
        return TopKBound.kthLargest(buffer, count: n, k: keep)
    }
}
