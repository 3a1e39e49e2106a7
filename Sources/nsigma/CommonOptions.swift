import ArgumentParser
import TopNSigma
import TopNSigmaIO

/// Options shared by `filter` and `sample`: where the logits come from.
struct LogitsOptions: ParsableArguments {
    @Option(name: .long, help: "A 2-D .npy file (float32 or float16, C order) or a raw little-endian file.")
    var logits: String

    @Option(name: .long, help: "Logits per row; required for raw files.")
    var vocab: Int?

    @Option(
        name: .long,
        help:
            "Element type of a raw file: f32 (default), f16 or bf16. A .npy file's header decides; a different --dtype is an error."
    )
    var dtype: String?

    /// Checks the options that need no file (`--dtype`, `--vocab`), so that a bad option is
    /// reported whatever the file holds.
    func checkOptions() throws {
        _ = try format()
        if let vocab { try checkVocabulary(vocab, what: "--vocab") }
    }

    /// The element type `--dtype` names, nil when it is not given.
    func format() throws -> LogitFormat? {
        guard let dtype else { return nil }
        guard let format = LogitFormat(fileSpelling: dtype) else {
            throw UsageError(message: "--dtype must be f32, f16 or bf16, got '\(dtype)'")
        }
        return format
    }

    /// Reads the file, or throws a ``UsageError`` with the reader's message.
    func load() throws -> LogitsFile {
        try checkOptions()
        let format = try self.format()
        let file: LogitsFile
        do {
            file = try LogitsFile.read(path: logits, vocab: vocab, format: format)
        } catch {
            throw UsageError(message: error.description)
        }
        try checkVocabulary(file.vocab, what: "\(logits): the vocabulary")
        return file
    }

    /// Checks that a row of the file can be worked on here: allocates, and frees at once, the
    /// scratch one thread needs for a row of `file.vocab` logits (the layout `BatchSampler` and
    /// `FilteredDistribution` share; about 64 bytes a logit). `filter`, `sample` and `verify` call it
    /// before any row is worked on, so that a vocabulary too large for this machine's memory is
    /// an input error (exit 2) in every command, never an allocation trap in the library's
    /// temporary scratch. A file without rows needs no scratch.
    func checkScratch(for file: LogitsFile) throws {
        guard file.rows > 0 else { return }
        do {
            _ = try BatchSampler(
                vocabularySize: file.vocab, maximumBatchSize: 1,
                threadCount: 1, executor: .concurrentPerform, placement: .disabled)
        } catch .outOfMemory(let bytes) {
            throw UsageError(
                message:
                    "\(logits): a row of \(file.vocab) logits needs \(bytes) bytes of scratch, which cannot be allocated"
            )
        } catch {
            throw UsageError(message: "\(logits): \(error.description)")
        }
    }
}

/// Token ids are 32-bit in the library: a larger vocabulary is an input error, not a row error.
func checkVocabulary(_ vocab: Int, what: String) throws {
    if vocab > Vocabulary.maximumSize {
        throw UsageError(
            message: "\(what) \(vocab) is too large: at most \(Vocabulary.maximumSize) (2^31 - 2) logits per row"
        )
    }
}

/// Parses `--n`: a number `>= 0`, or `off` to disable Top-nσ.
func parseNSigma(_ text: String) throws -> Float? {
    if text.lowercased() == "off" || text.lowercased() == "none" { return nil }
    guard let n = Float(text), n >= 0, n.isFinite else {
        throw UsageError(message: "--n must be a finite number >= 0 or 'off', got '\(text)'")
    }
    return n
}

/// JSON number text for a double (finite values only reach here; others become null).
func json(_ x: Double) -> String {
    x.isFinite ? "\(x)" : "null"
}

func json(_ x: Float) -> String {
    x.isFinite ? "\(x)" : "null"
}

/// A JSON string literal.
func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// Prints a batch of lines to stdout in one write.
func emit(_ lines: [String]) {
    var text = lines.joined(separator: "\n")
    if !lines.isEmpty { text += "\n" }
    print(text, terminator: "")
}

/// The truncation options shared by `filter` and `sample`.
struct TruncationOptions: ParsableArguments {
    @Option(name: .customLong("top-k"), help: "Keep the K largest logits (K >= 1).")
    var topK: Int?

    @Option(name: .customLong("top-p"), help: "Keep the smallest most-probable set with mass >= P (0 < P <= 1).")
    var topP: Float?

    @Option(name: .customLong("min-p"), help: "Keep tokens with probability >= M × the top probability (0 <= M <= 1).")
    var minP: Float?

    @Option(
        name: .customLong("typical-p"),
        help:
            "Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to mass P (0 < P <= 1)."
    )
    var typicalP: Float?

    @Option(help: "ε-sampling: keep tokens with probability > E, and the most probable (0 <= E < 1).")
    var epsilon: Float?

    @Option(help: "η-sampling: keep tokens with probability > min(E, sqrt(E)·exp(-entropy)) (0 <= E < 1).")
    var eta: Float?

    @Option(
        name: .customLong("xtc-threshold"),
        help: "XTC: drop the tokens with probability >= T but the least probable of them (0 <= T <= 1).")
    var xtcThreshold: Float?

    @Option(
        name: .customLong("xtc-probability"),
        help: "XTC: the chance it applies to a draw (0 <= P <= 1; default 1 with --xtc-threshold).")
    var xtcProbability: Float?

    @Option(
        name: .customLong("dynatemp-range"),
        help: "Dynamic temperature: T ± R by the kept set's normalized entropy (R >= 0; 0 is off).")
    var dynatempRange: Float?

    @Option(
        name: .customLong("dynatemp-exponent"),
        help: "Dynamic temperature: the entropy's exponent (>= 0; default 1 with --dynatemp-range).")
    var dynatempExponent: Float?

    @Flag(name: .customLong("p-less"), help: "p-less sampling: keep tokens with probability >= Σ p² (no parameter).")
    var pLess = false

    @Option(
        help: ArgumentHelp(
            "A sampler order, as llama.cpp's --samplers: names separated by ';' (top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature, epsilon, eta, p_less; penalties and dry first), e.g. 'top_k;top_p;min_p;temperature'. Each step runs over what the steps before it kept; the temperature applies last when not listed.",
            valueName: "list"))
    var samplers: String?

    @Flag(
        name: .customLong("llama-cpp-sentinels"),
        help:
            "Read llama.cpp's off values as llama.cpp does: --top-k <= 0, --top-p >= 1, --min-p <= 0, --n <= 0, --typical-p >= 1, --xtc-threshold > 0.5 and --dynatemp-range <= 0 turn their sampler off, instead of being errors."
    )
    var llamaCppSentinels = false

    /// The parameters for these options, or a ``UsageError`` for a value out of range.
    func parameters(temperature: Float, nSigma: Float?, seed: UInt64 = 0) throws -> SamplingParameters {
        if xtcProbability != nil && xtcThreshold == nil {
            throw UsageError(message: "--xtc-probability needs --xtc-threshold")
        }
        if dynatempExponent != nil && dynatempRange == nil {
            throw UsageError(message: "--dynatemp-exponent needs --dynatemp-range")
        }
        var order: SamplerOrder?
        if let samplers {
            do {
                order = try SamplerOrder(llamaCpp: samplers)
            } catch {
                throw UsageError(message: "--samplers: \(error)")
            }
        }
        var parameters = SamplingParameters(
            temperature: temperature, nSigma: nSigma, seed: seed, topK: topK, topP: topP, minP: minP,
            typicalP: typicalP, epsilon: epsilon, eta: eta, xtcThreshold: xtcThreshold,
            xtcProbability: xtcProbability ?? 1, dynamicTemperatureRange: dynatempRange,
            dynamicTemperatureExponent: dynatempExponent ?? 1, pLess: pLess, order: order)
        if llamaCppSentinels { parameters = parameters.withLlamaCppSentinels() }
        if let error = parameters.validationError { throw UsageError(message: error.description) }
        return parameters
    }
}
