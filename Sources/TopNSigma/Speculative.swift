#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One (token, probability) entry of a sparse draft distribution.
public struct DraftEntry: Sendable, Equatable, Hashable {
    /// The token id.
    public var token: Int
    /// The draft's probability of `token`.
    public var probability: Double

    /// An entry giving `token` the draft probability `probability`.
    @inlinable
    public init(token: Int, probability: Double) {
        self.token = token
        self.probability = probability
    }
}

/// A draft model's full distributions for the `k` positions of one request.
public enum DraftDistributions: Sendable, Equatable {
    /// `k` dense rows of `vocabularySize` probabilities, row-major (`k × vocabularySize` values).
    case dense([Float])
    /// `k` sparse lists; a token absent from a list has draft probability 0, and entries of the
    /// same token in one list add up.
    case sparse([[DraftEntry]])
}

/// The `k` tokens a draft model proposed for one request, with their draft probabilities.
///
/// ```swift
/// // An n-gram lookup proposes 2 tokens deterministically: q is the point mass at each.
/// let ngram = DraftProposal(tokens: [17, 4], probabilities: [1, 1])
/// // A draft model also gives its full distribution at each position.
/// let model = DraftProposal(tokens: [17, 4], probabilities: [0.6, 0.3], distributions: .dense(qRows))
/// ```
public struct DraftProposal: Sendable, Equatable {
    /// The draft tokens `d_1…d_k`.
    public var tokens: [Int]
    /// `q_i(d_i)`, the draft probability of each draft token (`k` values). This is the value the
    /// acceptance test divides by, also when ``distributions`` is given.
    public var probabilities: [Double]
    /// The draft's full distribution at each position, or nil: then each `q_i` is taken as the
    /// point mass at `d_i` (a deterministic draft such as n-gram lookup).
    public var distributions: DraftDistributions?

    /// A proposal of `tokens` with draft probabilities `probabilities` and, optionally, the
    /// draft's full distributions.
    @inlinable
    public init(tokens: [Int], probabilities: [Double], distributions: DraftDistributions? = nil) {
        self.tokens = tokens
        self.probabilities = probabilities
        self.distributions = distributions
    }
}

/// The outcome of verifying one request's draft.
public struct VerificationResult: Sendable, Equatable, Hashable {
    /// How many draft tokens were accepted, `0...k`.
    public var accepted: Int
    /// The emitted tokens: the `accepted` draft tokens, then the correction token (after a
    /// rejection) or the bonus token (when all `k` were accepted); `accepted + 1` tokens.
    public var tokens: [Int]
    /// `log p_i(token)` of each emitted token under its target distribution (0 for a greedy row).
    public var logProbabilities: [Double]

    /// A result with the given counts, tokens and log-probabilities.
    @inlinable
    public init(accepted: Int, tokens: [Int], logProbabilities: [Double]) {
        self.accepted = accepted
        self.tokens = tokens
        self.logProbabilities = logProbabilities
    }
}

/// Why one request of a verification call failed; the other requests are unaffected.
public enum VerificationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The proposal holds `actual` tokens, not `k`.
    case tokenCount(expected: Int, actual: Int)
    /// The proposal holds `actual` draft probabilities, not `k`.
    case probabilityCount(expected: Int, actual: Int)
    /// Draft token `position` (0-based) is not in `0..<vocabularySize`.
    case tokenOutOfRange(position: Int, token: Int)
    /// The dense draft rows hold `actual` values, not `k × vocabularySize`.
    case denseLength(expected: Int, actual: Int)
    /// The sparse draft distribution holds `actual` lists, not `k`.
    case sparseCount(expected: Int, actual: Int)
    /// A sparse entry of position `position` names a token outside `0..<vocabularySize`.
    case sparseTokenOutOfRange(position: Int, token: Int)
    /// Target row `row` of the request (0-based, `0...k`) failed.
    case row(Int, RowError)

    /// What is wrong with the request: `target row 2: logit at index 17 is NaN`.
    public var description: String {
        switch self {
        case .tokenCount(let e, let a): return "the proposal holds \(a) draft tokens, expected k = \(e)"
        case .probabilityCount(let e, let a): return "the proposal holds \(a) draft probabilities, expected k = \(e)"
        case .tokenOutOfRange(let p, let t): return "draft token \(t) at position \(p) is outside the vocabulary"
        case .denseLength(let e, let a): return "the dense draft rows hold \(a) values, expected \(e)"
        case .sparseCount(let e, let a): return "the sparse draft distribution holds \(a) lists, expected k = \(e)"
        case .sparseTokenOutOfRange(let p, let t):
            return "sparse draft entry for token \(t) at position \(p) is outside the vocabulary"
        case .row(let r, let error): return "target row \(r): \(error.description)"
        }
    }
}

/// One request's verification outcome: its result, or what is wrong with that request.
public typealias VerificationOutcome = Result<VerificationResult, VerificationError>

/// One request's draft as pointers: what ``RowPipeline/verifyRequest(row:vocab:k:draft:parameters:step:scratch:tokens:logProbabilities:)``
/// reads. The C ABI builds it from its arrays without allocating; a ``DraftProposal`` lends its
/// arrays for the call.
package struct DraftView {
    /// The draft's distribution at each of the `k` positions.
    package enum Distribution {
        /// None: each `q_i` is the point mass at `d_i`.
        case pointMass
        /// `k` rows of `vocabularySize` probabilities.
        case dense(UnsafePointer<Float>)
        /// `k` lists (``DraftDistributions/sparse(_:)``).
        case lists(UnsafePointer<[DraftEntry]>)
        /// `k` lists in compressed rows: position `i`'s entries are `offsets[i]..<offsets[i+1]`
        /// of `ids` and `probabilities` (the caller has checked the offsets).
        case compressed(offsets: UnsafePointer<Int64>, ids: UnsafePointer<Int32>, probabilities: UnsafePointer<Double>)
    }
    /// The `k` draft tokens.
    package var tokens: UnsafePointer<Int>
    /// The `k` draft probabilities `q_i(d_i)`.
    package var probabilities: UnsafePointer<Double>
    package var distribution: Distribution

    /// A view of the given pointers.
    package init(tokens: UnsafePointer<Int>, probabilities: UnsafePointer<Double>, distribution: Distribution) {
        self.tokens = tokens
        self.probabilities = probabilities
        self.distribution = distribution
    }
}

/// The buffers of a verification call (``BatchSampler`` schedules one task per request).
struct VerificationCall: @unchecked Sendable {
    enum Source {
        /// The Swift API's proposals and outcomes.
        case proposals(UnsafePointer<DraftProposal>, UnsafeMutablePointer<VerificationOutcome>)
        /// The C ABI's drafts: request `r` writes its emitted tokens and log-probabilities at
        /// `r · (k + 1)` and its outcome (accepted count, or error) at `r`.
        case views(
            UnsafePointer<DraftView>, tokens: UnsafeMutablePointer<Int>,
            logProbabilities: UnsafeMutablePointer<Double>?,
            outcomes: UnsafeMutablePointer<Result<Int, VerificationError>>)
    }
    var k: Int
    var source: Source
}

extension BatchSampler {
    /// The Philox stream of the acceptance uniforms (the ordinary draw uses stream 0).
    public static let acceptanceStream: UInt64 = 1
    /// The Philox stream of the correction or bonus draw.
    public static let correctionStream: UInt64 = 2

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
        tokens: UnsafeMutablePointer<Int>, logProbabilities: UnsafeMutablePointer<Double>?,
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

extension RowPipeline {
    /// The shape errors of one proposal, if any.
    static func shapeError(_ proposal: DraftProposal, k: Int, vocab: Int) -> VerificationError? {
        if proposal.tokens.count != k { return .tokenCount(expected: k, actual: proposal.tokens.count) }
        if proposal.probabilities.count != k {
            return .probabilityCount(expected: k, actual: proposal.probabilities.count)
        }
        for (i, t) in proposal.tokens.enumerated() where t < 0 || t >= vocab {
            return .tokenOutOfRange(position: i, token: t)
        }
        switch proposal.distributions {
        case nil: break
        case .dense(let rows):
            if rows.count != k * vocab { return .denseLength(expected: k * vocab, actual: rows.count) }
        case .sparse(let lists):
            if lists.count != k { return .sparseCount(expected: k, actual: lists.count) }
            for (i, list) in lists.enumerated() {
                for entry in list where entry.token < 0 || entry.token >= vocab {
                    return .sparseTokenOutOfRange(position: i, token: entry.token)
                }
            }
        }
        return nil
    }

    /// A draft probability as the method uses it: NaN and values `<= 0` are 0, values above 1
    /// are 1.
    @inline(__always)
    static func clampedProbability(_ q: Double) -> Double {
        q > 0 ? min(q, 1) : 0
    }

    /// The index of token `token` among `c[0..<n]` (ascending ids), or nil.
    @inline(__always)
    static func find(_ token: Int, in c: UnsafeMutablePointer<Candidate>, count n: Int) -> Int? {
        var lo = 0, hi = n
        while lo < hi {
            let mid = (lo + hi) >> 1
            if Int(c[mid].index) < token { lo = mid + 1 } else { hi = mid }
        }
        return lo < n && Int(c[lo].index) == token ? lo : nil
    }

    /// Inverse-CDF draw over `w[0..<n]` (non-negative, positive total) with `u ∈ [0, 1)`, as
    /// ``DrawKernel/draw(_:maximum:temperature:uniform:weights:)`` scans.
    static func inverseCDF(_ w: UnsafeMutablePointer<Double>, count n: Int, total: Double, uniform u: Double) -> Int {
        let target = u * total
        var cumulative = 0.0
        for j in 0..<n {
            cumulative += w[j]
            if cumulative > target { return j }
        }
        for j in (0..<n).reversed() where w[j] > 0 { return j }
        return n - 1
    }

    /// Checks a row that is not needed for the draft outcome: only its errors matter.
    static func rowError<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters
    ) -> RowError? {
        if let error = parameters.validationError { return error }
        let accumulator = reduce(
            p, vocab: vocab, chunks: 0, StatisticsKernel.chunkCount(length: vocab), collect: false,
            parameters: parameters, scratch: nil, partials: nil)
        switch accumulator.finish(row: p, count: vocab) {
        case .failure(let error): return error
        case .success(let s): return s.finiteCount > 0 ? nil : .noFiniteLogit
        }
    }

    /// Verifies one request of the Swift API: its shape checked, then
    /// ``verifyRequest(row:vocab:k:draft:parameters:step:scratch:tokens:logProbabilities:)`` on
    /// its arrays, into the result's arrays.
    static func verifyRequest<E: LogitElement>(
        row: (Int) -> UnsafePointer<E>, vocab: Int, k: Int, proposal: DraftProposal, parameters: SamplingParameters,
        step: UInt64, scratch: Scratch
    ) -> VerificationOutcome {
        if let error = shapeError(proposal, k: k, vocab: vocab) { return .failure(error) }
        var tokens = [Int](repeating: 0, count: k + 1)
        var logProbabilities = [Double](repeating: 0, count: k + 1)
        let outcome = proposal.tokens.withUnsafeBufferPointer { d in
            proposal.probabilities.withUnsafeBufferPointer { q in
                tokens.withUnsafeMutableBufferPointer { t in
                    logProbabilities.withUnsafeMutableBufferPointer { l in
                        func run(_ distribution: DraftView.Distribution) -> Result<Int, VerificationError> {
                            verifyRequest(
                                row: row, vocab: vocab, k: k,
                                draft: DraftView(
                                    tokens: d.baseAddress ?? UnsafePointer(bitPattern: 64)!,
                                    probabilities: q.baseAddress ?? UnsafePointer(bitPattern: 64)!,
                                    distribution: distribution),
                                parameters: parameters, step: step, scratch: scratch, tokens: t.baseAddress!,
                                logProbabilities: l.baseAddress!)
                        }
                        switch proposal.distributions {
                        case nil: return run(.pointMass)
                        case .dense(let rows): return rows.withUnsafeBufferPointer { run(.dense($0.baseAddress!)) }
                        case .sparse(let lists):
                            return lists.withUnsafeBufferPointer {
                                run(.lists($0.baseAddress ?? UnsafePointer(bitPattern: 64)!))
                            }
                        }
                    }
                }
            }
        }
        return outcome.map { accepted in
            VerificationResult(
                accepted: accepted, tokens: Array(tokens[0...accepted]),
                logProbabilities: Array(logProbabilities[0...accepted]))
        }
    }

    /// Verifies one request on the calling thread with one scratch region: its rows one after
    /// the other, each settled exactly as ``sampleRow`` settles it (same kept set, same weights).
    /// Writes the `accepted + 1` emitted tokens and their log-probabilities to `tokens` and
    /// `logProbabilities` (room for `k + 1`) and returns `accepted`. Draft token ids and sparse
    /// ids are range-checked here; counts and offsets by the caller.
    static func verifyRequest<E: LogitElement>(
        row: (Int) -> UnsafePointer<E>, vocab: Int, k: Int, draft proposal: DraftView, parameters: SamplingParameters,
        step: UInt64, scratch: Scratch, tokens: UnsafeMutablePointer<Int>,
        logProbabilities: UnsafeMutablePointer<Double>?
    ) -> Result<Int, VerificationError> {
        for i in 0..<k where proposal.tokens[i] < 0 || proposal.tokens[i] >= vocab {
            return .failure(.tokenOutOfRange(position: i, token: proposal.tokens[i]))
        }
        if case .compressed(let offsets, let ids, _) = proposal.distribution {
            for i in 0..<k {
                for e in Int(offsets[i])..<Int(offsets[i + 1]) where ids[e] < 0 || Int(ids[e]) >= vocab {
                    return .failure(.sparseTokenOutOfRange(position: i, token: Int(ids[e])))
                }
            }
        }
        let philox = Philox4x32(seed: parameters.seed)
        var emitted = 0
        func emit(_ token: Int, _ logProbability: Double) {
            tokens[emitted] = token
            logProbabilities?[emitted] = logProbability
            emitted += 1
        }
        var accepted = 0
        var finished = false
        let c = scratch.candidates, w = scratch.weights
        for i in 0...k {
            let p = row(i)
            if finished {
                if let error = rowError(p, vocab: vocab, parameters: parameters) { return .failure(.row(i, error)) }
                continue
            }
            // The target p_i over c[0..<n] (ascending ids): weights w and their total.
            let n: Int, total: Double, maximum: Double, greedy: Bool, temperature: Float
            let position = step &+ UInt64(i)
            switch survivors(p, vocab: vocab, parameters: parameters, scratch: scratch) {
            case .failure(let error):
                return .failure(.row(i, error))
            case .success(let (statistics, count)):
                if let count {
                    let kept = truncate(
                        p, vocab: vocab, statistics: statistics, parameters: parameters, count: count,
                        scratch: scratch, step: position)
                    (n, maximum, temperature) = (kept.count, Double(kept.maximum), kept.temperature)
                    let t = Double(temperature)
                    var sum = 0.0
                    for j in 0..<n {
                        w[j] = exp((Double(c[j].logit) - maximum) / t)
                        sum += w[j]
                    }
                    total = sum
                    greedy = false
                } else {
                    c[0] = Candidate(index: Int32(statistics.argmax), logit: statistics.maximum)
                    w[0] = 1
                    (n, total, maximum, greedy, temperature) = (1, 1, Double(statistics.maximum), true, 0)
                }
            }
            let logTotal = log(total), t = Double(temperature)
            func logProbability(_ j: Int) -> Double { greedy ? 0 : (Double(c[j].logit) - maximum) / t - logTotal }
            guard i < k else {
                // All k accepted: the bonus token from p_{k+1}.
                let j = inverseCDF(
                    w, count: n, total: total,
                    uniform: philox.uniform(step: position, stream: BatchSampler.correctionStream))
                emit(Int(c[j].index), logProbability(j))
                break
            }
            let d = proposal.tokens[i]
            let found = find(d, in: c, count: n)
            let pd = found.map { w[$0] / total } ?? 0
            let qd = clampedProbability(proposal.probabilities[i])
            // p(d) = 0: acceptance probability 0. q(d) invalid (NaN, <= 0): ratio +inf, probability 1.
            let accept =
                pd > 0
                && (qd == 0 || pd >= qd
                    || philox.uniform(step: position, stream: BatchSampler.acceptanceStream) < pd / qd)
            if accept, let found {
                emit(d, logProbability(found))
                accepted += 1
                continue
            }
            // Rejected: the residual max(0, p − q) over the kept set, q(d) being the given
            // q_i(d_i) (> p(d), so the residual is 0 there) and the distribution's elsewhere
            // (0 without one: the point mass at d).
            for j in 0..<n { w[j] /= total }
            switch proposal.distribution {
            case .pointMass:
                break
            case .dense(let q):
                let base = q + i * vocab
                for j in 0..<n { w[j] = max(0, w[j] - clampedProbability(Double(base[Int(c[j].index)]))) }
            case .lists(let lists):
                for entry in lists[i] {
                    if let j = find(entry.token, in: c, count: n) { w[j] -= clampedProbability(entry.probability) }
                }
                for j in 0..<n { w[j] = max(0, w[j]) }
            case .compressed(let offsets, let ids, let probabilities):
                for e in Int(offsets[i])..<Int(offsets[i + 1]) {
                    if let j = find(Int(ids[e]), in: c, count: n) { w[j] -= clampedProbability(probabilities[e]) }
                }
                for j in 0..<n { w[j] = max(0, w[j]) }
            }
            if let found { w[found] = 0 }
            var residual = 0.0
            for j in 0..<n { residual += w[j] }
            let u = philox.uniform(step: position, stream: BatchSampler.correctionStream)
            let j: Int
            if residual > 0 {
                j = inverseCDF(w, count: n, total: residual, uniform: u)
            } else {
                // Only when q exceeds p everywhere p has mass (q sums above 1): draw from p.
                var sum = 0.0
                for m in 0..<n {
                    w[m] = greedy ? 1 : exp((Double(c[m].logit) - maximum) / t)
                    sum += w[m]
                }
                j = inverseCDF(w, count: n, total: sum, uniform: u)
            }
            emit(Int(c[j].index), logProbability(j))
            finished = true
        }
        return .success(accepted)
    }
}
