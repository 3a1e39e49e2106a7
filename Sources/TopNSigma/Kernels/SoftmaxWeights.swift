import CShims

/// The one softmax-weight computation of the survivor pipeline: `w_i = exp((x_i − M) / T)` in
/// double precision for a set of candidates, eight at a time, and their sum. The draw, top-p's
/// selection and the top-p route's mass check all call it.
///
/// `exp` is ``topnsigma_exp8`` (CShims): Cody–Waite reduced (`x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`,
/// `ln 2` split in two so that `k·ln2hi` is exact) and a degree-13 Taylor polynomial in `r`,
/// scaled by `2^k` through the exponent field: relative error below `2e-15`, for arguments down
/// to −708 (below, where `exp` is subnormal, and for `-inf`, it gives 0). In C because Swift does
/// not inline a function this long into its loops, and each call then waits out the
/// polynomial's latency alone. The one double-precision vector `exp`: the row moments of
/// ``WideExp`` use it too.
package enum SoftmaxWeights {
    package typealias Vector = SIMD8<Double>

    @inline(__always)
    package static func exp(_ x: Vector) -> Vector { topnsigma_exp8(x) }

    /// One weight, `exp((x − maximum) / temperature)` in double precision, by the same `exp` as
    /// ``compute(_:count:maximum:temperature:into:)``: for the scalar tails of the block draw,
    /// top-p's tail sum and the edited tokens of a processed row.
    @inline(__always)
    package static func weight(_ x: Float, maximum: Double, temperature: Double) -> Double {
        exp(Vector(repeating: (Double(x) - maximum) / temperature))[0]
    }

    /// The logits of candidates `c[i..<i+8]`, widened to double.
    @inline(__always)
    static func logits(_ c: UnsafePointer<Candidate>, _ i: Int) -> Vector {
        let pairs = UnsafeRawPointer(c + i).loadUnaligned(as: SIMD16<Float>.self)
        return Vector(
            Double(pairs[1]), Double(pairs[3]), Double(pairs[5]), Double(pairs[7]), Double(pairs[9]),
            Double(pairs[11]), Double(pairs[13]), Double(pairs[15]))
    }

    /// Writes `w_i = exp((x_i − maximum) / temperature)` for `c[0..<n]` to `w` and returns their
    /// sum (eight lanes, then the lanes in order, then the tail: a fixed order for a given `n`).
    @inline(__always)
    static func compute(
        _ c: UnsafePointer<Candidate>, count n: Int, maximum: Float, temperature: Float,
        into w: UnsafeMutablePointer<Double>
    ) -> Double {
        let m = Double(maximum), t = Double(temperature)
        // A multiply by 1/T, not a divide (one rounding more: far inside every margin the
        // weights are compared with).
        let mv = Vector(repeating: m), inverse = Vector(repeating: 1 / t)
        var sums = Vector()
        var i = 0
        let raw = UnsafeMutableRawPointer(w)
        while i &+ 8 <= n {
            let e = exp((logits(c, i) - mv) * inverse)
            raw.storeBytes(of: e, toByteOffset: i &* 8, as: Vector.self)
            sums += e
            i &+= 8
        }
        var total = sums.sum()
        while i < n {
            let e = weight(c[i].logit, maximum: m, temperature: t)
            w[i] = e
            total += e
            i &+= 1
        }
        return total
    }
}
