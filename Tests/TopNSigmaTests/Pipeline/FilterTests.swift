import Testing
import TopNSigma

@Suite struct FilterTests {
    @Test("kept sets on real SmolLM2 logits equal the oracle's", arguments: [0.5, 1.0, 2.0])
    func realLogits(n: Double) throws {
        for r in 0..<Fixture.logits.rows {
            let row = Fixture.row(r)
            let filtered = try filterTopNSigma(row, n: Float(n)).get()
            #expect(filtered.kept.map { Int($0.index) } == Reference.kept(row, n: n), "row \(r), n = \(n)")
            #expect(filtered.kept.allSatisfy { row[Int($0.index)] == $0.logit })
        }
    }

    @Test("n = 0 keeps exactly the max-tied tokens; a constant row keeps everything")
    func zeroN() throws {
        var row: [Float] = (0..<100).map { Float($0 % 7) }
        row[3] = 9
        row[70] = 9
        #expect(try filterTopNSigma(row, n: 0).get().kept.map(\.index) == [3, 70])
        let constant = [Float](repeating: 1.5, count: 40)
        #expect(try filterTopNSigma(constant, n: 2).get().kept.count == 40)
    }

    @Test("a hand-worked row: mean, Bessel std, threshold and kept set")
    func handWorked() throws {
        // x = [1, 2, 3, 4, 5, -inf]: finite mean 3, M2 = 10, std = sqrt(10 / 4) = 1.5811…
        // n = 1: threshold = 5 - 1.5811 = 3.4189 → keeps 4 (id 3) and 5 (id 4).
        let row: [Float] = [1, 2, 3, 4, 5, -.infinity]
        let filtered = try filterTopNSigma(row, n: 1).get()
        #expect(filtered.statistics.finiteCount == 5)
        #expect(filtered.statistics.mean == 3)
        // Sums of small integers are exact; the square root is correctly rounded, the threshold
        // one subtraction more.
        #expect(ulps(filtered.statistics.standardDeviation, from: 2.5.squareRoot()) <= 1)
        #expect(ulps(filtered.threshold, from: 5 - 2.5.squareRoot()) <= 2)
        #expect(filtered.kept == [.init(index: 3, logit: 4), .init(index: 4, logit: 5)])
        // n = 2: threshold 1.8377 → keeps 2, 3, 4, 5.
        #expect(try filterTopNSigma(row, n: 2).get().kept.map(\.index) == [1, 2, 3, 4])
        // Filter off keeps every finite logit, never -inf.
        #expect(try filterTopNSigma(row, n: nil).get().kept.map(\.index) == [0, 1, 2, 3, 4])
    }

    @Test("a logit exactly at the threshold is kept (>=), decided in double precision")
    func exactThreshold() throws {
        // [0, 2, 2, 0]: mean 1, M2 = 4, std = sqrt(4 / 3). With n = 2 / std rounded to Float, the
        // threshold 2 - n·std is 0 up to that rounding: the zeros sit on the threshold, and the
        // kept set must be the float64 oracle's.
        let row: [Float] = [0, 2, 2, 0]
        let std = (4.0 / 3.0).squareRoot()
        let n = Float(2 / std)
        let filtered = try filterTopNSigma(row, n: n).get()
        let expected = Reference.kept(row, n: Double(n))
        #expect(filtered.kept.map { Int($0.index) } == expected)
        // Hand-worked: Float(0.1) = 0.100000001490116… rounds up, so it is the smallest Float at or
        // above 0.1; Float(0.7) = 0.699999988079071… rounds down, so the next Float up is.
        #expect(RowPipeline.floatThreshold(0.1) == Float(0.1))
        #expect(RowPipeline.floatThreshold(0.7) == Float(0.7).nextUp)
        #expect(RowPipeline.floatThreshold(0.5) == 0.5)
        for t in [0.1, -3.3, 1e-40, 17.25, 1e30] {
            let f = RowPipeline.floatThreshold(t)
            #expect(Double(f) >= t && Double(f.nextDown) < t, "threshold \(t)")
        }
    }

    @Test("negative or NaN n, and rows without finite logits, are errors")
    func errors() {
        #expect(throws: RowError.invalidNSigma(-1)) { try filterTopNSigma([1, 2], n: -1).get() }
        #expect(throws: RowError.noFiniteLogit) { try filterTopNSigma([-.infinity, -.infinity], n: 1).get() }
        #expect(throws: RowError.notANumber(index: 1)) { try filterTopNSigma([1, .nan], n: 1).get() }
        #expect(RowError.notANumber(index: 17).message(row: 3) == "row 3: logit at index 17 is NaN")
    }
}
