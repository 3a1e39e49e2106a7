import TopNSigma
#if canImport(Glibc)
import Glibc
#endif

/// Speculative verification as a separate pass after sampling's softmax, the way it is often
/// written: a Top-nσ-masked softmax of each of the `k + 1` target rows into a dense probability
/// row (several scalar passes over the whole vocabulary, as ``NaiveTopNSigma``), then the
/// rejection loop on those rows. The benchmark's opponent for ``BatchSampler``'s fused
/// verification, never a fast path.
///
/// Same semantics as ``BatchSampler/verify(logits:k:proposals:parameters:steps:)`` for a
/// deterministic draft (only `q_i(d_i)` given: `q_i` is the point mass at `d_i`) under Top-nσ
/// at `T > 0` (no other filter), with the same Philox streams, so it emits the same tokens up to
/// float rounding at CDF boundaries.
public struct SeparateVerify {
    /// `k + 1` dense probability rows, kept across requests.
    private var probabilities: [Double]
    /// Logits per row.
    public let vocabularySize: Int
    /// Draft tokens per request.
    public let k: Int

    /// Scratch for requests of `k` draft tokens over rows of `vocabularySize` logits.
    public init(vocabularySize: Int, k: Int) {
        self.vocabularySize = vocabularySize
        self.k = k
        probabilities = [Double](repeating: 0, count: (k + 1) * vocabularySize)
    }

    /// One request's outcome: accepted draft tokens, emitted tokens and their log-probabilities.
    public struct Outcome: Equatable {
        /// Draft tokens accepted.
        public var accepted: Int
        /// The accepted tokens, then the correction or bonus token.
        public var tokens: [TokenID]
        /// `log p_i` of each emitted token.
        public var logProbabilities: [Double]
    }

    /// Verifies one request: `rows` holds its `k + 1` target rows back to back.
    /// - Returns: the outcome, or nil when a row holds NaN, `+inf` or no finite logit.
    public mutating func verify(
        _ rows: UnsafeBufferPointer<Float>, tokens: [TokenID], q: [Double], n: Float?, temperature: Float, seed: UInt64,
        step: UInt64
    ) -> Outcome? {
        let v = vocabularySize
        precondition(rows.count == (k + 1) * v && tokens.count == k && q.count == k)
        // Pass 1: every row's dense target distribution.
        for i in 0...k {
            let row = UnsafeBufferPointer(rebasing: rows[(i * v)..<((i + 1) * v)])
            var maximum = -Float.infinity, argmax = -1
            for j in 0..<v {
                let x = row[j]
                if x.isNaN || x == .infinity { return nil }
                if x > maximum { maximum = x; argmax = j }
            }
            if argmax < 0 { return nil }
            let base = i * v
            if temperature == 0 {
                for j in 0..<v { probabilities[base + j] = j == argmax ? 1 : 0 }
                continue
            }
            var finite = 0, sum = 0.0
            for j in 0..<v where row[j] > -.infinity { sum += Double(row[j]); finite += 1 }
            let mean = sum / Double(finite)
            var m2 = 0.0
            for j in 0..<v where row[j] > -.infinity { let d = Double(row[j]) - mean; m2 += d * d }
            let std = finite > 1 ? (m2 / Double(finite - 1)).squareRoot() : 0
            let threshold = n.map { std == 0 ? Double(maximum) : Double(maximum) - Double($0) * std } ?? -.infinity
            var total = 0.0
            for j in 0..<v {
                let x = Double(row[j])
                let w = row[j] > -.infinity && x >= threshold ? exp((x - Double(maximum)) / Double(temperature)) : 0
                probabilities[base + j] = w
                total += w
            }
            for j in 0..<v { probabilities[base + j] /= total }
        }
        // Pass 2: the rejection loop.
        let philox = Philox4x32(seed: seed)
        var emitted: [TokenID] = [], logs: [Double] = []
        for i in 0...k {
            let base = i * v
            let position = step &+ UInt64(i)
            if i < k {
                let d = Int(tokens[i]), pd = probabilities[base + d]
                let qd = q[i] > 0 ? min(q[i], 1) : 0
                if pd > 0 && (qd == 0 || pd >= qd || philox.uniform(step: position, stream: 1) < pd / qd) {
                    emitted.append(TokenID(d))
                    logs.append(log(pd))
                    continue
                }
                // Residual for a point-mass draft: p without d, renormalized.
                probabilities[base + d] = 0
            }
            var total = 0.0
            for j in 0..<v { total += probabilities[base + j] }
            let target = philox.uniform(step: position, stream: 2) * total
            var cumulative = 0.0, chosen = -1
            for j in 0..<v where probabilities[base + j] > 0 {
                cumulative += probabilities[base + j]
                chosen = j
                if cumulative > target { break }
            }
            emitted.append(TokenID(chosen))
            // Its probability under p: the residual only removed d's mass.
            logs.append(log(probabilities[base + chosen]))
            return Outcome(accepted: i, tokens: emitted, logProbabilities: logs)
        }
        return nil
    }
}
