/// Survivor compaction: the compare pass that writes every `(id, logit)` at or above a threshold,
/// in id order. The row pipeline runs it on the blocks of a chunk that can hold a survivor, while
/// the chunk is still in L1 (``RowPipeline``).
/// The threshold-and-compact pass.
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
        let t = Vector(repeating: threshold)
        var written = 0
        var i = 0
        while i &+ 32 <= n {
            let a = E.load16(p, i)
            let b = E.load16(p, i &+ 16)
            let hitA = a .>= t, hitB = b .>= t
            if StatisticsKernel.anyLane(hitA .| hitB) {
                if StatisticsKernel.anyLane(hitA) {
                    for j in 0..<16 where a[j] >= threshold {
                        out[written] = Candidate(index: Int32(truncatingIfNeeded: indexBase &+ i &+ j), logit: a[j])
                        written &+= 1
                    }
                }
                if StatisticsKernel.anyLane(hitB) {
                    for j in 0..<16 where b[j] >= threshold {
                        out[written] = Candidate(
                            index: Int32(truncatingIfNeeded: indexBase &+ i &+ 16 &+ j), logit: b[j])
                        written &+= 1
                    }
                }
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

    /// As ``compact(_:count:threshold:indexBase:into:)``, keeping only the tokens `mask` allows
    /// (`mask`'s first bit is `p[0]`'s; `p` starts a word).
    @inline(__always)
    static func compact<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, threshold: Float, indexBase: Int, mask: UnsafePointer<UInt32>,
        into out: UnsafeMutablePointer<Candidate>
    ) -> Int {
        let t = Vector(repeating: threshold)
        var written = 0
        var i = 0
        while i &+ 32 <= n {
            let w = mask[i &>> 5]
            if w != 0 {
                let a = E.load16(p, i)
                let b = E.load16(p, i &+ 16)
                if StatisticsKernel.anyLane((a .>= t) .| (b .>= t)) {
                    for j in 0..<16 where a[j] >= threshold && w &>> UInt32(j) & 1 != 0 {
                        out[written] = Candidate(index: Int32(truncatingIfNeeded: indexBase &+ i &+ j), logit: a[j])
                        written &+= 1
                    }
                    for j in 0..<16 where b[j] >= threshold && w &>> UInt32(16 &+ j) & 1 != 0 {
                        out[written] = Candidate(
                            index: Int32(truncatingIfNeeded: indexBase &+ i &+ 16 &+ j), logit: b[j])
                        written &+= 1
                    }
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
