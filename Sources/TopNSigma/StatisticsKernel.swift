/// The fused one-pass statistics kernel over raw row pointers.
///
/// A row is cut into fixed chunks of ``chunkLength`` logits. Each chunk is reduced in one SIMD pass
/// (`SIMD16<Float>`: each sum is 4 independent SSE chains, 2 AVX2 chains) to shifted sums `S1 = Σ(x - K)`, `S2 = Σ(x - K)²` and the maximum, where the
/// shift `K` is the chunk's first finite logit. The sums go to double precision at the end of the
/// chunk, so a Float accumulator lane never adds more than `chunkLength / 16` terms, and the chunk's
/// `(count, mean, M2)` merge into the row with Chan's formula, in chunk order. The merge order is
/// fixed by the row length alone, so the statistics are bit-identical whether a row is reduced by
/// one thread or split across many.
///
/// The hot loop assumes every logit is finite. When a chunk's sums come out non-finite (a masked
/// `-inf`, a NaN, a `+inf`, or squares beyond `Float`'s range), the chunk is reduced again by a
/// masked SIMD loop, and if that still fails, either the first NaN/`+inf` is reported or the chunk
/// is reduced in double precision (no overflow possible: `Float.greatestFiniteMagnitude²` is far
/// below `Double`'s range). Deviations so small that their Float squares underflow (subnormal
/// logits) also take the double-precision path. When the shift lies far from the chunk mean (`(mean - K)² > 4 σ²`),
/// the chunk is reduced once more around its mean, which bounds the cancellation in `M2`.
enum StatisticsKernel {
    typealias Vector = SIMD16<Float>

    /// Logits per chunk: the unit of the Float→Double flush, of Chan's merge and of work splitting.
    static let chunkLength = 4096

    /// One chunk's reduction, before it is merged into its row.
    struct ChunkPartial: Sendable {
        var count: Int = 0
        var mean: Double = 0
        var m2: Double = 0
        var maximum: Float = -.infinity
        /// Index of the first NaN / `+inf` inside the chunk, or -1.
        var invalidIndex: Int = -1
        var invalidIsNaN: Bool = false
    }

    struct ShiftedSums {
        var s1: Double
        var s2: Double
        var maximum: Float
        var count: Int
        var sawNaN: Bool
        var isFinite: Bool { s1.isFinite && s2.isFinite && !sawNaN }
    }

    // MARK: - chunk loops

    /// Sums of `x - shift` and `(x - shift)²` and the maximum, assuming every logit is finite.
    /// A non-finite logit or an overflowing square shows up as non-finite sums.
    @inline(__always)
    static func unmaskedSums<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int, shift: Float) -> ShiftedSums {
        let k = Vector(repeating: shift)
        // One SIMD16 accumulator set is already 4 independent chains per sum on SSE (2 on AVX2):
        // more than the add latency needs at memory speed, and a second set spills on SSE.
        var s1 = Vector(), s2 = Vector()
        var m = Vector(repeating: -.infinity)
        var i = 0
        while i &+ 16 <= n {
            let a = E.load16(p, i)
            m.replace(with: a, where: a .> m)
            let d = a - k
            s1 += d
            s2 += d * d
            i &+= 16
        }
        var sum1 = 0.0, sum2 = 0.0
        var maximum = m.max()
        for lane in 0..<16 {
            sum1 += Double(s1[lane])
            sum2 += Double(s2[lane])
        }
        while i < n {
            let x = E.float(p, i)
            if x > maximum { maximum = x }
            let d = x - shift
            sum1 += Double(d)
            sum2 += Double(d * d)
            i &+= 1
        }
        return ShiftedSums(s1: sum1, s2: sum2, maximum: maximum, count: n, sawNaN: false)
    }

    /// As ``unmaskedSums``, but `-inf` logits take no part and NaNs are flagged.
    @inline(__always)
    static func maskedSums<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int, shift: Float) -> ShiftedSums {
        let k = Vector(repeating: shift)
        let negInf = Vector(repeating: -.infinity)
        var s1 = Vector(), s2 = Vector(), m = negInf
        var counts = SIMD16<Int32>()
        var nan = SIMDMask<SIMD16<Int32>>()
        var i = 0
        while i &+ 16 <= n {
            let a = E.load16(p, i)
            let valid = a .> negInf
            nan = nan .| (a .!= a)
            m.replace(with: a, where: a .> m)
            let d = (a - k).replacing(with: 0, where: .!valid)
            s1 += d
            s2 += d * d
            counts &-= unsafeBitCast(valid, to: SIMD16<Int32>.self)
            i &+= 16
        }
        var sum1 = 0.0, sum2 = 0.0
        var maximum = m.max()
        for lane in 0..<16 {
            sum1 += Double(s1[lane])
            sum2 += Double(s2[lane])
        }
        var count = Int(counts.wrappedSum())
        var sawNaN = any(nan)
        while i < n {
            let x = E.float(p, i)
            if x.isNaN { sawNaN = true }
            if x > -.infinity {
                if x > maximum { maximum = x }
                let d = x - shift
                sum1 += Double(d)
                sum2 += Double(d * d)
                count &+= 1
            }
            i &+= 1
        }
        return ShiftedSums(s1: sum1, s2: sum2, maximum: maximum, count: count, sawNaN: sawNaN)
    }

    /// The first NaN or `+inf` in `p[0..<n]`, if any.
    static func firstInvalid<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) -> (index: Int, isNaN: Bool)? {
        for i in 0..<n {
            let x = E.float(p, i)
            if x.isNaN { return (i, true) }
            if x == .infinity { return (i, false) }
        }
        return nil
    }

    /// Double-precision two-pass reduction of a chunk known to hold no NaN and no `+inf`:
    /// the path for logits whose squares leave `Float`'s range.
    static func doublePrecisionPartial<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) -> ChunkPartial {
        var count = 0, sum = 0.0, maximum = -Float.infinity
        for i in 0..<n {
            let x = E.float(p, i)
            guard x > -.infinity else { continue }
            count += 1
            sum += Double(x)
            if x > maximum { maximum = x }
        }
        guard count > 0 else { return ChunkPartial() }
        let mean = sum / Double(count)
        var m2 = 0.0
        for i in 0..<n {
            let x = E.float(p, i)
            guard x > -.infinity else { continue }
            let d = Double(x) - mean
            m2 += d * d
        }
        return ChunkPartial(count: count, mean: mean, m2: m2, maximum: maximum)
    }

    /// Reduces one chunk (at most ``chunkLength`` logits; any length and alignment works).
    static func chunkPartial<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) -> ChunkPartial {
        var shift: Float = 0
        for i in 0..<n where E.float(p, i).isFinite {
            shift = E.float(p, i)
            break
        }
        var masked = false
        var sums = unmaskedSums(p, count: n, shift: shift)
        for attempt in 0..<2 {
            if !sums.isFinite && !masked {
                masked = true
                sums = maskedSums(p, count: n, shift: shift)
            }
            if !sums.isFinite {
                if let bad = firstInvalid(p, count: n) {
                    return ChunkPartial(invalidIndex: bad.index, invalidIsNaN: bad.isNaN)
                }
                return doublePrecisionPartial(p, count: n)
            }
            guard sums.count > 0 else { return ChunkPartial() }
            let count = Double(sums.count)
            // Deviations below ~1e-15 square to (near) zero in Float: reduce in double precision,
            // unless every deviation is exactly 0 (a constant chunk: all ≤ shift and summing to 0).
            if sums.s2 < count * 1e-30 && !(sums.s1 == 0 && sums.s2 == 0 && sums.maximum == shift) {
                return doublePrecisionPartial(p, count: n)
            }
            let meanOffset = sums.s1 / count
            let m2 = max(0, sums.s2 - sums.s1 * meanOffset)
            // A shift far from the mean loses digits to cancellation: reduce again around the mean.
            if attempt == 0 && meanOffset * meanOffset * count > 4 * m2 {
                let better = Float(Double(shift) + meanOffset)
                if better.isFinite && better != shift {
                    shift = better
                    sums = masked ? maskedSums(p, count: n, shift: shift) : unmaskedSums(p, count: n, shift: shift)
                    continue
                }
            }
            return ChunkPartial(count: sums.count, mean: Double(shift) + meanOffset, m2: m2, maximum: sums.maximum)
        }
        preconditionFailure("unreachable: the loop returns on its second attempt")
    }

    // MARK: - row fold

    /// Running fold of chunk partials into row statistics (Chan et al.'s parallel variance merge).
    struct RowAccumulator: Sendable {
        var count = 0
        var mean = 0.0
        var m2 = 0.0
        var maximum = -Float.infinity
        var maximumChunk = -1
        var error: RowError?

        /// Merges the partial of chunk `chunk` (which starts at logit `start`). Chunks must come in
        /// increasing order; after an error, later chunks are ignored.
        mutating func merge(_ part: ChunkPartial, chunk: Int, start: Int) {
            guard error == nil else { return }
            if part.invalidIndex >= 0 {
                let index = start + part.invalidIndex
                error = part.invalidIsNaN ? .notANumber(index: index) : .positiveInfinity(index: index)
                return
            }
            if part.maximum > maximum {
                maximum = part.maximum
                maximumChunk = chunk
            }
            guard part.count > 0 else { return }
            if count == 0 {
                count = part.count
                mean = part.mean
                m2 = part.m2
                return
            }
            let na = Double(count), nb = Double(part.count)
            let n = na + nb
            let delta = part.mean - mean
            mean += delta * (nb / n)
            m2 += part.m2 + delta * delta * (na * nb / n)
            count += part.count
        }

        /// The row's statistics; `row` is needed to locate the argmax inside its chunk.
        func finish<E: LogitElement>(row p: UnsafePointer<E>, count n: Int) -> Result<RowStatistics, RowError> {
            if let error { return .failure(error) }
            guard count > 0 else {
                return .success(RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0))
            }
            let start = maximumChunk * chunkLength
            let end = min(n, start + chunkLength)
            let argmax = StatisticsKernel.firstIndex(of: maximum, in: p + start, count: end - start) + start
            return .success(RowStatistics(maximum: maximum, argmax: argmax, finiteCount: count, mean: mean, sumOfSquaredDeviations: m2))
        }
    }

    /// The first index `i` with `p[i] == value` (SIMD scan), or `n` when there is none.
    static func firstIndex<E: LogitElement>(of value: Float, in p: UnsafePointer<E>, count n: Int) -> Int {
        let v = Vector(repeating: value)
        var i = 0
        while i &+ 16 <= n {
            let a = E.load16(p, i)
            if any(a .== v) { break }
            i &+= 16
        }
        while i < n && E.float(p, i) != value { i &+= 1 }
        return i
    }

    /// Loads one byte per cache line of `p[0..<count]` (four independent chains), so the next
    /// chunk's lines are in flight from memory while the current chunk is reduced: a software
    /// prefetch without intrinsics. Measured ~10% faster from DRAM with AVX2 on the dev machine.
    @inline(__always)
    static func touch<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) {
        let raw = UnsafeRawPointer(p)
        let bytes = n * MemoryLayout<E>.stride
        var a: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0, d: UInt32 = 0
        var offset = 0
        while offset &+ 256 <= bytes {
            a &+= UInt32(raw.load(fromByteOffset: offset, as: UInt8.self))
            b &+= UInt32(raw.load(fromByteOffset: offset &+ 64, as: UInt8.self))
            c &+= UInt32(raw.load(fromByteOffset: offset &+ 128, as: UInt8.self))
            d &+= UInt32(raw.load(fromByteOffset: offset &+ 192, as: UInt8.self))
            offset &+= 256
        }
        keepAlive(Float(a &+ b &+ c &+ d))
    }

    /// Number of chunks a row of `length` logits is cut into.
    @inline(__always)
    static func chunkCount(length: Int) -> Int { (length + chunkLength - 1) / chunkLength }

    /// Statistics of a whole row on the calling thread (the sampler's reduction, collecting no
    /// survivors).
    static func rowStatistics<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) -> Result<RowStatistics, RowError> {
        RowPipeline.reduce(
            p, vocab: n, chunks: 0, chunkCount(length: n), collect: false, parameters: SamplingParameters(),
            scratch: nil, partials: nil
        ).finish(row: p, count: n)
    }
}

/// An opaque use of a value, so the loads that produced it are not optimized away.
@_optimize(none) @inline(never)
func keepAlive(_ value: Float) {}
