import CBuildFeatures
import Dispatch
import Foundation
import TopNSigma
import TopNSigmaBaselines
#if canImport(Glibc)
import Glibc
#endif

/// `nsigma bench --checks`: the kernel's targets as named checks. Each prints its figure, the
/// target and PASS or FAIL; every figure is a ratio of medians measured interleaved in this run
/// (a shared machine drifts, a ratio taken in one run does not).
struct BenchChecks {
    let seconds: Double
    let realPath: String?

    /// One check's outcome.
    struct Outcome {
        var name: String
        var figure: String
        var target: String
        /// nil: not applicable on this machine or build (the reason is in `figure`).
        var passed: Bool?

        var line: String {
            let verdict = passed.map { $0 ? "PASS" : "FAIL" } ?? "SKIP"
            return "\(verdict)  \(pad(name, 44)) \(figure)  (target: \(target))"
        }
    }

    /// Runs every check; returns whether none failed.
    func run() -> Bool {
        let runner = BenchRunner(methods: [], n: 1, temperature: 1, topP: 0.9, seconds: seconds)
        let cores = BatchSampler.defaultThreadCount
        let large = Workload.make(vocab: 128_256, rows: 64, realPath: realPath)
        let small = Workload.make(vocab: 49_152, rows: 1, realPath: realPath)
        defer {
            large.free()
            small.free()
        }
        var outcomes: [Outcome] = []
        func report(_ outcome: Outcome) {
            writeStandardError("\r\u{1B}[K")
            print(outcome.line)
            outcomes.append(outcome)
        }
        let isDefaultBuild = topnsigma_build_avx() == 0
        let flusher = CacheFlusher()
        let build = isDefaultBuild ? "default build (no SIMD flags)" : "SIMD build"

        // 1-3: float32 against the floor, one thread.
        for (name, workload, batch, target) in [
            ("f32 B=64 V=128256 (DRAM)", large, 64, 1.2), ("f32 B=1 V=128256 (cache)", large, 1, 2.0),
            ("f32 B=1 V=49152 (cache)", small, 1, 2.0)
        ] {
            let (fused, floor) = timeAgainstFloor(
                runner, workload, batch: batch, threads: 1, format: .float32, name: name,
                flush: batch == 64 ? flusher : nil)
            let ratio = fused / floor
            let times = "(\(fmt(fused * 1e6 / Double(batch), 2)) vs \(fmt(floor * 1e6 / Double(batch), 2)) µs/row)"
            if isDefaultBuild && batch == 64 {
                report(
                    Outcome(
                        name: name, figure: "\(fmt(ratio, 2))× floor", target: "≤ 1.2× in a SIMD build", passed: nil))
                report(
                    Outcome(
                        name: "default build B=64 V=128256", figure: "\(fmt(ratio, 2))× floor", target: "≤ 1.6×",
                        passed: ratio <= 1.6))
            } else if isDefaultBuild {
                report(
                    Outcome(
                        name: name, figure: "\(fmt(ratio, 2))× floor (\(build))",
                        target: "≤ \(target)× in a SIMD build", passed: nil))
            } else {
                report(
                    Outcome(
                        name: name, figure: "\(fmt(ratio, 2))× floor \(times)", target: "≤ \(target)×",
                        passed: ratio <= target))
            }
        }
        if !isDefaultBuild {
            report(
                Outcome(
                    name: "default build B=64 V=128256",
                    figure: "this binary is a SIMD build; run `swift build -c release` and "
                        + "`.build/release/nsigma bench --checks`", target: "≤ 1.6×", passed: nil))
        }

        // 4-5: half precision against float32, B=64 V=128256, one thread.
        let rates = timeFormats(runner, large, batch: 64, flush: flusher)
        report(
            Outcome(
                name: "bf16 rows/s vs f32", figure: "\(fmt(rates.f32 / rates.bf16, 2))×", target: "≥ 1.8×",
                passed: isDefaultBuild ? nil : rates.f32 / rates.bf16 >= 1.8))
        report(
            Outcome(
                name: "f16 rows/s vs f32", figure: "\(fmt(rates.f32 / rates.f16, 2))×", target: "≥ 1.5×",
                passed: isDefaultBuild ? nil : rates.f32 / rates.f16 >= 1.5))

        // 6: two threads at B=64, where the floor itself scales.
        if cores >= 2 {
            let one = timeAgainstFloor(
                runner, large, batch: 64, threads: 1, format: .float32, name: "threads 1", flush: flusher)
            let two = timeAgainstFloor(
                runner, large, batch: 64, threads: 2, format: .float32, name: "threads 2", flush: flusher)
            let floorScaling = one.floor / two.floor, scaling = one.fused / two.fused
            report(
                Outcome(
                    name: "2 threads B=64 V=128256",
                    figure: "\(fmt(scaling, 2))× the 1-thread rows/s (the floor scaled \(fmt(floorScaling, 2))×)",
                    target: "≥ 1.8× where the floor scales ≥ 1.8×", passed: floorScaling >= 1.8 ? scaling >= 1.8 : nil))
        }

        // 7-9: one row split over the threads is never slower than one thread.
        let threads = max(2, cores)
        let backToBack = timeSplit(large, threads: threads, pauseMicroseconds: 0, busy: false)
        report(
            Outcome(
                name: "split row, back to back", figure: "\(threads) threads \(fmt(backToBack, 2))× the 1-thread time",
                target: "≤ 1.0× (+5% noise)", passed: backToBack <= 1.05))
        let paused = timeSplit(large, threads: threads, pauseMicroseconds: 1000, busy: false)
        report(
            Outcome(
                name: "split row, after 1 ms", figure: "\(threads) threads \(fmt(paused, 2))× the 1-thread time",
                target: "≤ 1.0× (+5% noise)", passed: paused <= 1.05))
        let busy = timeSplit(large, threads: 2, pauseMicroseconds: 0, busy: true)
        report(
            Outcome(
                name: "split row, one core busy", figure: "2 threads \(fmt(busy, 2))× the 1-thread time",
                target: "≤ 1.3×", passed: busy <= 1.3))
        // 10-11: request processing against plain sampling of the same block (B=64, from DRAM).
        let processing = timeProcessing(runner, large, batch: 64, flush: flusher)
        report(
            Outcome(
                name: "processed rows vs plain",
                figure: "\(fmt(processing.processed, 2))× the plain fused time "
                    + "(bitmask, 20 biases, 512-token history, 3 penalties)", target: "≤ 1.15×",
                passed: isDefaultBuild ? nil : processing.processed <= 1.15))
        report(
            Outcome(
                name: "top logprobs 20 vs plain", figure: "\(fmt(processing.logprobs, 2))× the plain fused time",
                target: "≤ 1.3×", passed: isDefaultBuild ? nil : processing.logprobs <= 1.3))
        // 12-29: every request a server sends, against the floor, in three regimes.
        for outcome in requestChecks(runner, large: large, small: small, flush: flusher, isDefaultBuild: isDefaultBuild)
        {
            report(outcome)
        }
        print(
            "(rows whose moments were recomputed in double precision: \(RowPipeline.exactRecomputations.load(ordering: .relaxed)))"
        )
        return !outcomes.contains { $0.passed == false }
    }

    /// The request classes of the targets table, each with its requests and its targets in the
    /// three regimes (B=64 V=128256 from DRAM, the same block warm, B=1 from cache).
    static let requestClasses:
        [(
            name: String, requests: [(String, SamplingParameters, RequestProcessing?)],
            targets: [Double]
        )] = [
            ("greedy", [("T=0", SamplingParameters(temperature: 0, nSigma: nil), nil)], [1.1, 1.2, 1.3]),
            (
                "Top-nσ, min-p, chain",
                [
                    ("Top-nσ n=1", SamplingParameters(temperature: 1, nSigma: 1, seed: 7), nil),
                    ("min-p 0.05", SamplingParameters(temperature: 1, nSigma: nil, seed: 7, minP: 0.05), nil),
                    (
                        "llama.cpp chain",
                        SamplingParameters(temperature: 0.8, nSigma: nil, seed: 7, topK: 40, topP: 0.95, minP: 0.05),
                        nil
                    )
                ], [1.2, 1.4, 1.8]
            ),
            (
                "plain sampling",
                [0.7, 1].map { ("T=\($0)", SamplingParameters(temperature: Float($0), nSigma: nil, seed: 7), nil) },
                [1.4, 1.8, 3]
            ),
            (
                "top-k alone",
                [1, 50, 1000].map { (k: Int) in
                    ("k=\(k)", SamplingParameters(temperature: 1, nSigma: nil, seed: 7, topK: k), nil)
                },
                [1.4, 1.8, 3]
            ),
            (
                "top-p alone",
                [0.5, 0.9, 0.95, 0.99].map {
                    ("p=\($0)", SamplingParameters(temperature: 1, nSigma: nil, seed: 7, topP: Float($0)), nil)
                }, [1.8, 2.5, 4]
            ),
            (
                "Top-nσ + 20 logprobs",
                [("n=1", SamplingParameters(temperature: 1, nSigma: 1, seed: 7), RequestProcessing(topLogprobs: 20))],
                [1.5, 2, 3]
            )
        ]

    /// One line per request class and regime: the worst of its requests' ratios to floor-read,
    /// every request and the floor timed interleaved in one group per regime. The default build
    /// is held to twice each target (the issue's bound on it: at most 2× the SIMD build's figure).
    func requestChecks(
        _ runner: BenchRunner, large: Workload, small: Workload, flush: CacheFlusher, isDefaultBuild: Bool
    ) -> [Outcome] {
        let block = large.logits
        let copy = UnsafeMutableBufferPointer<Float>.allocate(capacity: block.count)
        _ = copy.initialize(from: block)
        defer { copy.deallocate() }
        // Warm: the rows just written, as the LM-head GEMM leaves them (plain stores through the
        // caches; a library memcpy of this size may bypass them).
        let one = Box<Float>(1)
        let rewrite = {
            let factor = SIMD16<Float>(repeating: one.value)
            let source = UnsafeRawPointer(copy.baseAddress!), target = UnsafeMutableRawPointer(block.baseAddress!)
            var offset = 0
            while offset < block.count * 4 {
                target.storeBytes(
                    of: source.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self) * factor,
                    toByteOffset: offset, as: SIMD16<Float>.self)
                offset += 64
            }
        }
        let regimes: [(name: String, workload: Workload, batch: Int, prepare: (() -> Void)?, target: Int)] = [
            ("B=64 V=128256 DRAM", large, 64, { flush.flush() }, 0),
            ("B=64 V=128256 warm", large, 64, rewrite, 1),
            ("B=1 V=49152", small, 1, nil, 2),
            ("B=1 V=128256", large, 1, nil, 2)
        ]
        var outcomes: [Outcome] = []
        for regime in regimes {
            let vocab = regime.workload.vocab, batch = regime.batch
            let sampler = try! BatchSampler(vocabularySize: vocab, maximumBatchSize: batch, threadCount: 1)
            var calls: [(String, FusedCall)] = []
            for requestClass in Self.requestClasses {
                for (name, parameters, processing) in requestClass.requests {
                    calls.append(
                        (
                            name,
                            FusedCall(
                                sampler: sampler, workload: regime.workload, batch: batch, format: .float32,
                                parameters: parameters,
                                processing: processing.map { [RequestProcessing](repeating: $0, count: batch) })
                        ))
                }
            }
            defer { calls.forEach { $0.1.free() } }
            let sink = Box<Float>(0)
            let logits = UnsafeRawPointer(regime.workload.logits.baseAddress!)
            var timed: [BenchRunner.Timed] = [
                .init(
                    name: "floor-read",
                    body: { sink.value += sampler.readFloor(logits, rows: batch, bytesPerRow: vocab * 4) },
                    prepare: regime.prepare)
            ]
            timed += calls.map { .init(name: $0.0, body: $0.1.run, prepare: regime.prepare) }
            let timings = runner.interleaved(timed) {
                writeStandardError("\r\u{1B}[K--checks: requests \(regime.name): \($0)")
            }
            blackHole(sink.value)
            let floor = timings[0].median
            var index = 1
            for requestClass in Self.requestClasses {
                var worst = 0.0, worstName = "", figures: [String] = []
                for (name, _, _) in requestClass.requests {
                    let ratio = timings[index].median / floor
                    figures.append("\(name) \(fmt(ratio, 2))")
                    if ratio > worst { (worst, worstName) = (ratio, name) }
                    index += 1
                }
                let target = requestClass.targets[regime.target] * (isDefaultBuild ? 2 : 1)
                let detail = requestClass.requests.count > 1 ? " (\(figures.joined(separator: ", ")))" : ""
                outcomes.append(
                    Outcome(
                        name: "\(requestClass.name), \(regime.name)",
                        figure: "\(fmt(worst, 2))× floor, worst \(worstName)\(detail)",
                        target: "≤ \(fmt(target, 1))×\(isDefaultBuild ? " (2× the SIMD build's target)" : "")",
                        passed: worst <= target))
            }
        }
        return outcomes
    }

    /// Reads a buffer larger than any last-level cache, so that the next call reads its logits
    /// from DRAM (this machine's L3 may hold a whole B=64 block otherwise).
    final class CacheFlusher: @unchecked Sendable {
        let buffer: UnsafeMutablePointer<Float>
        let count = 48 << 20
        var sink: Float = 0
        init() {
            buffer = .allocate(capacity: count)
            buffer.initialize(repeating: 1, count: count)
        }
        deinit { buffer.deallocate() }
        func flush() { sink += ReadFloor.sum(UnsafeRawPointer(buffer), byteCount: count * 4) }
    }

    /// Median seconds of one fused call and of the floor, timed interleaved; `flush`: each call
    /// reads its logits from DRAM.
    func timeAgainstFloor(
        _ runner: BenchRunner, _ workload: Workload, batch: Int, threads: Int, format: LogitFormat, name: String,
        flush: CacheFlusher? = nil
    ) -> (fused: Double, floor: Double) {
        let sampler = try! BatchSampler(vocabularySize: workload.vocab, maximumBatchSize: batch, threadCount: threads)
        let call = FusedCall(sampler: sampler, workload: workload, batch: batch, format: format)
        defer { call.free() }
        let sink = Box<Float>(0)
        let logits = UnsafeRawPointer(workload.logits.baseAddress!)
        let prepare = flush.map { f in { f.flush() } }
        let timings = runner.interleaved([
            .init(
                name: "floor-read",
                body: { sink.value += sampler.readFloor(logits, rows: batch, bytesPerRow: workload.vocab * 4) },
                prepare: prepare),
            .init(name: name, body: call.run, prepare: prepare)
        ]) { writeStandardError("\r\u{1B}[K--checks: \($0)") }
        blackHole(sink.value)
        return (timings[1].median, timings[0].median)
    }

    /// The `fused-processed` and `fused-logprobs` calls' median times over the plain fused call's,
    /// interleaved, each call reading its logits from DRAM.
    func timeProcessing(
        _ runner: BenchRunner, _ workload: Workload, batch: Int, flush: CacheFlusher
    ) -> (processed: Double, logprobs: Double) {
        let sampler = try! BatchSampler(vocabularySize: workload.vocab, maximumBatchSize: batch, threadCount: 1)
        let calls = [
            FusedCall(sampler: sampler, workload: workload, batch: batch, format: .float32),
            FusedCall(
                sampler: sampler, workload: workload, batch: batch, format: .float32,
                processing: (0..<batch).map { SyntheticRequests.serverLike(vocab: workload.vocab, seed: UInt64($0)) }),
            FusedCall(
                sampler: sampler, workload: workload, batch: batch, format: .float32,
                processing: [RequestProcessing](repeating: RequestProcessing(topLogprobs: 20), count: batch))
        ]
        defer { calls.forEach { $0.free() } }
        let prepare = { flush.flush() }
        let timings = runner.interleaved([
            .init(name: "plain", body: calls[0].run, prepare: prepare),
            .init(name: "processed", body: calls[1].run, prepare: prepare),
            .init(name: "logprobs", body: calls[2].run, prepare: prepare)
        ]) { writeStandardError("\r\u{1B}[K--checks: request processing \($0)") }
        return (timings[1].median / timings[0].median, timings[2].median / timings[0].median)
    }

    /// Median seconds of a B=64 call in each format, interleaved.
    func timeFormats(
        _ runner: BenchRunner, _ workload: Workload, batch: Int, flush: CacheFlusher
    ) -> (f32: Double, f16: Double, bf16: Double) {
        let sampler = try! BatchSampler(vocabularySize: workload.vocab, maximumBatchSize: batch, threadCount: 1)
        let calls = [LogitFormat.float32, .float16, .bfloat16].map {
            FusedCall(sampler: sampler, workload: workload, batch: batch, format: $0)
        }
        defer { calls.forEach { $0.free() } }
        let prepare = { flush.flush() }
        let timings = runner.interleaved([
            .init(name: "f32", body: calls[0].run, prepare: prepare),
            .init(name: "f16", body: calls[1].run, prepare: prepare),
            .init(name: "bf16", body: calls[2].run, prepare: prepare)
        ]) { writeStandardError("\r\u{1B}[K--checks: formats \($0)") }
        return (timings[0].median, timings[1].median, timings[2].median)
    }

    /// Median time of one row (B=1) split over `threads` threads over the 1-thread time, calls
    /// alternating between the two samplers; `pauseMicroseconds` of sleep before each call;
    /// `busy`: another process spins on a core meanwhile.
    func timeSplit(_ workload: Workload, threads: Int, pauseMicroseconds: Int, busy: Bool) -> Double {
        let one = try! BatchSampler(vocabularySize: workload.vocab, maximumBatchSize: 1, threadCount: 1)
        let many = try! BatchSampler(vocabularySize: workload.vocab, maximumBatchSize: 1, threadCount: threads)
        let calls = [
            FusedCall(sampler: one, workload: workload, batch: 1, format: .float32),
            FusedCall(sampler: many, workload: workload, batch: 1, format: .float32)
        ]
        defer { calls.forEach { $0.free() } }
        var spinner: Process?
        if busy {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "while :; do :; done"]
            try? process.run()
            spinner = process
        }
        defer {
            spinner?.terminate()
            spinner?.waitUntilExit()
        }
        var samples: [[Double]] = [[], []]
        let budget = DispatchTime.now().uptimeNanoseconds + UInt64(max(0.2, seconds * 4) * 1e9)
        var rounds = 0
        writeStandardError("\r\u{1B}[K--checks: split row over \(threads) threads\(busy ? ", one core busy" : "")")
        while rounds < 20 || (rounds < 2000 && DispatchTime.now().uptimeNanoseconds < budget) {
            for (index, call) in calls.enumerated() {
                for _ in 0..<3 {
                    if pauseMicroseconds > 0 { usleep(UInt32(pauseMicroseconds)) }
                    let start = DispatchTime.now().uptimeNanoseconds
                    call.run()
                    samples[index].append(Double(DispatchTime.now().uptimeNanoseconds - start))
                }
            }
            rounds += 1
        }
        let medians = samples.map { $0.sorted()[$0.count / 2] }
        return medians[1] / medians[0]
    }
}
