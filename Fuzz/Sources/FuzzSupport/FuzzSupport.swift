#if canImport(Glibc)
import Glibc
#endif

/// Reads a fuzzer's input bytes in order; past the end, every byte is 0.
public struct Reader {
    public var bytes: [UInt8]
    public var at = 0

    public init(bytes: [UInt8]) { self.bytes = bytes }

    public var isEmpty: Bool { at >= bytes.count }

    public mutating func byte() -> UInt8 {
        defer { at += 1 }
        return at < bytes.count ? bytes[at] : 0
    }

    /// Four bytes, little-endian.
    public mutating func uint32() -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(byte()) << (8 * i) }
        return v
    }

    /// Four bytes as raw Float bits.
    public mutating func float() -> Float { Float(bitPattern: uint32()) }
}

/// Aborts with `target: message` on stderr when `condition` is false: libFuzzer then keeps the
/// input as a finding.
public func check(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, target: StaticString = #fileID
) {
    if !condition() {
        var text = Array("\(target): \(message())\n".utf8)
        _ = text.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
        abort()
    }
}
