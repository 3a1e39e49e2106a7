import Foundation
import Testing
import TopNSigma
import TopNSigmaBaselines

/// DRY's oracle: ``NaiveDry`` (TopNSigmaBaselines, position by position, no Z-algorithm),
/// applied after the other processing steps (``ProcessingReference``).
enum DryReference {
    static func penalties(_ q: RequestProcessing) -> [Int: Float] {
        NaiveDry.penalties(
            context: q.promptTokens + q.outputTokens, multiplier: q.dryMultiplier, base: q.dryBase,
            allowedLength: q.dryAllowedLength, penaltyLastN: q.dryPenaltyLastN, breakers: q.drySequenceBreakers)
    }

    /// The processed row: the other steps (``ProcessingReference``), then DRY's penalty subtracted.
    static func process(_ row: [Float], _ q: RequestProcessing) -> [Float] {
        var v = ProcessingReference.process(row, q)
        for (t, p) in penalties(q) where v[t] > -.infinity { v[t] -= p }
        return v
    }
}

@Suite struct DryTests {
    /// Every token's processed logit through the library (`filter` at T = 1 with no truncation
    /// keeps every finite token), by id.
    func processed(_ row: [Float], _ q: RequestProcessing) throws -> [Float] {
        let kept = try FilteredDistribution.of(
            row, parameters: SamplingParameters(temperature: 1, nSigma: nil), processing: q
        )
        .kept
        var v = [Float](repeating: -.infinity, count: row.count)
        for k in kept { v[Int(k.token)] = k.logit }
        return v
    }

    @Test("llama.cpp's test-sampling.cpp DRY cases")
    func llamaCases() throws {
        // (probabilities, context, expected, multiplier, base, allowed length, last n, breakers)
        let cases: [([Float], [Int32], [Float], Float, Float, Int, Int, [[Int32]])] = [
            ([0.25, 0.25, 0.25, 0.25], [0, 1], [0.25, 0.25, 0.25, 0.25], 1, 1.1, 2, 4, []),
            ([0.25, 0.25, 0.25, 0.25], [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1, 1.1, 2, 5, []),
            ([0.2, 0.2, 0.2, 0.2, 0.2], [0, 1, 3, 4, 0, 1], [0.2, 0.2, 0.2, 0.2, 0.2], 1, 1.1, 2, 6, [[3]]),
            (
                [0.2, 0.2, 0.2, 0.2, 0.2], [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2, 1.1,
                2, 5, []
            ),
            ([0.2, 0.2, 0.2, 0.2, 0.2], [0, 1, 2, 3, 4, 0, 1], [0.2, 0.2, 0.2, 0.2, 0.2], 1, 1.1, 4, 7, [])
        ]
        for (probabilities, context, expected, m, b, allowed, lastN, breakers) in cases {
            let q = RequestProcessing(
                outputTokens: context, dryMultiplier: m, dryBase: b, dryAllowedLength: allowed, dryPenaltyLastN: lastN,
                drySequenceBreakers: breakers)
            let kept = try FilteredDistribution.of(
                probabilities.map { logf($0) }, parameters: SamplingParameters(temperature: 1, nSigma: nil),
                processing: q
            ).kept.sorted { $0.token < $1.token }
            #expect(kept.map { Int($0.token) } == Array(0..<expected.count))
            for (k, e) in zip(kept, expected) { #expect(Swift.abs(k.probability - Double(e)) < 1e-5, "\(context)") }
        }
    }

    @Test("a hand-worked window: a b c c b c y a b c")
    func handWorked() throws {
        // llama.cpp's own example: the last three tokens (a b c) also end at the first c, so c
        // (which followed there) would make a repeat of 3; c alone ends at index 3, so b would
        // make 1; b c ends at index 5, so y would make 2. With allowed length 1, base 2 and
        // multiplier 1: c loses 2^2, y 2^1, b 2^0.
        let (a, b, c, y): (Int32, Int32, Int32, Int32) = (0, 1, 2, 3)
        let q = RequestProcessing(
            promptTokens: [a, b, c], outputTokens: [c, b, c, y, a, b, c], dryMultiplier: 1, dryBase: 2,
            dryAllowedLength: 1)
        let v = try processed([Float](repeating: 0, count: 5), q)
        #expect(v == [0, -1, -4, -2, 0])
        // A one-token breaker at y bounds every repeat to the 3 tokens after it, and is never penalized.
        var broken = q
        broken.drySequenceBreakers = [[y]]
        #expect(try processed([Float](repeating: 0, count: 5), broken) == [0, -1, -4, 0, 0])
        // A two-token breaker "y a" bounds the repeats to the two tokens after it: c's repeat is 2.
        broken.drySequenceBreakers = [[y, a]]
        #expect(try processed([Float](repeating: 0, count: 5), broken) == [0, -1, -2, -2, 0])
    }

    /// A random request over a small alphabet (so repeats are common), with random DRY settings.
    static func randomRequest(vocab: Int, seed: UInt64) -> RequestProcessing {
        var random = TestRandom(seed: seed)
        let alphabet = Int(random.next() % 5) + 2
        let token = { Int32(truncatingIfNeeded: random.next() % UInt64(alphabet)) }
        let length = Int(random.next() % 200)
        let split = length == 0 ? 0 : Int(random.next() % UInt64(length))
        let context = (0..<length).map { _ in token() }
        let bases: [Float] = [1, 1.0000005, 1.1, 1.75, 3, 1e20, 3e38]
        var q = RequestProcessing(
            promptTokens: Array(context[..<split]), outputTokens: Array(context[split...]),
            dryMultiplier: [0.5, 1, 2, 1e-3][Int(random.next() % 4)], dryBase: bases[Int(random.next() % 7)],
            dryAllowedLength: Int(random.next() % 4), dryPenaltyLastN: [-1, -1, 1, 7, 50, 1000][Int(random.next() % 6)])
        q.drySequenceBreakers = (0..<Int(random.next() % 4)).map { _ in
            (0...Int(random.next() % 3)).map { _ in token() }
        }
        if random.next() % 3 == 0 { q.repetitionPenalty = 1.2 }
        if random.next() % 3 == 0 { q.logitBias = [LogitBias(token: token(), bias: 1.5)] }
        if random.next() % 4 == 0 {
            q.allowedTokens =
                [UInt32(truncatingIfNeeded: random.next()) | 1] + [UInt32](repeating: ~0, count: vocab / 32)
        }
        return q
    }

    @Test("processed logits equal the position-by-position reference bit for bit", arguments: 0..<4)
    func randomContexts(batch: Int) throws {
        let vocab = 40
        for s in 0..<150 {
            let seed = UInt64(batch * 1000 + s)
            var random = TestRandom(seed: seed ^ 0xABCD)
            let row = (0..<vocab).map { _ in Float(random.gaussian()) }
            let q = Self.randomRequest(vocab: vocab, seed: seed)
            let expected = DryReference.process(row, q)
            let got = try processed(row, q)
            #expect(got == expected, "seed \(seed): \(q)")
        }
    }

    @Test("long windows: past the scratch's Z-value space, a base with no exponent cap, real rows")
    func longWindows() throws {
        // Vocabulary 8: the Z-values need more than 2 × 8 slots, so they are allocated.
        var random = TestRandom(seed: 3)
        let periodic = (0..<3000).map { i in Int32(i % 7 == 6 ? Int(random.next() % 8) : i % 5) }
        for base: Float in [1.0000005, 1.75, 1] {
            let q = RequestProcessing(outputTokens: periodic, dryMultiplier: 0.8, dryBase: base, dryAllowedLength: 3)
            let row = (0..<8).map { _ in Float(random.gaussian()) }
            #expect(try processed(row, q) == DryReference.process(row, q), "base \(base)")
        }
        // A real row with a server-like history that repeats itself.
        let row = Fixture.row(2)
        var history = (0..<300).map { _ in Int32(truncatingIfNeeded: random.next() % UInt64(row.count)) }
        history += history.prefix(120)
        let q = RequestProcessing(
            promptTokens: Array(history.prefix(200)), outputTokens: Array(history.dropFirst(200)),
            repetitionPenalty: 1.1, dryMultiplier: 0.8,
            drySequenceBreakers: [[history[10]], [history[250], history[251]]])
        #expect(try processed(row, q) == DryReference.process(row, q))
        #expect(!DryReference.penalties(q).isEmpty)
    }

    @Test("the draw samples the processed row: greedy takes its argmax, and it is the same at any thread count")
    func sampling() throws {
        let row = Fixture.row(4)
        let top = ProcessingReference.top(row, 1)[0]
        // The argmax followed token 7 earlier; the context ends with 7: DRY at allowed length 0
        // penalizes the argmax hard enough to move it.
        let q = RequestProcessing(
            outputTokens: [7, Int32(top), 9, 7], dryMultiplier: 100, dryBase: 1.75, dryAllowedLength: 0)
        let expected = ProcessingReference.top(DryReference.process(row, q), 1)[0]
        #expect(expected != top)
        for threads in [1, 2] {
            let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 2, threadCount: threads)
            let (results, _) = sampler.sample(
                logits: row + row, parameters: [SamplingParameters(temperature: 0), SamplingParameters(temperature: 0)],
                processing: [q, RequestProcessing()])
            #expect(try results[0].get().token == expected)
            #expect(try results[1].get().token == top)
        }
    }

    @Test("settings out of range fail their row; a multiplier of 0 reads nothing else")
    func errors() throws {
        let row: [Float] = [1, 2, 3, 4]
        func error(_ q: RequestProcessing) -> RowError? {
            if case .failure(let e) = filteredDistribution(
                row, parameters: SamplingParameters(nSigma: nil), processing: q)
            {
                return e
            }
            return nil
        }
        let bad: [(RequestProcessing, RowError)] = [
            (RequestProcessing(dryMultiplier: -1), .invalidSampler(name: "dry-multiplier", value: -1)),
            (RequestProcessing(dryMultiplier: .nan), .invalidSampler(name: "dry-multiplier", value: .nan)),
            (RequestProcessing(dryMultiplier: 1, dryBase: 0.5), .invalidSampler(name: "dry-base", value: 0.5)),
            (
                RequestProcessing(dryMultiplier: 1, dryBase: .infinity),
                .invalidSampler(name: "dry-base", value: .infinity)
            ),
            (
                RequestProcessing(dryMultiplier: 1, dryAllowedLength: -1),
                .invalidSampler(name: "dry-allowed-length", value: -1)
            ),
            (
                RequestProcessing(dryMultiplier: 1, dryPenaltyLastN: -2),
                .invalidSampler(name: "dry-penalty-last-n", value: -2)
            ),
            (
                RequestProcessing(dryMultiplier: 1, drySequenceBreakers: [[]]),
                .invalidSampler(name: "dry-sequence-breakers", value: 0)
            ),
            (
                RequestProcessing(
                    dryMultiplier: 1,
                    drySequenceBreakers: [[Int32]](repeating: [1], count: 1) + [Array(repeating: 1, count: 22)]),
                .invalidSampler(name: "dry-sequence-breakers", value: 22)
            ),
            (RequestProcessing(dryMultiplier: 1, drySequenceBreakers: [[1, 4]]), .tokenOutOfRange(4)),
            // Checked even when the window is empty or off.
            (RequestProcessing(dryMultiplier: 1, dryPenaltyLastN: 0, drySequenceBreakers: [[-1]]), .tokenOutOfRange(-1))
        ]
        for (q, expected) in bad {
            let got = error(q)
            #expect(got.map { "\($0)" } == "\(expected)", "\(q)")
            #expect(q.validationError(vocabularySize: row.count).map { "\($0)" } == "\(expected)")
        }
        // Multiplier 0: the rest is not read.
        let off = RequestProcessing(
            outputTokens: [1, 2, 1], dryMultiplier: 0, dryBase: -5, dryAllowedLength: -3, drySequenceBreakers: [[]])
        #expect(error(off) == nil)
        #expect(try processed(row, off) == row)
    }
}
