import Benchmark
import TopNSigma
import TopNSigmaBaselines

/// The `nsigma bench` workloads as regression benchmarks: fused Top-nσ (which must allocate
/// nothing per call), naive Top-nσ and sort-based top-p, on synthetic rows shaped like real
/// logits. Parameters are in the names: method, vocab, batch, threads.
let benchmarks: @Sendable () -> Void = {
    let allCores = BatchSampler.defaultThreadCount
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        maxDuration: .seconds(2),
        maxIterations: 1_000,
        thresholds: [
            // No heap allocation per call, ever: any increase over the baseline fails.
            .mallocCountTotal: .init(absolute: [.p0: 0, .p50: 0, .p100: 0]),
            .wallClock: .init(relative: [.p50: 15, .p75: 20]),
        ]
    )

    let opponentThresholds: [BenchmarkMetric: BenchmarkThresholds] = [.wallClock: .init(relative: [.p50: 15])]

    for vocab in [32_000, 128_256] {
        let rows = 64
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 42)
        for batch in [1, 8, 64] {
            for threads in Set([1, allCores]).sorted() {
                Benchmark("fused-topnsigma vocab \(vocab) batch \(batch) threads \(threads)") { benchmark in
                    let sampler = BatchSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads)
                    let parameters = [SamplingParameters](repeating: SamplingParameters(temperature: 1, nSigma: 1, seed: 7), count: batch)
                    var steps = [UInt64](repeating: 0, count: batch)
                    var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: batch)
                    logits.withUnsafeBufferPointer { l in
                        parameters.withUnsafeBufferPointer { p in
                            results.withUnsafeMutableBufferPointer { out in
                                steps.withUnsafeMutableBufferPointer { s in
                                    sampler.sample(logits: l.baseAddress!, rows: batch, parameters: p, steps: UnsafeBufferPointer(s), into: out)
                                    benchmark.startMeasurement()
                                    for iteration in benchmark.scaledIterations {
                                        for r in 0..<batch { s[r] = UInt64(iteration) }
                                        sampler.sample(logits: l.baseAddress!, rows: batch, parameters: p, steps: UnsafeBufferPointer(s), into: out)
                                    }
                                    benchmark.stopMeasurement()
                                    blackHole(out[0])
                                }
                            }
                        }
                    }
                }
            }
            Benchmark(
                "naive-topnsigma vocab \(vocab) batch \(batch) threads 1",
                configuration: .init(metrics: [.wallClock, .throughput], maxIterations: 20, thresholds: opponentThresholds)
            ) { benchmark in
                var naive = NaiveTopNSigma(vocabularySize: vocab)
                logits.withUnsafeBufferPointer { l in
                    benchmark.startMeasurement()
                    for _ in benchmark.scaledIterations {
                        for r in 0..<batch {
                            blackHole(naive.sample(UnsafeBufferPointer(rebasing: l[(r * vocab)..<((r + 1) * vocab)]), n: 1, temperature: 1, seed: 7, step: 1))
                        }
                    }
                }
            }
            Benchmark(
                "sort-topp vocab \(vocab) batch \(batch) threads 1",
                configuration: .init(metrics: [.wallClock, .throughput], maxIterations: 5, thresholds: opponentThresholds)
            ) { benchmark in
                var topP = SortTopP(vocabularySize: vocab)
                logits.withUnsafeBufferPointer { l in
                    benchmark.startMeasurement()
                    for _ in benchmark.scaledIterations {
                        for r in 0..<batch {
                            blackHole(topP.sample(UnsafeBufferPointer(rebasing: l[(r * vocab)..<((r + 1) * vocab)]), p: 0.9, temperature: 1, seed: 7, step: 1))
                        }
                    }
                }
            }
        }
    }
}
