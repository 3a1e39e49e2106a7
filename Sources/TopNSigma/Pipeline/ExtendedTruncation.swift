#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The samplers beyond Top-nσ, top-k, top-p and min-p, over a row's gathered survivors, in the
/// order ``SamplingParameters`` documents:
///
/// 1. the prefix truncations that need the whole row's softmax (ε, η, p-less) cut the survivors
///    of the pass (Top-nσ ∩ min-p) further, and top-k takes the first `k` of what is left: all
///    of them keep a prefix of the row in key order, so their intersection is the shortest;
/// 2. typical-p over the renormalized distribution of that prefix;
/// 3. top-p over what typical-p kept;
/// 4. XTC, when its coin says so;
/// 5. the temperature: the dynamic one from the entropy of what is left.
///
/// Every step is in double precision over the candidates, so the kept set is the float64
/// definition's, and each step keeps at least one token.
package enum ExtendedTruncation {
    /// Whether the row's truncation needs ``RowMass`` (ε, η or p-less).
    static func needsRowMass(_ parameters: SamplingParameters) -> Bool {
        parameters.epsilon != nil || parameters.eta != nil || parameters.pLess
    }

    /// ``RowMass`` of the `n` candidates `c` (the whole processed row: every survivor of a row
    /// without a threshold filter), their weights written to `w` by ``SoftmaxWeights``.
    static func rowMass(
        _ c: UnsafePointer<Candidate>, count n: Int, weights w: UnsafeMutablePointer<Double>, maximum: Float,
        temperature: Float
    ) -> RowMass {
        let m = Double(maximum), t = Double(temperature)
        let z = SoftmaxWeights.compute(c, count: n, maximum: maximum, temperature: temperature, into: w)
        // Branch-free, so that it vectorizes: a weight that underflowed to 0 adds 0 (its `x − M`
        // is finite).
        var squares = 0.0, weighted = 0.0
        for j in 0..<n {
            squares += w[j] * w[j]
            weighted += w[j] * (Double(c[j].logit) - m)
        }
        weighted /= t
        return RowMass(z: z, squares: squares, entropy: log(z) - weighted / z)
    }

    /// ``RowMass`` of the processed row at `p` (``RowPipeline/forEachProcessedLogit``), in one
    /// double-precision pass.
    static func rowMass<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, maximum: Float, temperature: Float, state: ProcessingState,
        scratch: RowPipeline.Scratch
    ) -> RowMass {
        let m = Double(maximum), t = Double(temperature)
        var z = 0.0, squares = 0.0, weighted = 0.0
        RowPipeline.forEachProcessedLogit(p, vocab: vocab, state: state, scratch: scratch) { x in
            let y = (Double(x) - m) / t
            let e = exp(y)
            z += e
            squares += e * e
            if e > 0 { weighted += e * y }
        }
        return RowMass(z: z, squares: squares, entropy: log(z) - weighted / z)
    }

    /// Truncates the survivors `c[0..<n]` (ascending ids, the row's argmax among them, `maximum`
    /// its logit) with every filter of `parameters` but Top-nσ and min-p (applied before); `mass`
    /// is the row's ``RowMass`` when ``needsRowMass(_:)``. Returns the kept count (ascending ids
    /// on exit), the temperature to draw at (a dynamic temperature of 0 keeps the first token in
    /// key order alone, and returns 1) and the kept set's maximum logit. `w` has room for `n`.
    static func apply(
        _ c: UnsafeMutablePointer<Candidate>, count n: Int, weights w: UnsafeMutablePointer<Double>,
        maximum: Float, parameters: SamplingParameters, mass: RowMass?, step: UInt64
    ) -> (count: Int, temperature: Float, maximum: Float) {
        let m = Double(maximum), t = Double(parameters.temperature)
        var count = n
        var reordered = false
        // 1. ε, η, p-less: `p_i` over the whole row against each cut; the maximum always stays.
        if let mass {
            let (strict, atLeast) = cuts(parameters, mass: mass, maximum: maximum)
            var kept = 0
            for j in 0..<count {
                let x = c[j].logit
                if x == maximum || (Double(x) > strict && Double(x) >= atLeast) {
                    c[kept] = c[j]
                    kept &+= 1
                }
            }
            count = kept
        }
        if let k = parameters.topK, count > k {
            Truncation.selectFirst(k, c, count: count)
            count = k
            reordered = true
        }
        var top = maximum
        // 2. typical-p over what the prefix truncations kept (the row's maximum among them).
        if let typical = parameters.typicalP, typical < 1, count > 1 {
            let z = SoftmaxWeights.compute(
                c, count: count, maximum: maximum, temperature: parameters.temperature, into: w)
            // Surprisal minus entropy is `ȳ − y_i` with `y_i = (x_i − M)/T` and `ȳ` the weights'
            // mean of `y`: the order is by distance from `ȳ`.
            var weighted = 0.0
            for j in 0..<count where w[j] > 0 { weighted += w[j] * ((Double(c[j].logit) - m) / t) }
            let order = TypicalOrder(center: weighted / z, maximum: m, temperature: t)
            count = Truncation.nucleus(c, w, count: count, need: Double(typical) * z, order: order)
            reordered = true
            top = setMaximum(c, count: count)
        }
        // 3. top-p over the renormalized distribution of what is left.
        if let topP = parameters.topP, topP < 1, count > 1 {
            let z = SoftmaxWeights.compute(c, count: count, maximum: top, temperature: parameters.temperature, into: w)
            count = Truncation.nucleus(c, w, count: count, need: Double(topP) * z)
            reordered = true
        }
        // 4. XTC: the tokens at or above the threshold are a prefix in key order; all of them but
        // the last go, when there are two or more.
        if let threshold = parameters.xtcThreshold, count > 1,
            Philox4x32(seed: parameters.seed).uniform(step: step, stream: SamplingParameters.xtcStream)
                < Double(parameters.xtcProbability)
        {
            let z = SoftmaxWeights.compute(c, count: count, maximum: top, temperature: parameters.temperature, into: w)
            var above = 0, last = -1
            for j in 0..<count where w[j] / z >= Double(threshold) {
                above &+= 1
                if last < 0 || Candidate.precedes(c[last], c[j]) { last = j }
            }
            if above >= 2 {
                let lastAbove = c[last].index
                var kept = 0
                for j in 0..<count where w[j] / z < Double(threshold) || c[j].index == lastAbove {
                    c[kept] = c[j]
                    kept &+= 1
                }
                count = kept
            }
            top = setMaximum(c, count: count)
        }
        // 5. The dynamic temperature from the entropy at temperature 1 of the kept set.
        var temperature = parameters.temperature
        if let range = parameters.dynamicTemperatureRange, range > 0, temperature.isFinite {
            temperature = dynamicTemperature(c, count: count, weights: w, maximum: top, parameters: parameters)
            if temperature == 0 {
                // Greedy over the kept set: its first token in key order, alone (at any
                // temperature its probability is 1).
                var best = 0
                for j in 0..<count where Candidate.precedes(c[j], c[best]) { best = j }
                c[0] = c[best]
                count = 1
                reordered = false
                temperature = 1
                top = c[0].logit
            }
        }
        if reordered { Truncation.sortByIndex(c, count: count) }
        return (count, temperature, top)
    }

    /// ε's, η's and p-less's cuts on the logits from the row's mass: keep `x > strict` (ε, η:
    /// `p_i > cut` with `cut = max(ε, min(η, √η·exp(−H)))`, so `x_i > M + T·log(cut·z)`) and
    /// `x >= atLeast` (p-less: `p_i >= Σ p_j²`, so `x_i >= M + T·log(Σe²/z)`); `-inf` for those
    /// that are off. `strict` rises with `z` and falls with the entropy, `atLeast` rises with
    /// `Σe²` and falls with `z`.
    static func cuts(
        _ parameters: SamplingParameters, mass: RowMass, maximum: Float
    ) -> (
        strict: Double, atLeast: Double
    ) {
        let m = Double(maximum), t = Double(parameters.temperature)
        var cut = -Double.infinity
        if let epsilon = parameters.epsilon { cut = max(cut, Double(epsilon)) }
        if let eta = parameters.eta {
            let eta = Double(eta)
            cut = max(cut, min(eta, eta.squareRoot() * exp(-mass.entropy)))
        }
        let strict = cut > -.infinity ? m + t * log(cut * mass.z) : -.infinity
        let atLeast = parameters.pLess ? m + t * log(mass.squares / mass.z) : -Double.infinity
        return (strict, atLeast)
    }

    /// The temperature step (llama.cpp's `temp_ext`): the request's `T`, or with a dynamic range
    /// `T₀ + (T₁ − T₀)·(H / ln N)^exponent` from the entropy `H` at temperature 1 of `c[0..<count]`
    /// (`maximum` its largest logit; `T₀` alone for one token), rounded to Float. `w` has room
    /// for `count`.
    static func dynamicTemperature(
        _ c: UnsafePointer<Candidate>, count: Int, weights w: UnsafeMutablePointer<Double>, maximum: Float,
        parameters: SamplingParameters
    ) -> Float {
        guard let range = parameters.dynamicTemperatureRange, range > 0, parameters.temperature.isFinite else {
            return parameters.temperature
        }
        guard count > 1 else { return dynamicTemperature(entropy: 0, count: count, parameters: parameters) }
        let z = SoftmaxWeights.compute(c, count: count, maximum: maximum, temperature: 1, into: w)
        var weighted = 0.0
        for j in 0..<count where w[j] > 0 { weighted += w[j] * (Double(c[j].logit) - Double(maximum)) }
        return dynamicTemperature(entropy: log(z) - weighted / z, count: count, parameters: parameters)
    }

    /// The dynamic temperature of `count` tokens whose entropy at temperature 1 is `entropy`
    /// (clamped to `[0, ln N]`): `T₀ + (T₁ − T₀)·(H / ln N)^exponent`, `T₀` alone for one token,
    /// rounded to Float. Monotone in `entropy`.
    static func dynamicTemperature(entropy: Double, count: Int, parameters: SamplingParameters) -> Float {
        let range = parameters.dynamicTemperatureRange ?? 0
        let low = max(0, Double(parameters.temperature) - Double(range))
        let high = Double(parameters.temperature) + Double(range)
        guard count > 1 else { return Float(low) }
        let normalized = min(1, max(0, entropy) / log(Double(count)))
        return Float(low + (high - low) * pow(normalized, Double(parameters.dynamicTemperatureExponent)))
    }

    /// The largest logit of `c[0..<n]` (`n >= 1`).
    @inline(__always)
    static func setMaximum(_ c: UnsafePointer<Candidate>, count n: Int) -> Float {
        var top = -Float.infinity
        for j in 0..<n { top = max(top, c[j].logit) }
        return top
    }
}

/// Typical-p's order: distance of `y = (x − M)/T` from the center `ȳ` (the surprisal's distance
/// from the entropy), then key order. As `T > 0`, `|y − ȳ| = |x − (M + T·ȳ)| / T`: the order
/// compares `|x − pivot|`, one subtraction per token instead of a division.
struct TypicalOrder: CandidateOrder {
    let pivot: Double

    init(center: Double, maximum: Double, temperature: Double) {
        pivot = maximum + temperature * center
    }

    @inline(__always)
    func distance(_ a: Candidate) -> Double { abs(Double(a.logit) - pivot) }

    @inline(__always)
    func precedes(_ a: Candidate, _ b: Candidate) -> Bool {
        let da = distance(a), db = distance(b)
        return da < db || (da == db && Candidate.precedes(a, b))
    }
}

extension RowPipeline {
    /// Calls `body` with every allowed finite logit of the processed row: the untouched tokens
    /// the effective mask allows, then the edited tokens' processed logits (the effective mask
    /// leaves them out, so none is seen twice).
    @inline(__always)
    static func forEachProcessedLogit<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, state: ProcessingState, scratch: Scratch, _ body: (Float) -> Void
    ) {
        if let mask = state.mask.map({ UnsafePointer($0) }) {
            for i in 0..<vocab where StatisticsKernel.allowed(mask, i) {
                let x = E.float(p, i)
                if x > -.infinity { body(x) }
            }
            for k in 0..<state.editCount where scratch.edits[k].value > -.infinity { body(scratch.edits[k].value) }
        } else {
            for i in 0..<vocab {
                let x = E.float(p, i)
                if x > -.infinity { body(x) }
            }
        }
    }
}

extension RowPipeline {
    /// The truncation step after the survivors are gathered (`count` of them at the front of
    /// `scratch.candidates`, ascending ids): top-k and top-p (``Truncation/apply``), or with any
    /// other sampler ``ExtendedTruncation/apply``. The one step of the draw, the filtered
    /// distribution, the C ABI and verification. Returns the kept count (ascending ids), the
    /// temperature of their distribution and their maximum logit.
    static func truncate<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, count: Int,
        scratch: Scratch, step: UInt64
    ) -> (count: Int, temperature: Float, maximum: Float) {
        if let order = parameters.order {
            return SamplerChain.apply(
                scratch.candidates, count: count, weights: scratch.weights, parameters: parameters, order: order,
                step: step)
        }
        guard parameters.usesExtendedSamplers else {
            let kept = Truncation.apply(
                scratch.candidates, count: count, weights: scratch.weights, maximum: statistics.maximum,
                parameters: parameters)
            return (kept, parameters.temperature, statistics.maximum)
        }
        var mass: RowMass? = nil
        if ExtendedTruncation.needsRowMass(parameters) {
            // The survivors are the whole row when no threshold filter cut it: their mass is the row's.
            mass =
                count == statistics.finiteCount
                ? ExtendedTruncation.rowMass(
                    scratch.candidates, count: count, weights: scratch.weights, maximum: statistics.maximum,
                    temperature: parameters.temperature)
                : ExtendedTruncation.rowMass(
                    p, vocab: vocab, maximum: statistics.maximum, temperature: parameters.temperature,
                    state: scratch.state.pointee, scratch: scratch)
        }
        return ExtendedTruncation.apply(
            scratch.candidates, count: count, weights: scratch.weights, maximum: statistics.maximum,
            parameters: parameters, mass: mass, step: step)
    }
}
