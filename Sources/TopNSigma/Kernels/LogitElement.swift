/// A stored logit type the kernels are generic over: a scalar read and a 16-lane read, both
/// producing `Float`.
package protocol LogitElement {
    /// The logit at `p[i]` as a Float.
    static func float(_ p: UnsafePointer<Self>, _ i: Int) -> Float
    /// Logits `p[i..<i+16]` as a SIMD16<Float> (unaligned).
    static func load16(_ p: UnsafePointer<Self>, _ i: Int) -> SIMD16<Float>
    /// Logits `p[i..<i+32]` as two SIMD16<Float> in an order of the format's choosing: for
    /// reductions whose result does not depend on which lane holds which logit (sums, maxima).
    static func load32Unordered(_ p: UnsafePointer<Self>, _ i: Int) -> (SIMD16<Float>, SIMD16<Float>)
}

extension LogitElement {
    @inline(__always)
    package static func load32Unordered(_ p: UnsafePointer<Self>, _ i: Int) -> (SIMD16<Float>, SIMD16<Float>) {
        (load16(p, i), load16(p, i &+ 16))
    }
}

extension Float: LogitElement {
    @inline(__always)
    package static func float(_ p: UnsafePointer<Float>, _ i: Int) -> Float { p[i] }

    @inline(__always)
    package static func load16(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD16<Float> {
        UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
    }
}

/// IEEE binary16 bits.
struct Half: LogitElement {
    var bits: UInt16

    @inline(__always)
    static func float(_ p: UnsafePointer<Half>, _ i: Int) -> Float { HalfPrecision.float(fromHalfBits: p[i].bits) }

    /// With F16C in the build, one `vcvtph2ps` per 16 logits (NaNs come out quiet, which only
    /// matters to a NaN's payload: a NaN fails its row either way); otherwise the exact bit
    /// path of `HalfPrecision`.
    @inline(__always)
    static func load16(_ p: UnsafePointer<Half>, _ i: Int) -> SIMD16<Float> {
        if BuildTarget.hasF16C {
            // A lane loop, which LLVM turns into `vcvtph2ps`: the standard library's
            // `SIMD16<Float>.init(_: SIMD16<Float16>)` is an out-of-line call per vector.
            let h = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float16>.self)
            var r = SIMD16<Float>()
            for lane in 0..<16 { r[lane] = Float(h[lane]) }
            return r
        }
        return HalfPrecision.floats(fromWidenedHalfBits: widen16(UnsafeRawPointer(p + i)))
    }
}

/// bfloat16 bits.
struct BFloat16: LogitElement {
    var bits: UInt16

    @inline(__always)
    static func float(_ p: UnsafePointer<BFloat16>, _ i: Int) -> Float { Float(bitPattern: UInt32(p[i].bits) << 16) }

    @inline(__always)
    static func load16(_ p: UnsafePointer<BFloat16>, _ i: Int) -> SIMD16<Float> {
        unsafeBitCast(widen16(UnsafeRawPointer(p + i)) &<< SIMD16<UInt32>(repeating: 16), to: SIMD16<Float>.self)
    }

    /// 32 bfloat16 from one 64-byte load: each 32-bit word holds an even logit in its low half
    /// and an odd one in its high half, so a shift gives the even ones and a mask the odd ones,
    /// both already Float bit patterns. Two operations per 32 logits, evens first.
    @inline(__always)
    static func load32Unordered(_ p: UnsafePointer<BFloat16>, _ i: Int) -> (SIMD16<Float>, SIMD16<Float>) {
        let words = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<UInt32>.self)
        return (
            unsafeBitCast(words &<< SIMD16<UInt32>(repeating: 16), to: SIMD16<Float>.self),
            unsafeBitCast(words & SIMD16<UInt32>(repeating: 0xFFFF_0000), to: SIMD16<Float>.self)
        )
    }
}

/// Sixteen little-endian UInt16 at `p`, zero-extended to UInt32 lanes in order. Written with
/// `evenHalf`/`oddHalf` of one 32-byte load because LLVM turns that into `pmovzxwd`, while
/// `SIMD16<UInt32>(truncatingIfNeeded: SIMD16<UInt16>)` calls the generic per-lane conversion.
@inline(__always)
func widen16(_ p: UnsafeRawPointer) -> SIMD16<UInt32> {
    let words = p.loadUnaligned(as: SIMD8<UInt32>.self)
    var lanes = SIMD16<UInt32>()
    lanes.evenHalf = words & SIMD8<UInt32>(repeating: 0xFFFF)
    lanes.oddHalf = words &>> SIMD8<UInt32>(repeating: 16)
    return lanes
}

/// IEEE binary16 → binary32 by bit manipulation, scalar and 16 lanes at a time. Exact for every
/// half (normals, subnormals, ±0, ±inf, NaN payloads), with no dependence on F16C or the
/// platform's `Float16` (whose SIMD conversions call a scalar helper per lane without F16C).
package enum HalfPrecision {
    /// The `Float` with the value of the binary16 `bits`.
    @inlinable
    package static func float(fromHalfBits bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let magnitude = UInt32(bits & 0x7FFF) << 13
        if bits & 0x7C00 == 0x7C00 { return Float(bitPattern: sign | magnitude | 0x7F80_0000) }
        // Re-bias the exponent by multiplying: exact for normals and for subnormals.
        return Float(bitPattern: sign | (Float(bitPattern: magnitude) * 0x1p112).bitPattern)
    }

    /// Sixteen halves at once, the same arithmetic as ``float(fromHalfBits:)``.
    package static func floats(fromHalfBits bits: SIMD16<UInt16>) -> SIMD16<Float> {
        withUnsafeBytes(of: bits) { floats(fromWidenedHalfBits: widen16($0.baseAddress!)) }
    }

    /// Sixteen halves, each zero-extended into a UInt32 lane.
    @inline(__always)
    static func floats(fromWidenedHalfBits h: SIMD16<UInt32>) -> SIMD16<Float> {
        typealias Lanes = SIMD16<UInt32>
        let sign = (h & Lanes(repeating: 0x8000)) &<< Lanes(repeating: 16)
        let magnitude = (h & Lanes(repeating: 0x7FFF)) &<< Lanes(repeating: 13)
        let scaled = unsafeBitCast(
            unsafeBitCast(magnitude, to: SIMD16<Float>.self) * SIMD16<Float>(repeating: 0x1p112), to: Lanes.self)
        // All ones where the exponent field is 0x1F (inf/NaN): 0x7C00 + 0x0400 is the only
        // exponent that carries into bit 15. Integer arithmetic only: a lane-wise `.==` against a
        // scalar compiled to a per-lane loop here.
        let special =
            Lanes.zero &- (((h & Lanes(repeating: 0x7C00)) &+ Lanes(repeating: 0x0400)) &>> Lanes(repeating: 15))
        let result = (scaled & ~special) | ((magnitude | Lanes(repeating: 0x7F80_0000)) & special)
        return unsafeBitCast(result | sign, to: SIMD16<Float>.self)
    }
}
