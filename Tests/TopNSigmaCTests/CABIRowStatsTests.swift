import CTopNSigma
import TopNSigma
import TopNSigmaC
import XCTest

/// The statistics the C ABI's single-row calls report (tns_row_stats) in the two edge cases the
/// header defines: a row with std 0 under n = +inf (threshold max, not max − ∞·0 = NaN), and a
/// row without a finite logit (max −inf as the header promises, mean 0, std 0, threshold −inf),
/// through the handle-less and the handle calls alike.
final class CABIRowStatsTests: XCTestCase {
    /// Runs `body` with the four single-row calls bound to one row (vocab 4) and Top-nσ's `n`.
    func eachCall(
        _ row: [Float], n: Float, _ body: (String, tns_status, tns_row_stats, [Int32]) -> Void
    ) throws {
        let vocab = Int64(row.count)
        var params = tns_params()
        tns_params_init(&params)
        params.n_sigma = n
        var handle: OpaquePointer?
        XCTAssertEqual(cSamplerCreate(vocab, 1, 1, Int32(TNS_PLACEMENT_DISABLED), &handle), tns_status(TNS_OK))
        defer { cSamplerDestroy(handle) }
        for call in [
            "tns_filter", "tns_filtered_distribution", "tns_sampler_filter", "tns_sampler_filtered_distribution"
        ] {
            // Poisoned outputs: every field must be written.
            var stats = tns_row_stats(
                max: 99, mean: 99, std: 99, threshold: 99, finite: 99, argmax: 99, error_index: 99)
            var ids = [Int32](repeating: -9, count: row.count), probabilities = [Double](repeating: 0, count: row.count)
            var count: Int64 = -9
            let status = row.withUnsafeBufferPointer { r -> tns_status in
                switch call {
                case "tns_filter": return cFilter(r.baseAddress, vocab, 1, n, &stats, &ids, vocab, &count)
                case "tns_filtered_distribution":
                    return cFilteredDistribution(
                        r.baseAddress, vocab, &params, &stats, &ids, &probabilities, vocab, &count)
                case "tns_sampler_filter":
                    return cSamplerFilter(handle, r.baseAddress, 1, n, &stats, &ids, vocab, &count)
                default:
                    return cSamplerFilteredDistribution(
                        handle, r.baseAddress, &params, &stats, &ids, &probabilities, vocab, &count)
                }
            }
            body(call, status, stats, status == tns_status(TNS_OK) ? Array(ids[0..<Int(count)]).sorted() : [])
        }
    }

    func testStdZeroWithInfiniteNReportsTheMaximumAsThreshold() throws {
        // Hand-worked: the finite logits are all 2.5, so std = 0 and max − n·std = 2.5 for any n.
        try eachCall([2.5, -.infinity, 2.5, 2.5], n: .infinity) { call, status, stats, kept in
            XCTAssertEqual(status, tns_status(TNS_OK), call)
            XCTAssertEqual(stats.max, 2.5, call)
            XCTAssertEqual(stats.std, 0, call)
            XCTAssertEqual(stats.threshold, 2.5, call)
            XCTAssertEqual(stats.finite, 3, call)
            XCTAssertEqual(kept, [0, 2, 3], call)
        }
    }

    func testARowWithoutFiniteLogitsReportsTheEmptyStatistics() throws {
        for n: Float in [1, .infinity] {
            try eachCall([-.infinity, -.infinity, -.infinity, -.infinity], n: n) { call, status, stats, _ in
                XCTAssertEqual(status, tns_status(TNS_ROW_NO_FINITE_LOGIT), call)
                XCTAssertEqual(stats.max, -.infinity, "\(call), n \(n)")
                XCTAssertEqual(stats.mean, 0, "\(call), n \(n)")
                XCTAssertEqual(stats.std, 0, "\(call), n \(n)")
                XCTAssertEqual(stats.threshold, -.infinity, "\(call), n \(n)")
                XCTAssertEqual(stats.finite, 0, "\(call), n \(n)")
                XCTAssertEqual(stats.argmax, -1, "\(call), n \(n)")
                XCTAssertEqual(stats.error_index, -1, "\(call), n \(n)")
            }
        }
        // A row error with no statistics to speak of (a NaN logit) reports them as NaN.
        try eachCall([1, .nan, 2, 3], n: 1) { call, status, stats, _ in
            XCTAssertEqual(status, tns_status(TNS_ROW_NAN), call)
            XCTAssertTrue(stats.max.isNaN && stats.mean.isNaN && stats.std.isNaN && stats.threshold.isNaN, call)
            XCTAssertEqual(stats.finite, 0, call)
            XCTAssertEqual(stats.argmax, -1, call)
            XCTAssertEqual(stats.error_index, 1, call)
        }
    }
}

final class CABIVocabularyLimitTests: XCTestCase {
    /// The header's limit, the library's function and the Swift constant are one value, and each
    /// interface refuses one past it before allocating.
    func testOneVocabularyLimit() throws {
        XCTAssertEqual(TNS_MAX_VOCAB_SIZE, Int64(Vocabulary.maximumSize))
        XCTAssertEqual(tns_max_vocab_size(), TNS_MAX_VOCAB_SIZE)
        var handle: OpaquePointer? = nil
        XCTAssertEqual(tns_sampler_create(TNS_MAX_VOCAB_SIZE + 1, 1, 1, -2, &handle), tns_status(TNS_ERR_VOCAB_SIZE))
        XCTAssertNil(handle)
        XCTAssertThrowsError(try BatchSampler(vocabularySize: Vocabulary.maximumSize + 1, maximumBatchSize: 1)) {
            XCTAssertEqual($0 as? BatchSampler.ConfigurationError, .invalidVocabularySize(Vocabulary.maximumSize + 1))
        }
    }
}
