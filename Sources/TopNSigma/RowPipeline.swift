import CShims
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
        /// The row's request processing, prepared before its pass (``prepare(_:vocab:scratch:)``).
        var state: UnsafeMutablePointer<ProcessingState>
        /// The effective allowed-token bitmask: the request's, less the edited tokens.
        var mask: UnsafeMutablePointer<UInt32>
        /// The edited tokens' hash table (token → index in ``edits``), open addressing; only
        /// the part a request needs is cleared and used.
        var table: UnsafeMutablePointer<Int32>
        var tableCapacity: Int
        /// The tokens that the bias or the penalties change.
        var edits: UnsafeMutablePointer<Edit>
        /// The edits as the hash table gathers them, before they are grouped by chunk.
        var staging: UnsafeMutablePointer<Edit>
        /// Chunk `c`'s edits are `edits[editStarts[c]..<editStarts[c + 1]]` (``edits`` is grouped by
        /// chunk), so each chunk processes its edited tokens while it is in L1, in one sweep.
        var editStarts: UnsafeMutablePointer<Int>
        /// Logprobs: per chunk, `Σ exp(x - chunk max)`, the chunk max, and its top tokens.
        var expSums: UnsafeMutablePointer<Double>
        var chunkMaxima: UnsafeMutablePointer<Float>
        var topCounts: UnsafeMutablePointer<Int>
        var topTokens: UnsafeMutablePointer<Candidate>
        /// Plain sampling and top-p alone: per 1024-logit block, `Σ exp((x - chunk max) / T)`
        /// (``OnlineSoftmax``; ``StatisticsKernel/blocksPerChunk`` a chunk); the chunk maxima are in
        /// ``chunkMaxima``.
        var drawSums: UnsafeMutablePointer<Double>
        /// Top-k: per chunk, ``TopKBound/groupsPerChunk`` group maxima (``TopKBound``).
        var groupMaxima: UnsafeMutablePointer<Float>
        /// The row-mass and dynamic-temperature routes: per chunk, `Σ e`, `Σ e·y` and `Σ e²`
        /// relative to the chunk's maximum (``OnlineSoftmax/rowMass(moments:maxima:chunks:maximum:temperature:zError:momentError:)``).
        var chunkMoments: UnsafeMutablePointer<Double>

        /// Stores chunk `c`'s `Σ e`, `Σ e·y` and `Σ e²` in ``chunkMoments``.
        @inline(__always)
        func storeMoments(_ moments: (z: Double, weighted: Double, squares: Double), chunk c: Int) {
            chunkMoments[3 * c] = moments.z
            chunkMoments[3 * c + 1] = moments.weighted
            chunkMoments[3 * c + 2] = moments.squares
        }

        /// Where each array of a ``Scratch`` lives in its block: offsets computed from the
        /// element types' own strides and alignments, each array on a 64-byte boundary.
        struct Layout {
            let vocab: Int
            let chunks: Int
            let candidates: Int, weights: Int, partials: Int, counts: Int, thresholds: Int
            let state: Int, mask: Int, maskWords: Int, table: Int, tableCapacity: Int, edits: Int, staging: Int,
                editStarts: Int
            let expSums: Int, chunkMaxima: Int, topCounts: Int, topTokens: Int, drawSums: Int, groupMaxima: Int,
                chunkMoments: Int
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
                    let thresholds = place(Float.self, count: chunks),
                    let state = place(ProcessingState.self, count: 1),
                    let mask = place(UInt32.self, count: vocab / 32 + 2),
                    let table = place(Int32.self, count: Self.tableCapacity(vocab: vocab)),
                    let edits = place(Edit.self, count: vocab),
                    let staging = place(Edit.self, count: vocab),
                    let editStarts = place(Int.self, count: chunks + 1),
                    let expSums = place(Double.self, count: chunks),
                    let chunkMaxima = place(Float.self, count: chunks),
                    let topCounts = place(Int.self, count: chunks),
                    let topTokens = place(Candidate.self, count: chunks * TopLogprobs.maximumCount),
                    let drawSums = place(Double.self, count: chunks * StatisticsKernel.blocksPerChunk),
                    let groupMaxima = place(Float.self, count: chunks * TopKBound.groupsPerChunk),
                    let chunkMoments = place(Double.self, count: 3 * chunks)
                else { return nil }
                self.chunkMoments = chunkMoments
                self.drawSums = drawSums
                self.groupMaxima = groupMaxima
                self.vocab = vocab
                self.chunks = chunks
                (self.candidates, self.weights, self.partials, self.counts, self.thresholds) =
                    (candidates, weights, partials, counts, thresholds)
                (self.state, self.mask, self.maskWords, self.edits) = (state, mask, vocab / 32 + 2, edits)
                (self.table, self.tableCapacity, self.staging, self.editStarts) = (
                    table, Self.tableCapacity(vocab: vocab), staging, editStarts
                )
                (self.expSums, self.chunkMaxima, self.topCounts, self.topTokens) = (
                    expSums, chunkMaxima, topCounts, topTokens
                )
                byteCount = max(offset, 64)
            }

            /// The hash table's capacity: a power of two, at least twice the vocabulary (load at
            /// most one half).
            static func tableCapacity(vocab: Int) -> Int {
                var capacity = 16
                while capacity < 2 * vocab { capacity *= 2 }
                return capacity
            }

            /// Binds and initializes a scratch in `block` (at least ``byteCount`` bytes, 64-byte
            /// aligned).
            func bind(_ block: UnsafeMutableRawPointer) -> Scratch {
                let partials = (block + self.partials).bindMemory(
                    to: StatisticsKernel.ChunkPartial.self, capacity: chunks)
                partials.initialize(repeating: StatisticsKernel.ChunkPartial(), count: chunks)
                let counts = (block + self.counts).bindMemory(to: Int.self, capacity: chunks)
                counts.initialize(repeating: 0, count: chunks)
                let thresholds = (block + self.thresholds).bindMemory(to: Float.self, capacity: chunks)
                thresholds.initialize(repeating: 0, count: chunks)
                let state = (block + self.state).bindMemory(to: ProcessingState.self, capacity: 1)
                state.initialize(to: ProcessingState())
                let topCounts = (block + self.topCounts).bindMemory(to: Int.self, capacity: chunks)
                topCounts.initialize(repeating: 0, count: chunks)
                return Scratch(
                    thresholds: thresholds, counts: counts,
                    candidates: (block + candidates).bindMemory(to: Candidate.self, capacity: vocab),
                    weights: (block + weights).bindMemory(to: Double.self, capacity: vocab),
                    partials: partials, state: state,
                    mask: (block + mask).bindMemory(to: UInt32.self, capacity: maskWords),
                    table: (block + table).bindMemory(to: Int32.self, capacity: tableCapacity),
                    tableCapacity: tableCapacity,
                    edits: (block + edits).bindMemory(to: Edit.self, capacity: vocab),
                    staging: (block + staging).bindMemory(to: Edit.self, capacity: vocab),
                    editStarts: (block + editStarts).bindMemory(to: Int.self, capacity: chunks + 1),
                    expSums: (block + expSums).bindMemory(to: Double.self, capacity: chunks),
                    chunkMaxima: (block + chunkMaxima).bindMemory(to: Float.self, capacity: chunks),
                    topCounts: topCounts,
                    topTokens: (block + topTokens).bindMemory(
                        to: Candidate.self, capacity: chunks * TopLogprobs.maximumCount),
                    drawSums: (block + drawSums).bindMemory(
                        to: Double.self, capacity: chunks * StatisticsKernel.blocksPerChunk),
                    groupMaxima: (block + groupMaxima).bindMemory(
                        to: Float.self, capacity: chunks * TopKBound.groupsPerChunk),
                    chunkMoments: (block + chunkMoments).bindMemory(to: Double.self, capacity: 3 * chunks))
            }
        }
    }

    /// How many rows had their moments recomputed in double precision because a survivor lay
    /// within the Float sums' error bound of the threshold, or left a softmax route for the
    /// survivor pipeline because its sums left the row undecided (``exactDraw``): diagnostics for
    /// tests and benchmarks.
    package static let exactRecomputations = Atomic<Int>(0)

    /// Reduces chunks `first..<end` of the row at `p`, merging them in order into an accumulator;
    /// when `collect`, compacts each chunk against the provisional threshold of the chunks merged so
    /// far (this one included) into `scratch`. When `partials` is given, each chunk's partial is
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
        // Sampled rows whose filters need no moments (every row without Top-nσ, processing or
        // logprobs that takes the survivor pipeline or top-p's route: min-p, top-k and the others
        // need the maximum, and top-k's bound the mean, which the loop's sum gives) reduce with
        // the maximum-only loop (AVX-512 builds).
        let momentsFree =
            BuildTarget.hasAVX512 && sampling && scratch != nil && parameters.temperature != 0
            && parameters.passNSigma == nil && state.mask == nil && state.editCount == 0 && state.topLogprobs < 0
            && (route == nil || route?.depth != nil)
        // Plain sampling collects nothing: its draw needs only the chunks' sums. Nor does the
        // row-mass route: its cut is known only once the row's mass is.
        let collectSurvivors = collect && route?.collects ?? true
        let depth = route?.depth
        // Top-k rows collect nothing during the pass: each chunk leaves its group maxima, and the
        // row settles its survivors from them (``TopKBound``).
        let topK = collectSurvivors && !greedy ? topKRoute(parameters, state) : nil
        if maximumOnly, let (part, chunk) = StatisticsKernel.maximumRange(p, vocab: vocab, chunks: first, end) {
            // The whole range in one partial, at the chunk of its maximum (the others empty).
            if let partials { for c in first..<end { partials[c] = c == chunk ? part : .init() } }
            accumulator.merge(part, chunk: chunk, start: chunk * chunkLength)
            return accumulator
        }
        for c in first..<end {
            let start = c * chunkLength
            let length = min(chunkLength, vocab - start)
            let mask = state.mask.map { UnsafePointer($0 + start / 32) }
            let groups = topK != nil ? scratch.map { $0.groupMaxima + c * TopKBound.groupsPerChunk } : nil
            let part =
                (route != nil && !route!.collects && mask == nil
                    ? StatisticsKernel.maximumPartial(p + start, count: length) : nil)
                ?? (momentsFree ? StatisticsKernel.maximumBlocks(p + start, count: length, groups: groups) : nil)
                ?? StatisticsKernel.chunkPartial(
                    p + start, count: length, mask: mask, groups: groups,
                    fineGroups: parameters.passNSigma == nil && parameters.passMinP == nil)
            partials?[c] = part
            accumulator.merge(part, chunk: c, start: start)
            if accumulator.error != nil { break }
            guard let scratch else { continue }
            if topK != nil {
                // Nothing collected: stricter than any threshold, so that a settle that did not
                // compact the chunk would compact it again from the row.
                scratch.counts[c] = 0
                scratch.thresholds[c] = .infinity
            } else if collectSurvivors {
                // Greedy rows collect only for their rank (logprobs): the ties of the maximum.
                var threshold =
                    greedy ? accumulator.maximum : provisionalThreshold(accumulator, parameters, depth: depth)
                // A split row's tasks share the strictest provisional threshold any of them has
                // found, so a task over a few chunks does not collect as if it saw the row alone.
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
                let ahead = LogprobKernel.Prefetch(chunk: p + start, count: length)
                if let temperature = route?.momentsTemperature(parameters) {
                    let moments =
                        route == .dynamicTemperature
                        ? (scratch.candidates + start).withMemoryRebound(to: Float.self, capacity: length) {
                            // The chunk's own candidate slot (unused on this route) holds a
                            // half-precision chunk's Float conversion.
                            WideExp.chunkMass(
                                p + start, count: length, mask: mask, maximum: part.maximum, temperature: temperature,
                                buffer: $0)
                        }
                        : LogprobKernel.chunkMoments(
                            p + start, count: length, mask: mask, maximum: part.maximum, temperature: temperature,
                            ahead: ahead)
                    scratch.storeMoments(moments, chunk: c)
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
    /// compacts the chunk again when its provisional threshold was stricter.
    static func finalize<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunks first: Int, _ end: Int, threshold: Float, scratch: Scratch,
        mask: UnsafePointer<UInt32>? = nil
    ) {
        let chunkLength = StatisticsKernel.chunkLength
        for c in first..<end {
            let start = c * chunkLength
            let slot = scratch.candidates + start
            defer { scratch.thresholds[c] = threshold }
            if scratch.thresholds[c] <= threshold {
                scratch.counts[c] = filter(slot, count: scratch.counts[c], atLeast: threshold)
            } else if let mask {
                scratch.counts[c] = CandidateKernel.compact(
                    p + start, count: min(chunkLength, vocab - start), threshold: threshold, indexBase: start,
                    mask: mask + start / 32, into: slot)
            } else {
                scratch.counts[c] = CandidateKernel.compact(
                    p + start, count: min(chunkLength, vocab - start), threshold: threshold, indexBase: start,
                    into: slot)
            }
        }
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
    /// With request processing, the edited tokens' processed logits are computed here, merged
    /// into the statistics of the rest (Chan's formula, exactly as chunks merge) and into the
    /// survivors in id order.
    ///
    /// - Returns: the fused pass's statistics (within their error bound of the float64 ones) and
    ///   the number of survivors gathered at the front of `scratch.candidates` in id order (for
    ///   a greedy row: nil, or with logprobs the ties of the maximum); top-k and top-p are not
    ///   applied yet.
    ///
    /// When `sampling` (the row was reduced with `sampling`), a plain row (``SoftmaxRoute/plain``)
    /// returns no survivors (it collected none) and a top-p-alone row returns those at or above
    /// `max − depth·T` (``SoftmaxRoute/nucleus(depth:)``): ``settle`` draws them.
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
        let route = sampling ? softmaxRoute(parameters, state) : nil
        if let route, !route.collects { return .success((statistics, nil)) }
        let range = thresholdRange(statistics, parameters, m2Error: m2Error)
        var low = floatThreshold(range.lower)
        if let depth = route?.depth {
            low = max(low, floatThreshold(Double(statistics.maximum) - depth * Double(parameters.temperature)))
        }
        if let k = topKRoute(parameters, state) {
            // The groups' k-th largest maximum is at or below the row's k-th largest logit: every
            // slot takes its chunk's logits at or above it (and at or above the other filters'
            // lower bound), from the groups that reach it. If at least k survive, their k-th
            // largest is the row's and no slot's threshold lies above it; if fewer, the row's
            // k-th lies below the other filters' cut, and top-k changes nothing.
            let bound = TopKBound.groupBound(
                scratch: scratch, chunks: 0..<chunks, keep: k, maximum: statistics.maximum,
                floor: parameters.passNSigma == nil && parameters.passMinP != nil
                    ? low : max(Float(statistics.mean), low))
            let collect = max(low, bound > -.infinity ? bound : -.greatestFiniteMagnitude)
            for c in 0..<chunks {
                scratch.counts[c] = TopKBound.compactGroups(
                    p, vocab: vocab, chunk: c, threshold: collect,
                    groups: scratch.groupMaxima + c * TopKBound.groupsPerChunk, mask: mask,
                    into: scratch.candidates + c * StatisticsKernel.chunkLength)
                scratch.thresholds[c] = collect
            }
            // A slot whose threshold lies above the k-th is compacted again at it first.
            var kth = TopKBound.kth(scratch: scratch, chunks: 0..<chunks, keep: k)
            if kth > -.infinity {
                var strictest = -Float.infinity
                for c in 0..<chunks { strictest = max(strictest, scratch.thresholds[c]) }
                if strictest > kth {
                    finalize(p, vocab: vocab, chunks: 0, chunks, threshold: kth, scratch: scratch, mask: mask)
                    kth = TopKBound.kth(scratch: scratch, chunks: 0..<chunks, keep: k)
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

    /// Bytes of one row's scratch for rows of `vocab` logits (the block a sampler allocates per
    /// thread, and ``withTemporaryScratch(vocab:_:)`` per call), or nil when it overflows `Int`.
    package static func scratchByteCount(vocab: Int) -> Int? { Scratch.Layout(vocab: vocab)?.byteCount }

    /// Runs `body` with a scratch region for one row of `vocab` logits, allocated for the call:
    /// for the single-row convenience APIs (the sampler keeps its own). Nil when the row is too
    /// large to have one, or its memory cannot be had (`posix_memalign`, which fails, not a trap).
    package static func withTemporaryScratch<R>(vocab: Int, _ body: (Scratch) -> R) -> R? {
        guard let layout = Scratch.Layout(vocab: vocab),
            let block = NodeMemory.allocateFromHeap(byteCount: layout.byteCount)
        else { return nil }
        defer { NodeMemory.free(block) }
        return body(layout.bind(block.pointer))
    }

    /// One row start to finish on the calling thread: its processing prepared, reduced,
    /// settled and drawn; its logprobs written to `logprobs` when it asks for them.
    static func sampleRow<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, processing: ProcessingSource?, index: Int,
        step: UInt64, scratch: Scratch, logprobs: UnsafeMutablePointer<TopLogprobs>? = nil
    ) -> SampleResult {
        prepare(
            processing, index: index, vocab: vocab, scratch: scratch, logprobs: logprobs != nil ? .buffer : .missing)
        let state = scratch.state.pointee
        if let error = parameters.validationError ?? state.error {
            logprobs?.pointee = TopLogprobs()
            return .failure(error)
        }
        let accumulator = reduceRow(
            p, vocab: vocab, parameters: parameters, scratch: scratch, state: state, sampling: true)
        return settle(
            p, vocab: vocab, accumulator: accumulator, parameters: parameters, step: step, scratch: scratch,
            logprobs: logprobs)
    }

    /// Settles a reduced row (``settleSurvivors``), then truncates and draws; writes the row's
    /// logprobs when its (prepared) processing asks for them.
    static func settle<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, accumulator: StatisticsKernel.RowAccumulator, parameters: SamplingParameters,
        step: UInt64, scratch: Scratch, logprobs: UnsafeMutablePointer<TopLogprobs>? = nil
    ) -> SampleResult {
        let state = scratch.state.pointee
        switch settleSurvivors(
            p, vocab: vocab, accumulator: accumulator, parameters: parameters, scratch: scratch, state: state,
            sampling: true)
        {
        case .failure(let error):
            logprobs?.pointee = TopLogprobs()
            return .failure(error)
        case .success(let (statistics, count)):
            let drawn: SampledToken
            if parameters.drawsArgmax {
                drawn = SampledToken(token: statistics.argmax, logProbability: 0, candidateCount: 1)
            } else if let route = softmaxRoute(parameters, state) {
                drawn = softmaxDraw(
                    p, vocab: vocab, route: route, statistics: statistics, parameters: parameters, step: step,
                    count: count ?? 0, scratch: scratch, mask: state.mask.map { UnsafePointer($0) })
            } else {
                drawn = draw(
                    p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, count: count ?? 0,
                    scratch: scratch)
            }
            if state.topLogprobs >= 0, let logprobs {
                // The drawn token's logit (the maximum when greedy), found only for the rows that
                // ask for logprobs: with Top-nσ off the kept set can be the whole row.
                var sampledLogit = statistics.maximum
                if !parameters.drawsArgmax {
                    for j in 0..<drawn.candidateCount where Int(scratch.candidates[j].index) == drawn.token {
                        sampledLogit = scratch.candidates[j].logit
                        break
                    }
                }
                logprobs.pointee = rowLogprobs(
                    statistics: statistics, sampled: sampledLogit, survivors: count ?? 0, vocab: vocab, state: state,
                    scratch: scratch)
            }
            return .success(drawn)
        }
    }

    /// The draw of a row on a softmax route: plain sampling from the chunks' sums alone; top-p
    /// alone from the survivors at or above `max − depth·T` when their mass holds the nucleus
    /// for certain (given `Z`'s error bound), the depth raised 1.5× and the row compacted again
    /// when it does not. When the nucleus cut lies within `Z`'s bound, `Z` is tightened once to
    /// the survivors' exact mass plus the tail below them (``OnlineSoftmax/tailSum``); when it
    /// still does, or the depth passes 64, the whole row is taken in double precision (the
    /// survivor pipeline's top-p).
    static func softmaxDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, route: SoftmaxRoute, statistics: RowStatistics,
        parameters: SamplingParameters, step: UInt64, count: Int, scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        switch route {
        case .rowMass:
            return rowMassDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .dynamicTemperature:
            return dynamicTemperatureDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .typical:
            return typicalDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .xtc:
            return xtcDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .plain, .nucleus: break
        }
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        guard case .nucleus(var depth) = route, let p32 = parameters.topP else {
            return plainDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        }
        let m = Double(statistics.maximum), t = Double(parameters.temperature), topP = Double(p32)
        var z = OnlineSoftmax.normalizer(
            sums: scratch.drawSums, maxima: scratch.chunkMaxima, chunks: chunks, maximum: statistics.maximum,
            temperature: parameters.temperature)
        // The bound on Z's absolute error: the chunk sums' relative bound, and slack for the
        // double sums' own rounding.
        var zError = (OnlineSoftmax.sumError + 1e-12) * z
        let c = scratch.candidates, w = scratch.weights
        var count = count
        var cut = floatThreshold(m - depth * t)
        var tightened = false
        while true {
            // The survivors are every logit at or above `cut`, so the nucleus of the whole row is
            // a prefix of them in key order whenever their mass reaches p·Z for every Z within
            // its bound.
            let mass = SoftmaxWeights.compute(
                c, count: count, maximum: statistics.maximum, temperature: parameters.temperature, into: w)
            if mass >= topP * (z + 2 * zError) {
                let need = topP * z, slack = topP * zError
                if 2 * count > vocab {
                    // No room for the cut's logit copy (a row as flat as that): the in-place
                    // weighted selection.
                    let kept = Truncation.nucleus(c, w, count: count, need: need)
                    var keptMass = 0.0, last = 0
                    for j in 0..<kept {
                        keptMass += w[j]
                        if Truncation.precedes(c[last], c[j]) { last = j }
                    }
                    guard keptMass >= need + slack && keptMass - w[last] < need - slack else { break }
                    Truncation.sortByIndex(c, count: kept)
                    return DrawKernel.draw(
                        UnsafeBufferPointer(start: c, count: kept), maximum: statistics.maximum,
                        temperature: parameters.temperature, uniform: u, weights: w)
                }
                // The nucleus: every survivor above the cut value, then the ties at it by id
                // (the survivors are in id order) until the mass reaches `need`. The logits'
                // double copy goes after the weights.
                let edge = Truncation.nucleusCut(c, w, count: count, need: need, logits: w + count)
                var keptMass = edge.above, lastTie = 0.0, ties = 0
                for j in 0..<count where c[j].logit == edge.value {
                    keptMass += w[j]
                    lastTie = w[j]
                    ties &+= 1
                    if keptMass >= need { break }
                }
                if keptMass >= need + slack && keptMass - lastTie < need - slack {
                    var kept = 0, tiesLeft = ties
                    for j in 0..<count {
                        let x = c[j].logit
                        guard x > edge.value || (x == edge.value && tiesLeft > 0) else { continue }
                        if x == edge.value { tiesLeft &-= 1 }
                        c[kept] = c[j]
                        kept &+= 1
                    }
                    return DrawKernel.draw(
                        UnsafeBufferPointer(start: c, count: kept), maximum: statistics.maximum,
                        temperature: parameters.temperature, uniform: u, weights: w)
                }
                guard !tightened else { break }
                // The cut lies within Z's bound: Z again, as the survivors' exact mass plus the
                // tail below them by the vector exp, whose error bound is the tail's alone.
                tightened = true
                let tail = OnlineSoftmax.tailSum(
                    p, vocab: vocab, mask: mask, below: cut, maximum: statistics.maximum,
                    temperature: parameters.temperature)
                z = mass + tail
                zError = OnlineSoftmax.sumError * tail + 1e-12 * z
                continue
            }
            guard depth < 64 else { break }
            depth *= 1.5
            cut = floatThreshold(m - depth * t)
            count = recollect(p, vocab: vocab, threshold: cut, scratch: scratch, mask: mask)
        }
        // Undecided within Z's bound (or a row whose mass lies that deep): every allowed logit,
        // top-p over their double weights.
        return exactDraw(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch, mask: mask)
    }

    /// The draw of a row on the row-mass route (``SoftmaxRoute/rowMass``). ε's and η's cut
    /// (keep `x > strict`) and p-less's (keep `x >= atLeast`) follow from the row's mass; from the
    /// pass's Float sums each is known within a band (``OnlineSoftmax/rowMass(moments:maxima:chunks:maximum:temperature:zError:momentError:)``'s
    /// bounds, through ``ExtendedTruncation/cuts(_:mass:maximum:)``, which is monotone in each).
    /// The row is gathered at the lowest cut the bands allow. When no gathered logit but the
    /// maximum lies within a band, every mass within the bounds keeps the same set, so the
    /// estimate decides as the float64 mass would; otherwise the row's mass is taken again in
    /// double precision (rare). Then the rest of the truncation over what is gathered
    /// (``ExtendedTruncation/apply(_:count:weights:maximum:parameters:mass:step:)``), and the
    /// draw.
    static func rowMassDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let errors = SoftmaxRoute.rowMass.momentErrors(vocab: vocab)
        let estimate = rowMass(
            vocab: vocab, statistics: statistics, temperature: parameters.temperature, scratch: scratch, errors: errors)
        let mass = estimate.mass
        let zError = errors.z, qError = errors.moments
        func corner(_ z: Double, _ squares: Double, _ entropy: Double) -> (strict: Double, atLeast: Double) {
            ExtendedTruncation.cuts(
                parameters, mass: .init(z: mass.z * z, squares: mass.squares * squares, entropy: entropy),
                maximum: statistics.maximum)
        }
        let (h, dh) = (mass.entropy, estimate.entropyError)
        let low = corner(1 - zError, 1 - qError, h + dh), high = corner(1 + zError, 1 + qError, h - dh)
        // ε and η's cut rises with Z and falls with H; p-less's rises with Σe² and falls with Z.
        let strictLow = low.strict, strictHigh = high.strict
        let atLeastLow = corner(1 + zError, 1 - qError, h).atLeast
        let atLeastHigh = corner(1 - zError, 1 + qError, h).atLeast
        func widened(_ x: Double, by sign: Double) -> Double {
            x.isFinite ? x + sign * (1e-9 + 1e-12 * Swift.abs(x)) : x
        }
        let gatherAt = Swift.min(
            Double(statistics.maximum), widened(Swift.max(strictLow, atLeastLow), by: -1))
        let count = recollect(p, vocab: vocab, threshold: floatThreshold(gatherAt), scratch: scratch, mask: mask)
        let c = scratch.candidates
        let bands = [
            (widened(strictLow, by: -1), widened(strictHigh, by: 1)),
            (widened(atLeastLow, by: -1), widened(atLeastHigh, by: 1))
        ]
        var undecided = false
        scan: for j in 0..<count where c[j].logit != statistics.maximum {
            let x = Double(c[j].logit)
            for (a, b) in bands where x >= a && x <= b {
                undecided = true
                break scan
            }
        }
        if undecided {
            return exactDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        }
        let (kept, temperature, maximum) = ExtendedTruncation.apply(
            c, count: count, weights: scratch.weights, maximum: statistics.maximum, parameters: parameters,
            mass: mass, step: step)
        return DrawKernel.draw(
            UnsafeBufferPointer(start: c, count: kept), maximum: maximum, temperature: temperature,
            uniform: Philox4x32(seed: parameters.seed).uniform(step: step), weights: scratch.weights)
    }

    /// Plain sampling's draw: the chunks' sums alone (``OnlineSoftmax/draw(_:vocab:mask:sums:maxima:maximum:temperature:uniform:candidateCount:)``),
    /// or with edited tokens (their processed logits, outside the effective bitmask the sums
    /// were taken through) `Z` as the blocks' share plus the edits' exact weights: a target in
    /// the blocks' share draws there, one past it the edit where the cumulative weight passes
    /// it (the edits after the blocks, in their order).
    static func plainDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        let edits = scratch.state.pointee.editCount
        guard edits > 0 else {
            return OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: u,
                candidateCount: statistics.finiteCount)
        }
        let m = Double(statistics.maximum), t = Double(parameters.temperature)
        let blocks = OnlineSoftmax.normalizer(
            sums: scratch.drawSums, maxima: scratch.chunkMaxima, chunks: StatisticsKernel.chunkCount(length: vocab),
            maximum: statistics.maximum, temperature: parameters.temperature)
        var edited = 0.0
        for k in 0..<edits where scratch.edits[k].value > -.infinity {
            edited += exp((Double(scratch.edits[k].value) - m) / t)
        }
        let z = blocks + edited
        let target = u * z
        if target < blocks {
            var drawn = OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: target / blocks,
                candidateCount: statistics.finiteCount)
            // Its log-probability is relative to the blocks' share: to the row's.
            drawn.logProbability += log(blocks) - log(z)
            return drawn
        }
        var cumulative = blocks, chosen = -1
        for k in 0..<edits where scratch.edits[k].value > -.infinity {
            chosen = k
            cumulative += exp((Double(scratch.edits[k].value) - m) / t)
            if cumulative > target { break }
        }
        guard chosen >= 0 else {
            return OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: u,
                candidateCount: statistics.finiteCount)
        }
        let value = Double(scratch.edits[chosen].value)
        return SampledToken(
            token: Int(scratch.edits[chosen].token), logProbability: (value - m) / t - log(z),
            candidateCount: statistics.finiteCount)
    }

    /// A softmax route's row that its Float sums leave undecided (rare): every allowed logit
    /// gathered, and the survivor pipeline's truncation and draw in double precision, exactly as
    /// a row off the routes. Counted in ``exactRecomputations``.
    static func exactDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        exactRecomputations.add(1, ordering: .relaxed)
        let count = recollect(p, vocab: vocab, threshold: -.greatestFiniteMagnitude, scratch: scratch, mask: mask)
        return draw(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, count: count, scratch: scratch)
    }

    /// The draw of a row on the dynamic-temperature route (``SoftmaxRoute/dynamicTemperature``):
    /// the temperature from the row's entropy at temperature 1 (the pass's double sums of `e` and
    /// `e·y`) when both ends of the entropy's error bound round to the same Float temperature,
    /// the survivor pipeline's otherwise (``exactDraw``); then the row's blocks' sums at that temperature,
    /// chunk by chunk from cache, and the plain draw (greedy at temperature 0).
    static func dynamicTemperatureDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let estimate = rowMass(
            vocab: vocab, statistics: statistics, temperature: 1, scratch: scratch,
            errors: SoftmaxRoute.dynamicTemperature.momentErrors(vocab: vocab))
        let n = statistics.finiteCount
        let h = estimate.mass.entropy, dh = estimate.entropyError
        let temperature = ExtendedTruncation.dynamicTemperature(entropy: h - dh, count: n, parameters: parameters)
        guard temperature == ExtendedTruncation.dynamicTemperature(entropy: h + dh, count: n, parameters: parameters),
            temperature == 0 || OnlineSoftmax.supports(temperature: temperature)
        else {
            return exactDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        }
        // Greedy over the row: its first token in key order.
        if temperature == 0 { return SampledToken(token: statistics.argmax, logProbability: 0, candidateCount: 1) }
        for c in 0..<chunks {
            blockSums(p, vocab: vocab, chunk: c, mask: mask, temperature: temperature, scratch: scratch)
        }
        return OnlineSoftmax.draw(
            p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
            maximum: statistics.maximum, temperature: temperature,
            uniform: Philox4x32(seed: parameters.seed).uniform(step: step), candidateCount: n)
    }

    /// The draw of a row on typical-p's route (``SoftmaxRoute/typical``). The row's mass `Z` and
    /// center `ȳ = Σ e·y / Z` come from the pass's Float moments, or where those leave the set
    /// undecided from double ones (``WideExp``) taken again from cache, so the pivot `M + T·ȳ` is
    /// known within a bound `δ`. The kept set is a prefix in distance from the
    /// pivot: the smallest radius of eight whose Float mass holds `p·Z` with room to spare
    /// (``WideExp/intervalMasses(_:vocab:mask:maximum:temperature:pivot:radii:)``) bounds it, the
    /// tokens within it are gathered, and the weighted selection of the survivor pipeline runs
    /// over them. The float64 set is the one found when the gathered mass holds `p·Z`, the
    /// selection's crossing is clear of `Z`'s bound, and no token lies within `2δ` of the last
    /// kept one's distance with another logit (a pivot anywhere within its bound then orders
    /// them alike); otherwise the next try, and after the double one ``exactDraw``.
    static func typicalDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        // First from the pass's Float moments; where they leave the set undecided, from double
        // ones taken again from cache (``WideExp``); then the survivor pipeline.
        if let drawn = typicalAttempt(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch, mask: mask,
            errors: SoftmaxRoute.typical.momentErrors(vocab: vocab))
        {
            return drawn
        }
        let chunkLength = StatisticsKernel.chunkLength
        for c in 0..<chunks {
            let start = c * chunkLength
            let length = min(chunkLength, vocab - start)
            let moments = (scratch.candidates + start).withMemoryRebound(to: Float.self, capacity: length) {
                WideExp.chunkMass(
                    p + start, count: length, mask: mask.map { $0 + start / 32 }, maximum: scratch.chunkMaxima[c],
                    temperature: parameters.temperature, buffer: $0)
            }
            scratch.storeMoments(moments, chunk: c)
        }
        let double = WideExp.massError(vocab: vocab)
        return typicalAttempt(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch, mask: mask,
            errors: (double, double))
            ?? exactDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
    }

    /// One try of ``typicalDraw``: the chunks' moments in `scratch.chunkMoments` with relative
    /// error bounds `errors`; nil where they leave the kept set undecided.
    static func typicalAttempt<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?, errors: (z: Double, moments: Double)
    ) -> SampledToken? {
        let estimate = rowMass(
            vocab: vocab, statistics: statistics, temperature: parameters.temperature, scratch: scratch, errors: errors)
        let m = Double(statistics.maximum), t = Double(parameters.temperature)
        let z = estimate.mass.z
        guard z > 0 && z.isFinite else { return nil }
        let center = log(z) - estimate.mass.entropy
        let order = TypicalOrder(center: center, maximum: m, temperature: t)
        // The center is `log Z − H`: within the entropy's bound and `log Z`'s again.
        let delta = t * (2 * estimate.entropyError + 1e-12 * Swift.abs(center)) + 1e-12 * Swift.abs(order.pivot)
        let need = Double(parameters.typicalP ?? 1) * z
        let slack = need * 2 * errors.z + 1e-12 * z
        let scales: SIMD8<Float> = [0.25, 0.5, 1, 1.5, 2.25, 3.5, 6, 12]
        // The Float pass's radii a hair inside the double ones they stand for.
        // The candidates' region (gathered only below) holds a half-precision row's conversion.
        let masses = scratch.candidates.withMemoryRebound(to: Float.self, capacity: vocab) {
            WideExp.intervalMasses(
                p, vocab: vocab, mask: mask, maximum: statistics.maximum, temperature: parameters.temperature,
                pivot: Float(order.pivot), radii: scales * Float(t * (1 - 1e-5)), buffer: $0)
        }
        var level = 0
        while level < 8 && masses[level] < need * (1 + 1e-4) { level += 1 }
        guard level < 8 else { return nil }
        let radius = Double(scales[level]) * t + delta
        var count = recollect(
            p, vocab: vocab, threshold: floatThreshold(order.pivot - radius), scratch: scratch, mask: mask)
        let c = scratch.candidates, w = scratch.weights
        // Exactly the tokens within `radius` of the pivot: a prefix of the row in typical order.
        var within = 0
        for j in 0..<count where order.distance(c[j]) <= radius {
            c[within] = c[j]
            within &+= 1
        }
        count = within
        let gathered = SoftmaxWeights.compute(
            c, count: count, maximum: statistics.maximum, temperature: parameters.temperature, into: w)
        guard gathered >= need + slack else { return nil }
        let kept = Truncation.nucleus(c, w, count: count, need: need, order: order)
        var keptMass = 0.0, last = 0
        for j in 0..<kept {
            keptMass += w[j]
            if order.precedes(c[last], c[j]) { last = j }
        }
        guard kept > 0 && keptMass >= need + slack && keptMass - w[last] < need - slack else { return nil }
        let edge = order.distance(c[last])
        for j in 0..<count where j != last && c[j].logit != c[last].logit {
            if Swift.abs(order.distance(c[j]) - edge) <= 2 * delta { return nil }
        }
        Truncation.sortByIndex(c, count: kept)
        return DrawKernel.draw(
            UnsafeBufferPointer(start: c, count: kept), maximum: ExtendedTruncation.setMaximum(c, count: kept),
            temperature: parameters.temperature, uniform: Philox4x32(seed: parameters.seed).uniform(step: step),
            weights: w)
    }

    /// The draw of a row on the XTC route (``SoftmaxRoute/xtc``). When the coin applies XTC, its
    /// cut `p_i >= threshold`, `x_i >= M + T·log(threshold·Z)`, is placed within `Z`'s bound;
    /// the row is gathered at its lower end (a few tokens: at most about `1/threshold`), and a
    /// gathered logit inside the bound takes the float64 route (``exactDraw``). With two or more
    /// at or above the cut, all of them but the last in key order leave the row's effective
    /// bitmask (in the scratch), their chunks' sums are taken again without them, and the row is
    /// drawn as plain sampling is: the float64 distribution of the rest.
    static func xtcDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        func plain(_ mask: UnsafePointer<UInt32>?, removed: Int) -> SampledToken {
            OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: u,
                candidateCount: statistics.finiteCount - removed)
        }
        guard let threshold = parameters.xtcThreshold,
            Philox4x32(seed: parameters.seed).uniform(step: step, stream: SamplingParameters.xtcStream)
                < Double(parameters.xtcProbability)
        else { return plain(mask, removed: 0) }
        let z = OnlineSoftmax.normalizer(
            sums: scratch.drawSums, maxima: scratch.chunkMaxima, chunks: chunks, maximum: statistics.maximum,
            temperature: parameters.temperature)
        let m = Double(statistics.maximum), t = Double(parameters.temperature)
        let zError = OnlineSoftmax.sumError + 1e-12
        let low = m + t * log(Double(threshold) * z * (1 - zError)),
            high = m + t * log(Double(threshold) * z * (1 + zError))
        let lowCut = low - (1e-9 + 1e-12 * Swift.abs(low)), highCut = high + (1e-9 + 1e-12 * Swift.abs(high))
        // No token can reach the cut: XTC removes nothing.
        guard lowCut <= m else { return plain(mask, removed: 0) }
        let count = recollect(p, vocab: vocab, threshold: floatThreshold(lowCut), scratch: scratch, mask: mask)
        let c = scratch.candidates
        var last = -1
        for j in 0..<count {
            let x = Double(c[j].logit)
            if x <= highCut {
                return exactDraw(
                    p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                    mask: mask)
            }
            if last < 0 || Truncation.precedes(c[last], c[j]) { last = j }
        }
        guard count >= 2 else { return plain(mask, removed: 0) }
        // Every gathered token but the last leaves the effective bitmask.
        let words = (vocab + 31) / 32
        if mask == nil { scratch.mask.update(repeating: ~0, count: words) }
        var previousChunk = -1
        let chunkLength = StatisticsKernel.chunkLength
        for j in 0..<count where j != last {
            let i = Int(c[j].index)
            scratch.mask[i / 32] &= ~(1 << UInt32(i % 32))
        }
        // The chunks that lost a token (the gathered ones are in id order): their sums again.
        for j in 0..<count where j != last {
            let chunk = Int(c[j].index) / chunkLength
            guard chunk != previousChunk else { continue }
            previousChunk = chunk
            blockSums(
                p, vocab: vocab, chunk: chunk, mask: UnsafePointer(scratch.mask), temperature: parameters.temperature,
                scratch: scratch)
        }
        return plain(UnsafePointer(scratch.mask), removed: count - 1)
    }

    /// Chunk `c`'s block sums `Σ exp((x − m_c)/T)` at `temperature` (``OnlineSoftmax``) into
    /// `scratch.drawSums`, relative to `scratch.chunkMaxima[c]`, over the logits `mask` allows
    /// (the row's bitmask, or nil for all): in the pass, or again from cache when the
    /// temperature or the mask changed (the dynamic temperature, XTC).
    static func blockSums<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunk c: Int, mask: UnsafePointer<UInt32>?, temperature: Float,
        scratch: Scratch, ahead: LogprobKernel.Prefetch = LogprobKernel.Prefetch()
    ) {
        let start = c * StatisticsKernel.chunkLength
        var bound = Float.infinity, found = 0
        // keep 0: nothing is written to the top list.
        _ = LogprobKernel.chunk(
            p + start, count: min(StatisticsKernel.chunkLength, vocab - start), mask: mask.map { $0 + start / 32 },
            maximum: scratch.chunkMaxima[c], indexBase: start, keep: 0, bound: &bound, into: scratch.topTokens,
            found: &found, ahead: ahead, temperature: temperature,
            blockSums: scratch.drawSums + c * StatisticsKernel.blocksPerChunk)
    }

    /// The row's ``ExtendedTruncation/RowMass`` at `temperature` from the chunks' moments in
    /// `scratch` (``Scratch/storeMoments(_:chunk:)``), with their relative error bounds `errors`,
    /// and the bound on its entropy (``OnlineSoftmax/rowMass(moments:maxima:chunks:maximum:temperature:zError:momentError:)``).
    static func rowMass(
        vocab: Int, statistics: RowStatistics, temperature: Float, scratch: Scratch,
        errors: (z: Double, moments: Double)
    ) -> (mass: ExtendedTruncation.RowMass, entropyError: Double) {
        OnlineSoftmax.rowMass(
            moments: scratch.chunkMoments, maxima: scratch.chunkMaxima,
            chunks: StatisticsKernel.chunkCount(length: vocab), maximum: statistics.maximum,
            temperature: temperature, zError: errors.z, momentError: errors.moments)
    }

    /// Compacts every chunk of the row again at `threshold` and gathers the survivors in id
    /// order (the slots were consumed by an earlier gather); returns their count.
    static func recollect<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, threshold: Float, scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> Int {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        for c in 0..<chunks { scratch.thresholds[c] = .infinity }
        finalize(p, vocab: vocab, chunks: 0, chunks, threshold: threshold, scratch: scratch, mask: mask)
        return gather(chunks: chunks, scratch: scratch)
    }

    /// The truncation (``truncate``) of the gathered survivors, then the draw.
    static func draw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        count: Int, scratch: Scratch
    ) -> SampledToken {
        let (kept, temperature, maximum) = truncate(
            p, vocab: vocab, statistics: statistics, parameters: parameters, count: count, scratch: scratch,
            step: step)
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        return DrawKernel.draw(
            UnsafeBufferPointer(start: scratch.candidates, count: kept), maximum: maximum, temperature: temperature,
            uniform: u, weights: scratch.weights)
    }

    /// The row's logprobs at temperature 1 before truncation: `log Z` from the chunks' exp-sums
    /// (each rescaled from its chunk max to the row's) and the edited tokens; the top tokens from
    /// the chunks' top lists and the edited tokens; the sampled token's rank from the survivors
    /// (`survivors` of them in `scratch.candidates`, permuted by truncation but all there), which
    /// hold every token at or above any kept one.
    static func rowLogprobs(
        statistics: RowStatistics, sampled: Float, survivors: Int, vocab: Int, state: ProcessingState, scratch: Scratch
    ) -> TopLogprobs {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let maximum = Double(statistics.maximum)
        var z = 0.0
        for c in 0..<chunks where scratch.chunkMaxima[c] > -.infinity {
            z += scratch.expSums[c] * exp(Double(scratch.chunkMaxima[c]) - maximum)
        }
        for k in 0..<state.editCount where scratch.edits[k].value > -.infinity {
            z += exp(Double(scratch.edits[k].value) - maximum)
        }
        let logZ = log(z)
        var result = TopLogprobs()
        result.sampledLogprob = Double(sampled) - maximum - logZ
        var rank = 0
        for j in 0..<survivors where scratch.candidates[j].logit >= sampled { rank += 1 }
        result.sampledRank = max(rank, 1)
        let keep = min(state.topLogprobs, vocab)
        guard keep > 0 else { return result }
        // The best `keep` in key order, in the candidates region's tail (free after the draw,
        // which used only the survivors at its front).
        let best = scratch.candidates + (vocab - keep)
        var found = 0
        for c in 0..<chunks {
            for j in 0..<scratch.topCounts[c] {
                LogprobKernel.insert(
                    scratch.topTokens[c * TopLogprobs.maximumCount + j], into: best, found: &found, keep: keep)
            }
        }
        for k in 0..<state.editCount where scratch.edits[k].value > -.infinity {
            LogprobKernel.insert(
                Candidate(index: scratch.edits[k].token, logit: scratch.edits[k].value), into: best, found: &found,
                keep: keep)
        }
        for j in 0..<found { result.append(token: best[j].index, logprob: Double(best[j].logit) - maximum - logZ) }
        return result
    }
}
