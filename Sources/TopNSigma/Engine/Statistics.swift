/// The statistics of whole rows, for callers that want them without sampling (the CLI's
/// `stats`, the tests' oracle checks).
extension RowStatistics {
    /// The statistics of one row in one fused pass.
    ///
    /// ```swift
    /// let statistics = try RowStatistics.of([1, 2, 3, 4, 5])
    /// statistics.maximum             // 5.0, at argmax 4
    /// statistics.standardDeviation   // 1.58…
    /// ```
    ///
    /// - Parameter row: the logits; any length, any alignment.
    /// - Throws: ``RowError/notANumber(index:)`` or ``RowError/positiveInfinity(index:)`` for the
    ///   first offending logit. A row whose logits are all `-inf` (or an empty row) gives
    ///   `finiteCount == 0`.
    /// - Complexity: one pass over the row; O(1) extra memory.
    public static func of(_ row: UnsafeBufferPointer<Float>) throws(RowError) -> RowStatistics {
        guard let base = row.baseAddress, row.count > 0 else {
            return RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0)
        }
        return try RowPipeline.rowStatistics(base, count: row.count).get()
    }

    /// Array convenience for ``of(_:)-(UnsafeBufferPointer<Float>)``.
    public static func of(_ row: [Float]) throws(RowError) -> RowStatistics {
        let result = row.withUnsafeBufferPointer { buffer in
            Result { () throws(RowError) -> RowStatistics in try of(buffer) }
        }
        return try result.get()
    }

    /// One chunk's moments as the fused pass computes them from Float lane sums (at most
    /// 4096 logits; through `mask` when given, its first bit `chunk[0]`'s), with the bounds on
    /// their rounding error that decide when a row's threshold is recomputed in double
    /// precision; nil for a chunk with a NaN or `+inf`. For tests that hold the bounds against
    /// exact moments.
    package static func chunkMoments(
        _ chunk: UnsafeBufferPointer<Float>, mask: UnsafePointer<UInt32>? = nil
    ) -> (count: Int, mean: Double, m2: Double, meanError: Double, m2Error: Double)? {
        guard let base = chunk.baseAddress, chunk.count <= StatisticsKernel.chunkLength else { return nil }
        let partial = StatisticsKernel.chunkPartial(base, count: chunk.count, mask: mask)
        guard partial.invalidIndex < 0 else { return nil }
        return (partial.count, partial.mean, partial.m2, partial.meanError, partial.m2Error)
    }

    /// Fills the statistics of every row of a `[rows, vocab]` block (`rowStride` elements between
    /// row starts, default `vocab`); a failing row gets its error, the others are unaffected.
    package static func of(
        logits: UnsafePointer<Float>, rows: Int, vocab: Int, rowStride: Int? = nil,
        into results: UnsafeMutableBufferPointer<Result<RowStatistics, RowError>>
    ) {
        let stride = rowStride ?? vocab
        precondition(rows >= 0 && vocab >= 0, "rows and vocab must be non-negative")
        precondition(stride >= vocab, "rowStride (\(stride)) must be at least vocab (\(vocab))")
        precondition(results.count >= rows, "results holds \(results.count) slots for \(rows) rows")
        for r in 0..<rows {
            results[r] =
                vocab == 0
                ? .success(
                    RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0))
                : RowPipeline.rowStatistics(logits + r * stride, count: vocab)
        }
    }
}
