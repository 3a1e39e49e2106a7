import Foundation
import TopNSigma
import TopNSigmaIO

// libFuzzer target: LogitsFile.parse on arbitrary bytes with arbitrary --vocab / --dtype.
//
// Input layout: byte 0 selects the options (bits 0–1 the dtype: none, f32, f16, bf16; bits 2–4
// the vocab: none, 1, 2, 3, 4, 7, from the next 8 bytes (any Int64, huge and negative included);
// bit 5 the file name's suffix, .npy or .f32; bit 6 prepends the NumPy magic and version 1 so the
// header parser is reached quickly); the rest is the file's content.
//
// A parse either throws a ReadError or returns a file whose every field agrees with the bytes
// (checked here from the definition, not from the reader's code); anything else (a trap, an
// overflow, a read out of bounds under AddressSanitizer) is a finding.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLogitsFile(_ start: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    var bytes = Array(UnsafeBufferPointer(start: start, count: size))
    let options = bytes.removeFirst()
    let formats: [LogitFormat?] = [nil, .float32, .float16, .bfloat16]
    let format = formats[Int(options & 3)]
    var vocab: Int?
    switch (options >> 2) & 7 {
    case 0: vocab = nil
    case 1: vocab = 1
    case 2: vocab = 2
    case 3: vocab = 3
    case 4: vocab = 4
    case 5: vocab = 7
    default:
        guard bytes.count >= 8 else { return 0 }
        vocab = Int(Int64(littleEndian: bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }))
        bytes.removeFirst(8)
    }
    let path = options & 32 != 0 ? "fuzz.npy" : "fuzz.f32"
    if options & 64 != 0 { bytes = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0] + bytes }
    let data = Data(bytes)

    let file: LogitsFile
    do {
        file = try LogitsFile.parse(data, path: path, vocab: vocab, format: format)
    } catch {
        precondition(!error.description.isEmpty)
        return 0
    }

    // A successful read: sizes from the definition.
    precondition(file.vocab > 0 && file.rows >= 0, "rows \(file.rows), vocab \(file.vocab)")
    precondition(
        file.values.count == file.rows * file.vocab, "\(file.values.count) values for \(file.rows) × \(file.vocab)")
    if let vocab { precondition(vocab == file.vocab, "--vocab \(vocab) but vocab \(file.vocab)") }
    let isNumPy = bytes.count >= 6 && bytes.prefix(6).elementsEqual([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59])
    if !isNumPy {
        precondition(!path.hasSuffix(".npy"), "raw bytes read as a .npy path")
        precondition(file.format == format ?? .float32)
    } else if let format {
        precondition(file.format == format, "--dtype \(format) accepted for a \(file.format) .npy")
    }
    // A 16-bit file keeps its bits as stored, one per value; a float32 file has none.
    if file.format == .float32 {
        precondition(file.bits == nil, "bits for a float32 file")
    } else {
        precondition(
            file.bits?.count == file.values.count, "\(file.bits?.count ?? 0) bits for \(file.values.count) values")
    }
    let width = file.format.byteCount
    precondition(file.values.count * width <= bytes.count, "more values than bytes")
    // The data is the file's last values × width bytes (raw: all of it); each value decodes from
    // its bytes exactly (float16 through the standard library's Float16 where available).
    let offset = bytes.count - file.values.count * width
    if !isNumPy { precondition(offset == 0, "raw file with \(offset) unread bytes") }
    for (i, value) in file.values.enumerated() {
        let at = offset + i * width
        let expected: Float
        if let bits = file.bits {
            precondition(bits[i] == UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8, "bits \(i): \(bits[i])")
        }
        switch file.format {
        case .float32:
            expected = Float(
                bitPattern: UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(
                    bytes[at + 3]) << 24)
        case .bfloat16:
            expected = Float(bitPattern: (UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8) << 16)
        case .float16:
            #if arch(x86_64) || arch(arm64)
            expected = Float(Float16(bitPattern: UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8))
            #else
            expected = value
            #endif
        }
        precondition(
            value.bitPattern == expected.bitPattern || (value.isNaN && expected.isNaN),
            "value \(i): \(value) != \(expected)")
    }
    return 0
}
