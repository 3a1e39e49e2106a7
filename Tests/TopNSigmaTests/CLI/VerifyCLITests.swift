import Foundation
import Testing
import TopNSigma
import TopNSigmaBaselines

/// `nsigma verify`.
@Suite struct VerifyCLITests {
    @Test("verify: one line per request and trial with accepted, tokens, logprobs; trial j uses step j")
    func lines() throws {
        let rows = SpeculativeTests.rows
        let logits = try rawFile(Array(rows.joined()) + Array(rows.joined()))
        let drafts = try textFile(
            "drafts.json", #"[{"tokens": [6, 4], "q": [0.5, 0.5]}, {"tokens": [0, 1], "q": [1, 1]}]"#)
        let run = try CLI.run([
            "verify", "--logits", logits, "--vocab", "12", "--k", "2", "--drafts", drafts,
            "--n", "1.0", "--temperature", "0.8", "--seed", "9", "--trials", "3"
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.lines
        #expect(lines.count == 6)
        let sampler = try BatchSampler(vocabularySize: 12, maximumBatchSize: 2, threadCount: 1)
        let parameters = SamplingParameters(temperature: 0.8, nSigma: 1, seed: 9)
        for (index, line) in lines.enumerated() {
            let request = line["request"] as! Int, trial = line["trial"] as! Int
            #expect(Array(line.keys).count == 5)
            let proposal =
                request == 0
                ? DraftProposal(tokens: [6, 4], probabilities: [0.5, 0.5])
                : DraftProposal(tokens: [0, 1], probabilities: [1, 1])
            let expected = try sampler.verify(
                logits: Array(rows.joined()), k: 2, proposals: [proposal],
                parameters: [parameters], steps: [UInt64(trial)])[0].get()
            #expect(line["accepted"] as? Int == expected.accepted, "line \(index)")
            #expect(line["tokens"] as? [Int] == expected.tokens.map(Int.init))
            let logprobs = (line["logprobs"] as! [NSNumber]).map(\.doubleValue)
            #expect(zip(logprobs, expected.logProbabilities).allSatisfy { abs($0 - $1) < 1e-9 })
        }
        // Dense draft rows from --draft-probs: the same result as the library with .dense.
        let q = [Float](repeating: 1 / 12, count: 2 * 2 * 12)
        let probs = try temporaryFile("q.f32", q.withUnsafeBytes { Data($0) })
        let dense = try CLI.run([
            "verify", "--logits", logits, "--vocab", "12", "--k", "2", "--drafts", drafts,
            "--draft-probs", probs, "--seed", "9"
        ])
        #expect(dense.status == 0, "\(dense.stderr)")
        #expect(dense.lines.count == 2)
    }

    @Test("verify: a failing request prints its error line, exit 3; bad input exits 2 with nothing on stdout")
    func errors() throws {
        let good: [Float] = [0, 1, 2, 3]
        let logits = try rawFile(good + good + good + [0, .nan, 0, 0])
        let drafts = try textFile("drafts.json", #"[{"tokens": [3], "q": [0.5]}, {"tokens": [3], "q": [0.5]}]"#)
        let run = try CLI.run(["verify", "--logits", logits, "--vocab", "4", "--k", "1", "--drafts", drafts])
        #expect(run.status == 3)
        let lines = run.lines
        #expect(lines.count == 2)
        #expect(lines[1]["request"] as? Int == 1 && (lines[1]["error"] as? String)?.contains("NaN") == true)
        for arguments in [
            ["--k", "3", "--drafts", drafts],  // rows not a multiple of k + 1
            ["--k", "1", "--drafts", try textFile("drafts.json", "[{]")],  // bad JSON
            ["--k", "1", "--drafts", try textFile("drafts.json", #"[{"tokens": [3], "q": [0.5]}]"#)],  // one draft for two requests
            ["--k", "1", "--drafts", drafts, "--draft-probs", try rawFile([0.5])],  // wrong size
            ["--k", "-1", "--drafts", drafts],
            ["--k", "1", "--drafts", drafts, "--trials", "0"]
        ] {
            let bad = try CLI.run(["verify", "--logits", logits, "--vocab", "4"] + arguments)
            #expect(bad.status == 2, "\(arguments)")
            #expect(bad.stdout.isEmpty && !bad.stderr.isEmpty, "\(arguments)")
        }
    }

    /// Runs `verify` and expects exit 2, nothing on stdout and `message` on stderr.
    private func expectUsageError(_ arguments: [String], mentioning message: String) throws {
        let run = try CLI.run(["verify"] + arguments)
        #expect(run.status == 2, "\(arguments): status \(run.status), \(run.stderr.prefix(300))")
        #expect(run.stdout.isEmpty, "\(arguments)")
        #expect(run.stderr.hasPrefix("nsigma: ") && run.stderr.contains(message), "\(arguments): \(run.stderr)")
    }

    @Test("verify: a draft id beyond 32 bits fails its own request, at its position, named as given")
    func wideDraftIDs() throws {
        // Three requests of k = 2 (3 rows each) over V = 4; the first id of request 1 is in range.
        let row: [Float] = [0, 1, 2, 3]
        let logits = try rawFile([Float]((0..<9).flatMap { _ in row }))
        let drafts = try textFile(
            "drafts.json",
            #"[{"tokens": [1099511627776, 2], "q": [0.5, 0.5]}, {"tokens": [3, -4294967297], "q": [0.5, 0.5]}, "#
                + #"{"tokens": [3, 2], "q": [0.5, 0.5]}]"#)
        let run = try CLI.run(["verify", "--logits", logits, "--vocab", "4", "--k", "2", "--drafts", drafts])
        #expect(run.status == 3, "\(run.stderr)")
        let lines = run.lines
        #expect(lines.count == 3)
        #expect(
            (lines[0]["error"] as? String)
                == "request 0: draft token 1099511627776 at position 0 is outside the vocabulary")
        #expect(
            (lines[1]["error"] as? String)
                == "request 1: draft token -4294967297 at position 1 is outside the vocabulary")
        #expect(lines[2]["error"] == nil && lines[2]["accepted"] != nil)
    }

    @Test("verify: a --k whose k + 1 or k × V would overflow exits 2 before any size arithmetic (issue 20)")
    func hugeK() throws {
        let logits = try rawFile([0, 1, 2, 3, 3, 2, 1, 0])
        let drafts = try textFile("drafts.json", #"[{"tokens": [3], "q": [0.5]}]"#)
        let empty = try temporaryFile(
            "empty.npy", numPy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }"))
        let none = try textFile("drafts.json", "[]")
        for k in ["9223372036854775807", "4611686018427387904", "2147483648"] {
            try expectUsageError(
                ["--logits", logits, "--vocab", "4", "--k", k, "--drafts", drafts],
                mentioning: "--k must be in 0...2147483647, got \(k)")
            // No rows: rows % (k + 1) is 0 and nothing is verified, but k × V still overflowed.
            try expectUsageError(
                ["--logits", empty, "--k", k, "--drafts", none], mentioning: "--k must be in 0...2147483647")
        }
        let largest = try CLI.run(["verify", "--logits", empty, "--k", "2147483647", "--drafts", none])
        #expect(largest.status == 0 && largest.stdout.isEmpty && largest.stderr.isEmpty, "\(largest.stderr)")
    }

    @Test(
        "verify --drafts: the JSON rules of every input, checked before the logits are read (issue 20)",
        arguments: [
            // A token id that is valid JSON but no 64-bit integer: out of range, not "not valid JSON".
            (
                #"[{"tokens": [1e30], "q": [0.5]}]"#,
                #"entry 0 "tokens": element 0 (1e+30) is not a token id: out of range"#
            ),
            (#"[{"tokens": [2.5], "q": [0.5]}]"#, #"element 0 (2.5) is not a token id: not an integer"#),
            (#"[{"tokens": [true], "q": [0.5]}]"#, #"element 0 is not a number"#),
            // Unknown keys are refused, as in --history.
            (#"[{"tokens": [3], "q": [0.5], "p": [1]}]"#, #"entry 0 has the unknown key "p" (only "tokens" and "q")"#),
            (#"[{"tokens": [3], "q": [0.5], "q": [0.6]}]"#, #"entry 0 has the key "q" twice"#),
            (#"[{"tokens": [3]}]"#, #"entry 0 has no "q""#),
            (#"[{"tokens": [3], "q": ["0.5"]}]"#, #"entry 0 "q": element 0 is not a number"#),
            (#"{"tokens": [3], "q": [0.5]}"#, "expected a JSON array"),
            ("[{]", "is not valid JSON")
        ])
    func draftsJSON(json: String, message: String) throws {
        let drafts = try textFile("drafts.json", json)
        // A missing logits file: the drafts' error is reported, so they were checked first.
        let run = try CLI.run([
            "verify", "--logits", "/nonexistent/logits.f32", "--vocab", "4", "--k", "1", "--drafts", drafts
        ])
        #expect(run.status == 2 && run.stdout.isEmpty, "\(json): status \(run.status), \(run.stderr)")
        #expect(
            run.stderr.hasPrefix("nsigma: ") && run.stderr.contains("--drafts \(drafts)")
                && run.stderr.contains(message) && !run.stderr.contains("no such file"), "\(json): \(run.stderr)")
    }
}
