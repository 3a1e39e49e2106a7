/// One request's sampling parameters, named as vLLM's `SamplingParams` names them.
///
/// Combination rule: Top-nσ, top-k and min-p are intersected; top-p is then applied over the
/// renormalized distribution of what they kept. Top-p and min-p use the temperature-scaled
/// distribution (vLLM's convention). Each filter is optional; with `temperature == 0` the row is
/// greedy and no filter matters.
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
    @inlinable
    public init(
        temperature: Float = 1, nSigma: Float? = 1, seed: UInt64 = 0, topK: Int? = nil, topP: Float? = nil,
        minP: Float? = nil
    ) {
        self.temperature = temperature
        self.nSigma = nSigma
        self.seed = seed
        self.topK = topK
        self.topP = topP
        self.minP = minP
    }

    /// The parameter error of this request, if any: a negative or NaN temperature or `n`, a
    /// `topK` below 1, a `topP` outside `(0, 1]`, a `minP` outside `[0, 1]`.
    @inlinable
    public var validationError: RowError? {
        if !(temperature >= 0) { return .invalidTemperature(temperature) }
        if let n = nSigma, !(n >= 0) { return .invalidNSigma(n) }
        if let k = topK, k < 1 { return .invalidTopK(k) }
        if let p = topP, !(p > 0 && p <= 1) { return .invalidTopP(p) }
        if let m = minP, !(m >= 0 && m <= 1) { return .invalidMinP(m) }
        return nil
    }
}

/// One row's draw.
public struct SampledToken: Sendable, Equatable, Hashable {
    /// The drawn token id.
    public var token: Int
    /// `log p(token)` under the distribution actually sampled from: the temperature-scaled
    /// softmax renormalized over the kept set (0 for greedy, a point mass).
    public var logProbability: Double
    /// How many tokens the distribution was drawn from (1 for greedy).
    public var candidateCount: Int

    /// A draw with the given token, log-probability and candidate count.
    @inlinable
    package init(token: Int, logProbability: Double, candidateCount: Int) {
        self.token = token
        self.logProbability = logProbability
        self.candidateCount = candidateCount
    }
}

/// One row's outcome: its token, or what is wrong with that row.
public typealias SampleResult = Result<SampledToken, RowError>
