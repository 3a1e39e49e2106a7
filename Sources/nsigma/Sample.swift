import ArgumentParser
import TopNSigma
import TopNSigmaIO

/// `nsigma sample --logits PATH [--vocab V] [--n 1.0] [--temperature 1.0] [--seed 0] [--draws 1] [--threads N]
/// [truncation] [processing] [--top-logprobs N]`.
struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw tokens from every row with the batched sampler, as JSON lines.",
        discussion: """
            Every row uses the given seed (as if each row were a request with that seed); draw j uses step j.
            Each line: {"row": i, "tokens": [D ids], "logprobs": [D floats], "kept": count}. "logprobs" are \
            the drawn tokens' log-probabilities in the distribution sampled from (after truncation, at the \
            temperature: the dynamic one with --dynatemp-range); "kept" is its size.
            --allowed, --logit-bias, --history and the penalties process each row before Top-nσ, the \
            truncations and the draw, in this order: the bitmask (a disallowed token is never drawn), the \
            bias, the penalties.
            With --top-logprobs N each line also holds, after "kept": "top_logprobs": [[id, logprob], …], \
            the N most probable tokens of the processed row (log_softmax at temperature 1, before any \
            truncation; most probable first, ties by lower id; the same for every draw); \
            "sampled_logprobs": [D floats], each drawn token's log-probability in that distribution; \
            "ranks": [D ints], each drawn token's rank in it (1-based: how many tokens have a processed \
            logit at or above its own).
            A row that fails (a NaN logit, a token id out of range, …) prints {"row": i, "error": "…"} and \
            the exit status is 3.
            """
    )

    @OptionGroup var input: LogitsOptions

    @Option(name: .customLong("n"), help: "Top-nσ's n (>= 0), or 'off'.")
    var nText: String = "1.0"

    @Option(help: "Softmax temperature (>= 0; 0 is greedy).")
    var temperature: Float = 1.0

    @Option(help: "The seed of every row.")
    var seed: UInt64 = 0

    @Option(help: "Draws per row; draw j uses step j.")
    var draws: Int = 1

    @Option(help: "Worker threads (default: all cores).")
    var threads: Int?

    @OptionGroup var truncation: TruncationOptions

    @OptionGroup var processing: ProcessingOptions

    @Option(
        name: .customLong("top-logprobs"), parsing: .unconditional,
        help: ArgumentHelp(
            "Add each row's N most probable tokens of the processed row with their log-probabilities, and each drawn token's log-probability and rank in that distribution (0...20).",
            valueName: "n"))
    var topLogprobs: Int?

    func run() throws {
        let n = try parseNSigma(nText)
        guard draws >= 1 else { throw UsageError(message: "--draws must be at least 1, got \(draws)") }
        if let threads, threads < 1 { throw UsageError(message: "--threads must be at least 1, got \(threads)") }
        guard temperature >= 0 else { throw UsageError(message: "--temperature must be >= 0, got \(temperature)") }
        // Every option is checked before the file is read: a file without rows does not excuse a bad option.
        let rowParameters = try truncation.parameters(temperature: temperature, nSigma: n, seed: seed)
        if let topLogprobs, !(0...TopLogprobs.maximumCount).contains(topLogprobs) {
            throw UsageError(message: "--top-logprobs must be in 0...\(TopLogprobs.maximumCount), got \(topLogprobs)")
        }
        try input.checkOptions()
        let processingInput = try processing.load()
        let file = try input.load()
        // Each row's processing (nil: the rows as they are), and the rows' errors found here.
        var requests: [RequestProcessing]?, rowErrors = [RowError?](repeating: nil, count: file.rows)
        if processingInput.isActive || topLogprobs != nil {
            let prepared = try processingInput.requests(rows: file.rows, vocab: file.vocab, topLogprobs: topLogprobs)
            (requests, rowErrors) = (prepared.processing, prepared.errors)
        }
        guard file.rows > 0 else { return }
        // One thread's scratch first, as `filter` checks it: a vocabulary too large for memory
        // is reported the same way by both commands.
        try input.checkScratch(for: file)
        // More threads than the file's rows and chunks can use would only cost memory.
        let useful = max(file.rows, (file.vocab + 4095) / 4096)
        let sampler: BatchSampler
        do {
            sampler = try BatchSampler(
                vocabularySize: file.vocab, maximumBatchSize: file.rows,
                threadCount: threads.map { min($0, useful, BatchSampler.maximumThreadCount) })
        } catch {
            // A vocabulary the sampler cannot take (it takes one logit less than filter's limit).
            throw UsageError(message: "\(input.logits): \(error.description)")
        }
        let parameters = [SamplingParameters](repeating: rowParameters, count: file.rows)
        var tokens = [[Int]](repeating: [], count: file.rows)
        var logprobs = [[Double]](repeating: [], count: file.rows)
        var kept = [Int](repeating: 0, count: file.rows)
        // A row's error found before the call (a token id beyond Int32) comes first, as the
        // library's request errors do: they are found before any logit is read.
        var errors = rowErrors
        // --top-logprobs: draw 0's entries (every draw of a row sees the same processed row), and
        // each draw's sampled log-probability and rank.
        var top = [[TokenLogprob]](repeating: [], count: file.rows)
        var sampledLogprobs = [[Double]](repeating: [], count: file.rows)
        var ranks = [[Int]](repeating: [], count: file.rows)
        for draw in 0..<draws {
            let steps = [UInt64](repeating: UInt64(draw), count: file.rows)
            let results: [SampleResult], rowLogprobs: [TopLogprobs]
            if let requests {
                // Request processing samples Floats: a 16-bit file's values, converted exactly when
                // it was read. Only the plain path below reads 16-bit logits as stored.
                (results, rowLogprobs) = sampler.sample(
                    logits: file.values, parameters: parameters, processing: requests, steps: steps)
            } else if let bits = file.bits {
                // A float16 or bfloat16 file: its logits as stored, read by the 16-bit kernels.
                (results, rowLogprobs) = (
                    sampler.sample(bits: bits, format: file.format, parameters: parameters, steps: steps), []
                )
            } else {
                (results, rowLogprobs) = (sampler.sample(logits: file.values, parameters: parameters, steps: steps), [])
            }
            for (r, result) in results.enumerated() {
                switch result {
                case .success(let token):
                    tokens[r].append(Int(token.token))
                    logprobs[r].append(token.logProbability)
                    kept[r] = token.candidateCount
                    if topLogprobs != nil {
                        if draw == 0 { top[r] = rowLogprobs[r].entries }
                        sampledLogprobs[r].append(rowLogprobs[r].sampledLogprob)
                        ranks[r].append(rowLogprobs[r].sampledRank)
                    }
                case .failure(let error):
                    if rowErrors[r] == nil { errors[r] = error }
                }
            }
        }
        var lines: [String] = []
        for r in 0..<file.rows {
            if let error = errors[r] {
                lines.append("{\"row\": \(r), \"error\": \(jsonString(error.message(row: r)))}")
            } else {
                var line =
                    "{\"row\": \(r), \"tokens\": [\(tokens[r].map(String.init).joined(separator: ", "))], "
                    + "\"logprobs\": [\(logprobs[r].map(json).joined(separator: ", "))], \"kept\": \(kept[r])"
                if topLogprobs != nil {
                    line +=
                        ", \"top_logprobs\": [\(top[r].map { "[\($0.token), \(json($0.logprob))]" }.joined(separator: ", "))], "
                        + "\"sampled_logprobs\": [\(sampledLogprobs[r].map(json).joined(separator: ", "))], "
                        + "\"ranks\": [\(ranks[r].map(String.init).joined(separator: ", "))]"
                }
                lines.append(line + "}")
            }
        }
        emit(lines)
        if errors.contains(where: { $0 != nil }) { throw ExitCode(3) }
    }
}
