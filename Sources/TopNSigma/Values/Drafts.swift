#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One (token, probability) entry of a sparse draft distribution.
public struct DraftEntry: Sendable, Equatable, Hashable {
    /// The token id.
    public var token: TokenID
    /// The draft's probability of `token`.
    public var probability: Double

    /// An entry giving `token` the draft probability `probability`.
    @inlinable
    public init(token: TokenID, probability: Double) {
        self.token = token
        self.probability = probability
    }
}

/// A draft model's full distributions for the `k` positions of one request.
public enum DraftDistributions: Sendable, Equatable {
    /// `k` dense rows of `vocabularySize` probabilities, row-major (`k × vocabularySize` values).
    case dense([Float])
    /// `k` sparse lists; a token absent from a list has draft probability 0, and entries of the
    /// same token in one list add up.
    case sparse([[DraftEntry]])
}

/// The `k` tokens a draft model proposed for one request, with their draft probabilities.
///
/// ```swift
/// // An n-gram lookup proposes 2 tokens deterministically: q is the point mass at each.
/// let ngram = DraftProposal(tokens: [17, 4], probabilities: [1, 1])
/// // A draft model also gives its full distribution at each position.
/// let model = DraftProposal(tokens: [17, 4], probabilities: [0.6, 0.3], distributions: .dense(qRows))
/// ```
public struct DraftProposal: Sendable, Equatable {
    /// The draft tokens `d_1…d_k`.
    public var tokens: [TokenID]
    /// `q_i(d_i)`, the draft probability of each draft token (`k` values). This is the value the
    /// acceptance test divides by, also when ``distributions`` is given.
    public var probabilities: [Double]
    /// The draft's full distribution at each position, or nil: then each `q_i` is taken as the
    /// point mass at `d_i` (a deterministic draft such as n-gram lookup).
    public var distributions: DraftDistributions?

    /// A proposal of `tokens` with draft probabilities `probabilities` and, optionally, the
    /// draft's full distributions.
    @inlinable
    public init(tokens: [TokenID], probabilities: [Double], distributions: DraftDistributions? = nil) {
        self.tokens = tokens
        self.probabilities = probabilities
        self.distributions = distributions
    }
}

/// The outcome of verifying one request's draft.
public struct VerificationResult: Sendable, Equatable, Hashable {
    /// How many draft tokens were accepted, `0...k`.
    public var accepted: Int
    /// The emitted tokens: the `accepted` draft tokens, then the correction token (after a
    /// rejection) or the bonus token (when all `k` were accepted); `accepted + 1` tokens.
    public var tokens: [TokenID]
    /// `log p_i(token)` of each emitted token under its target distribution (0 for a greedy row).
    public var logProbabilities: [Double]

    /// A result with the given counts, tokens and log-probabilities.
    @inlinable
    public init(accepted: Int, tokens: [TokenID], logProbabilities: [Double]) {
        self.accepted = accepted
        self.tokens = tokens
        self.logProbabilities = logProbabilities
    }
}

/// Why one request of a verification call failed; the other requests are unaffected.
public enum VerificationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The proposal holds `actual` tokens, not `k`.
    case tokenCount(expected: Int, actual: Int)
    /// The proposal holds `actual` draft probabilities, not `k`.
    case probabilityCount(expected: Int, actual: Int)
    /// Draft token `position` (0-based) is not in `0..<vocabularySize`.
    case tokenOutOfRange(position: Int, token: Int)
    /// The dense draft rows hold `actual` values, not `k × vocabularySize`.
    case denseLength(expected: Int, actual: Int)
    /// The sparse draft distribution holds `actual` lists, not `k`.
    case sparseCount(expected: Int, actual: Int)
    /// A sparse entry of position `position` names a token outside `0..<vocabularySize`.
    case sparseTokenOutOfRange(position: Int, token: Int)
    /// Target row `row` of the request (0-based, `0...k`) failed.
    case row(Int, RowError)

    /// What is wrong with the request: `target row 2: logit at index 17 is NaN`.
    public var description: String {
        switch self {
        case .tokenCount(let e, let a): return "the proposal holds \(a) draft tokens, expected k = \(e)"
        case .probabilityCount(let e, let a): return "the proposal holds \(a) draft probabilities, expected k = \(e)"
        case .tokenOutOfRange(let p, let t): return "draft token \(t) at position \(p) is outside the vocabulary"
        case .denseLength(let e, let a): return "the dense draft rows hold \(a) values, expected \(e)"
        case .sparseCount(let e, let a): return "the sparse draft distribution holds \(a) lists, expected k = \(e)"
        case .sparseTokenOutOfRange(let p, let t):
            return "sparse draft entry for token \(t) at position \(p) is outside the vocabulary"
        case .row(let r, let error): return "target row \(r): \(error.description)"
        }
    }
}

/// One request's verification outcome: its result, or what is wrong with that request.
public typealias VerificationOutcome = Result<VerificationResult, VerificationError>
