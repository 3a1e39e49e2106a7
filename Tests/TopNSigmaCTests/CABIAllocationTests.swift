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
}
