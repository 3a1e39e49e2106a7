/// The Top-nσ filter (Tang et al., "Top-nσ: Not All Logits Are You Need", arXiv 2411.07641).
///
/// For a row `x` with finite logits `F` (a `-inf` logit is a masked token):
///
///     threshold = max(F) - n · std(F)          (std Bessel-corrected: M2 / (|F| - 1))
///     kept      = { i : x_i >= threshold }      (`-inf` is never kept)
///
/// The comparison is `>=`, so the argmax is always kept and a row with std 0 keeps every token
/// equal to the maximum. `n = 0` keeps only the max-tied tokens. The threshold is computed in
/// double precision and compared exactly: a Float logit `x` is kept iff `Double(x) >= threshold`.
/// The kept set does not depend on the temperature.
public enum TopNSigma {
    /// The largest row length the library samples or filters: `2^31 - 1`, so that every token id
    /// fits the `Int32` of a ``Candidate``. A longer row fails with ``RowError/vocabularyTooLarge(_:)``.
    public static let maximumVocabularySize = Int(Int32.max)

    /// The statistics of one row in one fused pass.
    ///
    /// - Parameter row: the logits; any length, any alignment.
    /// - Returns: the statistics, or the row's error: ``RowError/notANumber(index:)`` or
    ///   ``RowError/positiveInfinity(index:)`` for the first offending logit. A row whose logits
    ///   are all `-inf` succeeds with `finiteCount == 0`.
    /// - Complexity: one pass over the row; O(1) extra memory.
    public static func rowStatistics(_ row: UnsafeBufferPointer<Float>) -> Result<RowStatistics, RowError> {
        guard let base = row.baseAddress, row.count > 0 else {
            return .success(RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0))
        }
        return StatisticsKernel.rowStatistics(base, count: row.count)
    }

    /// Array convenience for ``rowStatistics(_:)-(UnsafeBufferPointer<Float>)``.
    public static func rowStatistics(_ row: [Float]) -> Result<RowStatistics, RowError> {
        row.withUnsafeBufferPointer { rowStatistics($0) }
    }

    /// Fills the statistics of every row of a `[rows, vocab]` block.
    ///
    /// - Parameters:
    ///   - logits: the first logit of row 0.
    ///   - rows: number of rows.
    ///   - vocab: logits per row.
    ///   - rowStride: distance in elements between row starts (`>= vocab`; default `vocab`).
    ///   - results: `rows` slots, filled in row order. A failing row gets its error; the others
    ///     are unaffected.
    /// - Precondition: `results.count >= rows`, `rowStride >= vocab`.
    package static func rowStatistics(
        logits: UnsafePointer<Float>, rows: Int, vocab: Int, rowStride: Int? = nil,
        into results: UnsafeMutableBufferPointer<Result<RowStatistics, RowError>>
    ) {
        let stride = rowStride ?? vocab
        precondition(rows >= 0 && vocab >= 0, "rows and vocab must be non-negative")
        precondition(stride >= vocab, "rowStride (\(stride)) must be at least vocab (\(vocab))")
        precondition(results.count >= rows, "results holds \(results.count) slots for \(rows) rows")
        for r in 0..<rows {
            results[r] = vocab == 0
                ? .success(RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0))
                : StatisticsKernel.rowStatistics(logits + r * stride, count: vocab)
        }
    }

    /// The tokens Top-nσ keeps, ascending by token id, with their statistics.
    ///
    /// ```swift
    /// let filtered = try TopNSigma.filter([1, 2, 3, 4, 5], n: 1).get()
    /// filtered.threshold          // 5 - 1 · 1.58… = 3.41…
    /// filtered.kept.map(\.index)  // [3, 4]
    /// ```
    ///
    /// - Parameters:
    ///   - row: the logits.
    ///   - n: standard deviations below the maximum; `n >= 0`, or `nil` to keep every finite logit.
    /// - Returns: the statistics, the double-precision threshold and the kept tokens; or the row's
    ///   error (invalid logits, ``RowError/noFiniteLogit``, ``RowError/invalidNSigma(_:)``,
    ///   ``RowError/vocabularyTooLarge(_:)`` for more than ``maximumVocabularySize`` logits,
    ///   checked before any logit is read).
    /// - Complexity: one pass over the row (the sampler's pipeline) plus O(survivors).
    public static func filter(_ row: UnsafeBufferPointer<Float>, n: Float?) -> Result<FilteredRow, RowError> {
        let parameters = SamplingParameters(temperature: 1, nSigma: n)
        if let error = parameters.validationError { return .failure(error) }
        guard let base = row.baseAddress, row.count > 0 else { return .failure(.noFiniteLogit) }
        guard row.count <= maximumVocabularySize else { return .failure(.vocabularyTooLarge(row.count)) }
        return RowPipeline.withTemporaryScratch(vocab: row.count) { scratch in
            switch RowPipeline.survivors(base, vocab: row.count, parameters: parameters, scratch: scratch) {
            case .failure(let error):
                return .failure(error)
            case .success(let (statistics, count)):
                // T = 1 is never greedy, so the survivors were gathered.
                let kept = Array(UnsafeBufferPointer(start: scratch.candidates, count: count ?? 0))
                return .success(FilteredRow(
                    statistics: statistics, threshold: RowPipeline.logitThreshold(statistics, parameters), kept: kept))
            }
        } ?? .failure(.vocabularyTooLarge(row.count))
    }

    /// Array convenience for ``filter(_:n:)-(UnsafeBufferPointer<Float>,_)``.
    public static func filter(_ row: [Float], n: Float?) -> Result<FilteredRow, RowError> {
        row.withUnsafeBufferPointer { filter($0, n: n) }
    }
}

/// What ``TopNSigma/filter(_:n:)-(UnsafeBufferPointer<Float>,_)`` returns for one row.
public struct FilteredRow: Sendable, Equatable {
    /// The row's statistics.
    public var statistics: RowStatistics
    /// `max - n·std` in double precision (`-inf` when the filter is off).
    public var threshold: Double
    /// The kept tokens, ascending by id.
    public var kept: [Candidate]
}
