import TopNSigma

/// The memory-read floor for callers outside this package (the ordo-one benchmarks): the
/// library's own read loop, compiled with the library's flags, so that a floor measured there is
/// the one `nsigma bench` divides by.
public enum MemoryFloor {
    /// Sums `byteCount` bytes at `p` read as Float lanes (the bytes, not their values, are what
    /// counts).
    public static func read(_ p: UnsafeRawPointer, byteCount: Int) -> Float {
        ReadFloor.sum(p, byteCount: byteCount)
    }
}
