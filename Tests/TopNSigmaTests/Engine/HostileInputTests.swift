import CAllocationCounter
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TopNSigma
import TopNSigmaIO

/// Sizes from outside (a `.npy` shape, `--vocab`) are checked before any arithmetic; vocabularies
/// beyond 32-bit token ids are errors, not wrapped ids or traps; options are checked whatever
/// the file holds; files that are not regular files are named as such.
@Suite struct HostileInputTests {
    static let hugeShapes: [(String, String)] = [
        ("(4611686018427387904, 4)", "too large"),  // 2^62 rows: rows × vocab × 4 overflows
        ("(4, 2305843009213693952)", "too large"),  // 2^61 vocab: × 4 bytes overflows
        ("(9223372036854775807, 9223372036854775807)", "too large"),
        ("(3037000500, 3037000500)", "too large"),  // rows × vocab just past Int.max
        ("(1518500250, 1518500250)", "too large"),  // rows × vocab fits, × 4 bytes does not
        ("(-1, 4)", "negative"),
        ("(-4611686018427387904, -4)", "negative"),
        ("(1, -4)", "must be positive"),
        ("(2, 2)", "needs 16 data bytes, found 4"),
        ("(99999999999999999999, 4)", "not 2-D")  // not an Int
    ]

    @Test("LogitsFile: a .npy shape whose byte count overflows, or a negative one, is a ReadError")
    func hugeNumPyShapes() throws {
        for (shape, message) in Self.hugeShapes {
            let data = numPy("{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }", data: [0, 0, 128, 63])
            #expect(throws: LogitsFile.ReadError.self, "\(shape)") { try LogitsFile.parse(data, path: "x.npy") }
            do {
                _ = try LogitsFile.parse(data, path: "x.npy")
            } catch {
                #expect(error.description.contains(message), "\(shape): \(error.description)")
            }
        }
    }

    @Test("LogitsFile: a raw file read with a vocabulary whose row bytes overflow is a ReadError")
    func hugeRawVocab() throws {
        let data = Data([0, 0, 128, 63, 0, 0, 0, 64])
        for vocab in [1 << 61, 1 << 62, Int.max, Int.max / 2 + 1] {
            for format in LogitFormat.allCases {
                #expect(throws: LogitsFile.ReadError.self, "vocab \(vocab) \(format)") {
                    try LogitsFile.parse(data, path: "x.f32", vocab: vocab, format: format)
                }
            }
        }
        // The same bytes read with a sane vocabulary: the hand-worked values 1.0 and 2.0.
        let file = try LogitsFile.parse(data, path: "x.f32", vocab: 2)
        #expect(file.values == [1, 2] && file.rows == 1)
    }

    @Test("LogitsFile: --dtype that conflicts with a .npy header is an error; the same dtype is accepted")
    func dtypeConflict() throws {
        let data = numPy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", data: [0, 0, 128, 63, 0, 0, 0, 64])
        #expect(try LogitsFile.parse(data, path: "x.npy", format: .float32).values == [1, 2])
        #expect(try LogitsFile.parse(data, path: "x.npy").values == [1, 2])
        for format in [LogitFormat.float16, .bfloat16] {
            #expect(
                throws: LogitsFile.ReadError.badNumPy(
                    path: "x.npy",
                    reason:
                        "--dtype \(format.fileSpelling) conflicts with the header's dtype f32 (a .npy file's header decides; drop --dtype)"
                )
            ) {
                try LogitsFile.parse(data, path: "x.npy", format: format)
            }
        }
    }

    @Test("FilteredDistribution.of fails a row of 2^31 - 1 or more logits, before reading it")
    func vocabularyTooLarge() throws {
        #expect(Vocabulary.maximumSize == (1 << 31) - 2)
        // A real 16-float buffer presented as a huge row: the guard must return before any read
        // (a read past the 16 floats would fault, or trip AddressSanitizer).
        let storage = UnsafeMutableBufferPointer<Float>.allocate(capacity: 16)
        defer { storage.deallocate() }
        storage.initialize(repeating: 1)
        for count in [(1 << 31) - 1, 1 << 31, 1 << 40, Int.max] {
            let row = UnsafeBufferPointer(start: UnsafePointer(storage.baseAddress!), count: count)
            #expect(throws: RowError.vocabularyTooLarge(count)) { try filterTopNSigma(row, n: 1).get() }
            #expect(throws: RowError.vocabularyTooLarge(count)) {
                try FilteredDistribution.of(row, parameters: SamplingParameters(topK: 5, topP: 0.9))
            }
        }
        #expect(
            RowError.vocabularyTooLarge(1 << 31).message(row: 2)
                == "row 2: a row of 2147483648 logits is too large (at most 2147483646: token ids are 32-bit)")
        // Parameter errors still come first; a short row is unaffected.
        #expect(try filterTopNSigma(UnsafeBufferPointer(storage), n: 1).get().kept.count == 16)
    }
}

/// Who must fix each error the sampler reports, from errors it really produced.
@Suite struct RowErrorOriginTests {
    @Test("each row error names who must fix it: the logits, the request's settings, or the calling code")
    func origins() throws {
        let vocab = 40
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
        let clean = (0..<vocab).map { Float($0 % 7) * 0.5 }
        func error(
            _ row: [Float], _ parameters: SamplingParameters = SamplingParameters(),
            _ processing: RequestProcessing? = nil, logprobsBuffer: Bool = true
        ) -> RowError? {
            var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: 1)
            var logprobs = [TopLogprobs](repeating: TopLogprobs(), count: 1)
            let steps: [UInt64] = [0]
            row.withUnsafeBufferPointer { l in
                [parameters].withUnsafeBufferPointer { p in
                    steps.withUnsafeBufferPointer { s in
                        results.withUnsafeMutableBufferPointer { r in
                            logprobs.withUnsafeMutableBufferPointer { o in
                                if let processing {
                                    [processing].withUnsafeBufferPointer { q in
                                        sampler.sample(
                                            logits: l.baseAddress!, rows: 1, parameters: p, processing: q, steps: s,
                                            into: r, logprobs: logprobsBuffer ? o : nil)
                                    }
                                } else {
                                    sampler.sample(logits: l.baseAddress!, rows: 1, parameters: p, steps: s, into: r)
                                }
                            }
                        }
                    }
                }
            }
            if case .failure(let e) = results[0] { return e }
            return nil
        }
        var nan = clean
        nan[9] = .nan
        var infinite = clean
        infinite[3] = .infinity
        let cases: [(RowError?, RowError.Origin)] = [
            (error(nan), .data),
            (error(infinite), .data),
            (error([Float](repeating: -.infinity, count: vocab)), .data),
            // The request's mask leaves nothing: the processed row has no finite logit.
            (error(clean, SamplingParameters(), RequestProcessing(allowedTokens: [0, 0])), .data),
            (error(clean, SamplingParameters(temperature: -1)), .settings),
            (error(clean, SamplingParameters(topK: 0)), .settings),
            (
                error(clean, SamplingParameters(), RequestProcessing(logitBias: [LogitBias(token: 99, bias: 1)])),
                .settings
            ),
            (error(clean, SamplingParameters(), RequestProcessing(allowedTokens: [0])), .settings),
            (error(clean, SamplingParameters(), RequestProcessing(topLogprobs: 21)), .settings),
            (error(clean, SamplingParameters(), RequestProcessing(topLogprobs: 3), logprobsBuffer: false), .call)
        ]
        for (i, (got, origin)) in cases.enumerated() {
            let e = try #require(got, "case \(i) sampled a token")
            #expect(e.origin == origin, "case \(i): \(e) is \(e.origin), expected \(origin)")
        }
        #expect(RowError.vocabularyTooLarge(1 << 31).origin == .data)
        // A settings error's message states the same range the CLI's usage error does.
        for request in [
            RequestProcessing(repetitionPenalty: 0), RequestProcessing(frequencyPenalty: .nan),
            RequestProcessing(topLogprobs: 21), RequestProcessing(dryMultiplier: 1, dryBase: 0.5),
            RequestProcessing(dryMultiplier: 1, dryAllowedLength: -3),
            RequestProcessing(dryMultiplier: 1, dryPenaltyLastN: -2),
            RequestProcessing(dryMultiplier: 1, drySequenceBreakers: [[]])
        ] {
            let e = try #require(request.validationError(vocabularySize: vocab))
            let setting = try #require(e.setting, "\(e)")
            #expect(e.origin == .settings && e.description.contains("must be \(setting.requirement)"), "\(e)")
        }
        // A clean row with the same calls samples.
        #expect(error(clean, SamplingParameters(), RequestProcessing(topLogprobs: 3)) == nil)
    }
}
