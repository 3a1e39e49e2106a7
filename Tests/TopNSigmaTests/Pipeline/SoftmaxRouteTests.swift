import Foundation
import Testing
import TopNSigma
import Synchronization
import TopNSigmaBaselines

/// The rows without a threshold filter: plain sampling (the online softmax's chunk sums), top-p
/// alone (survivors at a depth below the maximum, widened when the nucleus needs it) and top-k
/// alone (a running k-th-largest bound), drawn by the sampler and checked against the float64
/// reference: the kept set, every log-probability within 1e-6, and chi-square on the draws.
@Suite struct SoftmaxRouteTests {
    /// A 9000-logit row (three chunks, the last one ending in a partial 32-logit group): 40 head
    /// tokens spread over every chunk and the last group, a bulk of 3000 tokens at −4 whose mass
    /// is about half the head's, masked tokens, and the rest far below.
    static func spreadRow() -> [Float] {
        var row = [Float](repeating: -30, count: 9000)
        var random = TestRandom(seed: 3)
        for i in 0..<3000 { row[(i * 7919) % 9000] = -4 }
        for i in stride(from: 5, to: 9000, by: 97) { row[i] = -.infinity }
        let head = [0, 31, 32, 1023, 1024, 4095, 4096, 4097, 6000, 8191, 8192, 8990, 8993, 8999]
        for (j, i) in head.enumerated() { row[i] = Float(j % 5) * 0.4 }
        for _ in 0..<26 { row[Int(random.next() % 9000)] = Float(random.uniform() * 2) }
        return row
    }

    /// Draws `draws` tokens of `row` under `parameters` (steps 0..<draws) and checks each against
    /// `expected` (token → float64 probability): kept, log-probability within 1e-6, candidate
    /// count; then the chi-square of the counts (p > 1e-3).
    static func checkDraws(
        _ row: [Float], _ parameters: SamplingParameters, expected: [Int: Double], draws: Int,
        processing: RequestProcessing? = nil, threads: Int = 1
    ) throws {
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: threads)
        var observed: [Int: Int] = [:]
        for step in 0..<draws {
            let result =
                processing.map {
                    sampler.sample(logits: row, parameters: [parameters], processing: [$0], steps: [UInt64(step)]).0[0]
                } ?? sampler.sample(logits: row, parameters: [parameters], steps: [UInt64(step)])[0]
            let token = try result.get()
            let probability = try #require(expected[Int(token.token)], "token \(token.token) is not kept")
            #expect(
                Swift.abs(token.logProbability - Foundation.log(probability)) < 1e-6,
                "token \(token.token): \(token.logProbability) vs \(Foundation.log(probability))")
            #expect(token.candidateCount == expected.count)
            observed[Int(token.token), default: 0] += 1
        }
        let (statistic, dof) = chiSquare(observed: observed, expected: expected, draws: draws)
        #expect(chiSquarePValue(statistic, degreesOfFreedom: dof) > 1e-3, "chi-square \(statistic), \(dof) dof")
    }

    static func reference(_ row: [Float], _ parameters: SamplingParameters) -> [Int: Double] {
        Dictionary(uniqueKeysWithValues: Reference.truncated(row, parameters).map { ($0.token, $0.probability) })
    }

    @Test(
        "plain sampling draws from the whole row's softmax (chi-square) with float64 log-probabilities",
        arguments: [Float(1), 0.7, 3])
    func plain(temperature: Float) throws {
        let row = Self.spreadRow()
        let parameters = SamplingParameters(temperature: temperature, nSigma: nil, seed: 11)
        try Self.checkDraws(row, parameters, expected: Self.reference(row, parameters), draws: 20_000)
    }

    /// Five whole chunks whose maxima step against the chunk before each: 5.6·T above it (past
    /// the reference's headroom of 8/log2 e·T ≈ 5.55·T: the chunk's own maximum is taken), 5.5·T
    /// above (within it), 60 below (every term tiny against the reference), and far above
    /// again (a term of `2^78` against the reference would carry its exponent's rounding,
    /// 6e-6 of it: the chunk's own maximum is taken). Each chunk holds a head near its maximum
    /// and a bulk 3 below it, so that every chunk carries mass.
    static func steppedRow(temperature: Float) -> [Float] {
        let chunk = 4096
        let maxima: [Float] = [0, 5.6 * temperature, 11.1 * temperature, -50, 10 * temperature]
        var row = [Float](repeating: 0, count: 5 * chunk)
        var random = TestRandom(seed: 8)
        for c in 0..<5 {
            for i in 0..<chunk {
                row[c * chunk + i] = maxima[c] - 3 - Float(random.uniform() * 4)
            }
            for j in 0..<6 { row[c * chunk + Int(random.next() % UInt64(chunk))] = maxima[c] - Float(j) * 0.3 }
            row[c * chunk + Int(random.next() % UInt64(chunk))] = maxima[c]
        }
        return row
    }

    @Test(
        "plain sampling and top-p over chunks read against the chunk before them (within, past and far below the reference)",
        arguments: [Float(1), 0.5])
    func plainReferenced(temperature: Float) throws {
        let row = Self.steppedRow(temperature: temperature)
        let plain = SamplingParameters(temperature: temperature, nSigma: nil, seed: 21)
        try Self.checkDraws(row, plain, expected: Self.reference(row, plain), draws: 20_000)
        let nucleus = SamplingParameters(temperature: temperature, nSigma: nil, seed: 22, topP: 0.9)
        try Self.checkDraws(row, nucleus, expected: Self.reference(row, nucleus), draws: 4000)
        // Logits near 2^24 (their steps rounded to 2): `reference·log2 e` may round too far for
        // a fused exponent, and such a chunk takes its own maximum.
        let shifted = row.map { $0 + 16_777_216 }
        let wide = SamplingParameters(temperature: 1, nSigma: nil, seed: 23)
        try Self.checkDraws(shifted, wide, expected: Self.reference(shifted, wide), draws: 4000)
    }

    @Test(
        "a chunk read against the chunk before it (AVX-512 builds): its block sums within sumError of float64, or nil past the headroom",
        .enabled(if: BuildTarget.features.description.contains("avx512f"))
    )
    func referencedChunkKernel() throws {
        var random = TestRandom(seed: 12)
        var chunk = random.row(count: 4096, mean: -2, std: 3)
        for j in 0..<12 { chunk[Int(random.next() % 4096)] = 9 - Float(j) * 0.25 }
        let maximum = chunk.max()!
        for temperature in [Float(1), 0.6, 1.7] {
            let headroom = Double(LogprobKernel.referenceHeadroom) / (1.442_695_040_888_963_4 / Double(temperature))
            // The chunk before it peaked a little below this one's maximum (within the headroom),
            // and far above it.
            for previous in [maximum - Float(0.9 * headroom), maximum + 40] {
                var sums = [Double](repeating: -1, count: 4)
                let read = try #require(
                    chunk.withUnsafeBufferPointer { p in
                        LogprobKernel.referencedChunk(
                            p.baseAddress!, count: 4096, previous: previous, temperature: temperature,
                            blockSums: &sums)
                    })
                #expect(read.reference >= maximum)
                #expect(read.maximum == maximum)
                #expect(Swift.abs(read.mean - chunk.reduce(0) { $0 + Double($1) } / 4096) < 1e-6)
                for b in 0..<4 {
                    let block = chunk[(b * 1024)..<((b + 1) * 1024)]
                    #expect(read.blockMaxima[b] == block.max()!)
                    let exact = block.reduce(0.0) {
                        $0 + Foundation.exp((Double($1) - Double(read.reference)) / Double(temperature))
                    }
                    #expect(Swift.abs(sums[b] - exact) <= 5e-6 * exact, "block \(b), T \(temperature)")
                }
                // The moments' loop: `Σ e`, `Σ e·y` and `Σ e²` within momentError of float64.
                var moments = [Double](repeating: 0, count: 3)
                let again = chunk.withUnsafeBufferPointer { p in
                    LogprobKernel.referencedChunk(
                        p.baseAddress!, count: 4096, previous: previous, temperature: temperature, blockSums: nil,
                        moments: &moments)
                }
                #expect(again?.reference == read.reference && again?.maximum == maximum)
                var exact = (z: 0.0, weighted: 0.0, squares: 0.0)
                for x in chunk {
                    let y = (Double(x) - Double(read.reference)) / Double(temperature), e = Foundation.exp(y)
                    exact = (exact.z + e, exact.weighted + e * y, exact.squares + e * e)
                }
                #expect(Swift.abs(moments[0] - exact.z) <= 5e-6 * exact.z)
                #expect(Swift.abs(moments[1] - exact.weighted) <= 2e-5 * Swift.abs(exact.weighted))
                // A square far below the reference may underflow Float: the bound counts it
                // against the square of the anchor (the previous chunk's maximum), 2^-48 of it
                // for each of 4096 terms at most.
                let anchor = Foundation.exp((Double(previous) - Double(read.reference)) / Double(temperature))
                #expect(
                    Swift.abs(moments[2] - exact.squares) <= 2e-5 * exact.squares + 4096 * 0x1p-48 * anchor * anchor)
            }
            // Past the headroom: the chunk takes its own maximum.
            var sums = [Double](repeating: 0, count: 4)
            let past = chunk.withUnsafeBufferPointer { p in
                LogprobKernel.referencedChunk(
                    p.baseAddress!, count: 4096, previous: maximum - Float(1.01 * headroom),
                    temperature: temperature, blockSums: &sums)
            }
            #expect(past == nil)
        }
        // A non-finite logit (the chunk's statistics sort it out) or a length off the vectors.
        for bad in [-Float.infinity, .infinity, .nan] {
            var row = chunk
            row[777] = bad
            var sums = [Double](repeating: 0, count: 4)
            let read = row.withUnsafeBufferPointer { p in
                LogprobKernel.referencedChunk(
                    p.baseAddress!, count: 4096, previous: maximum, temperature: 1, blockSums: &sums)
            }
            #expect(read == nil, "\(bad)")
        }
        var sums = [Double](repeating: 0, count: 4)
        let odd = chunk.withUnsafeBufferPointer { p in
            LogprobKernel.referencedChunk(
                p.baseAddress!, count: 4000 + 8, previous: maximum, temperature: 1, blockSums: &sums)
        }
        #expect(odd == nil)
    }

    @Test("plain sampling on real rows, and through an allowed-token bitmask")
    func plainReal() throws {
        let row = Fixture.row(2)
        let parameters = SamplingParameters(temperature: 1, nSigma: nil, seed: 5)
        try Self.checkDraws(row, parameters, expected: Self.reference(row, parameters), draws: 4000)
        // The bitmask drops the 8 most probable tokens and every third token.
        let order = row.indices.sorted { row[$0] > row[$1] }
        var words = [UInt32](repeating: ~0, count: (row.count + 31) / 32)
        var masked = row
        for i in Array(order.prefix(8)) + Array(stride(from: 0, to: row.count, by: 3)) {
            words[i / 32] &= ~(1 << UInt32(i % 32))
            masked[i] = -.infinity
        }
        try Self.checkDraws(
            row, parameters, expected: Self.reference(masked, parameters), draws: 4000,
            processing: RequestProcessing(allowedTokens: words))
    }

    @Test(
        "top-p alone keeps exactly the float64 nucleus on real rows",
        arguments: [
            (Float(0.5), Float(1)), (0.9, 1), (0.95, 0.7), (0.99, 1), (0.9, 2)
        ])
    func topPReal(p: Float, temperature: Float) throws {
        for r in [0, 3, 6] {
            let row = Fixture.row(r)
            let parameters = SamplingParameters(temperature: temperature, nSigma: nil, seed: UInt64(r), topP: p)
            try Self.checkDraws(row, parameters, expected: Self.reference(row, parameters), draws: 600)
        }
    }

    @Test("top-p whose nucleus lies deeper than the first depth, on three chunks and through a bitmask")
    func topPDeep() throws {
        // Head mass 1 at 0, then 20000 tokens at −10 (mass 0.9): p = 0.99 needs most of the bulk,
        // far below the first depth ln(100) + 4.
        var row = [Float](repeating: -40, count: 30_000)
        for i in 0..<20_000 { row[(i * 7) % 30_000] = -10 }
        row[12_345] = 0
        for p in [Float(0.99), 0.6] {
            let parameters = SamplingParameters(temperature: 1, nSigma: nil, seed: 9, topP: p)
            try Self.checkDraws(row, parameters, expected: Self.reference(row, parameters), draws: 2000)
        }
        let spread = Self.spreadRow()
        let parameters = SamplingParameters(temperature: 1.3, nSigma: nil, seed: 4, topP: 0.97)
        try Self.checkDraws(spread, parameters, expected: Self.reference(spread, parameters), draws: 6000)
        var words = [UInt32](repeating: ~0, count: (spread.count + 31) / 32)
        var masked = spread
        for i in stride(from: 0, to: spread.count, by: 2) {
            words[i / 32] &= ~(1 << UInt32(i % 32))
            masked[i] = -.infinity
        }
        try Self.checkDraws(
            spread, parameters, expected: Self.reference(masked, parameters), draws: 4000,
            processing: RequestProcessing(allowedTokens: words))
    }

    @Test("top-k alone keeps exactly the k largest (ties to the lower id) on real rows", arguments: [1, 50, 1000])
    func topKReal(k: Int) throws {
        for r in [1, 4, 7] {
            let row = Fixture.row(r)
            let parameters = SamplingParameters(temperature: 1, nSigma: nil, seed: UInt64(r), topK: k)
            try Self.checkDraws(row, parameters, expected: Self.reference(row, parameters), draws: 600)
        }
    }

    @Test("top-k at or beyond the vocabulary keeps the whole row, up to Int.max (found by the fuzzer)")
    func topKHuge() throws {
        let row = Self.spreadRow()
        let whole = Self.reference(row, SamplingParameters(temperature: 1, nSigma: nil, seed: 4))
        for k in [row.count, row.count + 1, Int(Int32.max), Int.max / 2, Int.max] {
            let parameters = SamplingParameters(temperature: 1, nSigma: nil, seed: 4, topK: k)
            try Self.checkDraws(row, parameters, expected: whole, draws: 400)
            // With a filter in front, the filter alone decides.
            let filtered = SamplingParameters(temperature: 1, nSigma: 1, seed: 4, topK: k)
            try Self.checkDraws(
                row, filtered,
                expected: Self.reference(row, SamplingParameters(temperature: 1, nSigma: 1, seed: 4)), draws: 200)
        }
    }

    @Test("top-k ties across chunks: a constant row keeps the k lowest ids; a plateau straddling the k-th")
    func topKTies() throws {
        let constant = [Float](repeating: 1.5, count: 10_000)
        for k in [1, 7, 50, 4096, 5000] {
            let parameters = SamplingParameters(temperature: 1, nSigma: nil, seed: 3, topK: k)
            let expected = Self.reference(constant, parameters)
            #expect(expected.keys.max() == k - 1)
            try Self.checkDraws(constant, parameters, expected: expected, draws: 300)
        }
        // 300 tokens share the 40th-largest value, spread over three chunks.
        var plateau = [Float](repeating: -5, count: 12_000)
        for i in 0..<39 { plateau[i * 300 + 17] = 10 + Float(i) * 0.01 }
        for i in 0..<300 { plateau[(i * 41 + 5) % 12_000] = 3 }
        for k in [40, 41, 100, 339, 340] {
            let parameters = SamplingParameters(temperature: 1, nSigma: nil, seed: 8, topK: k, topP: 0.999)
            try Self.checkDraws(plateau, parameters, expected: Self.reference(plateau, parameters), draws: 300)
        }
    }

    @Test(
        "top-k from group maxima: the float64 kept set with -inf tokens, a bitmask, a short last chunk, beside min-p and Top-nσ, whole and split"
    )
    func topKGroups() throws {
        var random = TestRandom(seed: 41)
        for vocab in [9001, 4100, 130] {
            var row = (0..<vocab).map { _ in Float(random.uniform() * 12 - 6) }
            for i in stride(from: 3, to: vocab, by: 11) { row[i] = -.infinity }
            // The row's largest logits in the last chunk's scalar tail and at its vector edge.
            row[vocab - 1] = 9
            row[vocab - 2] = 8.5
            row[vocab - 17] = 8.75
            let words = (vocab + 31) / 32
            let bitmask = (0..<words).map { w in UInt32(truncatingIfNeeded: 0xF7DF_BEFF &* UInt64(w + 1)) | 1 }
            var masked = row
            for i in 0..<vocab where bitmask[i / 32] & (1 << UInt32(i % 32)) == 0 { masked[i] = -.infinity }
            for k in [1, 2, 7, 300, vocab / 16 + 40, vocab] {
                for (nSigma, minP) in [(Float?.none, Float?.none), (nil, 0.05), (1.5, nil)] {
                    let parameters = SamplingParameters(
                        temperature: 1, nSigma: nSigma, seed: UInt64(k), topK: k, minP: minP)
                    for threads in [1, 3] {
                        try Self.checkDraws(
                            row, parameters, expected: Self.reference(row, parameters), draws: 60, threads: threads)
                        try Self.checkDraws(
                            row, parameters, expected: Self.reference(masked, parameters), draws: 60,
                            processing: RequestProcessing(allowedTokens: bitmask), threads: threads)
                    }
                }
            }
            // Without -inf tokens, min-p rows (alone, with top-k, with top-p) and top-k rows
            // reduce with the maximum-only loop in AVX-512 builds, whose lanes are the groups.
            var clean = row.map { $0 == -.infinity ? -7 : $0 }
            clean[vocab / 3] = 9.5
            let cases: [(Int?, Float?, Float?)] = [
                (nil, nil, 0.05), (7, nil, 0.05), (300, nil, 0.05), (nil, 0.9, 0.05), (40, 0.95, 0.05),
                (1, nil, nil), (7, nil, nil), (300, nil, nil), (vocab / 16 + 40, nil, nil), (40, 0.95, nil)
            ]
            for (k, p, minP) in cases {
                let parameters = SamplingParameters(
                    temperature: 0.8, nSigma: nil, seed: 5, topK: k, topP: p, minP: minP)
                for threads in [1, 3] {
                    try Self.checkDraws(
                        clean, parameters, expected: Self.reference(clean, parameters), draws: 60, threads: threads)
                }
            }
        }
    }

    @Test(
        "top-k's compaction from the group maxima writes every allowed logit at or above the threshold, in id order, and nothing past them"
    )
    func compactGroups() {
        var random = TestRandom(seed: 29)
        let chunkLength = 4096
        for vocab in [chunkLength, 2 * chunkLength + 3 * 1024 + 300, 1024 + 17, 40] {
            let row = (0..<vocab).map { _ in Float(random.gaussian() * 3) }
            let words = (vocab + 31) / 32
            let bitmask = (0..<words).map { _ in UInt32(truncatingIfNeeded: random.next()) }
            for masked in [false, true] {
                for chunk in 0..<(vocab + chunkLength - 1) / chunkLength {
                    let start = chunk * chunkLength, n = min(chunkLength, vocab - start)
                    var groups = [Float](repeating: .nan, count: TopKBound.groupsPerChunk)
                    // A slot with a sentinel past the chunk: the compaction must not write there.
                    var out = [Candidate](repeating: Candidate(index: -7, logit: .nan), count: n + 16)
                    let sorted = row[start..<start + n].sorted(by: >)
                    for rank in [0, 3, 40, n / 5, n - 1] where rank < n {
                        let threshold = sorted[rank]
                        let expected = (start..<start + n).filter {
                            row[$0] >= threshold && (!masked || bitmask[$0 / 32] & (1 << UInt32($0 % 32)) != 0)
                        }
                        let written = row.withUnsafeBufferPointer { p in
                            bitmask.withUnsafeBufferPointer { m in
                                groups.withUnsafeMutableBufferPointer { g in
                                    out.withUnsafeMutableBufferPointer { o in
                                        let mask = masked ? m.baseAddress! + start / 32 : nil
                                        TopKBound.groupMaxima(
                                            p.baseAddress! + start, count: n, mask: mask, into: g.baseAddress!)
                                        return TopKBound.compactGroups(
                                            p.baseAddress!, vocab: vocab, chunk: chunk, threshold: threshold,
                                            groups: g.baseAddress!, mask: masked ? m.baseAddress! : nil,
                                            into: o.baseAddress!)
                                    }
                                }
                            }
                        }
                        #expect(
                            written == expected.count, "vocab \(vocab) chunk \(chunk) rank \(rank) masked \(masked)")
                        let ids = out[0..<written].map { Int($0.index) }
                        #expect(
                            ids == expected,
                            "first difference at \(Array(zip(ids, expected)).firstIndex { $0.0 != $0.1 } ?? min(ids.count, expected.count))"
                        )
                        #expect(out[0..<written].allSatisfy { $0.logit == row[Int($0.index)] })
                        #expect(out[n...].allSatisfy { $0.index == -7 }, "wrote past the chunk's slot")
                    }
                }
            }
        }
    }

    @Test(
        "top-k's vector maxima (AVX-512 builds): every 16 logits' maximum, the blocks' maxima and the sum; the compaction from them writes every logit at or above the threshold, in id order, and nothing past them",
        .enabled(if: BuildTarget.features.description.contains("avx512f"))
    )
    func compactVectors() {
        var random = TestRandom(seed: 31)
        let chunkLength = 4096
        for vocab in [chunkLength, 2 * chunkLength + 3 * 1024 + 300, 1024 + 17, 64 * 16 + 5, 40, 16, 7] {
            var infinite = (0..<vocab).map { _ in Float(random.gaussian() * 3) }
            for i in stride(from: 5, to: vocab, by: 13) { infinite[i] = -.infinity }
            // A whole vector of -inf, and the largest logit in the last few (the scalar tail).
            for i in 0..<min(16, vocab) { infinite[i] = -.infinity }
            infinite[vocab - 1] = 20
            for row in [infinite, infinite.map { $0 == -.infinity ? -7 : $0 }] {
                for chunk in 0..<(vocab + chunkLength - 1) / chunkLength {
                    let start = chunk * chunkLength, n = min(chunkLength, vocab - start)
                    var groups = [Float](repeating: .nan, count: TopKBound.groupsPerChunk)
                    let result = row.withUnsafeBufferPointer { p in
                        groups.withUnsafeMutableBufferPointer { g in
                            TopKBound.vectorMaxima(p.baseAddress! + start, count: n, into: g.baseAddress!)
                        }
                    }
                    let slice = Array(row[start..<start + n])
                    for i in 0..<TopKBound.groupsPerChunk {
                        let expected = 16 * i < n ? slice[(16 * i)..<min(16 * i + 16, n)].max()! : -.infinity
                        #expect(groups[i] == expected, "vocab \(vocab) chunk \(chunk) vector \(i)")
                    }
                    for b in 0..<4 {
                        let expected = 1024 * b < n ? slice[(1024 * b)..<min(1024 * b + 1024, n)].max()! : .infinity
                        #expect(result.blockMaxima[b] == expected, "vocab \(vocab) chunk \(chunk) block \(b)")
                    }
                    #expect(result.maximum == slice.max()!)
                    // Float lane sums (within their roundings); a -inf token makes the sum -inf, as the
                    // maximum-only loop's does.
                    if slice.allSatisfy({ $0.isFinite }) {
                        let exact = slice.reduce(0.0) { $0 + Double($1) }
                        #expect(abs(result.sum - exact) <= 1e-5 * slice.reduce(0.0) { $0 + Double(abs($1)) })
                    } else {
                        #expect(!result.sum.isFinite)
                    }
                    var out = [Candidate](repeating: Candidate(index: -7, logit: .nan), count: n + 16)
                    let sorted = slice.sorted(by: >)
                    for rank in [0, 3, 40, n / 5, n - 1] where rank < n && sorted[rank] > -.infinity {
                        let threshold = sorted[rank]
                        let expected = (start..<start + n).filter { row[$0] >= threshold }
                        let written = row.withUnsafeBufferPointer { p in
                            groups.withUnsafeBufferPointer { g in
                                out.withUnsafeMutableBufferPointer { o in
                                    TopKBound.compactVectors(
                                        p.baseAddress!, vocab: vocab, chunk: chunk, threshold: threshold,
                                        groups: g.baseAddress!, into: o.baseAddress!)
                                }
                            }
                        }
                        #expect(written == expected.count, "vocab \(vocab) chunk \(chunk) rank \(rank)")
                        #expect(out[0..<written].map { Int($0.index) } == expected)
                        #expect(out[0..<written].allSatisfy { $0.logit == row[Int($0.index)] })
                        #expect(out[n...].allSatisfy { $0.index == -7 }, "wrote past the chunk's slot")
                    }
                }
            }
        }
    }

    @Test("the k-th largest by bisection equals the sorted array's, with ties, signed zeros and wide ranges")
    func kthLargest() {
        var random = TestRandom(seed: 12)
        for trial in 0..<300 {
            let n = 1 + Int(random.next() % 3000)
            let values: [Float] = (0..<n).map { _ in
                switch trial % 4 {
                case 0: Float(random.gaussian() * 4)
                case 1: Float(Int(random.next() % 7)) - 3  // heavy ties
                case 2: random.uniform() < 0.5 ? -0.0 : 0.0
                default: Float(random.gaussian()) * Float(1 << Int(random.next() % 60)) / 1e9
                }
            }
            let sorted = values.sorted(by: >)
            for k in Set([1, n, 1 + Int(random.next() % UInt64(n)), min(n, 50)]) {
                var copy = values
                let got = copy.withUnsafeMutableBufferPointer { TopKBound.kthLargest($0.baseAddress!, count: n, k: k) }
                #expect(got == sorted[k - 1], "trial \(trial) n \(n) k \(k)")
                // The returned value is one a row holds, at or below which at least k lie.
                #expect(values.filter { $0 >= got }.count >= k && values.filter { $0 > got }.count < k)
            }
        }
    }

    @Test("the nucleus cut: the mass above the returned value stays below the need, at or above it reaches it")
    func nucleusCut() {
        var random = TestRandom(seed: 21)
        for trial in 0..<300 {
            // A sixth of the trials are small rows of ties (at most 24 candidates: the cut is
            // then often the lowest value itself, the bisection's starting `low`).
            let n = 1 + Int(random.next() % (trial % 6 == 0 ? 24 : 2500))
            let candidates = (0..<n).map { i -> Candidate in
                let x: Float =
                    trial % 3 == 0 ? Float(Int(random.next() % 9)) : Float(random.gaussian() * 3)  // ties, or not
                return Candidate(index: Int32(i), logit: x)
            }
            let maximum = candidates.map(\.logit).max()!
            let weights = candidates.map { Foundation.exp(Double($0.logit - maximum)) }
            let total = weights.reduce(0, +)
            let need = total * (0.05 + 0.95 * random.uniform())
            var scratch = [Double](repeating: 0, count: n)
            let (value, above) = candidates.withUnsafeBufferPointer { c in
                weights.withUnsafeBufferPointer { w in
                    scratch.withUnsafeMutableBufferPointer {
                        Truncation.nucleusCut(
                            c.baseAddress!, w.baseAddress!, count: n, need: need, logits: $0.baseAddress!)
                    }
                }
            }
            var strictlyAbove = 0.0, atOrAbove = 0.0
            for (c, w) in zip(candidates, weights) {
                if c.logit > value { strictlyAbove += w }
                if c.logit >= value { atOrAbove += w }
            }
            #expect(candidates.contains { $0.logit == value }, "trial \(trial): \(value) is no candidate's")
            #expect(strictlyAbove < need * (1 + 1e-12) && atOrAbove >= need * (1 - 1e-12), "trial \(trial)")
            #expect(Swift.abs(above - strictlyAbove) <= 1e-12 * total, "trial \(trial)")
        }
        // The cut at the lowest value, whose ties fill a whole vector of eight (the in-range scan
        // skips vectors by a compare with the interval's ends): eight at 1, then four at 2.
        let candidates = (0..<12).map { Candidate(index: Int32($0), logit: $0 < 8 ? 1 : 2) }
        let weights = candidates.map { Foundation.exp(Double($0.logit) - 2) }
        var scratch = [Double](repeating: 0, count: 12)
        let need = 4 + 4 * Foundation.exp(-1.0)
        let (value, above) = candidates.withUnsafeBufferPointer { c in
            weights.withUnsafeBufferPointer { w in
                scratch.withUnsafeMutableBufferPointer {
                    Truncation.nucleusCut(
                        c.baseAddress!, w.baseAddress!, count: 12, need: need, logits: $0.baseAddress!)
                }
            }
        }
        #expect(value == 1 && Swift.abs(above - 4) <= 1e-12, "\(value), \(above)")
    }

    @Test("the softmax routes give the same tokens whatever the thread count, batch size or row position")
    func determinism() throws {
        let vocab = 128_256, rows = 5
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 33)
        let parameters = [
            SamplingParameters(temperature: 1, nSigma: nil, seed: 1),
            SamplingParameters(temperature: 0.7, nSigma: nil, seed: 2, topP: 0.9),
            SamplingParameters(temperature: 1, nSigma: nil, seed: 3, topK: 50),
            SamplingParameters(temperature: 1.2, nSigma: nil, seed: 4, topK: 1000),
            SamplingParameters(temperature: 0.8, nSigma: nil, seed: 5, epsilon: 1e-4, eta: 3e-4, pLess: true)
        ]
        for step in [UInt64(0), 77] {
            let steps = [UInt64](repeating: step, count: rows)
            let reference = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
                .sample(logits: logits, parameters: parameters, steps: steps).map { try $0.get() }
            // `concurrentPerform` always splits a row alone over its threads (the pool splits
            // only over the workers that spin or are woken).
            for (threads, executor) in [
                (2, BatchSampler.Executor.workerPool), (4, .workerPool), (2, .concurrentPerform),
                (5, .concurrentPerform)
            ] {
                let sampler = try BatchSampler(
                    vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads, executor: executor)
                #expect(
                    try sampler.sample(logits: logits, parameters: parameters, steps: steps).map { try $0.get() }
                        == reference)
                for r in 0..<rows {
                    // One row alone is split over the threads.
                    let alone = try sampler.sample(
                        logits: Array(logits[(r * vocab)..<((r + 1) * vocab)]), parameters: [parameters[r]],
                        steps: [step])[0].get()
                    #expect(alone == reference[r], "row \(r), \(threads) threads")
                }
            }
        }
    }

    /// ε, η and p-less without a threshold filter: the row-mass route (the pass's Float moments
    /// place their cuts within a band; a logit inside a band takes the row's mass in double).
    static let rowMassCases: [SamplingParameters] = [
        SamplingParameters(nSigma: nil, seed: 1, epsilon: 3e-4),
        SamplingParameters(temperature: 0.7, nSigma: nil, seed: 2, eta: 3e-4),
        SamplingParameters(temperature: 1.5, nSigma: nil, seed: 3, pLess: true),
        SamplingParameters(temperature: 1.2, nSigma: nil, seed: 4, epsilon: 1e-5, eta: 1e-3, pLess: true),
        SamplingParameters(
            temperature: 1, nSigma: nil, seed: 5, topP: 0.9, typicalP: 0.95, epsilon: 3e-4, eta: 3e-4,
            xtcThreshold: 0.1, xtcProbability: 0.5, dynamicTemperatureRange: 0.5, pLess: true)
    ]

    @Test(
        "the row-mass route draws from the float64 kept set on real rows, with exact log-probabilities",
        arguments: rowMassCases)
    func rowMassReal(parameters: SamplingParameters) throws {
        let rows = Fixture.logits.rows, vocab = Fixture.logits.vocab
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
        for r in 0..<rows {
            let row = Fixture.row(r)
            for step in UInt64(0)..<8 {
                let reference = Reference.extended(row, parameters, step: step).distribution
                let token = try sampler.sample(logits: row, parameters: [parameters], steps: [step])[0].get()
                let probability = try #require(
                    reference.first { $0.token == token.token }?.probability, "row \(r): \(token.token) not kept")
                #expect(Swift.abs(token.logProbability - Foundation.log(probability)) < 1e-6)
                #expect(token.candidateCount == reference.count, "row \(r) step \(step)")
            }
        }
        // The same row through an allowed-token bitmask: the route reads the masked row.
        let row = Fixture.row(2)
        var allowed = [Bool](repeating: true, count: vocab)
        for i in stride(from: 0, to: vocab, by: 3) { allowed[i] = false }
        let top = row.indices.max { row[$0] < row[$1] }!
        allowed[top] = false
        let masked = row.indices.map { allowed[$0] ? row[$0] : -.infinity }
        var words = [UInt32](repeating: 0, count: (vocab + 31) / 32)
        for i in 0..<vocab where allowed[i] { words[i / 32] |= 1 << UInt32(i % 32) }
        try Self.checkDraws(
            row, parameters, expected: Self.extendedReference(masked, parameters), draws: 800,
            processing: RequestProcessing(allowedTokens: words))
    }

    /// The float64 distribution of a row whose extended samplers do not depend on the step (no XTC).
    static func extendedReference(_ row: [Float], _ parameters: SamplingParameters) -> [Int: Double] {
        var fixed = parameters
        fixed.xtcThreshold = nil
        return Dictionary(
            uniqueKeysWithValues: Reference.extended(row, fixed).distribution.map { ($0.token, $0.probability) })
    }

    @Test("the row-mass route: logits within the Float cut's bound are decided in double, as float64 decides them")
    func rowMassBoundary() throws {
        // 3000 logits spread over [−12, 0] and three tokens placed on ε's cut: each of their
        // probabilities is ε to within a Float rounding of the logit, far inside the pass's bound.
        var random = TestRandom(seed: 41)
        var row = (0..<3000).map { _ in Float(-12 * random.uniform()) }
        row[0] = 0
        let epsilon = 2e-4
        for t in [Float(1), 0.6] {
            let targets = [1000, 1500, 2999]
            for i in targets { row[i] = -50 }
            let z0 = row.reduce(0.0) { $0 + Foundation.exp(Double($1) / Double(t)) }
            let e = epsilon * z0 / (1 - 3 * epsilon)
            let x = Float(Double(t) * Foundation.log(e))
            (row[1000], row[1500], row[2999]) = (x.nextDown, x, x.nextUp)
            let parameters = SamplingParameters(temperature: t, nSigma: nil, seed: 9, epsilon: Float(epsilon))
            let expected = Self.extendedReference(row, parameters)
            let before = RowPipeline.exactRecomputations.load(ordering: .relaxed)
            try Self.checkDraws(row, parameters, expected: expected, draws: 400)
            #expect(RowPipeline.exactRecomputations.load(ordering: .relaxed) > before, "the band was not hit")
            var eta = parameters
            eta.epsilon = nil
            eta.eta = Float(epsilon)
            try Self.checkDraws(row, eta, expected: Self.extendedReference(row, eta), draws: 400)
        }
    }

    @Test(
        "typical-p, dynamic temperature and XTC alone: the float64 distribution on real rows, whole and through a bitmask",
        arguments: [
            SamplingParameters(nSigma: nil, seed: 7, typicalP: 0.95),
            SamplingParameters(temperature: 0.7, nSigma: nil, seed: 8, typicalP: 0.5),
            SamplingParameters(temperature: 1.5, nSigma: nil, seed: 9, typicalP: 0.99),
            SamplingParameters(temperature: 1.1, nSigma: nil, seed: 10, typicalP: 0.2),
            SamplingParameters(nSigma: nil, seed: 1, dynamicTemperatureRange: 0.5),
            SamplingParameters(
                temperature: 0.7, nSigma: nil, seed: 2, dynamicTemperatureRange: 0.6, dynamicTemperatureExponent: 2),
            SamplingParameters(temperature: 0.3, nSigma: nil, seed: 3, dynamicTemperatureRange: 0.5),
            SamplingParameters(nSigma: nil, seed: 4, xtcThreshold: 0.1),
            SamplingParameters(temperature: 0.6, nSigma: nil, seed: 5, xtcThreshold: 0.02, xtcProbability: 0.5),
            SamplingParameters(temperature: 2, nSigma: nil, seed: 6, xtcThreshold: 0.001)
        ])
    func typicalDynamicTemperatureAndXTC(parameters: SamplingParameters) throws {
        let rows = Fixture.logits.rows, vocab = Fixture.logits.vocab
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
        var removed = 0
        for r in 0..<rows {
            let row = Fixture.row(r)
            for step in UInt64(0)..<6 {
                let reference = Reference.extended(row, parameters, step: step).distribution
                let token = try sampler.sample(logits: row, parameters: [parameters], steps: [step])[0].get()
                let probability = try #require(
                    reference.first { $0.token == token.token }?.probability, "row \(r): \(token.token) not kept")
                #expect(
                    Swift.abs(token.logProbability - Foundation.log(probability)) < 1e-6,
                    "row \(r) step \(step): \(token.logProbability) vs \(Foundation.log(probability))")
                #expect(token.candidateCount == reference.count, "row \(r) step \(step)")
                if reference.count < vocab { removed += 1 }
            }
        }
        // XTC removed tokens on some rows (the test reaches the route's removal).
        if parameters.xtcThreshold != nil { #expect(removed > 0) }
        // A bitmask that removes the row's maximum; chi-square against the float64 distribution.
        let row = Fixture.row(4)
        var always = parameters
        always.xtcProbability = 1
        let top = row.indices.max { row[$0] < row[$1] }!
        var words = [UInt32](repeating: ~0, count: (vocab + 31) / 32)
        words[top / 32] &= ~(1 << UInt32(top % 32))
        var masked = row
        masked[top] = -.infinity
        let expected = Dictionary(
            uniqueKeysWithValues: Reference.extended(masked, always).distribution.map { ($0.token, $0.probability) })
        try Self.checkDraws(
            row, always, expected: expected, draws: 1500, processing: RequestProcessing(allowedTokens: words))
    }

    @Test("the dynamic temperature's entropy and XTC's cut decided in double where their Float bound does not")
    func dynamicTemperatureAndXTCBoundaries() throws {
        // XTC: three tokens placed on the threshold (probability 0.1 to within a Float rounding
        // of their logits) beside two clear of it.
        var random = TestRandom(seed: 43)
        var row = (0..<3000).map { _ in Float(-10 * random.uniform()) }
        let targets = [100, 2000, 2999]
        for i in targets { row[i] = -80 }
        row[5] = 8
        row[7] = 7
        let z0 = row.reduce(0.0) { $0 + Foundation.exp(Double($1)) }
        let threshold = 0.1
        let x = Float(Foundation.log(threshold * z0 / (1 - 3 * threshold)))
        (row[100], row[2000], row[2999]) = (x.nextDown, x, x.nextUp)
        let xtc = SamplingParameters(nSigma: nil, seed: 3, xtcThreshold: Float(threshold))
        let before = RowPipeline.exactRecomputations.load(ordering: .relaxed)
        try Self.checkDraws(row, xtc, expected: Self.reference(row, xtc, step: 0), draws: 300)
        #expect(RowPipeline.exactRecomputations.load(ordering: .relaxed) > before, "XTC's band was not hit")
        // Dynamic temperature at the edge of a Float rounding: the range is searched so that the
        // float64 temperature lies within 1e-12 of halfway between two Floats.
        let flat = (0..<2000).map { _ in Float(-6 * random.uniform()) }
        let n = Double(flat.count)
        let z = flat.reduce(0.0) { $0 + Foundation.exp(Double($1)) }
        let weighted = flat.reduce(0.0) { $0 + Foundation.exp(Double($1)) * Double($1) }
        let h = min(1, (Foundation.log(z) - weighted / z) / Foundation.log(n))
        var best = (distance: Double.infinity, range: Float(0))
        var range: Float = 0.25
        for _ in 0..<200_000 {
            range = range.nextUp
            let t = Double(1 - range) + 2 * Double(range) * h
            let f = Float(t)
            let half = Double(f) + (Double(f.nextUp) - Double(f)) / 2
            let other = Double(f) - (Double(f) - Double(f.nextDown)) / 2
            let distance = min(Swift.abs(t - half), Swift.abs(t - other))
            if distance < best.distance { best = (distance, range) }
        }
        let dynamic = SamplingParameters(nSigma: nil, seed: 4, dynamicTemperatureRange: best.range)
        try Self.checkDraws(flat, dynamic, expected: Self.reference(flat, dynamic, step: 0), draws: 300)
    }

    @Test("the dynamic temperature's entropy taken again in double where the pass's Float part leaves it undecided")
    func dynamicTemperatureRetry() throws {
        // One token at 0 and 1999 just below the pass's Float depth (16): their mass is about
        // 1e-4 of the row's, taken by the Float exp, whose bound then moves the entropy by about
        // 1e-8 (the double sums' by about 1e-12). The range is searched so that the float64
        // temperature lies between 1e-11 and 4e-11 from halfway between two Floats: inside the
        // Float part's bound, clear of the double one.
        var random = TestRandom(seed: 47)
        var row = (0..<2000).map { _ in Float(-17.5 + 1.3 * random.uniform()) }
        row[1234] = 0
        let n = Double(row.count)
        let z = row.reduce(0.0) { $0 + Foundation.exp(Double($1)) }
        let weighted = row.reduce(0.0) { $0 + Foundation.exp(Double($1)) * Double($1) }
        let h = min(1, (Foundation.log(z) - weighted / z) / Foundation.log(n))
        var range: Float = 0.25, found: Float?
        for _ in 0..<400_000 {
            range = range.nextUp
            let t = Double(1 - range) + 2 * Double(range) * h
            let f = Float(t)
            let halves = [
                Double(f) + (Double(f.nextUp) - Double(f)) / 2, Double(f) - (Double(f) - Double(f.nextDown)) / 2
            ]
            if let distance = halves.map({ Swift.abs(t - $0) }).min(), distance > 1e-11, distance < 4e-11 {
                found = range
                break
            }
        }
        let inWindow: Float = try #require(found, "no range in the window")
        let dynamic = SamplingParameters(nSigma: nil, seed: 5, dynamicTemperatureRange: inWindow)
        let before = RowPipeline.entropyRetries.load(ordering: .relaxed)
        try Self.checkDraws(row, dynamic, expected: Self.reference(row, dynamic, step: 0), draws: 200)
        #expect(RowPipeline.entropyRetries.load(ordering: .relaxed) >= before + 200, "the Float part decided")
    }

    static func reference(_ row: [Float], _ parameters: SamplingParameters, step: UInt64) -> [Int: Double] {
        Dictionary(
            uniqueKeysWithValues: Reference.extended(row, parameters, step: step).distribution.map {
                ($0.token, $0.probability)
            })
    }

    @Test("the double-precision vector exp: within 16 ulps (relative error below 2e-15) on [-708, 0] against libm")
    func wideExp() {
        var random = TestRandom(seed: 45)
        var worst = 0.0, worstULPs = 0.0
        for k in 0..<20_000 {
            var v = SoftmaxWeights.Vector()
            for lane in 0..<v.scalarCount {
                let u = random.uniform()
                v[lane] = k % 2 == 0 ? -708 * u : -u * u * 4
            }
            let e = SoftmaxWeights.exp(v)
            for lane in 0..<v.scalarCount {
                let expected = Foundation.exp(v[lane])
                worst = max(worst, Swift.abs(e[lane] - expected) / expected)
                // Normal results only: a subnormal's ulp is fixed, its relative error is not.
                if expected.isNormal { worstULPs = max(worstULPs, ulps(e[lane], from: expected)) }
            }
        }
        #expect(worst < 2e-15 && worstULPs <= 16, "worst relative error \(worst), \(worstULPs) ulps")
        #expect(SoftmaxWeights.exp(SoftmaxWeights.Vector(repeating: 0))[0] == 1)
        #expect(SoftmaxWeights.exp(SoftmaxWeights.Vector(repeating: -.infinity))[0] == 0)
        #expect(SoftmaxWeights.exp(SoftmaxWeights.Vector(repeating: -709))[0] == 0)
    }

    @Test("a finite logit whose exponent overflows Float adds nothing to the Float moments (found by the fuzzer)")
    func hugeNegativeLogit() throws {
        // The pass's `Σ e·y` once took `−1.6e38·log2 e` times `exp2`'s clamped 2^-126 in the
        // default build: −2.7 on a row whose whole sum is −0.24, so typical-p kept 103 beside 105.
        var row = [Float](repeating: -101, count: 213)
        (row[83], row[189], row[7], row[1]) = (105, 103, -1.608_391_7e38, -.infinity)
        var lowest = row
        lowest[2] = -.greatestFiniteMagnitude
        for row in [row, lowest] {
            for parameters in [
                SamplingParameters(nSigma: nil, seed: 226, typicalP: 0.5),
                SamplingParameters(nSigma: nil, seed: 226, typicalP: 0.95),
                SamplingParameters(temperature: 0.5, nSigma: nil, seed: 3, eta: 0.05, pLess: true)
            ] {
                try Self.checkDraws(row, parameters, expected: Self.reference(row, parameters, step: 0), draws: 200)
            }
            #expect(Self.reference(row, SamplingParameters(nSigma: nil, typicalP: 0.5), step: 0).keys.sorted() == [83])
        }
    }

    @Test(
        "a maximum beyond 2^23 takes unfused exponents: the routes sum a constant 2e34 row to its length (found by the fuzzer in a SIMD build)"
    )
    func hugeMaximum() throws {
        // `2e34·log2 e` rounded to Float is 1e27 away from its double value: the fused exponents
        // once scaled every sum by 2^(±1e27), zero or infinity, and typical-p drew from nothing.
        let constant = [Float](repeating: 2.015_832_8e34, count: 342)
        var spread = constant
        for i in stride(from: 0, to: 342, by: 7) { spread[i] = 2.015_832_8e34 * (1 - Float(i) * 1e-9) }
        for row in [constant, spread] {
            for parameters in [
                SamplingParameters(nSigma: nil, seed: 23, typicalP: 0.2),
                SamplingParameters(nSigma: nil, seed: 23, epsilon: 3e-4),
                SamplingParameters(temperature: 1e30, nSigma: nil, seed: 5, dynamicTemperatureRange: 0.5),
                SamplingParameters(nSigma: nil, seed: 7, xtcThreshold: 0.001),
                SamplingParameters(nSigma: nil, seed: 9),
                SamplingParameters(nSigma: nil, seed: 9, topP: 0.3)
            ] {
                try Self.checkDraws(row, parameters, expected: Self.reference(row, parameters, step: 0), draws: 100)
            }
        }
    }

    @Test("plain sampling with edited tokens: bias (one lifted above the row), penalties and DRY join the draw")
    func plainWithEdits() throws {
        let row = Fixture.row(3)
        let top = row.indices.max { row[$0] < row[$1] }!
        let history: [Int32] = [5, 9, 11, 5, 9, 11, 5, 9, Int32(top), 40, 41]
        let processing = RequestProcessing(
            logitBias: [LogitBias(token: 17, bias: row[top] - row[17] + 2), LogitBias(token: 23, bias: -3)],
            promptTokens: Array(history.prefix(4)), outputTokens: Array(history.dropFirst(4)),
            repetitionPenalty: 1.3, frequencyPenalty: 0.2, presencePenalty: 0.4, dryMultiplier: 0.8,
            dryAllowedLength: 1)
        for temperature in [Float(1), 0.6] {
            let parameters = SamplingParameters(temperature: temperature, nSigma: nil, seed: 13)
            // The processed row by the processing oracles (dictionaries, position-by-position
            // DRY), then the float64 softmax of it.
            let processed = DryReference.process(row, processing)
            #expect(processed[17] > processed[top], "the bias lifts token 17 to the top")
            try Self.checkDraws(
                row, parameters, expected: Self.reference(processed, parameters), draws: 1500, processing: processing)
        }
    }

    @Test("the vector exp2 of every softmax pass: relative error below 1.9e-7 on [-126, 0], at most 2^-126 below")
    func vectorExp2() {
        var worst = 0.0
        var t = -160.0
        while t <= 0 {
            var lanes = LogprobKernel.Vector()
            for lane in 0..<16 { lanes[lane] = Float(Swift.min(0, t + Double(lane) / 16384)) }
            let got = LogprobKernel.exp2(lanes)
            for lane in 0..<16 {
                let x = Double(lanes[lane])
                let exact = Foundation.exp2(x)
                if x >= -126 {
                    worst = Swift.max(worst, Swift.abs(Double(got[lane]) - exact) / exact)
                } else {
                    #expect(Double(got[lane]) >= 0 && Swift.abs(Double(got[lane]) - exact) <= 0x1p-126, "t = \(x)")
                }
            }
            t += 1.0 / 1024
        }
        #expect(worst < 1.9e-7, "worst relative error \(worst)")
        // A masked lane (-inf) weighs at most 2^-126, never NaN.
        let masked = LogprobKernel.exp2(LogprobKernel.Vector(repeating: -.infinity))
        #expect(all((masked .>= 0) .& (masked .<= 0x1p-126)))
    }

    /// The float64 argmax of `row` (lowest id on ties), or the row's error: its first NaN or
    /// `+inf` by index, or no finite logit.
    static func greedyOracle(_ row: [Float]) -> Result<Int, RowError> {
        var best = -1, maximum = -Double.infinity
        for (i, x) in row.enumerated() {
            if x.isNaN { return .failure(.notANumber(index: i)) }
            if x == .infinity { return .failure(.positiveInfinity(index: i)) }
            if Double(x) > maximum {
                maximum = Double(x)
                best = i
            }
        }
        return best < 0 ? .failure(.noFiniteLogit) : .success(best)
    }

    @Test(
        "greedy rows read only the maximum: the float64 argmax (lowest id on ties) or the row's error, through -inf, overflowing sums and a tail, in float32 and bfloat16, whole and split"
    )
    func greedyMaximumOnly() throws {
        let vocab = 9001
        var rows: [[Float]] = []
        var random = TestRandom(seed: 8)
        rows.append((0..<vocab).map { _ in Float(random.uniform() * 20 - 10) })
        // Ties across chunks: the lower id.
        var tied = [Float](repeating: 1, count: vocab)
        tied[4100] = 7
        tied[9000] = 7
        rows.append(tied)
        // -inf masked logits fill the first chunk and dot the rest; the maximum in the tail.
        var masked = [Float](repeating: -.infinity, count: vocab)
        for i in stride(from: 4096, to: vocab, by: 3) { masked[i] = Float(i % 17) }
        masked[9000] = 40
        rows.append(masked)
        // Finite logits whose Float sums overflow.
        var huge = [Float](repeating: 3e38, count: vocab)
        huge[5000] = 3.3e38
        huge[5001] = 3.3e38
        rows.append(huge)
        // Errors: the lowest index decides.
        var nan = rows[0]
        nan[8000] = .infinity
        nan[6000] = .nan
        rows.append(nan)
        var infinity = rows[0]
        infinity[100] = .infinity
        infinity[200] = .nan
        rows.append(infinity)
        rows.append([Float](repeating: -.infinity, count: vocab))
        // Top-k 1 (alone, or beside filters that keep the argmax) draws as greedy does.
        let variants: [(Int) -> SamplingParameters] = [
            { SamplingParameters(temperature: 0, nSigma: 1, seed: UInt64($0)) },
            { SamplingParameters(temperature: 1, nSigma: nil, seed: UInt64($0), topK: 1) },
            { SamplingParameters(temperature: 0.7, nSigma: 1, seed: UInt64($0), topK: 1, topP: 0.9, minP: 0.05) }
        ]
        for (variant, threads) in variants.indices.flatMap({ v in [1, 3].map { (variants[v], $0) } }) {
            let parameters = rows.indices.map(variant)
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows.count, threadCount: threads)
            let batch = sampler.sample(logits: rows.flatMap { $0 }, parameters: parameters)
            // bfloat16: the oracle on the converted values (truncation keeps NaN a NaN here).
            let bits = rows.map { $0.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) } }
            let half = sampler.sample(bits: bits.flatMap { $0 }, format: .bfloat16, parameters: parameters)
            for (r, row) in rows.enumerated() {
                let converted = bits[r].map { Float(bitPattern: UInt32($0) << 16) }
                for (label, result, oracle) in [
                    ("f32", batch[r], Self.greedyOracle(row)), ("bf16", half[r], Self.greedyOracle(converted))
                ] {
                    // One row alone is split over the threads.
                    let alone =
                        label == "f32"
                        ? sampler.sample(logits: row, parameters: [parameters[r]])[0]
                        : sampler.sample(bits: bits[r], format: .bfloat16, parameters: [parameters[r]])[0]
                    for got in [result, alone] {
                        switch oracle {
                        case .success(let token):
                            #expect(
                                try got.get()
                                    == SampledToken(token: TokenID(token), logProbability: 0, candidateCount: 1),
                                "row \(r) \(label), \(threads) threads")
                        case .failure(let error):
                            #expect(throws: error, "row \(r) \(label), \(threads) threads") { try got.get() }
                        }
                    }
                }
            }
        }
        // Real rows; with top logprobs, top-k 1 reports what greedy reports.
        let sampler = try BatchSampler(vocabularySize: Fixture.row(0).count, maximumBatchSize: 1, threadCount: 1)
        for r in 0..<8 {
            let row = Fixture.row(r)
            let token = try sampler.sample(logits: row, parameters: [SamplingParameters(temperature: 0)])[0].get()
            #expect(token.token == (try Self.greedyOracle(row).get()), "real row \(r)")
            let topK = try sampler.sample(
                logits: row, parameters: [SamplingParameters(temperature: 1.3, nSigma: nil, seed: 9, topK: 1)])[0].get()
            #expect(topK == token, "real row \(r), top-k 1")
            let processing = [RequestProcessing(topLogprobs: 5)]
            let greedy = sampler.sample(
                logits: row, parameters: [SamplingParameters(temperature: 0)], processing: processing)
            let argmax = sampler.sample(
                logits: row, parameters: [SamplingParameters(temperature: 1.3, nSigma: nil, topK: 1)],
                processing: processing)
            #expect(try argmax.0[0].get() == greedy.0[0].get(), "real row \(r), top-k 1 with logprobs")
            #expect(argmax.1 == greedy.1, "real row \(r), top-k 1's top logprobs")
        }
    }

    @Test("n = 0 keeps the ties of the maximum only")
    func nSigmaZero() throws {
        var row = Fixture.row(1)
        let maximum = row.max()!
        row[100] = maximum
        row[40_000] = maximum
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
        var seen = Set<Int>()
        for step in 0..<200 {
            let token = try sampler.sample(
                logits: row, parameters: [SamplingParameters(nSigma: 0, seed: 1)], steps: [UInt64(step)])[0].get()
            #expect(row[Int(token.token)] == maximum && token.candidateCount == 3)
            #expect(Swift.abs(token.logProbability - Foundation.log(1.0 / 3)) < 1e-12)
            seen.insert(Int(token.token))
        }
        #expect(seen.count == 3)
    }
}
