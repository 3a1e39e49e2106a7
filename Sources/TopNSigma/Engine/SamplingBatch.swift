/// Reusable buffers for ``BatchSampler``'s allocation-free path: each row's parameters, step and
/// request processing in, its result and logprobs out. Allocate one per sampler and reuse it for
/// every call, instead of nesting `withUnsafe…` closures around the pointer API.
///
/// ```swift
/// let batch = SamplingBatch(capacity: 64)
/// // per decode step:
/// for r in 0..<rows {
///     batch.parameters[r] = SamplingParameters(temperature: 0.7, seed: seeds[r])
///     batch.steps[r] = steps[r]
///     batch.processing[r].outputTokens = generated[r]   // optional
/// }
/// sampler.sample(logits: logitsPointer, rows: rows, batch: batch)
/// let token = try batch.results[0].get().token
/// ```
///
/// Not thread-safe: one call at a time, like the sampler.
public final class SamplingBatch: @unchecked Sendable {
    /// Rows the buffers hold.
    public let capacity: Int
    /// Each row's parameters (default ``SamplingParameters/init(temperature:nSigma:seed:topK:topP:minP:typicalP:epsilon:eta:xtcThreshold:xtcProbability:dynamicTemperatureRange:dynamicTemperatureExponent:pLess:order:)``'s).
    public let parameters: UnsafeMutableBufferPointer<SamplingParameters>
    /// Each row's decode step (default 0).
    public let steps: UnsafeMutableBufferPointer<UInt64>
    /// Each row's request processing (default: none).
    public let processing: UnsafeMutableBufferPointer<RequestProcessing>
    /// Each row's token or error after a call.
    public let results: UnsafeMutableBufferPointer<SampleResult>
    /// Each row's logprobs after a call (for rows whose processing asks for them).
    public let logprobs: UnsafeMutableBufferPointer<TopLogprobs>

    /// Buffers for up to `capacity` rows (at least 1).
    public init(capacity: Int) {
        let capacity = max(1, capacity)
        self.capacity = capacity
        parameters = .allocate(capacity: capacity)
        parameters.initialize(repeating: SamplingParameters())
        steps = .allocate(capacity: capacity)
        steps.initialize(repeating: 0)
        processing = .allocate(capacity: capacity)
        processing.initialize(repeating: RequestProcessing())
        results = .allocate(capacity: capacity)
        results.initialize(repeating: .failure(.noFiniteLogit))
        logprobs = .allocate(capacity: capacity)
        logprobs.initialize(repeating: TopLogprobs())
    }

    deinit {
        parameters.deinitialize().deallocate()
        steps.deallocate()
        processing.deinitialize().deallocate()
        results.deinitialize().deallocate()
        logprobs.deallocate()
    }
}

extension BatchSampler {
    /// Samples `rows` rows with the parameters, steps and processing in `batch`, writing its
    /// results and logprobs: the pointer API without the closures. No heap allocation.
    ///
    /// - Parameters:
    ///   - logits: row 0's first logit, stored as `format`; row `r` starts `r * rowStride`
    ///     elements later.
    ///   - format: the logits' format (default float32).
    ///   - rows: rows to sample, `0...min(maximumBatchSize, batch.capacity)`.
    ///   - rowStride: elements between row starts, `>= vocabularySize` (default `vocabularySize`).
    ///   - batch: the buffers.
    public func sample(
        logits: UnsafeRawPointer, format: LogitFormat = .float32, rows: Int, rowStride: Int? = nil, batch: SamplingBatch
    ) {
        precondition(rows <= batch.capacity, "rows (\(rows)) must be at most the batch's capacity (\(batch.capacity))")
        sample(
            logits: logits, format: format, rows: rows, rowStride: rowStride,
            parameters: UnsafeBufferPointer(batch.parameters), processing: UnsafeBufferPointer(batch.processing),
            steps: UnsafeBufferPointer(batch.steps), into: batch.results, logprobs: batch.logprobs)
    }
}
