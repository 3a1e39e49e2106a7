import CAllocationCounter
import CTopNSigma
import TopNSigmaC
import XCTest

/// `tns_sample` (the C ABI's batched call) performs no heap allocation in steady state: the
/// handle converts parameters and results in buffers it allocated at creation. An XCTest, like
/// AllocationTests, so that the process-wide malloc counter sees only this test's work.
final class CABIAllocationTests: XCTestCase {
    func allocations(during body: () -> Void) -> UInt64 {
        let before = topnsigma_allocation_count()
        body()
        return topnsigma_allocation_count() - before
    }

    func testSampleThroughTheCABIAllocatesNothing() throws {
        try XCTSkipUnless(topnsigma_allocation_counting_available(), "malloc is owned by a sanitizer in this build")
        XCTAssertGreaterThan(allocations { _ = [Int](repeating: 1, count: 1000 + Int.random(in: 0..<2)) }, 0)

        let rows = 6, vocab = 49_152
        // Deterministic logits: a smooth spread with a few peaks.
        var logits = [Float](repeating: 0, count: rows * vocab)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in logits.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            logits[i] = Float(state >> 40) / Float(1 << 24) * 8 - 4 + (i % 997 == 0 ? 6 : 0)
        }
        var params = [tns_params](repeating: tns_params(), count: rows)
        for r in 0..<rows {
            tns_params_init(&params[r])
            params[r].seed = UInt64(r)
        }
        params[1].temperature = 0
        params[2].flags = UInt32(TNS_USE_TOP_K | TNS_USE_TOP_P | TNS_USE_MIN_P)
        params[2].top_k = 30
        params[2].top_p = 0.9
        params[2].min_p = 0.01
        var steps = [UInt64](repeating: 0, count: rows)
        var tokens = [Int64](repeating: 0, count: rows), kept = [Int64](repeating: 0, count: rows)
        var logprobs = [Double](repeating: 0, count: rows)
        var status = [tns_status](repeating: -1, count: rows)

        var handle: OpaquePointer?
        XCTAssertEqual(
            cSamplerCreate(Int64(vocab), Int64(rows), 2, Int32(TNS_PLACEMENT_AUTOMATIC), &handle), tns_status(TNS_OK))
        defer { cSamplerDestroy(handle) }
        logits.withUnsafeBytes { l in
            params.withUnsafeBytes { p in
                steps.withUnsafeMutableBufferPointer { s in
                    tokens.withUnsafeMutableBufferPointer { t in
                        logprobs.withUnsafeMutableBufferPointer { lp in
                            kept.withUnsafeMutableBufferPointer { k in
                                status.withUnsafeMutableBufferPointer { st in
                                    func call(_ format: Int32) -> tns_status {
                                        cSample(
                                            handle, l.baseAddress, format, Int64(rows), Int64(vocab), p.baseAddress,
                                            UnsafePointer(s.baseAddress), t.baseAddress, lp.baseAddress, k.baseAddress,
                                            st.baseAddress)
                                    }
                                    for _ in 0..<3 { XCTAssertEqual(call(Int32(TNS_FORMAT_F32)), tns_status(TNS_OK)) }
                                    let count = allocations {
                                        for step in 1...50 {
                                            for r in 0..<rows { s[r] = UInt64(step) }
                                            _ = call(Int32(TNS_FORMAT_F32))
                                        }
                                    }
                                    XCTAssertEqual(count, 0, "\(count) allocations in 50 tns_sample calls")
                                    // A whole-call error allocates nothing either.
                                    let errors = allocations { for _ in 0..<10 { _ = call(99) } }
                                    XCTAssertEqual(errors, 0)
                                }
                            }
                        }
                    }
                }
            }
        }
        XCTAssertEqual(status, [tns_status](repeating: tns_status(TNS_OK), count: rows))
        XCTAssertEqual(kept[1], 1)
        XCTAssertLessThanOrEqual(kept[2], 30)
    }

    func testSingleRowCallsOnAHandleAllocateNothing() throws {
        try XCTSkipUnless(topnsigma_allocation_counting_available(), "malloc is owned by a sanitizer in this build")
        let vocab = 32_000
        var row = [Float](repeating: 0, count: vocab)
        var state: UInt64 = 12_345
        for i in row.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            row[i] = Float(state >> 40) / Float(1 << 24) * 8 - 4 + (i % 1009 == 0 ? 5 : 0)
        }
        var params = tns_params()
        tns_params_init(&params)
        params.flags |= UInt32(TNS_USE_TOP_K | TNS_USE_TOP_P)
        params.top_k = 40
        params.top_p = 0.9
        var ids = [Int32](repeating: 0, count: vocab), probs = [Double](repeating: 0, count: vocab)
        var stats = tns_row_stats(), count: Int64 = 0
        var handle: OpaquePointer?
        XCTAssertEqual(cSamplerCreate(Int64(vocab), 1, 1, Int32(TNS_PLACEMENT_DISABLED), &handle), tns_status(TNS_OK))
        defer { cSamplerDestroy(handle) }
        row.withUnsafeBufferPointer { r in
            ids.withUnsafeMutableBufferPointer { i in
                probs.withUnsafeMutableBufferPointer { p in
                    func both() {
                        XCTAssertEqual(
                            cSamplerFilter(handle, r.baseAddress, 1, 1, &stats, i.baseAddress, Int64(vocab), &count),
                            tns_status(TNS_OK))
                        XCTAssertEqual(
                            cSamplerFilteredDistribution(
                                handle, r.baseAddress, &params, &stats, i.baseAddress, p.baseAddress, Int64(vocab),
                                &count),
                            tns_status(TNS_OK))
                    }
                    both()
                    let n = allocations { for _ in 0..<50 { both() } }
                    XCTAssertEqual(n, 0, "\(n) allocations in 100 single-row calls on a handle")
                }
            }
        }
        XCTAssertGreaterThan(count, 0)
    }

    /// `tns_sample_processed` with a bitmask, a bias, a history, penalties and top logprobs, and
    /// `tns_verify` with dense and sparse drafts, allocate nothing either.
    func testProcessingAndVerificationThroughTheCABIAllocateNothing() throws {
        try XCTSkipUnless(topnsigma_allocation_counting_available(), "malloc is owned by a sanitizer in this build")
        let rows = 4, vocab = 4096, words = vocab / 32, k = 2
        var logits = [Float](repeating: 0, count: rows * (k + 1) * vocab)
        var state: UInt64 = 77
        for i in logits.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            logits[i] = Float(state >> 40) / Float(1 << 24) * 8 - 4 + (i % 331 == 0 ? 5 : 0)
        }
        var masks = [UInt32](repeating: 0xF0F0_F0F0, count: rows * words)
        var biasIDs: [Int32] = [3, 7, 331], prompt: [Int32] = [1, 2, 3, 331], output: [Int32] = [7, 7, 662]
        var biasValues: [Float] = [2, -1, 0.5]
        var params = [tns_params](repeating: tns_params(), count: rows)
        var processing = [tns_processing](repeating: tns_processing(), count: rows)
        var steps = [UInt64](repeating: 0, count: rows)
        var tokens = [Int64](repeating: 0, count: rows * (k + 1)), kept = [Int64](repeating: 0, count: rows)
        var logprobs = [Double](repeating: 0, count: rows * (k + 1))
        var status = [tns_status](repeating: -1, count: rows), positions = [Int64](repeating: 0, count: rows)
        var top = [tns_top_logprobs](repeating: tns_top_logprobs(), count: rows)
        var draftTokens: [Int64] = (0..<(rows * k)).map { Int64($0 * 331 % vocab) }
        var draftProbabilities = [Double](repeating: 0.5, count: rows * k)
        var dense = [Float](repeating: 0.0001, count: rows * k * vocab)
        var offsets: [Int64] = (0...(rows * k)).map { Int64($0 * 2) }
        var sparseIDs: [Int32] = (0..<(rows * k * 2)).map { Int32($0 * 7) }
        var sparseProbabilities = [Double](repeating: 0.3, count: rows * k * 2)
        var handle: OpaquePointer?
        XCTAssertEqual(cSamplerCreate(Int64(vocab), Int64(rows), 2, Int32(TNS_PLACEMENT_DISABLED), &handle), 0)
        defer { cSamplerDestroy(handle) }
        var accepted = [Int64](repeating: 0, count: rows)
        let l = logits.withUnsafeBytes { $0.baseAddress! }
        // The arrays stay alive and unmoved for the test; their pointers are taken once.
        func pointer<T>(_ a: inout [T]) -> UnsafeMutablePointer<T> {
            a.withUnsafeMutableBufferPointer { $0.baseAddress! }
        }
        let m = pointer(&masks), b = pointer(&biasIDs), v = pointer(&biasValues), pr = pointer(&prompt)
        let o = pointer(&output)
        for r in 0..<rows {
            tns_params_init(&params[r])
            params[r].seed = UInt64(r)
            tns_processing_init(&processing[r])
            processing[r].allowed = UnsafePointer(m + r * words)
            (processing[r].bias_ids, processing[r].bias_values, processing[r].bias_count) =
                (UnsafePointer(b), UnsafePointer(v), 3)
            (processing[r].prompt_tokens, processing[r].prompt_count) = (UnsafePointer(pr), 4)
            (processing[r].output_tokens, processing[r].output_count) = (UnsafePointer(o), 3)
            processing[r].repetition_penalty = 1.2
            processing[r].frequency_penalty = 0.3
            processing[r].top_logprobs = Int32(r * 5)
        }
        let p = pointer(&params), q = pointer(&processing), s = pointer(&steps), t = pointer(&tokens)
        let lp = pointer(&logprobs), kp = pointer(&kept), st = pointer(&status), tp = pointer(&top)
        let a = pointer(&accepted), pos = pointer(&positions)
        func sample() -> tns_status {
            cSampleProcessed(handle, l, Int32(TNS_FORMAT_F32), Int64(rows), Int64(vocab), p, q, s, t, lp, kp, st, tp)
        }
        var drafts = [
            tns_drafts(
                kind: Int32(TNS_DRAFT_DENSE), reserved: 0, tokens: UnsafePointer(pointer(&draftTokens)),
                probabilities: UnsafePointer(pointer(&draftProbabilities)), dense: UnsafePointer(pointer(&dense)),
                sparse_offsets: nil, sparse_ids: nil, sparse_probabilities: nil),
            tns_drafts(
                kind: Int32(TNS_DRAFT_SPARSE), reserved: 0, tokens: UnsafePointer(pointer(&draftTokens)),
                probabilities: UnsafePointer(pointer(&draftProbabilities)), dense: nil,
                sparse_offsets: UnsafePointer(pointer(&offsets)), sparse_ids: UnsafePointer(pointer(&sparseIDs)),
                sparse_probabilities: UnsafePointer(pointer(&sparseProbabilities)))
        ]
        let d = pointer(&drafts)
        func verify(_ which: Int) -> tns_status {
            cVerify(
                handle, l, Int32(TNS_FORMAT_F32), Int64(rows), Int64(k), Int64(vocab), p, s, d + which, a, t, lp, st,
                pos)
        }
        for _ in 0..<2 {
            XCTAssertEqual(sample(), 0)
            XCTAssertEqual(verify(0), 0)
            XCTAssertEqual(verify(1), 0)
        }
        let count = allocations {
            for step in 1...20 {
                for r in 0..<rows { s[r] = UInt64(step) }
                _ = sample()
                _ = verify(0)
                _ = verify(1)
            }
        }
        XCTAssertEqual(count, 0, "\(count) allocations in 20 processed samples and 40 verifications")
        XCTAssertEqual(status, [tns_status](repeating: 0, count: rows))
        XCTAssertEqual(accepted.filter { $0 >= 0 && $0 <= Int64(k) }.count, rows)
        _ = sample()
        XCTAssertEqual(status, [tns_status](repeating: 0, count: rows))
        XCTAssertEqual(top.map { Int($0.count) }, (0..<rows).map { $0 * 5 })
        for r in 0..<rows {
            let token = Int(tokens[r])
            XCTAssertEqual(masks[r * words + token / 32] >> UInt32(token % 32) & 1, 1, "row \(r) drew masked \(token)")
        }
    }
}
