import CShims
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A token and its log-probability.
public struct TokenLogprob: Sendable, Equatable, Hashable {
    /// The token id.
    public var token: TokenID
    /// `log p(token)`.
    public var logprob: Double

    /// `token` with log-probability `logprob`.
    @inlinable
    public init(token: TokenID, logprob: Double) {
        self.token = token
        self.logprob = logprob
    }
}

/// One row's log-probabilities in the processed distribution (vLLM's `processed_logprobs`):
/// `log_softmax` of the processed logits at temperature 1, before any truncation.
///
/// Fixed capacity and stored inline, so the sampler fills a caller's buffer without allocating.
public struct TopLogprobs: Sendable, Equatable {
    /// The most entries a row can ask for (OpenAI's limit).
    public static let maximumCount = 20

    /// How many entries ``entries`` holds.
    public private(set) var count: Int = 0
    /// The sampled token's log-probability in this distribution (not the truncated one that
    /// ``SampledToken/logProbability`` describes).
    public var sampledLogprob: Double = 0
    /// The sampled token's rank, 1-based: how many tokens have a processed logit at or above its
    /// own (vLLM's definition, so ties share the worst rank).
    public var sampledRank: Int = 0

    private var tokens = SIMD32<Int32>()
    private var logprobs = SIMD32<Double>()

    /// Empty.
    public init() {}

    /// The `count` most probable tokens, most probable first (ties: lower id first).
    public var entries: [TokenLogprob] {
        (0..<count).map { TokenLogprob(token: tokens[$0], logprob: logprobs[$0]) }
    }

    /// Entry `i` (`0..<count`).
    public subscript(i: Int) -> TokenLogprob {
        precondition(i >= 0 && i < count, "index \(i) out of 0..<\(count)")
        return TokenLogprob(token: tokens[i], logprob: logprobs[i])
    }

    /// Appends an entry (at most ``maximumCount``).
    @inline(__always)
    mutating func append(token: Int32, logprob: Double) {
        tokens[count] = token
        logprobs[count] = logprob
        count += 1
    }

    /// Drops every entry.
    @inline(__always)
    mutating func removeAll() { count = 0 }
}
