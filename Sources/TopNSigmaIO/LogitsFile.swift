import Foundation
import TopNSigma

/// A `[rows, vocab]` block of logits read from disk: as `Float` values, and for a float16 or
/// bfloat16 file also as stored (``bits``), for the library's 16-bit kernels.
public struct LogitsFile: Sendable {
    /// Row-major logits, `rows × vocab` values (a 16-bit file's converted exactly).
    public var values: [Float]
    /// A float16 or bfloat16 file's logits as stored, row-major `UInt16` bits (`values[i]` is
    /// `bits[i]` converted); nil for float32. Pass them with ``format`` to
    /// `BatchSampler.sample(bits:format:parameters:steps:)` to sample without converting.
    public var bits: [UInt16]?
    /// Rows in the file.
    public var rows: Int
    /// Logits per row.
    public var vocab: Int
    /// How the file stores its logits.
    public var format: LogitFormat

    /// What is wrong with a file; `description` is the message the CLI prints.
    public enum ReadError: Error, CustomStringConvertible, Equatable {
        /// The file cannot be read: missing, a directory, a device or a FIFO, no permission.
        case unreadable(path: String, reason: String)
        /// A `.npy` file whose magic, header, element type, order or shape is unusable.
        case badNumPy(path: String, reason: String)
        /// A size that does not fit: a vocabulary of 0 or one that disagrees with the shape,
        /// data shorter or longer than the shape needs, a raw size that is not a multiple of
        /// the row's bytes, an empty file, a size whose byte count overflows.
        case badSize(path: String, reason: String)
        /// A raw file read without `--vocab`.
        case missingVocab(path: String)

        /// The message the CLI prints: `x.f32 has a bad size: …`.
        public var description: String {
            switch self {
            case .unreadable(let path, let reason): return "cannot read \(path): \(reason)"
            case .badNumPy(let path, let reason): return "\(path) is not a usable .npy file: \(reason)"
            case .badSize(let path, let reason): return "\(path) has a bad size: \(reason)"
            case .missingVocab(let path): return "\(path) is a raw file: --vocab is required"
            }
        }
    }

    /// A float32 block: `values` holds `rows × vocab` logits, row-major.
    public init(values: [Float], rows: Int, vocab: Int) {
        self.init(values: values, bits: nil, rows: rows, vocab: vocab, format: .float32)
    }

    init(values: [Float], bits: [UInt16]?, rows: Int, vocab: Int, format: LogitFormat) {
        self.values = values
        self.bits = bits
        self.rows = rows
        self.vocab = vocab
        self.format = format
    }

    /// Reads a 2-D `.npy` file (float32 or float16, C order; the vocabulary comes from its shape),
    /// or a raw little-endian file of `format` elements whose size is a multiple of
    /// `vocab × element size`. A path ending in `.npy`, or content starting with the NumPy magic,
    /// is read as NumPy.
    ///
    /// Every size in the file or the arguments is checked before any arithmetic on it: a huge
    /// `vocab` or shape is a ``ReadError``, never an overflow trap.
    ///
    /// - Parameters:
    ///   - path: the file (a regular file, or a link to one).
    ///   - vocab: logits per row, required for raw files; for `.npy` it must match the shape if given.
    ///   - format: element type of a raw file (`nil`: float32; the CLI's `--dtype` through
    ///     `LogitFormat(fileSpelling:)`). For `.npy` the header decides; a `format` that differs
    ///     from the header's is an error rather than silently ignored.
    /// - Throws: ``ReadError`` with a message naming the file and the problem.
    public static func read(path: String, vocab: Int? = nil, format: LogitFormat? = nil) throws(ReadError) -> LogitsFile
    {
        if let problem = notRegularFile(path) { throw .unreadable(path: path, reason: problem) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            throw .unreadable(
                path: path,
                reason: !exists
                    ? "no such file" : isDirectory.boolValue ? "is a directory" : "\(error.localizedDescription)")
        }
        return try parse(data, path: path, vocab: vocab, format: format)
    }

    /// Parses the bytes of a logits file as ``read(path:vocab:format:)`` does (`path` names the
    /// file in messages and, by its `.npy` suffix, asks for NumPy).
    public static func parse(
        _ data: Data, path: String, vocab: Int? = nil, format: LogitFormat? = nil
    ) throws(ReadError) -> LogitsFile {
        if let vocab, vocab <= 0 { throw .badSize(path: path, reason: "--vocab must be positive, got \(vocab)") }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        if data.count >= 6 && data.prefix(6).elementsEqual(magic) {
            let file = try readNumPy(data, path: path, vocab: vocab)
            if let format, format != file.format {
                throw .badNumPy(
                    path: path,
                    reason:
                        "--dtype \(format.fileSpelling) conflicts with the header's dtype \(file.format.fileSpelling) (a .npy file's header decides; drop --dtype)"
                )
            }
            return file
        }
        if path.hasSuffix(".npy") { throw .badNumPy(path: path, reason: "missing the \\x93NUMPY magic") }
        guard let vocab else { throw .missingVocab(path: path) }
        let format = format ?? .float32
        let (rowBytes, overflow) = vocab.multipliedReportingOverflow(by: format.byteCount)
        guard !overflow else {
            throw .badSize(path: path, reason: "--vocab \(vocab) × \(format.byteCount) bytes overflows")
        }
        guard data.count > 0 else { throw .badSize(path: path, reason: "the file is empty") }
        guard data.count % rowBytes == 0 else {
            throw .badSize(
                path: path,
                reason:
                    "\(data.count) bytes is not a multiple of \(rowBytes) (vocab \(vocab) × \(format.byteCount) bytes)")
        }
        let rows = data.count / rowBytes
        // rows × vocab × byteCount == data.count: no overflow.
        return decode(data, offset: 0, rows: rows, vocab: vocab, format: format)
    }

    /// Why `path` cannot be read as a logits file although it exists (a device, a FIFO, a
    /// socket), or nil. A FIFO would block and a device is not a file of logits; `Data` reports
    /// either as a permission problem, which misleads.
    static func notRegularFile(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }  // missing or unreachable: the read says why
        switch info.st_mode & S_IFMT {
        case S_IFREG, S_IFDIR: return nil
        case S_IFCHR: return "not a regular file (a character device)"
        case S_IFBLK: return "not a regular file (a block device)"
        case S_IFIFO: return "not a regular file (a FIFO)"
        case S_IFSOCK: return "not a regular file (a socket)"
        default: return "not a regular file"
        }
    }

    static func readNumPy(_ data: Data, path: String, vocab: Int?) throws(ReadError) -> LogitsFile {
        let bytes = [UInt8](data.prefix(12))
        guard bytes.count >= 10 else { throw .badNumPy(path: path, reason: "truncated header") }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw .badNumPy(path: path, reason: "truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw .badNumPy(path: path, reason: "unsupported format version \(major)")
        }
        guard data.count >= headerStart + headerLength,
            let header = String(
                data: data.subdata(in: data.startIndex + headerStart..<data.startIndex + headerStart + headerLength),
                encoding: .utf8)
        else { throw .badNumPy(path: path, reason: "truncated or non-text header") }
        guard let descr = field("descr", in: header) else {
            throw .badNumPy(path: path, reason: "header has no 'descr'")
        }
        let format: LogitFormat
        switch descr.trimmingCharacters(in: CharacterSet(charactersIn: "'\" ")) {
        case "<f4", "=f4": format = .float32
        case "<f2", "=f2": format = .float16
        default: throw .badNumPy(path: path, reason: "dtype \(descr) is not little-endian float32 or float16")
        }
        if let order = field("fortran_order", in: header), order.contains("True") {
            throw .badNumPy(path: path, reason: "Fortran order is not supported; save in C order")
        }
        guard let shapeText = field("shape", in: header) else {
            throw .badNumPy(path: path, reason: "header has no 'shape'")
        }
        let dims = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "() "))
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map {
                Int($0)
            }
        guard dims.count == 2, let rows = dims[0], let columns = dims[1] else {
            throw .badNumPy(path: path, reason: "shape \(shapeText) is not 2-D [batch, vocab]")
        }
        guard rows >= 0 else { throw .badNumPy(path: path, reason: "shape[0] = \(rows) is negative") }
        guard columns > 0 else {
            throw .badSize(path: path, reason: "vocab (shape[1]) is \(columns), must be positive")
        }
        if let vocab, vocab != columns {
            throw .badSize(path: path, reason: "--vocab \(vocab) does not match the file's shape[1] = \(columns)")
        }
        let offset = headerStart + headerLength
        let found = data.count - offset
        // The shape is untrusted: a product that overflows cannot match the file's size.
        let (elements, overflow1) = rows.multipliedReportingOverflow(by: columns)
        let (needed, overflow2) = elements.multipliedReportingOverflow(by: format.byteCount)
        guard !overflow1 && !overflow2 else {
            throw .badSize(
                path: path,
                reason: "shape (\(rows), \(columns)) is too large (its byte count overflows), found \(found) data bytes"
            )
        }
        guard found == needed else {
            throw .badSize(path: path, reason: "shape (\(rows), \(columns)) needs \(needed) data bytes, found \(found)")
        }
        return decode(data, offset: offset, rows: rows, vocab: columns, format: format)
    }

    /// The value text of `key` in a NumPy header dict (`{'descr': '<f4', ...}`).
    static func field(_ key: String, in header: String) -> String? {
        guard let keyRange = header.range(of: "'\(key)'") ?? header.range(of: "\"\(key)\"") else { return nil }
        var rest = header[keyRange.upperBound...].drop { $0 == " " || $0 == ":" }
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { return nil }
            return String(rest[...close])
        }
        if let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) { rest = rest[..<end] }
        return String(rest).trimmingCharacters(in: .whitespaces)
    }

    /// The file whose `rows × vocab` logits of `format` start at byte `offset` of `data` (the
    /// caller has checked that they fit).
    static func decode(_ data: Data, offset: Int, rows: Int, vocab: Int, format: LogitFormat) -> LogitsFile {
        let count = rows * vocab
        // `Array(unsafeUninitializedCapacity: 0)` writes the shared empty array's count: a race
        // (benign, but reported by ThreadSanitizer) with every thread reading an empty array.
        guard count > 0 else {
            return LogitsFile(values: [], bits: format == .float32 ? nil : [], rows: rows, vocab: vocab, format: format)
        }
        return data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + offset
            switch format {
            case .float32:
                let values = [Float](unsafeUninitializedCapacity: count) { out, initialized in
                    for i in 0..<count {
                        out[i] = Float(
                            bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                        )
                    }
                    initialized = count
                }
                return LogitsFile(values: values, bits: nil, rows: rows, vocab: vocab, format: format)
            case .float16, .bfloat16:
                let bits = [UInt16](unsafeUninitializedCapacity: count) { out, initialized in
                    for i in 0..<count {
                        out[i] = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    }
                    initialized = count
                }
                let values =
                    format == .float16
                    ? bits.map(HalfPrecision.float(fromHalfBits:))
                    : bits.map { Float(bitPattern: UInt32($0) << 16) }
                return LogitsFile(values: values, bits: bits, rows: rows, vocab: vocab, format: format)
            }
        }
    }
}

extension LogitFormat {
    /// The format `nsigma`'s `--dtype` names: `f32`, `f16` or `bf16`; nil for anything else.
    public init?(fileSpelling: String) {
        guard let format = Self.allCases.first(where: { $0.fileSpelling == fileSpelling }) else { return nil }
        self = format
    }

    /// How `nsigma`'s `--dtype` and its messages spell this format: `f32`, `f16` or `bf16`.
    public var fileSpelling: String {
        switch self {
        case .float32: return "f32"
        case .float16: return "f16"
        case .bfloat16: return "bf16"
        }
    }
}
