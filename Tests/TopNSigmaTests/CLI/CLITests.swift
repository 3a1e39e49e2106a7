import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import TopNSigma
import TopNSigmaIO

/// The `nsigma` contracts: output lines, error rows, exit codes.
@Suite struct CLITests {
    @Test("the binary is built beside the tests")
    func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: CLI.executable.path), "\(CLI.executable.path)")
    }

    @Test("filter: one JSON line per row, fields in contract order, kept sets equal the oracle's")
    func filterFixture() throws {
        let run = try CLI.run(["filter", "--logits", Fixture.path, "--n", "1.0"])
        #expect(run.status == 0)
        #expect(run.stderr.isEmpty)
        let lines = run.stdout.split(separator: "\n")
        #expect(lines.count == Fixture.logits.rows)
        for (r, line) in lines.enumerated() {
            let keys = ["\"row\"", "\"max\"", "\"mean\"", "\"std\"", "\"threshold\"", "\"finite\"", "\"kept\""]
            let positions = keys.map { line.range(of: $0)?.lowerBound }
            #expect(
                positions.allSatisfy { $0 != nil } && positions.map { $0! } == positions.map { $0! }.sorted(),
                "\(line.prefix(120))")
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            #expect(object["row"] as? Int == r)
            #expect((object["kept"] as? [Int]) == Reference.kept(Fixture.row(r), n: 1))
            #expect(object["finite"] as? Int == Fixture.logits.vocab)
            let reference = try Reference.statistics(Fixture.row(r)).get()
            #expect(Swift.abs((object["std"] as! Double) - reference.std) < 1e-5 * reference.std)
            #expect(Float(object["max"] as! Double) == Float(reference.maximum))
        }
    }

    @Test("filter: raw file with --vocab; a bad row prints its error, the others print, exit 3")
    func filterErrorRows() throws {
        var values: [Float] = (0..<40).map { Float($0 % 10) }
        values[10 + 5] = .nan
        values[30...39] = ArraySlice(repeating: -.infinity, count: 10)
        let path = try rawFile(values)
        let run = try CLI.run(["filter", "--logits", path, "--vocab", "10", "--n", "0.5"])
        #expect(run.status == 3)
        let lines = run.lines
        #expect(lines.count == 4)
        #expect(lines[1]["error"] as? String == "row 1: logit at index 5 is NaN")
        #expect(lines[1]["row"] as? Int == 1)
        #expect((lines[3]["error"] as? String)?.hasPrefix("row 3: no finite logit") == true)
        #expect(lines[0]["kept"] as? [Int] == Reference.kept(Array(values[0..<10]), n: 0.5))
        #expect(lines[2]["kept"] as? [Int] == [8, 9])  // 0…9: mean 4.5, std 3.03, threshold 7.49
    }

    @Test(
        "input and option errors: message on stderr, nothing on stdout, exit 2",
        arguments: [
            ["--vocab", "7"], [], ["--n", "-1", "--vocab", "10"], ["--vocab", "10", "--bogus"], ["--vocab", "0"],
            ["--vocab", "10", "--dtype", "f64"]
        ])
    func inputErrors(extra: [String]) throws {
        let path = try rawFile([Float](repeating: 1, count: 40))  // 160 bytes: not a multiple of 28
        for command in ["filter", "sample"] {
            let run = try CLI.run([command, "--logits", path] + extra)
            #expect(run.status == 2, "\(command) \(extra): \(run.stderr)")
            #expect(run.stdout.isEmpty, "\(command) \(extra)")
            #expect(!run.stderr.isEmpty, "\(command) \(extra)")
        }
        let missing = try CLI.run(["filter", "--logits", "/nonexistent/logits.npy"])
        #expect(missing.status == 2 && missing.stdout.isEmpty && missing.stderr.contains("no such file"))
        let badNpy = try CLI.run(["filter", "--logits", try temporaryFile("bad.npy", Data("not numpy".utf8))])
        #expect(badNpy.status == 2 && badNpy.stdout.isEmpty)
    }

    @Test("float16 .npy input is read from its shape")
    func float16NumPy() throws {
        // Halves of small integers: bits built by hand (exponent 15 + e, mantissa from the value).
        func halfBits(_ v: Int) -> UInt16 {
            if v == 0 { return 0 }
            let e = Int(log2(Double(v)))
            let mantissa = UInt16((Double(v) / Double(1 << e) - 1) * 1024)
            return UInt16(15 + e) << 10 | mantissa
        }
        let values = [3, 1, 4, 1, 5, 9, 2, 6]
        let data = numPy(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 4), }",
            data: values.flatMap { v in
                let b = halfBits(v)
                return [UInt8(b & 0xFF), UInt8(b >> 8)]
            })
        let run = try CLI.run(["filter", "--logits", try temporaryFile("half.npy", data), "--n", "0"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.lines.map { $0["kept"] as? [Int] } == [[2], [1]])
        #expect(run.lines.map { $0["max"] as? Double } == [4, 9])
    }

    @Test("sample: D tokens and logprobs per row; draw j uses step j; every row uses the seed")
    func sampleContract() throws {
        let run = try CLI.run([
            "sample", "--logits", Fixture.path, "--n", "1.0", "--temperature", "1.0", "--seed", "42", "--draws", "5",
            "--threads", "2"
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.lines
        #expect(lines.count == Fixture.logits.rows)
        let sampler = try BatchSampler(vocabularySize: Fixture.logits.vocab, maximumBatchSize: 1, threadCount: 1)
        for (r, line) in lines.enumerated() {
            let tokens = line["tokens"] as! [Int], logprobs = line["logprobs"] as! [Double]
            #expect(tokens.count == 5 && logprobs.count == 5)
            for j in 0..<5 {
                let expected = try sampler.sample(
                    logits: Fixture.row(r), parameters: [SamplingParameters(temperature: 1, nSigma: 1, seed: 42)],
                    steps: [UInt64(j)])[0].get()
                #expect(tokens[j] == expected.token && Swift.abs(logprobs[j] - expected.logProbability) < 1e-12)
                #expect(line["kept"] as? Int == expected.candidateCount)
            }
            #expect(Set(tokens).isSubset(of: Set(Reference.kept(Fixture.row(r), n: 1))))
        }
        let keys = run.stdout.split(separator: "\n")[0]
        #expect(
            keys.hasPrefix("{\"row\": 0, \"tokens\": [") && keys.contains("], \"logprobs\": [")
                && keys.contains("], \"kept\": "))
    }

    @Test(
        "sample: a bf16 or f16 raw file draws what the library draws from its Float values, split rows included",
        arguments: [LogitFormat.bfloat16, .float16])
    func sampleHalfPrecisionFile(format: LogitFormat) throws {
        // Two fixture rows rounded to the format, written as raw bits; the library samples their
        // exact Float values.
        let floats = (Fixture.row(2) + Fixture.row(5)).map {
            format == .bfloat16 ? Float(bitPattern: $0.bitPattern & 0xFFFF_0000) : Float(Float16($0))
        }
        let bits = floats.map { format == .bfloat16 ? UInt16($0.bitPattern >> 16) : Float16($0).bitPattern }
        let path = try temporaryFile("logits.\(format.fileSpelling)", bits.withUnsafeBytes { Data($0) })
        let vocab = Fixture.logits.vocab
        let parameters = [SamplingParameters](
            repeating: SamplingParameters(temperature: 0.9, nSigma: 1.5, seed: 77), count: 2)
        // One thread samples whole rows; four split each row into chunk ranges.
        for threads in [1, 4] {
            let run = try CLI.run([
                "sample", "--logits", path, "--vocab", "\(vocab)", "--dtype", format.fileSpelling, "--n", "1.5",
                "--temperature", "0.9", "--seed", "77", "--draws", "4", "--threads", "\(threads)"
            ])
            #expect(run.status == 0, "\(run.stderr)")
            let lines = run.lines, logprobs = run.exactNumbers("logprobs")
            #expect(lines.count == 2)
            let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: 2, threadCount: 1)
            for draw in 0..<4 {
                let expected = try sampler.sample(
                    logits: floats, parameters: parameters, steps: [UInt64(draw), UInt64(draw)]
                ).map { try $0.get() }
                for r in 0..<2 {
                    #expect(
                        (lines[r]["tokens"] as? [Int])?[draw] == Int(expected[r].token),
                        "\(format) threads \(threads) row \(r) draw \(draw)")
                    #expect(
                        logprobs[r]?[draw] == expected[r].logProbability,
                        "\(format) threads \(threads) row \(r) draw \(draw)")
                    #expect(lines[r]["kept"] as? Int == expected[r].candidateCount)
                }
            }
        }
    }

    @Test("info --json: CPUs, NUMA nodes and threads as the library sees them")
    func infoJSON() throws {
        let result = try CLI.run(["info", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let topology = NUMATopology.current
        #expect(object["cpus"] as? Int == ProcessInfo.processInfo.activeProcessorCount)
        #expect(object["threads"] as? Int == BatchSampler.defaultThreadCount)
        let numa = object["numa"] as! [String: Any]
        #expect(numa["available"] as? Bool == topology.available)
        let nodes = numa["nodes"] as! [[String: Any]]
        #expect(nodes.map { $0["id"] as? Int } == topology.nodes.map(\.id))
        #expect(nodes.map { $0["cpus"] as? [Int] } == topology.nodes.map(\.cpus))
        #expect(nodes.allSatisfy { ($0["memoryBytes"] as? Int64 ?? -1) >= 0 })
        let text = try CLI.run(["info"])
        #expect(text.status == 0 && text.stdout.contains("NUMA:") && text.stdout.contains("node 0"))
    }

    @Test("filter and sample accept --top-k, --top-p, --min-p (combinable) and --n off")
    func truncationFlags() throws {
        let filter = try CLI.run([
            "filter", "--logits", Fixture.path, "--n", "off", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.01",
            "--temperature", "1.2"
        ])
        #expect(filter.status == 0, "\(filter.stderr)")
        let parameters = SamplingParameters(temperature: 1.2, nSigma: nil, topK: 40, topP: 0.9, minP: 0.01)
        for (r, line) in filter.lines.enumerated() {
            #expect(
                line["kept"] as? [Int] == Reference.truncated(Fixture.row(r), parameters).map { Int($0.token) }.sorted()
            )
            #expect(line["std"] != nil && line["finite"] as? Int == Fixture.logits.vocab)
        }
        let sample = try CLI.run(["sample", "--logits", Fixture.path, "--top-k", "3", "--draws", "3", "--seed", "5"])
        #expect(sample.status == 0, "\(sample.stderr)")
        for line in sample.lines { #expect((line["kept"] as? Int ?? 99) <= 3) }
        for bad in [["--top-k", "0"], ["--top-p", "1.5"], ["--min-p", "-1"]] {
            for command in ["filter", "sample"] {
                let result = try CLI.run([command, "--logits", Fixture.path] + bad)
                #expect(result.status == 2 && result.stdout.isEmpty && !result.stderr.isEmpty, "\(command) \(bad)")
            }
        }
    }

    @Test("sample: failing rows print their error after the others, exit 3")
    func sampleErrors() throws {
        var values: [Float] = (0..<30).map { Float($0 % 10) }
        values[10 + 2] = .infinity
        let run = try CLI.run(["sample", "--logits", try rawFile(values), "--vocab", "10", "--temperature", "0"])
        #expect(run.status == 3)
        let lines = run.lines
        #expect(lines.count == 3)
        #expect(lines[1]["error"] as? String == "row 1: logit at index 2 is +inf")
        #expect(lines[0]["tokens"] as? [Int] == [9] && lines[2]["tokens"] as? [Int] == [9])
        #expect(lines[0]["logprobs"] as? [Double] == [0])
    }
}

/// `nsigma bench` on a tiny workload: the JSON contract, the SVG, and the regression check.
@Suite struct BenchCLITests {
    func tiny(_ extra: [String]) throws -> CLI.Run {
        try CLI.run(
            ["bench", "--vocab", "2000,5000", "--batch", "1,3", "--threads", "1,2", "--seconds", "0.002"] + extra)
    }

    @Test("--json writes every measurement with the contract fields; --svg draws a chart")
    func jsonAndSVG() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "nsigma-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let json = directory.appendingPathComponent("bench.json").path,
            svg = directory.appendingPathComponent("bench.svg").path
        let run = try tiny(["--json", json, "--svg", svg])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("fused-topnsigma") && run.stdout.contains("× floor"))
        let object =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as! [String: Any]
        #expect(object["machine"] as? [String: Any] != nil)
        let results = object["results"] as! [[String: Any]]
        let methods = Set(results.compactMap { $0["method"] as? String })
        #expect(
            methods.isSuperset(of: [
                "fused-topnsigma", "naive-topnsigma", "sort-topp", "floor-read", "floor-sasum", "fused-topnsigma-f16",
                "fused-topnsigma-bf16", "fused-topp", "fused-greedy", "fused-plain", "fused-topk", "fused-chain",
                "floor-read-16"
            ]))
        // One entry per (method, batch, vocab, threads): four floors (f32 read, sasum, 16-bit read and
        // the busy-core one) and eleven methods.
        #expect(results.count == 2 * 2 * 2 * 15)
        // Each ratio is against the faster of the two floors timed with it, and says which.
        for entry in results where !(entry["method"] as! String).hasPrefix("floor") {
            #expect(
                ["floor-read", "floor-sasum", "floor-read-16"].contains(entry["floor"] as? String ?? ""), "\(entry)")
        }
        for entry in results {
            for key in ["method", "batch", "vocab", "threads", "usPerRow", "gbPerSecond", "ratioToFloor"] {
                #expect(entry[key] != nil, "missing \(key) in \(entry)")
            }
            let gb = entry["gbPerSecond"] as! Double, us = entry["usPerRow"] as! Double
            let vocab = entry["vocab"] as! Int
            // GB/s is the logits consumed: vocab × (2 or 4) bytes per row in usPerRow.
            let method = entry["method"] as! String
            let bytes = method.hasSuffix("f16") || method == "floor-read-16" ? 2 : 4
            #expect(Swift.abs(gb - Double(vocab * bytes) / (us * 1e-6) * 1e-9) <= 1e-6 * gb)
        }
        // The JSON agrees with itself and with the options (no timing is judged): every
        // (batch, vocab, threads) of the options has each method once; a fused method's ratio is
        // its median over the median of the floor it names, which has ratio exactly 1. The
        // speedups are ratios of timings, opponent over method, so within a configuration each
        // opponent's speedup over itself is 1, the two speedups of every method are in the same
        // proportion, and speedup × median is the same for every fused method (all timed in one
        // group of rounds, against the same floors).
        func close(_ a: Double?, _ b: Double?) -> Bool {
            guard let a, let b else { return false }
            return Swift.abs(a - b) <= 1e-12 * Swift.abs(b)
        }
        func configuration(_ entry: [String: Any]) -> [Int] {
            ["batch", "vocab", "threads"].map { (key: String) -> Int in entry[key] as! Int }
        }
        let configurations = Set(results.map(configuration))
        let expected: Set<[Int]> = [
            [1, 2000, 1], [1, 2000, 2], [1, 5000, 1], [1, 5000, 2],
            [3, 2000, 1], [3, 2000, 2], [3, 5000, 1], [3, 5000, 2]
        ]
        #expect(configurations == expected)
        for setting in configurations {
            let group = results.filter { configuration($0) == setting }
            let names = group.map { $0["method"] as! String }
            #expect(names.count == methods.count && Set(names) == methods, "\(setting): \(names)")
            func entry(_ method: String?) -> [String: Any]? { group.first { ($0["method"] as? String) == method } }
            let naive = try #require(entry("naive-topnsigma")), sort = try #require(entry("sort-topp"))
            #expect(close(naive["speedupOverNaive"] as? Double, 1), "\(naive)")
            #expect(close(sort["speedupOverSortTopP"] as? Double, 1), "\(sort)")
            // speedupOverNaive / speedupOverSortTopP = (naive / m) / (sort / m) = naive / sort.
            let proportion = sort["speedupOverNaive"] as? Double
            #expect(close(1 / (naive["speedupOverSortTopP"] as? Double ?? .nan), proportion), "\(setting)")
            let fusedSpeedup = (entry("fused-topnsigma")?["speedupOverNaive"] as? Double ?? .nan)
            let fusedSeconds = (entry("fused-topnsigma")?["medianSeconds"] as? Double ?? .nan)
            for row in group {
                let method = row["method"] as! String, seconds = row["medianSeconds"] as! Double
                #expect(seconds > 0 && (row["repeats"] as? Int ?? 0) >= 1, "\(row)")
                #expect(close(row["usPerRow"] as? Double, seconds * 1e6 / Double(setting[0])), "\(row)")
                let overNaive = row["speedupOverNaive"] as? Double, overSort = row["speedupOverSortTopP"] as? Double
                if method.hasPrefix("floor") {
                    #expect(overNaive == nil && overSort == nil, "\(row)")
                    continue
                }
                #expect(close((overNaive ?? .nan) / (overSort ?? .nan), proportion), "\(row)")
                if method.hasPrefix("fused") {
                    #expect(close((overNaive ?? .nan) * seconds, fusedSpeedup * fusedSeconds), "\(row)")
                    let floorSeconds = entry(row["floor"] as? String)?["medianSeconds"] as? Double
                    #expect(close(row["ratioToFloor"] as? Double, seconds / (floorSeconds ?? .nan)), "\(row)")
                }
            }
            // The floor the fused method divides by is the faster one: its own ratio is exactly 1.
            let floorName = entry("fused-topnsigma")?["floor"] as? String
            #expect(entry(floorName)?["ratioToFloor"] as? Double == 1, "\(setting): floor \(floorName ?? "none")")
        }
        let chart = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(chart.hasPrefix("<svg") && chart.contains("polyline") && chart.contains("floor (fastest read"))
        #expect(try XMLDocument(xmlString: chart).rootElement()?.name == "svg")

        // The regression check, against baselines doctored to be far worse (nothing regressed:
        // exit 0) and far better (everything regressed: exit 1, each result named). Factors of
        // 1000 keep the outcome independent of this machine's noise.
        func doctored(_ factor: Double, _ name: String) throws -> String {
            var object = object
            object["results"] = results.map { entry -> [String: Any] in
                var entry = entry
                entry["ratioToFloor"] = (entry["ratioToFloor"] as! Double) * factor
                return entry
            }
            let path = directory.appendingPathComponent(name).path
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
            return path
        }
        let worse = try tiny(["--baseline", try doctored(1000, "worse.json"), "--max-regression", "10"])
        #expect(worse.status == 0, "\(worse.stdout) \(worse.stderr)")
        #expect(worse.stdout.contains("no result regressed"))
        let regressed = try tiny(["--baseline", try doctored(0.001, "better.json"), "--max-regression", "50"])
        #expect(regressed.status == 1)
        #expect(regressed.stdout.contains("REGRESSION fused-topnsigma batch 1 vocab 2000 threads 1"))
        #expect(regressed.stdout.contains("REGRESSION sort-topp batch 3 vocab 5000 threads 2"))
        #expect(!regressed.stdout.contains("REGRESSION floor-sasum "))
    }

    @Test("--lm-head adds the decode step: an sgemm entry and each method's share of the step")
    func lmHead() throws {
        let json = FileManager.default.temporaryDirectory.appendingPathComponent(
            "nsigma-lmhead-\(UUID().uuidString).json"
        ).path
        let run = try CLI.run([
            "bench", "--vocab", "3000", "--batch", "2", "--threads", "1", "--seconds", "0.002", "--lm-head", "32",
            "--methods", "fused-topnsigma,naive-topnsigma", "--json", json
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("decode step: lm-head sgemm"))
        let object =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as! [String: Any]
        let results = object["results"] as! [[String: Any]]
        let gemm = try #require(results.first { $0["method"] as? String == "lm-head-sgemm" })
        #expect(gemm["hidden"] as? Int == 32)
        let gemmSeconds = try #require(gemm["medianSeconds"] as? Double)
        for method in ["fused-topnsigma+lm-head", "naive-topnsigma+lm-head"] {
            let entry = try #require(results.first { $0["method"] as? String == method })
            let share = try #require(entry["shareOfDecodeStep"] as? Double)
            #expect(share > 0 && share < 1)
            // The share is the method's time over the step's (its time plus the sgemm's): no
            // timing comparison between methods here (a debug build on a shared machine decides
            // nothing about speed; the bench does).
            let seconds = try #require(entry["medianSeconds"] as? Double)
            #expect(Swift.abs(share - seconds / (seconds + gemmSeconds)) <= 1e-9)
        }
    }

    @Test(
        "bad bench options exit 2 with a message",
        arguments: [["--vocab", "0"], ["--threads", "x"], ["--methods", "magic"], ["--baseline", "/nonexistent.json"]])
    func badOptions(options: [String]) throws {
        let run = try CLI.run(["bench", "--seconds", "0.001"] + options)
        #expect(run.status == 2)
        #expect(run.stdout.isEmpty)
        #expect(!run.stderr.isEmpty)
    }
}
