import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Token ids as a caller stores them: ``TokenID`` (the Swift API), or 64-bit (the C ABI's
/// verification arrays, `int64_t`), read without a copy. A 64-bit id is range-checked as it is
/// before it is narrowed.
package enum TokenIDs {
    case ids(UnsafePointer<TokenID>)
    case wide(UnsafePointer<Int64>)

    /// Id `i`, widened.
    @inline(__always)
    subscript(i: Int) -> Int {
        switch self {
        case .ids(let p): Int(p[i])
        case .wide(let p): Int(p[i])
        }
    }

    /// The ids from `offset` on.
    package static func + (ids: TokenIDs, offset: Int) -> TokenIDs {
        switch ids {
        case .ids(let p): .ids(p + offset)
        case .wide(let p): .wide(p + offset)
        }
    }
}

/// Where emitted token ids go: ``TokenID`` slots (the Swift API) or the C ABI's `int64_t` ones.
package enum TokenIDSink {
    case ids(UnsafeMutablePointer<TokenID>)
    case wide(UnsafeMutablePointer<Int64>)

    /// Writes `token` to slot `i`.
    @inline(__always)
    func write(_ token: TokenID, at i: Int) {
        switch self {
        case .ids(let p): p[i] = token
        case .wide(let p): p[i] = Int64(token)
        }
    }

    /// The slots from `offset` on.
    package static func + (sink: TokenIDSink, offset: Int) -> TokenIDSink {
        switch sink {
        case .ids(let p): .ids(p + offset)
        case .wide(let p): .wide(p + offset)
        }
    }
}

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
    package var tokens: TokenIDs
    /// The `k` draft probabilities `q_i(d_i)`.
    package var probabilities: UnsafePointer<Double>
    package var distribution: Distribution

    /// A view of the given pointers.
    package init(tokens: TokenIDs, probabilities: UnsafePointer<Double>, distribution: Distribution) {
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
            UnsafePointer<DraftView>, tokens: TokenIDSink,
            logProbabilities: UnsafeMutablePointer<Double>?,
            outcomes: UnsafeMutablePointer<Result<Int, VerificationError>>)
    }
    var k: Int
    var source: Source
}

extension RowPipeline {
    /// The Philox stream of the acceptance uniforms (the ordinary draw uses stream 0).
    static let acceptanceStream: UInt64 = 1
    /// The Philox stream of the correction or bonus draw.
    static let correctionStream: UInt64 = 2

    /// The shape errors of one proposal, if any.
    static func shapeError(_ proposal: DraftProposal, k: Int, vocab: Int) -> VerificationError? {
        if proposal.tokens.count != k { return .tokenCount(expected: k, actual: proposal.tokens.count) }
        if proposal.probabilities.count != k {
            return .probabilityCount(expected: k, actual: proposal.probabilities.count)
        }
        for (i, t) in proposal.tokens.enumerated() where t < 0 || t >= vocab {
            return .tokenOutOfRange(position: i, token: Int(t))
        }
        switch proposal.distributions {
        case nil: break
        case .dense(let rows):
            if rows.count != k * vocab { return .denseLength(expected: k * vocab, actual: rows.count) }
        case .sparse(let lists):
            if lists.count != k { return .sparseCount(expected: k, actual: lists.count) }
            for (i, list) in lists.enumerated() {
                for entry in list where entry.token < 0 || entry.token >= vocab {
                    return .sparseTokenOutOfRange(position: i, token: Int(entry.token))
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
    static func find(_ token: TokenID, in c: UnsafeMutablePointer<Candidate>, count n: Int) -> Int? {
        var lo = 0, hi = n
        while lo < hi {
            let mid = (lo + hi) >> 1
            if c[mid].index < token { lo = mid + 1 } else { hi = mid }
        }
        return lo < n && c[lo].index == token ? lo : nil
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
        var tokens = [TokenID](repeating: 0, count: k + 1)
        var logProbabilities = [Double](repeating: 0, count: k + 1)
        let outcome = proposal.tokens.withUnsafeBufferPointer { d in
            proposal.probabilities.withUnsafeBufferPointer { q in
                tokens.withUnsafeMutableBufferPointer { t in
                    logProbabilities.withUnsafeMutableBufferPointer { l in
                        func run(_ distribution: DraftView.Distribution) -> Result<Int, VerificationError> {
                            verifyRequest(
                                row: row, vocab: vocab, k: k,
                                draft: DraftView(
                                    tokens: .ids(d.baseAddress ?? UnsafePointer(bitPattern: 64)!),
                                    probabilities: q.baseAddress ?? UnsafePointer(bitPattern: 64)!,
                                    distribution: distribution),
                                parameters: parameters, step: step, scratch: scratch, tokens: .ids(t.baseAddress!),
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
        step: UInt64, scratch: Scratch, tokens: TokenIDSink,
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
        func emit(_ token: TokenID, _ logProbability: Double) {
            tokens.write(token, at: emitted)
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
                    total = SoftmaxWeights.compute(
                        c, count: n, maximum: kept.maximum, temperature: temperature, into: w)
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
                let j = DrawKernel.inverseCDF(
                    w, count: n, total: total,
                    uniform: philox.uniform(step: position, stream: correctionStream))
                emit(c[j].index, logProbability(j))
                break
            }
            let d = TokenID(proposal.tokens[i])
            let found = find(d, in: c, count: n)
            let pd = found.map { w[$0] / total } ?? 0
            let qd = clampedProbability(proposal.probabilities[i])
            // p(d) = 0: acceptance probability 0. q(d) invalid (NaN, <= 0): ratio +inf, probability 1.
            let accept =
                pd > 0
                && (qd == 0 || pd >= qd
                    || philox.uniform(step: position, stream: acceptanceStream) < pd / qd)
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
                    if let j = find(ids[e], in: c, count: n) { w[j] -= clampedProbability(probabilities[e]) }
                }
                for j in 0..<n { w[j] = max(0, w[j]) }
            }
            if let found { w[found] = 0 }
            var residual = 0.0
            for j in 0..<n { residual += w[j] }
            let u = philox.uniform(step: position, stream: correctionStream)
            let j: Int
            if residual > 0 {
                j = DrawKernel.inverseCDF(w, count: n, total: residual, uniform: u)
            } else {
                // Only when q exceeds p everywhere p has mass (q sums above 1): draw from p.
                // (A greedy row holds its argmax alone, of weight 1.)
                if greedy { w[0] = 1 }
                let sum =
                    greedy
                    ? 1
                    : SoftmaxWeights.compute(c, count: n, maximum: Float(maximum), temperature: temperature, into: w)
                j = DrawKernel.inverseCDF(w, count: n, total: sum, uniform: u)
            }
            emit(c[j].index, logProbability(j))
            finished = true
        }
        return .success(accepted)
    }
}
