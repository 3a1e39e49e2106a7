import Testing
import TopNSigma

/// The rounding-error bounds of a chunk's Float moments hold against exact moments: the bounds
/// decide which logits near a Top-nσ threshold are settled in double precision, so a bound that
/// is too tight would let a Float rounding decide a kept set.
@Suite struct MomentBoundTests {
    /// Mean and M2 of the allowed finite values, in double precision, two passes.
    static func exact(_ values: [Float], allowed: (Int) -> Bool) -> (count: Int, mean: Double, m2: Double) {
        var count = 0, sum = 0.0
        for (i, x) in values.enumerated() where allowed(i) && x > -.infinity {
            count += 1
            sum += Double(x)
        }
        let mean = sum / Double(max(count, 1))
        var m2 = 0.0
        for (i, x) in values.enumerated() where allowed(i) && x > -.infinity {
            m2 += (Double(x) - mean) * (Double(x) - mean)
        }
        return (count, mean, m2)
    }

    static func check(_ values: [Float], mask: [UInt32]? = nil, _ label: String) {
        let allowed: (Int) -> Bool = { i in mask.map { $0[i >> 5] >> UInt32(i & 31) & 1 == 1 } ?? true }
        let reference = exact(values, allowed: allowed)
        let moments = values.withUnsafeBufferPointer { buffer in
            mask.map { m in m.withUnsafeBufferPointer { RowStatistics.chunkMoments(buffer, mask: $0.baseAddress) } }
                ?? RowStatistics.chunkMoments(buffer)
        }
        guard let moments else {
            Issue.record("\(label): no moments")
            return
        }
        #expect(moments.count == reference.count, "\(label)")
        #expect(abs(moments.mean - reference.mean) <= moments.meanError, "\(label): mean")
        #expect(
            abs(moments.m2 - reference.m2) <= moments.m2Error,
            "\(label): M2 \(moments.m2) vs \(reference.m2), bound \(moments.m2Error)")
    }

    @Test("Gaussian chunks of every loop's length, near and far from zero")
    func gaussian() {
        var random = TestRandom(seed: 41)
        for n in [4096, 4095, 3072 + 17, 1024, 1000, 64, 17] {
            for offset in [0.0, 3, 7.5, 40] {
                let values = (0..<n).map { _ in Float(offset * 2 + 2 * random.gaussian()) }
                Self.check(values, "n \(n), offset \(offset)σ")
            }
        }
    }

    @Test("rounding biased one way: a repeated value and a repeated square that Float cannot hold")
    func biased() {
        // Every lane adds the same inexact terms, so each addition rounds the same way: the
        // errors add up instead of cancelling, near the bound's worst case.
        for value: Float in [0.1, 1.1, 3.3, 1 + 0x1p-12, 100.7] {
            for n in [4096, 4000, 1024] {
                var values = [Float](repeating: value, count: n)
                values[n / 2] = value + 1
                values[n / 3] = value - 0.75
                Self.check(values, "value \(value), n \(n)")
            }
        }
    }

    @Test("-inf entries (one accumulator set over the chunk) and a bitmask (the masked block loops)")
    func maskedLoops() {
        var random = TestRandom(seed: 43)
        for value: Float in [0.1, 3.3] {
            var values = [Float](repeating: value, count: 4096)
            for i in stride(from: 5, to: 4096, by: 97) { values[i] = -.infinity }
            values[7] = value + 2
            Self.check(values, "-inf entries, value \(value)")
            var mask = [UInt32](repeating: 0, count: 128)
            for w in 0..<128 { mask[w] = w % 5 == 0 ? 0 : UInt32(truncatingIfNeeded: random.next()) | 1 }
            Self.check(
                [Float](repeating: value, count: 4096).enumerated().map { $0 == 9 ? value + 1 : $1 },
                mask: mask, "bitmask, value \(value)")
        }
    }
}
