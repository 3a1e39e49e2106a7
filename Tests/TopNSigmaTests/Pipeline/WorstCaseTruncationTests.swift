import Foundation
import Testing
import TopNSigma
import TopNSigmaBaselines

/// top-k and top-p on the rows that defeat quickselect pivots (organ pipe, sorted, reverse sorted,
/// McIlroy's adversary against the former and the current pivot rule): the kept sets equal the
/// sort-based float64 reference. How long they take is measured by `Fuzz/`'s `worst-case`
/// executable (a CI step), never here.
@Suite struct WorstCaseTruncationTests {
    static func parameters(vocab: Int) -> [SamplingParameters] {
        var cases: [SamplingParameters] = []
        for k in [1, 2, 3, vocab / 2, vocab / 2 + 1, vocab - 1] {
            cases.append(SamplingParameters(nSigma: nil, topK: k))
        }
        for (p, t) in [(Float(0.5), Float(1)), (0.9, 1), (0.9, 5), (0.99, 0.5), (0.999, 20)] {
            cases.append(SamplingParameters(temperature: t, nSigma: nil, topP: p))
        }
        cases.append(SamplingParameters(temperature: 3, nSigma: nil, topK: vocab / 3, topP: 0.9))
        cases.append(SamplingParameters(temperature: 2, nSigma: 2, topK: vocab / 4, topP: 0.95, minP: 0.5))
        return cases
    }

    static func check(_ row: [Float], _ name: String) throws {
        for parameters in Self.parameters(vocab: row.count) {
            let got = try FilteredDistribution.of(row, parameters: parameters).kept
            let expected = Reference.truncated(row, parameters)
            #expect(got.map { Int($0.token) } == expected.map { Int($0.token) }, "\(name) \(parameters)")
            if got.count == expected.count {
                let worst = zip(got, expected).map { Swift.abs($0.probability - $1.probability) }.max() ?? 0
                #expect(worst < 1e-9, "\(name) \(parameters)")
            }
        }
    }

    @Test("organ-pipe rows (ties across the peak) keep the reference's sets", arguments: [20_000, 20_001])
    func organPipe(vocab: Int) throws {
        try Self.check(AdversarialLogits.organPipe(vocab: vocab), "organ pipe \(vocab)")
    }

    @Test("sorted and reverse-sorted rows keep the reference's sets", arguments: [true, false])
    func sortedRows(ascending: Bool) throws {
        try Self.check(AdversarialLogits.sorted(vocab: 20_000, ascending: ascending), "sorted ascending \(ascending)")
    }

    @Test("McIlroy's adversary against the former first/middle/last pivot")
    func mcIlroyFormerPivot() throws {
        let vocab = 6_000
        let (row, partitions) = AdversarialLogits.mcIlroy(vocab: vocab, k: vocab / 2, pivot: .firstMiddleLast)
        // The row is adversarial: the former quickselect needed a partition per one or two candidates.
        #expect(partitions >= vocab / 4, "\(partitions) partitions")
        #expect(Set(row).count == vocab)
        try Self.check(row, "McIlroy (first/middle/last)")
    }

    @Test("McIlroy's adversary against the current sampled pivot: the heapsort fallback keeps the same sets")
    func mcIlroySampledPivot() throws {
        for vocab in [20_000, 4_097] {
            let (row, partitions) = AdversarialLogits.mcIlroy(vocab: vocab, k: vocab / 2, pivot: .sampled)
            // The simulated selection used its whole partition budget (2·⌈log2 V⌉ + 4) without
            // finishing, so the kernel, taking the same partitions, finishes by heapsort.
            #expect(partitions == 2 * (Int.bitWidth - vocab.leadingZeroBitCount) + 4)
            #expect(Set(row).count == vocab)
            try Self.check(row, "McIlroy (sampled) \(vocab)")
        }
    }

    @Test("the sampler draws from the reference's set on adversarial rows, with its log-probability")
    func samplerOnAdversarialRows() throws {
        let vocab = 20_000
        let rows = [
            AdversarialLogits.organPipe(vocab: vocab),
            AdversarialLogits.mcIlroy(vocab: vocab, k: vocab / 2, pivot: .sampled).row,
            AdversarialLogits.sorted(vocab: vocab, ascending: false)
        ]
        let parameters = [
            SamplingParameters(temperature: 5, nSigma: nil, seed: 1, topP: 0.9),
            SamplingParameters(temperature: 1, nSigma: nil, seed: 2, topK: vocab / 2),
            SamplingParameters(temperature: 1, nSigma: nil, seed: 3, topK: vocab / 2, topP: 0.5)
        ]
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
        for row in rows {
            for p in parameters {
                let expected = Dictionary(
                    uniqueKeysWithValues: Reference.truncated(row, p).map { ($0.token, $0.probability) })
                for step in 0..<5 {
                    let token = try sampler.sample(logits: row, parameters: [p], steps: [UInt64(step)])[0].get()
                    let probability = try #require(expected[Int(token.token)], "token \(token.token) not kept, \(p)")
                    #expect(token.candidateCount == expected.count)
                    #expect(Swift.abs(token.logProbability - Foundation.log(probability)) < 1e-6)
                }
            }
        }
    }
}
