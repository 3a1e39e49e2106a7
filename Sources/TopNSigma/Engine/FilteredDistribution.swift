#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The distribution one row is sampled from: what the Top-nσ filter keeps (Tang et al., "Top-nσ:
/// Not All Logits Are You Need", arXiv 2411.07641), with the other filters and the temperature
/// applied. The single-row API; ``BatchSampler`` samples batches with the same pipeline.
///
/// For a row `x` with finite logits `F` (a `-inf` logit is a masked token):
///
///     threshold = max(F) - n · std(F)          (std Bessel-corrected: M2 / (|F| - 1))
///     kept      = { i : x_i >= threshold }      (`-inf` is never kept)
///
/// The comparison is `>=`, so the argmax is always kept and a row with std 0 keeps every token
/// equal to the maximum: its threshold is the maximum whatever `n` (`n = +inf` included, where
/// IEEE would give `∞·0 = NaN`). `n = 0` keeps only the max-tied tokens. The threshold is computed in
/// double precision and compared exactly: a Float logit `x` is kept iff `Double(x) >= threshold`.
/// The kept set does not depend on the temperature.
public struct FilteredDistribution: Sendable, Equatable {
    /// One kept token.
    public struct KeptToken: Sendable, Equatable, Hashable {
        /// The token id.
        public var token: TokenID
        /// Its (processed) logit.
        public var logit: Float
        /// Its probability in the renormalized distribution over the kept set.
        public var probability: Double

        /// A kept token.
        @inlinable
        package init(token: TokenID, logit: Float, probability: Double) {
            self.token = token
            self.logit = logit
            self.probability = probability
        }
    }

    /// The largest row length the single-row API filters: ``Vocabulary/maximumSize``, as every
    /// other interface. A longer row fails with ``RowError/vocabularyTooLarge(_:)``.
    @available(*, deprecated, renamed: "Vocabulary.maximumSize")
    public static var maximumVocabularySize: Int { Vocabulary.maximumSize }

    /// The row's statistics.
    public var statistics: RowStatistics
    /// The combined Top-nσ / min-p logit threshold in double precision (`-inf` when both are off);
    /// top-k and top-p then cut the survivors further.
    public var threshold: Double
    /// The kept tokens with their renormalized probabilities, most probable first (ties: lower
    /// id first). Greedy (`T = 0`) keeps the argmax with probability 1.
    public var kept: [KeptToken]

    /// The filtered distribution of one row under `parameters` (the same pipeline and combination
    /// rule as ``BatchSampler``; see ``SamplingParameters``).
    ///
    /// ```swift
    /// let top2 = SamplingParameters(temperature: 1, nSigma: nil, topK: 2)
    /// let distribution = try FilteredDistribution.of([1, 2, 3, 4, 5], parameters: top2)
    /// distribution.kept.map(\.token)         // [4, 3]
    /// distribution.kept.map(\.probability)   // [0.731…, 0.268…]
    ///
    /// let topNSigma = try FilteredDistribution.of([1, 2, 3, 4, 5], parameters: SamplingParameters(nSigma: 1))
    /// topNSigma.threshold                    // 5 - 1 · 1.58… = 3.41…
    /// topNSigma.kept.map(\.token)            // [4, 3]
    /// ```
    ///
    /// With `processing`, the statistics, threshold and kept set are those of the processed row
    /// (bitmask, bias, penalties; see ``RequestProcessing``; its `topLogprobs` is validated, not computed).
    ///
    /// - Throws: the row's ``RowError`` (``RowError/vocabularyTooLarge(_:)`` for a row longer than
    ///   ``Vocabulary/maximumSize``, checked before any logit is read).
    /// - Complexity: one pass over the row plus O(survivors); allocates its scratch and result.
    public static func of(
        _ row: UnsafeBufferPointer<Float>, parameters: SamplingParameters, processing: RequestProcessing? = nil
    ) throws(RowError) -> FilteredDistribution {
        if let error = parameters.validationError { throw error }
        guard let base = row.baseAddress, row.count > 0 else { throw .noFiniteLogit }
        guard row.count <= Vocabulary.maximumSize else { throw .vocabularyTooLarge(row.count) }
        let vocab = row.count
        let result: Result<FilteredDistribution, RowError>? = withScratch(vocab: vocab) {
            scratch in
            switch keep(base, vocab: vocab, parameters: parameters, processing: processing, scratch: scratch) {
            case .failure(let error): return .failure(error)
            case .success(let (statistics, threshold, count)):
                let candidates = scratch.candidates, probabilities = scratch.weights
                let kept = (0..<count).map { i in
                    KeptToken(
                        token: candidates[i].index, logit: candidates[i].logit, probability: probabilities[i])
                }
                return .success(FilteredDistribution(statistics: statistics, threshold: threshold, kept: kept))
            }
        }
        guard let result else { throw .vocabularyTooLarge(row.count) }
        return try result.get()
    }

    /// The kept set of the row at `row` (`vocab` logits) in `scratch`: the one body of
    /// ``of(_:parameters:processing:)-(UnsafeBufferPointer<Float>,_,_)`` and of the C ABI's
    /// `tns_filtered_distribution`. On success `scratch.candidates[0..<count]` hold the kept
    /// tokens most probable first (ties: lower id) and `scratch.weights[0..<count]` their
    /// probabilities: `exp((x − max)/T)` over their total (`T` the dynamic temperature when set),
    /// summed in the order the truncation leaves them; greedy keeps the argmax with probability
    /// 1. XTC's coin is taken at step 0.
    package static func keep(
        _ row: UnsafePointer<Float>, vocab: Int, parameters: SamplingParameters, processing: RequestProcessing?,
        scratch: Scratch
    ) -> Result<(statistics: RowStatistics, threshold: Double, count: Int), RowError> {
        let candidates = scratch.candidates, weights = scratch.weights
        let statistics: RowStatistics, gathered: Int?
        switch RowPipeline.survivors(
            row, vocab: vocab, parameters: parameters, processing: processing, scratch: scratch)
        {
        case .failure(let error): return .failure(error)
        case .success(let result): (statistics, gathered) = result
        }
        let threshold = RowPipeline.logitThreshold(statistics, parameters)
        guard let gathered else {
            candidates[0] = Candidate(index: Int32(statistics.argmax), logit: statistics.maximum)
            weights[0] = 1
            return .success((statistics, threshold, 1))
        }
        let (count, temperature, maximum) = RowPipeline.truncate(
            row, vocab: vocab, statistics: statistics, parameters: parameters, count: gathered, scratch: scratch,
            step: 0)
        let total = SoftmaxWeights.compute(
            candidates, count: count, maximum: maximum, temperature: temperature, into: weights)
        for i in 0..<count { weights[i] /= total }
        Truncation.sortByKey(candidates, weights, 0, count)
        return .success((statistics, threshold, count))
    }

    /// Array convenience for ``of(_:parameters:processing:)-(UnsafeBufferPointer<Float>,_,_)``.
    public static func of(
        _ row: [Float], parameters: SamplingParameters, processing: RequestProcessing? = nil
    ) throws(RowError) -> FilteredDistribution {
        let result = row.withUnsafeBufferPointer { buffer in
            Result { () throws(RowError) -> FilteredDistribution in
                try of(buffer, parameters: parameters, processing: processing)
            }
        }
        return try result.get()
    }
}

// MARK: - The single-row entry points of the C ABI

extension FilteredDistribution {
    /// One row's scratch, as the sampler keeps one per thread.
    package typealias Scratch = RowPipeline.Scratch

    /// Runs `body` with a scratch region for one row of `vocab` logits, allocated for the call:
    /// for the single-row calls without a sampler (``of(_:parameters:processing:)-(UnsafeBufferPointer<Float>,_,_)``,
    /// the C ABI's `tns_filter` and `tns_filtered_distribution`). Nil when the row is too large
    /// to have one, or its memory cannot be had (`posix_memalign`, which fails, not a trap).
    package static func withScratch<R>(vocab: Int, _ body: (Scratch) -> R) -> R? {
        guard let layout = Scratch.Layout(vocab: vocab),
            let block = NodeMemory.allocateFromHeap(byteCount: layout.byteCount)
        else { return nil }
        defer { NodeMemory.free(block) }
        return body(layout.bind(block.pointer))
    }

    /// The threshold filters' survivors of the row at `row` (`vocab` logits) in `scratch`,
    /// before any truncation: on success `scratch.candidates[0..<count]` in ascending id order,
    /// and the row's statistics and combined threshold. The body of the C ABI's `tns_filter`.
    /// A greedy row (`T = 0`) keeps its argmax.
    package static func survivors(
        _ row: UnsafePointer<Float>, vocab: Int, parameters: SamplingParameters, scratch: Scratch
    ) -> Result<(statistics: RowStatistics, threshold: Double, count: Int), RowError> {
        switch RowPipeline.survivors(row, vocab: vocab, parameters: parameters, scratch: scratch) {
        case .failure(let error): return .failure(error)
        case .success(let (statistics, gathered)):
            let threshold = RowPipeline.logitThreshold(statistics, parameters)
            guard let gathered else {
                scratch.candidates[0] = Candidate(index: Int32(statistics.argmax), logit: statistics.maximum)
                return .success((statistics, threshold, 1))
            }
            return .success((statistics, threshold, gathered))
        }
    }
}
