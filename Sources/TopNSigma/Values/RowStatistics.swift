/// The statistics Top-nσ needs from one row of logits, computed in one fused pass.
///
/// Only *finite* logits take part. A `-inf` logit is a masked token (grammar mask, logit bias,
/// vocabulary padding): it is excluded from the maximum, the mean and the variance, and it is
/// never kept. A NaN or `+inf` logit makes the whole row invalid (see ``RowError``).
///
/// The variance is Bessel-corrected, `M2 / (N - 1)`, as `torch.std` in the paper's code; a row
/// with a single finite logit has standard deviation 0. ``populationStandardDeviation`` divides
/// by `N` instead.
public struct RowStatistics: Sendable, Equatable, CustomStringConvertible {
    /// The largest finite logit, or `-inf` when the row has no finite logit.
    public var maximum: Float
    /// The lowest index holding ``maximum``, or -1 when the row has no finite logit.
    public var argmax: Int
    /// How many logits are finite (not `-inf`).
    public var finiteCount: Int
    /// The mean of the finite logits, in double precision (0 when there are none).
    public var mean: Double
    /// The sum of squared deviations from the mean over the finite logits (`M2`), in double
    /// precision.
    public var sumOfSquaredDeviations: Double

    /// Statistics with the given fields, as ``of(_:)-(UnsafeBufferPointer<Float>)`` computes them
    /// (for tests and for callers that merge statistics of their own).
    @inlinable
    package init(maximum: Float, argmax: Int, finiteCount: Int, mean: Double, sumOfSquaredDeviations: Double) {
        self.maximum = maximum
        self.argmax = argmax
        self.finiteCount = finiteCount
        self.mean = mean
        self.sumOfSquaredDeviations = sumOfSquaredDeviations
    }

    /// Bessel-corrected variance `M2 / (N - 1)`; 0 when fewer than two logits are finite.
    @inlinable
    public var variance: Double {
        finiteCount > 1 ? sumOfSquaredDeviations / Double(finiteCount - 1) : 0
    }

    /// Bessel-corrected standard deviation, the `std` of the Top-nσ rule.
    @inlinable
    public var standardDeviation: Double { variance.squareRoot() }

    /// Population standard deviation `sqrt(M2 / N)`; 0 for a row without finite logits.
    @inlinable
    public var populationStandardDeviation: Double {
        finiteCount > 0 ? (sumOfSquaredDeviations / Double(finiteCount)).squareRoot() : 0
    }

    /// A one-line summary: maximum and argmax, finite count, mean and standard deviation.
    public var description: String {
        "RowStatistics(max: \(maximum) at \(argmax), finite: \(finiteCount), mean: \(mean), std: \(standardDeviation))"
    }
}

/// Why a row cannot be sampled or filtered. Every case names what is wrong with the row; the
/// other rows of a batch are unaffected. ``origin`` says who must fix it: the logits
/// (``Origin/data``), the request's settings (``Origin/settings``, a server's "bad request"), or
/// the calling code (``Origin/call``).
public enum RowError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The logit at `index` is NaN.
    case notANumber(index: Int)
    /// The logit at `index` is `+inf`.
    case positiveInfinity(index: Int)
    /// Every logit of the row is `-inf` (masked): nothing can be drawn.
    case noFiniteLogit
    /// The temperature is negative or NaN.
    case invalidTemperature(Float)
    /// The Top-nσ `n` is negative or NaN.
    case invalidNSigma(Float)
    /// top-k below 1.
    case invalidTopK(Int)
    /// top-p outside `(0, 1]` or NaN.
    case invalidTopP(Float)
    /// min-p outside `[0, 1]` or NaN.
    case invalidMinP(Float)
    /// One of the other samplers' parameters is out of its range (typical-p outside `(0, 1]`,
    /// ε or η outside `[0, 1)`, an XTC threshold or probability outside `[0, 1]`, a dynamic
    /// temperature range or exponent negative or not finite, a DRY setting of
    /// ``RequestProcessing`` out of its range or a DRY breaker of a bad length); `name` is its CLI
    /// option's name.
    case invalidSampler(name: String, value: Float)
    /// The row holds more logits than any interface takes (``Vocabulary/maximumSize``,
    /// `2^31 - 2`: ids are ``TokenID``, 32-bit).
    case vocabularyTooLarge(Int)
    /// ``RequestProcessing/repetitionPenalty`` is not finite or not `> 0`.
    case invalidRepetitionPenalty(Float)
    /// ``RequestProcessing/frequencyPenalty`` is not finite.
    case invalidFrequencyPenalty(Float)
    /// ``RequestProcessing/presencePenalty`` is not finite.
    case invalidPresencePenalty(Float)
    /// A logit bias that is not finite.
    case invalidLogitBias(token: Int, Float)
    /// A token id (bias or history) outside `0..<vocabularySize`.
    case tokenOutOfRange(Int)
    /// The allowed-token bitmask has fewer words than the vocabulary needs (`ceil(V / 32)`).
    case bitmaskTooShort(words: Int, needed: Int)
    /// ``RequestProcessing/topLogprobs`` outside `0...TopLogprobs.maximumCount`.
    case invalidTopLogprobs(Int)
    /// Logprobs were requested but the call passed no buffer to return them in.
    case missingLogprobsBuffer

    /// Who must fix an error.
    public enum Origin: Sendable, Equatable, Hashable, CaseIterable {
        /// The logits themselves: a NaN or `+inf` logit, a row with no finite logit (after the
        /// request's mask and processing), a row longer than ``Vocabulary/maximumSize``.
        case data
        /// The request's settings: a sampling parameter or a processing entry out of its range, a
        /// token id outside the vocabulary, a bitmask too short for it.
        case settings
        /// The calling code: a call shaped wrong for what its rows ask (logprobs asked for with no
        /// buffer to return them in).
        case call
    }

    /// What the setting an error names must be, for the other samplers' settings
    /// (``invalidSampler(name:value:)``), by their CLI option names.
    static func requirement(ofSampler name: String) -> String {
        switch name {
        case "typical-p": "in (0, 1]"
        case "epsilon", "eta": "in [0, 1)"
        case "xtc-threshold", "xtc-probability": "in [0, 1]"
        case "dry-base": "finite and >= 1"
        case "dry-allowed-length": "in 0...\(Int32.max)"
        case "dry-penalty-last-n": "-1 (all) or in 0...\(Int32.max)"
        case "dry-sequence-breakers": "a breaker of 1 to \(RequestProcessing.maximumBreakerLength) tokens"
        default: "finite and >= 0"
        }
    }

    /// For an error of the request's settings whose setting is one number: the setting as the
    /// CLI names its option (`repetition-penalty`, `dry-base`, …) and what it must be. The one
    /// statement of each range, for the library's messages and the CLI's usage errors.
    package var setting: (name: String, requirement: String)? {
        switch self {
        case .invalidRepetitionPenalty: ("repetition-penalty", "finite and > 0")
        case .invalidFrequencyPenalty: ("frequency-penalty", "finite")
        case .invalidPresencePenalty: ("presence-penalty", "finite")
        case .invalidTopLogprobs: ("top-logprobs", "in 0...\(TopLogprobs.maximumCount)")
        case .invalidSampler(let name, _): (name, Self.requirement(ofSampler: name))
        default: nil
        }
    }

    /// Who must fix this error (``Origin``).
    public var origin: Origin {
        switch self {
        case .notANumber, .positiveInfinity, .noFiniteLogit, .vocabularyTooLarge: .data
        case .invalidTemperature, .invalidNSigma, .invalidTopK, .invalidTopP, .invalidMinP, .invalidSampler,
            .invalidRepetitionPenalty, .invalidFrequencyPenalty, .invalidPresencePenalty, .invalidLogitBias,
            .tokenOutOfRange, .bitmaskTooShort, .invalidTopLogprobs:
            .settings
        case .missingLogprobsBuffer: .call
        }
    }

    /// What is wrong with the row, without the row number: `logit at index 17 is NaN`. See
    /// ``message(row:)`` for the form that names the row.
    public var description: String {
        let requirement = setting?.requirement ?? ""
        switch self {
        case .notANumber(let index): return "logit at index \(index) is NaN"
        case .positiveInfinity(let index): return "logit at index \(index) is +inf"
        case .noFiniteLogit: return "no finite logit (every logit is -inf)"
        case .invalidTemperature(let t): return "temperature \(t) is invalid (must be >= 0)"
        case .invalidNSigma(let n): return "n \(n) is invalid (must be >= 0, or nil to disable Top-nσ)"
        case .invalidTopK(let k): return "top-k \(k) is invalid (must be >= 1)"
        case .invalidTopP(let p): return "top-p \(p) is invalid (must be in (0, 1])"
        case .invalidMinP(let m): return "min-p \(m) is invalid (must be in [0, 1])"
        case .invalidSampler(let name, let value): return "\(name) \(value) is invalid (must be \(requirement))"
        case .invalidRepetitionPenalty(let r): return "repetition penalty \(r) is invalid (must be \(requirement))"
        case .invalidFrequencyPenalty(let f): return "frequency penalty \(f) is invalid (must be \(requirement))"
        case .invalidPresencePenalty(let p): return "presence penalty \(p) is invalid (must be \(requirement))"
        case .invalidLogitBias(let token, let bias):
            return "logit bias \(bias) on token \(token) is invalid (must be finite)"
        case .tokenOutOfRange(let token): return "token id \(token) is out of range for the vocabulary"
        case .bitmaskTooShort(let words, let needed):
            return "allowed-token bitmask has \(words) words, the vocabulary needs \(needed)"
        case .invalidTopLogprobs(let n):
            return "top logprobs \(n) is invalid (must be \(requirement))"
        case .missingLogprobsBuffer: return "logprobs were requested but no logprobs buffer was passed"
        case .vocabularyTooLarge(let v):
            return
                "a row of \(v) logits is too large (at most \(Vocabulary.maximumSize): token ids are 32-bit)"
        }
    }

    /// The message with the row named, as the CLI prints it: `row 3: logit at index 17 is NaN`.
    public func message(row: Int) -> String { "row \(row): \(description)" }
}
