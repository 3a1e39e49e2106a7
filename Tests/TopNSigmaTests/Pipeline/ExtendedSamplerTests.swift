import Foundation
import Testing
import TopNSigma

/// Typical, ε, η, XTC, dynamic temperature and p-less against the float64 reference
/// (``Reference/extended(_:_:step:)``), hand-worked cases, chi-square draws and the errors.
@Suite struct ExtendedSamplerTests {
    static let cases: [SamplingParameters] = [
        SamplingParameters(nSigma: nil, typicalP: 0.5),
        SamplingParameters(temperature: 1.5, nSigma: nil, typicalP: 0.95),
        SamplingParameters(nSigma: nil, epsilon: 0.001),
        SamplingParameters(temperature: 2, nSigma: nil, epsilon: 0.0003),
        SamplingParameters(nSigma: nil, eta: 0.002),
        SamplingParameters(temperature: 0.7, nSigma: nil, eta: 0.0009),
        SamplingParameters(nSigma: nil, pLess: true),
        SamplingParameters(temperature: 3, nSigma: nil, pLess: true),
        SamplingParameters(nSigma: nil, xtcThreshold: 0.1),
        SamplingParameters(temperature: 2, nSigma: nil, topK: 40, xtcThreshold: 0.02),
        SamplingParameters(nSigma: nil, topK: 50, dynamicTemperatureRange: 0.5),
        SamplingParameters(
            temperature: 0.8, nSigma: nil, minP: 0.01, dynamicTemperatureRange: 1,
            dynamicTemperatureExponent: 2),
        SamplingParameters(temperature: 0.3, nSigma: nil, topP: 0.9, dynamicTemperatureRange: 0.5),
        SamplingParameters(
            temperature: 0.9, nSigma: 2, topK: 100, topP: 0.95, minP: 0.001, typicalP: 0.9,
            epsilon: 0.0001, eta: 0.0005, xtcThreshold: 0.05, dynamicTemperatureRange: 0.4,
            dynamicTemperatureExponent: 0.5, pLess: false),
        SamplingParameters(temperature: 1.2, nSigma: nil, topP: 0.98, typicalP: 0.8, pLess: true)
    ]

    @Test("kept sets and probabilities equal the float64 reference on real rows", arguments: cases)
    func againstReference(parameters: SamplingParameters) throws {
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            let got = try FilteredDistribution.of(row, parameters: parameters).kept
            let expected = Reference.extended(row, parameters).distribution
            #expect(got.map { Int($0.token) } == expected.map { Int($0.token) }, "row \(r) \(parameters)")
            for (a, b) in zip(got, expected) { #expect(Swift.abs(a.probability - b.probability) < 1e-9) }
        }
    }

    @Test("hand-worked rows")
    func handWorked() throws {
        let ln3 = Float(Foundation.log(3.0))
        // p = (3/4, 1/4): Σp² = 5/8, so p-less keeps the first alone; ε 0.2 keeps both, ε 0.3 one.
        let two: [Float] = [ln3, 0]
        #expect(
            try FilteredDistribution.of(two, parameters: .init(nSigma: nil, pLess: true)).kept.map { Int($0.token) }
                == [0])
        #expect(try FilteredDistribution.of(two, parameters: .init(nSigma: nil, epsilon: 0.2)).kept.count == 2)
        #expect(
            try FilteredDistribution.of(two, parameters: .init(nSigma: nil, epsilon: 0.3)).kept.map { Int($0.token) }
                == [0])
        // A uniform row: Σp² = p, so p-less keeps every token; so does ε at p (no token lies
        // above it, but the ties of the maximum always stay).
        let flat = [Float](repeating: 1, count: 4)
        #expect(try FilteredDistribution.of(flat, parameters: .init(nSigma: nil, pLess: true)).kept.count == 4)
        #expect(try FilteredDistribution.of(flat, parameters: .init(nSigma: nil, epsilon: 0.25)).kept.count == 4)
        // p = (1/2, 1/4, 1/4): H = 1.5 ln 2; surprisals ln 2 and 2 ln 2 lie 0.5 ln 2 from it on
        // both sides, so the tie goes to key order: typical 0.4 keeps token 0, 0.6 adds token 1.
        let halves: [Float] = [Float(Foundation.log(2.0)), 0, 0]
        #expect(
            try FilteredDistribution.of(halves, parameters: .init(nSigma: nil, typicalP: 0.4)).kept.map {
                Int($0.token)
            } == [0])
        #expect(
            try FilteredDistribution.of(halves, parameters: .init(nSigma: nil, typicalP: 0.6)).kept.map {
                Int($0.token)
            }
            .sorted()
                == [0, 1])
        // XTC at 0.2 over (1/2, 1/4, 1/4): all three reach it; the least probable (the last in
        // key order, token 2) stays alone. At 0.3 only token 0 reaches it: nothing is dropped.
        #expect(
            try FilteredDistribution.of(halves, parameters: .init(nSigma: nil, xtcThreshold: 0.2)).kept.map {
                Int($0.token)
            }
                == [2])
        #expect(try FilteredDistribution.of(halves, parameters: .init(nSigma: nil, xtcThreshold: 0.3)).kept.count == 3)
        #expect(
            try FilteredDistribution.of(halves, parameters: .init(nSigma: nil, xtcThreshold: 0.2, xtcProbability: 0))
                .kept.count == 3)
        // Dynamic temperature on a uniform row: normalized entropy 1, so T + range: still uniform.
        // On (1/2, 1/4, 1/4) at T = 1 ± 1 with exponent 1: T = 2·H / ln 3 (as a Float).
        let dynamic = try FilteredDistribution.of(
            halves, parameters: .init(nSigma: nil, dynamicTemperatureRange: 1)
        ).kept
        let x = Double(halves[0]), q = 1 / (1 + 2 * Foundation.exp(-x))
        let entropy = -q * Foundation.log(q) - 2 * (1 - q) / 2 * Foundation.log((1 - q) / 2)  // ≈ 1.5 ln 2
        let temperature = Double(Float(2 * entropy / Foundation.log(3.0)))
        let w = Foundation.exp(-x / temperature)
        #expect(Swift.abs(dynamic[0].probability - 1 / (1 + 2 * w)) < 1e-12)
        // One kept token and T − range = 0: the draw is that token, with probability 1.
        let greedy = try FilteredDistribution.of(
            halves, parameters: .init(temperature: 0.5, nSigma: nil, topK: 1, dynamicTemperatureRange: 0.5))
        #expect(greedy.kept.map { Int($0.token) } == [0] && greedy.kept[0].probability == 1)
    }

    @Test("the sampler draws from the reference distribution (chi-square, p > 1e-3) with exact log-probabilities")
    func samplerChiSquare() throws {
        let row = Fixture.row(6)
        let parameters = SamplingParameters(
            temperature: 1.3, nSigma: nil, seed: 29, typicalP: 0.95, epsilon: 0.0005, xtcThreshold: 0.06,
            xtcProbability: 0.5, dynamicTemperatureRange: 0.3)
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
        var observed: [Int: Int] = [:], expected: [Int: Double] = [:]
        let draws = 4000
        var applied = 0
        // XTC's coin makes the distribution depend on the step: the expected counts are the
        // mixture of each step's reference, one of two.
        var always = parameters, never = parameters
        always.xtcProbability = 1
        never.xtcProbability = 0
        let references = [Reference.extended(row, never).distribution, Reference.extended(row, always).distribution]
        #expect(references[0].count != references[1].count)
        for step in 0..<draws {
            let coin = Philox4x32(seed: 29).uniform(step: UInt64(step), stream: 3) < 0.5
            if coin { applied += 1 }
            let reference = references[coin ? 1 : 0]
            for entry in reference { expected[entry.token, default: 0] += entry.probability / Double(draws) }
            let token = try sampler.sample(logits: row, parameters: [parameters], steps: [UInt64(step)])[0].get()
            let probability = try #require(
                reference.first { $0.token == token.token }?.probability, "token \(token.token) not kept")
            #expect(Swift.abs(token.logProbability - Foundation.log(probability)) < 1e-6)
            #expect(token.candidateCount == reference.count)
            observed[Int(token.token), default: 0] += 1
        }
        #expect(applied > draws / 3 && applied < 2 * draws / 3)
        let (statistic, dof) = chiSquare(observed: observed, expected: expected, draws: draws)
        #expect(chiSquarePValue(statistic, degreesOfFreedom: dof) > 1e-3, "chi-square \(statistic)")
    }

    @Test("tokens do not depend on thread count or batch composition; processing applies first")
    func determinismAndProcessing() throws {
        let vocab = Fixture.logits.vocab, rows = 3
        let logits = (0..<rows).flatMap { Fixture.row($0) }
        let parameters = [
            SamplingParameters(nSigma: nil, seed: 1, typicalP: 0.9, pLess: true),
            SamplingParameters(temperature: 0.7, nSigma: 1.5, seed: 2, eta: 0.001, xtcThreshold: 0.1),
            SamplingParameters(temperature: 2, nSigma: nil, seed: 3, topP: 0.95, dynamicTemperatureRange: 1)
        ]
        let steps: [UInt64] = [4, 5, 6]
        let reference = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
            .sample(logits: logits, parameters: parameters, steps: steps).map { try $0.get() }
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 2)
        #expect(
            try sampler.sample(logits: logits, parameters: parameters, steps: steps).map { try $0.get() } == reference)
        // A bias that lifts a token to the top: ε and p-less see the processed row.
        let row = Fixture.row(0)
        var biased = row
        let bias = row.max()! + 3 - row[7]
        biased[7] = row[7] + bias
        let processing = RequestProcessing(logitBias: [LogitBias(token: 7, bias: bias)])
        for p in [SamplingParameters(nSigma: nil, epsilon: 0.01), SamplingParameters(nSigma: nil, pLess: true)] {
            let got = try FilteredDistribution.of(row, parameters: p, processing: processing).kept.map { Int($0.token) }
            #expect(got == Reference.extended(biased, p).distribution.map { Int($0.token) })
            #expect(got.first == 7)
        }
    }

    @Test("out-of-range values fail their row with the sampler's name")
    func invalidParameters() throws {
        let row: [Float] = [1, 2, 3]
        let bad: [(SamplingParameters, String)] = [
            (.init(typicalP: 0), "typical-p"), (.init(typicalP: 1.5), "typical-p"), (.init(epsilon: 1), "epsilon"),
            (.init(epsilon: -0.1), "epsilon"), (.init(eta: .nan), "eta"), (.init(xtcThreshold: 1.1), "xtc-threshold"),
            (.init(xtcThreshold: 0.1, xtcProbability: 2), "xtc-probability"),
            (.init(dynamicTemperatureRange: -1), "dynatemp-range"),
            (.init(dynamicTemperatureRange: .infinity), "dynatemp-range"),
            (.init(dynamicTemperatureRange: 1, dynamicTemperatureExponent: -1), "dynatemp-exponent")
        ]
        for (parameters, name) in bad {
            #expect(throws: RowError.self) { try FilteredDistribution.of(row, parameters: parameters) }
            guard case .invalidSampler(let got, _) = parameters.validationError else {
                Issue.record("\(parameters) passed validation")
                continue
            }
            #expect(got == name)
        }
        // XTC's probability and the exponent are read only with their sampler on.
        #expect(SamplingParameters(xtcProbability: 5, dynamicTemperatureExponent: -1).validationError == nil)
        let results = try BatchSampler(vocabularySize: 3, maximumBatchSize: 2, threadCount: 1)
            .sample(logits: row + row, parameters: [SamplingParameters(epsilon: 2), SamplingParameters(epsilon: 0.5)])
        #expect(throws: RowError.invalidSampler(name: "epsilon", value: 2)) { try results[0].get() }
        #expect(try results[1].get().token == 2)
    }
}
