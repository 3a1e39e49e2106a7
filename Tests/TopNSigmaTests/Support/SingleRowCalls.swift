import TopNSigma

/// Top-nσ alone through the library's single-row API (`FilteredDistribution.of` at temperature 1
/// with only `nSigma` set), with the kept tokens in id order: what many suites check against
/// their oracles.
struct TopNSigmaFiltered {
    struct Kept: Equatable {
        var index: Int32
        var logit: Float
    }

    var statistics: RowStatistics
    var threshold: Double
    /// Ascending by token id.
    var kept: [Kept]
}

/// ``TopNSigmaFiltered`` for `row`, or the row's error.
func filterTopNSigma(_ row: [Float], n: Float?) -> Result<TopNSigmaFiltered, RowError> {
    row.withUnsafeBufferPointer { filterTopNSigma($0, n: n) }
}

func filterTopNSigma(_ row: UnsafeBufferPointer<Float>, n: Float?) -> Result<TopNSigmaFiltered, RowError> {
    Result { () throws(RowError) -> TopNSigmaFiltered in
        let d = try FilteredDistribution.of(row, parameters: SamplingParameters(temperature: 1, nSigma: n))
        let kept = d.kept.map { TopNSigmaFiltered.Kept(index: Int32($0.token), logit: $0.logit) }.sorted {
            $0.index < $1.index
        }
        return TopNSigmaFiltered(statistics: d.statistics, threshold: d.threshold, kept: kept)
    }
}

/// `FilteredDistribution.of` as a `Result`, for suites that compare outcomes.
func filteredDistribution(
    _ row: [Float], parameters: SamplingParameters, processing: RequestProcessing? = nil
) -> Result<FilteredDistribution, RowError> {
    Result { () throws(RowError) in try FilteredDistribution.of(row, parameters: parameters, processing: processing) }
}

/// `RowStatistics.of` as a `Result`.
func rowStatistics(_ row: UnsafeBufferPointer<Float>) -> Result<RowStatistics, RowError> {
    Result { () throws(RowError) in try RowStatistics.of(row) }
}

func rowStatistics(_ row: [Float]) -> Result<RowStatistics, RowError> {
    Result { () throws(RowError) in try RowStatistics.of(row) }
}
