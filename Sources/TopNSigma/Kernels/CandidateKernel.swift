import CShims

/// Survivor compaction: the compare pass that writes every `(id, logit)` at or above a threshold,
/// in id order. The row pipeline runs it on the blocks of a chunk that can hold a survivor, while
/// the chunk is still in L1 (``RowPipeline``). Float rows in AVX-512 builds take
/// `topnsigma_compact` (CShims): a vector with survivors is compressed without a branch per
/// survivor, which matters where they are dense (top-p 0.99's first depth, top-k's bound).
enum CandidateKernel {
    typealias Vector = SIMD16<Float>

    /// Writes every `(index, logit)` with `logit >= threshold` of `p[0..<n]` to `out`, ascending,
    /// with token ids offset by `indexBase`; returns how many were written. `out` must have room
    /// for `n` candidates. Two vectors per step and one branch for both, taken only near survivors.
    @inline(__always)
    static func compact<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, threshold: Float, indexBase: Int,
        into out: UnsafeMutablePointer<Candidate>
    ) -> Int {
        if let written = compressed(p, count: n, threshold: threshold, indexBase: indexBase, mask: nil, into: out) {
            return written
        }
        let t = Vector(repeating: threshold)
        var written = 0
        var i = 0
        while i &+ 32 <= n {
            let a = E.load16(p, i)
            let b = E.load16(p, i &+ 16)
            let hitA = a .>= t, hitB = b .>= t
            if StatisticsKernel.anyLane(hitA .| hitB) {
                let hits = StatisticsKernel.laneBits(hitA) | StatisticsKernel.laneBits(hitB) &<< 16
                written = append(a, b, hits: hits, index: indexBase &+ i, into: out, at: written)
            }
            i &+= 32
        }
        while i < n {
            let x = E.float(p, i)
            if x >= threshold {
                out[written] = Candidate(index: Int32(truncatingIfNeeded: indexBase &+ i), logit: x)
                written &+= 1
            }
            i &+= 1
        }
        return written
    }

    /// Both compactions' AVX-512 path for Float rows (`topnsigma_compact`); nil in other builds
    /// and for half-precision rows, which take the Swift loops.
    @inline(__always)
    static func compressed<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, threshold: Float, indexBase: Int, mask: UnsafePointer<UInt32>?,
        into out: UnsafeMutablePointer<Candidate>
    ) -> Int? {
        guard BuildTarget.hasAVX512 && E.self == Float.self else { return nil }
        return topnsigma_compact(
            UnsafeRawPointer(p).assumingMemoryBound(to: Float.self), n, threshold, mask,
            Int32(truncatingIfNeeded: indexBase), UnsafeMutableRawPointer(out))
    }

    /// Writes lane `j` of `a` then `b` (token `index + j`) for each bit `j` of `hits`, in order,
    /// at `out[written...]`; returns the new count. Visits only the set bits.
    @inline(__always)
    static func append(
        _ a: Vector, _ b: Vector, hits: UInt32, index: Int, into out: UnsafeMutablePointer<Candidate>, at written: Int
    ) -> Int {
        var written = written, hits = hits
        // Through memory: one store of both vectors, then a load per lane (extracting a lane
        // at a variable index from a register costs a store and a reload each time).
        var lanes = SIMD32<Float>(lowHalf: a, highHalf: b)
        withUnsafeBytes(of: &lanes) { raw in
            let logits = raw.bindMemory(to: Float.self)
            while hits != 0 {
                let j = hits.trailingZeroBitCount
                hits &= hits &- 1
                out[written] = Candidate(index: Int32(truncatingIfNeeded: index &+ j), logit: logits[j])
                written &+= 1
            }
        }
        return written
    }

    /// As ``compact(_:count:threshold:indexBase:into:)``, keeping only the tokens `mask` allows
    /// (`mask`'s first bit is `p[0]`'s; `p` starts a word).
    @inline(__always)
    static func compact<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, threshold: Float, indexBase: Int, mask: UnsafePointer<UInt32>,
        into out: UnsafeMutablePointer<Candidate>
    ) -> Int {
        if let written = compressed(p, count: n, threshold: threshold, indexBase: indexBase, mask: mask, into: out) {
            return written
        }
        let t = Vector(repeating: threshold)
        var written = 0
        var i = 0
        while i &+ 32 <= n {
            let w = mask[i &>> 5]
            if w != 0 {
                let a = E.load16(p, i)
                let b = E.load16(p, i &+ 16)
                let hitA = a .>= t, hitB = b .>= t
                if StatisticsKernel.anyLane(hitA .| hitB) {
                    let hits = (StatisticsKernel.laneBits(hitA) | StatisticsKernel.laneBits(hitB) &<< 16) & w
                    written = append(a, b, hits: hits, index: indexBase &+ i, into: out, at: written)
                }
            }
            i &+= 32
        }
        while i < n {
            if StatisticsKernel.allowed(mask, i) {
                let x = E.float(p, i)
                if x >= threshold {
                    out[written] = Candidate(index: Int32(truncatingIfNeeded: indexBase &+ i), logit: x)
                    written &+= 1
                }
            }
            i &+= 1
        }
        return written
    }
}
