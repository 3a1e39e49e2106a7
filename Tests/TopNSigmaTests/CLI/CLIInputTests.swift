import CAllocationCounter
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TopNSigma
import TopNSigmaIO

/// Hostile sizes, empty files and files that are not regular files, through the CLI: exit 2 with a
/// message, never a trap.
extension CLITests {
    func expectUsageError(_ arguments: [String], mentioning text: String) throws {
        let run = try CLI.run(arguments)
        #expect(run.status == 2, "\(arguments): status \(run.status), \(run.stderr)")
        #expect(run.stdout.isEmpty, "\(arguments)")
        #expect(run.stderr.hasPrefix("nsigma: ") && run.stderr.contains(text), "\(arguments): \(run.stderr)")
    }

    @Test("nsigma: huge .npy shapes and --vocab values exit 2 with a message, never a trap")
    func cliHugeSizes() throws {
        for (shape, message) in HostileInputTests.hugeShapes {
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
