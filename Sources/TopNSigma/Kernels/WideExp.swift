#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CShims

/// Row moments in double precision by ``SoftmaxWeights/exp(_:)``'s vector `exp`: for the
/// decisions that the Float sums of the pass cannot settle because every token takes part in them
/// (the dynamic temperature's entropy, typical-p's center where its Float bound is too wide), at
/// a fraction of a scalar `exp` per token.
package enum WideExp {
    /// Over the allowed logits of `p[0..<n]` (every one when `mask` is nil), with
    /// `y = (x − maximum)/T` and `e = exp(y)`: `Σ e`, `Σ e·y` and `Σ e²`, in double precision.
    /// `maximum` is at least every allowed logit. Half-precision logits are converted to Float
    /// into `buffer` (room for `n`) first (exactly: every half value is a Float), so that one
    /// non-generic loop does the arithmetic.
    package static func chunkMass<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, maximum: Float, temperature: Float,
        buffer: UnsafeMutablePointer<Float>
    ) -> (z: Double, weighted: Double, squares: Double) {
        if E.self == Float.self {
            return floatMass(
                UnsafeRawPointer(p).assumingMemoryBound(to: Float.self), count: n, mask: mask, maximum: maximum,
                temperature: temperature)
        }
        // The whole chunk at once, so that the sums run in the same order as for Float logits
        // and give the same bits.
        for i in 0..<n { buffer[i] = E.float(p, i) }
        return floatMass(UnsafePointer(buffer), count: n, mask: mask, maximum: maximum, temperature: temperature)
    }

    /// ``chunkMass(_:count:mask:maximum:temperature:)`` of Float logits (``topnsigma_exp_moments``).
    static func floatMass(
        _ p: UnsafePointer<Float>, count n: Int, mask: UnsafePointer<UInt32>?, maximum: Float, temperature: Float
    ) -> (z: Double, weighted: Double, squares: Double) {
        guard maximum > -.infinity else { return (0, 0, 0) }
        var out = (0.0, 0.0, 0.0)
        withUnsafeMutableBytes(of: &out) { raw in
            topnsigma_exp_moments(
                p, n, mask, Double(maximum), 1 / Double(temperature),
                raw.baseAddress!.assumingMemoryBound(to: Double.self))
        }
        return out
    }

    /// Typical-p's route: for each of the eight `radii`, `Σ exp((x − maximum)/T)` over the allowed
    /// logits of the row at `p` whose distance `|x − pivot|` is at most that radius, by the Float
    /// vector `exp` (``topnsigma_interval_masses``): an estimate that picks how wide to gather.
    /// Half-precision logits are converted into `buffer` (room for `vocab`) first.
    static func intervalMasses<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, mask: UnsafePointer<UInt32>?, maximum: Float, temperature: Float,
        pivot: Float, radii: SIMD8<Float>, buffer: UnsafeMutablePointer<Float>
    ) -> SIMD8<Double> {
        var out = SIMD8<Double>(), radii = radii
        let scale = Float(1.442_695_040_888_963_4 / Double(temperature))
        withUnsafeBytes(of: &radii) { rawRadii in
            withUnsafeMutableBytes(of: &out) { rawOut in
                let r = rawRadii.baseAddress!.assumingMemoryBound(to: Float.self)
                let o = rawOut.baseAddress!.assumingMemoryBound(to: Double.self)
                if E.self == Float.self {
                    topnsigma_interval_masses(
                        UnsafeRawPointer(p).assumingMemoryBound(to: Float.self), vocab, mask, maximum, scale, pivot, r,
                        o)
                } else {
                    for i in 0..<vocab { buffer[i] = E.float(p, i) }
                    topnsigma_interval_masses(buffer, vocab, mask, maximum, scale, pivot, r, o)
                }
            }
        }
        return out
    }

    /// A bound on the relative error of ``chunkMass(_:count:mask:maximum:temperature:)``'s sums
    /// combined over a row of `vocab` logits, against the same sums taken in any other order
    /// with libm's `exp` (the survivor pipeline's): each term within `2e-15`, and each sum a
    /// chain of at most `vocab + 4096` additions of terms of one sign, in either computation.
    package static func massError(vocab: Int) -> Double { 1e-14 + 4.5e-16 * (Double(vocab) + 4096) }
}
