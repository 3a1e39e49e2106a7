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
        // Cases where a Float threshold (the float64 statistics' max - n·std evaluated and
        // compared in Float) decides the crafted logit otherwise than float64: the rows a
        // library without the exact double-precision decision would get wrong.
        var floatWouldMiss = 0
        for r in 0..<4 {
            let row = Array(base[(r * vocab)..<((r + 1) * vocab)])
            for index in [5, 4100, 12_345, vocab - 1] {
                var decisions: [Bool] = []
                for ulps in -3...3 {
                    let crafted = Self.straddling(row, index: index, n: n, ulps: ulps)
                    let expected = Reference.kept(crafted, n: n)
                    let filtered = try filterTopNSigma(crafted, n: Float(n)).get()
                    #expect(
                        filtered.kept.map { Int($0.index) } == expected,
                        "row \(r), index \(index), \(ulps) ulps, n \(n)")
                    let keptByOracle = expected.contains(index)
                    decisions.append(keptByOracle)
                    guard case .success(let s) = Reference.statistics(crafted) else { continue }
                    let floatThreshold = Float(s.maximum) - Float(n) * Float(s.std)
                    if (crafted[index] >= floatThreshold) != keptByOracle { floatWouldMiss += 1 }
                }
                // The crafted logit really straddles the float64 threshold: dropped 3 ulps below
                // it, kept 3 ulps above, and the decision flips once in between.
                #expect(
                    decisions.first == false && decisions.last == true
                        && zip(decisions, decisions.dropFirst()).allSatisfy { !$0 || $1 },
                    "row \(r), index \(index), n \(n): oracle decisions \(decisions)")
            }
        }
        // The rows discriminate: a Float threshold misdecides some of them.
        #expect(floatWouldMiss > 0, "n \(n)")
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

    @Test("rows with -inf entries (masked vocabulary) and ragged tails stay exact")
    func maskedEntriesAndTails() throws {
        // The double-precision recomputation counts and sums only the finite logits, 32 at a
        // time and the rest one by one: -inf entries in whole vectors and in the tail, and
        // lengths that leave 1 to 31 logits after the last whole step.
        for (vocab, seed) in [(4133, 3 as UInt64), (50_015, 4), (33, 5), (4096 + 31, 6)] {
            var row = SyntheticLogits.generate(rows: 1, vocab: vocab, seed: seed)
            var random = TestRandom(seed: seed)
            for _ in 0..<max(2, vocab / 50) { row[Int(random.next() % UInt64(vocab))] = -.infinity }
            row[vocab - 1] = -.infinity
            row[0] = -.infinity
            let index = vocab / 2 + 1
            guard row[index] > -.infinity else { continue }
            var decisions: [Bool] = []
            for ulps in [-2, 0, 2] {
                let crafted = Self.straddling(row, index: index, n: 1, ulps: ulps)
                let expected = Reference.kept(crafted, n: 1)
                let filtered = try filterTopNSigma(crafted, n: 1).get()
                #expect(filtered.kept.map { Int($0.index) } == expected, "vocab \(vocab), \(ulps) ulps")
                decisions.append(expected.contains(index))
            }
            #expect(decisions.first == false && decisions.last == true, "vocab \(vocab): \(decisions)")
        }
    }

    @Test("std 0 keeps the max-tied tokens and reports max as the threshold, for every n (n = +inf included)")
    func zeroStdThreshold() throws {
        // Hand-worked: every finite logit of these rows is equal (or there is one), so std = 0 and
        // max - n·std = max for any n; IEEE's +inf · 0 = NaN must not leak into the threshold.
        let rows: [(row: [Float], maximum: Double, kept: [Int])] = [
            ([3, 3, -.infinity, 3], 3, [0, 1, 3]),
            ([-.infinity, -2.5, -.infinity], -2.5, [1]),
            ([7], 7, [0])
        ]
        for (row, maximum, kept) in rows {
            for n in [0, 1, 1e30, Float.infinity] {
                let filtered = try filterTopNSigma(row, n: n).get()
                #expect(filtered.statistics.standardDeviation == 0, "\(row), n \(n)")
                #expect(filtered.threshold == maximum, "\(row), n \(n): threshold \(filtered.threshold)")
                #expect(filtered.kept.map { Int($0.index) } == kept, "\(row), n \(n)")
                // Min-p's cut max + T·ln(minP) lies below max: the combined threshold stays max.
                let withMinP = try FilteredDistribution.of(
                    row, parameters: SamplingParameters(temperature: 1, nSigma: n, minP: 0.5))
                #expect(withMinP.threshold == maximum, "\(row), n \(n), min-p 0.5: \(withMinP.threshold)")
                #expect(withMinP.kept.map { Int($0.token) }.sorted() == kept)
            }
        }
        // The threshold rule itself, on statistics with std 0 and on those of a row without a
        // finite logit (max -inf, std 0): max, and -inf, never NaN.
        let parameters = SamplingParameters(temperature: 1, nSigma: .infinity)
        let constant = try RowStatistics.of([4, 4, 4])
        #expect(RowPipeline.logitThreshold(constant, parameters) == 4)
        let empty = try RowStatistics.of([-.infinity, -.infinity])
        #expect(empty.maximum == -.infinity && empty.finiteCount == 0 && empty.standardDeviation == 0)
        #expect(RowPipeline.logitThreshold(empty, parameters) == -.infinity)
        // n = +inf with std > 0: max - inf = -inf, every finite logit kept.
        let spread = try filterTopNSigma([1, -.infinity, 2, 5], n: .infinity).get()
        #expect(spread.threshold == -.infinity)
        #expect(spread.kept.map { Int($0.index) } == [0, 2, 3])
    }
}
