import Foundation
import Testing
import TopNSigma
import TopNSigmaBaselines

/// Speculative verification: the acceptance rule by hand, losslessness by chi-square against the
/// float64 oracle, invalid draft probabilities, typed shape errors, determinism, greedy targets,
/// and the `nsigma verify` contract.
@Suite struct SpeculativeTests {
    static let vocab = 12
    static let k = 2
    static let n: Float = 1.0
    static let temperature: Float = 0.8

    /// Three target rows (row-major) whose Top-nσ kept sets hold several tokens.
    static let rows: [[Float]] = [
        [2.0, 1.5, -1.0, 0.4, 2.2, -3.0, 1.9, 0.0, -0.5, 1.1, -2.0, 0.3],
        [0.1, 3.0, 2.6, -1.0, 2.9, 0.0, -2.0, 2.0, 1.0, -0.7, 2.4, 0.5],
        [-1.0, 0.5, 1.8, 1.7, -0.2, 1.6, 0.9, -2.5, 1.9, 0.0, 1.2, -0.4]
    ]

    static var parametersTemplate: SamplingParameters { SamplingParameters(temperature: temperature, nSigma: n) }

    /// The exact target of row `i` in float64, from the oracle (sharing no code with the kernels).
    static func target(_ i: Int) -> [Int: Double] {
        Reference.distribution(rows[i], n: Double(n), temperature: Double(temperature))
    }

    /// Draws an index from `weights` (not necessarily normalized) with the test generator.
    static func draw(_ weights: [Double], _ random: inout TestRandom) -> Int {
        let total = weights.reduce(0, +)
        var target = random.uniform() * total
        for (j, w) in weights.enumerated() {
            target -= w
            if target < 0 && w > 0 { return j }
        }
        return weights.lastIndex { $0 > 0 }!
    }

    /// How each losslessness case builds the draft of one request.
    enum DraftKind: String, CaseIterable, CustomStringConvertible {
        case far, close, pointMass, outsideKept
        var description: String { rawValue }
    }

    /// The draft distribution of position `i` (dense, over the whole vocabulary).
    static func draftRow(_ kind: DraftKind, position i: Int) -> [Double] {
        let p = target(i)
        switch kind {
        case .far:
            // Mass mostly where p has little: 0.9 on the kept tokens in reversed order of
            // probability, 0.1 spread over every token, kept or not.
            let w = (0..<vocab).map { p[$0] == nil ? 0 : Foundation.exp(-2 * Double(rows[i][$0])) }
            let total = w.reduce(0, +)
            return w.map { 0.9 * $0 / total + 0.1 / Double(vocab) }
        case .close:
            return (0..<vocab).map { 0.9 * (p[$0] ?? 0) + 0.1 / Double(vocab) }
        case .outsideKept:
            // Half the mass on tokens Top-nσ drops, half spread over the kept ones.
            let outside = (0..<vocab).filter { p[$0] == nil }, inside = (0..<vocab).filter { p[$0] != nil }
            return (0..<vocab).map { p[$0] == nil ? 0.5 / Double(outside.count) : 0.5 / Double(inside.count) }
        case .pointMass:
            return []
        }
    }

    /// Verifies `requests` requests (seed = request index) with drafts of `kind`, and checks the
    /// first, second and third emitted tokens against p_1, p_2 and p_3 by chi-square.
    @Test(
        "lossless: every emitted token is distributed as p (chi-square over many seeds)", arguments: DraftKind.allCases)
    func lossless(kind: DraftKind) throws {
        let requests = 20_000, k = Self.k, vocab = Self.vocab
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: requests, threadCount: 2)
        let logits = [Float]((0..<requests).flatMap { _ in Self.rows.joined() })
        var random = TestRandom(seed: UInt64(kind.rawValue.utf8.count) &* 7919)
        let q = (0..<k).map { Self.draftRow(kind, position: $0) }
        var proposals: [DraftProposal] = []
        for _ in 0..<requests {
            switch kind {
            case .pointMass:
                // A deterministic draft: the kept token with the second-largest logit at each position.
                proposals.append(DraftProposal(tokens: [6, 4], probabilities: [1, 1]))
            case .far, .close:
                let tokens = q.map { Self.draw($0, &random) }
                proposals.append(
                    DraftProposal(
                        tokens: tokens.map(TokenID.init), probabilities: (0..<k).map { q[$0][tokens[$0]] },
                        distributions: .dense(q.flatMap { $0.map(Float.init) })))
            case .outsideKept:
                let tokens = q.map { Self.draw($0, &random) }
                proposals.append(
                    DraftProposal(
                        tokens: tokens.map(TokenID.init),
                        probabilities: (0..<k).map { Double(Float(q[$0][tokens[$0]])) },
                        distributions: .sparse(
                            q.map { row in
                                row.enumerated().map {
                                    DraftEntry(token: TokenID($0.offset), probability: Double(Float($0.element)))
                                }
                            })))
            }
        }
        let parameters = (0..<requests).map { r in
            var p = Self.parametersTemplate
            p.seed = UInt64(r)
            return p
        }
        let outcomes = sampler.verify(
            logits: logits, k: k, proposals: proposals, parameters: parameters,
            steps: [UInt64](repeating: 3, count: requests))
        var observed = [[Int: Int]](repeating: [:], count: k + 1)
        var draws = [Int](repeating: 0, count: k + 1)
        for outcome in outcomes {
            let result = try outcome.get()
            #expect(result.tokens.count == result.accepted + 1)
            for (position, token) in result.tokens.map(Int.init).enumerated() {
                observed[position][token, default: 0] += 1
                draws[position] += 1
                let p = try #require(Self.target(position)[token], "emitted token \(token) outside the kept set")
                #expect(abs(result.logProbabilities[position] - Foundation.log(p)) < 1e-9)
            }
        }
        // How often each position is reached follows from the rule: position j + 1 is reached
        // when the draft token at j is accepted, with probability α_j = Σ_x q_j(x)·min(1,
        // p_j(x)/q_j(x)) (the probability the proposal carries; for the point mass, p_j of its
        // token), independently per request. Each count must agree with its binomial, and every
        // position is reached often enough for its chi-square, which is run for all of them.
        let alpha = (0..<k).map { j -> Double in
            let p = Self.target(j)
            if kind == .pointMass { return p[[6, 4][j]] ?? 0 }
            let carried = kind == .outsideKept ? q[j].map { Double(Float($0)) } : q[j]
            return (0..<vocab).reduce(0.0) { sum, x in
                sum + (carried[x] > 0 ? q[j][x] * min(1, (p[x] ?? 0) / carried[x]) : 0)
            }
        }
        #expect(draws[0] == requests)
        for j in 0..<k {
            let mean = Double(draws[j]) * alpha[j], sd = (mean * (1 - alpha[j])).squareRoot()
            #expect(
                Swift.abs(Double(draws[j + 1]) - mean) <= 5 * sd + 1,
                "\(kind): \(draws[j + 1]) of \(draws[j]) draft tokens accepted at position \(j), expected α = \(alpha[j])"
            )
        }
        for position in 0...k {
            try #require(
                draws[position] >= 1_000,
                "\(kind) position \(position): \(draws[position]) draws are too few for the chi-square")
            let (statistic, dof) = chiSquare(
                observed: observed[position], expected: Self.target(position), draws: draws[position])
            #expect(
                chiSquarePValue(statistic, degreesOfFreedom: dof) > 1e-4,
                "\(kind) position \(position): chi-square \(statistic), \(dof) dof over \(draws[position]) draws")
        }
    }

    /// p = (0.1, 0.2, 0.3, 0.4) exactly (no filter, T = 1).
    static let handRow: [Float] = [0.1, 0.2, 0.3, 0.4].map { Float(Foundation.log($0)) }

    @Test("the acceptance rule by hand: accept iff u < p/q, then the residual max(0, p − q) or the bonus")
    func handWorked() throws {
        let sampler = try BatchSampler(vocabularySize: 4, maximumBatchSize: 1, threadCount: 1)
        let bonusRow: [Float] = [0, 0, Float(Foundation.log(3.0)), -.infinity]  // p = (0.2, 0.2, 0.6, 0)
        let q: [Float] = [0.1, 0.05, 0.05, 0.8]
        var accepted = 0, rejected = 0
        for seed in UInt64(0)..<300 {
            let parameters = SamplingParameters(temperature: 1, nSigma: nil, seed: seed)
            let outcome = sampler.verify(
                logits: Self.handRow.map { $0 } + bonusRow, k: 1,
                proposals: [DraftProposal(tokens: [3], probabilities: [0.8], distributions: .dense(q))],
                parameters: [parameters], steps: [5])
            let result = try outcome[0].get()
            let philox = Philox4x32(seed: seed)
            let u = philox.uniform(step: 5, stream: 1)
            if u < 0.4 / 0.8 {
                accepted += 1
                // Bonus from row 2 with the stream-2 uniform at step 6: p = (0.2, 0.2, 0.6).
                let v = philox.uniform(step: 6, stream: 2)
                let bonus: TokenID = v < 0.2 ? 0 : v < 0.4 ? 1 : 2
                #expect(
                    result
                        == VerificationResult(
                            accepted: 1, tokens: [3, bonus],
                            logProbabilities: [
                                Foundation.log(0.4), Foundation.log([0.2, 0.2, 0.6][Int(bonus)])
                            ]
                        ).approximately(result))
                #expect(result.tokens == [3, bonus])
            } else {
                rejected += 1
                // Residual max(0, p − q) = (0, 0.15, 0.25, 0) → (0, 0.375, 0.625, 0).
                let v = philox.uniform(step: 5, stream: 2)
                let correction: TokenID = v < 0.375 ? 1 : 2
                #expect(result.accepted == 0)
                #expect(result.tokens == [correction])
                #expect(abs(result.logProbabilities[0] - Foundation.log([0.1, 0.2, 0.3, 0.4][Int(correction)])) < 1e-6)
            }
        }
        #expect(accepted > 100 && rejected > 100)
    }

    @Test(
        "invalid q: 0, NaN or negative accepts any supported token; above 1 acts as 1; unsupported tokens are always rejected"
    )
    func invalidProbabilities() throws {
        let sampler = try BatchSampler(vocabularySize: 4, maximumBatchSize: 1, threadCount: 1)
        let row: [Float] = [Float(Foundation.log(0.6)), Float(Foundation.log(0.4)), -.infinity, -20]
        let parameters = { (seed: UInt64) in SamplingParameters(temperature: 1, nSigma: 1, seed: seed) }
        // Top-nσ with n = 1 keeps tokens 0 and 1 only (token 3 is far below, 2 is masked).
        var aboveOneAccepted = 0
        for seed in UInt64(0)..<200 {
            for q in [0, .nan, -1, -.infinity] as [Double] {
                let result = try sampler.verify(
                    logits: row + row, k: 1, proposals: [DraftProposal(tokens: [1], probabilities: [q])],
                    parameters: [parameters(seed)])[0].get()
                #expect(result.accepted == 1 && result.tokens.first == 1, "q = \(q)")
            }
            for q in [0, .nan, 0.5, 1, 7, .infinity] as [Double] {
                for token: TokenID in [2, 3] {
                    let result = try sampler.verify(
                        logits: row + row, k: 1,
                        proposals: [
                            DraftProposal(
                                tokens: [token], probabilities: [q], distributions: .dense([0.25, 0.25, 0.25, 0.25]))
                        ],
                        parameters: [parameters(seed)])[0].get()
                    #expect(
                        result.accepted == 0 && result.tokens.count == 1 && [0, 1].contains(result.tokens[0]),
                        "q = \(q)")
                }
            }
            let result = try sampler.verify(
                logits: row + row, k: 1, proposals: [DraftProposal(tokens: [1], probabilities: [7])],
                parameters: [parameters(seed)])[0].get()
            let u = Philox4x32(seed: seed).uniform(step: 0, stream: 1)
            #expect((result.accepted == 1) == (u < 0.4))
            // Rejected against the clamped point mass: the correction is the other kept token.
            if result.accepted == 0 { #expect(result.tokens == [0]) } else { aboveOneAccepted += 1 }
        }
        #expect(aboveOneAccepted > 40 && aboveOneAccepted < 120)
        // NaN in a dense draft row is read as 0 there, never a crash.
        let result = try sampler.verify(
            logits: row + row, k: 1,
            proposals: [
                DraftProposal(tokens: [0], probabilities: [1], distributions: .dense([1, .nan, .nan, .infinity]))
            ],
            parameters: [parameters(1)])[0].get()
        #expect(result.tokens.count == 1 + result.accepted)
    }

    @Test("malformed shapes and failing target rows fail their request with a typed error, the others verify")
    func shapeErrors() throws {
        let vocab = 4, k = 2
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 16, threadCount: 2)
        let good: [Float] = [0, 1, 2, 3]
        let ok = DraftProposal(tokens: [3, 2], probabilities: [0.5, 0.5])
        let cases: [(DraftProposal, [Float], SamplingParameters, VerificationError)] = [
            (DraftProposal(tokens: [3], probabilities: [0.5, 0.5]), good, .init(), .tokenCount(expected: 2, actual: 1)),
            (
                DraftProposal(tokens: [3, 2], probabilities: [0.5]), good, .init(),
                .probabilityCount(expected: 2, actual: 1)
            ),
            (
                DraftProposal(tokens: [3, 4], probabilities: [0.5, 0.5]), good, .init(),
                .tokenOutOfRange(position: 1, token: 4)
            ),
            (
                DraftProposal(tokens: [-1, 2], probabilities: [0.5, 0.5]), good, .init(),
                .tokenOutOfRange(position: 0, token: -1)
            ),
            (
                DraftProposal(tokens: [3, 2], probabilities: [0.5, 0.5], distributions: .dense([0.25, 0.25, 0.25])),
                good, .init(),
                .denseLength(expected: 8, actual: 3)
            ),
            (
                DraftProposal(tokens: [3, 2], probabilities: [0.5, 0.5], distributions: .sparse([[]])), good, .init(),
                .sparseCount(expected: 2, actual: 1)
            ),
            (
                DraftProposal(
                    tokens: [3, 2], probabilities: [0.5, 0.5],
                    distributions: .sparse([[], [DraftEntry(token: 9, probability: 1)]])),
                good, .init(), .sparseTokenOutOfRange(position: 1, token: 9)
            ),
            (ok, [0, 1, .nan, 3], .init(), .row(2, .notANumber(index: 2))),
            (ok, [0, 1, 2, .infinity], .init(), .row(1, .positiveInfinity(index: 3))),
            (ok, [-.infinity, -.infinity, -.infinity, -.infinity], .init(), .row(0, .noFiniteLogit)),
            (ok, good, SamplingParameters(temperature: -1), .row(0, .invalidTemperature(-1)))
        ]
        var logits: [Float] = [], proposals: [DraftProposal] = [], parameters: [SamplingParameters] = []
        for (index, (proposal, bad, parameter, _)) in cases.enumerated() {
            // The bad row sits where the expected error names it; the other rows are good.
            let expectedRow: Int
            if case .row(let r, _) = cases[index].3 { expectedRow = r } else { expectedRow = -1 }
            for i in 0...k { logits += i == expectedRow ? bad : good }
            proposals.append(proposal)
            parameters.append(parameter)
        }
        // One good request at the end: it must succeed.
        for _ in 0...k { logits += good }
        proposals.append(ok)
        parameters.append(SamplingParameters())
        let outcomes = sampler.verify(logits: logits, k: k, proposals: proposals, parameters: parameters)
        for (index, expected) in cases.map(\.3).enumerated() {
            #expect(outcomes[index] == .failure(expected), "case \(index)")
        }
        #expect((try? outcomes.last!.get()) != nil)
        // A row error after an early rejection still fails the request: the outcome never
        // depends on whether the draft was accepted. Token 0 is outside the kept set of row 0, so
        // it is always rejected; row 2 has a NaN.
        for seed in UInt64(0)..<20 {
            let outcome = sampler.verify(
                logits: good + good + [0, .nan, 0, 0], k: 2,
                proposals: [DraftProposal(tokens: [0, 0], probabilities: [1, 1])],
                parameters: [SamplingParameters(seed: seed)])
            #expect(outcome[0] == .failure(.row(2, .notANumber(index: 1))))
        }
    }

    @Test("determinism: results depend on (inputs, seed, step) only, not on thread count, batch order or batch size")
    func determinism() throws {
        let vocab = 10_000, k = 3, requests = 6
        var random = TestRandom(seed: 11)
        let rows = (0..<(requests * (k + 1))).map { _ in random.row(count: vocab) }
        let proposals = (0..<requests).map { r in
            DraftProposal(
                tokens: (0..<k).map { i -> TokenID in
                    let row = rows[r * (k + 1) + i]
                    return TokenID(row.indices.max { row[$0] < row[$1] }!)
                },
                probabilities: [0.9, 0.5, 0.7])
        }
        let parameters = (0..<requests).map {
            SamplingParameters(temperature: 1.5, nSigma: 2, seed: UInt64(100 + $0), topK: $0 % 2 == 0 ? 20 : nil)
        }
        let steps = (0..<requests).map { UInt64(7 * $0) }
        let one = try BatchSampler(vocabularySize: vocab, maximumBatchSize: requests, threadCount: 1)
        let three = try BatchSampler(vocabularySize: vocab, maximumBatchSize: requests, threadCount: 3)
        let forward = one.verify(
            logits: Array(rows.joined()), k: k, proposals: proposals, parameters: parameters, steps: steps)
        #expect(
            three.verify(logits: Array(rows.joined()), k: k, proposals: proposals, parameters: parameters, steps: steps)
                == forward)
        let order = Array((0..<requests).reversed())
        let reversed = three.verify(
            logits: Array(order.flatMap { r in rows[(r * (k + 1))..<((r + 1) * (k + 1))].joined() }), k: k,
            proposals: order.map { proposals[$0] }, parameters: order.map { parameters[$0] },
            steps: order.map { steps[$0] })
        #expect(Array(reversed.reversed()) == forward)
        for r in 0..<requests {
            let alone = one.verify(
                logits: Array(rows[(r * (k + 1))..<((r + 1) * (k + 1))].joined()), k: k,
                proposals: [proposals[r]], parameters: [parameters[r]], steps: [steps[r]])
            #expect(alone[0] == forward[r])
        }
        #expect(forward.allSatisfy { (try? $0.get()) != nil })
    }

    @Test("greedy targets: the argmax is accepted with log-probability 0; anything else is corrected to the argmax")
    func greedy() throws {
        let sampler = try BatchSampler(vocabularySize: 5, maximumBatchSize: 2, threadCount: 1)
        let rows: [[Float]] = [[0, 4, 1, 4, 2], [3, 0, 0, 0, 1], [0, 0, 0, 0, 9]]
        let greedy = SamplingParameters(temperature: 0, seed: 3)
        let outcomes = sampler.verify(
            logits: Array(rows.joined()) + Array(rows.joined()), k: 2,
            proposals: [
                DraftProposal(tokens: [1, 0], probabilities: [0.3, 0.9]),
                DraftProposal(tokens: [3, 0], probabilities: [0.99, 1])
            ],
            parameters: [greedy, greedy])
        #expect(
            outcomes[0] == .success(VerificationResult(accepted: 2, tokens: [1, 0, 4], logProbabilities: [0, 0, 0])))
        #expect(outcomes[1] == .success(VerificationResult(accepted: 0, tokens: [1], logProbabilities: [0])))
    }

    @Test("pointer form: bfloat16 rows verify as their Float conversions; k = 0 draws the bonus from p_1 alone")
    func pointerFormAndNoDraft() throws {
        let vocab = 5000, k = 2, requests = 3
        var random = TestRandom(seed: 3)
        let floats = (0..<(requests * (k + 1) * vocab)).map { _ in Float(random.gaussian() * 3) }
        let bits = floats.map { UInt16($0.bitPattern >> 16) }
        let converted = bits.map { Float(bitPattern: UInt32($0) << 16) }
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: requests, threadCount: 2)
        let proposals = (0..<requests).map { _ in DraftProposal(tokens: [1, 2], probabilities: [0.01, 0.5]) }
        let parameters = (0..<requests).map { SamplingParameters(temperature: 1, nSigma: 3, seed: UInt64($0)) }
        let steps: [UInt64] = [4, 5, 6]
        let expected = sampler.verify(
            logits: converted, k: k, proposals: proposals, parameters: parameters, steps: steps)
        var results = [VerificationOutcome](repeating: .failure(.row(0, .noFiniteLogit)), count: requests)
        bits.withUnsafeBytes { raw in
            proposals.withUnsafeBufferPointer { q in
                parameters.withUnsafeBufferPointer { p in
                    steps.withUnsafeBufferPointer { s in
                        results.withUnsafeMutableBufferPointer { out in
                            sampler.verify(
                                logits: raw.baseAddress!, format: .bfloat16, requests: requests, k: k,
                                proposals: q, parameters: p, steps: s, into: out)
                        }
                    }
                }
            }
        }
        #expect(results == expected)
        #expect(expected.allSatisfy { (try? $0.get()) != nil })
        // k = 0: no draft, the bonus token from p_1 with its log-probability.
        let row = Array(converted[0..<vocab])
        let distribution = try FilteredDistribution.of(row, parameters: parameters[0])
        let probability = Dictionary(uniqueKeysWithValues: distribution.kept.map { ($0.token, $0.probability) })
        for step in UInt64(0)..<20 {
            let result = try sampler.verify(
                logits: row, k: 0, proposals: [DraftProposal(tokens: [], probabilities: [])],
                parameters: [parameters[0]], steps: [step])[0].get()
            #expect(result.accepted == 0 && result.tokens.count == 1)
            let p = try #require(probability[result.tokens[0]])
            #expect(abs(result.logProbabilities[0] - Foundation.log(p)) < 1e-9)
        }
    }

    @Test("the target is the sampler's: log-probabilities equal FilteredDistribution's under top-k, top-p and min-p")
    func targetMatchesSampler() throws {
        let row = Fixture.row(0), vocab = row.count
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 4, threadCount: 2)
        for parameters in [
            SamplingParameters(temperature: 0.7, nSigma: 1, seed: 1),
            SamplingParameters(temperature: 1.2, nSigma: nil, seed: 2, topK: 40, topP: 0.9),
            SamplingParameters(temperature: 1, nSigma: 2, seed: 3, minP: 0.05)
        ] {
            let distribution = try FilteredDistribution.of(row, parameters: parameters)
            let probability = Dictionary(uniqueKeysWithValues: distribution.kept.map { ($0.token, $0.probability) })
            for step in UInt64(0)..<8 {
                let top = distribution.kept[0].token
                let result = try sampler.verify(
                    logits: row + row, k: 1, proposals: [DraftProposal(tokens: [top], probabilities: [0.95])],
                    parameters: [parameters], steps: [step])[0].get()
                for (token, logProbability) in zip(result.tokens, result.logProbabilities) {
                    let p = try #require(probability[token])
                    #expect(abs(logProbability - Foundation.log(p)) < 1e-9)
                }
            }
        }
    }
}

extension VerificationResult {
    /// `self` when its tokens and count equal `other`'s and its log-probabilities are within
    /// 1e-6 of them; otherwise `self` unchanged (so an `==` against `other` fails).
    func approximately(_ other: VerificationResult) -> VerificationResult {
        guard accepted == other.accepted, tokens == other.tokens,
            logProbabilities.count == other.logProbabilities.count,
            zip(logProbabilities, other.logProbabilities).allSatisfy({ abs($0 - $1) < 1e-6 })
        else { return self }
        return other
    }
}
