import CAllocationCounter
import TopNSigma
import TopNSigmaBaselines
import XCTest

/// Steady-state calls allocate nothing on the heap. An XCTest on purpose: `swift test` runs the
/// XCTest cases serially and apart from the (parallel) Swift Testing suites, so the process-wide
/// allocation counter sees only this test's work.
final class AllocationTests: XCTestCase {
    func allocations(during body: () -> Void) -> UInt64 {
        let before = topnsigma_allocation_count()
        body()
        return topnsigma_allocation_count() - before
    }

    func testSteadyStateSamplingAllocatesNothing() throws {
        try XCTSkipUnless(topnsigma_allocation_counting_available(), "malloc is owned by a sanitizer in this build")
        // The counter itself must see allocations, or a zero below would prove nothing.
        XCTAssertGreaterThan(allocations { _ = [Int](repeating: 1, count: 1000 + Int.random(in: 0..<2)) }, 0)

        for (rows, vocab, threads) in [(8, 49_152, 2), (1, 128_256, 2), (3, 32_000, 1), (2, 70_000, 4)] {
            let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 3)
            // Plain Top-nσ, greedy, every truncation (top-k, top-p, min-p) and the softmax routes
            // of the other samplers (typical-p, ε/η/p-less, XTC, the dynamic temperature).
            let kinds: [SamplingParameters] = [
                SamplingParameters(temperature: 1, nSigma: 1),
                SamplingParameters(temperature: 0, nSigma: 1),
                SamplingParameters(temperature: 1.3, nSigma: nil, topK: 30, topP: 0.9, minP: 0.01),
                SamplingParameters(nSigma: nil, typicalP: 0.9),
                SamplingParameters(
                    nSigma: nil, typicalP: 0.95, epsilon: 3e-4, eta: 3e-4, xtcThreshold: 0.1,
                    dynamicTemperatureRange: 0.5, pLess: true),
                SamplingParameters(temperature: 0.8, nSigma: nil, xtcThreshold: 0.05),
                SamplingParameters(nSigma: nil, dynamicTemperatureRange: 0.5)
            ]
            let parameters = (0..<rows).map { (r: Int) -> SamplingParameters in
                var p = kinds[r % kinds.count]
                p.seed = UInt64(r)
                return p
            }
            var steps = [UInt64](repeating: 0, count: rows)
            var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: rows)
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
            logits.withUnsafeBufferPointer { l in
                parameters.withUnsafeBufferPointer { p in
                    results.withUnsafeMutableBufferPointer { out in
                        steps.withUnsafeMutableBufferPointer { s in
                            func call() {
                                sampler.sample(
                                    logits: l.baseAddress!, rows: rows, parameters: p, steps: UnsafeBufferPointer(s),
                                    into: out)
                            }
                            for _ in 0..<3 { call() }  // warm-up: worker threads start once
                            let count = allocations {
                                for step in 1...50 {
                                    for r in 0..<rows { s[r] = UInt64(step) }
                                    call()
                                }
                            }
                            XCTAssertEqual(
                                count, 0,
                                "rows \(rows), vocab \(vocab), threads \(threads): \(count) allocations in 50 calls")
                        }
                    }
                }
            }
            XCTAssertNoThrow(try results[0].get())

            // The same batch stored as bfloat16, read through the 16-bit kernels.
            let bits = logits.map { UInt16($0.bitPattern >> 16) }
            bits.withUnsafeBytes { raw in
                parameters.withUnsafeBufferPointer { p in
                    results.withUnsafeMutableBufferPointer { out in
                        steps.withUnsafeBufferPointer { s in
                            func call() {
                                sampler.sample(
                                    logits: raw.baseAddress!, format: .bfloat16, rows: rows, parameters: p, steps: s,
                                    into: out)
                            }
                            for _ in 0..<3 { call() }
                            let count = allocations { for _ in 0..<20 { call() } }
                            XCTAssertEqual(
                                count, 0,
                                "bfloat16, rows \(rows), vocab \(vocab), threads \(threads): \(count) allocations in 20 calls"
                            )
                        }
                    }
                }
            }
        }
    }

    func testRequestProcessingAllocatesNothing() throws {
        try XCTSkipUnless(topnsigma_allocation_counting_available(), "malloc is owned by a sanitizer in this build")
        XCTAssertGreaterThan(allocations { _ = [Int](repeating: 1, count: 1000 + Int.random(in: 0..<2)) }, 0)
        // Whole rows (8 rows, 2 threads) and split rows (1 row, 2 threads), every feature on,
        // greedy and sampled rows, f32 and bf16.
        for (rows, vocab, threads) in [(8, 49_152, 2), (1, 128_256, 2)] {
            let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 5)
            // DRY on too, over an output that repeats itself, with one- and two-token breakers.
            let processing = (0..<rows).map {
                var q = SyntheticRequests.serverLike(vocab: vocab, seed: UInt64($0), topLogprobs: 20)
                q.outputTokens += q.outputTokens.prefix(40)
                q.dryMultiplier = 0.8
                q.drySequenceBreakers = [[q.outputTokens[3]], [q.outputTokens[5], q.outputTokens[6]]]
                // Odd rows without logprobs: a plain one among them draws on the softmax route.
                if $0 % 2 == 1 { q.topLogprobs = nil }
                return q
            }
            let parameters = (0..<rows).map { (r: Int) -> SamplingParameters in
                if r % 3 == 2 { return SamplingParameters(temperature: 0.9, nSigma: nil, seed: UInt64(r)) }
                return SamplingParameters(temperature: r % 3 == 1 ? 0 : 0.9, nSigma: 1, seed: UInt64(r), topP: 0.95)
            }
            let steps = [UInt64](repeating: 1, count: rows)
            var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: rows)
            var logprobs = [TopLogprobs](repeating: TopLogprobs(), count: rows)
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
            let bits = logits.map { UInt16($0.bitPattern >> 16) }
            for format in [LogitFormat.float32, .bfloat16] {
                logits.withUnsafeBytes { f32 in
                    bits.withUnsafeBytes { bf16 in
                        parameters.withUnsafeBufferPointer { p in
                            processing.withUnsafeBufferPointer { q in
                                steps.withUnsafeBufferPointer { s in
                                    results.withUnsafeMutableBufferPointer { out in
                                        logprobs.withUnsafeMutableBufferPointer { lp in
                                            func call() {
                                                sampler.sample(
                                                    logits: format == .float32 ? f32.baseAddress! : bf16.baseAddress!,
                                                    format: format,
                                                    rows: rows, parameters: p, processing: q, steps: s, into: out,
                                                    logprobs: lp)
                                            }
                                            for _ in 0..<3 { call() }
                                            let count = allocations { for _ in 0..<20 { call() } }
                                            XCTAssertEqual(
                                                count, 0,
                                                "\(format), rows \(rows), threads \(threads): \(count) allocations in 20 calls"
                                            )
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                XCTAssertNoThrow(try results[0].get())
                XCTAssertEqual(logprobs[0].count, 20)
            }
        }
    }

    func testSamplingBatchAllocatesNothing() throws {
        try XCTSkipUnless(topnsigma_allocation_counting_available(), "malloc is owned by a sanitizer in this build")
        XCTAssertGreaterThan(allocations { _ = [Int](repeating: 1, count: 1000 + Int.random(in: 0..<2)) }, 0)
        let rows = 4, vocab = 32_000
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 8)
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 2)
        let batch = SamplingBatch(capacity: rows)
        for r in 0..<rows {
            batch.parameters[r] = SamplingParameters(temperature: 0.8, seed: UInt64(r))
            batch.processing[r] = SyntheticRequests.serverLike(
                vocab: vocab, seed: UInt64(r), topLogprobs: r % 2 == 0 ? 5 : nil)
        }
        batch.processing[3] = RequestProcessing()  // a row without processing beside the others
        logits.withUnsafeBytes { raw in
            for _ in 0..<3 { sampler.sample(logits: raw.baseAddress!, rows: rows, batch: batch) }
            let count = allocations {
                for step in 1...20 {
                    for r in 0..<rows { batch.steps[r] = UInt64(step) }
                    sampler.sample(logits: raw.baseAddress!, rows: rows, batch: batch)
                }
            }
            XCTAssertEqual(count, 0, "\(count) allocations in 20 calls")
        }
        // The same tokens as the array API with the same inputs.
        let (expected, logprobs) = sampler.sample(
            logits: logits, parameters: Array(batch.parameters), processing: Array(batch.processing),
            steps: Array(batch.steps))
        for r in 0..<rows {
            XCTAssertEqual(try batch.results[r].get(), try expected[r].get())
            XCTAssertEqual(batch.logprobs[r].entries, logprobs[r].entries)
        }
        XCTAssertEqual(batch.logprobs[0].count, 5)
    }
}
