import Testing
import TopNSigma
import TopNSigmaBaselines

/// The kept set is exactly the float64 definition's, also for logits a few ulps from
/// `max - n·std`: the Float lane sums carry a rounding error, and the pipeline must notice when
/// it could matter (and then recompute the moments in double precision).
@Suite struct ThresholdExactnessTests {
    /// The float64 threshold of `row` (the oracle's statistics).
    static func threshold(_ row: [Float], n: Double) -> Double {
        guard case .success(let s) = Reference.statistics(row) else { return .nan }
        return s.maximum - n * s.std
    }

    /// `row` with logit `index` moved onto the threshold (the Float nearest it, iterated until
    /// the threshold of the changed row stops moving), then shifted by `ulps` ulps.
    static func straddling(_ row: [Float], index: Int, n: Double, ulps: Int) -> [Float] {
        var row = row
        for _ in 0..<6 { row[index] = Float(threshold(row, n: n)) }
        for _ in 0..<abs(ulps) { row[index] = ulps > 0 ? row[index].nextUp : row[index].nextDown }
        return row
    }

    @Test("logits within a few ulps of the threshold are kept exactly as float64 decides", arguments: [1.0, 0.5, 2.0])
    func straddlingRows(n: Double) throws {
        let vocab = 20_000
        let base = SyntheticLogits.generate(rows: 4, vocab: vocab, seed: 77)
        let before = RowPipeline.exactRecomputations.load(ordering: .relaxed)
        var rowsChecked = 0
        for r in 0..<4 {
            let row = Array(base[(r * vocab)..<((r + 1) * vocab)])
            for index in [5, 4100, 12_345, vocab - 1] {
                for ulps in -3...3 {
                    let crafted = Self.straddling(row, index: index, n: n, ulps: ulps)
                    let expected = Reference.kept(crafted, n: n)
                    let filtered = try filterTopNSigma(crafted, n: Float(n)).get()
                    #expect(
                        filtered.kept.map { Int($0.index) } == expected,
                        "row \(r), index \(index), \(ulps) ulps, n \(n)")
                    rowsChecked += 1
                }
            }
        }
        #expect(rowsChecked == 4 * 4 * 7)
        // The undecided rows went through the double-precision recomputation.
        #expect(RowPipeline.exactRecomputations.load(ordering: .relaxed) > before)
    }

    @Test("the sampler keeps the same exact sets, whole rows and split rows", arguments: [1, 2, 3])
    func samplerCounts(threads: Int) throws {
        let vocab = 50_000, n = 1.0
        let base = SyntheticLogits.generate(rows: 1, vocab: vocab, seed: 5)
        var rows: [[Float]] = []
        for index in [17, 33_000] {
            for ulps in [-2, -1, 0, 1, 2] { rows.append(Self.straddling(base, index: index, n: n, ulps: ulps)) }
        }
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: threads)
        for (k, row) in rows.enumerated() {
            let result = try sampler.sample(
                logits: row, parameters: [SamplingParameters(temperature: 1, nSigma: Float(n), seed: 1)])[0].get()
            #expect(result.candidateCount == Reference.kept(row, n: n).count, "row \(k), \(threads) threads")
        }
    }

    @Test("rows whose mean is far from zero (re-shifted chunks) and long rows stay exact")
    func farMeanAndLongRows() throws {
        for (vocab, offset) in [(10_000, 1000 as Float), (128_256, -200), (70_001, 0)] {
            var row = SyntheticLogits.generate(rows: 1, vocab: vocab, seed: UInt64(vocab))
            for i in row.indices { row[i] = row[i] * 0.25 + offset }
            for ulps in [-1, 0, 1] {
                let crafted = Self.straddling(row, index: vocab / 3, n: 1, ulps: ulps)
                let filtered = try filterTopNSigma(crafted, n: 1).get()
                #expect(
                    filtered.kept.map { Int($0.index) } == Reference.kept(crafted, n: 1),
                    "vocab \(vocab), offset \(offset), \(ulps) ulps")
            }
        }
    }
}
