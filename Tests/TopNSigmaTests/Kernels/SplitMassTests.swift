import Foundation
import Testing
import TopNSigma

/// The dynamic temperature's chunk moments (``WideExp/splitMass``): the logits far below the
/// maximum are summed by the Float `exp`, the others in double, and the returned bounds must
/// hold against float64 sums taken with libm's `exp`: the route lets them decide which Float
/// temperature a row gets.
@Suite struct SplitMassTests {
    /// `Σ e` and `Σ e·y` (`y = x − maximum`) over the allowed finite values, in double with libm.
    static func exact(_ values: [Float], maximum: Float, mask: [UInt32]?) -> (z: Double, weighted: Double) {
        var z = 0.0, weighted = 0.0
        for (i, x) in values.enumerated() where x > -.infinity {
            if let mask, mask[i >> 5] >> UInt32(i & 31) & 1 == 0 { continue }
            let y = Double(x) - Double(maximum)
            let e = Foundation.exp(y)
            z += e
            if e > 0 { weighted += e * y }
        }
        return (z, weighted)
    }

    static func split(
        _ values: [Float], maximum: Float, cut: Float, mask: [UInt32]? = nil
    ) -> (
        moments: (z: Double, weighted: Double, squares: Double), zError: Double, weightedError: Double
    ) {
        var buffer = [Float](repeating: 0, count: 2 * values.count + 16)
        return values.withUnsafeBufferPointer { p in
            buffer.withUnsafeMutableBufferPointer { b in
                if let mask {
                    return mask.withUnsafeBufferPointer {
                        WideExp.splitMass(
                            p.baseAddress!, count: values.count, mask: $0.baseAddress, maximum: maximum, cut: cut,
                            buffer: b.baseAddress!)
                    }
                }
                return WideExp.splitMass(
                    p.baseAddress!, count: values.count, mask: nil, maximum: maximum, cut: cut, buffer: b.baseAddress!)
            }
        }
    }

    /// Checks both bounds; returns the larger ratio of the error to its bound.
    @discardableResult
    static func check(
        _ values: [Float], maximum: Float? = nil, cut: Float, mask: [UInt32]? = nil, _ label: String
    ) -> Double {
        let m = maximum ?? values.max()!
        let reference = exact(values, maximum: m, mask: mask)
        let result = split(values, maximum: m, cut: cut, mask: mask)
        let relative = WideExp.massError(vocab: values.count)
        let zBound = relative * reference.z + result.zError
        let wBound = relative * Swift.abs(reference.weighted) + result.weightedError
        let zMiss = Swift.abs(result.moments.z - reference.z),
            wMiss = Swift.abs(result.moments.weighted - reference.weighted)
        #expect(zMiss <= zBound, "\(label): Σe \(result.moments.z) vs \(reference.z), bound \(zBound)")
        #expect(wMiss <= wBound, "\(label): Σe·y \(result.moments.weighted) vs \(reference.weighted), bound \(wBound)")
        return max(zMiss / max(zBound, .leastNormalMagnitude), wMiss / max(wBound, .leastNormalMagnitude))
    }

    @Test("real rows' chunks at every cut: the Float part's bound holds and stays small")
    func realRows() {
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            for start in stride(from: 0, to: row.count, by: 4096) {
                let chunk = Array(row[start..<min(start + 4096, row.count)])
                let m = chunk.max()!
                for depth: Float in [16, 8, 2, 0, -1] {
                    Self.check(chunk, cut: m - depth, "row \(r) chunk \(start / 4096) depth \(depth)")
                }
                // At the route's depth the Float part moves Σ e by well under a part in a million
                // (or the route would fall back on every row).
                let result = Self.split(chunk, maximum: m, cut: m - 16)
                #expect(result.zError < 1e-8 * result.moments.z, "row \(r) chunk \(start / 4096)")
            }
        }
    }

    @Test("Gaussian chunks of every length, near and far from zero, through a bitmask and with -inf")
    func gaussian() {
        var random = TestRandom(seed: 61)
        for n in [4096, 4000, 300, 256, 255, 17, 1] {
            for (center, spread) in [(0.0, 4.0), (1000, 12), (-300, 30), (5, 0.5)] {
                var values = (0..<n).map { _ in Float(center + spread * random.gaussian()) }
                for i in stride(from: 3, to: n, by: 97) { values[i] = -.infinity }
                let m = values.max()!
                let words = (0..<(n + 31) / 32).map { _ in UInt32(truncatingIfNeeded: random.next()) }
                for cut in [m - 16, m - 3, .infinity, -.infinity] {
                    Self.check(values, cut: cut, "n \(n) center \(center) cut \(cut)")
                    Self.check(
                        values, maximum: m + 5, cut: cut, mask: words, "n \(n) center \(center) cut \(cut), masked")
                }
            }
        }
    }

    @Test("logits at the ends of the Float range: huge negative ones add nothing, never NaN")
    func extremes() {
        var values = [Float](repeating: -.greatestFiniteMagnitude, count: 512)
        values[0] = .greatestFiniteMagnitude
        values[100] = .greatestFiniteMagnitude - 1e32
        values[300] = 0
        Self.check(values, cut: .greatestFiniteMagnitude - 16, "±max")
        Self.check(values, cut: .infinity, "±max, all in Float")
        var small = (0..<1024).map { Float(-100 - $0) }
        small[7] = -1
        Self.check(small, cut: -17, "underflowing tail")
        Self.check(small, maximum: 0, cut: .infinity, "underflowing tail, all in Float")
    }

    @Test("a repeated value whose roundings all go one way: the bound's |y| term is needed and nearly reached")
    func biased() {
        // Among the Floats near y = -20.45 (2^t's polynomial at its worst, f near -0.5), the one
        // whose Float exp is furthest from libm's, repeated 4096 times with the maximum at 0:
        // every term errs the same way.
        var worst = (error: 0.0, value: Float(0))
        var x = Float(-20.447)
        for _ in 0..<20_000 {
            x = x.nextUp
            let result = Self.split([Float](repeating: x, count: 256), maximum: 0, cut: .infinity)
            let error = Swift.abs(result.moments.z / (256 * Foundation.exp(Double(x))) - 1)
            if error > worst.error { worst = (error, x) }
        }
        let values = [Float](repeating: worst.value, count: 4096)
        let ratio = Self.check(values, maximum: 0, cut: .infinity, "x = \(worst.value)")
        // The error reaches a quarter of the bound (0.30 on Zen 5): without the term for the rounding of
        // (x − m)·log2 e (2.25u·|Σ e·y|), the bound would not hold.
        #expect(ratio > 0.25, "error / bound \(ratio) at x = \(worst.value)")
        let result = Self.split(values, maximum: 0, cut: .infinity)
        let withoutY = 1.01 * ((2e-7 + 8 * 0x1p-24) * result.moments.z)
        #expect(Swift.abs(result.moments.z - 4096 * Foundation.exp(Double(worst.value))) > withoutY)
    }
}
