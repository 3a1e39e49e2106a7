import Foundation
import Testing
import TopNSigma
import TopNSigmaBaselines

/// The separate-pass opponent of `nsigma bench` against the library.
@Suite struct SeparateVerifyTests {
    @Test("separate-verify emits what BatchSampler.verify emits for point-mass drafts (Top-nσ, T > 0 and T = 0)")
    func agreesWithLibrary() throws {
        let vocab = 1000, k = 3, requests = 100
        var random = TestRandom(seed: 5)
        let rows = (0..<(requests * (k + 1))).map { _ in random.row(count: vocab, std: 2) }
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: requests, threadCount: 2)
        var opponent = SeparateVerify(vocabularySize: vocab, k: k)
        for temperature in [Float(0.8), 0] {
            let proposals = (0..<requests).map { r in
                DraftProposal(
                    tokens: (0..<k).map { i -> TokenID in
                        let row = rows[r * (k + 1) + i]
                        // The argmax for even requests (often accepted), a low token for odd ones.
                        return TokenID(
                            r % 2 == 0
                                ? row.indices.max { row[$0] < row[$1] }! : row.indices.min { row[$0] < row[$1] }!)
                    }, probabilities: [0.9, 0.6, 1])
            }
            let parameters = (0..<requests).map {
                SamplingParameters(temperature: temperature, nSigma: 1.5, seed: UInt64($0))
            }
            let steps = (0..<requests).map { UInt64($0 * 3) }
            let outcomes = sampler.verify(
                logits: Array(rows.joined()), k: k, proposals: proposals, parameters: parameters, steps: steps)
            var acceptedSome = 0
            for r in 0..<requests {
                let expected = try outcomes[r].get()
                let block = Array(rows[(r * (k + 1))..<((r + 1) * (k + 1))].joined())
                let got = try #require(
                    block.withUnsafeBufferPointer {
                        opponent.verify(
                            $0, tokens: proposals[r].tokens, q: proposals[r].probabilities, n: 1.5,
                            temperature: temperature, seed: UInt64(r), step: steps[r])
                    })
                #expect(got.accepted == expected.accepted && got.tokens == expected.tokens, "request \(r)")
                #expect(zip(got.logProbabilities, expected.logProbabilities).allSatisfy { abs($0 - $1) < 1e-6 })
                if expected.accepted > 0 { acceptedSome += 1 }
            }
            #expect(acceptedSome > 10)
        }
    }
}
