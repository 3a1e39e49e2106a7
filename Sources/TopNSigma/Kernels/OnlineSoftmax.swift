#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The softmax of a whole row without a survivor set (Milakov & Gimelshein 2018, "Online
/// normalizer calculation for softmax"): plain temperature sampling and top-p alone.
///
/// During the pass, each chunk, while it is in L1 after its statistics, adds
/// `S_c = Σ exp((x − m_c) / T)` over its allowed logits, with its own maximum `m_c`
/// (``LogprobKernel/chunk(_:count:mask:maximum:indexBase:keep:bound:into:found:ahead:temperature:)``,
/// the same vector `exp` as the logprobs pass). Without a bitmask or edited tokens (AVX-512
/// builds), a chunk after the row's first takes `m_c` from the chunk before it instead, a
/// little above that chunk's maximum, and is read once: its maximum and its sums in one loop
/// (``LogprobKernel/referencedChunk(_:count:previous:temperature:blockSums:moments:ahead:)``; its own
/// maximum where that lies higher). The row's normalizer is
/// `Z = Σ_c S_c · exp((m_c − M) / T)`, `M` the row maximum, in double in chunk order, so it never
/// depends on how chunks were grouped into tasks.
///
/// A draw then needs one chunk: pick it by `u · Z` over the chunk terms, the 32-logit group inside
/// it by the same vector `exp`, and the token inside the group by double-precision weights. The
/// row is read from memory once, plus one chunk from cache.
enum OnlineSoftmax {
    /// A bound on the relative error of a chunk sum (and so of `Z`). A term `2^t` (`t ≤ 0` its
    /// exponent relative to the chunk's reference: its maximum, or for a chunk read against the
    /// chunk before it at most ``LogprobKernel/referenceHeadroom`` (8) above that chunk's
    /// maximum, ``LogprobKernel/referencedChunk(_:count:previous:temperature:blockSums:moments:ahead:)``)
    /// has relative error at most `1.9e-7` (the `exp2` polynomial) `+ 2·2^-24·ln 2·|t|` (the
    /// Float roundings of `log2 e / T` and of the fused exponent); a lane adds at most 32 terms
    /// of a block before the block goes to double, `+ 31·2^-24`. Terms with `|t| ≤ 32` are then
    /// within `4.69e-6`; the others weigh at most `2^-32` of the reference, so at most `2^-24`
    /// of the weight of a logit of the row (the chunk's maximum, or the one before it; at most
    /// `2^-126` clamped: an absolute error, not a relative one), 4096 of them at most per chunk,
    /// so with an error below `1.3e-5` of themselves they add at most `3.2e-9` of that logit's
    /// weight per chunk, and a logit anchors at most two chunks (its own and the next), whose
    /// weights `Z` contains. So at most `4.70e-6`; with slack, `5e-6`.
    static let sumError = 5e-6

    /// A bound on the relative error of the row-mass route's moments `Σ e·y` and `Σ e²`
    /// (``LogprobKernel/chunkMoments(_:count:mask:maximum:temperature:ahead:)``, and
    /// ``LogprobKernel/referencedChunk(_:count:previous:temperature:blockSums:moments:ahead:)``
    /// against a reference up to 8 above the chunk before it).
    /// Every term has the same sign. `e` carries the error of ``sumError``'s terms (at most
    /// `4.68e-6` for `|t| ≤ 32`, `2.83e-6` of it before the lanes' sums); `y`, or `t` in units
    /// of `log2`, is one fused multiply-add of `x` and `log2 e / T` rounded to Float (`2^-23`
    /// relative); `e²` doubles `e`'s error; the lanes add 32 terms of a block before it goes to
    /// double (`31·2^-24`). So at most `7.6e-6` for the terms with `|t| ≤ 32`; the others weigh
    /// below `2^-32·|t|` (`2^-64` for squares) of their reference, so below `2^-24·|t|` (`2^-48`)
    /// of a logit of the row that anchors at most two chunks, at most 4096 of them per chunk.
    /// With slack, `2e-5`.
    static let momentError = 2e-5

    /// Whether the row's weights at `temperature` can be computed by the vector `exp`: a finite,
    /// positive temperature whose `log2 e / T` is a normal Float (no overflow, no underflow).
    @inline(__always)
    static func supports(temperature: Float) -> Bool {
        guard temperature > 0 && temperature.isFinite else { return false }
        let scale = Double(LogprobKernel.log2eFloat) / Double(temperature)
        return scale < 0x1p100 && scale > 0x1p-100
    }

    /// The row's normalizer `Z` relative to its maximum `M`: `Σ_c exp((m_c − M) / T) · Σ_b S_cb`
    /// over the chunks' block sums `S_cb` (``StatisticsKernel/blocksPerChunk`` per chunk).
    static func normalizer(
        sums: UnsafePointer<Double>, maxima: UnsafePointer<Float>, chunks: Int, maximum: Float, temperature: Float
    ) -> Double {
        let blocks = StatisticsKernel.blocksPerChunk
        var z = 0.0
        let m = Double(maximum), t = Double(temperature)
        for c in 0..<chunks where maxima[c] > -.infinity {
            var chunk = 0.0
            for b in 0..<blocks { chunk += sums[c * blocks + b] }
            if chunk > 0 { z += chunk * exp((Double(maxima[c]) - m) / t) }
        }
        return z
    }

    /// The row's ``RowMass`` at `temperature` relative to its maximum `M`, from
    /// the chunks' sums (``RowPipeline/Scratch/chunkMoments``: `Σ e`, `Σ e·y` and `Σ e²` per
    /// chunk, relative to the chunk's maximum `m_c`): `Z = Σ_c f_c·Z_c`,
    /// `Σ e·y = Σ_c f_c·(W_c + Z_c·(m_c − M)/T)` and `Σ e² = Σ_c f_c²·Q_c` with
    /// `f_c = exp((m_c − M)/T)`. Also the bound on its entropy's absolute error, from the chunk
    /// sums' relative bounds (`zError` for `Σ e`, `momentError` for the others) and, where given,
    /// absolute ones per chunk (`absoluteErrors[2c]` on `Σ e`, `absoluteErrors[2c + 1]` on
    /// `Σ e·y`: ``RowPipeline/Scratch/chunkErrors``), scaled to the row's maximum.
    static func rowMass(
        moments: UnsafePointer<Double>, maxima: UnsafePointer<Float>, chunks: Int, maximum: Float, temperature: Float,
        zError: Double, momentError: Double, absoluteErrors: UnsafePointer<Double>? = nil
    ) -> (mass: RowMass, entropyError: Double) {
        let m = Double(maximum), t = Double(temperature)
        var z = 0.0, weighted = 0.0, squares = 0.0, zAbsolute = 0.0, wAbsolute = 0.0
        for c in 0..<chunks where maxima[c] > -.infinity && moments[3 * c] > 0 {
            let y = (Double(maxima[c]) - m) / t
            let f = exp(y)
            z += f * moments[3 * c]
            weighted += f * (moments[3 * c + 1] + moments[3 * c] * y)
            squares += f * f * moments[3 * c + 2]
            if let a = absoluteErrors {
                zAbsolute += f * a[2 * c]
                wAbsolute += f * (a[2 * c + 1] + a[2 * c] * Swift.abs(y))
            }
        }
        let mean = weighted / z
        let entropy = log(z) - mean
        // `log Z` moves by at most `−log(1 − ζ)` (`ζ` its relative error: `zError` and the
        // absolute part over `Z`); `Σ e·y / Z` by its own error over `Z` and by `ζ`; slack for
        // the double arithmetic.
        let zeta = zError + zAbsolute / z
        let error =
            1.01 * zeta + Swift.abs(mean) * 1.01 * (momentError + zeta) + 1.01 * wAbsolute / z
            + 1e-12 * (1 + Swift.abs(entropy))
        return (RowMass(z: z, squares: squares, entropy: entropy), error)
    }

    /// Draws from `p_i ∝ exp((x_i − M) / T)` over the allowed logits of the row at `p` (`mask`:
    /// the effective bitmask, or nil for every logit) with the uniform `u ∈ [0, 1)`, given the
    /// blocks' sums and the chunks' maxima from the pass; the log-probability is
    /// `(x − M)/T − log Z`.
    ///
    /// The block is chosen by its share of `Z` (relative error at most ``sumError``), the group of
    /// 32 logits inside it by Float sums, the token inside the group by double weights: every
    /// token's probability is within about `1e-5` relative of the float64 softmax, far below
    /// what any test of the distribution can see, and the token depends only on (row, `T`, `u`).
    static func draw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, mask: UnsafePointer<UInt32>?, sums: UnsafePointer<Double>,
        maxima: UnsafePointer<Float>, maximum: Float, temperature: Float, uniform u: Double, candidateCount: Int
    ) -> SampledToken {
        let blockLength = StatisticsKernel.blockLength, blocks = StatisticsKernel.blocksPerChunk
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let m = Double(maximum), t = Double(temperature)
        let z = normalizer(sums: sums, maxima: maxima, chunks: chunks, maximum: maximum, temperature: temperature)
        let target = u * z
        // The block: the first whose cumulative share passes the target (the last with mass when
        // rounding leaves the target past them all).
        var block = -1, cumulative = 0.0, local = 0.0
        search: for c in 0..<chunks where maxima[c] > -.infinity {
            let factor = exp((Double(maxima[c]) - m) / t)
            for b in 0..<blocks where sums[c * blocks + b] > 0 {
                let share = sums[c * blocks + b] * factor
                block = c * blocks + b
                local = (target - cumulative) / factor
                cumulative += share
                if cumulative > target { break search }
            }
        }
        guard block >= 0 else { return SampledToken(token: 0, logProbability: 0, candidateCount: 0) }
        let start = block * blockLength
        let token =
            start
            + drawInBlock(
                p + start, count: min(blockLength, vocab - start), mask: mask.map { $0 + start / 32 },
                maximum: maxima[block / blocks], temperature: temperature, target: min(local, sums[block]))
        let logit = Double(E.float(p, token))
        return SampledToken(
            token: TokenID(token), logProbability: (logit - m) / t - log(z), candidateCount: candidateCount)
    }

    /// The token of one block (`p[0..<n]`, `n ≤ 1024`, its chunk's maximum) at cumulative weight
    /// `target` (in units of `exp((x − maximum)/T)`), group by group; an index into the block.
    static func drawInBlock<E: LogitElement>(
        _ p: UnsafePointer<E>, count n: Int, mask: UnsafePointer<UInt32>?, maximum: Float, temperature: Float,
        target: Double
    ) -> Int {
        let exponent = LogprobKernel.Exponent(
            maximum: maximum, scale: LogprobKernel.scale(temperature: temperature))
        let correction = exponent.correction
        var bound = Float.infinity, found = 0
        var none = Candidate(index: 0, logit: 0)
        var cumulative = 0.0
        var group = -1, groupTarget = 0.0, groupSum = 0.0
        var i = 0
        while i &+ 32 <= n {
            let s =
                StatisticsKernel.laneSum(
                    LogprobKernel.block(
                        p, from: i, to: i &+ 32, mask: mask, exponent, indexBase: 0, keep: 0, bound: &bound,
                        into: &none, found: &found,
                        ahead: LogprobKernel.Prefetch())) * correction
            if s > 0 {
                group = i
                groupTarget = target - cumulative
                groupSum = s
                cumulative += s
                if cumulative > target { break }
            }
            i &+= 32
        }
        let mc = Double(maximum), t = Double(temperature)
        func weight(_ j: Int) -> Double {
            if let mask, !StatisticsKernel.allowed(mask, j) { return 0 }
            return SoftmaxWeights.weight(E.float(p, j), maximum: mc, temperature: t)
        }
        if cumulative <= target {
            // The scalar tail, in double.
            var j = i
            while j < n {
                let w = weight(j)
                if w > 0 {
                    cumulative += w
                    if cumulative > target { return j }
                }
                j &+= 1
            }
        }
        if group < 0 {
            // Only the tail carries mass: its last token that does.
            var last = n - 1
            for j in (i..<n).reversed() where weight(j) > 0 {
                last = j
                break
            }
            return last
        }
        // Inside the group: double weights (``SoftmaxWeights``), the target rescaled from the
        // group's Float sum to theirs.
        var w = (SoftmaxWeights.Vector(), SoftmaxWeights.Vector(), SoftmaxWeights.Vector(), SoftmaxWeights.Vector())
        let total = withUnsafeMutableBytes(of: &w) { raw -> Double in
            let lanes = raw.bindMemory(to: Double.self)
            for j in 0..<32 {
                let x = E.float(p, group &+ j)
                lanes[j] =
                    mask.map({ StatisticsKernel.allowed($0, group &+ j) }) ?? true ? (Double(x) - mc) / t : -.infinity
            }
            var sum = 0.0
            for v in 0..<4 {
                let e = SoftmaxWeights.exp(raw.load(fromByteOffset: v * 64, as: SoftmaxWeights.Vector.self))
                raw.storeBytes(of: e, toByteOffset: v * 64, as: SoftmaxWeights.Vector.self)
                sum += e.sum()
            }
            return sum
        }
        guard total > 0 else {
            // A group whose Float sum held only terms clamped at 2^-126: the block's first token
            // at the chunk's maximum, or the group's first allowed token.
            for j in 0..<n where E.float(p, j) == maximum && weight(j) > 0 { return j }
            return group
        }
        let inner = min(groupTarget, groupSum) * (total / groupSum)
        return withUnsafeBytes(of: &w) { raw in
            let lanes = raw.bindMemory(to: Double.self)
            var running = 0.0
            var chosen = -1
            for j in 0..<32 where lanes[j] > 0 {
                chosen = j
                running += lanes[j]
                if running > inner { break }
            }
            return group &+ chosen
        }
    }
}

extension OnlineSoftmax {
    /// `Σ exp((x − M) / T)` over the allowed logits of the row below `threshold` (the mass that
    /// top-p's survivors leave out), by the pass's vector `exp`: relative error at most
    /// ``sumError`` of this tail alone, so that the survivors' exact double mass plus it gives
    /// `Z` far more tightly than the chunks' sums do when a nucleus cut lies close to `p · Z`.
    static func tailSum<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, mask: UnsafePointer<UInt32>?, below threshold: Float, maximum: Float,
        temperature: Float
    ) -> Double {
        typealias Vector = LogprobKernel.Vector
        let exponent = LogprobKernel.Exponent(
            maximum: maximum, scale: LogprobKernel.scale(temperature: temperature))
        let correction = exponent.correction
        let t = Vector(repeating: threshold), negInf = Vector(repeating: -.infinity)
        var total = 0.0
        var i = 0
        while i < vocab {
            // Blocks of at most 1024 logits: 32 Float terms a lane before the sum goes to double.
            let end = min(vocab, i &+ StatisticsKernel.blockLength)
            var a0 = Vector(), b0 = Vector()
            while i &+ 32 <= end {
                let (a, b) = StatisticsKernel.load32(p, i, mask: mask)
                let ea = LogprobKernel.exp2(exponent(a))
                let eb = LogprobKernel.exp2(exponent(b))
                a0 += ea.replacing(with: 0, where: a .>= t .| a .== negInf)
                b0 += eb.replacing(with: 0, where: b .>= t .| b .== negInf)
                i &+= 32
            }
            total += StatisticsKernel.laneSum(a0 + b0) * correction
            while i < end {
                let x = E.float(p, i)
                if mask.map({ StatisticsKernel.allowed($0, i) }) ?? true, x < threshold, x > -.infinity {
                    total += SoftmaxWeights.weight(x, maximum: Double(maximum), temperature: Double(temperature))
                }
                i &+= 1
            }
        }
        return total
    }
}

/// Sums over the whole processed row at temperature `T`, relative to its maximum `M`: with
/// `e_i = exp((x_i − M)/T)`, `z = Σ e_i`, `squares = Σ e_i²` and the entropy
/// `log z − Σ e_i·(x_i − M)/T / z`.
package struct RowMass: Equatable {
    package var z: Double
    package var squares: Double
    package var entropy: Double
}
