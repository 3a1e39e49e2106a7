import ArgumentParser
import Foundation
import TopNSigma
import TopNSigmaIO

/// `nsigma verify --logits PATH --k K --drafts PATH [--draft-probs PATH] [sampling options] [--seed S] [--trials N]`.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify draft tokens against target rows (speculative decoding), as JSON lines.",
        discussion: """
            The logits hold requests × (k + 1) rows, request-major. --drafts is a JSON array with one
            {"tokens": [k ids], "q": [k probabilities]} per request; --draft-probs, optionally, a raw
            float32 file of requests × k dense draft rows. Every request uses the given seed; trial j uses step j.
            Each line: {"request": r, "trial": j, "accepted": a, "tokens": [a + 1 ids], "logprobs": [a + 1 floats]}.
            A request that fails prints {"request": r, "trial": j, "error": "…"} and the exit status is 3.
            """
    )

    @OptionGroup var input: LogitsOptions

    @Option(help: "Draft tokens per request (0...2147483647).")
    var k: Int

    @Option(
        help:
            "A JSON array of {\"tokens\": [k ids], \"q\": [k probabilities]}, one per request (both keys required, any other key is an error; ids are integers)."
    )
    var drafts: String

    @Option(name: .customLong("draft-probs"), help: "A raw float32 file of requests × k dense draft rows (optional).")
    var draftProbs: String?

    @Option(name: .customLong("n"), help: "Top-nσ's n (>= 0), or 'off'.")
    var nText: String = "1.0"

    @Option(help: "Softmax temperature (>= 0; 0 is greedy).")
    var temperature: Float = 1.0

    @Option(help: "The seed of every request.")
    var seed: UInt64 = 0

    @Option(help: "Trials per request; trial j uses step j.")
    var trials: Int = 1

    @Option(help: "Worker threads (default: all cores).")
    var threads: Int?

    @OptionGroup var truncation: TruncationOptions

    /// One request's entry of the drafts file.
    struct Draft {
        var tokens: [Int]
        var q: [Double]
    }

    /// The largest `--k`: the rows per request, `k + 1`, and a request's draft rows, `k × V`,
    /// then fit 64 bits whatever the file holds.
    static let maximumK = Int(Int32.max)

    func run() throws {
        let n = try parseNSigma(nText)
        // Checked before any arithmetic on k (k + 1, k × V).
        guard (0...Self.maximumK).contains(k) else {
            throw UsageError(message: "--k must be in 0...\(Self.maximumK), got \(k)")
        }
        guard trials >= 1 else { throw UsageError(message: "--trials must be at least 1, got \(trials)") }
        if let threads, threads < 1 { throw UsageError(message: "--threads must be at least 1, got \(threads)") }
        guard temperature >= 0 else { throw UsageError(message: "--temperature must be >= 0, got \(temperature)") }
        let parameters = try truncation.parameters(temperature: temperature, nSigma: n, seed: seed)
        try input.checkOptions()
        // The drafts before the logits: a bad drafts file is reported whatever the logits hold.
        let entries = try readDrafts()
        let file = try input.load()
        guard file.rows % (k + 1) == 0 else {
            throw UsageError(message: "the logits hold \(file.rows) rows, not a multiple of k + 1 = \(k + 1)")
        }
        let requests = file.rows / (k + 1)
        guard entries.count == requests else {
            throw UsageError(message: "--drafts holds \(entries.count) entries for \(requests) requests")
        }
        var dense: [Float]?
        if let draftProbs {
            guard let data = FileManager.default.contents(atPath: draftProbs) else {
                throw UsageError(message: "cannot read --draft-probs \(draftProbs)")
            }
            let expected = requests * k * file.vocab
            guard data.count == expected * 4 else {
                throw UsageError(
                    message:
                        "--draft-probs holds \(data.count) bytes, expected \(requests) × \(k) × \(file.vocab) float32 values"
                )
            }
            dense = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        let rowLength = k * file.vocab
        // An id beyond 32 bits is clamped, so the library rejects it at its own position, in its
        // own order of checks; the error then names the id as it was given (`restoreToken`).
        let proposals = entries.enumerated().map { r, entry in
            DraftProposal(
                tokens: entry.tokens.map { TokenID(clamping: $0) }, probabilities: entry.q,
                distributions: dense.map { .dense(Array($0[(r * rowLength)..<((r + 1) * rowLength)])) })
        }
        guard requests > 0 else { return }
        try input.checkScratch(for: file)
        let sampler: BatchSampler
        do {
            sampler = try BatchSampler(
                vocabularySize: file.vocab, maximumBatchSize: requests,
                threadCount: threads.map { min($0, requests, BatchSampler.maximumThreadCount) })
        } catch {
            throw UsageError(message: error.description)
        }
        var lines: [String] = []
        var failed = false
        let all = [SamplingParameters](repeating: parameters, count: requests)
        var outcomes: [[VerificationOutcome]] = []
        for trial in 0..<trials {
            outcomes.append(
                sampler.verify(
                    logits: file.values, k: k, proposals: proposals, parameters: all,
                    steps: [UInt64](repeating: UInt64(trial), count: requests)))
        }
        /// The error with the draft id at its position as `--drafts` gave it.
        func restoreToken(_ error: VerificationError, request r: Int) -> VerificationError {
            guard case .tokenOutOfRange(let position, _) = error, entries[r].tokens.indices.contains(position)
            else { return error }
            return .tokenOutOfRange(position: position, token: entries[r].tokens[position])
        }
        for r in 0..<requests {
            for trial in 0..<trials {
                switch outcomes[trial][r].mapError({ restoreToken($0, request: r) }) {
                case .success(let result):
                    lines.append(
                        "{\"request\": \(r), \"trial\": \(trial), \"accepted\": \(result.accepted), "
                            + "\"tokens\": [\(result.tokens.map(String.init).joined(separator: ", "))], "
                            + "\"logprobs\": [\(result.logProbabilities.map(json).joined(separator: ", "))]}")
                case .failure(let error):
                    failed = true
                    lines.append(
                        "{\"request\": \(r), \"trial\": \(trial), \"error\": \(jsonString("request \(r): \(error.description)"))}"
                    )
                }
            }
        }
        emit(lines)
        if failed { throw ExitCode(3) }
    }

    /// The entries of `--drafts`, or a ``UsageError``: the rules of every JSON input (see
    /// JSONInput.swift), and in each entry exactly the keys "tokens" (token ids) and "q" (numbers).
    /// The lengths are the library's to check: a wrong one fails its request only.
    func readDrafts() throws -> [Draft] {
        let what = "--drafts \(drafts)"
        let shape = "{\"tokens\": [k ids], \"q\": [k probabilities]}"
        guard let array = try readJSON(drafts, option: "--drafts") as? [Any] else {
            throw UsageError(message: "\(what): expected a JSON array of \(shape)")
        }
        return try array.enumerated().map { i, element in
            guard let object = element as? [String: Any] else {
                throw UsageError(message: "\(what): entry \(i) is not a JSON object \(shape)")
            }
            try checkKeys(object, allowed: ["tokens", "q"], what: "\(what): entry \(i)")
            for key in ["tokens", "q"] where object[key] == nil {
                throw UsageError(message: "\(what): entry \(i) has no \(jsonString(key))")
            }
            guard let q = object["q"] as? [Any] else {
                throw UsageError(message: "\(what): entry \(i) \"q\" is not an array of probabilities")
            }
            return Draft(
                tokens: try jsonTokenList(object["tokens"], what: "\(what): entry \(i) \"tokens\""),
                q: try q.enumerated().map { j, value in
                    guard let number = jsonNumber(value) else {
                        throw UsageError(message: "\(what): entry \(i) \"q\": element \(j) is not a number")
                    }
                    return number.doubleValue
                })
        }
    }
}
