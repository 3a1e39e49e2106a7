import CShims
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The C library's `exp2` on a Double (inside ``LogprobKernel`` the name is its vector one).
@inline(__always)
private func powerOfTwo(_ x: Double) -> Double { exp2(x) }

/// The top-logprobs pass: run on a chunk while it is still in L1 after its statistics, only for
/// rows that ask for logprobs. It sums `exp(x - chunk max)` over the chunk's allowed logits and
/// keeps the chunk's `N` largest (the row's top `N` are among the chunks' top `N`), so the row
/// is still read from memory once.
package enum LogprobKernel {
    package typealias Vector = SIMD16<Float>

    /// `log2 e` rounded to Float.
    static let log2eFloat: Float = 1.442_695_040_888_963_4

    /// `2^t`, relative error below 1.9e-7 (a degree-5 polynomial on `[-1/2, 1/2]`, fitted for
    /// minimax relative error and checked in Float over 200 001 points; Cephes' degree 6 gains
    /// only a factor 2), for `-126 <= t <= 0`; at most `2^-126` below (a term that small cannot
    /// change a sum whose largest term is 1, nor can a vocabulary's worth of them).
    ///
    /// With AVX-512, 2^k is applied by `vscalefps` and k comes from `vrndscaleps`: three
    /// operations fewer than the integer route (the add/subtract of the rounding constant, and
    /// the shift and add of the exponent field). Below `-126` the result is then exact to within
    /// `2^-149` instead of clamped, which only tightens the bound.
    @inline(__always)
    package static func exp2(_ t: Vector) -> Vector {
        if BuildTarget.hasAVX512 {
            // -inf (a masked lane) would make t − k a NaN; anything below -150 gives 0 anyway.
            let low = Vector(repeating: -150)
            let clamped = low.replacing(with: t, where: t .> low)
            let k = topnsigma_round16(clamped)
            let f = clamped - k
            return topnsigma_scalef16(polynomial(f), k)
        }
        // Vector-vector operations only: the scalar-splat overloads of `replacing` and of the
        // integer operators compile to lane loops.
        let low = Vector(repeating: -126)
        let clamped = low.replacing(with: t, where: t .> low)
        // Adding 1.5·2²³ rounds to an integer k and leaves it in the low mantissa bits.
        let magic = Vector(repeating: 12_582_912)
        let rounded = clamped + magic
        let f = clamped - (rounded - magic)
        let p = polynomial(f)
        // p · 2^k by adding k to p's exponent field (an integer add, not a multiply: the
        // multiply-add units are this loop's bottleneck). p is in [2^-1/2, 2^1/2] and
        // -126 <= k <= 0, so the result is normal, or for k = -126 at most 2^-126.
        let k = unsafeBitCast(rounded, to: SIMD16<Int32>.self) &- SIMD16<Int32>(repeating: 0x4B40_0000)
        return unsafeBitCast(
            unsafeBitCast(p, to: SIMD16<Int32>.self) &+ (k &<< SIMD16<Int32>(repeating: 23)), to: Vector.self)
    }

    /// ``exp2(_:)`` without its clamp, AVX-512 builds only: `vrndscaleps`, the polynomial and
    /// `vscalefps`, one operation fewer. Any finite `t` below `-126` still gives a result within
    /// `2^-149` of `2^t`, and `-inf` gives 0 (`vscalefps` scales the NaN of `-inf − (-inf)` by
    /// `2^-inf`); NaN gives NaN and `+inf` NaN or `+inf`, which a caller that sums the terms
    /// sees as a sum that is not finite.
    @inline(__always)
    static func exp2Unclamped(_ t: Vector) -> Vector {
        let k = topnsigma_round16(t)
        return topnsigma_scalef16(polynomial(t - k), k)
    }

    /// `2^f` for `f` in `[-1/2, 1/2]`: the degree-5 minimax polynomial of ``exp2(_:)``, by Horner.
    @inline(__always)
    static func polynomial(_ f: Vector) -> Vector {
        var p = Vector(repeating: 1.326_472_708_005_028_5e-3)
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 9.671_512_862_183_89e-3))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 5.550_733_745_645_905e-2))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 2.402_224_208_184_32e-1))
        p = BuildTarget.multiplyAdd(p, f, Vector(repeating: 6.931_469_775_965_883e-1))
        return BuildTarget.multiplyAdd(p, f, Vector(repeating: 1))
    }

    /// Whether the exponents `x·s − hi` (`hi = maximum·s` rounded to Float, `s` the scale) can
    /// be one fused multiply-add: the build has FMA, and `hi` is within 1/2 of `maximum·s`, so
    /// that the constant `2^(hi − maximum·s)` the sums carry stays near 1 and no term's exponent
    /// exceeds 1/2. A maximum whose `maximum·s` is beyond 2^23 rounds farther (at 2e34, by about
    /// 1e27, which turned every sum into 0 or infinity: found by the row-pipeline fuzzer in a
    /// SIMD build); the exponent is then `(x − maximum)·s`, two roundings.
    @inline(__always)
    static func fusedExponent(maximum: Float, scale: Float) -> Bool {
        let hi = maximum * scale
        return BuildTarget.hasFMA && hi.isFinite && Swift.abs(Double(hi) - Double(maximum) * Double(scale)) <= 0.5
    }

    /// The base-2 exponent of `exp((x − maximum)/T)` for the vector loops, with `s = log2 e / T`
    /// (``scale(temperature:)``): `u = x·s − hi` in one fused multiply-add where
    /// ``fusedExponent(maximum:scale:)`` allows, and the true exponent is then `u + shift`
    /// (`shift = hi − maximum·s`, exact in double): a sum of the terms `2^u` times ``correction``
    /// is in units of `exp((x − maximum)/T)`. Otherwise `(x − maximum)·s`, two roundings, and
    /// `shift` 0. The one place the vector passes (the plain and top-p routes' block sums, the
    /// logprobs chunk pass, the row-mass moments, top-p's tail, the block draw) get their
    /// exponent from.
    struct Exponent {
        let maximum: Vector, scale: Vector, negHi: Vector
        let fused: Bool
        /// `hi − maximum·s` when fused, else 0.
        let shift: Double
        /// `2^shift`: what a sum of the terms `2^u` is multiplied by.
        let correction: Double

        @inline(__always)
        init(maximum m: Float, scale s: Float) {
            let hi = m * s
            fused = fusedExponent(maximum: m, scale: s)
            shift = fused ? Double(hi) - Double(m) * Double(s) : 0
            correction = fused ? powerOfTwo(shift) : 1
            maximum = Vector(repeating: m)
            scale = Vector(repeating: s)
            negHi = Vector(repeating: -hi)
        }

        /// The exponent `u` of each lane of `x`.
        @inline(__always)
        func callAsFunction(_ x: Vector) -> Vector {
            fused ? BuildTarget.multiplyAdd(x, scale, negHi) : (x - maximum) * scale
        }
    }

    /// `log2 e / T` rounded to Float: the exponent's factor at temperature `T`.
    @inline(__always)
    static func scale(temperature: Float) -> Float {
        temperature == 1 ? log2eFloat : Float(Double(log2eFloat) / Double(temperature))
    }

    /// Inserts `c` into `out[0..<found]` (key order: logit descending, then id ascending),
    /// keeping at most `keep` entries; a `c` that does not beat the last entry of a full list is
    /// dropped. The one top-list insertion: chunks' lists and the row's merged list.
    @inline(__always)
    static func insert(_ c: Candidate, into out: UnsafeMutablePointer<Candidate>, found: inout Int, keep: Int) {
        if found == keep && !Candidate.precedes(c, out[keep &- 1]) { return }
        var j = found < keep ? found : keep &- 1
        while j > 0 && Candidate.precedes(c, out[j &- 1]) {
            out[j] = out[j &- 1]
            j &-= 1
        }
        out[j] = c
        if found < keep { found &+= 1 }
    }

    /// `Σ 2^((x - m)·log2 e)` over `p[from..<to]` (`to - from` a multiple of 32) in Float lanes,
    /// offering the logits above `bound` to the top list. With `fused`, each exponent is
    /// `x·log2 e - hi` in one fused multiply-add (`hi = m·log2 e` rounded to Float): one
    /// operation and one rounding instead of two, and the sum comes out scaled by the constant
    /// `2^(m·log2 e - hi)`, which the caller removes.
    @inline(__always)
    static func block<E: LogitElement>(
        _ p: UnsafePointer<E>, from: Int, to end: Int, mask: UnsafePointer<UInt32>?, _ exponent: Exponent,
        indexBase: Int, keep: Int, bound: inout Float, into out: UnsafeMutablePointer<Candidate>, found: inout Int,
        ahead: Prefetch
    ) -> Vector {
        var s = Vector(), t = Vector()
        var limit = Vector(repeating: bound)
        var i = from
        while i < end {
            ahead.touch(i &* MemoryLayout<E>.stride)
            guard let (a, b) = StatisticsKernel.load32Allowed(p, i, mask: mask) else {
                i &+= 32
                continue
            }
            let ea = exp2(exponent(a))
            let eb = exp2(exponent(b))
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
    /// list, visiting only those lanes. Out of line, so that the hot loop keeps its vectors in
    /// registers.
    @inline(never)
    static func offer(
        _ a: Vector, _ b: Vector, indexBase: Int, keep: Int, bound: inout Float,
        into out: UnsafeMutablePointer<Candidate>,
        found: inout Int
    ) {
        let limit = Vector(repeating: bound)
        var lanes = StatisticsKernel.laneBits(a .> limit) | StatisticsKernel.laneBits(b .> limit) &<< 16
        while lanes != 0 {
            let j = lanes.trailingZeroBitCount
            lanes &= lanes &- 1
            let x = j < 16 ? a[j] : b[j &- 16]
            guard x > bound else { continue }
            insert(
                Candidate(index: Int32(truncatingIfNeeded: indexBase &+ j), logit: x), into: out, found: &found,
                keep: keep)
            if found == keep { bound = max(bound, out[keep &- 1].logit) }
        }
    }

    /// A bound below which no logit of `p[0..<n]` (`n` a multiple of 32) can be among the
    /// chunk's `keep` largest: the largest float below the `keep`-th largest of its 32 lane
    /// maxima, each the maximum of distinct logits, so at least `keep` logits reach it. One
    /// compare-free pass over the chunk in L1; it spares the first chunk of a row (whose
    /// running list is still empty) an offer for most of its vectors.
    static func seedBound<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, keep: Int
    )
        -> Float
    {
        guard keep > 0 && keep <= 32 else { return -.infinity }
        let negInf = Vector(repeating: -.infinity)
        var ma = negInf, mb = negInf
        var i = 0
        while i &+ 32 <= n {
            let (a, b) = StatisticsKernel.load32(p, i, mask: mask)
            // NaN never passes `>`: the statistics have already failed a row holding one.
            ma = ma.replacing(with: a, where: a .> ma)
            mb = mb.replacing(with: b, where: b .> mb)
            i &+= 32
        }
        // The keep-th largest of the 32 by insertion sort, descending, in place (no allocation).
        var maxima = SIMD32<Float>(lowHalf: ma, highHalf: mb)
        return withUnsafeMutableBytes(of: &maxima) { raw in
            let v = raw.bindMemory(to: Float.self)
            for j in 1..<32 {
                let x = v[j]
                var k = j
                while k > 0 && v[k &- 1] < x {
                    v[k] = v[k &- 1]
                    k &-= 1
                }
                v[k] = x
            }
            return v[keep &- 1].nextDown
        }
    }

    /// Over the allowed logits of `p[0..<n]` (every one when `mask` is nil): returns
    /// `Σ exp((x - maximum) / T)` (`T` = `temperature`, 1 for logprobs), with `blockSums` also
    /// each 1024-logit block's share (``StatisticsKernel/blocksPerChunk`` entries, 0 past `n`),
    /// and writes the `keep` largest that lie strictly above `bound` to `out` (sorted, `found` of
    /// them; ids offset by `indexBase`). When `out` fills, `bound` rises to
    /// its last logit: the caller carries it to the next chunk of the row, whose logits at or
    /// below it cannot make the row's top `keep` (as many at least as large, with lower ids,
    /// are already held). With nothing carried (`bound` is `-inf`), ``seedBound(_:count:mask:keep:)``
    /// sets it first.
    static func chunk<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, maximum: Float, indexBase: Int, keep: Int,
        bound: inout Float, into out: UnsafeMutablePointer<Candidate>, found: inout Int, ahead: Prefetch = Prefetch(),
        temperature: Float = 1, blockSums: UnsafeMutablePointer<Double>? = nil
    ) -> Double {
        found = 0
        blockSums?.update(repeating: 0, count: StatisticsKernel.blocksPerChunk)
        guard maximum > -.infinity else { return 0 }
        // log2 e / T rounded to Float: a relative error of at most 2^-24, the same for every
        // term, so the sum is exactly one at a temperature within 2^-24 of T's, up to the
        // per-term roundings (see ``OnlineSoftmax/sumError``). Fused exponents need FMA (a
        // separate multiply would round x·log2 e itself, an error as large as ulp(x·log2 e) on
        // every term) and an m·log2 e that rounds to Float closely.
        let scale = Self.scale(temperature: temperature)
        let exponent = Exponent(maximum: maximum, scale: scale)
        let correction = exponent.correction
        var vectorTotal = 0.0, total = 0.0
        var i = 0
        // A row's first chunk (nothing carried yet): a bound from its lane maxima first.
        if keep > 0 && bound == -.infinity {
            bound = seedBound(p, count: n &- n % 32, mask: mask, keep: keep)
        }
        // Whole 1024-logit blocks, each summed in Float lanes (32 terms a lane, each at most 1)
        // and then in double; the per-block reduction stays outside the vector loop, which it
        // would otherwise scalarize.
        while i &+ StatisticsKernel.blockLength <= n {
            let sum = StatisticsKernel.laneSum(
                block(
                    p, from: i, to: i &+ StatisticsKernel.blockLength, mask: mask, exponent, indexBase: indexBase,
                    keep: keep, bound: &bound, into: out, found: &found, ahead: ahead))
            vectorTotal += sum
            blockSums?[i / StatisticsKernel.blockLength] = sum * correction
            i &+= StatisticsKernel.blockLength
        }
        let lastBlock = i / StatisticsKernel.blockLength
        var lastSum = 0.0
        let vectorEnd = i &+ (n &- i) / 32 &* 32
        if i < vectorEnd {
            lastSum = StatisticsKernel.laneSum(
                block(
                    p, from: i, to: vectorEnd, mask: mask, exponent, indexBase: indexBase, keep: keep,
                    bound: &bound, into: out, found: &found, ahead: ahead))
            vectorTotal += lastSum
            i = vectorEnd
        }
        while i < n {
            let x = E.float(p, i)
            if mask.map({ StatisticsKernel.allowed($0, i) }) ?? true, x > -.infinity {
                total += exp((Double(x) - Double(maximum)) * Double(scale) / Double(log2eFloat))
                if keep > 0 && x > bound {
                    insert(
                        Candidate(index: Int32(truncatingIfNeeded: indexBase &+ i), logit: x), into: out, found: &found,
                        keep: keep)
                    if found == keep { bound = max(bound, out[keep &- 1].logit) }
                }
            }
            i &+= 1
        }
        if let blockSums, lastBlock < StatisticsKernel.blocksPerChunk {
            blockSums[lastBlock] = lastSum * correction + total
        }
        return vectorTotal * correction + total
    }

    /// The moments' Float lanes over one block: `Σ 2^u`, `Σ 2^u·u` and `Σ 2^(2u)` of two
    /// vectors a step (``chunkMoments(_:count:mask:maximum:temperature:ahead:)`` and
    /// ``referencedChunk(_:count:previous:temperature:blockSums:moments:ahead:)``).
    struct MomentLanes {
        var s0 = Vector(), s1 = Vector(), w0 = Vector(), w1 = Vector(), q0 = Vector(), q1 = Vector()

        /// Adds the terms `ea`, `eb` of the exponents `ua`, `ub`.
        @inline(__always)
        mutating func add(_ ua: Vector, _ ub: Vector, _ ea: Vector, _ eb: Vector) {
            s0 += ea
            s1 += eb
            w0 = BuildTarget.multiplyAdd(ea, ua, w0)
            w1 = BuildTarget.multiplyAdd(eb, ub, w1)
            q0 = BuildTarget.multiplyAdd(ea, ea, q0)
            q1 = BuildTarget.multiplyAdd(eb, eb, q1)
        }

        /// The three sums in double.
        var sums: (z: Double, weighted: Double, squares: Double) {
            (
                StatisticsKernel.laneSum(s0 + s1), StatisticsKernel.laneSum(w0 + w1),
                StatisticsKernel.laneSum(q0 + q1)
            )
        }
    }

    /// How far above the chunk before it a chunk's reference lies in
    /// ``referencedChunk(_:count:previous:temperature:blockSums:moments:ahead:)``, in units of the
    /// exponent (`log2`): 8, or `5.5·T` in logits. On 64 real SmolLM2 rows the next chunk's
    /// maximum passed the one before it by more than `5.5` in 1.5% of chunks (by 1 in 24%).
    package static let referenceHeadroom: Float = 8

    /// The softmax routes' pass over a chunk after the row's first, in one read (AVX-512 builds,
    /// every logit allowed, `n` a multiple of 32): each 1024-logit block's `Σ exp((x − r)/T)`
    /// into `blockSums` (``StatisticsKernel/blocksPerChunk`` entries, 0 past `n`), or with
    /// `moments` the chunk's `Σ e`, `Σ e·y` and `Σ e²` there as
    /// ``chunkMoments(_:count:mask:maximum:temperature:ahead:)`` takes them, against a reference
    /// `r` that the chunk before it gives, ``referenceHeadroom`` above
    /// its maximum `previous`, instead of the chunk's own maximum, which would take a pass of
    /// its own before the `exp`; and the chunk's maximum, mean (from Float lane sums, as
    /// ``StatisticsKernel/maximumBlocks(_:count:groups:)``'s) and block maxima beside the sums.
    /// Nil when the chunk's maximum lies above `r` (its sums are then taken against it: 1.5% of
    /// chunks on real rows at `T = 1`), when a sum is not finite (a non-finite logit: the
    /// chunk's statistics sort it out) or when `r` cannot be a fused exponent's reference; the
    /// caller then reduces the chunk as before. The reference depends on the chunk before it
    /// alone, not on the task that reads the chunk, so a split row sums exactly as a whole one.
    ///
    /// Each term is `2^t` with `t ≤ 0` relative to `r`, as against the chunk's maximum; `r`
    /// lies at most ``referenceHeadroom`` above the previous chunk's maximum, a logit of the
    /// row, which is what bounds the terms ``OnlineSoftmax/sumError`` and
    /// ``OnlineSoftmax/momentError`` count as tiny.
    package static func referencedChunk<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, previous: Float, temperature: Float,
        blockSums: UnsafeMutablePointer<Double>?, moments: UnsafeMutablePointer<Double>? = nil,
        ahead: Prefetch = Prefetch()
    ) -> (reference: Float, maximum: Float, mean: Double, blockMaxima: SIMD4<Float>)? {
        guard BuildTarget.hasAVX512, n % 32 == 0, n <= StatisticsKernel.chunkLength, previous.isFinite else {
            return nil
        }
        let scale = Self.scale(temperature: temperature)
        let reference = previous + Float(Double(referenceHeadroom) / Double(scale))
        guard reference.isFinite, fusedExponent(maximum: reference, scale: scale) else { return nil }
        let exponent = Exponent(maximum: reference, scale: scale)
        let correction = exponent.correction
        let blockLength = StatisticsKernel.blockLength
        let negInf = Vector(repeating: -.infinity)
        var blocks = StatisticsKernel.BlockMaxima(repeating: .infinity)
        var maximum = negInf
        var xa = Vector(), xb = Vector()
        var sumTotal = 0.0, weighted = 0.0, squares = 0.0
        blockSums?.update(repeating: 0, count: StatisticsKernel.blocksPerChunk)
        var i = 0, block = 0
        while i < n {
            let end = Swift.min(i &+ blockLength, n)
            var ma = negInf, mb = negInf
            var sum = 0.0
            // The unclamped `exp`: `vscalefps` turns a `-inf` logit's NaN into 0, and the logits'
            // own sum finds it.
            if moments == nil {
                var s = Vector(), t = Vector()
                referencedBlock(p, from: &i, to: end, ahead: ahead, &ma, &mb, &xa, &xb) { a, b in
                    s += exp2Unclamped(exponent(a))
                    t += exp2Unclamped(exponent(b))
                }
                sum = StatisticsKernel.laneSum(s + t)
            } else {
                // ``chunkMoments(_:count:mask:maximum:temperature:ahead:)``'s sums; no clamp: every
                // logit is finite, or the sums are not.
                var lanes = MomentLanes()
                referencedBlock(p, from: &i, to: end, ahead: ahead, &ma, &mb, &xa, &xb) { a, b in
                    let ua = exponent(a), ub = exponent(b)
                    lanes.add(ua, ub, exp2Unclamped(ua), exp2Unclamped(ub))
                }
                let sums = lanes.sums
                sum = sums.z
                weighted += sums.weighted
                squares += sums.squares
            }
            sumTotal += sum
            blockSums?[block] = sum * correction
            ma = mb.replacing(with: ma, where: ma .> mb)
            blocks[block] = StatisticsKernel.horizontalMaximum(ma)
            maximum = ma.replacing(with: maximum, where: maximum .> ma)
            block &+= 1
        }
        let chunkMaximum = StatisticsKernel.horizontalMaximum(maximum)
        let total = StatisticsKernel.laneSum(xa + xb)
        guard sumTotal.isFinite, weighted.isFinite, squares.isFinite, total.isFinite, chunkMaximum <= reference
        else { return nil }
        if let moments {
            // As ``chunkMoments(_:count:mask:maximum:temperature:ahead:)``'s, in units of `y`.
            moments[0] = sumTotal * correction
            moments[1] = correction * (weighted + exponent.shift * sumTotal) * 0.693_147_180_559_945_3
            moments[2] = squares * correction * correction
        }
        return (reference, chunkMaximum, total / Double(n), blocks)
    }

    /// The loop of ``referencedChunk(_:count:previous:temperature:blockSums:moments:ahead:)``
    /// over `p[i..<end]`, 32 logits a step: their lane maxima and sums, and the two vectors
    /// handed to `body` for the `exp` sums.
    @inline(__always)
    static func referencedBlock<E: LogitElement>(
        _ p: UnsafePointer<E>, from i: inout Int, to end: Int, ahead: Prefetch, _ ma: inout Vector,
        _ mb: inout Vector, _ xa: inout Vector, _ xb: inout Vector, _ body: (Vector, Vector) -> Void
    ) {
        while i < end {
            ahead.touch(i &* MemoryLayout<E>.stride)
            let (a, b) = StatisticsKernel.load32(p, i, mask: nil)
            ma = a.replacing(with: ma, where: ma .> a)
            mb = b.replacing(with: mb, where: mb .> b)
            xa += a
            xb += b
            body(a, b)
            i &+= 32
        }
    }

    /// The row-mass route's pass over one chunk (``RowPipeline/SoftmaxRoute/rowMass``): with
    /// `y = (x − maximum)/T` and `e = exp(y)` over the allowed logits, returns `Σ e` (`z`, within
    /// ``OnlineSoftmax/sumError`` of itself, as
    /// ``chunk(_:count:mask:maximum:indexBase:keep:bound:into:found:ahead:temperature:blockSums:)``'s),
    /// `Σ e·y` (`weighted`, at most 0) and `Σ e²` (`squares`): the moments ε, η and p-less need,
    /// each within ``OnlineSoftmax/momentError`` of itself. The same vector `exp` and lane sums
    /// as the blocks' sums; two more multiply-adds per vector.
    static func chunkMoments<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, maximum: Float, temperature: Float,
        ahead: Prefetch = Prefetch()
    ) -> (z: Double, weighted: Double, squares: Double) {
        let blockLength = StatisticsKernel.blockLength
        guard maximum > -.infinity else { return (0, 0, 0) }
        let scale = Self.scale(temperature: temperature)
        // Every term is `2^u`, and the true exponent is `u + shift`.
        let exponent = Exponent(maximum: maximum, scale: scale)
        let shift = exponent.shift, correction = exponent.correction
        let low = Vector(repeating: -150)
        var sumTotal = 0.0, weighted = 0.0, squares = 0.0
        let vectorEnd = n &- n % 32
        var i = 0
        while i < vectorEnd {
            let end = Swift.min(i &+ blockLength, vectorEnd)
            var lanes = MomentLanes()
            var j = i
            while j < end {
                ahead.touch(j &* MemoryLayout<E>.stride)
                guard let (a, b) = StatisticsKernel.load32Allowed(p, j, mask: mask) else {
                    j &+= 32
                    continue
                }
                // Every exponent is clamped at −150 before its product with its term: a masked
                // lane's −inf, and a finite logit so far below that its exponent overflows (or
                // that `exp2`'s own clamp would give a term of 2^-126 without AVX-512): the
                // product is then at most 150·2^-126, not `−inf`, NaN, or a term times 1e38.
                let rawA = exponent(a), rawB = exponent(b)
                let ua = low.replacing(with: rawA, where: rawA .> low)
                let ub = low.replacing(with: rawB, where: rawB .> low)
                lanes.add(ua, ub, exp2(ua), exp2(ub))
                j &+= 32
            }
            let sums = lanes.sums
            sumTotal += sums.z
            weighted += sums.weighted
            squares += sums.squares
            i = end
        }
        // In units of `y`: `Σ e·y = c·ln 2·(Σ 2^u·u + shift·Σ 2^u)`, `Σ e² = c²·Σ 2^(2u)`.
        weighted = correction * (weighted + shift * sumTotal) * 0.693_147_180_559_945_3
        squares *= correction * correction
        var z = sumTotal * correction
        let factor = Double(scale) / Double(log2eFloat)
        while i < n {
            let x = E.float(p, i)
            if mask.map({ StatisticsKernel.allowed($0, i) }) ?? true, x > -.infinity {
                let y = (Double(x) - Double(maximum)) * factor
                let e = exp(y)
                z += e
                if e > 0 { weighted += e * y }
                squares += e * e
            }
            i &+= 1
        }
        return (z, weighted, squares)
    }

    /// The bytes that the pass reads ``distance`` bytes after those of this chunk (the row's
    /// chunk after next, or the next row's first), prefetched into L1 while this chunk's
    /// exponentials are computed: the exp pass is compute-bound, and without it the hardware
    /// prefetcher idles, so the next chunks' statistics would wait on memory instead of
    /// overlapping with this chunk's arithmetic. A prefetch never faults: past the batch's end it
    /// touches nothing.
    ///
    /// Measured on Zen 5 with a standalone copy of the plain route (maximum pass, then exp pass,
    /// per 4096-logit chunk, B=64 V=128256): the next chunk into L2 left it at 1.37–1.47× a read
    /// of the same bytes from DRAM and 2.15× from L3; 32 KB ahead into L1 (with the statistics
    /// loops' own 8 KB) at 1.11–1.18× and 1.79–1.84×; 16 KB and 48 KB did less, and 32 KB into
    /// L2 too. In the library: plain sampling B=64 V=128256 1.57–1.69× → 1.41–1.48× (DRAM) and
    /// 1.77–1.80× → 1.60–1.67× (warm), at a cost of about 5% on a row already in L2 (B=1 V=49152:
    /// 6.0 → 6.4 µs), whose lines come into L1 early and crowd the chunk being read.
    package struct Prefetch {
        /// How far ahead of the chunk being read, in bytes.
        static let distance = 32768

        var base: UnsafeRawPointer?
        var byteCount = 0

        package init() {}

        /// The prefetch for a pass over `chunk[0..<count]`.
        init<E>(chunk: UnsafePointer<E>, count: Int) {
            base = UnsafeRawPointer(chunk) + Self.distance
            byteCount = count &* MemoryLayout<E>.stride
        }

        /// Prefetches the two cache lines at byte `offset` (a pass at logit `i` of its chunk
        /// touches `i · stride`: 32 logits a step cover the bytes ahead at the same pace).
        @inline(__always)
        func touch(_ offset: Int) {
            guard let base, offset < byteCount else { return }
            topnsigma_prefetch_l1(base + offset)
            topnsigma_prefetch_l1(base + (offset &+ 64))
        }
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
            var held = count
            // Through the storage's memory: a lane written into a vector register and the whole
            // vector read back stalls on every shift.
            withUnsafeMutableBytes(of: &logits) { logitBytes in
                withUnsafeMutableBytes(of: &ids) { idBytes in
                    let logits = logitBytes.bindMemory(to: Float.self), ids = idBytes.bindMemory(to: Int32.self)
                    for k in 0..<n {
                        let x = c[k]
                        if held == keep && !(x.logit > logits[keep &- 1]) { break }
                        var j = held < keep ? held : keep &- 1
                        while j > 0 && logits[j &- 1] < x.logit {
                            logits[j] = logits[j &- 1]
                            ids[j] = ids[j &- 1]
                            j &-= 1
                        }
                        logits[j] = x.logit
                        ids[j] = x.index
                        if held < keep { held &+= 1 }
                    }
                }
            }
            count = held
        }

        /// The bound for the next chunk: the last entry once `keep` are held.
        func bound(keep: Int) -> Float { keep > 0 && count == keep ? logits[keep &- 1] : -.infinity }
    }
}
