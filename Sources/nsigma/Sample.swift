import ArgumentParser
import TopNSigma
import TopNSigmaIO

/// `nsigma sample --logits PATH [--vocab V] [--n 1.0] [--temperature 1.0] [--seed 0] [--draws 1] [--threads N]`.
struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw tokens from every row with the batched sampler, as JSON lines.",
        discussion: """
            Every row uses the given seed (as if each row were a request with that seed); draw j uses step j.
            Each line: {"row": i, "tokens": [D ids], "logprobs": [D floats], "kept": count}.
            A row that fails prints {"row": i, "error": "…"} and the exit status is 3.
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

    func run() throws {
        let n = try parseNSigma(nText)
        guard draws >= 1 else { throw UsageError(message: "--draws must be at least 1, got \(draws)") }
        if let threads, threads < 1 { throw UsageError(message: "--threads must be at least 1, got \(threads)") }
        guard temperature >= 0 else { throw UsageError(message: "--temperature must be >= 0, got \(temperature)") }
        // Every option is checked before the file is read: a file without rows does not excuse a bad option.
        let rowParameters = try truncation.parameters(temperature: temperature, nSigma: n, seed: seed)
        let file = try input.load()
        guard file.rows > 0 else { return }
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
        var errors = [RowError?](repeating: nil, count: file.rows)
        for draw in 0..<draws {
            let results = sampler.sample(
                logits: file.values, parameters: parameters, steps: [UInt64](repeating: UInt64(draw), count: file.rows))
            for (r, result) in results.enumerated() {
                switch result {
                case .success(let token):
                    tokens[r].append(token.token)
                    logprobs[r].append(token.logProbability)
                    kept[r] = token.candidateCount
                case .failure(let error):
                    errors[r] = error
                }
            }
        }
        var lines: [String] = []
        for r in 0..<file.rows {
            if let error = errors[r] {
                lines.append("{\"row\": \(r), \"error\": \(jsonString(error.message(row: r)))}")
            } else {
                lines.append(
                    "{\"row\": \(r), \"tokens\": [\(tokens[r].map(String.init).joined(separator: ", "))], "
                        + "\"logprobs\": [\(logprobs[r].map(json).joined(separator: ", "))], \"kept\": \(kept[r])}")
            }
        }
        emit(lines)
        if errors.contains(where: { $0 != nil }) { throw ExitCode(3) }
    }
}
