#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The distribution a row is sampled from, for speculative decoding and RL log-probabilities.
public struct FilteredDistribution: Sendable, Equatable {
    /// The row's statistics.
    public var statistics: RowStatistics
    /// The combined Top-nσ / min-p logit threshold in double precision (`-inf` when both are off);
    /// top-k and top-p then cut the survivors further.
    public var threshold: Double
    /// The kept tokens with their renormalized probabilities, most probable first (ties: lower
    /// id first). Greedy (`T = 0`) keeps the argmax with probability 1.
    public var kept: [(token: Int, probability: Double)]

    /// Two distributions are equal when their statistics, thresholds and kept lists (tokens and
    /// probabilities, in order) are.
    public static func == (a: FilteredDistribution, b: FilteredDistribution) -> Bool {
        a.statistics == b.statistics && a.threshold == b.threshold
            && a.kept.map(\.token) == b.kept.map(\.token) && a.kept.map(\.probability) == b.kept.map(\.probability)
    }

    /// The filtered distribution of one row under `parameters` (the same pipeline and combination
    /// rule as ``BatchSampler``; see ``SamplingParameters``).
    ///
    /// ```swift
    /// let top2 = SamplingParameters(temperature: 1, nSigma: nil, topK: 2)
    /// let distribution = try FilteredDistribution.of([1, 2, 3, 4, 5], parameters: top2).get()
    /// distribution.kept   // [(token: 4, probability: 0.731…), (token: 3, probability: 0.268…)]
    /// ```
    ///
    /// With `processing`, the statistics, threshold and kept set are those of the processed row
    /// (bitmask, bias, penalties; see ``RequestProcessing``; its `topLogprobs` is validated, not computed).
    ///
    /// - Returns: the distribution, or the row's error (``RowError/vocabularyTooLarge(_:)`` for a
    ///   row longer than ``TopNSigma/maximumVocabularySize``, checked before any logit is read).
    /// - Complexity: one pass over the row plus O(survivors); allocates its scratch and result.
    public static func of(
        _ row: UnsafeBufferPointer<Float>, parameters: SamplingParameters, processing: RequestProcessing? = nil
    ) -> Result<FilteredDistribution, RowError> {
        if let error = parameters.validationError { return .failure(error) }
        guard let base = row.baseAddress, row.count > 0 else { return .failure(.noFiniteLogit) }
        guard row.count <= TopNSigma.maximumVocabularySize else { return .failure(.vocabularyTooLarge(row.count)) }
        let vocab = row.count
        return RowPipeline.withTemporaryScratch(vocab: vocab) { scratch in
            let candidates = scratch.candidates, weights = scratch.weights
            let statistics: RowStatistics, gathered: Int?
            switch RowPipeline.survivors(base, vocab: vocab, parameters: parameters, processing: processing, scratch: scratch) {
            case .failure(let error): return .failure(error)
            case .success(let result): (statistics, gathered) = result
            }
            let threshold = RowPipeline.logitThreshold(statistics, parameters)
            guard let gathered else {
                return .success(FilteredDistribution(statistics: statistics, threshold: threshold, kept: [(statistics.argmax, 1)]))
            }
            let count = Truncation.apply(candidates, count: gathered, weights: weights, maximum: statistics.maximum, parameters: parameters)
            let m = Double(statistics.maximum), t = Double(parameters.temperature)
            var total = 0.0
            for i in 0..<count { total += exp((Double(candidates[i].logit) - m) / t) }
            var kept = (0..<count).map { i in (token: Int(candidates[i].index), logit: candidates[i].logit) }
            kept.sort { $0.logit > $1.logit || ($0.logit == $1.logit && $0.token < $1.token) }
            return .success(FilteredDistribution(
                statistics: statistics, threshold: threshold,
                kept: kept.map { ($0.token, exp((Double($0.logit) - m) / t) / total) }))
        } ?? .failure(.vocabularyTooLarge(row.count))
    }

    /// Array convenience for ``of(_:parameters:processing:)-(UnsafeBufferPointer<Float>,_,_)``.
    public static func of(_ row: [Float], parameters: SamplingParameters, processing: RequestProcessing? = nil) -> Result<FilteredDistribution, RowError> {
        row.withUnsafeBufferPointer { of($0, parameters: parameters, processing: processing) }
    }
}
