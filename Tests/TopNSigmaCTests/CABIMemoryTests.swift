import CTopNSigma
import TopNSigmaC
import XCTest

/// The C ABI refuses scratch it cannot have with TNS_ERR_OUT_OF_MEMORY, from the size of the
/// scratch the library really allocates. None of these tests touches the memory it asks about.
final class CABIMemoryTests: XCTestCase {
    /// The handle's estimate is its threads' scratch blocks, as the library lays them out (about 64
    /// bytes per logit, not the 16 of a candidate and a weight), plus its per-row buffers.
    func testTheHandleEstimateIsTheScratchLayout() {
        let vocab = 1 << 20
        let perLogit = rowScratchBytes(vocab: vocab) / Double(vocab)
        XCTAssertGreaterThan(perLogit, 48, "row scratch: \(perLogit) bytes per logit")
        XCTAssertLessThan(perLogit, 100, "row scratch: \(perLogit) bytes per logit")
        let one = samplerMemoryEstimate(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
        let three = samplerMemoryEstimate(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 3)
        XCTAssertEqual(three - one, 2 * rowScratchBytes(vocab: vocab))
        XCTAssertGreaterThanOrEqual(one, rowScratchBytes(vocab: vocab))
    }

    /// Sizes the old estimate (16 bytes per logit per thread) put at half of physical memory, and
    /// the real layout at about twice it: refused, nothing created. (Before the fix this returned
    /// TNS_OK after reserving twice the machine's memory.)
    func testCreateRefusesAHandleWhoseScratchExceedsPhysicalMemory() throws {
        let memory = physicalMemoryBytes()
        try XCTSkipUnless(memory.isFinite, "physical memory unknown")
        let maximumVocabulary = Double(Int32.max - 1)
        let threads = max(8, Int((memory / (32 * maximumVocabulary)).rounded(.up)))
        try XCTSkipUnless(threads <= Int(TNS_MAX_THREADS), "more memory than 1024 threads of the largest vocabulary")
        let vocab = Int64(memory / (32 * Double(threads)))
        XCTAssertLessThan(16 * Double(vocab) * Double(threads), memory)
        XCTAssertGreaterThan(rowScratchBytes(vocab: Int(vocab)) * Double(threads), memory)
        var handle: OpaquePointer? = OpaquePointer(bitPattern: 1)
        let status = cSamplerCreate(vocab, 1, Int32(threads), Int32(TNS_PLACEMENT_DISABLED), &handle)
        if status == tns_status(TNS_OK) { cSamplerDestroy(handle) }
        XCTAssertEqual(status, tns_status(TNS_ERR_OUT_OF_MEMORY), "vocab \(vocab), \(threads) threads")
        XCTAssertNil(handle)
    }

    /// A handle-less single-row call whose temporary scratch is not below physical memory returns
    /// TNS_ERR_OUT_OF_MEMORY before allocating or reading the row (it aborted in the trapping
    /// allocator). The C test checks the failed allocation itself, under an address-space limit.
    func testSingleRowCallsRefuseScratchBeyondPhysicalMemory() throws {
        let vocab: Int64 = 2_147_483_646
        try XCTSkipUnless(rowScratchBytes(vocab: Int(vocab)) >= physicalMemoryBytes(), "more memory than the scratch")
        let row: [Float] = [1, 2, 3, 4]
        var stats = tns_row_stats(), count: Int64 = -7
        var params = tns_params()
        tns_params_init(&params)
        row.withUnsafeBufferPointer { r in
            XCTAssertEqual(
                cFilter(r.baseAddress, vocab, 1, 1, &stats, nil, 0, &count), tns_status(TNS_ERR_OUT_OF_MEMORY))
            XCTAssertEqual(
                cFilteredDistribution(r.baseAddress, vocab, &params, &stats, nil, nil, 0, &count),
                tns_status(TNS_ERR_OUT_OF_MEMORY))
        }
        XCTAssertEqual(count, -7)
    }
}
