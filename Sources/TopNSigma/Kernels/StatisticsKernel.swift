import CShims

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
        /// A bound on the rounding error of `m2` (see ``m2ErrorBound(shiftedSquares:depth:)``).
        var m2Error: Double = 0
        /// A bound on the rounding error of `mean`.
        var meanError: Double = 0
        /// Each ``blockLength`` block's maximum (`+inf` where unknown).
        var blockMaxima = BlockMaxima(repeating: .infinity)
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
        /// Each block's maximum; `+inf` where unknown (the block is then always compacted).
        var blockMaxima = BlockMaxima(repeating: .infinity)
        /// The most Float additions a term went through before its lane reached double
        /// precision (``m2ErrorBound(shiftedSquares:depth:)``'s `m`): the loop's terms per lane,
        /// plus the adds that merge its accumulator sets, its blocks and its tail.
        var depth = ShiftedSums.singleSetDepth
        /// One set of 16 lanes over a whole chunk (``maskedSums``): 256 terms a lane.
        static let singleSetDepth = chunkLength / 16
        /// The block loops (``unmaskedSums`` in every build, ``bitmaskedSums``): at most 64 terms
        /// a lane within a chunk (four sets of 16 lanes for 4096 logits with AVX-512, one set a
        /// 1024-logit block otherwise, two sets 32 a block), then at most 2 adds merging the
        /// sets, 4 merging the blocks and 1 the tail's lanes (whose own at most 63 terms stay
        /// within that): 64 + 2 + 4 + 1.
        static let blockDepth = 64 + 2 + 4 + 1
        var isFinite: Bool {
            @inline(__always) get { s1.isFinite && s2.isFinite && !sawNaN }
        }
    }

    // MARK: - chunk loops

    /// One block's lane sums and lane maxima.
    struct BlockSums {
        var s1: Vector
        var s2: Vector
        var maximum: Vector
        /// The accumulator sets' own lane maxima before they were merged into ``maximum`` (`-inf`
        /// for sets the build does not use): each lane the largest of distinct logits of the
        /// block, top-k's group maxima (``TopKBound``).
        var groups: (Vector, Vector, Vector, Vector) = (
            Vector(repeating: -.infinity), Vector(repeating: -.infinity), Vector(repeating: -.infinity),
            Vector(repeating: -.infinity)
        )
    }

    /// Whether a statistics loop subtracts its shift (a type, so that each loop is specialized).
    protocol ShiftMode { static var isShifted: Bool { get } }
    enum Shifted: ShiftMode { static var isShifted: Bool { true } }
    enum Unshifted: ShiftMode { static var isShifted: Bool { false } }

    /// Logits per block: the unit of the survivor compaction. The statistics loop records each
    /// block's maximum, so a chunk's compaction pass reads only the blocks that can hold a
    /// survivor (usually one of four).
    static let blockLength = 1024
    /// Blocks per chunk.
    static let blocksPerChunk = chunkLength / blockLength
    typealias BlockMaxima = SIMD4<Float>

    /// Sums of `x - shift` and `(x - shift)²` (``Shifted``) or of `x` and `x²` (``Unshifted``),
    /// the maximum and each block's maximum, assuming every logit is finite. A non-finite logit
    /// or an overflowing square shows up as non-finite sums.
    ///
    /// Unshifted, three vector operations per 16 logits: `vmaxps`, an add and a fused
    /// multiply-add (a multiply and an add without FMA); shifted, a subtract more. The number of independent accumulator sets follows the
    /// build, so that no sum waits on the latency of its own previous add and nothing spills:
    /// four with AVX-512 (one register per `SIMD16`), two with AVX (two registers each), one on
    /// SSE (already four registers each).
    ///
    /// With `groups`, each block's group maxima go to `groups[64·b ..< 64·b + 64]` (the accumulator
    /// sets' lane maxima; ``TopKBound/groupsPerChunk`` floats for a chunk), the logits after the
    /// last whole block into the next block's entries, and `-inf` past them.
    @inline(__always)
    static func unmaskedSums<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, count n: Int, _ mode: S.Type, shift: Float,
        groups: UnsafeMutableRawPointer? = nil
    ) -> ShiftedSums {
        let k = Vector(repeating: shift)
        var s1 = Vector(), s2 = Vector()
        var m = Vector(repeating: -.infinity)
        var blocks = BlockMaxima(repeating: .infinity)
        var i = 0
        var block = 0
        if BuildTarget.hasAVX512 {
            // Every whole block in one call: the per-block call's spills and `vzeroupper` cost
            // about a fifth of a block's loop from cache.
            let whole = min(n / blockLength, blocksPerChunk)
            if whole > 0 {
                let sums = sums4Blocks(p, blocks: whole, S.self, k, groups: groups)
                s1 += sums.s1
                s2 += sums.s2
                m.replace(with: sums.maximum, where: sums.maximum .> m)
                blocks = sums.blockMaxima
                i = whole &* blockLength
                block = whole
            }
        }
        while !BuildTarget.hasAVX512 && i &+ blockLength <= n && block < blocksPerChunk {
            let sums =
                BuildTarget.hasWideVectors
                ? sums2(p, from: i, to: i &+ blockLength, S.self, k)
                : sums1(p, from: i, to: i &+ blockLength, S.self, k)
            s1 += sums.s1
            s2 += sums.s2
            let blockMaximum = sums.maximum
            m.replace(with: blockMaximum, where: blockMaximum .> m)
            blocks[block] = horizontalMaximum(blockMaximum)
            if let groups {
                storeGroups(groups, block: block, sums.groups.0, sums.groups.1, sums.groups.2, sums.groups.3)
            }
            i &+= blockLength
            block &+= 1
        }
        let vectorEnd = i &+ (n &- i) / 16 &* 16
        var tailGroups = Vector(repeating: -.infinity)
        if i < vectorEnd {
            let tail = sums1(p, from: i, to: vectorEnd, S.self, k)
            s1 += tail.s1
            s2 += tail.s2
            m.replace(with: tail.maximum, where: tail.maximum .> m)
            tailGroups = tail.maximum
            i = vectorEnd
        }
        var sum1 = laneSum(s1), sum2 = laneSum(s2)
        var maximum = horizontalMaximum(m)
        let scalarShift = S.isShifted ? shift : 0
        while i < n {
            let x = E.float(p, i)
            if x > maximum { maximum = x }
            if groups != nil && x > tailGroups[i & 15] { tailGroups[i & 15] = x }
            let d = x - scalarShift
            sum1 += Double(d)
            sum2 += Double(d * d)
            i &+= 1
        }
        if let groups { storeTailGroups(groups, block: block, tailGroups) }
        return ShiftedSums(
            s1: sum1, s2: sum2, maximum: maximum, count: n, sawNaN: false, blockMaxima: blocks,
            depth: ShiftedSums.blockDepth)
    }

    /// Stores block `block`'s four group-maxima vectors (``TopKBound``) at
    /// `groups[64·block ..< 64·block + 64]`.
    @inline(__always)
    static func storeGroups(
        _ groups: UnsafeMutableRawPointer, block: Int, _ a: Vector, _ b: Vector, _ c: Vector, _ d: Vector
    ) {
        let g = groups + block &* 256
        g.storeBytes(of: a, toByteOffset: 0, as: Vector.self)
        g.storeBytes(of: b, toByteOffset: 64, as: Vector.self)
        g.storeBytes(of: c, toByteOffset: 128, as: Vector.self)
        g.storeBytes(of: d, toByteOffset: 192, as: Vector.self)
    }

    /// How far ahead of its reads a statistics loop prefetches, in bytes. The hardware
    /// prefetchers alone left the loops of three or four vector operations per 16 logits 1.2–1.4
    /// times slower than a plain read of a block coming from L3 or DRAM (Zen 5; the read floor has
    /// one); 8 KB ahead brought a standalone copy of ``sums4Blocks`` to 0.99× (warm) and 1.04–1.07×
    /// (DRAM) of that read, where 1 KB and 4 KB did less.
    static let prefetchDistance = 8192

    /// Prefetches into L1 the lines of the `count` logits that lie ``prefetchDistance`` bytes
    /// past `p[i]`. Past the row's end it touches the next row, or nothing: a prefetch never
    /// faults.
    @inline(__always)
    static func prefetchAhead<E: LogitElement>(_ p: UnsafePointer<E>, _ i: Int, count: Int) {
        let base = UnsafeRawPointer(p + i) + prefetchDistance
        var offset = 0
        while offset < count &* MemoryLayout<E>.stride {
            topnsigma_prefetch_l1(base + offset)
            offset &+= 64
        }
    }

    /// Stores the group vector of the logits after a chunk's last whole block (the first entries
    /// of block `block`) and `-inf` to the chunk's end; nothing when every block was whole.
    static func storeTailGroups(_ groups: UnsafeMutableRawPointer, block: Int, _ tail: Vector) {
        guard block < blocksPerChunk else { return }
        groups.storeBytes(of: tail, toByteOffset: block &* 256, as: Vector.self)
        clearGroups(groups, from: block &* 256 &+ 64)
    }

    /// Writes `-inf` to a chunk's group maxima from byte `offset` to their end
    /// (``TopKBound/groupsPerChunk`` floats).
    static func clearGroups(_ groups: UnsafeMutableRawPointer, from offset: Int) {
        var at = offset
        while at < blocksPerChunk &* 256 {
            groups.storeBytes(of: Vector(repeating: -.infinity), toByteOffset: at, as: Vector.self)
            at &+= 64
        }
    }

    /// The sum of `v`'s lanes in double precision: each lane widened (`vcvtps2pd`), then
    /// halved. The standard library's `sum()` walks the lanes one by one.
    @inline(__always)
    static func laneSum(_ v: Vector) -> Double {
        var low = SIMD8<Double>(), high = SIMD8<Double>()
        for lane in 0..<8 {
            low[lane] = Double(v[lane])
            high[lane] = Double(v[lane &+ 8])
        }
        let eight = low + high
        let four = eight.lowHalf + eight.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }

    /// The lane-wise maximum of four accumulator sets' maxima, as the loops fold them: pairs
    /// first, each select `x > y ? x : y` (`maxps`).
    @inline(__always)
    static func maximum(_ a: Vector, _ b: Vector, _ c: Vector, _ d: Vector) -> Vector {
        let ab = b.replacing(with: a, where: a .> b)
        let cd = d.replacing(with: c, where: c .> d)
        return cd.replacing(with: ab, where: ab .> cd)
    }

    /// The largest lane of `v` (NaN-free input), by halving: four `vmaxps`. The standard
    /// library's `max()` walks the lanes through memory with NaN checks, about ten times slower.
    @inline(__always)
    static func horizontalMaximum(_ v: Vector) -> Float {
        // Swap halves and keep the larger, at full width each time: one `vmaxps` per step.
        var a = v
        let swapped = Vector(lowHalf: v.highHalf, highHalf: v.lowHalf)
        a.replace(with: swapped, where: swapped .> a)
        var b = a.lowHalf
        let swapped8 = SIMD8<Float>(lowHalf: b.highHalf, highHalf: b.lowHalf)
        b.replace(with: swapped8, where: swapped8 .> b)
        var c = b.lowHalf
        let swapped4 = SIMD4<Float>(c[2], c[3], c[0], c[1])
        c.replace(with: swapped4, where: swapped4 .> c)
        return c[0] > c[1] ? c[0] : c[1]
    }

    /// One accumulator set over `p[from..<to]` (`to - from` a multiple of 16): the lanes' sums
    /// and maxima.
    ///
    /// The running maxima here and in ``sums2`` and ``sums4Blocks`` are written
    /// `m = a.replacing(with: m, where: m .> a)`, which is exactly `maxps m, a` (`m > a ? m : a`),
    /// so SSE builds update `m` in place without a copy (a NaN in `a` then propagates into `m`,
    /// harmless: it also makes the sums NaN, and the chunk is reduced again by the masked loop).
    @inline(__always)
    static func sums1<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, _ mode: S.Type, _ k: Vector
    ) -> BlockSums {
        let shifted = S.isShifted
        var s1 = Vector(), s2 = Vector()
        var m = Vector(repeating: -.infinity)
        var i = from
        while i < end {
            let a = E.load16(p, i)
            m = a.replacing(with: m, where: m .> a)
            let d = shifted ? a - k : a
            s1 += d
            s2 = BuildTarget.multiplyAdd(d, d, s2)
            i &+= 16
        }
        var sums = BlockSums(s1: s1, s2: s2, maximum: m)
        sums.groups.0 = m
        return sums
    }

    /// Two accumulator sets over `p[from..<to]` (`to - from` a multiple of 32).
    @inline(__always)
    static func sums2<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, _ mode: S.Type, _ k: Vector
    ) -> BlockSums {
        let shifted = S.isShifted
        var s1 = Vector(), s2 = Vector()
        var ma = Vector(repeating: -.infinity), mb = ma
        var t1 = Vector(), t2 = Vector()
        var i = from
        while i < end {
            prefetchAhead(p, i, count: 32)
            let (a, b) = E.load32Unordered(p, i)
            ma = a.replacing(with: ma, where: ma .> a)
            mb = b.replacing(with: mb, where: mb .> b)
            let da = shifted ? a - k : a
            let db = shifted ? b - k : b
            s1 += da
            t1 += db
            s2 = BuildTarget.multiplyAdd(da, da, s2)
            t2 = BuildTarget.multiplyAdd(db, db, t2)
            i &+= 32
        }
        s1 += t1
        s2 += t2
        var sums = BlockSums(s1: s1, s2: s2, maximum: mb.replacing(with: ma, where: ma .> mb))
        sums.groups.0 = ma
        sums.groups.1 = mb
        return sums
    }

    /// Four accumulator sets (AVX-512: one register each, so no sum waits on its own previous
    /// add) over the first `blocks` whole blocks of `p` (at most ``blocksPerChunk``), in one call:
    /// the sets run on from block to block (a lane adds at most `chunkLength / 16` terms), each
    /// block's maximum goes to `blockMaxima`, and with `groups` its group maxima (the sets' lane
    /// maxima) to `groups[64·b ..< 64·b + 64]`.
    @inline(__always)
    static func sums4Blocks<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, blocks: Int, _ mode: S.Type, _ k: Vector, groups: UnsafeMutableRawPointer?
    ) -> (s1: Vector, s2: Vector, maximum: Vector, blockMaxima: BlockMaxima) {
        let shifted = S.isShifted
        let negInf = Vector(repeating: -.infinity)
        var s1 = Vector(), t1 = Vector(), u1 = Vector(), v1 = Vector()
        var s2 = Vector(), t2 = Vector(), u2 = Vector(), v2 = Vector()
        var m = negInf
        var blockMaxima = BlockMaxima(repeating: .infinity)
        var i = 0
        for b in 0..<blocks {
            var ma = negInf, mb = negInf, mc = negInf, md = negInf
            let end = i &+ blockLength
            while i < end {
                prefetchAhead(p, i, count: 64)
                let (a, b) = E.load32Unordered(p, i)
                let (c, d) = E.load32Unordered(p, i &+ 32)
                ma = a.replacing(with: ma, where: ma .> a)
                mb = b.replacing(with: mb, where: mb .> b)
                mc = c.replacing(with: mc, where: mc .> c)
                md = d.replacing(with: md, where: md .> d)
                let da = shifted ? a - k : a, db = shifted ? b - k : b
                let dc = shifted ? c - k : c, dd = shifted ? d - k : d
                s1 += da
                t1 += db
                u1 += dc
                v1 += dd
                s2 = BuildTarget.multiplyAdd(da, da, s2)
                t2 = BuildTarget.multiplyAdd(db, db, t2)
                u2 = BuildTarget.multiplyAdd(dc, dc, u2)
                v2 = BuildTarget.multiplyAdd(dd, dd, v2)
                i &+= 64
            }
            if let groups { storeGroups(groups, block: b, ma, mb, mc, md) }
            ma = maximum(ma, mb, mc, md)
            m = ma.replacing(with: m, where: m .> ma)
            blockMaxima[b] = horizontalMaximum(ma)
        }
        return ((s1 + t1) + (u1 + v1), (s2 + t2) + (u2 + v2), m, blockMaxima)
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
            prefetchAhead(p, i, count: 16)
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
        var maximum = horizontalMaximum(m)
        for lane in 0..<16 {
            sum1 += Double(s1[lane])
            sum2 += Double(s2[lane])
        }
        var count = Int(counts.wrappedSum())
        var sawNaN = anyLane(nan)
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

    // MARK: - allowed-token bitmask

    /// Whether any lane of `m` is set. The standard library's `any(_:)` reduces through
    /// `SIMD.min()`, which is sometimes left out of line (a call, with the mask spilled, per
    /// vector of a hot loop: it cost the plain pass about 9% once); this OR-reduction by halves
    /// always inlines.
    @inline(__always)
    static func anyLane(_ m: SIMDMask<SIMD16<Int32>>) -> Bool {
        let v = unsafeBitCast(m, to: SIMD16<Int32>.self)
        let eight = v.lowHalf | v.highHalf
        let four = eight.lowHalf | eight.highHalf
        let two = four.lowHalf | four.highHalf
        return two[0] | two[1] != 0
    }

    /// Logits `p[i..<i+32]` as two vectors, the tokens `mask` disallows as `-inf` (`mask`'s first
    /// bit is `p[0]`'s; `i` a multiple of 32).
    @inline(__always)
    static func load32<E: LogitElement>(
        _ p: UnsafePointer<E>, _ i: Int, mask: UnsafePointer<UInt32>?
    ) -> (
        Vector, Vector
    ) {
        load32Allowed(p, i, mask: mask) ?? (Vector(repeating: -.infinity), Vector(repeating: -.infinity))
    }

    /// ``load32(_:_:mask:)``, or nil when `mask` allows none of the 32 logits (the caller skips
    /// them: an exp pass has nothing to add there).
    @inline(__always)
    static func load32Allowed<E: LogitElement>(
        _ p: UnsafePointer<E>, _ i: Int, mask: UnsafePointer<UInt32>?
    ) -> (Vector, Vector)? {
        var a = E.load16(p, i), b = E.load16(p, i &+ 16)
        if let mask {
            let w = mask[i &>> 5]
            if w == 0 { return nil }
            if w != ~0 {
                let negInf = Vector(repeating: -.infinity)
                a = a.replacing(with: negInf, where: .!laneMask(UInt64(w)))
                b = b.replacing(with: negInf, where: .!laneMask(UInt64(w &>> 16)))
            }
        }
        return (a, b)
    }

    /// The sum of the lanes of `v` (counts: no overflow), by halves.
    @inline(__always)
    static func laneTotal(_ v: SIMD16<Int32>) -> Int {
        let eight = v.lowHalf &+ v.highHalf
        let four = eight.lowHalf &+ eight.highHalf
        let two = four.lowHalf &+ four.highHalf
        return Int(two[0] &+ two[1])
    }

    /// Bit `j` of the result is set iff lane `j` of `m` is (the inverse of ``laneMask(_:)``).
    @inline(__always)
    static func laneBits(_ m: SIMDMask<SIMD16<Int32>>) -> UInt32 {
        // The lanes' bits are disjoint: an OR by halves (the standard library's reductions are
        // left out of line).
        let v = unsafeBitCast(m, to: SIMD16<Int32>.self) & laneWeights
        let eight = v.lowHalf | v.highHalf
        let four = eight.lowHalf | eight.highHalf
        let two = four.lowHalf | four.highHalf
        return UInt32(truncatingIfNeeded: two[0] | two[1])
    }

    /// Lane `j` of the result is set iff bit `j` of `bits` is: the 16 tokens of one vector.
    @inline(__always)
    static func laneMask(_ bits: UInt64) -> SIMDMask<SIMD16<Int32>> {
        (SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: bits)) & laneWeights) .!= SIMD16<Int32>()
    }

    /// Lane `j` holds `1 << j`: the bit of each lane in ``laneMask(_:)`` and ``laneBits(_:)``.
    @inline(__always)
    static var laneWeights: SIMD16<Int32> {
        SIMD16<Int32>(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    }

    /// Words `i / 32` and `i / 32 + 1` of `mask` as one 64-bit word (token `i + j` is bit `j`);
    /// `i` a multiple of 64.
    @inline(__always)
    static func maskWord64(_ mask: UnsafePointer<UInt32>, _ i: Int) -> UInt64 {
        UInt64(mask[i &>> 5]) | UInt64(mask[(i &>> 5) &+ 1]) &<< 32
    }

    /// Whether token `i` is allowed by `mask`.
    @inline(__always)
    static func allowed(_ mask: UnsafePointer<UInt32>, _ i: Int) -> Bool {
        mask[i &>> 5] &>> UInt32(i & 31) & 1 != 0
    }

    /// As ``unmaskedSums``, over the tokens `mask` allows (`mask` covers `p[0..<n]` from its first
    /// bit). Whole 64-token groups are taken at once: all allowed runs the unmasked arithmetic,
    /// and any other group pays for lane masks (AVX-512: one `kmov` each). Two accumulator sets.
    /// Every allowed logit is assumed finite: an allowed `-inf`, NaN or `+inf` shows up as
    /// non-finite sums.
    @inline(__always)
    static func bitmaskedSums<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>, _ mode: S.Type, shift: Float
    ) -> ShiftedSums {
        let k = Vector(repeating: shift)
        var s1 = Vector(), s2 = Vector()
        var m = Vector(repeating: -.infinity)
        var blocks = BlockMaxima(repeating: .infinity)
        var count = 0
        var i = 0
        var block = 0
        while i &+ blockLength <= n && block < blocksPerChunk {
            let sums = bitmaskedGroups(p, from: i, to: i &+ blockLength, mask: mask, S.self, k, count: &count)
            s1 += sums.s1
            s2 += sums.s2
            m.replace(with: sums.maximum, where: sums.maximum .> m)
            blocks[block] = horizontalMaximum(sums.maximum)
            i &+= blockLength
            block &+= 1
        }
        // The last chunk's whole 64-token groups past its blocks (256 logits for V = 128256).
        let groupEnd = i &+ (n &- i) / 64 &* 64
        if i < groupEnd {
            let tail = bitmaskedGroups(p, from: i, to: groupEnd, mask: mask, S.self, k, count: &count)
            s1 += tail.s1
            s2 += tail.s2
            m.replace(with: tail.maximum, where: tail.maximum .> m)
            i = groupEnd
        }
        var sum1 = laneSum(s1), sum2 = laneSum(s2)
        var maximum = horizontalMaximum(m)
        var sawNaN = false
        let scalarShift = S.isShifted ? shift : 0
        while i < n {
            if allowed(mask, i) {
                let x = E.float(p, i)
                if x.isNaN { sawNaN = true }
                if x > maximum { maximum = x }
                let d = x - scalarShift
                sum1 += Double(d)
                sum2 += Double(d * d)
                count &+= 1
            }
            i &+= 1
        }
        return ShiftedSums(
            s1: sum1, s2: sum2, maximum: maximum, count: count, sawNaN: sawNaN, blockMaxima: blocks,
            depth: ShiftedSums.blockDepth)
    }

    /// Whole 64-token groups of ``bitmaskedSums`` (`to - from` a multiple of 64) with the loop
    /// this build's registers suit: two accumulator sets with AVX, one on SSE.
    @inline(__always)
    static func bitmaskedGroups<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, mask: UnsafePointer<UInt32>, _ mode: S.Type, _ k: Vector,
        count: inout Int
    ) -> BlockSums {
        BuildTarget.hasWideVectors
            ? bitmaskedBlock(p, from: from, to: end, mask: mask, S.self, k, count: &count)
            : bitmaskedBlock1(p, from: from, to: end, mask: mask, S.self, k, count: &count)
    }

    /// One block of ``bitmaskedSums`` (`to - from` a multiple of 64): lane sums and maxima of
    /// the allowed logits, their count added to `count`. Two accumulator sets.
    @inline(__always)
    static func bitmaskedBlock<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, mask: UnsafePointer<UInt32>, _ mode: S.Type, _ k: Vector,
        count: inout Int
    ) -> BlockSums {
        let shifted = S.isShifted
        let negInf = Vector(repeating: -.infinity)
        let neutral = shifted ? k : Vector()
        var s1 = Vector(), s2 = Vector(), t1 = Vector(), t2 = Vector()
        var ma = negInf, mb = negInf
        var touched = negInf
        var i = from
        while i < end {
            prefetchAhead(p, i, count: 64)
            let w = maskWord64(mask, i)
            if w == 0 {
                // Masked groups are still read (folded into a maximum nobody uses): skipping
                // their lines breaks the hardware prefetcher's stream, which cost more (about
                // 1.3× the whole pass from DRAM) than the arithmetic this saves.
                let (a, b) = E.load32Unordered(p, i), (c, d) = E.load32Unordered(p, i &+ 32)
                touched = a.replacing(with: touched, where: touched .> a)
                touched = b.replacing(with: touched, where: touched .> b)
                touched = c.replacing(with: touched, where: touched .> c)
                touched = d.replacing(with: touched, where: touched .> d)
            } else {
                var a = E.load16(p, i), b = E.load16(p, i &+ 16)
                var c = E.load16(p, i &+ 32), d = E.load16(p, i &+ 48)
                if w == ~0 {
                    count &+= 64
                    ma = a.replacing(with: ma, where: ma .> a)
                    mb = b.replacing(with: mb, where: mb .> b)
                    ma = c.replacing(with: ma, where: ma .> c)
                    mb = d.replacing(with: mb, where: mb .> d)
                } else {
                    count &+= w.nonzeroBitCount
                    let la = laneMask(w), lb = laneMask(w &>> 16), lc = laneMask(w &>> 32), ld = laneMask(w &>> 48)
                    ma = ma.replacing(with: a, where: la .& (a .> ma))
                    mb = mb.replacing(with: b, where: lb .& (b .> mb))
                    ma = ma.replacing(with: c, where: lc .& (c .> ma))
                    mb = mb.replacing(with: d, where: ld .& (d .> mb))
                    a = neutral.replacing(with: a, where: la)
                    b = neutral.replacing(with: b, where: lb)
                    c = neutral.replacing(with: c, where: lc)
                    d = neutral.replacing(with: d, where: ld)
                }
                let da = shifted ? a - k : a, db = shifted ? b - k : b
                let dc = shifted ? c - k : c, dd = shifted ? d - k : d
                s1 += da
                t1 += db
                s2 = BuildTarget.multiplyAdd(da, da, s2)
                t2 = BuildTarget.multiplyAdd(db, db, t2)
                s1 += dc
                t1 += dd
                s2 = BuildTarget.multiplyAdd(dc, dc, s2)
                t2 = BuildTarget.multiplyAdd(dd, dd, t2)
            }
            i &+= 64
        }
        ma = mb.replacing(with: ma, where: ma .> mb)
        keepAlive(touched[0])
        return BlockSums(s1: s1 + t1, s2: s2 + t2, maximum: ma)
    }

    /// ``bitmaskedBlock(_:from:to:mask:_:_:count:)`` for SSE builds (`to - from` a multiple of
    /// 32): one accumulator set and one 16-token vector at a time, as ``sums1``. With a
    /// `SIMD16<Float>` four `xmm` registers, the two-set loop's seven vectors need 28 of the 16
    /// registers and spill on every step (measured at B=64, V=128256 with the bench's server-like
    /// requests: the processed pass at 2.7× the plain one with that loop, 1.65× with this one).
    /// A masked word is touched with one scalar load per cache line, for the prefetcher.
    @inline(__always)
    static func bitmaskedBlock1<E: LogitElement, S: ShiftMode>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, mask: UnsafePointer<UInt32>, _ mode: S.Type, _ k: Vector,
        count: inout Int
    ) -> BlockSums {
        let shifted = S.isShifted
        let neutral = shifted ? k : Vector()
        var s1 = Vector(), s2 = Vector()
        var m = Vector(repeating: -.infinity)
        var touched: Float = 0
        var i = from
        while i < end {
            let w = mask[i &>> 5]
            if w == 0 {
                touched += E.float(p, i) + E.float(p, i &+ 16)
            } else {
                count &+= w.nonzeroBitCount
                var half = 0
                while half < 32 {
                    let bits = w &>> UInt32(half) & 0xFFFF
                    if bits != 0 {
                        var a = E.load16(p, i &+ half)
                        if bits == 0xFFFF {
                            m = a.replacing(with: m, where: m .> a)
                        } else {
                            let lanes = laneMask(UInt64(bits))
                            m = m.replacing(with: a, where: lanes .& (a .> m))
                            a = neutral.replacing(with: a, where: lanes)
                        }
                        let d = shifted ? a - k : a
                        s1 += d
                        s2 = BuildTarget.multiplyAdd(d, d, s2)
                    } else {
                        touched += E.float(p, i &+ half)
                    }
                    half &+= 16
                }
            }
            i &+= 32
        }
        keepAlive(touched)
        return BlockSums(s1: s1, s2: s2, maximum: m)
    }

    /// The first index `i` with `p[i] == value` that `mask` allows (`p[0]` is bit 0 of `mask[0]`),
    /// or `n` when there is none.
    static func firstIndex<E: LogitElement>(
        of value: Float, in p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>
    ) -> Int {
        let v = Vector(repeating: value)
        var i = 0
        while i &+ 32 <= n {
            let w = mask[i &>> 5]
            if w != 0 {
                let a = E.load16(p, i), b = E.load16(p, i &+ 16)
                let hit = ((a .== v) .& laneMask(UInt64(w))) .| ((b .== v) .& laneMask(UInt64(w &>> 16)))
                if anyLane(hit) { break }
            }
            i &+= 32
        }
        while i < n && !(allowed(mask, i) && E.float(p, i) == value) { i &+= 1 }
        return i
    }

    /// The first NaN or `+inf` in `p[0..<n]` among the tokens `mask` allows (every token when
    /// nil), if any.
    static func firstInvalid<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>? = nil
    ) -> (index: Int, isNaN: Bool)? {
        for i in 0..<n where mask.map({ allowed($0, i) }) ?? true {
            let x = E.float(p, i)
            if x.isNaN { return (i, true) }
            if x == .infinity { return (i, false) }
        }
        return nil
    }

    /// Double-precision two-pass reduction of a chunk known to hold no NaN and no `+inf` (among
    /// the tokens `mask` allows, every token when nil): the path for logits whose squares leave
    /// `Float`'s range, and for a bitmasked chunk with an allowed `-inf`.
    static func doublePrecisionPartial<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>? = nil
    ) -> ChunkPartial {
        var count = 0, sum = 0.0, maximum = -Float.infinity
        for i in 0..<n where mask.map({ allowed($0, i) }) ?? true {
            let x = E.float(p, i)
            guard x > -.infinity else { continue }
            count += 1
            sum += Double(x)
            if x > maximum { maximum = x }
        }
        guard count > 0 else { return ChunkPartial() }
        let mean = sum / Double(count)
        var m2 = 0.0
        for i in 0..<n where mask.map({ allowed($0, i) }) ?? true {
            let x = E.float(p, i)
            guard x > -.infinity else { continue }
            let d = Double(x) - mean
            m2 += d * d
        }
        return ChunkPartial(
            count: count, mean: mean, m2: m2, maximum: maximum, m2Error: m2 * 0x1p-40,
            meanError: (abs(mean) + (m2 / Double(count)).squareRoot()) * 0x1p-40)
    }

    /// The mean and `M2` of a whole row's finite logits, two passes in double precision: the
    /// float64 definition itself, for rows where a logit lies so close to the threshold that the
    /// Float sums' error bound cannot decide it. The row is known to hold no NaN and no `+inf`.
    static func exactMoments<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) -> (mean: Double, m2: Double) {
        typealias Wide = SIMD8<Double>
        /// Lanes `0..<8` and `8..<16` of `v` widened to double (`vcvtps2pd`).
        @inline(__always)
        func widen(_ v: SIMD16<Float>) -> (low: Wide, high: Wide) {
            var low = Wide(), high = Wide()
            for lane in 0..<8 {
                low[lane] = Double(v[lane])
                high[lane] = Double(v[lane &+ 8])
            }
            return (low, high)
        }
        // The sum and count of the finite logits: `-inf` lanes are zeroed and counted out in
        // Float, before widening (a count kept in double lanes through 8-lane masks compiled to
        // mask shuffles). Each pass keeps four double accumulators, 32 logits a step (with two,
        // each step waited on the latency of the adds before it). A row decided here (one of the
        // 64 real SmolLM2 rows at n = 1, through the C ABI from a 64-byte-aligned copy) took
        // 28 µs at V=49152 on Zen 5 against 3-4 µs for the others, 19 µs after the first change
        // and 10 µs with four accumulators.
        let negInf = SIMD16<Float>(repeating: -.infinity)
        var s0 = Wide(), s1 = Wide(), s2 = Wide(), s3 = Wide(), counts = SIMD16<Int32>()
        var i = 0
        while i &+ 32 <= n {
            let v = E.load16(p, i), w = E.load16(p, i &+ 16)
            let validV = v .> negInf, validW = w .> negInf
            counts &-= unsafeBitCast(validV, to: SIMD16<Int32>.self) &+ unsafeBitCast(validW, to: SIMD16<Int32>.self)
            let (a, b) = widen(v.replacing(with: 0, where: .!validV))
            let (c, d) = widen(w.replacing(with: 0, where: .!validW))
            s0 += a
            s1 += b
            s2 += c
            s3 += d
            i &+= 32
        }
        var count = Int(counts.wrappedSum()), sum = ((s0 + s1) + (s2 + s3)).sum()
        for j in i..<n where E.float(p, j) > -.infinity {
            count += 1
            sum += Double(E.float(p, j))
        }
        guard count > 0 else { return (0, 0) }
        let mean = sum / Double(count)
        let center = Wide(repeating: mean), wideNegInf = Wide(repeating: -.infinity)
        var q0 = Wide(), q1 = Wide(), q2 = Wide(), q3 = Wide()
        i = 0
        while i &+ 32 <= n {
            let (a, b) = widen(E.load16(p, i)), (c, d) = widen(E.load16(p, i &+ 16))
            let da = (a - center).replacing(with: 0, where: a .== wideNegInf)
            let db = (b - center).replacing(with: 0, where: b .== wideNegInf)
            let dc = (c - center).replacing(with: 0, where: c .== wideNegInf)
            let dd = (d - center).replacing(with: 0, where: d .== wideNegInf)
            q0 += da * da
            q1 += db * db
            q2 += dc * dc
            q3 += dd * dd
            i &+= 32
        }
        var m2 = ((q0 + q1) + (q2 + q3)).sum()
        for j in i..<n where E.float(p, j) > -.infinity {
            let d = Double(E.float(p, j)) - mean
            m2 += d * d
        }
        return (mean, m2)
    }

    /// A bound on the error of a chunk's `M2 = S2 - S1²/n` from its Float lane sums, given
    /// `S2 = Σ(x - K)²`. Each term is rounded once in the subtraction and once in the square (or
    /// the FMA), then goes through at most `m` Float additions (`depth`:
    /// ``ShiftedSums/blockDepth`` for the block loops, ``ShiftedSums/singleSetDepth`` = 256 for
    /// one set over the chunk), so with the unit roundoff `u = 2⁻²⁴`: `|ΔS2| ≤ (m + 3)·u·S2`,
    /// `|ΔS1| ≤ (m + 2)·u·Σ|x - K| ≤ (m + 2)·u·√(n·S2)`, hence `|Δ(S1²/n)| ≤ 2(m + 2)·u·S2` and
    /// `|ΔM2| ≤ (3m + 7)·u·S2`. Doubled for the double-precision steps and the lane reduction.
    /// A bound, not an estimate: the pipeline relies on it to decide when a kept set could
    /// differ from the float64 definition's. (It took `m = 256` for every loop until the block
    /// loops' depth was counted: a band 3.6 times wider, and as many more rows recomputed.)
    @inline(__always)
    static func m2ErrorBound(shiftedSquares s2: Double, depth m: Int) -> Double {
        2 * Double(3 * m + 7) * 0x1p-24 * s2
    }

    /// A bound on the error of a chunk's mean `K + S1/n`: `|ΔS1|/n ≤ (m + 2)·u·√(S2/n)`, doubled.
    @inline(__always)
    static func meanErrorBound(shiftedSquares s2: Double, count n: Double, depth m: Int) -> Double {
        2 * Double(m + 2) * 0x1p-24 * (s2 / n).squareRoot() + 0x1p-50 * s2.squareRoot()
    }

    /// Reduces one chunk (at most ``chunkLength`` logits; any length and alignment works).
    ///
    /// The first attempt sums `x` and `x²` unshifted (three vector operations per 16 logits).
    /// Its `M2 = S2 - S1²/n` loses digits when the mean is far from 0 relative to the spread;
    /// when `S2 > 64·M2` (`|mean| > ~8σ`; real logits stay below 5σ) the chunk is reduced again
    /// around its mean. The error that remains is bounded (``m2ErrorBound(shiftedSquares:depth:)``)
    /// and the pipeline decides every logit near the threshold against that bound.
    ///
    /// With `mask`, only the tokens it allows take part (`mask`'s first bit is `p[0]`'s; `p`
    /// starts a word), through ``bitmaskedSums(_:count:mask:_:shift:)``; an allowed `-inf` sends
    /// such a chunk to the double-precision path.
    ///
    /// With `groups`, the chunk's group maxima are written there (``TopKBound``): by the
    /// statistics loop itself when there is no mask (its lanes: groups of 16 logits with AVX-512,
    /// of 32 or 64 in other builds), by a separate pass over the chunk in L1 (groups of 16)
    /// otherwise, and in other builds with `fineGroups`.
    static func chunkPartial<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>? = nil,
        groups: UnsafeMutablePointer<Float>? = nil, fineGroups: Bool = false
    ) -> ChunkPartial {
        // The statistics loop's own lanes are groups of 16 logits only with AVX-512 (four sets);
        // masked chunks, and other builds when asked (`fineGroups`: top-k with no other filter
        // to start its bound from), take the separate pass.
        let loopGroups = mask == nil && (BuildTarget.hasAVX512 || !fineGroups)
        if let groups, !loopGroups { TopKBound.groupMaxima(p, count: n, mask: mask, into: groups) }
        var shift: Float = 0
        var shifted = false
        var masked = false
        var sums =
            mask.map { bitmaskedSums(p, count: n, mask: $0, Unshifted.self, shift: 0) }
            ?? unmaskedSums(
                p, count: n, Unshifted.self, shift: 0,
                groups: loopGroups ? groups.map { UnsafeMutableRawPointer($0) } : nil)
        for attempt in 0..<3 {
            if !sums.isFinite && !masked && mask == nil {
                masked = true
                shifted = true
                for i in 0..<n where E.float(p, i).isFinite {
                    shift = E.float(p, i)
                    break
                }
                sums = maskedSums(p, count: n, shift: shift)
            }
            if !sums.isFinite {
                if let bad = firstInvalid(p, count: n, mask: mask) {
                    return ChunkPartial(invalidIndex: bad.index, invalidIsNaN: bad.isNaN)
                }
                return doublePrecisionPartial(p, count: n, mask: mask)
            }
            guard sums.count > 0 else { return ChunkPartial() }
            let count = Double(sums.count)
            // Deviations below ~1e-15 square to (near) zero in Float: reduce in double precision,
            // unless every deviation is exactly 0 (a constant chunk: all ≤ shift and summing to 0).
            if sums.s2 < count * 1e-30 && !(sums.s1 == 0 && sums.s2 == 0 && sums.maximum == shift) {
                return doublePrecisionPartial(p, count: n, mask: mask)
            }
            let meanOffset = sums.s1 / count
            let m2 = max(0, sums.s2 - sums.s1 * meanOffset)
            // Too much cancellation for the shift: reduce again around the mean.
            let limit = shifted ? 4.0 : 63.0
            if attempt < 2 && meanOffset * meanOffset * count > limit * m2 {
                let better = Float(Double(shift) + meanOffset)
                if better.isFinite && (better != shift || !shifted) {
                    shift = better
                    shifted = true
                    if let mask {
                        sums = bitmaskedSums(p, count: n, mask: mask, Shifted.self, shift: shift)
                    } else {
                        sums =
                            masked
                            ? maskedSums(p, count: n, shift: shift)
                            : unmaskedSums(p, count: n, Shifted.self, shift: shift)
                    }
                    continue
                }
            }
            return ChunkPartial(
                count: sums.count, mean: Double(shift) + meanOffset, m2: m2, maximum: sums.maximum,
                m2Error: m2ErrorBound(shiftedSquares: sums.s2, depth: sums.depth),
                meanError: meanErrorBound(shiftedSquares: sums.s2, count: count, depth: sums.depth),
                blockMaxima: sums.blockMaxima)
        }
        return doublePrecisionPartial(p, count: n, mask: mask)
    }

    /// One chunk's maximum with every logit counted finite and the moments left 0, for a row
    /// that needs neither (plain sampling: the chunk's exp pass needs its maximum, the draw the
    /// row's finite count). The loop of ``maximumRange(_:vocab:chunks:_:)``: a `vmaxps` and an add
    /// per 16 logits; nil when the sum is not finite (the caller then takes
    /// ``chunkPartial(_:count:mask:)``).
    static func maximumPartial<E: LogitElement>(_ p: UnsafePointer<E>, count n: Int) -> ChunkPartial? {
        maximumRange(p, vocab: n, chunks: 0, 1)?.partial
    }

    /// The maximum-only loop over `p[from..<to]` (`to - from` a multiple of 64), four accumulator
    /// sets: lane maxima into `ma…md` and lane sums (non-finite on a NaN or an infinity) into
    /// `sa…sd`. A `vmaxps` and an add per 16 logits.
    @inline(__always)
    static func maximumLoop4<E: LogitElement>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, _ ma: inout Vector, _ mb: inout Vector, _ mc: inout Vector,
        _ md: inout Vector, _ sa: inout Vector, _ sb: inout Vector, _ sc: inout Vector, _ sd: inout Vector
    ) {
        var i = from
        while i < end {
            prefetchAhead(p, i, count: 64)
            let (a, b) = E.load32Unordered(p, i)
            let (c, d) = E.load32Unordered(p, i &+ 32)
            ma = a.replacing(with: ma, where: ma .> a)
            mb = b.replacing(with: mb, where: mb .> b)
            mc = c.replacing(with: mc, where: mc .> c)
            md = d.replacing(with: md, where: md .> d)
            sa += a
            sb += b
            sc += c
            sd += d
            i &+= 64
        }
    }

    /// One chunk's maximum, its blocks' maxima and (with `groups`) its group maxima, with every
    /// logit counted finite, its mean from Float sums and `M2` left 0: for a sampled row whose
    /// filters need no moments (every sampled row without Top-nσ or processing that collects
    /// survivors; AVX-512 builds). The loop of
    /// ``maximumRange(_:vocab:chunks:_:)`` (a `vmaxps` and an add per 16 logits, four accumulator
    /// sets) with ``unmaskedSums(_:count:_:shift:groups:)``'s block and group layout. Nil when the
    /// sum is not finite (the caller then takes ``chunkPartial(_:count:mask:groups:)``).
    static func maximumBlocks<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, groups: UnsafeMutablePointer<Float>?
    ) -> ChunkPartial? {
        let negInf = Vector(repeating: -.infinity)
        let g = groups.map { UnsafeMutableRawPointer($0) }
        var sa = Vector(), sb = Vector(), sc = Vector(), sd = Vector()
        var m = negInf
        var blocks = BlockMaxima(repeating: .infinity)
        var i = 0, block = 0
        while i &+ blockLength <= n && block < blocksPerChunk {
            var ma = negInf, mb = negInf, mc = negInf, md = negInf
            let end = i &+ blockLength
            maximumLoop4(p, from: i, to: end, &ma, &mb, &mc, &md, &sa, &sb, &sc, &sd)
            i = end
            if let g { storeGroups(g, block: block, ma, mb, mc, md) }
            ma = maximum(ma, mb, mc, md)
            m = ma.replacing(with: m, where: m .> ma)
            blocks[block] = horizontalMaximum(ma)
            block &+= 1
        }
        var tail = negInf
        while i &+ 16 <= n {
            let a = E.load16(p, i)
            tail = a.replacing(with: tail, where: tail .> a)
            sa += a
            i &+= 16
        }
        var scalars = 0.0
        while i < n {
            let x = E.float(p, i)
            scalars += Double(x)
            if x > tail[i & 15] { tail[i & 15] = x }
            i &+= 1
        }
        let total = laneSum((sa + sb) + (sc + sd)) + scalars
        guard total.isFinite else { return nil }
        m = tail.replacing(with: m, where: m .> tail)
        if let g { storeTailGroups(g, block: block, tail) }
        // The mean from Float lane sums (top-k's bound starts its search there); no M2.
        return ChunkPartial(
            count: n, mean: n > 0 ? total / Double(n) : 0, maximum: horizontalMaximum(m), blockMaxima: blocks)
    }

    /// A greedy row's chunks `first..<end` (of a row of `vocab` logits) in one loop: the range's
    /// maximum and the first chunk that holds it, with every logit of the range counted finite
    /// and the moments left 0. A greedy row without request processing reads only the maximum,
    /// where it lies and whether the row has a finite logit (``RowPipeline/reduce``), never its
    /// mean or std.
    ///
    /// Two vector operations per 16 logits: a `vmaxps` and an add whose sum turns non-finite on a
    /// NaN or an infinity. A chunk ends with a few vector operations (its lane maxima against the
    /// range's, and the chunk index where a lane rose), not a horizontal reduction. Nil when the
    /// sum is not finite (a `-inf` masked logit, an error, or a sum that overflows): the caller
    /// then reduces the chunks one by one (``chunkPartial(_:count:mask:groups:)``), which sorts them out.
    static func maximumRange<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunks first: Int, _ end: Int
    ) -> (partial: ChunkPartial, chunk: Int)? {
        let negInf = Vector(repeating: -.infinity)
        var best = negInf
        var bestChunk = SIMD16<Int32>(repeating: .max)
        var sa = Vector(), sb = Vector(), sc = Vector(), sd = Vector()
        var tailMaximum = -Float.infinity, tailChunk = Int.max, tailSum = 0.0
        for c in first..<end {
            let q = p + c &* chunkLength
            let n = min(chunkLength, vocab &- c &* chunkLength)
            var ma = negInf, mb = negInf, mc = negInf, md = negInf
            var i = 0
            if BuildTarget.hasAVX512 {
                let end = n & ~63
                maximumLoop4(q, from: 0, to: end, &ma, &mb, &mc, &md, &sa, &sb, &sc, &sd)
                i = end
            } else if BuildTarget.hasWideVectors {
                while i &+ 32 <= n {
                    let (a, b) = E.load32Unordered(q, i)
                    ma = a.replacing(with: ma, where: ma .> a)
                    mb = b.replacing(with: mb, where: mb .> b)
                    sa += a
                    sb += b
                    i &+= 32
                }
            }
            while i &+ 16 <= n {
                let a = E.load16(q, i)
                ma = a.replacing(with: ma, where: ma .> a)
                sa += a
                i &+= 16
            }
            ma = maximum(ma, mb, mc, md)
            // A lane that rises keeps this chunk's index: the earliest chunk at its maximum.
            let rose = ma .> best
            best.replace(with: ma, where: rose)
            bestChunk.replace(with: SIMD16<Int32>(repeating: Int32(truncatingIfNeeded: c)), where: rose)
            // The row's last few logits (only the last chunk can end off a vector).
            while i < n {
                let x = E.float(q, i)
                tailSum += Double(x)
                if x > tailMaximum {
                    tailMaximum = x
                    tailChunk = c
                }
                i &+= 1
            }
        }
        guard (laneSum((sa + sb) + (sc + sd)) + tailSum).isFinite else { return nil }
        let maximum = max(horizontalMaximum(best), tailMaximum)
        var chunk = tailMaximum == maximum ? tailChunk : Int.max
        for lane in 0..<16 where best[lane] == maximum { chunk = min(chunk, Int(bestChunk[lane])) }
        let count = min(vocab, end &* chunkLength) &- first &* chunkLength
        return (ChunkPartial(count: count, maximum: maximum), chunk)
    }

    // MARK: - row fold

    /// Running fold of chunk partials into row statistics (Chan et al.'s parallel variance merge).
    struct RowAccumulator: Sendable {
        var count = 0
        var mean = 0.0
        var m2 = 0.0
        var maximum = -Float.infinity
        var maximumChunk = -1
        /// A bound on the error of `m2`: the chunks' ``ChunkPartial/m2Error`` and what the errors
        /// of their means add in each merge.
        var m2Error = 0.0
        /// A bound on the error of `mean`.
        var meanError = 0.0
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
            m2Error += part.m2Error
            if count == 0 {
                count = part.count
                mean = part.mean
                m2 = part.m2
                meanError = part.meanError
                return
            }
            let na = Double(count), nb = Double(part.count)
            let n = na + nb
            let delta = part.mean - mean
            let deltaError = meanError + part.meanError
            let weight = na * nb / n
            mean += delta * (nb / n)
            m2 += part.m2 + delta * delta * weight
            // (δ ± e)² w differs from δ² w by at most (2|δ|e + e²) w; plus the double roundings.
            m2Error += (2 * abs(delta) * deltaError + deltaError * deltaError) * weight + 0x1p-50 * m2
            meanError = (na * meanError + nb * part.meanError) / n + 0x1p-52 * abs(mean)
            count += part.count
        }

        /// The row's statistics; `row` is needed to locate the argmax inside its chunk.
        func finish<E: LogitElement>(
            row p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>? = nil
        ) -> Result<RowStatistics, RowError> {
            if let error { return .failure(error) }
            guard count > 0 else {
                return .success(
                    RowStatistics(maximum: -.infinity, argmax: -1, finiteCount: 0, mean: 0, sumOfSquaredDeviations: 0))
            }
            let start = maximumChunk * chunkLength
            let end = min(n, start + chunkLength)
            let argmax =
                (mask.map {
                    StatisticsKernel.firstIndex(of: maximum, in: p + start, count: end - start, mask: $0 + start / 32)
                }
                    ?? StatisticsKernel.firstIndex(of: maximum, in: p + start, count: end - start)) + start
            return .success(
                RowStatistics(
                    maximum: maximum, argmax: argmax, finiteCount: count, mean: mean, sumOfSquaredDeviations: m2))
        }
    }

    /// The first index `i` with `p[i] == value` (SIMD scan), or `n` when there is none.
    static func firstIndex<E: LogitElement>(of value: Float, in p: UnsafePointer<E>, count n: Int) -> Int {
        let v = Vector(repeating: value)
        var i = 0
        while i &+ 16 <= n {
            let a = E.load16(p, i)
            if anyLane(a .== v) { break }
            i &+= 16
        }
        while i < n && E.float(p, i) != value { i &+= 1 }
        return i
    }

    /// Number of chunks a row of `length` logits is cut into.
    @inline(__always)
    static func chunkCount(length: Int) -> Int { (length + chunkLength - 1) / chunkLength }
}

/// An opaque use of a value, so the loads that produced it are not optimized away.
@_optimize(none) @inline(never)
func keepAlive(_ value: Float) {}
