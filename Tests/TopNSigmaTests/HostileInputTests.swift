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

    func expectUsageError(_ arguments: [String], mentioning text: String) throws {
        let run = try CLI.run(arguments)
        #expect(run.status == 2, "\(arguments): status \(run.status), \(run.stderr)")
        #expect(run.stdout.isEmpty, "\(arguments)")
        #expect(run.stderr.hasPrefix("nsigma: ") && run.stderr.contains(text), "\(arguments): \(run.stderr)")
    }

    @Test("nsigma: huge .npy shapes and --vocab values exit 2 with a message, never a trap")
    func cliHugeSizes() throws {
        for (shape, message) in Self.hugeShapes {
            let path = try temporaryFile(
                "huge.npy",
                numPy("{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }", data: [0, 0, 128, 63]))
            for command in ["filter", "sample"] {
                try expectUsageError([command, "--logits", path], mentioning: message)
            }
        }
        let raw = try rawFile([1, 2, 3, 4])
        for command in ["filter", "sample"] {
            for vocab in [
                "2305843009213693952", "4611686018427387904", "9223372036854775807", "2147483647", "2147483648",
                "4294967296"
            ] {
                for dtype in [[], ["--dtype", "f16"], ["--dtype", "bf16"]] {
                    try expectUsageError(
                        [command, "--logits", raw, "--vocab", vocab] + dtype,
                        mentioning: "too large: at most 2147483646")
                }
            }
            // 2^31 - 2 is allowed as a vocabulary; this file is just too small for it.
            try expectUsageError(
                [command, "--logits", raw, "--vocab", "2147483646"], mentioning: "is not a multiple of")
            // A .npy whose shape[1] is 2^31 with no rows: the vocabulary is refused too.
            let wide = try temporaryFile(
                "wide.npy", numPy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2147483648), }"))
            try expectUsageError([command, "--logits", wide], mentioning: "too large: at most 2147483646")
        }
    }

    #if os(Linux)
    @Test(
        "nsigma: a vocabulary whose scratch cannot be allocated exits 2 with one message in filter and sample",
        .disabled(
            if: !topnsigma_allocation_counting_available(),
            "a sanitizer build (CI's ThreadSanitizer step): its nsigma cannot start under an address-space limit; the release suite runs this test"
        ))
    func cliScratchTooLarge() throws {
        // Issue 20: a bf16 file with V = 2^30 aborted `filter` (exit 134) in the library's
        // temporary scratch (~64 bytes a logit), where `sample` exited 2. The same failure from
        // 16 MiB: one bf16 row of V = 2^23 needs ~514 MiB of scratch, more than a 384 MiB address
        // space holds, while the binary and the file's ~64 MiB fit in it.
        let limit = 384 * 1024
        let vocab = 1 << 23
        let path = try temporaryFile("wide.bf16", Data(repeating: 0x3F, count: 2 * vocab))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let small = try rawFile([1, 2, 3, 4])
        for command in ["filter", "sample"] {
            // The control: under the same limit, the binary runs a small file.
            let control = try CLI.run(
                [command, "--logits", small, "--vocab", "4", "--n", "off"], addressSpaceKiB: limit)
            #expect(control.status == 0, "\(command), small file: \(control.status) \(control.stderr.prefix(300))")
            let run = try CLI.run(
                [command, "--logits", path, "--vocab", "\(vocab)", "--dtype", "bf16"], addressSpaceKiB: limit)
            #expect(run.status == 2, "\(command): status \(run.status), \(run.stderr.prefix(300))")
            #expect(run.stdout.isEmpty, "\(command)")
            #expect(
                run.stderr.hasPrefix("nsigma: \(path): a row of \(vocab) logits needs ")
                    && run.stderr.hasSuffix(" bytes of scratch, which cannot be allocated\n"),
                "\(command): \(run.stderr.prefix(300))")
        }
    }
    #endif

    @Test("nsigma sample checks its options even when the file has no rows")
    func optionsBeforeRows() throws {
        let empty = try temporaryFile("empty.npy", numPy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }"))
        let bad: [([String], String)] = [
            (["--top-p", "2"], "top-p 2.0 is invalid"), (["--top-k", "0"], "top-k 0 is invalid"),
            (["--min-p=-1"], "min-p -1.0 is invalid"),
            (["--n=-1"], "--n must be"), (["--temperature=-1"], "--temperature must be >= 0"),
            (["--dtype", "f64"], "--dtype must be"),
            (["--vocab", "4294967296"], "too large")
        ]
        for (options, message) in bad {
            for command in ["filter", "sample"] {
                try expectUsageError([command, "--logits", empty] + options, mentioning: message)
            }
        }
        try expectUsageError(["sample", "--logits", empty, "--draws", "0"], mentioning: "--draws must be at least 1")
        // Good options on a file without rows: nothing printed, exit 0.
        for command in ["filter", "sample"] {
            let run = try CLI.run([command, "--logits", empty])
            #expect(run.status == 0 && run.stdout.isEmpty && run.stderr.isEmpty, "\(command): \(run.stderr)")
        }
    }

    @Test("nsigma filter --temperature 0 is greedy: kept is the argmax (lowest id on ties), as sample draws")
    func filterGreedy() throws {
        // Hand-worked rows: argmax 4; a tie of 7 at ids 1 and 3 (lowest id 1); a masked row.
        let values: [Float] = [1, 3, 2, 0, 5, 0, 7, 1, 7, 6, -.infinity, 2, -.infinity, 1, 0]
        let path = try rawFile(values)
        let filter = try CLI.run([
            "filter", "--logits", path, "--vocab", "5", "--temperature", "0", "--top-p", "0.5", "--n", "1"
        ])
        #expect(filter.status == 0, "\(filter.stderr)")
        #expect(filter.lines.map { $0["kept"] as? [Int] } == [[4], [1], [1]])
        // The statistics and the threshold are still the row's (Top-nσ: 5 - std of 1,3,2,0,5).
        let std = Reference.statistics(Array(values[0..<5])).map(\.std)
        #expect(Swift.abs((filter.lines[0]["threshold"] as! Double) - (5 - (try std.get()))) < 1e-9)
        let sample = try CLI.run(["sample", "--logits", path, "--vocab", "5", "--temperature", "0"])
        #expect(sample.lines.map { $0["tokens"] as? [Int] } == [[4], [1], [1]])
        try expectUsageError(
            ["filter", "--logits", path, "--vocab", "5", "--temperature=-0.5"], mentioning: "--temperature must be >= 0"
        )
        try expectUsageError(
            ["filter", "--logits", path, "--vocab", "5", "--temperature", "nan"], mentioning: "--temperature")
    }

    @Test("nsigma: --dtype with a .npy file must agree with its header")
    func cliDtypeConflict() throws {
        for command in ["filter", "sample"] {
            try expectUsageError(
                [command, "--logits", Fixture.path, "--dtype", "f16"],
                mentioning: "--dtype f16 conflicts with the header's dtype f32")
            try expectUsageError([command, "--logits", Fixture.path, "--dtype", "bf16"], mentioning: "conflicts")
            let agreeing = try CLI.run([command, "--logits", Fixture.path, "--dtype", "f32"])
            #expect(agreeing.status == 0 && agreeing.lines.count == Fixture.logits.rows, "\(agreeing.stderr)")
        }
    }

    @Test("nsigma: a device, a FIFO or a directory is named as such, not as a permission problem")
    func notRegularFiles() throws {
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("nsigma-fifo-\(UUID().uuidString)")
            .path
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        for command in ["filter", "sample"] {
            // A FIFO with no writer would block a reader forever: it must be refused unopened.
            try expectUsageError([command, "--logits", fifo, "--vocab", "4"], mentioning: "not a regular file (a FIFO)")
            try expectUsageError(
                [command, "--logits", "/dev/null", "--vocab", "4"],
                mentioning: "not a regular file (a character device)")
            try expectUsageError(
                [command, "--logits", "/dev/zero", "--vocab", "4"],
                mentioning: "not a regular file (a character device)")
            try expectUsageError(
                [command, "--logits", FileManager.default.temporaryDirectory.path, "--vocab", "4"],
                mentioning: "is a directory")
        }
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
