import ArgumentParser
import COpenBLAS
import Dispatch
import Foundation
import TopNSigma
import TopNSigmaBaselines
import TopNSigmaIO

/// Rows `0..<rows` over `threads` workers (`DispatchQueue.concurrentPerform`), worker `w` taking
/// rows `w, w + threads, …` with its own scratch.
func parallelRows(_ rows: Int, threads: Int, _ body: (Int, Int) -> Void) {
    let workers = min(threads, rows)
    if workers <= 1 {
        for r in 0..<rows { body(0, r) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let shared = UnsafeSendable(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for r in stride(from: w, to: rows, by: workers) { shared.value(w, r) }
        }
    }
}

struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// A mutable box so each worker owns its opponent's scratch.
final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

func median(_ values: [Int]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    return Double(sorted[sorted.count / 2])
}

@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}

/// The binary16 nearest to `x` (round to nearest even; overflow to ±inf), for bench workloads.
func halfBits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let magnitude = x.magnitude
    if magnitude.isNaN { return sign | 0x7E00 }
    if magnitude >= 65520 { return sign | 0x7C00 }
    if magnitude < 0x1p-14 {
        // Subnormal half: a multiple of 2^-24, rounded to nearest even.
        return sign | UInt16((magnitude * 0x1p24).rounded(.toNearestOrEven))
    }
    let exponent = Int(magnitude.exponent)
    let scaled = (magnitude / Float(sign: .plus, exponent: exponent, significand: 1) - 1) * 1024
    var mantissa = Int(scaled.rounded(.toNearestOrEven))
    var e = exponent + 15
    if mantissa == 1024 { mantissa = 0; e += 1 }
    return sign | UInt16(e << 10 | mantissa)
}

/// Integer (or Float) slots that threads write without exclusivity checks (each its own), freed
/// with the last closure that holds them.
final class Slots: @unchecked Sendable {
    let values: UnsafeMutableBufferPointer<Int>
    let floats: UnsafeMutablePointer<Float>
    init(count: Int) {
        values = .allocate(capacity: count)
        values.initialize(repeating: 0)
        floats = .allocate(capacity: 1)
    }
    init(floats count: Int) {
        values = .allocate(capacity: 1)
        floats = .allocate(capacity: count)
        floats.initialize(repeating: 0, count: count)
    }
    deinit {
        values.deallocate()
        floats.deallocate()
    }
}

/// A sampler for the bench, its configuration errors as usage errors (exit 2) naming the options.
func makeSampler(
    vocabularySize: Int, maximumBatchSize: Int, threadCount: Int, executor: BatchSampler.Executor = .workerPool
) throws -> BatchSampler {
    do {
        return try BatchSampler(
            vocabularySize: vocabularySize, maximumBatchSize: maximumBatchSize, threadCount: threadCount,
            executor: executor)
    } catch {
        throw UsageError(
            message:
                "--vocab \(vocabularySize), --batch \(maximumBatchSize), --threads \(threadCount): cannot create the sampler: \(error)"
        )
    }
}

/// `first × second` floats from malloc (uninitialized), or a ``UsageError`` naming `what` when the
/// product overflows or the memory cannot be had.
func allocateFloats(_ first: Int, _ second: Int, what: String) throws -> UnsafeMutableBufferPointer<Float> {
    let (count, overflow) = first.multipliedReportingOverflow(by: second)
    let (bytes, overflowBytes) = count.multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
    guard !overflow, !overflowBytes, count > 0, let raw = malloc(bytes) else {
        throw UsageError(message: "\(what): cannot allocate \(first) × \(second) floats")
    }
    return UnsafeMutableBufferPointer(start: raw.bindMemory(to: Float.self, capacity: count), count: count)
}

/// The bench's size limits, checked after every option is in its range and before anything is
/// allocated: counts that `cblas_sasum` and `cblas_sgemm` take as `Int32`, and the memory the
/// run will hold against the machine's physical memory.
enum BenchLimits {
    /// Sampler scratch per thread and logit (``RowPipeline/scratchByteCount(vocab:)`` is about 70 B
    /// per logit); used where the exact figure overflows.
    static let scratchBytesPerLogit = 70

    /// `values` multiplied, or nil on overflow.
    static func product(_ values: Int...) -> Int? {
        var result = 1
        for v in values {
            let (next, overflow) = result.multipliedReportingOverflow(by: v)
            if overflow { return nil }
            result = next
        }
        return result
    }

    /// `values` added, or nil on overflow.
    static func sum(_ values: Int?...) -> Int? {
        var result = 0
        for v in values {
            guard let v else { return nil }
            let (next, overflow) = result.addingReportingOverflow(v)
            if overflow { return nil }
            result = next
        }
        return result
    }

    static func check(
        vocabs: [Int], batches: [Int], threads: [Int], methods: [BenchMethod], lmHead: Int?,
        physicalMemory: UInt64 = ProcessInfo.processInfo.physicalMemory
    ) throws {
        let int32 = Int(Int32.max)
        let maxBatch = batches.max() ?? 1, maxThreads = threads.max() ?? 1
        let rowsPerEntry = methods.map(\.rowsPerEntry).max() ?? 1
        let rowsNote = rowsPerEntry > 1 ? " × \(rowsPerEntry) rows per entry (verification methods)" : ""
        for v in vocabs {
            guard let logits = product(v, maxBatch, rowsPerEntry), logits <= int32 else {
                throw UsageError(
                    message:
                        "--vocab \(v) × --batch \(maxBatch)\(rowsNote) is more than \(int32) logits per call "
                        + "(cblas_sasum takes an Int32 count); lower --vocab or --batch")
            }
            if let lmHead {
                guard let weights = product(v, lmHead), weights <= int32 else {
                    throw UsageError(
                        message:
                            "--vocab \(v) × --lm-head \(lmHead) is more than \(int32) weights (cblas_sgemm takes Int32 sizes); lower --lm-head"
                    )
                }
                guard let states = product(maxBatch, lmHead), states <= int32 else {
                    throw UsageError(
                        message:
                            "--batch \(maxBatch) × --lm-head \(lmHead) is more than \(int32) hidden-state values; lower --lm-head or --batch"
                    )
                }
            }
        }
        // Memory: every vocab's block stays cached for the run; the largest one's transients
        // (its synthetic source, 16-bit copies, processed copy, the samplers' per-thread
        // scratch, the LM head) come on top.
        let halfCopies = methods.filter { $0 == .fusedHalf || $0 == .fusedBrain }.count + 1
        let samplers =
            1
            + methods.map { m -> Int in
                switch m {
                case .fusedVerify: 2
                case .naive, .sortTopP, .statistics, .separateVerify: 0
                default: 1
                }
            }.reduce(0, +)
        let opponents = methods.filter { [.naive, .sortTopP, .separateVerify, .separateProcessed].contains($0) }.count
        var cached: Int? = 0, largestTransient: Int? = 0
        for v in vocabs {
            let rows = maxBatch * rowsPerEntry
            let scratch = BatchSampler.scratchByteCount(vocab: v) ?? product(v, scratchBytesPerLogit)
            let transient = sum(
                product(v, rows, 4), product(v, maxBatch, 2, halfCopies), product(v, maxBatch, 4),
                scratch.flatMap { product($0, maxThreads, samplers) }, product(v, 16, maxThreads, opponents),
                lmHead.flatMap { h in sum(product(v, h, 4), product(maxBatch, h, 8), product(maxBatch, v, 4)) } ?? 0)
            cached = sum(cached, product(v, rows, 4))
            largestTransient = transient.flatMap { t in largestTransient.map { max($0, t) } }
        }
        let needed = sum(cached, largestTransient)
        let available = Int(clamping: physicalMemory)
        guard let needed, needed <= available else {
            let figure = needed.map { "about \(fmt(Double($0) / 1e9, 1)) GB" } ?? "more than 2^63 bytes"
            throw UsageError(
                message:
                    "--vocab \(vocabs.map(String.init).joined(separator: ",")), --batch \(maxBatch), --threads \(maxThreads)"
                    + (lmHead.map { ", --lm-head \($0)" } ?? "")
                    + ": the run needs \(figure) of memory (logits, 16-bit copies, per-thread sampler scratch"
                    + (lmHead == nil ? "" : ", LM-head weights")
                    + "), more than this machine's \(fmt(Double(available) / 1e9, 1)) GB of physical memory")
        }
    }
}
