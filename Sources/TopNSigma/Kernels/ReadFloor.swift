/// The memory-read floor: the cheapest possible pass over a block of logits, a plain `SIMD16<Float>`
/// sum with independent accumulators. Built into the library so that it is compiled with exactly
/// the flags of the kernels it is compared with; `nsigma bench` reports every method as a ratio
/// to it.
package enum ReadFloor {
    /// Sums `byteCount` bytes at `p` read as Float lanes (the bytes, not their values, are what
    /// counts: 16-bit logits are read as half as many Float lanes). Four accumulators where
    /// vectors are 256 bits or wider, two on SSE (four would spill there).
    package static func sum(_ p: UnsafeRawPointer, byteCount: Int) -> Float {
        typealias V = SIMD16<Float>
        let n = byteCount / 4
        var a = V(), b = V(), c = V(), d = V()
        var i = 0
        if BuildTarget.hasWideVectors {
            while i &+ 64 <= n {
                a += p.loadUnaligned(fromByteOffset: i &* 4, as: V.self)
                b += p.loadUnaligned(fromByteOffset: (i &+ 16) &* 4, as: V.self)
                c += p.loadUnaligned(fromByteOffset: (i &+ 32) &* 4, as: V.self)
                d += p.loadUnaligned(fromByteOffset: (i &+ 48) &* 4, as: V.self)
                i &+= 64
            }
        }
        while i &+ 32 <= n {
            a += p.loadUnaligned(fromByteOffset: i &* 4, as: V.self)
            b += p.loadUnaligned(fromByteOffset: (i &+ 16) &* 4, as: V.self)
            i &+= 32
        }
        var total = ((a + b) + (c + d)).sum()
        while i < n {
            total += p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            i &+= 1
        }
        return total
    }
}
