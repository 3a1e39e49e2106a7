import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import TopNSigma
import TopNSigmaBaselines

@Suite struct BatchSamplerTests {
    /// Draws `count` tokens from one row with steps 0..<count.
    func draws(_ row: [Float], parameters: SamplingParameters, count: Int, threads: Int = 1) throws -> [SampleResult] {
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: threads)
        return (0..<count).map { step in sampler.sample(logits: row, parameters: [parameters], steps: [UInt64(step)])[0]
        }
    }

    /// Chi-square goodness of fit of 4000 draws against the exact renormalized softmax over the
    /// kept set, on real logits rows (fixed seeds: deterministic). Bound: p-value > 1e-3.
    @Test(
        "draws follow the renormalized softmax over the kept set (chi-square, p > 1e-3)",
        arguments: [(2, Float(0.7)), (4, Float(1.0)), (6, Float(1.0)), (6, Float(2.0)), (7, Float(1.5))])
    func chiSquareOnRealRows(row r: Int, temperature: Float) throws {
        let row = Fixture.row(r)
        let n: Float = 1
        let expected = Reference.distribution(row, n: Double(n), temperature: Double(temperature))
        let drawCount = 4000
        var observed: [Int: Int] = [:]
        for result in try draws(
            row, parameters: SamplingParameters(temperature: temperature, nSigma: n, seed: UInt64(r) * 31 + 7),
            count: drawCount)
        {
            let token = try result.get()
            #expect(expected[Int(token.token)] != nil, "token \(token.token) is outside the kept set")
            #expect(token.candidateCount == expected.count)
            // Log-probability against the float64 reference.
            let reference = Foundation.log(expected[Int(token.token)] ?? 0)
            #expect(
                Swift.abs(token.logProbability - reference) <= 1e-4, "logprob \(token.logProbability) vs \(reference)")
            observed[Int(token.token), default: 0] += 1
        }
        let (statistic, dof) = chiSquare(observed: observed, expected: expected, draws: drawCount)
        let p = chiSquarePValue(statistic, degreesOfFreedom: dof)
        #expect(p > 1e-3, "row \(r) T=\(temperature): chi-square \(statistic) with \(dof) dof, p = \(p)")
    }

    @Test("nSigma nil samples every finite logit; masked tokens are never drawn")
    func filterOff() throws {
        let row: [Float] = [0.5, -.infinity, 1.0, 0.0, -.infinity, 2.0, 1.5, -1.0]
        let expected = Reference.distribution(row, n: nil, temperature: 1)
        #expect(expected.count == 6)
        var observed: [Int: Int] = [:]
        let drawCount = 6000
        for result in try draws(
            row, parameters: SamplingParameters(temperature: 1, nSigma: nil, seed: 99), count: drawCount)
        {
            let token = try result.get()
            #expect(row[Int(token.token)] > -.infinity)
            #expect(token.candidateCount == 6)
            observed[Int(token.token), default: 0] += 1
        }
        let (statistic, dof) = chiSquare(observed: observed, expected: expected, draws: drawCount)
        #expect(chiSquarePValue(statistic, degreesOfFreedom: dof) > 1e-3, "chi-square \(statistic)")
    }

    @Test("T = 0 is greedy: the lowest index among ties, log-probability 0")
    func greedy() throws {
        var row = [Float](repeating: 0, count: 10_000)
        row[7_000] = 5
        row[9_000] = 5
        for threads in [1, 3] {
            let token = try draws(
                row, parameters: SamplingParameters(temperature: 0, nSigma: 1, seed: 1), count: 1, threads: threads)[0]
                .get()
            #expect(token == SampledToken(token: 7_000, logProbability: 0, candidateCount: 1))
        }
    }

    @Test("bad rows fail alone; every other row gets the token it gets on its own")
    func mixedBatch() throws {
        var random = TestRandom(seed: 21)
        let vocab = 5000
        var rows = (0..<8).map { _ in random.row(count: vocab) }
        rows[1][17] = .nan
        rows[3][4999] = .infinity
        rows[5] = [Float](repeating: -.infinity, count: vocab)
        var parameters = (0..<8).map { SamplingParameters(temperature: 1, nSigma: 1.5, seed: UInt64($0)) }
        parameters[6].temperature = -1
        parameters[7].nSigma = .nan
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 8, threadCount: 2)
        let results = sampler.sample(
            logits: rows.flatMap { $0 }, parameters: parameters, steps: [UInt64](repeating: 3, count: 8))
        #expect(throws: RowError.notANumber(index: 17)) { try results[1].get() }
        #expect(throws: RowError.positiveInfinity(index: 4999)) { try results[3].get() }
        #expect(throws: RowError.noFiniteLogit) { try results[5].get() }
        #expect(throws: RowError.invalidTemperature(-1)) { try results[6].get() }
        if case .failure(.invalidNSigma(let n)) = results[7] {
            #expect(n.isNaN)
        } else {
            Issue.record("row 7: \(results[7])")
        }
        for r in [0, 2, 4] {
            let alone = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
                .sample(logits: rows[r], parameters: [parameters[r]], steps: [3])[0]
            #expect(try results[r].get() == (try alone.get()), "row \(r)")
        }
    }

    @Test("split rows (fewer rows than threads) fail alone too, with the first bad index")
    func splitRowErrors() throws {
        var random = TestRandom(seed: 41)
        let vocab = 20_000
        var rows = (0..<2).map { _ in random.row(count: vocab) }
        rows[0][15_000] = .infinity
        rows[0][19_000] = .nan
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 2, threadCount: 4)
        let parameters = [SamplingParameters(seed: 1), SamplingParameters(seed: 2)]
        let results = sampler.sample(logits: rows.flatMap { $0 }, parameters: parameters, steps: [9, 9])
        #expect(throws: RowError.positiveInfinity(index: 15_000)) { try results[0].get() }
        let alone = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
            .sample(logits: rows[1], parameters: [parameters[1]], steps: [9])[0]
        #expect(try results[1].get() == alone.get())
        let masked = sampler.sample(
            logits: [Float](repeating: -.infinity, count: vocab), parameters: [SamplingParameters()])
        #expect(throws: RowError.noFiniteLogit) { try masked[0].get() }
    }

    @Test("tokens do not depend on thread count, batch size or row position", arguments: [49_152, 128_256])
    func determinism(vocab: Int) throws {
        let rows = 6
        var block = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 5)
        if vocab == Fixture.logits.vocab { block = Array(Fixture.logits.values[0..<(rows * vocab)]) }
        let parameters = (0..<rows).map {
            SamplingParameters(temperature: [0.7, 1, 1.3][$0 % 3], nSigma: [1, 2, 0.5][$0 % 3], seed: UInt64(100 + $0))
        }
        let steps = (0..<rows).map { UInt64($0 * 11) }
        let reference = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
            .sample(logits: block, parameters: parameters, steps: steps).map { try $0.get() }
        for (threads, executor) in [
            (2, BatchSampler.Executor.workerPool), (3, .workerPool), (8, .workerPool), (2, .concurrentPerform),
            (5, .concurrentPerform)
        ] {
            let sampler = try BatchSampler(
                vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads, executor: executor)
            #expect(
                try sampler.sample(logits: block, parameters: parameters, steps: steps).map { try $0.get() }
                    == reference, "\(threads) threads")
            // Each row alone (split across the threads) and the batch reversed.
            for r in 0..<rows {
                let alone = sampler.sample(
                    logits: Array(block[(r * vocab)..<((r + 1) * vocab)]), parameters: [parameters[r]],
                    steps: [steps[r]])
                #expect(try alone[0].get() == reference[r], "row \(r) alone, \(threads) threads")
            }
            let order = Array((0..<rows).reversed())
            let reversed = sampler.sample(
                logits: order.flatMap { block[($0 * vocab)..<(($0 + 1) * vocab)] },
                parameters: order.map { parameters[$0] }, steps: order.map { steps[$0] })
            #expect(try reversed.map { try $0.get() } == order.map { reference[$0] }, "reversed, \(threads) threads")
        }
        // Inside a larger batch, with the rows twice.
        let big = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 2 * rows, threadCount: 2)
        let twice = big.sample(logits: block + block, parameters: parameters + parameters, steps: steps + steps)
        #expect(try twice.map { try $0.get() } == reference + reference)
    }

    @Test("the pointer API honours a row stride and leaves other slots alone")
    func pointerAPI() throws {
        var random = TestRandom(seed: 33)
        let vocab = 300, stride = 320, rows = 3
        var block = [Float](repeating: .nan, count: rows * stride)
        for r in 0..<rows { for i in 0..<vocab { block[r * stride + i] = Float(random.gaussian() * 3) } }
        let parameters = [SamplingParameters](
            repeating: SamplingParameters(temperature: 1, nSigma: 1, seed: 4), count: rows)
        let steps: [UInt64] = [0, 1, 2]
        var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: rows + 1)
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 4, threadCount: 2)
        block.withUnsafeBufferPointer { b in
            parameters.withUnsafeBufferPointer { p in
                steps.withUnsafeBufferPointer { s in
                    results.withUnsafeMutableBufferPointer { out in
                        sampler.sample(
                            logits: b.baseAddress!, rows: rows, rowStride: stride, parameters: p, steps: s, into: out)
                    }
                }
            }
        }
        for r in 0..<rows {
            let row = Array(block[(r * stride)..<(r * stride + vocab)])
            let token = try results[r].get()
            #expect(Reference.kept(row, n: 1).contains(Int(token.token)))
        }
        #expect(throws: RowError.noFiniteLogit) { try results[rows].get() }
    }

    @Test("the naive opponent draws the same tokens as the fused sampler on real rows")
    func naiveAgrees() throws {
        var naive = NaiveTopNSigma(vocabularySize: Fixture.logits.vocab)
        let sampler = try BatchSampler(vocabularySize: Fixture.logits.vocab, maximumBatchSize: 1, threadCount: 1)
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            for step in 0..<20 {
                let fused = try sampler.sample(
                    logits: row, parameters: [SamplingParameters(temperature: 1, nSigma: 1, seed: 8)],
                    steps: [UInt64(step)])[0].get()
                let slow = row.withUnsafeBufferPointer {
                    naive.sample($0, n: 1, temperature: 1, seed: 8, step: UInt64(step))
                }
                #expect(
                    slow?.token == fused.token && slow?.candidateCount == fused.candidateCount, "row \(r) step \(step)")
                #expect(Swift.abs((slow?.logProbability ?? 0) - fused.logProbability) < 1e-4)
            }
        }
    }
}

/// The thread-safety contract: overlapping calls on one sampler trap with a message instead of
/// corrupting each other's results.
@Suite struct SamplerContractTests {
    @Test("a second call entering while one runs on the same sampler traps")
    func overlappingCallsTrap() async {
        await #expect(processExitsWith: .failure) {
            let vocab = 128_256, rows = 64
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
            let logits = [Float](repeating: 0.5, count: vocab * rows)
            let parameters = [SamplingParameters](repeating: SamplingParameters(), count: rows)
            let started = Atomic<Bool>(false)
            let other = Thread {
                while !started.load(ordering: .acquiring) {}
                for _ in 0..<100 { _ = sampler.sample(logits: logits, parameters: parameters) }
            }
            other.start()
            started.store(true, ordering: .releasing)
            for _ in 0..<100 { _ = sampler.sample(logits: logits, parameters: parameters) }
        }
    }
}

/// Creating a sampler: sizes out of range are typed errors, never traps.
@Suite struct SamplerConfigurationTests {
    @Test("vocabulary, batch and thread counts out of range throw ConfigurationError")
    func invalidSizes() {
        #expect(throws: BatchSampler.ConfigurationError.invalidVocabularySize(0)) {
            try BatchSampler(vocabularySize: 0, maximumBatchSize: 1)
        }
        #expect(throws: BatchSampler.ConfigurationError.invalidVocabularySize(1 << 31)) {
            try BatchSampler(vocabularySize: 1 << 31, maximumBatchSize: 1)
        }
        #expect(throws: BatchSampler.ConfigurationError.invalidBatchSize(-3)) {
            try BatchSampler(vocabularySize: 10, maximumBatchSize: -3)
        }
        #expect(throws: BatchSampler.ConfigurationError.invalidThreadCount(0)) {
            try BatchSampler(vocabularySize: 10, maximumBatchSize: 1, threadCount: 0)
        }
        #expect(throws: BatchSampler.ConfigurationError.invalidThreadCount(BatchSampler.maximumThreadCount + 1)) {
            try BatchSampler(vocabularySize: 10, maximumBatchSize: 1, threadCount: BatchSampler.maximumThreadCount + 1)
        }
        #expect(BatchSampler.ConfigurationError.invalidThreadCount(0).description.contains("thread count 0"))
    }

    @Test("a sampler reports the threads it runs and the ones asked for")
    func threadCounts() throws {
        let sampler = try BatchSampler(vocabularySize: 100, maximumBatchSize: 2, threadCount: 3)
        #expect(sampler.requestedThreadCount == 3)
        #expect(sampler.threadCount == 3)
    }

    @Test(
        "when the system refuses threads, the pool runs with the ones it got and samples correctly",
        arguments: [0, 1, 3])
    func threadStartFailure(systemLimit: Int) throws {
        // The system starts `systemLimit` workers and refuses the rest (pthread_create's EAGAIN).
        let vocab = 5_000, rows = 4
        let sampler = try BatchSampler(
            vocabularySize: vocab, maximumBatchSize: rows, threadCount: 8, executor: .workerPool,
            spinMicroseconds: 50, placement: .automatic, topology: .current, systemThreadLimit: systemLimit)
        #expect(sampler.requestedThreadCount == 8)
        #expect(sampler.threadCount == systemLimit + 1)
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 2)
        let parameters = [SamplingParameters](repeating: SamplingParameters(seed: 9), count: rows)
        let reference = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
            .sample(logits: logits, parameters: parameters).map { try? $0.get() }
        #expect(!reference.contains(nil))
        for _ in 0..<3 {
            #expect(sampler.sample(logits: logits, parameters: parameters).map { try? $0.get() } == reference)
        }
        // One row split across the threads that run (the split scheduler plans for them too).
        let one = Array(logits[0..<vocab])
        #expect(sampler.sample(logits: one, parameters: [parameters[0]]).map { try? $0.get() } == [reference[0]])
    }

    @Test("the memory-read floor reads every byte of every row")
    func readFloor() throws {
        let vocab = 9_000, rows = 3
        let logits = (0..<(vocab * rows)).map { Float($0 % 13) * 0.5 }
        for threads in [1, 2, 4] {
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
            for batch in 1...rows {
                let sum = logits.withUnsafeBytes {
                    sampler.readFloor($0.baseAddress!, rows: batch, bytesPerRow: vocab * 4)
                }
                let want = logits[0..<(batch * vocab)].reduce(0.0) { $0 + Double($1) }
                #expect(abs(Double(sum) - want) <= 1e-5 * want, "threads \(threads), batch \(batch)")
            }
        }
        // One 1 among zeros: the sum is exactly 1 when the floor reads that element (every one of
        // the batch's rows, their first and last elements, the vector tails) and exactly 0 when
        // it lies past the batch (nothing beyond `rows × bytesPerRow` is read).
        var probe = [Float](repeating: 0, count: vocab * rows)
        let positions = [
            0, 1, 15, 16, 63, 64, vocab - 1, vocab, vocab + 4_500, 2 * vocab - 1, 2 * vocab, vocab * rows - 1
        ]
        for threads in [1, 2, 4] {
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
            for batch in 1...rows {
                for position in positions {
                    probe[position] = 1
                    let sum = probe.withUnsafeBytes {
                        sampler.readFloor($0.baseAddress!, rows: batch, bytesPerRow: vocab * 4)
                    }
                    probe[position] = 0
                    #expect(
                        sum == (position < batch * vocab ? 1 : 0),
                        "threads \(threads), batch \(batch), 1 at \(position): sum \(sum)")
                }
            }
        }
    }
}
