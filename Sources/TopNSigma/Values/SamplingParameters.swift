/// One request's sampling parameters, named as vLLM's `SamplingParams` names them.
///
/// Combination rule, in order:
/// 1. the prefix truncations are intersected, each computed over the whole (processed) row:
///    Top-nσ, min-p, top-k, ε, η and p-less;
/// 2. typical-p over the renormalized distribution of what they kept;
/// 3. top-p over the renormalized distribution of what is left;
/// 4. XTC over the renormalized distribution of what is left, when its coin says so;
/// 5. the temperature (dynamic when ``dynamicTemperatureRange`` is set), then the draw.
///
/// Every probability a filter reads is the softmax at ``temperature`` (vLLM's convention); the
/// dynamic temperature changes the draw only. Each filter is optional; with `temperature == 0`
/// the row is greedy and no filter matters.
public struct SamplingParameters: Sendable, Equatable, Hashable {
    /// Softmax temperature `T`, applied after the Top-nσ mask. `0` means greedy argmax (lowest
    /// token id wins ties). Must be `>= 0` and not NaN; `+inf` samples uniformly from the kept set.
    public var temperature: Float
    /// Top-nσ's `n` (`>= 0`), or `nil` to disable the filter and sample from every finite logit.
    public var nSigma: Float?
    /// The request's seed: the key of the counter-based generator.
    public var seed: UInt64
    /// Keep the `k` largest logits (ties: lower token id first); `k >= 1`, or nil.
    public var topK: Int?
    /// Keep the smallest set of most probable tokens whose probability mass reaches `p`
    /// (ties: lower token id first); `0 < p <= 1`, or nil.
    public var topP: Float?
    /// Keep tokens with probability at least `minP` × the top probability, i.e. logits
    /// `>= max + T·ln(minP)`; `0 <= minP <= 1`, or nil.
    public var minP: Float?
    /// Locally typical sampling (Meister et al. 2022, llama.cpp's `typical`): of the tokens the
    /// prefix truncations kept, keep those whose surprisal `−log p_i` lies closest to the
    /// entropy `H` of that set, until their mass reaches `typicalP` (ties: higher logit, then
    /// lower id first); `0 < typicalP <= 1`, or nil.
    public var typicalP: Float?
    /// ε-sampling (Hewitt et al. 2022): keep `p_i > epsilon` over the whole row, and the most
    /// probable token always; `0 <= epsilon < 1`, or nil.
    public var epsilon: Float?
    /// η-sampling (Hewitt et al. 2022): keep `p_i > min(eta, √eta · exp(−H))` with `H` the
    /// whole row's entropy, and the most probable token always; `0 <= eta < 1`, or nil.
    public var eta: Float?
    /// XTC, "exclude top choices" (llama.cpp's `xtc`): with probability ``xtcProbability`` drop
    /// every kept token whose probability is at least `xtcThreshold`, except the least probable
    /// of them; `0 <= xtcThreshold <= 1`, or nil. Its coin is Philox stream
    /// ``xtcStream`` of the request's seed at the row's step.
    public var xtcThreshold: Float?
    /// XTC's probability of applying (`0 ... 1`), read when ``xtcThreshold`` is set.
    public var xtcProbability: Float
    /// Dynamic temperature (llama.cpp's `temp_ext`): the draw's temperature is
    /// `T₀ + (T₁ − T₀)·(H / ln N)^exponent` with `T₀ = max(0, T − range)`, `T₁ = T + range`, and
    /// `H` the entropy at temperature 1 of the `N` finally kept tokens (`T₀` for `N = 1`),
    /// rounded to a `Float` as every temperature; a temperature of 0 draws their argmax.
    /// Finite, `>= 0`, or nil (0 and nil: the fixed temperature).
    public var dynamicTemperatureRange: Float?
    /// The dynamic temperature's exponent (finite, `>= 0`), read when
    /// ``dynamicTemperatureRange`` is set.
    public var dynamicTemperatureExponent: Float
    /// p-less sampling (arXiv 2509.23234): keep `p_i >= Σ_j p_j²` over the whole row, the
    /// probability that two draws agree (hyperparameter-free; the most probable token always
    /// passes).
    public var pLess: Bool
    /// A per-request sampler order (llama.cpp's `--samplers`), or nil for the fixed order above.
    /// With an order, each listed step runs over what the steps before it kept, renormalized, at
    /// the scale the chain has reached (`T = 1` before the `temperature` step): see
    /// ``SamplerOrder``. The pass then gathers the whole row (its top `k` when the first step that
    /// is on is top-k), and the chain runs over it in double precision.
    public var order: SamplerOrder?

    /// XTC's Philox stream (the draw is stream 0; speculative verification uses 1 and 2).
    public static let xtcStream: UInt64 = 3

    /// One request's parameters; the defaults are Top-nσ with `n = 1` at temperature 1, seed 0,
    /// and no other filter.
    ///
    /// ```swift
    /// let topNSigma = SamplingParameters(temperature: 0.7, nSigma: 1.0, seed: requestSeed)
    /// let nucleus = SamplingParameters(temperature: 0.8, nSigma: nil, seed: requestSeed, topP: 0.9)
    /// let greedy = SamplingParameters(temperature: 0)
    /// ```
    ///
    /// - Parameters:
    ///   - temperature: softmax temperature, default 1; 0 for greedy.
    ///   - nSigma: Top-nσ's n, default 1; `nil` disables the filter.
    ///   - seed: the request's seed, default 0.
    ///   - topK: top-k, default off.
    ///   - topP: top-p (nucleus), default off.
    ///   - minP: min-p, default off.
    ///   - typicalP: typical-p, default off.
    ///   - epsilon: ε-sampling, default off.
    ///   - eta: η-sampling, default off.
    ///   - xtcThreshold: XTC's threshold, default off.
    ///   - xtcProbability: XTC's probability, default 1.
    ///   - dynamicTemperatureRange: the dynamic temperature's range, default off.
    ///   - dynamicTemperatureExponent: its exponent, default 1.
    ///   - pLess: p-less sampling, default off.
    ///   - order: a sampler order, default nil (the fixed order).
    @inlinable
    public init(
        temperature: Float = 1, nSigma: Float? = 1, seed: UInt64 = 0, topK: Int? = nil, topP: Float? = nil,
        minP: Float? = nil, typicalP: Float? = nil, epsilon: Float? = nil, eta: Float? = nil,
        xtcThreshold: Float? = nil, xtcProbability: Float = 1, dynamicTemperatureRange: Float? = nil,
        dynamicTemperatureExponent: Float = 1, pLess: Bool = false, order: SamplerOrder? = nil
    ) {
        self.temperature = temperature
        self.nSigma = nSigma
        self.seed = seed
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.typicalP = typicalP
        self.epsilon = epsilon
        self.eta = eta
        self.xtcThreshold = xtcThreshold
        self.xtcProbability = xtcProbability
        self.dynamicTemperatureRange = dynamicTemperatureRange
        self.dynamicTemperatureExponent = dynamicTemperatureExponent
        self.pLess = pLess
        self.order = order
    }

    /// These parameters with llama.cpp's sentinel values read as llama.cpp reads them, for
    /// callers that pass llama.cpp's settings as they are (our strict errors stay the default):
    /// `topK <= 0`, `topP >= 1`, `minP <= 0`, `nSigma <= 0`, `typicalP >= 1`, an XTC threshold
    /// above 0.5 or probability `<= 0`, and a dynamic temperature range `<= 0` turn their sampler
    /// off; a negative temperature is greedy (0); `topP <= 0` keeps the most probable token and
    /// `minP > 1` only the maximum's ties, as llama.cpp's `min_keep = 1` does. NaN stays an error.
    public func withLlamaCppSentinels() -> SamplingParameters {
        var p = self
        if p.temperature < 0 { p.temperature = 0 }
        if let k = p.topK, k <= 0 { p.topK = nil }
        if let q = p.topP {
            if q >= 1 { p.topP = nil } else if q <= 0 { p.topP = .leastNonzeroMagnitude }
        }
        if let m = p.minP {
            if m <= 0 { p.minP = nil } else if m > 1 { p.minP = 1 }
        }
        if let n = p.nSigma, n <= 0 { p.nSigma = nil }
        if let t = p.typicalP, t >= 1 { p.typicalP = nil }
        if let x = p.xtcThreshold, x > 0.5 || p.xtcProbability <= 0 { p.xtcThreshold = nil }
        if let r = p.dynamicTemperatureRange, r <= 0 { p.dynamicTemperatureRange = nil }
        return p
    }

    /// The Top-nσ `n` the fused pass applies: the request's, or none under an ``order`` (the
    /// chain applies it over what comes before it).
    @inlinable
    package var passNSigma: Float? { order == nil ? nSigma : nil }

    /// The min-p the fused pass applies (none under an ``order``).
    @inlinable
    package var passMinP: Float? { order == nil ? minP : nil }

    /// The top-k the fused pass applies: the request's, or under an ``order`` only when the chain
    /// starts with it (``SamplerOrder/startsWithTopK(_:)``).
    @inlinable
    package var passTopK: Int? { order == nil || order!.startsWithTopK(self) ? topK : nil }

    /// Whether a sampled row uses any of the samplers beyond Top-nσ, top-k, top-p and min-p
    /// (typical, ε, η, XTC, dynamic temperature, p-less) or a sampler ``order``: such a row is truncated by
    /// the survivor pipeline and the extended truncation step over its gathered survivors.
    @inlinable
    public var usesExtendedSamplers: Bool {
        typicalP != nil || epsilon != nil || eta != nil || xtcThreshold != nil || dynamicTemperatureRange != nil
            || pLess || order != nil
    }

    /// Whether a sampled row's draw is its argmax whatever the seed and step: temperature 0, or
    /// top-k 1 in the fixed order with no sampler beside it but those that always keep the argmax
    /// (Top-nσ, min-p, top-p). Such a row takes greedy's maximum-only pass; its draw is the same
    /// token (the lowest id among ties), with log-probability 0 and one candidate, as the top-k 1
    /// distribution gives.
    @inlinable
    package var drawsArgmax: Bool { temperature == 0 || (topK == 1 && !usesExtendedSamplers) }

    /// The parameter error of this request, if any: a negative or NaN temperature or `n`, a
    /// `topK` below 1, a `topP` outside `(0, 1]`, a `minP` outside `[0, 1]`, or one of the other
    /// samplers outside its range (``RowError/invalidSampler(name:value:)``).
    @inlinable
    public var validationError: RowError? {
        if !(temperature >= 0) { return .invalidTemperature(temperature) }
        if let n = nSigma, !(n >= 0) { return .invalidNSigma(n) }
        if let k = topK, k < 1 { return .invalidTopK(k) }
        if let p = topP, !(p > 0 && p <= 1) { return .invalidTopP(p) }
        if let m = minP, !(m >= 0 && m <= 1) { return .invalidMinP(m) }
        if let p = typicalP, !(p > 0 && p <= 1) { return .invalidSampler(name: "typical-p", value: p) }
        if let e = epsilon, !(e >= 0 && e < 1) { return .invalidSampler(name: "epsilon", value: e) }
        if let e = eta, !(e >= 0 && e < 1) { return .invalidSampler(name: "eta", value: e) }
        if let x = xtcThreshold {
            if !(x >= 0 && x <= 1) { return .invalidSampler(name: "xtc-threshold", value: x) }
            if !(xtcProbability >= 0 && xtcProbability <= 1) {
                return .invalidSampler(name: "xtc-probability", value: xtcProbability)
            }
        }
        if let r = dynamicTemperatureRange {
            if !(r >= 0 && r.isFinite) { return .invalidSampler(name: "dynatemp-range", value: r) }
            let x = dynamicTemperatureExponent
            if !(x >= 0 && x.isFinite) { return .invalidSampler(name: "dynatemp-exponent", value: x) }
        }
        return nil
    }
}

/// One row's draw.
public struct SampledToken: Sendable, Equatable, Hashable {
    /// The drawn token id.
    public var token: TokenID
    /// `log p(token)` under the distribution actually sampled from: the temperature-scaled
    /// softmax renormalized over the kept set (0 for greedy, a point mass).
    public var logProbability: Double
    /// How many tokens the distribution was drawn from (1 for greedy).
    public var candidateCount: Int

    /// A draw with the given token, log-probability and candidate count.
    @inlinable
    package init(token: TokenID, logProbability: Double, candidateCount: Int) {
        self.token = token
        self.logProbability = logProbability
        self.candidateCount = candidateCount
    }
}

/// One row's outcome: its token, or what is wrong with that row.
public typealias SampleResult = Result<SampledToken, RowError>
