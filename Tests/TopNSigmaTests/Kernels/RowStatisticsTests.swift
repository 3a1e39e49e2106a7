import Testing
import TopNSigma

/// The fused kernel against the float64 oracle.
@Suite struct RowStatisticsTests {
    /// Runs the kernel on `row` placed at element offset `offset` of a larger buffer, so the row
    /// start takes every alignment.
    func kernel(_ row: [Float], offset: Int = 0) -> Result<RowStatistics, RowError> {
        let padded = [Float](repeating: .nan, count: offset) + row + [Float](repeating: .nan, count: 3)
        return padded.withUnsafeBufferPointer {
            rowStatistics(UnsafeBufferPointer(rebasing: $0[offset..<(offset + row.count)]))
        }
    }

    func expectAgrees(_ row: [Float], offset: Int = 0, relative: Double = 1e-5, _ context: String = "") {
        let got = kernel(row, offset: offset)
        switch (got, Reference.statistics(row)) {
        case (.success(let s), .success(let r)):
            #expect(s.finiteCount == r.count, "count, \(context) n=\(row.count) offset=\(offset)")
            #expect(s.argmax == r.argmax, "argmax, \(context) n=\(row.count) offset=\(offset)")
            if r.count > 0 {
                #expect(Double(s.maximum) == r.maximum, "max, \(context) n=\(row.count) offset=\(offset)")
                let meanScale: Double = Swift.max(Swift.abs(r.mean), r.std, 1e-30)
                let meanError: Double = Swift.abs(s.mean - r.mean)
                #expect(
                    meanError <= 1e-6 * meanScale,
                    "mean \(s.mean) vs \(r.mean), \(context) n=\(row.count) offset=\(offset)")
                let stdError: Double = Swift.abs(s.standardDeviation - r.std)
                let stdBound: Double = relative * Swift.max(r.std, 1e-300)
                let bothZero = r.std == 0 && s.standardDeviation == 0
                #expect(
                    stdError <= stdBound || bothZero,
                    "std \(s.standardDeviation) vs \(r.std), \(context) n=\(row.count) offset=\(offset)")
            }
        default:
            Issue.record(
                "kernel \(got) vs oracle \(Reference.statistics(row)), \(context) n=\(row.count) offset=\(offset)")
        }
    }

    @Test("random rows of many sizes and start offsets agree with the float64 oracle")
    func randomSizesAndOffsets() {
        var random = TestRandom(seed: 1)
        let sizes = [
            1, 2, 3, 5, 10, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, 255, 1000, 4095, 4096, 4097, 8191, 8193,
            12_289, 49_152
        ]
        for size in sizes {
            let row = random.row(count: size, mean: random.gaussian() * 10, std: 0.5 + 5 * random.uniform())
            for offset in 0..<4 { expectAgrees(row, offset: offset, "random") }
        }
    }

    @Test("an empty row has no finite logit")
    func emptyRow() throws {
        let s = try kernel([]).get()
        #expect(s.finiteCount == 0 && s.argmax == -1 && s.maximum == -.infinity)
    }

    @Test("constant rows have std 0 and the lowest argmax", arguments: [1, 2, 16, 17, 4097])
    func constantRows(size: Int) throws {
        let s = try kernel([Float](repeating: 2.5, count: size)).get()
        #expect(s.standardDeviation == 0)
        #expect(s.argmax == 0)
        #expect(s.mean == 2.5)
    }

    @Test("ties at the max: the lowest index wins, across lanes and chunks")
    func tiesAtMax() throws {
        var random = TestRandom(seed: 2)
        for (size, first, second) in [(64, 37, 5), (10_000, 9_999, 4_100), (10_000, 4_096, 8_000), (100, 17, 18)] {
            var row = random.row(count: size)
            row[first] = 100
            row[second] = 100
            #expect(try kernel(row).get().argmax == min(first, second))
            expectAgrees(row, "ties")
        }
    }

    @Test("the max in the tail elements (after the last full vector)")
    func maxInTail() throws {
        var random = TestRandom(seed: 3)
        for size in [17, 33, 4096 + 15, 8192 + 1] {
            var row = random.row(count: size)
            row[size - 1] = 50
            #expect(try kernel(row).get().argmax == size - 1)
            expectAgrees(row, "tail max")
        }
    }

    @Test("masked -inf logits take no part; a single finite token; an all-masked row")
    func maskedRows() throws {
        var random = TestRandom(seed: 4)
        var row = random.row(count: 5000)
        for i in stride(from: 0, to: 5000, by: 3) { row[i] = -.infinity }
        expectAgrees(row, "masked")
        var single = [Float](repeating: -.infinity, count: 100)
        single[42] = -7
        let s = try kernel(single).get()
        #expect(s.finiteCount == 1 && s.argmax == 42 && s.maximum == -7 && s.standardDeviation == 0)
        let none = try kernel([Float](repeating: -.infinity, count: 33)).get()
        #expect(none.finiteCount == 0 && none.argmax == -1)
        // Vocabulary padding: a masked tail.
        var padded = random.row(count: 4200)
        for i in 4100..<4200 { padded[i] = -.infinity }
        expectAgrees(padded, "padding")
    }

    @Test("mean 1000 and std 0.01: std within 1e-5 relative")
    func largeMeanTinyStd() {
        var random = TestRandom(seed: 5)
        for size in [100, 4096, 49_152, 256_000] {
            expectAgrees(random.row(count: size, mean: 1000, std: 0.01), relative: 1e-5, "mean 1000 std 0.01")
        }
        // A poor shift: the first element far from the rest.
        var row = random.row(count: 10_000, mean: 1000, std: 0.01)
        row[0] = 900
        expectAgrees(row, relative: 1e-5, "outlier first")
    }

    @Test("rows of 256000 entries: std within 1e-5 relative")
    func longRows() {
        var random = TestRandom(seed: 6)
        expectAgrees(random.row(count: 256_000, mean: -3, std: 4), relative: 1e-5, "256000")
        // Sorted ascending: every chunk's shift is at its edge.
        expectAgrees(random.row(count: 256_000, mean: 5, std: 2).sorted(), relative: 1e-5, "sorted")
    }

    @Test("subnormal values")
    func subnormals() {
        var random = TestRandom(seed: 7)
        let row = (0..<1000).map { _ in Float(random.uniform()) * Float.leastNormalMagnitude }
        expectAgrees(row, relative: 1e-5, "subnormal")
    }

    @Test("values whose squares overflow Float still give correct statistics")
    func hugeValues() {
        var random = TestRandom(seed: 8)
        expectAgrees(random.row(count: 3000, mean: 0, std: 1e30), relative: 1e-5, "std 1e30")
        var extreme = random.row(count: 100)
        extreme[10] = Float.greatestFiniteMagnitude
        extreme[20] = -Float.greatestFiniteMagnitude
        expectAgrees(extreme, relative: 1e-5, "±greatestFiniteMagnitude")
    }

    @Test("NaN and +inf fail the row with the first offending index", arguments: [0, 15, 16, 31, 4095, 4096, 9000])
    func invalidLogits(index: Int) {
        var random = TestRandom(seed: 9)
        var row = random.row(count: 10_000)
        row[index] = .nan
        #expect(throws: RowError.notANumber(index: index)) { try kernel(row).get() }
        row[index] = .infinity
        #expect(throws: RowError.positiveInfinity(index: index)) { try kernel(row).get() }
        // The first bad logit is reported, also when a masked -inf comes earlier.
        row[index] = .nan
        row[9_999] = .infinity
        if index > 0 { row[index - 1] = -.infinity }
        #expect(throws: RowError.notANumber(index: index)) { try kernel(row).get() }
    }

    @Test("the batched entry point fills every row, with a row stride; bad rows fail alone")
    func batched() {
        var random = TestRandom(seed: 10)
        let rows = 5, vocab = 1000, stride = 1003
        var block = [Float](repeating: .nan, count: rows * stride)
        for r in 0..<rows { for i in 0..<vocab { block[r * stride + i] = Float(random.gaussian()) } }
        block[2 * stride + 7] = .nan
        var results = [Result<RowStatistics, RowError>](repeating: .failure(.noFiniteLogit), count: rows)
        block.withUnsafeBufferPointer { b in
            results.withUnsafeMutableBufferPointer { out in
                RowStatistics.of(logits: b.baseAddress!, rows: rows, vocab: vocab, rowStride: stride, into: out)
            }
        }
        for r in 0..<rows {
            let row = Array(block[(r * stride)..<(r * stride + vocab)])
            if r == 2 {
                #expect(throws: RowError.notANumber(index: 7)) { try results[r].get() }
            } else {
                let s = try? results[r].get()
                let ref = try? Reference.statistics(row).get()
                #expect(
                    s?.argmax == ref?.argmax
                        && abs((s?.standardDeviation ?? 0) - (ref?.std ?? 1)) < 1e-5 * (ref?.std ?? 1))
            }
        }
    }
}
