/// Top-k as a threshold: the `k`-th largest logit of the row, found without sorting.
///
/// During the pass a task keeps a *bound*: a value that at least `k` logits of the row reach, so
/// that the row's top `k` all lie at or above it. It is a threshold like Top-nσ's provisional one:
/// each chunk compacts only the logits at or above it, while the chunk is in L1. A task's first
/// chunk seeds it by counting (``seed(_:count:mask:keep:maximum:floor:)``); whenever the task's
/// survivors grow past `2k`, their own `k`-th largest raises it (``raise(scratch:chunks:_:keep:)``).
/// When the row settles, the `k`-th largest of all survivors is the row's (every chunk holds all
/// its logits at or above its bound), and the kept set is `{x ≥ k-th}`: a threshold cut in id
/// order, exactly the float64 definition's (ties at the `k`-th value go to the lower ids).
package enum TopKBound {
    typealias Vector = SIMD16<Float>

    /// The allowed logits of `p[0..<n]` at or above `t`.
    @inline(__always)
    static func count<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, atLeast t: Float
    )
        -> Int
    {
        let limit = Vector(repeating: t)
        var a0 = SIMD16<Int32>(), b0 = SIMD16<Int32>()
        var i = 0
        while i &+ 32 <= n {
            let (a, b) = StatisticsKernel.load32(p, i, mask: mask)
            // A true lane is -1.
            a0 &-= unsafeBitCast(a .>= limit, to: SIMD16<Int32>.self)
            b0 &-= unsafeBitCast(b .>= limit, to: SIMD16<Int32>.self)
            i &+= 32
        }
        var total = StatisticsKernel.laneTotal(a0 &+ b0)
        while i < n {
            if mask.map({ StatisticsKernel.allowed($0, i) }) ?? true, E.float(p, i) >= t { total &+= 1 }
            i &+= 1
        }
        return total
    }

    /// A bound for a row's top `keep` from one chunk alone (`p[0..<n]`, its maximum and a value
    /// `floor` below most of its logits, such as its mean): a value that at least `keep` allowed
    /// logits of the chunk reach, found by bisection between `floor` and `maximum`, stopping once
    /// at most `4·keep` reach it; `-inf` when fewer than `keep` reach `floor`.
    static func seed<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, keep: Int, maximum: Float, floor: Float
    ) -> Float {
        guard keep <= n, floor.isFinite, maximum.isFinite, floor < maximum else { return -.infinity }
        var low = floor, high = maximum
        let reached = count(p, count: n, mask: mask, atLeast: low)
        guard reached >= keep else { return -.infinity }
        if reached <= 2 * keep { return low }
        for _ in 0..<12 {
            let middle = low + (high - low) * 0.5
            guard middle > low && middle < high else { break }
            let c = count(p, count: n, mask: mask, atLeast: middle)
            if c >= keep {
                low = middle
                if c <= keep + keep / 4 { break }
            } else {
                high = middle
            }
        }
        return low
    }

    /// The order-preserving key of a Float that is not NaN.
    @inline(__always)
    static func key(_ x: Float) -> UInt32 { RowPipeline.SharedThreshold.key(x) }

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
        var m = 0
        for i in 0..<n where values[i] >= low && values[i] < high {
            values[m] = values[i]
            m &+= 1
        }
        let rank = k - above
        var lowKey = key(low), highKey = key(high.nextDown)
        while lowKey < highKey {
            let middle = lowKey + (highKey - lowKey + 1) / 2
            if countAtLeast(values, count: m, RowPipeline.SharedThreshold.value(middle)) >= rank {
                lowKey = middle
            } else {
                highKey = middle &- 1
            }
        }
        return RowPipeline.SharedThreshold.value(lowKey)
    }

    /// The `keep`-th largest logit held by the candidate slots of chunks `chunks` (each slot
    /// `c · chunkLength`, `scratch.counts[c]` long), or `-inf` when they hold fewer. Uses the
    /// weights region under those chunks as its buffer.
    static func kth(scratch: RowPipeline.Scratch, chunks: Range<Int>, keep: Int) -> Float {
        let chunkLength = StatisticsKernel.chunkLength
        let buffer = UnsafeMutableRawPointer(scratch.weights + chunks.lowerBound * chunkLength)
            .assumingMemoryBound(to: Float.self)
        var n = 0
        for c in chunks {
            let slot = scratch.candidates + c * chunkLength
            for j in 0..<scratch.counts[c] {
                buffer[n] = slot[j].logit
                n &+= 1
            }
        }
        guard n >= keep else { return -.infinity }
        return kthLargest(buffer, count: n, k: keep)
    }

    /// Raises a task's bound from its survivors so far (chunks `chunks`): their `keep`-th
    /// largest, when it is higher; each slot is then cut to it (its threshold with it). Returns
    /// the bound and the survivors left.
    static func raise(scratch: RowPipeline.Scratch, chunks: Range<Int>, _ bound: Float, keep: Int) -> (Float, Int) {
        let kth = kth(scratch: scratch, chunks: chunks, keep: keep)
        let chunkLength = StatisticsKernel.chunkLength
        let cut = max(bound, kth)
        var total = 0
        for c in chunks {
            let slot = scratch.candidates + c * chunkLength
            if scratch.thresholds[c] < cut {
                var kept = 0
                for j in 0..<scratch.counts[c] where slot[j].logit >= cut {
                    slot[kept] = slot[j]
                    kept &+= 1
                }
                scratch.counts[c] = kept
                scratch.thresholds[c] = cut
            }
            total += scratch.counts[c]
        }
        return (cut, total)
    }
}
