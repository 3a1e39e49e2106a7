/// One request's sampling parameters, named as vLLM's `SamplingParams` names them.
public struct SamplingParameters: Sendable, Equatable, Hashable {
    /// Softmax temperature `T`, applied after the Top-nσ mask. `0` means greedy argmax (lowest
    /// token id wins ties). Must be `>= 0` and not NaN; `+inf` samples uniformly from the kept set.
    public var temperature: Float
    /// Top-nσ's `n` (`>= 0`), or `nil` to disable the filter and sample from every finite logit.
    public var nSigma: Float?
    /// The request's seed: the key of the counter-based generator.
    public var seed: UInt64

    /// - Parameters:
    ///   - temperature: softmax temperature, default 1; 0 for greedy.
    ///   - nSigma: Top-nσ's n, default 1; `nil` disables the filter.
    ///   - seed: the request's seed, default 0.
    @inlinable
    public init(temperature: Float = 1, nSigma: Float? = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.nSigma = nSigma
        self.seed = seed
    }

    /// The parameter error of this request, if any: a negative or NaN temperature or `n`.
    @inlinable
    public var validationError: RowError? {
        if !(temperature >= 0) { return .invalidTemperature(temperature) }
        if let n = nSigma, !(n >= 0) { return .invalidNSigma(n) }
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

    @inlinable
    public init(token: Int, logProbability: Double, candidateCount: Int) {
        self.token = token
        self.logProbability = logProbability
        self.candidateCount = candidateCount
    }
}

/// One row's outcome: its token, or what is wrong with that row.
public typealias SampleResult = Result<SampledToken, RowError>
