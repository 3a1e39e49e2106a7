import Foundation
import Testing
import TopNSigma
import TopNSigmaBaselines

/// The benchmark's opponents are correct: checked against the float64 reference.
@Suite struct BaselineTests {
    /// The top-p kept set written from the definition: probabilities in double precision, sorted
    /// descending with ties by lower id, the shortest prefix whose mass reaches p.
    func referenceTopP(_ row: [Float], p: Double, temperature: Double) -> [(Int, Double)] {
        let finite = row.indices.filter { row[$0] != -.infinity }
        let maximum = finite.map { Double(row[$0]) }.max()!
        let weights = finite.map { Foundation.exp((Double(row[$0]) - maximum) / temperature) }
        let total = weights.reduce(0, +)
        let ordered = zip(finite, weights.map { $0 / total }).sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        var mass = 0.0
        var kept: [(Int, Double)] = []
        for (token, probability) in ordered {
            kept.append((token, probability))
            mass += probability
            if mass >= p { break }
        }
        return kept.map { ($0.0, $0.1 / mass) }
    }

    @Test("sort-based top-p keeps the reference set on real rows", arguments: [(0.9, 1.0), (0.5, 0.7), (0.95, 2.0)])
    func sortTopPKeptSets(p: Double, temperature: Double) throws {
        var topP = SortTopP(vocabularySize: Fixture.logits.vocab)
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            let kept = try #require(
                row.withUnsafeBufferPointer { topP.keptSet($0, p: Float(p), temperature: Float(temperature)) })
            let reference = referenceTopP(row, p: Double(Float(p)), temperature: Double(Float(temperature)))
            #expect(kept.map { Int($0.token) } == reference.map(\.0), "row \(r) p \(p) T \(temperature)")
            for (a, b) in zip(kept, reference) { #expect(Swift.abs(a.probability - b.1) < 1e-9) }
        }
    }

    @Test("sort-based top-p draws follow its kept distribution (chi-square, p > 1e-3)")
    func sortTopPDraws() throws {
        let row = Fixture.row(6)
        let reference = referenceTopP(row, p: 0.9, temperature: 1)
        var topP = SortTopP(vocabularySize: row.count)
        var observed: [Int: Int] = [:]
        let draws = 3000
        for step in 0..<draws {
            let token = try #require(
                row.withUnsafeBufferPointer { topP.sample($0, p: 0.9, temperature: 1, seed: 5, step: UInt64(step)) })
            observed[Int(token.token), default: 0] += 1
            let probability = reference.first { $0.0 == token.token }?.1
            #expect(probability != nil)
            #expect(Swift.abs(token.logProbability - Foundation.log(probability ?? 1)) < 1e-6)
        }
        let (statistic, dof) = chiSquare(
            observed: observed, expected: Dictionary(uniqueKeysWithValues: reference.map { ($0.0, $0.1) }), draws: draws
        )
        #expect(chiSquarePValue(statistic, degreesOfFreedom: dof) > 1e-3, "chi-square \(statistic)")
    }

    @Test("naive Top-nσ: kept count, kept tokens and log-probabilities match the reference", arguments: [0.5, 1.0, 2.0])
    func naiveAgainstReference(n: Double) throws {
        var naive = NaiveTopNSigma(vocabularySize: Fixture.logits.vocab)
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            let distribution = Reference.distribution(row, n: n, temperature: 1.3)
            for step in 0..<10 {
                let token = try #require(
                    row.withUnsafeBufferPointer {
                        naive.sample($0, n: Float(n), temperature: 1.3, seed: 3, step: UInt64(step))
                    })
                #expect(token.candidateCount == distribution.count)
                let probability = try #require(
                    distribution[Int(token.token)], "row \(r): token \(token.token) not kept")
                #expect(Swift.abs(token.logProbability - Foundation.log(probability)) < 1e-4)
            }
        }
        // Masked tokens and invalid rows.
        var masked = Fixture.row(2)
        for i in stride(from: 0, to: masked.count, by: 2) { masked[i] = -.infinity }
        let token = try #require(
            masked.withUnsafeBufferPointer { naive.sample($0, n: Float(n), temperature: 1, seed: 1, step: 0) })
        #expect(Reference.kept(masked, n: n).contains(Int(token.token)))
        var bad = Fixture.row(0)
        bad[5] = .nan
        #expect(bad.withUnsafeBufferPointer { naive.sample($0, n: 1, temperature: 1, seed: 1, step: 0) } == nil)
    }

    @Test("synthetic rows resemble real ones: Top-nσ at n = 1 keeps a median of 2–12 tokens, at most a few hundred")
    func syntheticShape() throws {
        for vocab in [32_000, 128_256] {
            let rows = 32
            let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 11)
            let kept = try (0..<rows).map { r in
                try filterTopNSigma(Array(logits[(r * vocab)..<((r + 1) * vocab)]), n: 1).get().kept.count
            }.sorted()
            #expect((2...12).contains(kept[rows / 2]), "vocab \(vocab): median kept \(kept[rows / 2])")
            #expect(kept.last! <= 400, "vocab \(vocab): max kept \(kept.last!)")
        }
    }
}
