import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TopNSigma

/// The processed row written from the issue's definitions, token by token with dictionaries:
/// no code shared with the library's sparse-set and bitmask pass. Masked tokens become `-inf`.
enum ProcessingReference {
    static func process(_ row: [Float], _ q: RequestProcessing) -> [Float] {
        var bias: [Int: Float] = [:]
        for entry in q.logitBias { bias[Int(entry.token), default: 0] += entry.bias }
        var counts: [Int: Int] = [:]
        for t in q.outputTokens { counts[Int(t), default: 0] += 1 }
        let prompt = Set(q.promptTokens.map(Int.init))
        return row.indices.map { t in
            if let words = q.allowedTokens, (words[t / 32] >> UInt32(t % 32)) & 1 == 0 { return -.infinity }
            var v = row[t]
            if let b = bias[t] { v = v + b }
            let count = counts[t] ?? 0
            if q.repetitionPenalty != 1 && (prompt.contains(t) || count > 0) {
                v = v > 0 ? v / q.repetitionPenalty : v * q.repetitionPenalty
            }
            if count > 0 {
                v -= q.frequencyPenalty * Float(count)
                v -= q.presencePenalty
            }
            return v
        }
    }

    /// log_softmax at T = 1 over the finite values, in double precision.
    static func logSoftmax(_ v: [Float]) -> [Double] {
        let m = Double(v.filter { $0 > -.infinity }.max()!)
        let z = v.filter { $0 > -.infinity }.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) }
        return v.map { $0 > -.infinity ? Double($0) - m - Foundation.log(z) : -.infinity }
    }

    /// The `n` most probable tokens (ties: lower id first).
    static func top(_ v: [Float], _ n: Int) -> [Int] {
        Array(v.indices.filter { v[$0] > -.infinity }.sorted { v[$0] > v[$1] || (v[$0] == v[$1] && $0 < $1) }.prefix(n))
    }
}

/// A grammar-like bitmask: runs of allowed and masked words, with mixed words at the seams.
func grammarMask(vocab: Int, seed: UInt64) -> [UInt32] {
    var random = TestRandom(seed: seed)
    var words = [UInt32](repeating: 0, count: (vocab + 31) / 32)
    var w = 0
    var allowed = true
    while w < words.count {
        let run = 1 + Int(random.next() % 40)
        for k in w..<min(words.count, w + run) { words[k] = allowed ? ~0 : 0 }
        if w + run < words.count { words[w + run - 1] = UInt32(truncatingIfNeeded: random.next()) }
        w += run
        allowed.toggle()
    }
    return words
}

@Suite struct RequestProcessingTests {
    /// A request with every step on, over `vocab` tokens.
    func fullRequest(vocab: Int, seed: UInt64, topLogprobs: Int? = 20) -> RequestProcessing {
        var random = TestRandom(seed: seed)
        let token = { Int32(truncatingIfNeeded: random.next() % UInt64(vocab)) }
        var q = RequestProcessing(allowedTokens: grammarMask(vocab: vocab, seed: seed))
        q.logitBias = (0..<20).map { _ in LogitBias(token: token(), bias: Float(Int(random.next() % 21)) - 10) }
        q.promptTokens = (0..<256).map { _ in token() }
        q.outputTokens = (0..<256).map { _ in token() }
        q.repetitionPenalty = 1.3
        q.frequencyPenalty = 0.4
        q.presencePenalty = 0.6
        q.topLogprobs = topLogprobs
        return q
    }

    /// Checks `filter` on the processed row against the float64 reference: statistics and the
    /// exact kept set.
    func checkFilter(
        _ row: [Float], _ q: RequestProcessing, n: Float = 1, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let processed = ProcessingReference.process(row, q)
        let reference = try Reference.statistics(processed).get()
        let filtered = try FilteredDistribution.of(
            row, parameters: SamplingParameters(temperature: 1, nSigma: n), processing: q)
        let s = filtered.statistics
        #expect(Double(s.maximum) == reference.maximum, sourceLocation: sourceLocation)
        #expect(s.argmax == reference.argmax, sourceLocation: sourceLocation)
        #expect(s.finiteCount == reference.count, sourceLocation: sourceLocation)
        #expect(
            Swift.abs(s.mean - reference.mean) <= 1e-6 * Swift.max(Swift.abs(reference.mean), reference.std, 1e-30),
            sourceLocation: sourceLocation)
        #expect(
            Swift.abs(s.standardDeviation - reference.std) <= 1e-6 * reference.std + 1e-12,
            sourceLocation: sourceLocation)
        #expect(
            filtered.kept.map { Int($0.token) }.sorted() == Reference.kept(processed, n: Double(n)),
            sourceLocation: sourceLocation)
    }

    @Test("each step and their combination match the float64 reference on real rows", arguments: 0..<8)
    func realRows(row r: Int) throws {
        let row = Fixture.row(r)
        let vocab = row.count
        let full = fullRequest(vocab: vocab, seed: UInt64(r))
        try checkFilter(row, RequestProcessing(allowedTokens: full.allowedTokens))
        try checkFilter(row, RequestProcessing(logitBias: full.logitBias))
        try checkFilter(
            row,
            RequestProcessing(promptTokens: full.promptTokens, outputTokens: full.outputTokens, repetitionPenalty: 1.3))
        try checkFilter(
            row, RequestProcessing(outputTokens: full.outputTokens, frequencyPenalty: 0.4, presencePenalty: 0.6))
        try checkFilter(row, full)
        try checkFilter(row, full, n: 3)
    }

    @Test("adversarial rows: masked argmax, one token left, bias onto a masked token, penalties that move the argmax")
    func adversarial() throws {
        let vocab = 10_000
        var random = TestRandom(seed: 5)
        var row = random.row(count: vocab)
        row[4321] = 80  // a far argmax
        // The argmax masked.
        var words = [UInt32](repeating: ~0, count: (vocab + 31) / 32)
        words[4321 / 32] &= ~(1 << UInt32(4321 % 32))
        try checkFilter(row, RequestProcessing(allowedTokens: words))
        // Everything masked but one token: that token, std 0.
        var one = [UInt32](repeating: 0, count: words.count)
        one[77 / 32] = 1 << UInt32(77 % 32)
        try checkFilter(row, RequestProcessing(allowedTokens: one))
        let onlyOne = try FilteredDistribution.of(
            row, parameters: SamplingParameters(), processing: RequestProcessing(allowedTokens: one))
        #expect(onlyOne.kept.map { Int($0.token) } == [77])
        // A bias onto a masked token leaves it masked.
        let masked = RequestProcessing(
            allowedTokens: words, logitBias: [LogitBias(token: 4321, bias: 100), LogitBias(token: 5, bias: 3)])
        try checkFilter(row, masked)
        let f = try FilteredDistribution.of(row, parameters: SamplingParameters(), processing: masked)
        #expect(!f.kept.contains { $0.token == 4321 })
        // Penalties that move the argmax: the far token repeated in the output.
        let penalized = RequestProcessing(
            outputTokens: [4321, 4321, 4321], repetitionPenalty: 4, frequencyPenalty: 5, presencePenalty: 10)
        try checkFilter(row, penalized)
        let moved = try FilteredDistribution.of(row, parameters: SamplingParameters(), processing: penalized)
        #expect(moved.statistics.argmax != 4321)
        // A masked NaN is ignored; an allowed NaN fails the row.
        var nan = row
        nan[4321] = .nan
        try checkFilter(nan, RequestProcessing(allowedTokens: words))
        #expect(throws: RowError.notANumber(index: 4321)) {
            try FilteredDistribution.of(
                nan, parameters: SamplingParameters(),
                processing: RequestProcessing(logitBias: [LogitBias(token: 4321, bias: 1)]))
        }
        // Nothing left.
        #expect(throws: RowError.noFiniteLogit) {
            try FilteredDistribution.of(
                row, parameters: SamplingParameters(),
                processing: RequestProcessing(allowedTokens: [UInt32](repeating: 0, count: words.count))
            )
        }
    }

    @Test("per-row typed errors fail only their row")
    func errors() throws {
        let vocab = 1000
        var random = TestRandom(seed: 1)
        let row = random.row(count: vocab)
        let cases: [(RequestProcessing, RowError)] = [
            (RequestProcessing(logitBias: [LogitBias(token: 3, bias: .nan)]), .invalidLogitBias(token: 3, .nan)),
            (
                RequestProcessing(logitBias: [LogitBias(token: 3, bias: .infinity)]),
                .invalidLogitBias(token: 3, .infinity)
            ),
            (RequestProcessing(repetitionPenalty: 0), .invalidRepetitionPenalty(0)),
            (RequestProcessing(repetitionPenalty: -1), .invalidRepetitionPenalty(-1)),
            (RequestProcessing(frequencyPenalty: .infinity), .invalidFrequencyPenalty(.infinity)),
            (RequestProcessing(logitBias: [LogitBias(token: 1000, bias: 1)]), .tokenOutOfRange(1000)),
            (RequestProcessing(outputTokens: [-1], presencePenalty: 1), .tokenOutOfRange(-1)),
            (
                RequestProcessing(allowedTokens: [UInt32](repeating: ~0, count: 31)),
                .bitmaskTooShort(words: 31, needed: 32)
            ),
            (RequestProcessing(topLogprobs: 21), .invalidTopLogprobs(21)),
            (RequestProcessing(topLogprobs: -1), .invalidTopLogprobs(-1)),
            // The settings come before the token ids (found by the fuzzer: -3 passed as "none").
            (
                RequestProcessing(logitBias: [LogitBias(token: 1000, bias: 1)], topLogprobs: -3),
                .invalidTopLogprobs(-3)
            )
        ]
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 2, threadCount: 1)
        for (q, expected) in cases {
            let (results, _) = sampler.sample(
                logits: row + row, parameters: [SamplingParameters(), SamplingParameters()],
                processing: [q, RequestProcessing()])
            if case .failure(let error) = results[0] {
                // NaN payloads compare unequal: compare descriptions.
                #expect(error.description == expected.description)
            } else {
                Issue.record("expected \(expected), got a token")
            }
            #expect((try? results[1].get()) != nil)
            // The single-row filter checks the same way.
            let filtered = Result { () throws(RowError) in
                try FilteredDistribution.of(row, parameters: SamplingParameters(), processing: q)
            }
            if case .failure(let error) = filtered {
                #expect(error.description == expected.description)
            } else {
                Issue.record("filter: expected \(expected), got a distribution")
            }
        }
    }

    @Test("draws follow the processed distribution (chi-square, p > 1e-3)")
    func chiSquareProcessed() throws {
        let row = Fixture.row(3)
        var q = fullRequest(vocab: row.count, seed: 11, topLogprobs: nil)
        // Make the bias matter: lift a token near the top.
        q.logitBias.append(
            LogitBias(token: Int32(ProcessingReference.top(ProcessingReference.process(row, q), 3)[2]), bias: 1.5))
        let processed = ProcessingReference.process(row, q)
        let expected = Reference.distribution(processed, n: 2, temperature: 1)
        #expect(expected.count >= 3)
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
        var observed: [Int: Int] = [:]
        let draws = 4000
        for step in 0..<draws {
            let (results, _) = sampler.sample(
                logits: row, parameters: [SamplingParameters(temperature: 1, nSigma: 2, seed: 9)], processing: [q],
                steps: [UInt64(step)])
            let token = try results[0].get()
            #expect(expected[Int(token.token)] != nil)
            observed[Int(token.token), default: 0] += 1
        }
        let (statistic, dof) = chiSquare(observed: observed, expected: expected, draws: draws)
        #expect(chiSquarePValue(statistic, degreesOfFreedom: dof) > 1e-3, "chi-square \(statistic) with \(dof) dof")
    }

    @Test("top logprobs, the sampled logprob and rank match the float64 reference", arguments: [0, 1, 5, 20])
    func topLogprobs(n: Int) throws {
        for r in [0, 4, 7] {
            let row = Fixture.row(r)
            for q in [
                RequestProcessing(topLogprobs: n), fullRequest(vocab: row.count, seed: UInt64(r + 40), topLogprobs: n)
            ] {
                let processed = ProcessingReference.process(row, q)
                let logSoftmax = ProcessingReference.logSoftmax(processed)
                for temperature: Float in [0, 0.8] {
                    let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
                    let (results, logprobs) = sampler.sample(
                        logits: row, parameters: [SamplingParameters(temperature: temperature, nSigma: 1.5, seed: 3)],
                        processing: [q])
                    let token = Int(try results[0].get().token)
                    let lp = logprobs[0]
                    #expect(lp.entries.map { Int($0.token) } == ProcessingReference.top(processed, n))
                    for entry in lp.entries { #expect(Swift.abs(entry.logprob - logSoftmax[Int(entry.token)]) <= 2e-6) }
                    #expect(Swift.abs(lp.sampledLogprob - logSoftmax[token]) <= 2e-6)
                    #expect(lp.sampledRank == processed.filter { $0 >= processed[token] }.count)
                }
            }
        }
    }

    @Test("greedy ties: rank counts every token at the maximum")
    func greedyRank() throws {
        var row = [Float](repeating: 0, count: 9000)
        for t in [17, 4000, 8999] { row[t] = 5 }
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
        let (results, logprobs) = sampler.sample(
            logits: row, parameters: [SamplingParameters(temperature: 0)],
            processing: [RequestProcessing(topLogprobs: 2)])
        #expect(try results[0].get().token == 17)
        #expect(logprobs[0].sampledRank == 3)
        #expect(logprobs[0].entries.map { Int($0.token) } == [17, 4000])
    }

    @Test("tokens, logprobs and errors are identical across thread counts, batch sizes and row order")
    func determinism() throws {
        let vocab = 128_256 / 4
        let rows = 6
        var random = TestRandom(seed: 77)
        let logits = (0..<rows).flatMap { _ in random.row(count: vocab) }
        var processing = (0..<rows).map {
            fullRequest(vocab: vocab, seed: UInt64($0) + 100, topLogprobs: $0 % 2 == 0 ? 20 : nil)
        }
        processing[3].logitBias.append(LogitBias(token: 1, bias: .nan))  // a failing row
        let parameters = (0..<rows).map {
            SamplingParameters(temperature: $0 == 5 ? 0 : 0.9, nSigma: 1, seed: UInt64($0))
        }
        func run(threads: Int, order: [Int]) throws -> [String] {
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
            let (results, logprobs) = sampler.sample(
                logits: order.flatMap { Array(logits[($0 * vocab)..<(($0 + 1) * vocab)]) },
                parameters: order.map { parameters[$0] }, processing: order.map { processing[$0] })
            var lines = [String](repeating: "", count: rows)
            for (i, r) in order.enumerated() { lines[r] = "\(results[i]) \(logprobs[i])" }
            return lines
        }
        let reference = try run(threads: 1, order: Array(0..<rows))
        #expect(reference[3].contains("logit bias nan on token 1"))
        for threads in [2, 4, 12] {
            #expect(try run(threads: threads, order: Array(0..<rows)) == reference, "threads \(threads)")
        }
        #expect(try run(threads: 3, order: Array((0..<rows).reversed())) == reference)
        // One row alone (split over chunks) gives the same.
        for r in [0, 1, 5] {
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 4)
            let (results, logprobs) = sampler.sample(
                logits: Array(logits[(r * vocab)..<((r + 1) * vocab)]), parameters: [parameters[r]],
                processing: [processing[r]])
            #expect("\(results[0]) \(logprobs[0])" == reference[r])
        }
    }
}
