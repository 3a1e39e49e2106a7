import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RowPipeline {
    /// How a row without a threshold filter is drawn (``OnlineSoftmax``).
    enum SoftmaxRoute: Equatable {
        /// No truncation: the draw needs only the chunks' sums.
        case plain
        /// top-p alone: after the pass, the survivors are gathered at `max − depth·T` (a cut
        /// below which the whole row's mass is almost never needed); the draw widens it when it is.
        case nucleus(depth: Double)
        /// ε, η or p-less without a threshold filter (and the samplers after them, over what they
        /// keep): the pass also sums `e·y` and `e²` per chunk, their cuts on the logits follow
        /// from the row's mass within its error bound, and the row is gathered at the lowest cut
        /// the bound allows (``RowPipeline/rowMassDraw(_:vocab:statistics:parameters:step:scratch:mask:)``).
        case rowMass
        /// The dynamic temperature alone: once the pass has found the row's maximum, `e` and `e·y`
        /// are summed at temperature 1 from cache, the logits near the maximum in double precision
        /// and the rest in Float with a bound (``RowPipeline/dynamicTemperatureSums(_:vocab:maximum:scratch:mask:)``),
        /// the row's entropy gives the temperature, and the row's sums are taken again at it from cache
        /// (``RowPipeline/dynamicTemperatureDraw(_:vocab:statistics:parameters:step:scratch:mask:)``).
        case dynamicTemperature
        /// typical-p alone: the pass sums `e` and `e·y` (in Float lanes; again in double
        /// precision, ``WideExp``, where that leaves the set undecided), the row's entropy places
        /// the center, and the row is gathered within a distance of it that
        /// holds the mass (``RowPipeline/typicalDraw(_:vocab:statistics:parameters:step:scratch:mask:)``).
        case typical
        /// XTC alone: the pass sums as plain sampling does; when the coin applies XTC, the tokens
        /// at or above its threshold are gathered, all but the last leave the row's bitmask, and
        /// their chunks' sums are taken again (``RowPipeline/xtcDraw(_:vocab:statistics:parameters:step:scratch:mask:)``).
        case xtc

        var depth: Double? {
            if case .nucleus(let depth) = self { return depth }
            return nil
        }

        /// The temperature of the pass's Float moments (``LogprobKernel/chunkMoments(_:count:mask:maximum:temperature:ahead:)``),
        /// nil for the routes that need only the blocks' sums and for the dynamic temperature's
        /// (its settle takes ``WideExp/splitMass(_:count:mask:maximum:cut:buffer:)`` at temperature 1).
        func momentsTemperature(_ parameters: SamplingParameters) -> Float? {
            switch self {
            case .rowMass, .typical: parameters.temperature
            default: nil
            }
        }

        /// The relative error bounds of the pass's moments on this route: the Float kernel's
        /// (``OnlineSoftmax/sumError``, ``OnlineSoftmax/momentError``), or on the dynamic
        /// temperature's route the double one's (``WideExp/massError(vocab:)``), for the logits it
        /// takes in double (its Float part has absolute bounds, ``RowPipeline/Scratch/chunkErrors``).
        func momentErrors(vocab: Int) -> (z: Double, moments: Double) {
            self == .dynamicTemperature
                ? (WideExp.massError(vocab: vocab), WideExp.massError(vocab: vocab))
                : (OnlineSoftmax.sumError + 1e-12, OnlineSoftmax.momentError + 1e-12)
        }
    }

    /// The row's softmax route, or nil for the survivor pipeline: a row with Top-nσ, min-p or
    /// top-k (their thresholds bound the survivors), edited tokens other than on plain
    /// sampling, logprobs (they need the survivors), another sampler (``ExtendedTruncation``) unless ε, η or p-less cut the row
    /// first (``SoftmaxRoute/rowMass``) or it is typical-p, the dynamic temperature or XTC alone, a sampler
    /// order, or a temperature the vector `exp` cannot take (0, `+inf`, extreme).
    static func softmaxRoute(_ parameters: SamplingParameters, _ state: ProcessingState) -> SoftmaxRoute? {
        guard parameters.passNSigma == nil, parameters.passMinP == nil, parameters.passTopK == nil,
            state.topLogprobs < 0, OnlineSoftmax.supports(temperature: parameters.temperature)
        else { return nil }
        // Edited tokens (bias, penalties, DRY) join plain sampling's draw from their processed
        // logits (``RowPipeline/plainDraw(_:vocab:statistics:parameters:step:scratch:mask:)``).
        if state.editCount > 0 {
            return !parameters.usesExtendedSamplers && (parameters.topP ?? 1) >= 1 ? .plain : nil
        }
        if parameters.usesExtendedSamplers {
            guard parameters.order == nil else { return nil }
            if ExtendedTruncation.needsRowMass(parameters) { return .rowMass }
            guard parameters.topP == nil else { return nil }
            let dynamic = parameters.dynamicTemperatureRange != nil, xtc = parameters.xtcThreshold != nil
            if let typical = parameters.typicalP { return typical < 1 && !dynamic && !xtc ? .typical : nil }
            return dynamic && !xtc ? .dynamicTemperature : xtc && !dynamic ? .xtc : nil
        }
        guard let p = parameters.topP, p < 1 else { return .plain }
        return .nucleus(depth: nucleusDepth(p))
    }

    /// The first collection depth for top-p `p`, in units of `T`: `2·ln(1/(1 − p)) + 2.5`, at
    /// most 9.5 (3.9 at p = 0.5, 7.1 at 0.9, 8.5 at 0.95, 9.5 at 0.99). On 64 real SmolLM2 rows
    /// at T = 1 the nucleus never reached below 3.3, 6.7, 8.0 and 11.4, and a median of 3, 9, 37
    /// and 255 tokens lie within 3, 5, 8 and 12 of the maximum: a deeper first cut costs a few
    /// survivors, a shallow one a second pass over the row. Past about 9.5 the survivors grow
    /// faster than the rows that need the second pass cost: at p = 0.99 the cap at 9.5 (from
    /// 11.7) took real rows at B=1 from 10.7–12.1 to 8.5–9.1× the read floor (Zen 5).
    static func nucleusDepth(_ p: Float) -> Double { min(2 * log(1 / (1 - Double(p))) + 2.5, 9.5) }

    /// The `k` of a row whose top-k is cut as a threshold during the pass (``TopKBound``): every
    /// sampled row with top-k and no edited tokens.
    static func topKRoute(_ parameters: SamplingParameters, _ state: ProcessingState) -> Int? {
        guard parameters.temperature != 0, state.editCount == 0, let k = parameters.passTopK, k >= 1 else { return nil }
        // A vocabulary is below `Int32.max`: any larger `k` keeps the whole row just the same,
        // and the clamp keeps the bound's arithmetic (`k + k / 2`) far from overflow.
        return min(k, Int(Int32.max))
    }

    /// The draw of a row on a softmax route: plain sampling from the chunks' sums alone; top-p
    /// alone from the survivors at or above `max − depth·T` when their mass holds the nucleus
    /// for certain (given `Z`'s error bound), the depth raised 1.5× and the row compacted again
    /// when it does not. When the nucleus cut lies within `Z`'s bound, `Z` is tightened once to
    /// the survivors' exact mass plus the tail below them (``OnlineSoftmax/tailSum``); when it
    /// still does, or the depth passes 64, the whole row is taken in double precision (the
    /// survivor pipeline's top-p).
    static func softmaxDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, route: SoftmaxRoute, statistics: RowStatistics,
        parameters: SamplingParameters, step: UInt64, count: Int, scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        switch route {
        case .rowMass:
            return rowMassDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .dynamicTemperature:
            return dynamicTemperatureDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .typical:
            return typicalDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .xtc:
            return xtcDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        case .plain, .nucleus: break
        }
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        guard case .nucleus(var depth) = route, let p32 = parameters.topP else {
            return plainDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        }
        let m = Double(statistics.maximum), t = Double(parameters.temperature), topP = Double(p32)
        var z = OnlineSoftmax.normalizer(
            sums: scratch.drawSums, maxima: scratch.chunkMaxima, chunks: chunks, maximum: statistics.maximum,
            temperature: parameters.temperature)
        // The bound on Z's absolute error: the chunk sums' relative bound, and slack for the
        // double sums' own rounding.
        var zError = (OnlineSoftmax.sumError + 1e-12) * z
        let c = scratch.candidates, w = scratch.weights
        // The survivors are gathered after the pass, at the row's own maximum: a cut from the
        // running maximum during the pass reached deep into the row until the row's top token had
        // been read (half the row on average when it lies at a random id).
        var cut = floatThreshold(m - depth * t)
        var count = recollect(p, vocab: vocab, threshold: cut, scratch: scratch, mask: mask)
        var tightened = false
        while true {
            // The survivors are every logit at or above `cut`, so the nucleus of the whole row is
            // a prefix of them in key order whenever their mass reaches p·Z for every Z within
            // its bound.
            let mass = SoftmaxWeights.compute(
                c, count: count, maximum: statistics.maximum, temperature: parameters.temperature, into: w)
            if mass >= topP * (z + 2 * zError) {
                let need = topP * z, slack = topP * zError
                if 2 * count > vocab {
                    // No room for the cut's logit copy (a row as flat as that): the in-place
                    // weighted selection.
                    let kept = Truncation.nucleus(c, w, count: count, need: need)
                    var keptMass = 0.0, last = 0
                    for j in 0..<kept {
                        keptMass += w[j]
                        if Candidate.precedes(c[last], c[j]) { last = j }
                    }
                    guard keptMass >= need + slack && keptMass - w[last] < need - slack else { break }
                    Truncation.sortByIndex(c, count: kept)
                    return DrawKernel.draw(
                        UnsafeBufferPointer(start: c, count: kept), maximum: statistics.maximum,
                        temperature: parameters.temperature, uniform: u, weights: w)
                }
                // The nucleus: every survivor above the cut value, then the ties at it by id
                // (the survivors are in id order) until the mass reaches `need`. The logits'
                // double copy goes after the weights.
                let edge = Truncation.nucleusCut(c, w, count: count, need: need, logits: w + count)
                var keptMass = edge.above, lastTie = 0.0, ties = 0
                for j in 0..<count where c[j].logit == edge.value {
                    keptMass += w[j]
                    lastTie = w[j]
                    ties &+= 1
                    if keptMass >= need { break }
                }
                if keptMass >= need + slack && keptMass - lastTie < need - slack {
                    var kept = 0, tiesLeft = ties
                    for j in 0..<count {
                        let x = c[j].logit
                        guard x > edge.value || (x == edge.value && tiesLeft > 0) else { continue }
                        if x == edge.value { tiesLeft &-= 1 }
                        c[kept] = c[j]
                        kept &+= 1
                    }
                    return DrawKernel.draw(
                        UnsafeBufferPointer(start: c, count: kept), maximum: statistics.maximum,
                        temperature: parameters.temperature, uniform: u, weights: w)
                }
                guard !tightened else { break }
                // The cut lies within Z's bound: Z again, as the survivors' exact mass plus the
                // tail below them by the vector exp, whose error bound is the tail's alone.
                tightened = true
                let tail = OnlineSoftmax.tailSum(
                    p, vocab: vocab, mask: mask, below: cut, maximum: statistics.maximum,
                    temperature: parameters.temperature)
                z = mass + tail
                zError = OnlineSoftmax.sumError * tail + 1e-12 * z
                continue
            }
            guard depth < 64 else { break }
            depth *= 1.5
            cut = floatThreshold(m - depth * t)
            count = recollect(p, vocab: vocab, threshold: cut, scratch: scratch, mask: mask)
        }
        // Undecided within Z's bound (or a row whose mass lies that deep): every allowed logit,
        // top-p over their double weights.
        return exactDraw(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch, mask: mask)
    }

    /// The draw of a row on the row-mass route (``SoftmaxRoute/rowMass``). ε's and η's cut
    /// (keep `x > strict`) and p-less's (keep `x >= atLeast`) follow from the row's mass; from the
    /// pass's Float sums each is known within a band (``OnlineSoftmax/rowMass(moments:maxima:chunks:maximum:temperature:zError:momentError:)``'s
    /// bounds, through ``ExtendedTruncation/cuts(_:mass:maximum:)``, which is monotone in each).
    /// The row is gathered at the lowest cut the bands allow. When no gathered logit but the
    /// maximum lies within a band, every mass within the bounds keeps the same set, so the
    /// estimate decides as the float64 mass would; otherwise the row's mass is taken again in
    /// double precision (rare). Then the rest of the truncation over what is gathered
    /// (``ExtendedTruncation/apply(_:count:weights:maximum:parameters:mass:step:)``), and the
    /// draw.
    static func rowMassDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let errors = SoftmaxRoute.rowMass.momentErrors(vocab: vocab)
        let estimate = rowMass(
            vocab: vocab, statistics: statistics, temperature: parameters.temperature, scratch: scratch, errors: errors)
        let mass = estimate.mass
        let zError = errors.z, qError = errors.moments
        func corner(_ z: Double, _ squares: Double, _ entropy: Double) -> (strict: Double, atLeast: Double) {
            ExtendedTruncation.cuts(
                parameters, mass: .init(z: mass.z * z, squares: mass.squares * squares, entropy: entropy),
                maximum: statistics.maximum)
        }
        let (h, dh) = (mass.entropy, estimate.entropyError)
        let low = corner(1 - zError, 1 - qError, h + dh), high = corner(1 + zError, 1 + qError, h - dh)
        // ε and η's cut rises with Z and falls with H; p-less's rises with Σe² and falls with Z.
        let strictLow = low.strict, strictHigh = high.strict
        let atLeastLow = corner(1 + zError, 1 - qError, h).atLeast
        let atLeastHigh = corner(1 - zError, 1 + qError, h).atLeast
        func widened(_ x: Double, by sign: Double) -> Double {
            x.isFinite ? x + sign * (1e-9 + 1e-12 * Swift.abs(x)) : x
        }
        let gatherAt = Swift.min(
            Double(statistics.maximum), widened(Swift.max(strictLow, atLeastLow), by: -1))
        let count = recollect(p, vocab: vocab, threshold: floatThreshold(gatherAt), scratch: scratch, mask: mask)
        let c = scratch.candidates
        let bands = [
            (widened(strictLow, by: -1), widened(strictHigh, by: 1)),
            (widened(atLeastLow, by: -1), widened(atLeastHigh, by: 1))
        ]
        var undecided = false
        scan: for j in 0..<count where c[j].logit != statistics.maximum {
            let x = Double(c[j].logit)
            for (a, b) in bands where x >= a && x <= b {
                undecided = true
                break scan
            }
        }
        if undecided {
            return exactDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        }
        let (kept, temperature, maximum) = ExtendedTruncation.apply(
            c, count: count, weights: scratch.weights, maximum: statistics.maximum, parameters: parameters,
            mass: mass, step: step)
        return DrawKernel.draw(
            UnsafeBufferPointer(start: c, count: kept), maximum: maximum, temperature: temperature,
            uniform: Philox4x32(seed: parameters.seed).uniform(step: step), weights: scratch.weights)
    }

    /// Plain sampling's draw: the chunks' sums alone (``OnlineSoftmax/draw(_:vocab:mask:sums:maxima:maximum:temperature:uniform:candidateCount:)``),
    /// or with edited tokens (their processed logits, outside the effective bitmask the sums
    /// were taken through) `Z` as the blocks' share plus the edits' exact weights: a target in
    /// the blocks' share draws there, one past it the edit where the cumulative weight passes
    /// it (the edits after the blocks, in their order).
    static func plainDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        let edits = scratch.state.pointee.editCount
        guard edits > 0 else {
            return OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: u,
                candidateCount: statistics.finiteCount)
        }
        let m = Double(statistics.maximum), t = Double(parameters.temperature)
        let blocks = OnlineSoftmax.normalizer(
            sums: scratch.drawSums, maxima: scratch.chunkMaxima, chunks: StatisticsKernel.chunkCount(length: vocab),
            maximum: statistics.maximum, temperature: parameters.temperature)
        var edited = 0.0
        for k in 0..<edits where scratch.edits[k].value > -.infinity {
            edited += SoftmaxWeights.weight(scratch.edits[k].value, maximum: m, temperature: t)
        }
        let z = blocks + edited
        let target = u * z
        if target < blocks {
            var drawn = OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: target / blocks,
                candidateCount: statistics.finiteCount)
            // Its log-probability is relative to the blocks' share: to the row's.
            drawn.logProbability += log(blocks) - log(z)
            return drawn
        }
        var cumulative = blocks, chosen = -1
        for k in 0..<edits where scratch.edits[k].value > -.infinity {
            chosen = k
            cumulative += SoftmaxWeights.weight(scratch.edits[k].value, maximum: m, temperature: t)
            if cumulative > target { break }
        }
        guard chosen >= 0 else {
            return OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: u,
                candidateCount: statistics.finiteCount)
        }
        let value = Double(scratch.edits[chosen].value)
        return SampledToken(
            token: scratch.edits[chosen].token, logProbability: (value - m) / t - log(z),
            candidateCount: statistics.finiteCount)
    }

    /// A softmax route's row that its Float sums leave undecided (rare): every allowed logit
    /// gathered, and the survivor pipeline's truncation and draw in double precision, exactly as
    /// a row off the routes. Counted in ``exactRecomputations``.
    static func exactDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        exactRecomputations.add(1, ordering: .relaxed)
        let count = recollect(p, vocab: vocab, threshold: -.greatestFiniteMagnitude, scratch: scratch, mask: mask)
        return draw(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, count: count, scratch: scratch)
    }

    /// The draw of a row on the dynamic-temperature route (``SoftmaxRoute/dynamicTemperature``):
    /// the temperature from the row's entropy at temperature 1 when both ends of the entropy's
    /// error bound round to the same Float temperature (``settledTemperature(vocab:statistics:parameters:scratch:split:)``):
    /// first from sums taken from cache once the row's maximum is known (the logits near it in
    /// double, the others by the Float `exp`, ``dynamicTemperatureSums(_:vocab:maximum:scratch:mask:)``), where their bound straddles
    /// a rounding from double sums of every logit taken again from cache, and where those do too
    /// by the survivor pipeline (``exactDraw``); then the row's blocks' sums at that temperature,
    /// chunk by chunk from cache, and the plain draw (greedy at temperature 0).
    static func dynamicTemperatureDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let chunks = StatisticsKernel.chunkCount(length: vocab), n = statistics.finiteCount
        dynamicTemperatureSums(p, vocab: vocab, maximum: statistics.maximum, scratch: scratch, mask: mask)
        var settled = settledTemperature(
            vocab: vocab, statistics: statistics, parameters: parameters, scratch: scratch, split: true)
        if settled == nil {
            entropyRetries.add(1, ordering: .relaxed)
            doubleMoments(p, vocab: vocab, mask: mask, temperature: 1, scratch: scratch)
            settled = settledTemperature(
                vocab: vocab, statistics: statistics, parameters: parameters, scratch: scratch, split: false)
        }
        guard let temperature = settled, temperature == 0 || OnlineSoftmax.supports(temperature: temperature) else {
            return exactDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
        }
        // Greedy over the row: its first token in key order.
        if temperature == 0 {
            return SampledToken(token: TokenID(statistics.argmax), logProbability: 0, candidateCount: 1)
        }
        for c in 0..<chunks {
            blockSums(p, vocab: vocab, chunk: c, mask: mask, temperature: temperature, scratch: scratch)
        }
        return OnlineSoftmax.draw(
            p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
            maximum: statistics.maximum, temperature: temperature,
            uniform: Philox4x32(seed: parameters.seed).uniform(step: step), candidateCount: n)
    }

    /// Every chunk's sums at temperature 1 for the dynamic temperature, from cache once the
    /// pass has found the row's maximum `maximum` (``WideExp/splitMass(_:count:mask:maximum:cut:buffer:)``,
    /// into ``RowPipeline/Scratch/chunkMoments`` and ``RowPipeline/Scratch/chunkErrors``): the
    /// logits within ``WideExp/splitDepth`` of it in double, the others by the Float `exp`. In
    /// the pass, the cut came from the running maximum and lay deep in the row until the row's
    /// top token had been read (half of it on average for a top token at a random id, all of
    /// it in double).
    static func dynamicTemperatureSums<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, maximum: Float, scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) {
        let chunkLength = StatisticsKernel.chunkLength
        for c in 0..<StatisticsKernel.chunkCount(length: vocab) {
            let start = c * chunkLength
            let length = min(chunkLength, vocab - start)
            // The chunk's own candidate slots (unused on this route) hold a half-precision chunk's
            // Float conversion and the logits taken in double.
            let split = (scratch.candidates + start).withMemoryRebound(to: Float.self, capacity: 2 * length) {
                WideExp.splitMass(
                    p + start, count: length, mask: mask.map { $0 + start / 32 }, maximum: scratch.chunkMaxima[c],
                    cut: maximum - WideExp.splitDepth, buffer: $0)
            }
            scratch.storeMoments(split.moments, chunk: c)
            scratch.chunkErrors[2 * c] = split.zError
            scratch.chunkErrors[2 * c + 1] = split.weightedError
        }
    }

    /// Every chunk's `Σ e`, `Σ e·y` and `Σ e²` at `temperature` again from cache, in double
    /// precision (``WideExp/chunkMass(_:count:mask:maximum:temperature:buffer:)``), into
    /// ``RowPipeline/Scratch/chunkMoments``: the second try of the routes whose Float sums left a
    /// row undecided. Each chunk's candidate slots hold a half-precision chunk's conversion.
    static func doubleMoments<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, mask: UnsafePointer<UInt32>?, temperature: Float, scratch: Scratch
    ) {
        let chunkLength = StatisticsKernel.chunkLength
        for c in 0..<StatisticsKernel.chunkCount(length: vocab) {
            let start = c * chunkLength
            let length = min(chunkLength, vocab - start)
            let moments = (scratch.candidates + start).withMemoryRebound(to: Float.self, capacity: length) {
                WideExp.chunkMass(
                    p + start, count: length, mask: mask.map { $0 + start / 32 }, maximum: scratch.chunkMaxima[c],
                    temperature: temperature, buffer: $0)
            }
            scratch.storeMoments(moments, chunk: c)
        }
    }

    /// The dynamic temperature from the chunks' moments at temperature 1 in `scratch`, or nil
    /// when the ends of the entropy's error bound round to different Float temperatures. The
    /// bound is the double sums' relative one (``SoftmaxRoute/momentErrors(vocab:)``), with
    /// `split` also the Float part's absolute bounds (``RowPipeline/Scratch/chunkErrors``).
    static func settledTemperature(
        vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, scratch: Scratch, split: Bool
    ) -> Float? {
        let estimate = rowMass(
            vocab: vocab, statistics: statistics, temperature: 1, scratch: scratch,
            errors: SoftmaxRoute.dynamicTemperature.momentErrors(vocab: vocab),
            absoluteErrors: split ? UnsafePointer(scratch.chunkErrors) : nil)
        let n = statistics.finiteCount
        let h = estimate.mass.entropy, dh = estimate.entropyError
        guard dh.isFinite else { return nil }
        let temperature = ExtendedTruncation.dynamicTemperature(entropy: h - dh, count: n, parameters: parameters)
        guard temperature == ExtendedTruncation.dynamicTemperature(entropy: h + dh, count: n, parameters: parameters)
        else { return nil }
        return temperature
    }

    /// The draw of a row on typical-p's route (``SoftmaxRoute/typical``). The row's mass `Z` and
    /// center `ȳ = Σ e·y / Z` come from the pass's Float moments, or where those leave the set
    /// undecided from double ones (``WideExp``) taken again from cache, so the pivot `M + T·ȳ` is
    /// known within a bound `δ`. The kept set is a prefix in distance from the
    /// pivot: the tokens within the widest of eight radii (`12·T`) are gathered (from the blocks
    /// that reach its lower end), the smallest radius whose Float mass over them holds `p·Z` with
    /// room to spare (``WideExp/intervalMasses(_:count:maximum:temperature:pivot:radii:)``)
    /// bounds the set, and the weighted selection of the survivor pipeline runs over the tokens
    /// within it. The float64 set is the one found when the gathered mass holds `p·Z`, the
    /// selection's crossing is clear of `Z`'s bound, and no token lies within `2δ` of the last
    /// kept one's distance with another logit (a pivot anywhere within its bound then orders
    /// them alike); otherwise the next try, and after the double one ``exactDraw``.
    static func typicalDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        // First from the pass's Float moments; where they leave the set undecided, from double
        // ones taken again from cache (``WideExp``); then the survivor pipeline.
        if let drawn = typicalAttempt(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch, mask: mask,
            errors: SoftmaxRoute.typical.momentErrors(vocab: vocab))
        {
            return drawn
        }
        doubleMoments(p, vocab: vocab, mask: mask, temperature: parameters.temperature, scratch: scratch)
        let double = WideExp.massError(vocab: vocab)
        return typicalAttempt(
            p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch, mask: mask,
            errors: (double, double))
            ?? exactDraw(
                p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                mask: mask)
    }

    /// One try of ``typicalDraw``: the chunks' moments in `scratch.chunkMoments` with relative
    /// error bounds `errors`; nil where they leave the kept set undecided.
    static func typicalAttempt<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?, errors: (z: Double, moments: Double)
    ) -> SampledToken? {
        let estimate = rowMass(
            vocab: vocab, statistics: statistics, temperature: parameters.temperature, scratch: scratch, errors: errors)
        let m = Double(statistics.maximum), t = Double(parameters.temperature)
        let z = estimate.mass.z
        guard z > 0 && z.isFinite else { return nil }
        let center = log(z) - estimate.mass.entropy
        let order = TypicalOrder(center: center, maximum: m, temperature: t)
        // The center is `log Z − H`: within the entropy's bound and `log Z`'s again.
        let delta = t * (2 * estimate.entropyError + 1e-12 * Swift.abs(center)) + 1e-12 * Swift.abs(order.pivot)
        let need = Double(parameters.typicalP ?? 1) * z
        let slack = need * 2 * errors.z + 1e-12 * z
        let scales: SIMD8<Float> = [0.25, 0.5, 1, 1.5, 2.25, 3.5, 6, 12]
        // Every token within the widest radius, gathered from the blocks that reach its lower end
        // (on real rows a few percent of the row): the radii's masses are taken over these alone,
        // not over the whole row.
        let widest = Double(scales[7]) * t + delta
        var count = recollect(
            p, vocab: vocab, threshold: floatThreshold(order.pivot - widest), scratch: scratch, mask: mask)
        let c = scratch.candidates, w = scratch.weights
        func keep(within radius: Double) {
            var within = 0
            for j in 0..<count where order.distance(c[j]) <= radius {
                c[within] = c[j]
                within &+= 1
            }
            count = within
        }
        keep(within: widest)
        // Their logits in the weights' region (written only below), and the Float pass's radii a
        // hair inside the double ones they stand for.
        let masses = w.withMemoryRebound(to: Float.self, capacity: 2 * vocab) { logits in
            for j in 0..<count { logits[j] = c[j].logit }
            return WideExp.intervalMasses(
                logits, count: count, maximum: statistics.maximum, temperature: parameters.temperature,
                pivot: Float(order.pivot), radii: scales * Float(t * (1 - 1e-5)))
        }
        var level = 0
        while level < 8 && masses[level] < need * (1 + 1e-4) { level += 1 }
        guard level < 8 else { return nil }
        // Exactly the tokens within the radius of the pivot: a prefix of the row in typical order.
        keep(within: Double(scales[level]) * t + delta)
        let gathered = SoftmaxWeights.compute(
            c, count: count, maximum: statistics.maximum, temperature: parameters.temperature, into: w)
        guard gathered >= need + slack else { return nil }
        let kept = Truncation.nucleus(c, w, count: count, need: need, order: order)
        var keptMass = 0.0, last = 0
        for j in 0..<kept {
            keptMass += w[j]
            if order.precedes(c[last], c[j]) { last = j }
        }
        guard kept > 0 && keptMass >= need + slack && keptMass - w[last] < need - slack else { return nil }
        let edge = order.distance(c[last])
        for j in 0..<count where j != last && c[j].logit != c[last].logit {
            if Swift.abs(order.distance(c[j]) - edge) <= 2 * delta { return nil }
        }
        Truncation.sortByIndex(c, count: kept)
        return DrawKernel.draw(
            UnsafeBufferPointer(start: c, count: kept), maximum: ExtendedTruncation.setMaximum(c, count: kept),
            temperature: parameters.temperature, uniform: Philox4x32(seed: parameters.seed).uniform(step: step),
            weights: w)
    }

    /// The draw of a row on the XTC route (``SoftmaxRoute/xtc``). When the coin applies XTC, its
    /// cut `p_i >= threshold`, `x_i >= M + T·log(threshold·Z)`, is placed within `Z`'s bound;
    /// the row is gathered at its lower end (a few tokens: at most about `1/threshold`), and a
    /// gathered logit inside the bound takes the float64 route (``exactDraw``). With two or more
    /// at or above the cut, all of them but the last in key order leave the row's effective
    /// bitmask (in the scratch), their chunks' sums are taken again without them, and the row is
    /// drawn as plain sampling is: the float64 distribution of the rest.
    static func xtcDraw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> SampledToken {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        func plain(_ mask: UnsafePointer<UInt32>?, removed: Int) -> SampledToken {
            OnlineSoftmax.draw(
                p, vocab: vocab, mask: mask, sums: scratch.drawSums, maxima: scratch.chunkMaxima,
                maximum: statistics.maximum, temperature: parameters.temperature, uniform: u,
                candidateCount: statistics.finiteCount - removed)
        }
        guard let threshold = parameters.xtcThreshold,
            Philox4x32(seed: parameters.seed).uniform(step: step, stream: SamplingParameters.xtcStream)
                < Double(parameters.xtcProbability)
        else { return plain(mask, removed: 0) }
        let z = OnlineSoftmax.normalizer(
            sums: scratch.drawSums, maxima: scratch.chunkMaxima, chunks: chunks, maximum: statistics.maximum,
            temperature: parameters.temperature)
        let m = Double(statistics.maximum), t = Double(parameters.temperature)
        let zError = OnlineSoftmax.sumError + 1e-12
        let low = m + t * log(Double(threshold) * z * (1 - zError)),
            high = m + t * log(Double(threshold) * z * (1 + zError))
        let lowCut = low - (1e-9 + 1e-12 * Swift.abs(low)), highCut = high + (1e-9 + 1e-12 * Swift.abs(high))
        // No token can reach the cut: XTC removes nothing.
        guard lowCut <= m else { return plain(mask, removed: 0) }
        let count = recollect(p, vocab: vocab, threshold: floatThreshold(lowCut), scratch: scratch, mask: mask)
        let c = scratch.candidates
        var last = -1
        for j in 0..<count {
            let x = Double(c[j].logit)
            if x <= highCut {
                return exactDraw(
                    p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, scratch: scratch,
                    mask: mask)
            }
            if last < 0 || Candidate.precedes(c[last], c[j]) { last = j }
        }
        guard count >= 2 else { return plain(mask, removed: 0) }
        // Every gathered token but the last leaves the effective bitmask.
        let words = (vocab + 31) / 32
        if mask == nil { scratch.mask.update(repeating: ~0, count: words) }
        var previousChunk = -1
        let chunkLength = StatisticsKernel.chunkLength
        for j in 0..<count where j != last {
            let i = Int(c[j].index)
            scratch.mask[i / 32] &= ~(1 << UInt32(i % 32))
        }
        // The chunks that lost a token (the gathered ones are in id order): their sums again.
        for j in 0..<count where j != last {
            let chunk = Int(c[j].index) / chunkLength
            guard chunk != previousChunk else { continue }
            previousChunk = chunk
            blockSums(
                p, vocab: vocab, chunk: chunk, mask: UnsafePointer(scratch.mask), temperature: parameters.temperature,
                scratch: scratch)
        }
        return plain(UnsafePointer(scratch.mask), removed: count - 1)
    }

    /// Chunk `c`'s block sums `Σ exp((x − m_c)/T)` at `temperature` (``OnlineSoftmax``) into
    /// `scratch.drawSums`, relative to `scratch.chunkMaxima[c]`, over the logits `mask` allows
    /// (the row's bitmask, or nil for all): in the pass, or again from cache when the
    /// temperature or the mask changed (the dynamic temperature, XTC).
    static func blockSums<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, chunk c: Int, mask: UnsafePointer<UInt32>?, temperature: Float,
        scratch: Scratch, ahead: LogprobKernel.Prefetch = LogprobKernel.Prefetch()
    ) {
        let start = c * StatisticsKernel.chunkLength
        var bound = Float.infinity, found = 0
        // keep 0: nothing is written to the top list.
        _ = LogprobKernel.chunk(
            p + start, count: min(StatisticsKernel.chunkLength, vocab - start), mask: mask.map { $0 + start / 32 },
            maximum: scratch.chunkMaxima[c], indexBase: start, keep: 0, bound: &bound, into: scratch.topTokens,
            found: &found, ahead: ahead, temperature: temperature,
            blockSums: scratch.drawSums + c * StatisticsKernel.blocksPerChunk)
    }

    /// The row's ``RowMass`` at `temperature` from the chunks' moments in
    /// `scratch` (``Scratch/storeMoments(_:chunk:)``), with their relative error bounds `errors`,
    /// and the bound on its entropy (``OnlineSoftmax/rowMass(moments:maxima:chunks:maximum:temperature:zError:momentError:)``).
    static func rowMass(
        vocab: Int, statistics: RowStatistics, temperature: Float, scratch: Scratch,
        errors: (z: Double, moments: Double), absoluteErrors: UnsafePointer<Double>? = nil
    ) -> (mass: RowMass, entropyError: Double) {
        OnlineSoftmax.rowMass(
            moments: scratch.chunkMoments, maxima: scratch.chunkMaxima,
            chunks: StatisticsKernel.chunkCount(length: vocab), maximum: statistics.maximum,
            temperature: temperature, zError: errors.z, momentError: errors.moments, absoluteErrors: absoluteErrors)
    }

    /// Compacts every chunk of the row at `threshold` from the row (whatever the slots held,
    /// ``compactChunk``: only the blocks whose maximum in the pass reaches it) and gathers the
    /// survivors in id order; returns their count.
    static func recollect<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, threshold: Float, scratch: Scratch, mask: UnsafePointer<UInt32>?
    ) -> Int {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        for c in 0..<chunks {
            compactChunk(p, vocab: vocab, chunk: c, threshold: threshold, scratch: scratch, mask: mask)
        }
        return gather(chunks: chunks, scratch: scratch)
    }
}
