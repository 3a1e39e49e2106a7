import ArgumentParser
import TopNSigma
import TopNSigmaIO

/// `nsigma filter --logits PATH [--vocab V] [--n 1.0] [truncation] [processing]`: the statistics
/// and the kept set of every (processed) row, one JSON object per line.
struct Filter: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print each row's statistics and the tokens Top-nσ keeps, as JSON lines.",
        discussion: """
            Each line: {"row": i, "max": …, "mean": …, "std": …, "threshold": …, "finite": count, "kept": [ids]}.
            "threshold" is the combined Top-nσ / min-p logit threshold (null when both are off); the other \
            filters then cut the kept set further, in this order: Top-nσ, min-p, top-k, --epsilon, --eta and \
            --p-less intersected (each over the whole row), then --typical-p, then top-p, then XTC (its coin \
            at seed 0, step 0: deterministic at --xtc-probability 1, the default). Every probability is the \
            softmax at --temperature.
            With --temperature 0 the row is greedy, as in `sample`: "kept" is the argmax alone.
            With --allowed, --logit-bias, --history or a penalty, every field describes the processed row, \
            as `sample` sees it: the bitmask (a disallowed token counts as -inf: it is not in "finite" and \
            never kept), then the bias, then the penalties.
            A row that cannot be filtered (a NaN logit, a token id out of range, …) prints \
            {"row": i, "error": "…"} and the exit status is 3.
            """
    )

    @OptionGroup var input: LogitsOptions

    @Option(name: .customLong("n"), help: "Standard deviations below the max (>= 0), or 'off'.")
    var nText: String = "1.0"

    @OptionGroup var truncation: TruncationOptions

    @Option(
        help: "Temperature of the distribution min-p and top-p are computed on (>= 0; 0 is greedy: kept is the argmax)."
    )
    var temperature: Float = 1.0

    @OptionGroup var processing: ProcessingOptions

    func run() throws {
        let n = try parseNSigma(nText)
        // T = 0 is greedy, as in `sample` and the library: the row keeps its argmax alone.
        guard temperature >= 0 else { throw UsageError(message: "--temperature must be >= 0, got \(temperature)") }
        let parameters = try truncation.parameters(temperature: temperature, nSigma: n)
        try input.checkOptions()
        let processingInput = try processing.load()
        let file = try input.load()
        try input.checkScratch(for: file)
        // Each row's processing (nil: the rows as they are), and the rows' errors found here.
        var requests: [RequestProcessing]?, rowErrors: [RowError?]?
        if processingInput.isActive {
            (requests, rowErrors) = try processingInput.requests(rows: file.rows, vocab: file.vocab, topLogprobs: nil)
        }
        var lines: [String] = []
        lines.reserveCapacity(file.rows)
        var failed = false
        file.values.withUnsafeBufferPointer { values in
            for r in 0..<file.rows {
                let row = UnsafeBufferPointer(rebasing: values[(r * file.vocab)..<((r + 1) * file.vocab)])
                let result =
                    rowErrors?[r].map { Result<FilteredDistribution, RowError>.failure($0) }
                    ?? Result { () throws(RowError) in
                        try FilteredDistribution.of(row, parameters: parameters, processing: requests?[r])
                    }
                switch result {
                case .failure(let error):
                    failed = true
                    lines.append("{\"row\": \(r), \"error\": \(jsonString(error.message(row: r)))}")
                case .success(let filtered):
                    let s = filtered.statistics
                    let kept = filtered.kept.map(\.token).sorted().map(String.init).joined(separator: ", ")
                    lines.append(
                        "{\"row\": \(r), \"max\": \(json(s.maximum)), \"mean\": \(json(s.mean)), \"std\": \(json(s.standardDeviation)), "
                            + "\"threshold\": \(json(filtered.threshold)), \"finite\": \(s.finiteCount), \"kept\": [\(kept)]}"
                    )
                }
            }
        }
        emit(lines)
        if failed { throw ExitCode(3) }
    }
}
