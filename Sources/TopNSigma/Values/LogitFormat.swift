/// How logits are stored in memory. The kernels read any of them and convert in registers: no
/// row is ever converted into a buffer.
public enum LogitFormat: Sendable, Equatable, CaseIterable {
    /// IEEE binary32.
    case float32
    /// IEEE binary16, as raw `UInt16` bits.
    case float16
    /// bfloat16 (the high half of a binary32), as raw `UInt16` bits.
    case bfloat16

    /// Bytes per logit.
    public var byteCount: Int { self == .float32 ? 4 : 2 }
}
