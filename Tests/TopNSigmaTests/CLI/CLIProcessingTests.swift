import Foundation
import Testing
import TopNSigma
import TopNSigmaIO

/// `nsigma filter` and `nsigma sample` with request processing (`--allowed`, `--logit-bias`,
/// `--history`, the penalties) and `sample --top-logprobs`: every field against a processed row
/// computed here (float32, the documented order) and the float64 oracle.
@Suite struct CLIProcessingTests {
    // MARK: - the oracle

    /// One row's processing, as the test describes it.
    private struct Processing {
        var mask: [UInt32]?
        var bias: [Int: Float] = [:]
        var prompt: [Int] = []
        var output: [Int] = []
        var repetition: Float = 1
        var frequency: Float = 0
        var presence: Float = 0
    }

    /// The processed row, computed here in Float in the documented order: mask (a disallowed
    /// token is -inf), bias, repetition (tokens in prompt ∪ output), frequency, presence.
    private static func processed(_ row: [Float], _ p: Processing) -> [Float] {
        var out = row
        if let mask = p.mask {
            for t in row.indices where mask[t / 32] >> UInt32(t % 32) & 1 == 0 { out[t] = -.infinity }
        }
        var counts: [Int: Int] = [:]
        for t in p.output { counts[t, default: 0] += 1 }
        let seen = Set(p.prompt).union(p.output)
        // Only these tokens change (every other one keeps its logit exactly).
        for t in seen.union(p.bias.keys) where out[t] != -.infinity {
            var v = row[t] + (p.bias[t] ?? 0)
            if seen.contains(t) { v = v > 0 ? v / p.repetition : v * p.repetition }
            let count = counts[t] ?? 0
            v -= p.frequency * Float(count)
            if count > 0 { v -= p.presence }
            out[t] = v
        }
        return out
    }

    /// float64 log_softmax at temperature 1 over the finite logits (-inf elsewhere).
    private static func logSoftmax(_ row: [Float]) -> [Double] {
        let m = Double(row.max()!)
        var total = 0.0
        for x in row where x != -.infinity { total += Foundation.exp(Double(x) - m) }
        let lse = m + Foundation.log(total)
        return row.map { $0 == -.infinity ? -.infinity : Double($0) - lse }
    }

    /// The `count` largest finite logits' ids, largest first, ties by lower id.
    private static func top(_ row: [Float], _ count: Int) -> [Int] {
        var best: [Int] = []
        for t in row.indices where row[t] != -.infinity {
            if best.count == count, let last = best.last, !(row[t] > row[last]) { continue }
            let at = best.firstIndex { row[t] > row[$0] } ?? best.count
            best.insert(t, at: at)
            if best.count > count { best.removeLast() }
        }
        return best
    }

    /// Checks `filter`'s lines against the oracle's statistics and Top-nσ kept sets of `rows`.
    private func expectFilter(_ run: CLI.Run, rows: [[Float]], n: Double = 1, _ context: String) throws {
        #expect(run.status == 0, "\(context): \(run.stderr)")
        let lines = run.lines
        #expect(lines.count == rows.count, "\(context)")
        for (r, line) in lines.enumerated() {
            let reference = try Reference.statistics(rows[r]).get()
            #expect(line["row"] as? Int == r)
            #expect(line["finite"] as? Int == reference.count, "\(context) row \(r)")
            #expect(
                Float((line["max"] as? NSNumber)?.doubleValue ?? .nan) == Float(reference.maximum),
                "\(context) row \(r)")
            let mean = (line["mean"] as? NSNumber)?.doubleValue ?? .nan,
                std = (line["std"] as? NSNumber)?.doubleValue ?? .nan
            #expect(
                Swift.abs(mean - reference.mean) <= 1e-5 * Swift.max(1, Swift.abs(reference.mean)),
                "\(context) row \(r): mean \(mean) vs \(reference.mean)")
            #expect(
                Swift.abs(std - reference.std) <= 1e-5 * reference.std,
                "\(context) row \(r): std \(std) vs \(reference.std)")
            let threshold = (line["threshold"] as? NSNumber)?.doubleValue ?? .nan
            let expected = reference.maximum - n * reference.std
            #expect(
                Swift.abs(threshold - expected) <= 1e-5 * Swift.max(1, Swift.abs(expected)),
                "\(context) row \(r): threshold \(threshold) vs \(expected)")
            #expect(line["kept"] as? [Int] == Reference.kept(rows[r], n: n), "\(context) row \(r)")
        }
    }

    // MARK: - the requests

    private static let rows = Fixture.logits.rows
    private static let vocab = Fixture.logits.vocab
    private static let words = (vocab + 31) / 32

    /// Each fixture row's 24 largest logits' ids: the tokens worth processing.
    private static let leaders: [[Int]] = (0..<rows).map { top(Fixture.row($0), 24) }

    /// A random mask per row (about half the tokens) that also drops two of the row's three
    /// leaders; row 3 allows five tokens only.
    private static let masks: [[UInt32]] = (0..<rows).map { r in
        var random = TestRandom(seed: 1000 + UInt64(r))
        var mask = (0..<words).map { _ in UInt32(truncatingIfNeeded: random.next()) }
        func set(_ t: Int, _ on: Bool) {
            if on { mask[t / 32] |= 1 << UInt32(t % 32) } else { mask[t / 32] &= ~(1 << UInt32(t % 32)) }
        }
        if r == 3 {
            mask = [UInt32](repeating: 0, count: words)
            for t in leaders[r][3..<8] { set(t, true) }
        } else {
            set(leaders[r][0], false)
            set(leaders[r][1], true)
            set(leaders[r][2], false)
        }
        return mask
    }

    private func allowedFile() throws -> String {
        try temporaryFile("allowed.bin", Self.masks.flatMap { $0 }.withUnsafeBytes { Data($0) })
    }

    /// The bias every row gets from the object form: by id, not by the row's leaders.
    private static let sharedBias: [Int: Float] = [leaders[0][0]: -100, leaders[0][5]: 3.5, leaders[1][20]: 6, 17: 2.25]

    /// Per-row biases (array form): the second leader down, the tenth up; row 4 an empty object.
    private static let rowBiases: [[Int: Float]] = (0..<rows).map { r in
        r == 4 ? [:] : [leaders[r][1]: -50, leaders[r][9]: 4.25]
    }

    private static func biasJSON(_ bias: [Int: Float]) -> String {
        "{" + bias.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
    }

    /// Per-row histories: the leaders in the prompt and (repeated) in the output; row 6 has no
    /// prompt key, row 7 neither key.
    private static let histories: [(prompt: [Int], output: [Int])] = (0..<rows).map { r in
        let l = leaders[r]
        if r == 7 { return ([], []) }
        let output = [l[1], l[1], l[2], l[6], l[6], l[6], 12345, l[0]]
        return (r == 6 ? [] : [l[0], l[3], l[4], l[5], 99, 40000], output)
    }

    private func historyFile() throws -> String {
        let entries = Self.histories.enumerated().map { r, h in
            let prompt = "\"prompt\": [\(h.prompt.map(String.init).joined(separator: ", "))]"
            let output = "\"output\": [\(h.output.map(String.init).joined(separator: ", "))]"
            return r == 7 ? "{}" : r == 6 ? "{\(output)}" : "{\(prompt), \(output)}"
        }
        return try textFile("history.json", "[" + entries.joined(separator: ",\n ") + "]")
    }

    private func processedRows(_ make: (Int) -> Processing) -> [[Float]] {
        (0..<Self.rows).map { Self.processed(Fixture.row($0), make($0)) }
    }

    // MARK: - each flag alone

    @Test("filter --allowed: statistics and kept set of the masked rows; a mask whose last word has stray bits")
    func allowedAlone() throws {
        let run = try CLI.run(["filter", "--logits", Fixture.path, "--allowed", try allowedFile()])
        try expectFilter(run, rows: processedRows { Processing(mask: Self.masks[$0]) }, "--allowed")
        #expect(run.lines[3]["finite"] as? Int == 5)

        // V = 37: two words per row; bits 37… of the second word are outside the vocabulary.
        let values: [Float] = (0..<74).map { Float(($0 * 7) % 37) / 4 }
        let masks: [UInt32] = [0xFFFF_0F0F, 0xFFFF_FFE0, 0x0000_0001, 0xFFFF_FFF0 | 0b1010]
        let logits = try temporaryFile("logits.f32", values.withUnsafeBytes { Data($0) })
        let small = try CLI.run([
            "filter", "--logits", logits, "--vocab", "37", "--allowed",
            try temporaryFile("mask.bin", masks.withUnsafeBytes { Data($0) }), "--n", "0.5"
        ])
        try expectFilter(
            small,
            rows: (0..<2).map { r in
                Self.processed(
                    Array(values[(r * 37)..<((r + 1) * 37)]), Processing(mask: Array(masks[(r * 2)..<(r * 2 + 2)])))
            }, n: 0.5, "--allowed, V = 37")
    }

    @Test("filter --logit-bias: one object for every row")
    func logitBiasShared() throws {
        let path = try textFile("bias.json", Self.biasJSON(Self.sharedBias))
        let run = try CLI.run(["filter", "--logits", Fixture.path, "--logit-bias", path])
        try expectFilter(run, rows: processedRows { _ in Processing(bias: Self.sharedBias) }, "--logit-bias object")
    }

    @Test("filter --logit-bias: an array with one object per row (an empty object changes nothing)")
    func logitBiasPerRow() throws {
        let path = try textFile("bias.json", "[" + Self.rowBiases.map(Self.biasJSON).joined(separator: ", ") + "]")
        let run = try CLI.run(["filter", "--logits", Fixture.path, "--logit-bias", path])
        try expectFilter(run, rows: processedRows { Processing(bias: Self.rowBiases[$0]) }, "--logit-bias array")
    }

    @Test(
        "filter --history with one penalty",
        arguments: [
            ("--repetition-penalty", Float(1.3)), ("--repetition-penalty", 0.6), ("--frequency-penalty", -0.4),
            ("--presence-penalty", 1.5)
        ])
    func penaltyAlone(flag: String, value: Float) throws {
        let run = try CLI.run(["filter", "--logits", Fixture.path, "--history", try historyFile(), flag, "\(value)"])
        try expectFilter(
            run,
            rows: processedRows { r in
                var p = Processing(prompt: Self.histories[r].prompt, output: Self.histories[r].output)
                switch flag {
                case "--repetition-penalty": p.repetition = value
                case "--frequency-penalty": p.frequency = value
                default: p.presence = value
                }
                return p
            }, "\(flag) \(value)")
    }

    /// Each row's DRY context: "a b" ends it and also ends at two earlier places (followed by c
    /// both times), among the row's leaders.
    private static let dryHistories: [(prompt: [Int], output: [Int])] = (0..<rows).map { r in
        let l = leaders[r]
        return ([l[0], l[1], l[2], l[3]], [l[0], l[1], l[2], l[4], 99, l[0], l[1]])
    }

    @Test("filter with DRY: the processed rows of the reference; breakers bound the repeats")
    func dry() throws {
        let entries = Self.dryHistories.map { h in
            "{\"prompt\": \(h.prompt), \"output\": \(h.output)}"
        }
        let history = try textFile("dry-history.json", "[" + entries.joined(separator: ", ") + "]")
        let breakers: [[Int32]] = [[Int32(Self.leaders[0][6])], [99, Int32(Self.leaders[0][0])]]
        for (extra, allowed, lastN, shared) in [
            ([String](), 2, -1, [[Int32]]()),
            (["--dry-allowed-length", "1", "--dry-penalty-last-n", "9", "--dry-base", "2"], 1, 9, []),
            (
                [
                    "--dry-allowed-length", "0", "--dry-sequence-breakers",
                    "[[\(breakers[0][0])], [99, \(breakers[1][1])]]"
                ], 0, -1, breakers
            )
        ] {
            let run = try CLI.run(
                ["filter", "--logits", Fixture.path, "--history", history, "--dry-multiplier", "0.8"] + extra)
            let rows = (0..<Self.rows).map { r in
                DryReference.process(
                    Fixture.row(r),
                    RequestProcessing(
                        promptTokens: Self.dryHistories[r].prompt.map(Int32.init),
                        outputTokens: Self.dryHistories[r].output.map(Int32.init), dryMultiplier: 0.8,
                        dryBase: extra.contains("--dry-base") ? 2 : 1.75, dryAllowedLength: allowed,
                        dryPenaltyLastN: lastN, drySequenceBreakers: shared))
            }
            #expect(rows.enumerated().contains { $1 != Fixture.row($0) }, "DRY changes some row: \(extra)")
            try expectFilter(run, rows: rows, "DRY \(extra)")
        }
    }

    @Test("--history alone, or penalties without --history, change nothing")
    func historyWithoutPenalty() throws {
        let plain = try CLI.run(["filter", "--logits", Fixture.path])
        #expect(plain.status == 0)
        let history = try CLI.run(["filter", "--logits", Fixture.path, "--history", try historyFile()])
        #expect(history.status == 0 && history.stdout == plain.stdout)
        let penalties = try CLI.run([
            "filter", "--logits", Fixture.path, "--repetition-penalty", "1.5", "--frequency-penalty", "1",
            "--presence-penalty", "1"
        ])
        #expect(penalties.status == 0 && penalties.stdout == plain.stdout)
    }

    // MARK: - everything together

    private static func together(_ r: Int) -> Processing {
        Processing(
            mask: masks[r], bias: rowBiases[r], prompt: histories[r].prompt, output: histories[r].output,
            repetition: 1.3, frequency: 0.7, presence: 1.5)
    }

    private func togetherArguments() throws -> [String] {
        [
            "--logits", Fixture.path, "--allowed", try allowedFile(),
            "--logit-bias",
            try textFile("bias.json", "[" + Self.rowBiases.map(Self.biasJSON).joined(separator: ", ") + "]"),
            "--history", try historyFile(), "--repetition-penalty", "1.3", "--frequency-penalty", "0.7",
            "--presence-penalty", "1.5"
        ]
    }

    @Test("filter with every processing flag")
    func filterTogether() throws {
        let run = try CLI.run(["filter"] + togetherArguments())
        try expectFilter(run, rows: processedRows(Self.together), "all flags")
    }

    @Test("sample with every processing flag and --top-logprobs 5: draws, logprobs, top logprobs, ranks")
    func sampleTogether() throws {
        let draws = 3, temperature = 0.8
        let run = try CLI.run(
            ["sample"] + togetherArguments() + [
                "--top-logprobs", "5", "--draws", "\(draws)", "--seed", "11", "--temperature", "\(temperature)"
            ])
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.lines
        #expect(lines.count == Self.rows)
        let keys = run.stdout.split(separator: "\n").first ?? ""
        #expect(
            keys.hasPrefix("{\"row\": 0, \"tokens\": [") && keys.contains("], \"kept\": ")
                && keys.contains(", \"top_logprobs\": [[") && keys.contains("]], \"sampled_logprobs\": [")
                && keys.contains("], \"ranks\": ["))
        // The CLI's wiring: the library, given the same requests, draws the same tokens (draw j: step j).
        let requests = (0..<Self.rows).map { r in
            let p = Self.together(r)
            return RequestProcessing(
                allowedTokens: p.mask, logitBias: p.bias.map { LogitBias(token: Int32($0.key), bias: $0.value) },
                promptTokens: p.prompt.map { Int32($0) }, outputTokens: p.output.map { Int32($0) },
                repetitionPenalty: p.repetition, frequencyPenalty: p.frequency, presencePenalty: p.presence)
        }
        let sampler = try BatchSampler(vocabularySize: Self.vocab, maximumBatchSize: Self.rows, threadCount: 1)
        let library = try (0..<draws).map { j in
            try sampler.sample(
                logits: Fixture.logits.values,
                parameters: [SamplingParameters](
                    repeating: SamplingParameters(temperature: Float(temperature), nSigma: 1, seed: 11),
                    count: Self.rows),
                processing: requests, steps: [UInt64](repeating: UInt64(j), count: Self.rows)
            ).results.map { try Int($0.get().token) }
        }
        for (r, line) in lines.enumerated() {
            let oracle = RowOracle(Self.processed(Fixture.row(r), Self.together(r)), temperature: temperature)
            try expectSample(line, oracle, draws: draws, topN: 5, "row \(r)")
            #expect(line["tokens"] as? [Int] == library.map { $0[r] }, "row \(r)")
        }
    }

    /// What one row's `sample` lines are checked against: the Top-nσ (n = 1) distribution at a
    /// temperature, and the float64 log_softmax at T = 1 with its top 20.
    private struct RowOracle {
        let row: [Float]
        let distribution: [Int: Double]
        let logSoftmax: [Double]
        let top: [Int]

        init(_ row: [Float], temperature: Double) {
            self.row = row
            distribution = Reference.distribution(row, n: 1, temperature: temperature)
            logSoftmax = CLIProcessingTests.logSoftmax(row)
            top = CLIProcessingTests.top(row, TopLogprobs.maximumCount)
        }

        /// How many tokens have a logit at or above `token`'s.
        func rank(_ token: Int) -> Int {
            var count = 0
            for x in row where x >= row[token] { count += 1 }
            return count
        }
    }

    /// The fixture's rows as they are, at temperature 1.5 (computed once, shared by the tests).
    private static let plainOracles = (0..<rows).map { RowOracle(Fixture.row($0), temperature: 1.5) }

    /// One `sample` line against its row's oracle: tokens in the Top-nσ (n = 1) kept set,
    /// logprobs in that distribution, and (with `topN`) the top logprobs, the sampled logprobs
    /// and the ranks in the row's log_softmax at T = 1.
    private func expectSample(
        _ line: [String: Any], _ oracle: RowOracle, draws: Int, topN: Int?, _ context: String
    ) throws {
        let tokens = try #require(line["tokens"] as? [Int], "\(context): \(line)")
        let logprobs = try #require(line["logprobs"] as? [NSNumber], "\(context)").map(\.doubleValue)
        #expect(tokens.count == draws && logprobs.count == draws, "\(context)")
        #expect(line["kept"] as? Int == oracle.distribution.count, "\(context)")
        for (token, logprob) in zip(tokens, logprobs) {
            let probability = try #require(oracle.distribution[token], "\(context): token \(token) not kept")
            #expect(Swift.abs(logprob - Foundation.log(probability)) <= 1e-6, "\(context): logprob \(logprob)")
        }
        guard let topN else {
            #expect(
                line["top_logprobs"] == nil && line["sampled_logprobs"] == nil && line["ranks"] == nil, "\(context)")
            return
        }
        let top = try #require(line["top_logprobs"] as? [[NSNumber]], "\(context)")
        #expect(top.map { $0[0].intValue } == Array(oracle.top.prefix(topN)), "\(context)")
        for entry in top {
            #expect(
                entry.count == 2 && Swift.abs(entry[1].doubleValue - oracle.logSoftmax[entry[0].intValue]) <= 2e-6,
                "\(context): \(entry)")
        }
        let sampled = try #require(line["sampled_logprobs"] as? [NSNumber], "\(context)").map(\.doubleValue)
        let ranks = try #require(line["ranks"] as? [Int], "\(context)")
        #expect(sampled.count == draws && ranks.count == draws, "\(context)")
        for (j, token) in tokens.enumerated() where j < sampled.count && j < ranks.count {
            #expect(Swift.abs(sampled[j] - oracle.logSoftmax[token]) <= 2e-6, "\(context) draw \(j)")
            #expect(ranks[j] == oracle.rank(token), "\(context) draw \(j)")
        }
    }

    @Test("sample --top-logprobs without processing: the same draws, and 0 gives ranks and sampled logprobs only")
    func topLogprobsPlain() throws {
        let base = ["sample", "--logits", Fixture.path, "--draws", "2", "--seed", "5", "--temperature", "1.5"]
        let plain = try CLI.run(base)
        #expect(plain.status == 0, "\(plain.stderr)")
        for n in [0, 20] {
            let run = try CLI.run(base + ["--top-logprobs", "\(n)"])
            #expect(run.status == 0, "\(run.stderr)")
            for (r, (line, plainLine)) in zip(run.lines, plain.lines).enumerated() {
                #expect(line["tokens"] as? [Int] == plainLine["tokens"] as? [Int])
                #expect(line["logprobs"] as? [Double] == plainLine["logprobs"] as? [Double])
                try expectSample(line, Self.plainOracles[r], draws: 2, topN: n, "--top-logprobs \(n) row \(r)")
            }
        }
    }

    @Test("sample without the new flags: the line is unchanged; processing that does nothing draws the same")
    func sampleLineUnchanged() throws {
        let base = ["sample", "--logits", Fixture.path, "--draws", "2", "--seed", "9", "--temperature", "1.5"]
        let plain = try CLI.run(base)
        #expect(plain.status == 0, "\(plain.stderr)")
        for (r, line) in plain.stdout.split(separator: "\n").enumerated() {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            #expect(Set(object.keys) == ["row", "tokens", "logprobs", "kept"], "\(line)")
            #expect(
                line.hasPrefix("{\"row\": \(r), \"tokens\": [") && line.contains("], \"logprobs\": [")
                    && line.hasSuffix("}"))
            let range = line.range(of: "], \"kept\": ")
            #expect(range != nil && Int(line[range!.upperBound...].dropLast()) != nil, "\(line)")
            try expectSample(object, Self.plainOracles[r], draws: 2, topN: nil, "row \(r)")
        }
        // Empty histories and an empty bias: the processing path, with nothing to do.
        let history = try textFile(
            "history.json",
            "[" + [String](repeating: "{\"prompt\": [], \"output\": []}", count: Self.rows).joined(separator: ", ")
                + "]")
        let neutral = try CLI.run(base + ["--history", history, "--logit-bias", try textFile("bias.json", "{}")])
        #expect(neutral.status == 0 && neutral.stdout == plain.stdout, "\(neutral.stderr)")
    }

    // MARK: - errors

    /// Each option error: exit 2, nothing on stdout, a message naming the problem on stderr.
    enum OptionError: String, CaseIterable, Sendable {
        case allowedUnreadable, allowedWrongSize, biasMalformed, biasWrongLength, biasKeyNotInteger, biasNotNumber,
            biasBoolean,
            biasNotObject, historyMalformed, historyWrongLength, historyFractionalID, historyBooleanID, historyNotArray,
            historyUnknownKey, repetitionZero, repetitionNegative, repetitionNaN, frequencyInfinite, presenceNaN,
            topLogprobsTooMany, topLogprobsNegative,
            // Issue 20: one rule per JSON input.
            biasDuplicateKey, biasDuplicateKeyInEntry, biasDuplicateEscapedKey, biasKeyPlusSign, biasKeyLeadingZero,
            biasKeyNegativeZero, biasKeySpace, biasKeyBeyond64Bits, historyDuplicateKey, historyIDBeyond64Bits,
            // DRY.
            dryMultiplierNegative, dryBaseBelowOne, dryAllowedNegative, dryLastNBelowMinusOne, dryBaseAlone,
            dryBreakersMalformed, dryBreakerEmpty, dryBreakerTooLong, dryBreakerNegative

        /// Whether the error shows only against the logits (a row count or size); every other
        /// one is reported before the logits are read.
        var needsLogits: Bool { [.allowedWrongSize, .biasWrongLength, .historyWrongLength].contains(self) }
        var sampleOnly: Bool { [.topLogprobsTooMany, .topLogprobsNegative].contains(self) }
    }

    private func arguments(_ error: OptionError) throws -> (arguments: [String], message: String) {
        let rows = 8, words = 2  // the small logits file's shape: 8 rows of 40 logits
        func json(_ text: String) throws -> String { try textFile("option.json", text) }
        switch error {
        case .allowedUnreadable: return (["--allowed", "/nonexistent/allowed.bin"], "cannot read --allowed")
        case .allowedWrongSize:
            let data = Data(count: (rows * words - 1) * 4)
            return (
                ["--allowed", try temporaryFile("allowed.bin", data)],
                "expected 8 rows × 2 words (ceil(40 / 32)) × 4 bytes"
            )
        case .biasMalformed: return (["--logit-bias", try json("{\"5\": 1,")], "--logit-bias")
        case .biasWrongLength:
            return (
                [
                    "--logit-bias",
                    try json("[" + [String](repeating: "{\"5\": 1}", count: rows - 1).joined(separator: ", ") + "]")
                ], "7 objects for 8 rows"
            )
        case .biasKeyNotInteger:
            return (["--logit-bias", try json("{\"5\": 1, \"five\": 2}")], "\"five\" is not a token id")
        case .biasNotNumber: return (["--logit-bias", try json("{\"5\": \"1.5\"}")], "not a number")
        case .biasBoolean: return (["--logit-bias", try json("{\"5\": true}")], "not a number")
        case .biasNotObject: return (["--logit-bias", try json("[[5, 1.5]]")], "not a JSON object")
        case .historyMalformed: return (["--history", try json("[{\"prompt\": [1, 2}]")], "--history")
        case .historyWrongLength:
            return (
                ["--history", try json("[" + [String](repeating: "{}", count: rows + 1).joined(separator: ", ") + "]")],
                "9 entries for 8 rows"
            )
        case .historyFractionalID: return (["--history", try json("[{\"output\": [3, 4.5]}]")], "not a token id")
        case .historyBooleanID: return (["--history", try json("[{\"prompt\": [false]}]")], "not a number")
        case .historyNotArray: return (["--history", try json("{\"prompt\": [1]}")], "expected a JSON array")
        case .historyUnknownKey: return (["--history", try json("[{\"outputs\": [1]}]")], "unknown key \"outputs\"")
        case .repetitionZero:
            return (["--repetition-penalty", "0"], "--repetition-penalty must be finite and > 0, got 0.0")
        case .repetitionNegative: return (["--repetition-penalty", "-1.5"], "--repetition-penalty")
        case .repetitionNaN: return (["--repetition-penalty", "nan"], "--repetition-penalty")
        case .frequencyInfinite: return (["--frequency-penalty", "inf"], "--frequency-penalty")
        case .presenceNaN: return (["--presence-penalty", "nan"], "--presence-penalty")
        case .topLogprobsTooMany: return (["--top-logprobs", "21"], "--top-logprobs")
        case .topLogprobsNegative: return (["--top-logprobs", "-1"], "--top-logprobs")
        case .biasDuplicateKey:
            // Not the last value, not the sum (the library adds duplicate entries): an error.
            return (["--logit-bias", try json("{\"5\": 1, \"7\": 0, \"5\": 2}")], "the object has the key \"5\" twice")
        case .biasDuplicateKeyInEntry:
            return (
                // A nested object's keys and a string with an escaped quote and a brace do not
                // confuse the scan: the duplicate is entry 1's own "5".
                [
                    "--logit-bias",
                    try json(#"[{"5": 1, "6": [{"5": "x\"}", "7": ["5"]}]}, {"5": 1, "6": {"5": 0}, "5": 2}]"#)
                ], "entry 1 has the key \"5\" twice"
            )
        case .biasDuplicateEscapedKey:
            return (["--logit-bias", try json("{\"5\": 1, \"\\u0035\": 2}")], "the object has the key \"5\" twice")
        case .biasKeyPlusSign: return (["--logit-bias", try json("{\"+5\": 1}")], "key \"+5\" is not a token id")
        case .biasKeyLeadingZero: return (["--logit-bias", try json("{\"05\": 1}")], "key \"05\" is not a token id")
        case .biasKeyNegativeZero: return (["--logit-bias", try json("{\"-0\": 1}")], "key \"-0\" is not a token id")
        case .biasKeySpace: return (["--logit-bias", try json("{\" 5\": 1}")], "key \" 5\" is not a token id")
        case .biasKeyBeyond64Bits:
            return (
                ["--logit-bias", try json("{\"9223372036854775808\": 1}")],
                "key \"9223372036854775808\" is not a token id: out of range"
            )
        case .historyDuplicateKey:
            return (
                ["--history", try json("[{\"prompt\": [1], \"output\": [2], \"prompt\": [3]}]")],
                "entry 0 has the key \"prompt\" twice"
            )
        case .historyIDBeyond64Bits:
            return (
                ["--history", try json("[{\"output\": [1e30]}]")], "element 0 (1e+30) is not a token id: out of range"
            )
        case .dryMultiplierNegative: return (["--dry-multiplier", "-0.5"], "--dry-multiplier must be finite and >= 0")
        case .dryBaseBelowOne:
            return (["--dry-multiplier", "1", "--dry-base", "0.9"], "--dry-base must be finite and >= 1, got 0.9")
        case .dryAllowedNegative:
            return (
                ["--dry-multiplier", "1", "--dry-allowed-length", "-1"],
                "--dry-allowed-length must be in 0...2147483647, got -1"
            )
        case .dryLastNBelowMinusOne:
            return (
                ["--dry-multiplier", "1", "--dry-penalty-last-n", "-2"],
                "--dry-penalty-last-n must be -1 (all) or in 0...2147483647, got -2"
            )
        case .dryBaseAlone: return (["--dry-base", "2"], "--dry-base needs --dry-multiplier")
        case .dryBreakersMalformed:
            return (
                ["--dry-multiplier", "1", "--dry-sequence-breakers", "[[1,"],
                "--dry-sequence-breakers is not valid JSON"
            )
        case .dryBreakerEmpty:
            return (["--dry-multiplier", "1", "--dry-sequence-breakers", "[[5], []]"], "breaker 1 holds 0 ids")
        case .dryBreakerTooLong:
            return (
                [
                    "--dry-multiplier", "1", "--dry-sequence-breakers",
                    "[[" + (0..<22).map(String.init).joined(separator: ",") + "]]"
                ],
                "breaker 0 holds 22 ids"
            )
        case .dryBreakerNegative:
            return (["--dry-multiplier", "1", "--dry-sequence-breakers", "[7, [1, -3]]"], "breaker 1 holds -3")
        }
    }

    @Test(
        "option errors: exit 2, message on stderr, nothing on stdout; checked before the logits are read when they can be",
        arguments: OptionError.allCases)
    func optionErrors(error: OptionError) throws {
        let (extra, message) = try arguments(error)
        // Errors that need the logits are checked against a small file of 8 rows; every other
        // one against a missing file: the option is reported, not the file, so it was checked first.
        let logits =
            error.needsLogits
            ? [
                "--logits",
                try temporaryFile("logits.f32", [Float](repeating: 1, count: 8 * 40).withUnsafeBytes { Data($0) }),
                "--vocab", "40"
            ]
            : ["--logits", "/nonexistent/logits.npy"]
        for command in error.sampleOnly ? ["sample"] : ["filter", "sample"] {
            let result = try CLI.run([command] + logits + extra)
            #expect(result.status == 2, "\(command) \(error): \(result.stderr)")
            #expect(result.stdout.isEmpty, "\(command) \(error)")
            #expect(
                result.stderr.contains(message) && !result.stderr.contains("no such file"),
                "\(command) \(error): \(result.stderr)")
        }
    }

    @Test("token ids out of range are row errors: the row prints its error, the others print, exit 3")
    func rowErrors() throws {
        var biases = Self.rowBiases.map(Self.biasJSON)
        biases[2] = "{\"5\": 1, \"49152\": 2}"
        biases[5] = "{\"-1\": 0.5}"
        let entries = (0..<Self.rows).map { r in
            r == 6 ? "{\"output\": [3, 4294967296]}" : r == 1 ? "{\"prompt\": [7, 60000]}" : "{}"
        }
        let extra = [
            "--logit-bias", try textFile("bias.json", "[" + biases.joined(separator: ", ") + "]"),
            "--history", try textFile("history.json", "[" + entries.joined(separator: ", ") + "]"),
            "--frequency-penalty", "0.5"
        ]
        let expected = [
            1: "row 1: token id 60000 is out of range for the vocabulary",
            2: "row 2: token id 49152 is out of range for the vocabulary",
            5: "row 5: token id -1 is out of range for the vocabulary",
            6: "row 6: token id 4294967296 is out of range for the vocabulary"
        ]
        for command in ["filter", "sample"] {
            let run = try CLI.run(
                [command, "--logits", Fixture.path] + extra + (command == "sample" ? ["--top-logprobs", "2"] : []))
            #expect(run.status == 3, "\(command): \(run.stderr)")
            let lines = run.lines
            #expect(lines.count == Self.rows)
            for (r, line) in lines.enumerated() {
                #expect(line["row"] as? Int == r)
                if let message = expected[r] {
                    #expect(line["error"] as? String == message, "\(command) row \(r)")
                    #expect(line.count == 2)
                } else {
                    #expect(line["error"] == nil && line["kept"] != nil, "\(command) row \(r): \(line)")
                }
            }
        }
    }
}
