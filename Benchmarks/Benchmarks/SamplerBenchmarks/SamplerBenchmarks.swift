import Benchmark
import TopNSigma
import TopNSigmaBaselines

/// The `nsigma bench` workloads as regression benchmarks: fused Top-nσ (which must allocate
/// nothing per call), naive Top-nσ and sort-based top-p, on synthetic rows shaped like real
/// logits (vocab 32000…256000, batch 1…256, threads 1 and all cores). Parameters are in the
/// names: method, vocab, batch, threads.
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
            .wallClock: .init(relative: [.p50: 15, .p75: 20])
        ]
    )

    // The `nsigma bench` workloads: vocabularies of common tokenizers, batches 1…256.
    for vocab in [32_000, 49_152, 128_256, 151_936, 256_000] {
        let rows = 256
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 42)
        for batch in [1, 8, 64, 256] {
            // The floor the fused sampler is measured against: the library's own plain SIMD read
            // of the same bytes (its `ReadFloor`, through TopNSigmaBaselines), built with the
            // library's flags.
            Benchmark("floor-read vocab \(vocab) batch \(batch) threads 1") { benchmark in
                logits.withUnsafeBytes { raw in
                    let bytes = batch * vocab * 4
                    benchmark.startMeasurement()
                    for _ in benchmark.scaledIterations {
                        blackHole(MemoryFloor.read(raw.baseAddress!, byteCount: bytes))
                    }
                    benchmark.stopMeasurement()
                }
            }
            for threads in Set([1, allCores]).sorted() {
                Benchmark("fused-topnsigma vocab \(vocab) batch \(batch) threads \(threads)") { benchmark in
                    let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: threads)
                    let parameters = [SamplingParameters](
                        repeating: SamplingParameters(temperature: 1, nSigma: 1, seed: 7), count: batch)
                    var steps = [UInt64](repeating: 0, count: batch)
                    var results = [SampleResult](repeating: .failure(.noFiniteLogit), count: batch)
                    logits.withUnsafeBufferPointer { l in
                        parameters.withUnsafeBufferPointer { p in
                            results.withUnsafeMutableBufferPointer { out in
                                steps.withUnsafeMutableBufferPointer { s in
                                    sampler.sample(
                                        logits: l.baseAddress!, rows: batch, parameters: p,
                                        steps: UnsafeBufferPointer(s), into: out)
                                    benchmark.startMeasurement()
                                    for iteration in benchmark.scaledIterations {
                                        for r in 0..<batch { s[r] = UInt64(iteration) }
                                        sampler.sample(
                                            logits: l.baseAddress!, rows: batch, parameters: p,
                                            steps: UnsafeBufferPointer(s), into: out)
                                    }
                                    benchmark.stopMeasurement()
                                    blackHole(out[0])
                                }
                            }
                        }
                    }
                }
            }
            // The opponents take seconds per call at batch 256: up to batch 64 only.
            guard batch <= 64 else { continue }
            opponentBenchmark(
                "naive-topnsigma vocab \(vocab) batch \(batch) threads 1", iterations: 20, logits: logits, vocab: vocab,
                batch: batch
            ) {
                var naive = NaiveTopNSigma(vocabularySize: vocab)
                return { naive.sample($0, n: 1, temperature: 1, seed: 7, step: 1) }
            }
            opponentBenchmark(
                "sort-topp vocab \(vocab) batch \(batch) threads 1", iterations: 5, logits: logits, vocab: vocab,
                batch: batch
            ) {
                var topP = SortTopP(vocabularySize: vocab)
                return { topP.sample($0, p: 0.9, temperature: 1, seed: 7, step: 1) }
            }
        }
    }

    // top-k / top-p on adversarial rows (WorstCaseBenchmarks.swift).
    worstCaseTruncationBenchmarks()
}

/// An opponent sampling `batch` rows one by one; `makeSampler` builds its scratch once.
func opponentBenchmark(
    _ name: String, iterations: Int, logits: [Float], vocab: Int, batch: Int,
    makeSampler: @escaping () -> (UnsafeBufferPointer<Float>) -> SampledToken?
) {
    Benchmark(
        name,
        configuration: .init(
            metrics: [.wallClock, .throughput], maxIterations: iterations,
            thresholds: [.wallClock: .init(relative: [.p50: 15])])
    ) { benchmark in
        let sample = makeSampler()
        logits.withUnsafeBufferPointer { l in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for r in 0..<batch {
                    blackHole(sample(UnsafeBufferPointer(rebasing: l[(r * vocab)..<((r + 1) * vocab)])))
                }
            }
        }
    }
}
