/// Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel Random
/// Numbers: As Easy as 1, 2, 3" (SC'11), as specified by the Random123 library.
///
/// A pure function of a 128-bit counter and a 64-bit key: no state, so any draw can be computed
/// on any thread in any order. The sampler keys it with the request seed and counts with the decode
/// step, which makes every token a function of (logits, parameters, seed, step) alone.
public struct Philox4x32: Sendable, Equatable {
    /// The two 32-bit key words.
    public var key: (UInt32, UInt32)

    /// A generator with the two 32-bit key words given directly (as in Random123's test vectors).
    @inlinable
    package init(key: (UInt32, UInt32)) { self.key = key }

    /// A generator keyed by a 64-bit seed (low word first).
    @inlinable
    public init(seed: UInt64) {
        self.key = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
    }

    /// Two generators are equal when their keys are: they then produce the same blocks.
    public static func == (a: Philox4x32, b: Philox4x32) -> Bool { a.key == b.key }

    /// The ten-round Philox4x32 bijection of `counter` under this key.
    @inlinable
    package func block(_ counter: (UInt32, UInt32, UInt32, UInt32)) -> (UInt32, UInt32, UInt32, UInt32) {
        var c = counter
        var k = key
        for round in 0..<10 {
            if round > 0 {
                k.0 &+= 0x9E37_79B9
                k.1 &+= 0xBB67_AE85
            }
            let p0 = UInt64(0xD251_1F53) &* UInt64(c.0)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c.2)
            c = (
                UInt32(truncatingIfNeeded: p1 >> 32) ^ c.1 ^ k.0,
                UInt32(truncatingIfNeeded: p1),
                UInt32(truncatingIfNeeded: p0 >> 32) ^ c.3 ^ k.1,
                UInt32(truncatingIfNeeded: p0)
            )
        }
        return c
    }

    /// A uniform double in `[0, 1)` with 53 random bits, for counter `(step, stream)`.
    ///
    /// - Parameters:
    ///   - step: the decode position (counter words 0 and 1).
    ///   - stream: a sub-stream for callers that need several uniforms per step (words 2 and 3).
    @inlinable
    public func uniform(step: UInt64, stream: UInt64 = 0) -> Double {
        let out = block(
            (
                UInt32(truncatingIfNeeded: step), UInt32(truncatingIfNeeded: step >> 32),
                UInt32(truncatingIfNeeded: stream), UInt32(truncatingIfNeeded: stream >> 32)
            ))
        let bits = (UInt64(out.0) << 32 | UInt64(out.1)) >> 11
        return Double(bits) * 0x1p-53
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): the one small seeded generator for what is not a
/// draw. The selections' pivot positions (``Truncation/PivotSampler``), the baselines' synthetic
/// requests and the tests' data use it; every draw uses ``Philox4x32``.
package struct SplitMix64 {
    package var state: UInt64

    package init(seed: UInt64) { state = seed }

    @inline(__always)
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
