import Testing
import TopNSigma

/// Known-answer vectors of Random123's kat_vectors (philox4x32, 10 rounds).
@Suite struct PhiloxTests {
    @Test("Random123 known-answer vectors")
    func knownAnswers() {
        let zero = Philox4x32(key: (0, 0)).block((0, 0, 0, 0))
        #expect([zero.0, zero.1, zero.2, zero.3] == [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8])
        let ones = Philox4x32(key: (.max, .max)).block((.max, .max, .max, .max))
        #expect([ones.0, ones.1, ones.2, ones.3] == [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd])
        let pi = Philox4x32(key: (0xa409_3822, 0x299f_31d0)).block((0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344))
        #expect([pi.0, pi.1, pi.2, pi.3] == [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1])
    }

    @Test("uniforms lie in [0, 1), carry 53 bits, and look uniform")
    func uniforms() {
        let rng = Philox4x32(seed: 12345)
        var buckets = [Int](repeating: 0, count: 16)
        var lowBitsSeen = false
        let draws = 16_000
        for step in 0..<UInt64(draws) {
            let u = rng.uniform(step: step)
            #expect(u >= 0 && u < 1)
            buckets[Int(u * 16)] += 1
            // Bits below 2^-32 are in use (a 32-bit uniform would leave them zero).
            if (u * 0x1p32).truncatingRemainder(dividingBy: 1) != 0 { lowBitsSeen = true }
        }
        #expect(lowBitsSeen)
        let expected = Double(draws) / 16
        let chi2 = buckets.reduce(0.0) { $0 + (Double($1) - expected) * (Double($1) - expected) / expected }
        #expect(chiSquarePValue(chi2, degreesOfFreedom: 15) > 1e-4, "chi-square \(chi2)")
    }
}
