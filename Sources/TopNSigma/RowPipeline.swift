#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The per-row pipeline shared by whole-row and split-row scheduling.
///
/// Each chunk of ``StatisticsKernel/chunkLength`` logits is reduced and, while it is still in L1,
/// compacted against a *provisional* threshold `max' - 1.5·n·std'` built from the chunks reduced so
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
enum RowPipeline {
    typealias ChunkPartial = StatisticsKernel.ChunkPartial

    /// Per-row scratch: one provisional threshold and one survivor count per chunk, the row's
    /// candidate region (`vocab` slots), and for split rows the merged statistics and the final
    /// threshold (NaN when the row needs no draw).
    struct Scratch {
        var thresholds: UnsafeMutablePointer<Float>
        var counts: UnsafeMutablePointer<Int>
        var candidates: UnsafeMutablePointer<Candidate>
        var rowStatistics: UnsafeMutablePointer<RowStatistics>
        var rowThreshold: UnsafeMutablePointer<Float>
        /// Top-p's weights, one per candidate slot.
        var weights: UnsafeMutablePointer<Double>
    }

    /// Margin on the provisional threshold: the prefix std may be a little below the row's.
    static let provisionalMargin = 1.5

    /// The provisional compare threshold from the statistics of a prefix of the row: Top-nσ's
    /// `max' - 1.5·n·std'` and min-p's `max' + T·ln(minP)`, the larger of the two. Both are at
    /// or below their final values (`max' <= max`), so the survivors collected are a superset.
    @inline(__always)
    static func provisionalThreshold(_ accumulator: StatisticsKernel.RowAccumulator, _ parameters: SamplingParameters) -> Float {
        guard accumulator.count > 0 else { return -Float.greatestFiniteMagnitude }
        var threshold = -Double.infinity
        if let n = parameters.nSigma {
            let variance = accumulator.count > 1 ? accumulator.m2 / Double(accumulator.count - 1) : 0
            threshold = Double(accumulator.maximum) - provisionalMargin * Double(n) * variance.squareRoot()
        }
        if let minP = parameters.minP {
            threshold = max(threshold, Double(accumulator.maximum) + Double(parameters.temperature) * log(Double(minP)))
        }
        return TopNSigma.floatThreshold(threshold)
    }

    /// Reduces chunks `first..<end` of the row at `p`, merging them in order into an accumulator;
    /// when `collect`, compacts each chunk against the provisional threshold of the chunks merged so
    /// far (this one included) into `scratch`. When `partials` is given, each chunk's partial is
    /// also stored there (indexed by chunk). Stops at the first invalid logit.
    static func reduce<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunks first: Int, _ end: Int, collect: Bool, parameters: SamplingParameters,
        scratch: Scratch?, partials: UnsafeMutablePointer<ChunkPartial>?
    ) -> StatisticsKernel.RowAccumulator {
        let chunkLength = StatisticsKernel.chunkLength
        var accumulator = StatisticsKernel.RowAccumulator()
        for c in first..<end {
            let start = c * chunkLength
            let length = min(chunkLength, vocab - start)
            if c + 1 < end { StatisticsKernel.touch(p + start + length, count: min(chunkLength, vocab - start - length)) }
            let part = StatisticsKernel.chunkPartial(p + start, count: length)
            partials?[c] = part
            accumulator.merge(part, chunk: c, start: start)
            if accumulator.error != nil { break }
            if collect, let scratch {
                let threshold = provisionalThreshold(accumulator, parameters)
                scratch.thresholds[c] = threshold
                // Most chunks hold no survivor at all: their maximum says so without a compare pass.
                scratch.counts[c] = part.maximum >= threshold
                    ? CandidateKernel.compact(p + start, count: length, threshold: threshold, indexBase: start, into: scratch.candidates + start)
                    : 0
            }
        }
        return accumulator
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

    /// The Float compare threshold of a row, or nil when the row is greedy: the larger of
    /// Top-nσ's `max - n·std` and min-p's `max + T·ln(minP)` (intersection of both filters), or
    /// every finite logit when both are off.
    @inline(__always)
    static func compareThreshold(_ statistics: RowStatistics, _ parameters: SamplingParameters) -> Float? {
        if parameters.temperature == 0 { return nil }
        return TopNSigma.floatThreshold(logitThreshold(statistics, parameters))
    }

    /// The combined Top-nσ / min-p threshold in double precision (`-inf` when both are off).
    static func logitThreshold(_ statistics: RowStatistics, _ parameters: SamplingParameters) -> Double {
        var threshold = -Double.infinity
        if let n = parameters.nSigma { threshold = TopNSigma.threshold(for: statistics, n: Double(n)) }
        if let minP = parameters.minP {
            threshold = max(threshold, Double(statistics.maximum) + Double(parameters.temperature) * log(Double(minP)))
        }
        return threshold
    }

    /// The threshold survivors of one row on the calling thread: its statistics, and the number
    /// of survivors gathered at the front of `scratch.candidates` in id order (nil for a greedy
    /// row, which needs none); top-k and top-p are not applied yet.
    static func survivors<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, scratch: Scratch
    ) -> Result<(statistics: RowStatistics, count: Int?), RowError> {
        if let error = parameters.validationError { return .failure(error) }
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let accumulator = reduce(
            p, vocab: vocab, chunks: 0, chunks, collect: parameters.temperature != 0, parameters: parameters,
            scratch: scratch, partials: nil)
        switch accumulator.finish(row: p, count: vocab) {
        case .failure(let error):
            return .failure(error)
        case .success(let statistics):
            guard statistics.finiteCount > 0 else { return .failure(.noFiniteLogit) }
            guard let threshold = compareThreshold(statistics, parameters) else { return .success((statistics, nil)) }
            finalize(p, vocab: vocab, chunks: 0, chunks, threshold: threshold, scratch: scratch)
            return .success((statistics, gather(chunks: chunks, scratch: scratch)))
        }
    }

    /// Runs `body` with a scratch region for one row of `vocab` logits, allocated for the call:
    /// for the single-row convenience APIs (the sampler keeps its own).
    static func withTemporaryScratch<R>(vocab: Int, _ body: (Scratch) -> R) -> R {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let candidates = UnsafeMutablePointer<Candidate>.allocate(capacity: vocab)
        let weights = UnsafeMutablePointer<Double>.allocate(capacity: vocab)
        let thresholds = UnsafeMutablePointer<Float>.allocate(capacity: chunks)
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: chunks)
        let rowStatistics = UnsafeMutablePointer<RowStatistics>.allocate(capacity: 1)
        let rowThreshold = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        defer {
            candidates.deallocate()
            weights.deallocate()
            thresholds.deallocate()
            counts.deallocate()
            rowStatistics.deallocate()
            rowThreshold.deallocate()
        }
        return body(Scratch(
            thresholds: thresholds, counts: counts, candidates: candidates, rowStatistics: rowStatistics,
            rowThreshold: rowThreshold, weights: weights))
    }

    /// One row start to finish on the calling thread.
    static func sampleRow<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, step: UInt64, scratch: Scratch
    ) -> SampleResult {
        switch survivors(p, vocab: vocab, parameters: parameters, scratch: scratch) {
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
