import Benchmark
import TopNSigma
import TopNSigmaBaselines

/// top-k and top-p on the rows that made the former median-of-three quickselect quadratic
/// (organ pipe: 1.8–4.2 s per call at vocab 128256) and on McIlroy's adversary against the
/// current pivot rule (which forces the heapsort fallback: the selection's true worst case),
/// next to a shuffled control; Top-nσ off so every logit reaches the selection. The sampler
/// path must still allocate nothing. Parameters are in the names: row, truncation.
func worstCaseTruncationBenchmarks() {
    let vocab = 128_256
    // The control: the organ pipe's values in a fixed pseudo-random order (Fisher–Yates, SplitMix64).
    var shuffled = AdversarialLogits.organPipe(vocab: vocab)
    var state: UInt64 = 42
    for i in stride(from: vocab - 1, to: 0, by: -1) {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        shuffled.swapAt(i, Int((z ^ (z >> 31)) % UInt64(i + 1)))
    }
    let rows: [(String, [Float])] = [
        ("shuffled", shuffled),
        ("organ-pipe", AdversarialLogits.organPipe(vocab: vocab)),
        ("sorted", AdversarialLogits.sorted(vocab: vocab, ascending: true)),
        ("mcilroy-current-pivot", AdversarialLogits.mcIlroy(vocab: vocab, k: vocab / 2, pivot: .sampled).row)
    ]
    let cases: [(String, SamplingParameters)] = [
        ("top-p 0.9", SamplingParameters(temperature: 1, nSigma: nil, seed: 3, topP: 0.9)),
        ("top-p 0.9 T 5", SamplingParameters(temperature: 5, nSigma: nil, seed: 3, topP: 0.9)),
        ("top-k \(vocab / 2)", SamplingParameters(temperature: 1, nSigma: nil, seed: 3, topK: vocab / 2))
    ]
    for (rowName, row) in rows {
        for (caseName, parameters) in cases {
            Benchmark(
                "worst-case \(rowName) \(caseName) vocab \(vocab) batch 1 threads 1",
                configuration: .init(
                    metrics: [.wallClock, .mallocCountTotal], warmupIterations: 2, maxDuration: .seconds(2),
                    maxIterations: 200,
                    thresholds: [
                        .mallocCountTotal: .init(absolute: [.p0: 0, .p50: 0, .p100: 0]),
                        .wallClock: .init(relative: [.p50: 15, .p75: 20])
                    ])
            ) { benchmark in
                let sampler = try! BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
                var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: 1)
                var steps: [UInt64] = [0]
                let parameterList = [parameters]
                row.withUnsafeBufferPointer { l in
                    parameterList.withUnsafeBufferPointer { p in
                        results.withUnsafeMutableBufferPointer { out in
                            steps.withUnsafeMutableBufferPointer { s in
                                sampler.sample(
                                    logits: l.baseAddress!, rows: 1, parameters: p, steps: UnsafeBufferPointer(s),
                                    into: out)
                                benchmark.startMeasurement()
                                for iteration in benchmark.scaledIterations {
                                    s[0] = UInt64(iteration)
                                    sampler.sample(
                                        logits: l.baseAddress!, rows: 1, parameters: p, steps: UnsafeBufferPointer(s),
                                        into: out)
                                }
                                benchmark.stopMeasurement()
                                blackHole(out[0])
                            }
                        }
                    }
                }
            }
        }
    }
}
