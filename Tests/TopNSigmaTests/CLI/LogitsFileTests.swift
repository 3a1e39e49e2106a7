import Foundation
import Testing
import TopNSigma
import TopNSigmaIO

/// `LogitsFile`, the reader behind `nsigma`'s `--logits`: `.npy` headers, raw files of each
/// element type, and every way a file can be refused. Values are checked against bit patterns
/// worked out by hand, never against the reader's own decoding.
@Suite struct LogitsFileTests {
    /// Little-endian bytes of 32-bit words.
    static func bytes(_ words: [UInt32]) -> [UInt8] {
        words.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8 & 0xFF), UInt8($0 >> 16 & 0xFF), UInt8($0 >> 24)] }
    }

    /// Little-endian bytes of 16-bit words.
    static func bytes(_ halves: [UInt16]) -> [UInt8] {
        halves.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
    }

    // float32: 1, -2.5, 0.15625 (1.25 · 2⁻³), 3, -inf, 100 (1.5625 · 2⁶).
    static let float32Words: [UInt32] = [0x3F80_0000, 0xC020_0000, 0x3E20_0000, 0x4040_0000, 0xFF80_0000, 0x42C8_0000]
    static let float32Values: [Float] = [1, -2.5, 0.15625, 3, -.infinity, 100]

    // float16: 1, -2.5 (sign, exponent 16, mantissa 0x100), 0.3125 (exponent 13, mantissa
    // 0x100), 65504 (the largest half), 2⁻²⁴ (the smallest subnormal), -inf.
    static let float16Bits: [UInt16] = [0x3C00, 0xC100, 0x3500, 0x7BFF, 0x0001, 0xFC00]
    static let float16Values: [Float] = [1, -2.5, 0.3125, 65504, 0x1p-24, -.infinity]

    // bfloat16 (the high half of a float32): 1, -2.5, 3.140625 (1 + 73/128, times 2),
    // 2⁻¹³³ (the float32 0x00010000, subnormal), -inf, 65536.
    static let bfloat16Bits: [UInt16] = [0x3F80, 0xC020, 0x4049, 0x0001, 0xFF80, 0x4780]
    static let bfloat16Values: [Float] = [1, -2.5, 3.140625, 0x1p-133, -.infinity, 65536]

    // MARK: - .npy

    @Test("a float32 .npy file: rows and vocabulary from its shape, values from its data")
    func numPyFloat32() throws {
        for descr in ["'<f4'", "'=f4'"] {
            let data = numPy(
                "{'descr': \(descr), 'fortran_order': False, 'shape': (2, 3), }", data: Self.bytes(Self.float32Words))
            let file = try LogitsFile.parse(data, path: "x.npy")
            #expect(file.rows == 2 && file.vocab == 3 && file.format == .float32, "\(descr)")
            #expect(file.values == Self.float32Values && file.bits == nil, "\(descr)")
        }
        // Double-quoted keys and a --vocab that agrees with the shape.
        let quoted = numPy(
            #"{"descr": "<f4", "fortran_order": False, "shape": (3, 2), }"#, data: Self.bytes(Self.float32Words))
        let file = try LogitsFile.parse(quoted, path: "x.npy", vocab: 2)
        #expect(file.rows == 3 && file.vocab == 2 && file.values == Self.float32Values)
    }

    @Test("a float16 .npy file: every half converted exactly, subnormals and infinities included")
    func numPyFloat16() throws {
        let data = numPy(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 2), }", data: Self.bytes(Self.float16Bits))
        let file = try LogitsFile.parse(data, path: "x.npy")
        #expect(file.rows == 3 && file.vocab == 2 && file.format == .float16)
        #expect(file.values == Self.float16Values)
        #expect(file.bits == Self.float16Bits)
    }

    @Test("a version 2 header (4-byte length) and a file without rows")
    func numPyVersion2AndEmpty() throws {
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 6), }"
        while (12 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let length = UInt32(header.utf8.count)
        var data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 2, 0] + Self.bytes([length]))
        data.append(contentsOf: Array(header.utf8) + Self.bytes(Self.float32Words))
        let file = try LogitsFile.parse(data, path: "x.npy")
        #expect(file.rows == 1 && file.vocab == 6 && file.values == Self.float32Values)

        let empty = try LogitsFile.parse(
            numPy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }"), path: "x.npy")
        #expect(empty.rows == 0 && empty.vocab == 5 && empty.values.isEmpty)
    }

    // MARK: - raw files

    @Test("raw float32, float16 and bfloat16 files with --vocab: rows from the size, values by hand")
    func rawFiles() throws {
        let f32 = try LogitsFile.parse(Data(Self.bytes(Self.float32Words)), path: "x.f32", vocab: 3)
        #expect(
            f32.rows == 2 && f32.vocab == 3 && f32.format == .float32 && f32.values == Self.float32Values
                && f32.bits == nil)
        // float32 is the default element type.
        #expect(
            try LogitsFile.parse(Data(Self.bytes(Self.float32Words)), path: "x.f32", vocab: 6, format: .float32).values
                == Self.float32Values)

        let f16 = try LogitsFile.parse(Data(Self.bytes(Self.float16Bits)), path: "x.f16", vocab: 2, format: .float16)
        #expect(f16.rows == 3 && f16.vocab == 2 && f16.format == .float16 && f16.values == Self.float16Values)
        #expect(f16.bits == Self.float16Bits)

        let bf16 = try LogitsFile.parse(
            Data(Self.bytes(Self.bfloat16Bits)), path: "x.bf16", vocab: 6, format: .bfloat16)
        #expect(bf16.rows == 1 && bf16.vocab == 6 && bf16.format == .bfloat16 && bf16.values == Self.bfloat16Values)
        #expect(bf16.bits == Self.bfloat16Bits)
    }

    @Test("--dtype's spellings: f32, f16 and bf16 name the three formats, nothing else does")
    func fileSpellings() {
        #expect(LogitFormat(fileSpelling: "f32") == .float32)
        #expect(LogitFormat(fileSpelling: "f16") == .float16)
        #expect(LogitFormat(fileSpelling: "bf16") == .bfloat16)
        for other in ["", "f64", "F32", "float32", "bfloat16", "fp16"] {
            #expect(LogitFormat(fileSpelling: other) == nil, "\(other)")
        }
        #expect(LogitFormat.allCases.map(\.fileSpelling) == ["f32", "f16", "bf16"])
    }

    @Test("read(path:) reads a file from disk as parse does")
    func readFromDisk() throws {
        let path = try temporaryFile("logits.bf16", Data(Self.bytes(Self.bfloat16Bits)))
        let file = try LogitsFile.read(path: path, vocab: 3, format: .bfloat16)
        #expect(file.rows == 2 && file.values == Self.bfloat16Values)
        #expect(throws: LogitsFile.ReadError.unreadable(path: "/nonexistent/x.f32", reason: "no such file")) {
            try LogitsFile.read(path: "/nonexistent/x.f32", vocab: 3)
        }
        let directory = FileManager.default.temporaryDirectory.path
        #expect(throws: LogitsFile.ReadError.unreadable(path: directory, reason: "is a directory")) {
            try LogitsFile.read(path: directory, vocab: 3)
        }
    }

    // MARK: - errors

    @Test("a truncated file: short magic, a header longer than the file, data shorter than the shape")
    func truncated() throws {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        #expect(throws: LogitsFile.ReadError.badNumPy(path: "x.npy", reason: "truncated header")) {
            try LogitsFile.parse(Data(magic + [1, 0]), path: "x.npy")
        }
        #expect(throws: LogitsFile.ReadError.badNumPy(path: "x.npy", reason: "truncated header")) {
            try LogitsFile.parse(Data(magic + [2, 0, 64, 0]), path: "x.npy")  // version 2 needs 12 bytes
        }
        #expect(throws: LogitsFile.ReadError.badNumPy(path: "x.npy", reason: "truncated or non-text header")) {
            try LogitsFile.parse(Data(magic + [1, 0, 100, 0] + Array("{'descr': '<f4'".utf8)), path: "x.npy")
        }
        let short = numPy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            data: Array(Self.bytes(Self.float32Words).prefix(20)))
        #expect(
            throws: LogitsFile.ReadError.badSize(path: "x.npy", reason: "shape (2, 3) needs 24 data bytes, found 20")
        ) {
            try LogitsFile.parse(short, path: "x.npy")
        }
    }

    @Test(
        "a bad header: each problem named",
        arguments: [
            ("{'fortran_order': False, 'shape': (1, 1), }", "header has no 'descr'"),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }",
                "dtype '<f8' is not little-endian float32 or float16"
            ),
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1), }",
                "dtype '>f4' is not little-endian float32 or float16"
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }",
                "Fortran order is not supported; save in C order"
            ),
            ("{'descr': '<f4', 'fortran_order': False, }", "header has no 'shape'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", "shape (4,) is not 2-D [batch, vocab]"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 4), }",
                "shape (1, 1, 4) is not 2-D [batch, vocab]"
            )
        ])
    func badHeader(header: String, reason: String) throws {
        let data = numPy(header, data: [0, 0, 0x80, 0x3F, 0, 0, 0x80, 0x3F, 0, 0, 0x80, 0x3F, 0, 0, 0x80, 0x3F])
        #expect(throws: LogitsFile.ReadError.badNumPy(path: "x.npy", reason: reason)) {
            try LogitsFile.parse(data, path: "x.npy")
        }
    }

    @Test("a bad header: unknown version, no magic behind a .npy name")
    func badMagicAndVersion() throws {
        var data = numPy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }", data: [0, 0, 0x80, 0x3F])
        data[6] = 4
        #expect(throws: LogitsFile.ReadError.badNumPy(path: "x.npy", reason: "unsupported format version 4")) {
            try LogitsFile.parse(data, path: "x.npy")
        }
        #expect(throws: LogitsFile.ReadError.badNumPy(path: "x.npy", reason: "missing the \\x93NUMPY magic")) {
            try LogitsFile.parse(Data(Self.bytes(Self.float32Words)), path: "x.npy", vocab: 3)
        }
    }

    @Test("a size that is not a multiple of the vocabulary, an empty file, a missing --vocab")
    func badSizes() throws {
        #expect(
            throws: LogitsFile.ReadError.badSize(
                path: "x.f32", reason: "24 bytes is not a multiple of 16 (vocab 4 × 4 bytes)")
        ) {
            try LogitsFile.parse(Data(Self.bytes(Self.float32Words)), path: "x.f32", vocab: 4)
        }
        #expect(
            throws: LogitsFile.ReadError.badSize(
                path: "x.bf16", reason: "12 bytes is not a multiple of 10 (vocab 5 × 2 bytes)")
        ) {
            try LogitsFile.parse(Data(Self.bytes(Self.bfloat16Bits)), path: "x.bf16", vocab: 5, format: .bfloat16)
        }
        #expect(throws: LogitsFile.ReadError.badSize(path: "x.f32", reason: "the file is empty")) {
            try LogitsFile.parse(Data(), path: "x.f32", vocab: 4)
        }
        #expect(throws: LogitsFile.ReadError.missingVocab(path: "x.f32")) {
            try LogitsFile.parse(Data(Self.bytes(Self.float32Words)), path: "x.f32")
        }
        let npy = numPy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: Self.bytes(Self.float32Words))
        #expect(
            throws: LogitsFile.ReadError.badSize(
                path: "x.npy", reason: "--vocab 2 does not match the file's shape[1] = 3")
        ) {
            try LogitsFile.parse(npy, path: "x.npy", vocab: 2)
        }
    }

    @Test("a vocabulary of 0 (or below) is refused, from --vocab or from the shape")
    func zeroVocabulary() throws {
        for vocab in [0, -3] {
            #expect(
                throws: LogitsFile.ReadError.badSize(path: "x.f32", reason: "--vocab must be positive, got \(vocab)")
            ) {
                try LogitsFile.parse(Data(Self.bytes(Self.float32Words)), path: "x.f32", vocab: vocab)
            }
        }
        #expect(throws: LogitsFile.ReadError.badSize(path: "x.npy", reason: "vocab (shape[1]) is 0, must be positive"))
        {
            try LogitsFile.parse(numPy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0), }"), path: "x.npy")
        }
    }

    @Test("the ReadError messages the CLI prints")
    func messages() {
        #expect(
            LogitsFile.ReadError.unreadable(path: "a", reason: "no such file").description
                == "cannot read a: no such file")
        #expect(LogitsFile.ReadError.badNumPy(path: "a", reason: "r").description == "a is not a usable .npy file: r")
        #expect(LogitsFile.ReadError.badSize(path: "a", reason: "r").description == "a has a bad size: r")
        #expect(LogitsFile.ReadError.missingVocab(path: "a").description == "a is a raw file: --vocab is required")
    }
}
