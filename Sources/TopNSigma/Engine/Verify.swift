import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension BatchSampler {
    /// The Philox stream of the acceptance uniforms (the ordinary draw uses stream 0).
    public static let acceptanceStream: UInt64 = RowPipeline.acceptanceStream
    /// The Philox stream of the correction or bonus draw.
    public static let correctionStream: UInt64 = RowPipeline.correctionStream

    /// Verifies each request's `k` draft tokens against its `k + 1` target rows (speculative
    /// decoding, Leviathan et al. 2023, Chen et al. 2023), losslessly: every emitted token is
    /// distributed exactly as the request's own target distribution `p_i`, the one
    /// ``sample(logits:format:rows:rowStride:parameters:processing:steps:into:logprobs:)`` draws row `i` from.
    ///
    /// Per request, for `i = 1…k`: accept `d_i` with probability `min(1, p_i(d_i) / q_i(d_i))`
    /// (uniform from Philox keyed by the seed at counter `(step + i - 1, stream 1)`); at the
    /// first rejection emit a draw from `normalize(max(0, p_i − q_i))` and stop; when all `k`
    /// are accepted, emit a bonus draw from `p_{k+1}` (those draws use stream 2 at
    /// `step + i - 1`). See the README's "Speculative decoding" section for invalid `q` values.
    ///
    /// Every target row of a request is read and checked, whatever the draft outcome: a row
    /// error fails its request (``VerificationError/row(_:_:)``), whichever row it is in.
    ///
    /// - Parameters:
    ///   - logits: the first logit of request 0's first row; request `r`'s row `i` starts at
    ///     `logits + (r · (k + 1) + i) · rowStride` elements.
    ///   - format: the element format of the logits.
    ///   - requests: requests to verify, `0...maximumBatchSize`.
    ///   - k: draft tokens per request, `>= 0`.
    ///   - rowStride: elements between row starts, `>= vocabularySize` (default `vocabularySize`).
    ///   - proposals: each request's draft (at least `requests`).
    ///   - parameters: each request's sampling parameters, applied to all of its rows.
    ///   - steps: each request's decode step (at least `requests`).
    ///   - results: filled with each request's result or error (at least `requests` slots).
    /// - Complexity: one pass over each row plus O(kept) per row; one task per request. The
    ///   results' arrays are allocated.
    public func verify(
        logits: UnsafeRawPointer, format: LogitFormat, requests: Int, k: Int, rowStride: Int? = nil,
        proposals: UnsafeBufferPointer<DraftProposal>, parameters: UnsafeBufferPointer<SamplingParameters>,
        steps: UnsafeBufferPointer<UInt64>, into results: UnsafeMutableBufferPointer<VerificationOutcome>
    ) {
        let stride = rowStride ?? vocabularySize
        precondition(k >= 0, "k (\(k)) must be >= 0")
        precondition(
            requests >= 0 && requests <= maximumBatchSize,
            "requests (\(requests)) must be in 0...maximumBatchSize (\(maximumBatchSize))")
        precondition(
            stride >= vocabularySize, "rowStride (\(stride)) must be at least vocabularySize (\(vocabularySize))")
        precondition(proposals.count >= requests, "proposals holds \(proposals.count) entries for \(requests) requests")
        precondition(
            parameters.count >= requests, "parameters holds \(parameters.count) entries for \(requests) requests")
        precondition(steps.count >= requests, "steps holds \(steps.count) entries for \(requests) requests")
        precondition(results.count >= requests, "results holds \(results.count) slots for \(requests) requests")
        guard requests > 0 else { return }
        runVerification(
            logits: logits, format: format, stride: stride, requests: requests,
            verification: VerificationCall(
                k: k, source: .proposals(proposals.baseAddress!, results.baseAddress!)),
            parameters: parameters.baseAddress!, steps: steps.baseAddress!)
    }

    /// ``verify(logits:format:requests:k:rowStride:proposals:parameters:steps:into:)`` with each
    /// request's draft given as pointers, for the C ABI, which has checked every size and offset:
    /// request `r` writes its emitted tokens and log-probabilities at `r · (k + 1)` of `tokens`
    /// and `logProbabilities` (when not nil), and its outcome (the accepted count, or the error) at `r`. No
    /// allocation.
    package func verify(
        logits: UnsafeRawPointer, format: LogitFormat, requests: Int, k: Int, rowStride: Int,
        drafts: UnsafePointer<DraftView>, parameters: UnsafePointer<SamplingParameters>, steps: UnsafePointer<UInt64>,
        tokens: TokenIDSink, logProbabilities: UnsafeMutablePointer<Double>?,
        outcomes: UnsafeMutablePointer<Result<Int, VerificationError>>
    ) {
        precondition(k >= 0 && requests >= 0 && requests <= maximumBatchSize && rowStride >= vocabularySize)
        guard requests > 0 else { return }
        runVerification(
            logits: logits, format: format, stride: rowStride, requests: requests,
            verification: VerificationCall(
                k: k, source: .views(drafts, tokens: tokens, logProbabilities: logProbabilities, outcomes: outcomes)),
            parameters: parameters, steps: steps)
    }

    /// Array convenience: `logits` holds `requests × (k + 1)` rows of `vocabularySize` values,
    /// request-major (request `r`'s rows are rows `r·(k+1) … r·(k+1)+k`).
    ///
    /// ```swift
    /// let outcomes = sampler.verify(
    ///     logits: targetRows, k: 2,
    ///     proposals: [DraftProposal(tokens: [17, 4], probabilities: [0.6, 0.3])],
    ///     parameters: [SamplingParameters(temperature: 0.7, nSigma: 1, seed: 42)], steps: [9])
    /// if case .success(let verified) = outcomes[0] { print(verified.accepted, verified.tokens) }
    /// ```
    ///
    /// - Parameters:
    ///   - logits: the target rows.
    ///   - k: draft tokens per request.
    ///   - proposals: one draft per request.
    ///   - parameters: one entry per request.
    ///   - steps: one decode step per request; default all 0.
    /// - Returns: each request's result or error, in request order.
    public func verify(
        logits: [Float], k: Int, proposals: [DraftProposal], parameters: [SamplingParameters], steps: [UInt64]? = nil
    ) -> [VerificationOutcome] {
        let requests = parameters.count
        precondition(k >= 0, "k (\(k)) must be >= 0")
        precondition(proposals.count == requests, "proposals holds \(proposals.count) entries for \(requests) requests")
        precondition(
            logits.count == requests * (k + 1) * vocabularySize,
            "logits holds \(logits.count) values, expected \(requests) requests × \(k + 1) rows × \(vocabularySize)")
        let steps = steps ?? [UInt64](repeating: 0, count: requests)
        precondition(steps.count == requests, "steps holds \(steps.count) entries for \(requests) requests")
        guard requests > 0 else { return [] }
        return [VerificationOutcome](unsafeUninitializedCapacity: requests) { out, initialized in
            out.initialize(repeating: .failure(.row(0, .noFiniteLogit)))
            logits.withUnsafeBytes { raw in
                proposals.withUnsafeBufferPointer { q in
                    parameters.withUnsafeBufferPointer { p in
                        steps.withUnsafeBufferPointer { s in
                            verify(
                                logits: raw.baseAddress!, format: .float32, requests: requests, k: k,
                                proposals: q, parameters: p, steps: s, into: out)
                        }
                    }
                }
            }
            initialized = requests
        }
    }
}
