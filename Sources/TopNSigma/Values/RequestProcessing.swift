/// One token's additive logit bias (OpenAI's `logit_bias` entry).
public struct LogitBias: Sendable, Equatable, Hashable {
    /// The token id, `0..<vocabularySize`.
    public var token: TokenID
    /// Added to the token's logit; finite.
    public var bias: Float

    /// A bias of `bias` on `token`.
    @inlinable
    public init(token: TokenID, bias: Float) {
        self.token = token
        self.bias = bias
    }
}

/// What a server does to one request's logits before sampling, applied inside the fused pass:
/// the caller's logits are never written and no row is copied.
///
/// Order (vLLM's): the allowed-token bitmask, then the logit bias, then the penalties; Top-nσ,
/// min-p, top-k and top-p then see the processed row (its max, mean and std), then the
/// temperature and the draw. Each step is optional; the defaults change nothing.
///
/// - **Allowed tokens** (xgrammar / llguidance / vLLM layout): 32-bit words, token `t` is allowed
///   iff bit `t % 32` (least significant first) of word `t / 32` is 1. A masked token counts as
///   `-inf`: it takes no part in the statistics and is never kept, whatever its logit (a masked
///   NaN is ignored).
/// - **Logit bias**: each `(token, bias)` is added to that token's logit (several entries for one
///   token add up). A masked token stays masked.
/// - **Penalties**, with vLLM's definitions, over `promptTokens` and `outputTokens`:
///   `repetitionPenalty r` divides a positive logit by `r` and multiplies any other by `r`, for
///   tokens in the prompt or the output; `frequencyPenalty f` subtracts `f · count` (occurrences
///   in the output); `presencePenalty p` subtracts `p` from tokens that occur in the output.
///
/// - **DRY** ("don't repeat yourself", llama.cpp's `dry`, p-e-w 2024), over the context
///   `promptTokens + outputTokens`, its last ``dryPenaltyLastN`` tokens (-1: all of it): a token
///   that would extend a sequence already in that window to `L >= dryAllowedLength` tokens
///   (the longest such `L`, counted without the new token) loses
///   `dryMultiplier · dryBase^min(L − dryAllowedLength, E)`, computed as llama.cpp does
///   (`Float(Double(m) · pow(Double(b), e))`, `E = Int(88.7228391 / logf(b))` when `b > 1.000001`,
///   else no cap). A repeat never reaches back across a ``drySequenceBreakers`` sequence (the
///   last one in the window bounds `L` to the tokens after it), and a single-token breaker is
///   never penalized. Off while ``dryMultiplier`` is 0.
///
/// The processed logit is computed in `Float`, in that order:
/// `v = x + bias; if seen { v = v > 0 ? v / r : v * r }; v -= f * count; if count > 0 { v -= p }; v -= dry`.
///
/// ```swift
/// var processing = RequestProcessing()
/// processing.allowedTokens = grammarBitmask                  // [UInt32], ceil(V / 32) words
/// processing.logitBias = [LogitBias(token: 50256, bias: -100)]
/// processing.promptTokens = promptIDs
/// processing.outputTokens = generatedIDs
/// processing.repetitionPenalty = 1.1
/// processing.topLogprobs = 5
/// ```
public struct RequestProcessing: Sendable, Equatable, Hashable {
    /// The allowed-token bitmask, at least `ceil(vocabularySize / 32)` words, or nil for every
    /// token allowed.
    public var allowedTokens: [UInt32]?
    /// Sparse additive biases.
    public var logitBias: [LogitBias]
    /// The prompt's token ids (for the repetition penalty only).
    public var promptTokens: [TokenID]
    /// The tokens generated so far (all three penalties).
    public var outputTokens: [TokenID]
    /// vLLM's `repetition_penalty`, `> 0` and finite; 1 is off.
    public var repetitionPenalty: Float
    /// vLLM's / OpenAI's `frequency_penalty`, finite; 0 is off.
    public var frequencyPenalty: Float
    /// vLLM's / OpenAI's `presence_penalty`, finite; 0 is off.
    public var presencePenalty: Float
    /// How many top log-probabilities to return, `0...TopLogprobs.maximumCount`, or nil for none
    /// (no extra work). 0 still returns the sampled token's log-probability and rank.
    public var topLogprobs: Int?
    /// DRY's multiplier, finite and `>= 0`; 0 (the default) is off and leaves the other DRY
    /// settings unread.
    public var dryMultiplier: Float
    /// DRY's base, finite and `>= 1` (llama.cpp's default 1.75).
    public var dryBase: Float
    /// The longest repeat DRY lets go unpenalized, `0...Int32.max` (llama.cpp's default 2).
    public var dryAllowedLength: Int
    /// How many of the context's last tokens DRY scans: `-1` all of them (the default), 0 none
    /// (off), or up to `Int32.max`.
    public var dryPenaltyLastN: Int
    /// Token sequences that no repeat crosses: each 1 to ``maximumBreakerLength`` valid token
    /// ids, matched in order (llama.cpp tokenizes its breaker strings into such sequences; pass
    /// your tokenizer's ids for `"\n"`, `":"`, `"\""`, `"*"` to match its defaults).
    public var drySequenceBreakers: [[TokenID]]

    /// The most tokens one DRY sequence breaker may hold: llama.cpp's 20-token tail after its
    /// head, which keeps the breaker scan linear in the window.
    public static let maximumBreakerLength = 21

    /// Processing with the given steps; the defaults change nothing.
    @inlinable
    public init(
        allowedTokens: [UInt32]? = nil, logitBias: [LogitBias] = [], promptTokens: [TokenID] = [],
        outputTokens: [TokenID] = [],
        repetitionPenalty: Float = 1, frequencyPenalty: Float = 0, presencePenalty: Float = 0, topLogprobs: Int? = nil,
        dryMultiplier: Float = 0, dryBase: Float = 1.75, dryAllowedLength: Int = 2, dryPenaltyLastN: Int = -1,
        drySequenceBreakers: [[TokenID]] = []
    ) {
        self.allowedTokens = allowedTokens
        self.logitBias = logitBias
        self.promptTokens = promptTokens
        self.outputTokens = outputTokens
        self.repetitionPenalty = repetitionPenalty
        self.frequencyPenalty = frequencyPenalty
        self.presencePenalty = presencePenalty
        self.topLogprobs = topLogprobs
        self.dryMultiplier = dryMultiplier
        self.dryBase = dryBase
        self.dryAllowedLength = dryAllowedLength
        self.dryPenaltyLastN = dryPenaltyLastN
        self.drySequenceBreakers = drySequenceBreakers
    }

    /// Whether the penalties change anything (the history is read only then).
    @inlinable
    var penalizes: Bool { repetitionPenalty != 1 || frequencyPenalty != 0 || presencePenalty != 0 }

    /// A penalty that is not finite, `r <= 0`, a top-logprobs count out of range, or a DRY
    /// setting out of range (checked in this order, first of all).
    var settingsError: RowError? {
        Self.settingsError(
            repetitionPenalty: repetitionPenalty, frequencyPenalty: frequencyPenalty,
            presencePenalty: presencePenalty, topLogprobs: topLogprobs,
            dry: DrySettings(
                multiplier: dryMultiplier, base: dryBase, allowedLength: dryAllowedLength, penaltyLastN: dryPenaltyLastN
            ))
    }

    /// ``settingsError`` of these values.
    static func settingsError(
        repetitionPenalty: Float, frequencyPenalty: Float, presencePenalty: Float, topLogprobs: Int?,
        dry: DrySettings
    ) -> RowError? {
        if !(repetitionPenalty > 0 && repetitionPenalty.isFinite) {
            return .invalidRepetitionPenalty(repetitionPenalty)
        }
        if !frequencyPenalty.isFinite { return .invalidFrequencyPenalty(frequencyPenalty) }
        if !presencePenalty.isFinite { return .invalidPresencePenalty(presencePenalty) }
        if let n = topLogprobs, !(0...TopLogprobs.maximumCount).contains(n) { return .invalidTopLogprobs(n) }
        return dry.error
    }

    /// A bitmask shorter than `ceil(vocabularySize / 32)` words.
    func bitmaskError(vocabularySize: Int) -> RowError? {
        guard let words = allowedTokens else { return nil }
        let needed = (vocabularySize + 31) / 32
        return words.count < needed ? .bitmaskTooShort(words: words.count, needed: needed) : nil
    }

    /// The error of these settings that needs no logit: a penalty that is not finite, `r <= 0`,
    /// a top-logprobs count out of range, a bias that is not finite or a token id out of
    /// `0..<vocabularySize`, or a bitmask shorter than `ceil(vocabularySize / 32)` words.
    public func validationError(vocabularySize: Int) -> RowError? {
        if let error = settingsError ?? bitmaskError(vocabularySize: vocabularySize) { return error }
        for entry in logitBias {
            if entry.token < 0 || Int(entry.token) >= vocabularySize { return .tokenOutOfRange(Int(entry.token)) }
            if !entry.bias.isFinite { return .invalidLogitBias(token: Int(entry.token), entry.bias) }
        }
        for token in promptTokens where token < 0 || Int(token) >= vocabularySize {
            return .tokenOutOfRange(Int(token))
        }
        for token in outputTokens where token < 0 || Int(token) >= vocabularySize {
            return .tokenOutOfRange(Int(token))
        }
        guard dryMultiplier != 0 else { return nil }
        return drySequenceBreakers.withUnsafeBufferPointer { BreakerList.nested($0).error(vocab: vocabularySize) }
    }
}

/// DRY's scalar settings, as ``RequestProcessing`` and the C ABI's `tns_processing` hold them.
struct DrySettings {
    var multiplier: Float = 0
    var base: Float = 1.75
    var allowedLength: Int = 2
    var penaltyLastN: Int = -1

    /// Whether DRY changes anything (its other settings are read only then).
    var isOn: Bool { multiplier != 0 && penaltyLastN != 0 }

    /// A multiplier that is not finite or negative; while it is not 0, a base below 1 or not
    /// finite, an allowed length outside `0...Int32.max`, or a window below -1 or above
    /// `Int32.max`. Named as the CLI options are.
    var error: RowError? {
        if !(multiplier >= 0 && multiplier.isFinite) {
            return .invalidSampler(name: "dry-multiplier", value: multiplier)
        }
        guard multiplier != 0 else { return nil }
        if !(base >= 1 && base.isFinite) { return .invalidSampler(name: "dry-base", value: base) }
        if !(0...Int(Int32.max)).contains(allowedLength) {
            return .invalidSampler(name: "dry-allowed-length", value: Float(allowedLength))
        }
        if !(-1...Int(Int32.max)).contains(penaltyLastN) {
            return .invalidSampler(name: "dry-penalty-last-n", value: Float(penaltyLastN))
        }
        return nil
    }

    /// A sequence breaker of `length` tokens that is empty or longer than
    /// ``RequestProcessing/maximumBreakerLength``.
    static func breakerError(length: Int) -> RowError? {
        (1...RequestProcessing.maximumBreakerLength).contains(length)
            ? nil : .invalidSampler(name: "dry-sequence-breakers", value: Float(length))
    }
}

/// A row's DRY sequence breakers as ``RowPipeline/prepare(view:vocab:scratch:logprobs:)`` reads
/// them: a ``RequestProcessing``'s arrays, or the C ABI's flat `dry_breaker_tokens` and
/// `dry_breaker_lengths`.
package enum BreakerList {
    case none
    case nested(UnsafeBufferPointer<[Int32]>)
    /// `lengths.count` breakers; breaker `i` is the next `lengths[i]` ids of `tokens` (a length is
    /// checked before its ids are read, so a bad one stops the walk).
    case flat(tokens: UnsafePointer<Int32>?, lengths: UnsafeBufferPointer<Int32>)

    /// Calls `body` with each breaker in order until it returns false. A length outside
    /// `1...RequestProcessing.maximumBreakerLength` is reported by ``DrySettings/breakerError(length:)``
    /// before any of that breaker's ids is read.
    func forEach(_ body: (UnsafeBufferPointer<Int32>) -> Bool) -> RowError? {
        switch self {
        case .none: return nil
        case .nested(let arrays):
            for i in 0..<arrays.count {
                if let error = DrySettings.breakerError(length: arrays[i].count) { return error }
                if !arrays[i].withUnsafeBufferPointer(body) { return nil }
            }
        case .flat(let tokens, let lengths):
            var offset = 0
            for i in 0..<lengths.count {
                let n = Int(lengths[i])
                if let error = DrySettings.breakerError(length: n) { return error }
                if !body(UnsafeBufferPointer(start: tokens! + offset, count: n)) { return nil }
                offset += n
            }
        }
        return nil
    }

    /// The first bad breaker's error: a length outside `1...RequestProcessing.maximumBreakerLength`
    /// (``DrySettings/breakerError(length:)``), or an id outside `0..<vocab`.
    func error(vocab: Int) -> RowError? {
        let bound = Int32(truncatingIfNeeded: vocab)
        var badToken: Int32?
        let error = forEach { b in
            for t in b where t < 0 || t >= bound {
                badToken = t
                return false
            }
            return true
        }
        return error ?? badToken.map { .tokenOutOfRange(Int($0)) }
    }
}
