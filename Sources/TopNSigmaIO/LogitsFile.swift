import Foundation
import TopNSigma

/// A `[rows, vocab]` block of logits read from disk, converted to `Float`.
public struct LogitsFile: Sendable {
    /// Row-major logits, `rows × vocab` values.
    public var values: [Float]
    public var rows: Int
    public var vocab: Int
    /// The element type found in the file.
    public var dtype: ElementType

    /// Element types a logits file may hold.
    public enum ElementType: String, Sendable, CaseIterable {
        case float32 = "f32"
        case float16 = "f16"
        case bfloat16 = "bf16"

        var byteCount: Int { self == .float32 ? 4 : 2 }
    }

    /// What is wrong with a file; `description` is the message the CLI prints.
    public enum ReadError: Error, CustomStringConvertible, Equatable {
        case unreadable(path: String, reason: String)
        case badNumPy(path: String, reason: String)
        case badSize(path: String, reason: String)
        case missingVocab(path: String)

        public var description: String {
            switch self {
            case .unreadable(let path, let reason): return "cannot read \(path): \(reason)"
            case .badNumPy(let path, let reason): return "\(path) is not a usable .npy file: \(reason)"
            case .badSize(let path, let reason): return "\(path) has a bad size: \(reason)"
            case .missingVocab(let path): return "\(path) is a raw file: --vocab is required"
            }
        }
    }

    public init(values: [Float], rows: Int, vocab: Int, dtype: ElementType = .float32) {
        self.values = values
        self.rows = rows
        self.vocab = vocab
        self.dtype = dtype
    }

    /// Reads a 2-D `.npy` file (float32 or float16, C order; the vocabulary comes from its shape),
    /// or a raw little-endian file of `dtype` elements whose size is a multiple of
    /// `vocab × element size`. A path ending in `.npy`, or content starting with the NumPy magic,
    /// is read as NumPy.
    ///
    /// Every size in the file or the arguments is checked before any arithmetic on it: a huge
    /// `vocab` or shape is a ``ReadError``, never an overflow trap.
    ///
    /// - Parameters:
    ///   - path: the file (a regular file, or a link to one).
    ///   - vocab: logits per row, required for raw files; for `.npy` it must match the shape if given.
    ///   - dtype: element type of a raw file (`nil`: float32). For `.npy` the header decides; a
    ///     `dtype` that differs from the header's is an error rather than silently ignored.
    /// - Throws: ``ReadError`` with a message naming the file and the problem.
    public static func read(path: String, vocab: Int? = nil, dtype: ElementType? = nil) throws(ReadError) -> LogitsFile {
        if let problem = notRegularFile(path) { throw .unreadable(path: path, reason: problem) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            throw .unreadable(path: path, reason: !exists ? "no such file" : isDirectory.boolValue ? "is a directory" : "\(error.localizedDescription)")
        }
        return try parse(data, path: path, vocab: vocab, dtype: dtype)
    }

    /// Parses the bytes of a logits file as ``read(path:vocab:dtype:)`` does (`path` names the
    /// file in messages and, by its `.npy` suffix, asks for NumPy).
    public static func parse(_ data: Data, path: String, vocab: Int? = nil, dtype: ElementType? = nil) throws(ReadError) -> LogitsFile {
        if let vocab, vocab <= 0 { throw .badSize(path: path, reason: "--vocab must be positive, got \(vocab)") }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        if data.count >= 6 && data.prefix(6).elementsEqual(magic) {
            let file = try readNumPy(data, path: path, vocab: vocab)
            if let dtype, dtype != file.dtype {
                throw .badNumPy(path: path, reason: "--dtype \(dtype.rawValue) conflicts with the header's dtype \(file.dtype.rawValue) (a .npy file's header decides; drop --dtype)")
            }
            return file
        }
        if path.hasSuffix(".npy") { throw .badNumPy(path: path, reason: "missing the \\x93NUMPY magic") }
        guard let vocab else { throw .missingVocab(path: path) }
        let dtype = dtype ?? .float32
        let (rowBytes, overflow) = vocab.multipliedReportingOverflow(by: dtype.byteCount)
        guard !overflow else { throw .badSize(path: path, reason: "--vocab \(vocab) × \(dtype.byteCount) bytes overflows") }
        guard data.count > 0 else { throw .badSize(path: path, reason: "the file is empty") }
        guard data.count % rowBytes == 0 else {
            throw .badSize(path: path, reason: "\(data.count) bytes is not a multiple of \(rowBytes) (vocab \(vocab) × \(dtype.byteCount) bytes)")
        }
        let rows = data.count / rowBytes
        // rows × vocab × byteCount == data.count: no overflow.
        return LogitsFile(values: decode(data, offset: 0, count: rows * vocab, dtype: dtype), rows: rows, vocab: vocab, dtype: dtype)
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
              let header = String(data: data.subdata(in: data.startIndex + headerStart ..< data.startIndex + headerStart + headerLength), encoding: .utf8)
        else { throw .badNumPy(path: path, reason: "truncated or non-text header") }
        guard let descr = field("descr", in: header) else { throw .badNumPy(path: path, reason: "header has no 'descr'") }
        let dtype: ElementType
        switch descr.trimmingCharacters(in: CharacterSet(charactersIn: "'\" ")) {
        case "<f4", "=f4": dtype = .float32
        case "<f2", "=f2": dtype = .float16
        default: throw .badNumPy(path: path, reason: "dtype \(descr) is not little-endian float32 or float16")
        }
        if let order = field("fortran_order", in: header), order.contains("True") {
            throw .badNumPy(path: path, reason: "Fortran order is not supported; save in C order")
        }
        guard let shapeText = field("shape", in: header) else { throw .badNumPy(path: path, reason: "header has no 'shape'") }
        let dims = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "() "))
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { Int($0) }
        guard dims.count == 2, let rows = dims[0], let columns = dims[1] else {
            throw .badNumPy(path: path, reason: "shape \(shapeText) is not 2-D [batch, vocab]")
        }
        guard rows >= 0 else { throw .badNumPy(path: path, reason: "shape[0] = \(rows) is negative") }
        guard columns > 0 else { throw .badSize(path: path, reason: "vocab (shape[1]) is \(columns), must be positive") }
        if let vocab, vocab != columns {
            throw .badSize(path: path, reason: "--vocab \(vocab) does not match the file's shape[1] = \(columns)")
        }
        let offset = headerStart + headerLength
        let found = data.count - offset
        // The shape is untrusted: a product that overflows cannot match the file's size.
        let (elements, overflow1) = rows.multipliedReportingOverflow(by: columns)
        let (needed, overflow2) = elements.multipliedReportingOverflow(by: dtype.byteCount)
        guard !overflow1 && !overflow2 else {
            throw .badSize(path: path, reason: "shape (\(rows), \(columns)) is too large (its byte count overflows), found \(found) data bytes")
        }
        guard found == needed else {
            throw .badSize(path: path, reason: "shape (\(rows), \(columns)) needs \(needed) data bytes, found \(found)")
        }
        return LogitsFile(values: decode(data, offset: offset, count: rows * columns, dtype: dtype), rows: rows, vocab: columns, dtype: dtype)
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

    static func decode(_ data: Data, offset: Int, count: Int, dtype: ElementType) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { out, initialized in
            data.withUnsafeBytes { raw in
                let base = raw.baseAddress! + offset
                switch dtype {
                case .float32:
                    for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                case .float16:
                    for i in 0..<count { out[i] = HalfPrecision.float(fromHalfBits: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
                case .bfloat16:
                    for i in 0..<count { out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
                }
            }
            initialized = count
        }
    }

    /// Writes `values` as a 2-D little-endian float32 `.npy` file.
    public static func writeNumPy(_ values: [Float], rows: Int, vocab: Int, to path: String) throws {
        precondition(values.count == rows * vocab, "values holds \(values.count) entries for \(rows) × \(vocab)")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(rows), \(vocab)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
        data.append(contentsOf: Array(header.utf8))
        values.withUnsafeBytes { data.append(contentsOf: $0) }
        try data.write(to: URL(fileURLWithPath: path))
    }
}

