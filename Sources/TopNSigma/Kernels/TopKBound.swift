import CShims

/// Top-k as a threshold: the `k`-th largest logit of the row, found without sorting.
///
/// During the pass the statistics loop leaves each chunk's *group maxima* at no extra cost: the
/// lane maxima of its accumulator sets, 64 per 1024-logit block, each the largest of distinct
/// logits (``StatisticsKernel/chunkPartial(_:count:mask:groups:)``). The pass collects nothing.
/// When the row settles, a value that at least `k` group maxima reach is a *bound*: at least `k`
/// logits reach it (each of those groups holds one), so the row's top `k` all lie at or above it
/// (``groupBound(groups:count:keep:maximum:floor:)``, a few vector counts over `V/16` floats).
/// The blocks whose groups reach it are compacted from cache (``compactGroups``). For a larger
/// `k` on float rows the groups are 16 consecutive logits instead, each one vector to compact
/// (``RowPipeline/usesVectorMaxima(_:keep:_:_:sampling:)``, ``maximumVectors(_:count:into:)``,
/// ``compactVectors(_:vocab:chunk:threshold:groups:into:)``). The `k`-th
/// largest of those survivors is the row's, and the kept set is `{x ≥ k-th}`: a threshold cut in
/// id order, exactly the float64 definition's (ties at the `k`-th value go to the lower ids).
package enum TopKBound {
    typealias Vector = SIMD16<Float>

    /// Group maxima per chunk: one per 16 logits (64 a 1024-logit block, four quarters of 16).
    package static let groupsPerChunk = StatisticsKernel.chunkLength / 16

    /// Writes the group maxima of one chunk (`p[0..<n]`, `n <= chunkLength`) through `mask` to
    /// `g[0..<groupsPerChunk]`, in the layout the AVX-512 statistics loop leaves for rows without a
    /// mask (its four accumulator sets' lanes): for a whole 1024-logit block `b`, `g[64b + 16q + j]`
    /// is the largest allowed logit among `p[1024b + 64r + 16q + j]` over `r`; a partial last
    /// block's 16 groups are its first entries (lane `j`: its logits `i` with `i % 16 == j`), and
    /// `-inf` fills the rest, as for a group without an allowed logit. One `vmaxps` per 16
    /// logits, on a chunk in L1.
    package static func groupMaxima<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, into g: UnsafeMutablePointer<Float>
    ) {
        let negInf = Vector(repeating: -.infinity)
        let raw = UnsafeMutableRawPointer(g)
        let blockLength = StatisticsKernel.blockLength
        var i = 0, block = 0
        while i &+ blockLength <= n && block < StatisticsKernel.blocksPerChunk {
            var ma = negInf, mb = negInf, mc = negInf, md = negInf
            let end = i &+ blockLength
            while i < end {
                let (a, b) = StatisticsKernel.load32(p, i, mask: mask)
                let (c, d) = StatisticsKernel.load32(p, i &+ 32, mask: mask)
                ma = a.replacing(with: ma, where: ma .> a)
                mb = b.replacing(with: mb, where: mb .> b)
                mc = c.replacing(with: mc, where: mc .> c)
                md = d.replacing(with: md, where: md .> d)
                i &+= 64
            }
            StatisticsKernel.storeGroups(raw, block: block, ma, mb, mc, md)
            block &+= 1
        }
        var tail = negInf
        while i &+ 32 <= n {
            let (a, b) = StatisticsKernel.load32(p, i, mask: mask)
            tail = a.replacing(with: tail, where: tail .> a)
            tail = b.replacing(with: tail, where: tail .> b)
            i &+= 32
        }
        // The last few logits of the row, each into its lane.
        while i < n {
            if mask.map({ StatisticsKernel.allowed($0, i) }) ?? true {
                let x = E.float(p, i), lane = i & 15
                if x > tail[lane] { tail[lane] = x }
            }
            i &+= 1
        }
        if block < StatisticsKernel.blocksPerChunk {
            StatisticsKernel.storeTailGroups(raw, block: block, tail)
        }
    }

    /// A bound for the row's top `keep` from its `n` group maxima `groups` (the row's
    /// maximum `maximum`, and a value `floor` below most of its logits, such as its mean): a value
    /// that at least `keep` groups reach, so at least `keep` logits; found by bisection over
    /// `[floor, maximum]` with vector counts of the groups in place, stopping once at most
    /// `keep + keep/8 + 16` groups reach it. `-inf` when fewer than `keep` groups reach `floor`.
    ///
    /// `floor` may be another filter's cut (Top-nσ, min-p): when few groups reach it, it is
    /// returned as it is (the caller collects at it anyway), after one count.
    static func groupBound(
        groups: UnsafePointer<Float>, count n: Int, keep: Int, maximum: Float, floor: Float
    ) -> Float {
        // The maximum itself: its own group reaches it.
        if keep == 1 { return maximum }
        guard floor.isFinite, maximum.isFinite, floor < maximum else { return -.infinity }
        var low = floor, high = maximum
        let reached = countAtLeast(groups, count: n, low)
        // Within an eighth of `keep` (and 16): each group more reaching the bound costs a vector
        // of its block's quarter to compact, a bisection step costs a count of the groups.
        let enough = keep + keep / 8 + 16
        if reached <= enough { return reached >= keep ? low : -.infinity }
        for _ in 0..<24 {
            let middle = low + (high - low) * 0.5
            guard middle > low && middle < high else { break }
            let c = countAtLeast(groups, count: n, middle)
            if c >= keep {
                low = middle
                if c <= enough { break }
            } else {
                high = middle
            }
        }
        return low
    }

    /// Compacts the allowed logits at or above `threshold` of chunk `chunk` of the row at `p`
    /// into `out`, in id order, visiting only the 1024-logit blocks some of whose group maxima
    /// (`groups`, 64 a block) reach it; returns the count.
    ///
    /// Float rows in AVX-512 builds, whose groups are the statistics loop's lanes (or
    /// ``groupMaxima(_:count:mask:into:)``'s, in the same layout), take `topnsigma_compact_groups`
    /// (CShims): only the quarters of a block whose groups reach the threshold are read, through
    /// those lanes only, and each vector read is compressed and stored without a branch on its
    /// hits. (For top-k 1000 about a seventh of the row's groups reach the bound, so nearly every
    /// quarter is read and a third of the vectors read hold a hit: a branch per vector
    /// mispredicted that often, each time after a load from L2, and cost three times the
    /// branch-free loop.)
    package static func compactGroups<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunk: Int, threshold: Float, groups: UnsafePointer<Float>,
        mask: UnsafePointer<UInt32>?, into out: UnsafeMutablePointer<Candidate>
    ) -> Int {
        let blockLength = StatisticsKernel.blockLength
        let start = chunk &* StatisticsKernel.chunkLength
        let n = min(StatisticsKernel.chunkLength, vocab &- start)
        if BuildTarget.hasAVX512 && E.self == Float.self {
            return topnsigma_compact_groups(
                UnsafeRawPointer(p + start).assumingMemoryBound(to: Float.self), n, threshold, groups,
                mask.map { $0 + start / 32 }, Int32(truncatingIfNeeded: start), UnsafeMutableRawPointer(out))
        }
        let t = Vector(repeating: threshold)
        let raw = UnsafeRawPointer(groups)
        var written = 0
        var block = 0
        while block &* blockLength < n {
            let g = raw + block &* 256
            let reach =
                (g.loadUnaligned(as: Vector.self) .>= t) .| (g.loadUnaligned(fromByteOffset: 64, as: Vector.self) .>= t)
                .| (g.loadUnaligned(fromByteOffset: 128, as: Vector.self) .>= t)
                .| (g.loadUnaligned(fromByteOffset: 192, as: Vector.self) .>= t)
            if StatisticsKernel.anyLane(reach) {
                let from = start &+ block &* blockLength
                let length = min(blockLength, n &- block &* blockLength)
                written &+=
                    mask.map {
                        CandidateKernel.compact(
                            p + from, count: length, threshold: threshold, indexBase: from, mask: $0 + from / 32,
                            into: out + written)
                    }
                    ?? CandidateKernel.compact(
                        p + from, count: length, threshold: threshold, indexBase: from, into: out + written)
            }
            block &+= 1
        }
        return written
    }

    /// One chunk of a float row (`p[0..<n]`, `0 < n <= chunkLength`, no bitmask, AVX-512 builds):
    /// writes its vector maxima to `g[0..<groupsPerChunk]` (entry `i` the maximum of
    /// `p[16i ..< min(16i + 16, n)]`, `-inf` past the chunk) and returns its maximum, its 1024-logit
    /// blocks' maxima (`+inf` past its logits) and the sum of its logits from Float lane sums (not
    /// finite on a NaN or an infinity). `topnsigma_maximum_vectors` (CShims).
    package static func vectorMaxima(
        _ p: UnsafePointer<Float>, count n: Int, into g: UnsafeMutablePointer<Float>
    ) -> (maximum: Float, blockMaxima: SIMD4<Float>, sum: Double) {
        var blocks = SIMD4<Float>(repeating: .infinity)
        var total = 0.0
        let maximum = withUnsafeMutableBytes(of: &blocks) {
            topnsigma_maximum_vectors(p, n, g, $0.baseAddress!.assumingMemoryBound(to: Float.self), &total)
        }
        return (maximum, blocks, total)
    }

    /// ``vectorMaxima(_:count:into:)`` as the partial ``StatisticsKernel/maximumBlocks(_:count:groups:)``
    /// returns (maximum, block maxima, the mean; nil when the sum is not finite, the vector maxima
    /// written all the same).
    static func maximumVectors(
        _ p: UnsafePointer<Float>, count n: Int, into g: UnsafeMutablePointer<Float>
    ) -> StatisticsKernel.ChunkPartial? {
        let chunk = vectorMaxima(p, count: n, into: g)
        guard chunk.sum.isFinite else { return nil }
        return StatisticsKernel.ChunkPartial(
            count: n, mean: n > 0 ? chunk.sum / Double(n) : 0, maximum: chunk.maximum, blockMaxima: chunk.blockMaxima)
    }

    /// Compacts the logits at or above `threshold` of chunk `chunk` of a float row at `p` (no
    /// bitmask) into `out`, in id order, reading only the vectors whose maximum (`groups`, the
    /// chunk's vector maxima) reaches it; returns the count. `topnsigma_compact_vectors` (CShims).
    package static func compactVectors(
        _ p: UnsafePointer<Float>, vocab: Int, chunk: Int, threshold: Float, groups: UnsafePointer<Float>,
        into out: UnsafeMutablePointer<Candidate>
    ) -> Int {
        let start = chunk &* StatisticsKernel.chunkLength
        let n = min(StatisticsKernel.chunkLength, vocab &- start)
        return topnsigma_compact_vectors(
            p + start, n, threshold, groups, Int32(truncatingIfNeeded: start), UnsafeMutableRawPointer(out))
    }

    /// The order-preserving key of a Float that is not NaN.
    @inline(__always)
    static func key(_ x: Float) -> UInt32 { OrderedKey.key(x) }

    /// How many of `values[0..<n]` are at or above `t`: a vector count.
    @inline(__always)
    static func countAtLeast(_ values: UnsafePointer<Float>, count n: Int, _ t: Float) -> Int {
        let limit = Vector(repeating: t)
        let raw = UnsafeRawPointer(values)
        var a0 = SIMD16<Int32>(), b0 = SIMD16<Int32>()
        var j = 0
        while j &+ 32 <= n {
            a0 &-= unsafeBitCast(
                raw.loadUnaligned(fromByteOffset: j &* 4, as: Vector.self) .>= limit, to: SIMD16<Int32>.self)
            b0 &-= unsafeBitCast(
                raw.loadUnaligned(fromByteOffset: (j &+ 16) &* 4, as: Vector.self) .>= limit, to: SIMD16<Int32>.self)
            j &+= 32
        }
        var reached = StatisticsKernel.laneTotal(a0 &+ b0)
        while j < n {
            if values[j] >= t { reached &+= 1 }
            j &+= 1
        }
        return reached
    }

    /// The `k`-th largest of `values[0..<n]` (`1 <= k <= n`, no NaN), which it reorders: a few
    /// bisection steps on the values narrow it to `[low, high)` (at least `k` values reach `low`,
    /// fewer than `k` reach `high`); the values in that interval are moved to the front, and a
    /// bisection over their Floats' order-preserving keys, each step a vector count, finishes
    /// exactly.
    package static func kthLargest(_ values: UnsafeMutablePointer<Float>, count n: Int, k: Int) -> Float {
        var lowest = Vector(repeating: .infinity), highest = Vector(repeating: -.infinity)
        let raw = UnsafeRawPointer(values)
        var j = 0
        while j &+ 16 <= n {
            let v = raw.loadUnaligned(fromByteOffset: j &* 4, as: Vector.self)
            lowest = lowest.replacing(with: v, where: v .< lowest)
            highest = highest.replacing(with: v, where: v .> highest)
            j &+= 16
        }
        var low = lowest.min(), high = highest.max()
        while j < n {
            low = Swift.min(low, values[j])
            high = Swift.max(high, values[j])
            j &+= 1
        }
        // count(>= low) = n >= k; count(>= high') < k for high' just above the maximum.
        guard low < high else { return low }
        high = high.nextUp
        var above = 0
        for _ in 0..<10 {
            let middle = low + (high - low) * 0.5
            guard middle > low && middle < high else { break }
            let reached = countAtLeast(values, count: n, middle)
            if reached >= k { low = middle } else { (high, above) = (middle, reached) }
        }
        // The values in [low, high), to the front; `above` of them lie at or above `high`.
        let m = topnsigma_select_range(values, n, low, high)
        let rank = k - above
        var lowKey = key(low), highKey = key(high.nextDown)
        while lowKey < highKey {
            let middle = lowKey + (highKey - lowKey + 1) / 2
            if countAtLeast(values, count: m, OrderedKey.value(middle)) >= rank {
                lowKey = middle
            } else {
                highKey = middle &- 1
            }
        }
        return OrderedKey.value(lowKey)
    }
}
