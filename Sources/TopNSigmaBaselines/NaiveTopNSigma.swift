import TopNSigma
#if canImport(Glibc)
import Glibc
#endif

/// Top-nσ as one would write the paper's two lines by hand: scalar code in separate passes over
/// the whole row (max, mean, variance, write `-inf` below the threshold, full softmax, cumulative
/// draw). The benchmark's opponent, never a fast path. Same semantics as ``BatchSampler``
/// (finite-only statistics, Bessel std, `>=`, T = 0 greedy), same uniform for the same
/// (seed, step), so it draws the same tokens up to float rounding at CDF boundaries.
public struct NaiveTopNSigma {
    /// Scratch for the masked row and its probabilities (kept across rows, as a careful
    /// hand-written loop would).
    private var masked: [Float]

    public init(vocabularySize: Int) {
        masked = [Float](repeating: 0, count: vocabularySize)
    }

    /// Samples one row.
    /// - Returns: the token, or nil when the row holds no finite logit or a NaN/`+inf`.
    public mutating func sample(
        _ row: UnsafeBufferPointer<Float>, n: Float?, temperature: Float, seed: UInt64, step: UInt64
    ) -> SampledToken? {
        let count = row.count
        precondition(masked.count >= count, "scratch holds \(masked.count) logits, the row \(count)")
        // Pass 1: max (and validity).
        var maximum = -Float.infinity
        var argmax = -1
        for i in 0..<count {
            let x = row[i]
            if x.isNaN || x == .infinity { return nil }
            if x > maximum { maximum = x; argmax = i }
        }
        if argmax < 0 { return nil }
        if temperature == 0 { return SampledToken(token: TokenID(argmax), logProbability: 0, candidateCount: 1) }
        // Pass 2: mean. Pass 3: variance.
        var finite = 0
        var sum = 0.0
        for i in 0..<count where row[i] > -.infinity { sum += Double(row[i]); finite += 1 }
        let mean = sum / Double(finite)
        var m2 = 0.0
        for i in 0..<count where row[i] > -.infinity { let d = Double(row[i]) - mean; m2 += d * d }
        let std = finite > 1 ? (m2 / Double(finite - 1)).squareRoot() : 0
        let threshold = n.map { std == 0 ? Double(maximum) : Double(maximum) - Double($0) * std } ?? -.infinity
        // Pass 4: mask. Pass 5: softmax over the whole row. Pass 6: cumulative draw.
        var kept = 0
        for i in 0..<count {
            if Double(row[i]) >= threshold && row[i] > -.infinity {
                masked[i] = row[i]; kept += 1
            } else {
                masked[i] = -.infinity
            }
        }
        var total = 0.0
        for i in 0..<count {
            let w = exp((Double(masked[i]) - Double(maximum)) / Double(temperature))
            masked[i] = Float(w)
            total += w
        }
        let target = Philox4x32(seed: seed).uniform(step: step) * total
        var cumulative = 0.0
        var chosen = argmax
        for i in 0..<count where masked[i] > 0 {
            cumulative += Double(masked[i])
            chosen = i
            if cumulative > target { break }
        }
        let logProbability = (Double(row[chosen]) - Double(maximum)) / Double(temperature) - log(total)
        return SampledToken(token: TokenID(chosen), logProbability: logProbability, candidateCount: kept)
    }
}
