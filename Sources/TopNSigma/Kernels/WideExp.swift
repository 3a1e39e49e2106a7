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

    /// The dynamic temperature's chunk moments at temperature 1 (in the settle, from cache): ``chunkMass(_:count:mask:maximum:temperature:buffer:)``'s
    /// sums, with the logits below `cut` (the row's maximum less ``splitDepth``) taken by
    /// the Float vector `exp` and the others in double (``topnsigma_split_moments``), so that
    /// most of a row costs a Float `exp`. Besides the sums, `zError` and `weightedError` bound
    /// the absolute error the Float logits add to `Σ e` and `Σ e·y` (the double part's relative
    /// error stays within ``massError(vocab:)``). `buffer` has room for `2·n` Floats: a
    /// half-precision chunk's conversion in the first `n`, the double part's logits after it.
    package static func splitMass<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, maximum: Float, cut: Float,
        buffer: UnsafeMutablePointer<Float>
    ) -> (moments: (z: Double, weighted: Double, squares: Double), zError: Double, weightedError: Double) {
        guard maximum > -.infinity else { return ((0, 0, 0), 0, 0) }
        var out = (0.0, 0.0, 0.0, 0.0, 0.0)
        let source: UnsafePointer<Float>
        if E.self == Float.self {
            source = UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
        } else {
            for i in 0..<n { buffer[i] = E.float(p, i) }
            source = UnsafePointer(buffer)
        }
        let head = E.self == Float.self ? buffer : buffer + n
        withUnsafeMutableBytes(of: &out) { raw in
            topnsigma_split_moments(
                source, n, mask, maximum, cut, head, raw.baseAddress!.assumingMemoryBound(to: Double.self))
        }
        return ((out.0, out.1, out.2), out.3, out.4)
    }

    /// How far below the row's maximum ``splitMass(_:count:mask:maximum:cut:buffer:)`` takes
    /// logits in Float: `e^-16 ≈ 1.1e-7` of the maximum's weight, where on real rows a few
    /// percent of the logits lie above and about 2e-4 of the mass below (SmolLM2, median of 128
    /// rows), so that the Float part's bound moves the entropy by about 1e-9.
    static let splitDepth: Float = 16

    /// Typical-p's route: for each of the eight `radii`, `Σ exp((x − maximum)/T)` over the logits
    /// `p[0..<count]` (the tokens gathered within the widest radius) whose distance `|x − pivot|`
    /// is at most that radius, by the Float vector `exp` (``topnsigma_interval_masses``): an
    /// estimate that picks how wide the set may be.
    static func intervalMasses(
        _ p: UnsafePointer<Float>, count: Int, maximum: Float, temperature: Float, pivot: Float, radii: SIMD8<Float>
    ) -> SIMD8<Double> {
        var out = SIMD8<Double>(), radii = radii
        let scale = Float(1.442_695_040_888_963_4 / Double(temperature))
        withUnsafeBytes(of: &radii) { rawRadii in
            withUnsafeMutableBytes(of: &out) { rawOut in
                topnsigma_interval_masses(
                    p, count, nil, maximum, scale, pivot, rawRadii.baseAddress!.assumingMemoryBound(to: Float.self),
                    rawOut.baseAddress!.assumingMemoryBound(to: Double.self))
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
