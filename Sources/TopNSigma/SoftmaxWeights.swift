/// The one softmax-weight computation of the survivor pipeline: `w_i = exp((x_i − M) / T)` in
/// double precision for a set of candidates, eight at a time, and their sum. The draw, top-p's
/// selection and the top-p route's mass check all call it.
///
/// `exp` is Cody–Waite reduced (`x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, `ln 2` split in two so that
/// `k·ln2hi` is exact) and a degree-11 Taylor polynomial in `r` (truncation below `3e-16`
/// relative), scaled by `2^k` through the exponent field: within a few ulps of the C library's
/// `exp`, for arguments down to −708 (below, where `exp` is subnormal, it gives 0).
enum SoftmaxWeights {
    typealias Vector = SIMD8<Double>

    @inline(__always)
    static func exp(_ x: Vector) -> Vector {
        let low = Vector(repeating: -708)
        let clamped = low.replacing(with: x, where: x .> low)
        // Round-to-nearest by the 1.5·2^52 trick: k sits in the low bits of the sum.
        let magic = Vector(repeating: 6_755_399_441_055_744)
        let shifted = clamped * Vector(repeating: 1.442_695_040_888_963_4) + magic
        let k = shifted - magic
        let r =
            (clamped - k * Vector(repeating: 0.693_147_180_369_123_8))
            - k * Vector(repeating: 1.908_214_929_270_587_7e-10)
        var p = Vector(repeating: 1.0 / 39_916_800)
        p = p * r + Vector(repeating: 1.0 / 3_628_800)
        p = p * r + Vector(repeating: 1.0 / 362_880)
        p = p * r + Vector(repeating: 1.0 / 40_320)
        p = p * r + Vector(repeating: 1.0 / 5040)
        p = p * r + Vector(repeating: 1.0 / 720)
        p = p * r + Vector(repeating: 1.0 / 120)
        p = p * r + Vector(repeating: 1.0 / 24)
        p = p * r + Vector(repeating: 1.0 / 6)
        p = p * r + Vector(repeating: 0.5)
        p = p * r + Vector(repeating: 1)
        p = p * r + Vector(repeating: 1)
        // 2^k by adding k to the exponent field (k in -1022...0 for x in [-708, 0]; a little
        // above 0 stays normal too).
        let kBits = unsafeBitCast(shifted, to: SIMD8<Int64>.self) &- unsafeBitCast(magic, to: SIMD8<Int64>.self)
        let scaled = unsafeBitCast(
            unsafeBitCast(p, to: SIMD8<Int64>.self) &+ (kBits &<< SIMD8<Int64>(repeating: 52)), to: Vector.self)
        return scaled.replacing(with: Vector(), where: x .< low)
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
            let e = exp(Vector(repeating: (Double(c[i].logit) - m) / t))[0]
            w[i] = e
            total += e
            i &+= 1
        }
        return total
    }
}
