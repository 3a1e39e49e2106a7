import Foundation
import Testing
import TopNSigma
import TopNSigmaBaselines

/// min-p, top-k and sort-free top-p against a float64 reference written from the combination
/// rule: Top-nσ, top-k and min-p intersected; top-p over the renormalized rest.
@Suite struct TruncationTests {
    static let cases: [SamplingParameters] = [
        SamplingParameters(nSigma: nil, topK: 1),
        SamplingParameters(nSigma: 1, topK: 3),
        SamplingParameters(nSigma: nil, topK: 50),
        SamplingParameters(nSigma: nil, minP: 0.1),
        SamplingParameters(temperature: 2, nSigma: nil, minP: 0.02),
        SamplingParameters(nSigma: nil, topP: 0.9),
        SamplingParameters(temperature: 2, nSigma: nil, topP: 0.5),
        SamplingParameters(temperature: 0.8, nSigma: 2, topK: 20, topP: 0.8, minP: 0.05),
        SamplingParameters(temperature: 1.5, nSigma: nil, topK: 1000, topP: 0.95)
    ]

    @Test("filtered distributions equal the reference on real rows", arguments: cases)
    func againstReference(parameters: SamplingParameters) throws {
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            let got = try FilteredDistribution.of(row, parameters: parameters).kept
            let expected = Reference.truncated(row, parameters)
            #expect(got.map { Int($0.token) } == expected.map { Int($0.token) }, "row \(r) \(parameters)")
            for (a, b) in zip(got, expected) { #expect(Swift.abs(a.probability - b.probability) < 1e-9) }
        }
    }

    @Test(
        "sort-free top-p keeps exactly the sort-based opponent's set",
        arguments: [(0.5, Float(1)), (0.9, Float(1)), (0.9, Float(2)), (0.99, Float(0.7))])
    func topPMatchesSortBased(p: Double, temperature: Float) throws {
        var sorter = SortTopP(vocabularySize: Fixture.logits.vocab)
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            let sorted = try #require(
                row.withUnsafeBufferPointer { sorter.keptSet($0, p: Float(p), temperature: temperature) })
            let fused = try FilteredDistribution.of(
                row, parameters: SamplingParameters(temperature: temperature, nSigma: nil, topP: Float(p)))
            #expect(
                fused.kept.map { Int($0.token) } == sorted.map { Int($0.token) }, "row \(r) p \(p) T \(temperature)")
        }
    }

    @Test("the sampler draws from the truncated distribution (chi-square, p > 1e-3) with exact log-probabilities")
    func samplerChiSquare() throws {
        let row = Fixture.row(7)
        let parameters = SamplingParameters(temperature: 1.2, nSigma: nil, seed: 17, topK: 12, topP: 0.9, minP: 0.01)
        let expected = Dictionary(
            uniqueKeysWithValues: Reference.truncated(row, parameters).map { ($0.token, $0.probability) })
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
        var observed: [Int: Int] = [:]
        let draws = 4000
        for step in 0..<draws {
            let token = try sampler.sample(logits: row, parameters: [parameters], steps: [UInt64(step)])[0].get()
            let probability = try #require(expected[Int(token.token)], "token \(token.token) not kept")
            #expect(Swift.abs(token.logProbability - Foundation.log(probability)) < 1e-4)
            #expect(token.candidateCount == expected.count)
            observed[Int(token.token), default: 0] += 1
        }
        let (statistic, dof) = chiSquare(observed: observed, expected: expected, draws: draws)
        #expect(chiSquarePValue(statistic, degreesOfFreedom: dof) > 1e-3, "chi-square \(statistic)")
    }

    @Test("tokens with truncation do not depend on thread count or batch composition")
    func determinism() throws {
        let vocab = 128_256, rows = 3
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 21)
        let parameters = [
            SamplingParameters(nSigma: nil, seed: 1, topK: 40, topP: 0.9),
            SamplingParameters(temperature: 0.7, nSigma: 1.5, seed: 2, minP: 0.05),
            SamplingParameters(temperature: 2, nSigma: nil, seed: 3, topP: 0.95)
        ]
        let reference = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
            .sample(logits: logits, parameters: parameters).map { try $0.get() }
        for threads in [2, 4] {
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
            #expect(try sampler.sample(logits: logits, parameters: parameters).map { try $0.get() } == reference)
            for r in 0..<rows {
                let alone = try sampler.sample(
                    logits: Array(logits[(r * vocab)..<((r + 1) * vocab)]), parameters: [parameters[r]])[0].get()
                #expect(alone == reference[r], "row \(r), \(threads) threads")
            }
        }
    }

    @Test("adversarial rows: ties at the top-k and top-p boundaries go to the lower id; masked and constant rows")
    func adversarial() throws {
        // Ties straddling k: ids 2, 5, 7, 9 share the second-largest logit.
        let tied: [Float] = [0, 1, 5, 0, 0, 5, -.infinity, 5, 0, 5, 9]
        for k in 1...6 {
            let parameters = SamplingParameters(nSigma: nil, topK: k)
            #expect(
                try FilteredDistribution.of(tied, parameters: parameters).kept.map { Int($0.token) }
                    == Reference.truncated(tied, parameters).map { Int($0.token) }, "k \(k)")
        }
        #expect(
            try FilteredDistribution.of(tied, parameters: SamplingParameters(nSigma: nil, topK: 3)).kept.map {
                Int($0.token)
            }
            .sorted() == [2, 5, 10])
        // Equal probabilities at the top-p cut: the lower ids are kept first.
        let flat: [Float] = [1, 1, 1, 1, -.infinity, 1]
        let half = try FilteredDistribution.of(flat, parameters: SamplingParameters(nSigma: nil, topP: 0.5))
        #expect(half.kept.map { Int($0.token) } == [0, 1, 2])  // five tokens of 0.2: 0.6 is the first cumulative mass >= 0.5
        #expect(
            half.kept.map { Int($0.token) }
                == Reference.truncated(flat, SamplingParameters(nSigma: nil, topP: 0.5)).map { Int($0.token) }
        )
        // A constant row keeps everything under min-p; top-p 1 keeps every finite token.
        let constant = [Float](repeating: 2, count: 5000)
        #expect(
            try FilteredDistribution.of(constant, parameters: SamplingParameters(nSigma: nil, minP: 0.9)).kept.count
                == 5000)
        var masked = Fixture.row(5)
        for i in stride(from: 1, to: masked.count, by: 2) { masked[i] = -.infinity }
        for parameters in [
            SamplingParameters(nSigma: nil, topP: 1), SamplingParameters(nSigma: nil, topP: 0.95, minP: 0.001),
            SamplingParameters(nSigma: 3, topK: 100)
        ] {
            let got = try FilteredDistribution.of(masked, parameters: parameters).kept
            #expect(got.map { Int($0.token) } == Reference.truncated(masked, parameters).map { Int($0.token) })
            #expect(got.allSatisfy { $0.token % 2 == 0 })
        }
    }

    @Test("out-of-range top-k, top-p and min-p fail their row")
    func invalidParameters() throws {
        let row: [Float] = [1, 2, 3]
        #expect(throws: RowError.invalidTopK(0)) {
            try FilteredDistribution.of(row, parameters: SamplingParameters(topK: 0))
        }
        #expect(throws: RowError.invalidTopP(1.5)) {
            try FilteredDistribution.of(row, parameters: SamplingParameters(topP: 1.5))
        }
        #expect(throws: RowError.invalidTopP(0)) {
            try FilteredDistribution.of(row, parameters: SamplingParameters(topP: 0))
        }
        #expect(throws: RowError.invalidMinP(-0.1)) {
            try FilteredDistribution.of(row, parameters: SamplingParameters(minP: -0.1))
        }
        let results = try BatchSampler(vocabularySize: 3, maximumBatchSize: 2, threadCount: 1)
            .sample(logits: row + row, parameters: [SamplingParameters(topK: -1), SamplingParameters(topK: 1)])
        #expect(throws: RowError.invalidTopK(-1)) { try results[0].get() }
        #expect(try results[1].get().token == 2)
    }

    @Test("greedy ignores the truncations; top-k 1 is the argmax at any temperature")
    func greedyAndTopOne() throws {
        let row = Fixture.row(3)
        let argmax = try Reference.statistics(row).get().argmax
        let greedy = try FilteredDistribution.of(
            row, parameters: SamplingParameters(temperature: 0, topK: 5, topP: 0.1))
        #expect(greedy.kept.map { Int($0.token) } == [argmax] && greedy.kept[0].probability == 1)
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
        for step in 0..<20 {
            let token = try sampler.sample(
                logits: row, parameters: [SamplingParameters(temperature: 5, nSigma: nil, topK: 1)],
                steps: [UInt64(step)])[0].get()
            #expect(token.token == argmax && token.candidateCount == 1 && token.logProbability == 0)
        }
    }
}
