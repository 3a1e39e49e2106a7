#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The top-logprobs pass: run on a chunk while it is still in L1 after its statistics, only for
/// rows that ask for logprobs. It sums `exp(x - chunk max)` over the chunk's allowed logits and
/// keeps the chunk's `N` largest (the row's top `N` are among the chunks' top `N`), so the row
/// is still read from memory once.
enum LogprobKernel {
    typealias Vector = SIMD16<Float>

    /// `2^t`, relative error about 1.4e-7 (Cephes' `exp2f` polynomial), for `t <= 0`; 0 below
    /// about -126.5 (a term that small cannot change a sum whose largest term is 1).
    @inline(__always)
    static func exp2(_ t: Vector) -> Vector {
        // Vector-vector operations only: the scalar-splat overloads of `replacing` and of the
        // integer operators compile to lane loops.
        let low = Vector(repeating: -127)
        let clamped = low.replacing(with: t, where: t .> low)
        // Adding 1.5·2²³ rounds to an integer and leaves it in the low mantissa bits.
        let magic = Vector(repeating: 12_582_912)
        let rounded = clamped + magic
        let f = clamped - (rounded - magic)
        var p = Vector(repeating: 1.535336188319500e-4)
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 1.339887440266574e-3))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 9.618437357674640e-3))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 5.550332471162809e-2))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 2.402264791363012e-1))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 6.931472028550421e-1))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 1))
        // 2^k from k's bits: (k + 127) << 23; k = -127 gives +0.
        let k = unsafeBitCast(rounded, to: SIMD16<Int32>.self) &- SIMD16<Int32>(repeating: 0x4B3F_FF81)
        return p * unsafeBitCast(k &<< SIMD16<Int32>(repeating: 23), to: Vector.self)
    }

    /// Inserts `c` into `out[0..<found]` (key order: logit descending, then id ascending),
    /// keeping at most `keep` entries; a `c` that does not beat the last entry of a full list is
    /// dropped. The one top-list insertion: chunks' lists and the row's merged list.
    @inline(__always)
    static func insert(_ c: Candidate, into out: UnsafeMutablePointer<Candidate>, found: inout Int, keep: Int) {
        if found == keep && !Truncation.precedes(c, out[keep &- 1]) { return }
        var j = found < keep ? found : keep &- 1
        while j > 0 && Truncation.precedes(c, out[j &- 1]) {
            out[j] = out[j &- 1]
            j &-= 1
        }
        out[j] = c
        if found < keep { found &+= 1 }
    }

    /// `Σ 2^((x - m)·log2 e)` over `p[from..<to]` (`to - from` a multiple of 32) in Float lanes,
    /// offering the logits above `bound` to the top list.
    @inline(__always)
    static func block<E: LogitElement>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, mask: UnsafePointer<UInt32>?, _ m: Vector, indexBase: Int,
        keep: Int,
        bound: inout Float, into out: UnsafeMutablePointer<Candidate>, found: inout Int
    ) -> Vector {
        let log2e = Vector(repeating: 1.442_695_040_888_963_4)
        let negInf = Vector(repeating: -.infinity)
        var s = Vector(), t = Vector()
        var limit = Vector(repeating: bound)
        var i = from
        while i < end {
            var a = E.load16(p, i), b = E.load16(p, i &+ 16)
            if let mask {
                let w = mask[i &>> 5]
                if w == 0 {
                    i &+= 32
                    continue
                }
                if w != ~0 {
                    a = a.replacing(with: negInf, where: .!StatisticsKernel.laneMask(UInt64(w)))
                    b = b.replacing(with: negInf, where: .!StatisticsKernel.laneMask(UInt64(w &>> 16)))
                }
            }
            let ea = exp2((a - m) * log2e), eb = exp2((b - m) * log2e)
            s += ea
            t += eb
            if keep > 0 && StatisticsKernel.anyLane((a .> limit) .| (b .> limit)) {
                offer(a, b, indexBase: indexBase &+ i, keep: keep, bound: &bound, into: out, found: &found)
                limit = Vector(repeating: bound)
            }
            i &+= 32
        }
        return s + t
    }

    /// Offers the lanes of `a` then `b` (ids `indexBase...`) that lie above `bound` to the top
    /// list. Out of line, so that the hot loop keeps its vectors in registers.
    @inline(never)
    static func offer(
        _ a: Vector, _ b: Vector, indexBase: Int, keep: Int, bound: inout Float,
        into out: UnsafeMutablePointer<Candidate>,
        found: inout Int
    ) {
        for j in 0..<32 {
            let x = j < 16 ? a[j] : b[j &- 16]
            guard x > bound else { continue }
            insert(
                Candidate(index: Int32(truncatingIfNeeded: indexBase &+ j), logit: x), into: out, found: &found,
                keep: keep)
            if found == keep { bound = max(bound, out[keep &- 1].logit) }
        }
    }

    /// Over the allowed logits of `p[0..<n]` (every one when `mask` is nil): returns
    /// `Σ exp(x - maximum)` and writes the `keep` largest that lie strictly above `bound` to `out`
    /// (sorted, `found` of them; ids offset by `indexBase`). When `out` fills, `bound` rises to
    /// its last logit: the caller carries it to the next chunk of the row, whose logits at or
    /// below it cannot make the row's top `keep` (as many at least as large, with lower ids,
    /// are already held).
    static func chunk<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, maximum: Float, indexBase: Int, keep: Int,
        bound: inout Float, into out: UnsafeMutablePointer<Candidate>, found: inout Int
    ) -> Double {
        found = 0
        guard maximum > -.infinity else { return 0 }
        let m = Vector(repeating: maximum)
        var total = 0.0
        var i = 0
        // Whole 1024-logit blocks, each summed in Float lanes (32 terms a lane, each at most 1)
        // and then in double; the per-block reduction stays outside the vector loop, which it
        // would otherwise scalarize.
        while i &+ StatisticsKernel.blockLength <= n {
            total += StatisticsKernel.laneSum(
                block(
                    p, from: i, to: i &+ StatisticsKernel.blockLength, mask: mask, m, indexBase: indexBase, keep: keep,
                    bound: &bound,
                    into: out, found: &found))
            i &+= StatisticsKernel.blockLength
        }
        let vectorEnd = i &+ (n &- i) / 32 &* 32
        if i < vectorEnd {
            total += StatisticsKernel.laneSum(
                block(
                    p, from: i, to: vectorEnd, mask: mask, m, indexBase: indexBase, keep: keep, bound: &bound,
                    into: out, found: &found))
            i = vectorEnd
        }
        while i < n {
            let x = E.float(p, i)
            if mask.map({ StatisticsKernel.allowed($0, i) }) ?? true, x > -.infinity {
                total += exp(Double(x) - Double(maximum))
                if keep > 0 && x > bound {
                    insert(
                        Candidate(index: Int32(truncatingIfNeeded: indexBase &+ i), logit: x), into: out, found: &found,
                        keep: keep)
                    if found == keep { bound = max(bound, out[keep &- 1].logit) }
                }
            }
            i &+= 1
        }
        return total
    }

    /// The top `keep` logits of the chunks a task has reduced so far (key order: logit
    /// descending, id ascending), inline: its last entry is the bound carried to the task's next
    /// chunk, so a later chunk offers only what could still make the row's top list.
    struct RunningTop {
        var logits = SIMD32<Float>(repeating: -.infinity)
        var ids = SIMD32<Int32>()
        var count = 0

        /// Merges a chunk's list (`c[0..<n]`, key order, ids above every id held).
        mutating func merge(_ c: UnsafePointer<Candidate>, count n: Int, keep: Int) {
            for k in 0..<n {
                let x = c[k]
                if count == keep && !(x.logit > logits[keep &- 1]) { break }
                var j = count < keep ? count : keep &- 1
                while j > 0 && logits[j &- 1] < x.logit {
                    logits[j] = logits[j &- 1]
                    ids[j] = ids[j &- 1]
                    j &-= 1
                }
                logits[j] = x.logit
                ids[j] = x.index
                if count < keep { count &+= 1 }
            }
        }

        /// The bound for the next chunk: the last entry once `keep` are held.
        func bound(keep: Int) -> Float { keep > 0 && count == keep ? logits[keep &- 1] : -.infinity }
    }
}
