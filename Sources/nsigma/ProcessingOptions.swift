import ArgumentParser
import Foundation
import TopNSigma

/// The request-processing options shared by `filter` and `sample`: an allowed-token bitmask, a
/// logit bias, a token history and the three penalties (the library's ``RequestProcessing``).
///
/// Checked in two steps, so that a bad option is reported whatever the logits file holds:
/// ``load()`` reads and parses every file and checks every value before the logits are read;
/// ``ProcessingInput/requests(rows:vocab:topLogprobs:)`` then checks the files' row counts and
/// sizes against the logits.
struct ProcessingOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Allowed-token bitmasks: a raw file of little-endian 32-bit words, rows × ceil(V / 32), one mask per row (token t is allowed iff bit t % 32 of word t / 32 is set, least significant first).",
            valueName: "path"))
    var allowed: String?

    @Option(
        name: .customLong("logit-bias"),
        help: ArgumentHelp(
            "A JSON object {\"token id\": bias} added to every row's logits, or a JSON array of such objects, one per row. A key is a decimal integer as JSON would print it (\"5\", not \"+5\" or \"05\"), at most once per object.",
            valueName: "path"))
    var logitBias: String?

    @Option(
        help: ArgumentHelp(
            "A JSON array of {\"prompt\": [ids], \"output\": [ids]}, one per row (a missing key is empty; any other key is an error): the tokens the penalties count.",
            valueName: "path"))
    var history: String?

    @Option(
        name: .customLong("repetition-penalty"), parsing: .unconditional,
        help: ArgumentHelp(
            "Divide a positive logit by R and multiply any other by R, for tokens in the row's prompt or output (finite, > 0; 1 is off).",
            valueName: "r"))
    var repetitionPenalty: Float = 1

    @Option(
        name: .customLong("frequency-penalty"), parsing: .unconditional,
        help: ArgumentHelp(
            "Subtract F × (occurrences in the row's output) from each token's logit (finite; 0 is off).",
            valueName: "f"))
    var frequencyPenalty: Float = 0

    @Option(
        name: .customLong("presence-penalty"), parsing: .unconditional,
        help: ArgumentHelp(
            "Subtract P from the logit of each token that occurs in the row's output (finite; 0 is off).",
            valueName: "p"))
    var presencePenalty: Float = 0

    @Option(
        name: .customLong("dry-multiplier"), parsing: .unconditional,
        help: ArgumentHelp(
            "DRY: subtract M × B^(L − allowed length) from a token that would extend a repeat of L tokens of the row's --history (prompt then output; finite, >= 0; 0 is off).",
            valueName: "m"))
    var dryMultiplier: Float?

    @Option(
        name: .customLong("dry-base"), parsing: .unconditional,
        help: ArgumentHelp("DRY's base B (finite, >= 1; default 1.75).", valueName: "b"))
    var dryBase: Float?

    @Option(
        name: .customLong("dry-allowed-length"), parsing: .unconditional,
        help: ArgumentHelp("The longest repeat DRY leaves alone (>= 0; default 2).", valueName: "n"))
    var dryAllowedLength: Int?

    @Option(
        name: .customLong("dry-penalty-last-n"), parsing: .unconditional,
        help: ArgumentHelp(
            "How many of the context's last tokens DRY scans (-1: all, the default; 0: off).", valueName: "n"))
    var dryPenaltyLastN: Int?

    @Option(
        name: .customLong("dry-sequence-breakers"),
        help: ArgumentHelp(
            "DRY's sequence breakers, inline JSON: an array of token-id arrays (each 1 to 21 ids; a bare id is a one-token breaker), e.g. '[[198], [25], [1, 2]]'. No repeat reaches back across the last one in the context, and a one-token breaker is never penalized.",
            valueName: "json"))
    var drySequenceBreakers: String?

    /// The DRY settings, checked (the library's ranges): nil when `--dry-multiplier` is absent.
    private func dry() throws -> ProcessingInput.Dry? {
        guard let multiplier = dryMultiplier else {
            for (name, given) in [
                ("--dry-base", dryBase != nil), ("--dry-allowed-length", dryAllowedLength != nil),
                ("--dry-penalty-last-n", dryPenaltyLastN != nil),
                ("--dry-sequence-breakers", drySequenceBreakers != nil)
            ] where given {
                throw UsageError(message: "\(name) needs --dry-multiplier")
            }
            return nil
        }
        // The values' ranges are the library's to check (``load()``).
        var dry = ProcessingInput.Dry(multiplier: multiplier)
        if let base = dryBase { dry.base = base }
        if let n = dryAllowedLength { dry.allowedLength = n }
        if let n = dryPenaltyLastN { dry.penaltyLastN = n }
        if let text = drySequenceBreakers {
            let what = "--dry-sequence-breakers"
            let value: Any
            do {
                value = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
            } catch {
                throw UsageError(message: "\(what) is not valid JSON: \(text)")
            }
            guard let array = value as? [Any] else {
                throw UsageError(message: "\(what): expected a JSON array of token-id arrays, e.g. '[[198], [1, 2]]'")
            }
            dry.breakers = try array.enumerated().map { i, element in
                let ids =
                    try (element as? [Any]).map { try jsonTokenList($0, what: "\(what): breaker \(i)") }
                    ?? [try jsonTokenID(element, what: "\(what): breaker \(i)")]
                guard (1...RequestProcessing.maximumBreakerLength).contains(ids.count) else {
                    throw UsageError(
                        message:
                            "\(what): breaker \(i) holds \(ids.count) ids (1 to \(RequestProcessing.maximumBreakerLength))"
                    )
                }
                return try ids.map { token in
                    guard let id = Int32(exactly: token), id >= 0 else {
                        throw UsageError(message: "\(what): breaker \(i) holds \(token), not a token id (>= 0)")
                    }
                    return id
                }
            }
        }
        return dry
    }

    /// Reads and parses every file and checks every value: everything that needs no logits.
    func load() throws -> ProcessingInput {
        var input = ProcessingInput(
            repetitionPenalty: repetitionPenalty, frequencyPenalty: frequencyPenalty, presencePenalty: presencePenalty)
        input.dry = try dry()
        // The penalties' and DRY's ranges, as the library checks them (its one statement of each).
        var settings = RequestProcessing(
            repetitionPenalty: repetitionPenalty, frequencyPenalty: frequencyPenalty, presencePenalty: presencePenalty)
        if let dry = input.dry {
            (settings.dryMultiplier, settings.dryBase, settings.dryAllowedLength, settings.dryPenaltyLastN) =
                (dry.multiplier, dry.base, dry.allowedLength, dry.penaltyLastN)
        }
        if let error = settings.validationError(vocabularySize: Vocabulary.maximumSize), let setting = error.setting {
            let given: [String: String] = [
                "repetition-penalty": "\(repetitionPenalty)", "frequency-penalty": "\(frequencyPenalty)",
                "presence-penalty": "\(presencePenalty)", "dry-multiplier": "\(settings.dryMultiplier)",
                "dry-base": "\(settings.dryBase)", "dry-allowed-length": "\(settings.dryAllowedLength)",
                "dry-penalty-last-n": "\(settings.dryPenaltyLastN)"
            ]
            throw UsageError(
                message: "--\(setting.name) must be \(setting.requirement), got \(given[setting.name] ?? "?")")
        }
        if let allowed {
            guard let data = FileManager.default.contents(atPath: allowed) else {
                throw UsageError(message: "cannot read --allowed \(allowed)")
            }
            input.allowed = (allowed, data)
        }
        if let logitBias {
            let what = "--logit-bias \(logitBias)"
            switch try readJSON(logitBias, option: "--logit-bias") {
            case let object as [String: Any]:
                input.biases = .shared(try biases(object, what: what))
            case let array as [Any]:
                input.biases = .perRow(
                    try array.enumerated().map { i, element in
                        guard let object = element as? [String: Any] else {
                            throw UsageError(message: "\(what): entry \(i) is not a JSON object {\"token id\": bias}")
                        }
                        return try biases(object, what: "\(what): entry \(i)")
                    })
            default:
                throw UsageError(message: "\(what): expected a JSON object {\"token id\": bias} or an array of them")
            }
        }
        if let history {
            let what = "--history \(history)"
            guard let array = try readJSON(history, option: "--history") as? [Any] else {
                throw UsageError(message: "\(what): expected a JSON array of {\"prompt\": [ids], \"output\": [ids]}")
            }
            input.history = try array.enumerated().map { i, element in
                guard let object = element as? [String: Any] else {
                    throw UsageError(
                        message: "\(what): entry \(i) is not a JSON object {\"prompt\": [ids], \"output\": [ids]}")
                }
                try checkKeys(object, allowed: ["prompt", "output"], what: "\(what): entry \(i)")
                return ProcessingInput.History(
                    prompt: try jsonTokenList(object["prompt"], what: "\(what): entry \(i) \"prompt\""),
                    output: try jsonTokenList(object["output"], what: "\(what): entry \(i) \"output\""))
            }
        }
        return input
    }

    /// One `{"token id": bias}` object, by ascending token id (a JSON object has no order). A key
    /// is a canonical decimal integer, each at most once (``readJSON(_:option:)`` refuses a
    /// duplicate key).
    private func biases(_ object: [String: Any], what: String) throws -> [(token: Int, bias: Float)] {
        try object.keys.sorted().map { key in
            let token = try jsonTokenKey(key, what: what)
            guard let number = jsonNumber(object[key]!) else {
                throw UsageError(message: "\(what): the bias of token \(key) is not a number")
            }
            // A bias beyond Float's range becomes ±inf, which the library reports as the row's error.
            return (token, Float(number.doubleValue))
        }.sorted { $0.token < $1.token }
    }
}

/// The processing options, read and parsed: ``requests(rows:vocab:topLogprobs:)`` makes each
/// row's ``RequestProcessing`` once the logits' shape is known.
struct ProcessingInput {
    struct History {
        var prompt: [Int]
        var output: [Int]
    }

    /// `--dry-*`, checked.
    struct Dry {
        var multiplier: Float
        var base: Float = 1.75
        var allowedLength = 2
        var penaltyLastN = -1
        var breakers: [[Int32]] = []
    }

    enum Biases {
        /// One object for every row.
        case shared([(token: Int, bias: Float)])
        /// One object per row.
        case perRow([[(token: Int, bias: Float)]])
    }

    /// The path and bytes of `--allowed`.
    var allowed: (path: String, data: Data)?
    var biases: Biases?
    var history: [History]?
    var repetitionPenalty: Float = 1
    var frequencyPenalty: Float = 0
    var presencePenalty: Float = 0
    var dry: Dry?

    /// Whether any processing option was given (otherwise the rows are sampled as they are).
    var isActive: Bool {
        allowed != nil || biases != nil || history != nil || repetitionPenalty != 1 || frequencyPenalty != 0
            || presencePenalty != 0 || dry != nil
    }

    /// Each row's processing, and each row's error found here: a token id that an `Int32` cannot
    /// hold (reported, as the library would, as out of range, after any earlier error of the
    /// row in the library's order). Throws a ``UsageError`` for a file whose rows do not match
    /// the logits.
    func requests(
        rows: Int, vocab: Int, topLogprobs: Int?
    ) throws -> (processing: [RequestProcessing], errors: [RowError?]) {
        let words = (vocab + 31) / 32
        var masks: [UInt32]?
        if case let (path, data)? = allowed {
            let (count, overflow) = rows.multipliedReportingOverflow(by: words)
            let (bytes, overflow2) = count.multipliedReportingOverflow(by: 4)
            guard !overflow && !overflow2 && data.count == bytes else {
                throw UsageError(
                    message:
                        "--allowed \(path) holds \(data.count) bytes, expected \(rows) rows × \(words) words (ceil(\(vocab) / 32)) × 4 bytes"
                )
            }
            masks = data.withUnsafeBytes { raw in
                (0..<count).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) }
            }
        }
        if case .perRow(let list) = biases, list.count != rows {
            throw UsageError(message: "--logit-bias holds \(list.count) objects for \(rows) rows")
        }
        if let history, history.count != rows {
            throw UsageError(message: "--history holds \(history.count) entries for \(rows) rows")
        }
        var processing: [RequestProcessing] = []
        var errors = [RowError?](repeating: nil, count: rows)
        processing.reserveCapacity(rows)
        for r in 0..<rows {
            var request = RequestProcessing(
                repetitionPenalty: repetitionPenalty, frequencyPenalty: frequencyPenalty,
                presencePenalty: presencePenalty,
                topLogprobs: topLogprobs)
            if let dry {
                (request.dryMultiplier, request.dryBase, request.dryAllowedLength, request.dryPenaltyLastN) =
                    (dry.multiplier, dry.base, dry.allowedLength, dry.penaltyLastN)
                request.drySequenceBreakers = dry.breakers
            }
            if let masks { request.allowedTokens = Array(masks[(r * words)..<((r + 1) * words)]) }
            // The first id that does not fit Int32 is the row's error, unless the library finds
            // one first in what comes before it (its order: penalties, bias, prompt, output).
            func id(_ token: Int) -> Int32? {
                if let id = Int32(exactly: token) { return id }
                if errors[r] == nil {
                    errors[r] = request.validationError(vocabularySize: vocab) ?? .tokenOutOfRange(token)
                }
                return nil
            }
            let rowBiases: [(token: Int, bias: Float)]
            switch biases {
            case .shared(let list): rowBiases = list
            case .perRow(let list): rowBiases = list[r]
            case nil: rowBiases = []
            }
            for entry in rowBiases {
                guard let token = id(entry.token) else { break }
                request.logitBias.append(LogitBias(token: token, bias: entry.bias))
            }
            if let entry = history?[r] {
                for token in entry.prompt {
                    guard let token = id(token) else { break }
                    request.promptTokens.append(token)
                }
                for token in entry.output {
                    guard let token = id(token) else { break }
                    request.outputTokens.append(token)
                }
            }
            processing.append(request)
        }
        return (processing, errors)
    }
}
