import TopNSigma
#if canImport(Glibc)
import Glibc
#endif

/// Top-p (nucleus) sampling the way HF transformers and vLLM's native path do it: full softmax at
/// temperature `T`, a full sort by probability (ties: lower token id first), cumulative sum, cut
/// at the smallest prefix whose mass reaches `p`, renormalize, draw. The benchmark's opponent and
/// the reference for a sort-free top-p.
public struct SortTopP {
    private var order: [Int32]
    private var probabilities: [Double]

    public init(vocabularySize: Int) {
        order = [Int32](repeating: 0, count: vocabularySize)
        probabilities = [Double](repeating: 0, count: vocabularySize)
    }

    /// The kept tokens (descending probability, ties by lower id) with their renormalized
    /// probabilities, or nil for a row with no finite logit or a NaN/`+inf`.
    public mutating func keptSet(
        _ row: UnsafeBufferPointer<Float>, p: Float, temperature: Float
    ) -> [(token: Int, probability: Double)]? {
        guard let kept = nucleus(row, p: p, temperature: temperature) else { return nil }
        var mass = 0.0
        for k in 0..<kept { mass += probabilities[Int(order[k])] }
        return (0..<kept).map { (Int(order[$0]), probabilities[Int(order[$0])] / mass) }
    }

    /// Samples one row with the uniform of Philox4x32-10 at (seed, step).
    public mutating func sample(
        _ row: UnsafeBufferPointer<Float>, p: Float, temperature: Float, seed: UInt64, step: UInt64
    ) -> SampledToken? {
        guard let kept = nucleus(row, p: p, temperature: temperature) else { return nil }
        var mass = 0.0
        for k in 0..<kept { mass += probabilities[Int(order[k])] }
        let target = Philox4x32(seed: seed).uniform(step: step) * mass
        var cumulative = 0.0
        var chosen = Int(order[0])
        for k in 0..<kept {
            let token = Int(order[k])
            cumulative += probabilities[token]
            chosen = token
            if cumulative > target { break }
        }
        return SampledToken(
            token: TokenID(chosen), logProbability: log(probabilities[chosen] / mass), candidateCount: kept)
    }

    /// Softmax, sort, cumulative cut; returns how many of `order` are kept.
    private mutating func nucleus(_ row: UnsafeBufferPointer<Float>, p: Float, temperature: Float) -> Int? {
        let count = row.count
        precondition(order.count >= count, "scratch holds \(order.count) logits, the row \(count)")
        var maximum = -Float.infinity
        for x in row {
            if x.isNaN || x == .infinity { return nil }
            maximum = max(maximum, x)
        }
        if maximum == -.infinity { return nil }
        var total = 0.0
        for i in 0..<count {
            let w: Double
            if temperature == 0 {
                w = row[i] == maximum ? 1 : 0
            } else {
                w = row[i] > -.infinity ? exp((Double(row[i]) - Double(maximum)) / Double(temperature)) : 0
            }
            probabilities[i] = w
            total += w
        }
        for i in 0..<count {
            probabilities[i] /= total
            order[i] = Int32(i)
        }
        probabilities.withUnsafeBufferPointer { prob in
            order.withUnsafeMutableBufferPointer { o in
                var slice = UnsafeMutableBufferPointer(rebasing: o[0..<count])
                slice.sort { a, b in
                    let pa = prob[Int(a)], pb = prob[Int(b)]
                    return pa > pb || (pa == pb && a < b)
                }
            }
        }
        var cumulative = 0.0
        var kept = 0
        while kept < count {
            cumulative += probabilities[Int(order[kept])]
            kept += 1
            if cumulative >= Double(p) { break }
        }
        return kept
    }
}
