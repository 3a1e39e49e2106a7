#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The candidate pass: temperature softmax over the survivors, inverse-CDF draw and the drawn
/// token's log-probability. Touches only the survivors, never the whole vocabulary.
enum DrawKernel {
    /// Draws from `p_i ∝ exp((x_i - maximum) / temperature)` over `candidates` (in ascending id
    /// order) with the uniform `u ∈ [0, 1)`.
    ///
    /// The weights are computed and summed in double precision by ``SoftmaxWeights`` in candidate
    /// order, so the result depends only on the candidate set, never on how it was gathered. Each
    /// weight is computed once, into `weights` (room for `candidates.count`), and reused by the
    /// cumulative scan.
    ///
    /// - Precondition: `candidates` is non-empty and contains a logit equal to `maximum`;
    ///   `temperature > 0`.
    static func draw(
        _ candidates: UnsafeBufferPointer<Candidate>, maximum: Float, temperature: Float, uniform u: Double,
        weights: UnsafeMutablePointer<Double>
    ) -> SampledToken {
        let m = Double(maximum)
        let t = Double(temperature)
        let total = SoftmaxWeights.compute(
            candidates.baseAddress!, count: candidates.count, maximum: maximum, temperature: temperature,
            into: weights)
        let token = candidates[inverseCDF(weights, count: candidates.count, total: total, uniform: u)]
        let logProbability = (Double(token.logit) - m) / t - log(total)
        return SampledToken(token: token.index, logProbability: logProbability, candidateCount: candidates.count)
    }

    /// The inverse-CDF draw over `w[0..<n]` (non-negative, positive total) with `u ∈ [0, 1)`:
    /// the first index whose cumulative weight exceeds `u · total`. Rounding can leave the
    /// target at the very top, past the last candidates whose weight is 0: the scan then walks
    /// back to the last one that carries mass. The one inverse CDF (the draw, verification's
    /// correction and bonus draws).
    static func inverseCDF(_ w: UnsafePointer<Double>, count n: Int, total: Double, uniform u: Double) -> Int {
        let target = u * total
        var cumulative = 0.0
        for j in 0..<n {
            cumulative += w[j]
            if cumulative > target { return j }
        }
        for j in (0..<n).reversed() where w[j] > 0 { return j }
        return n - 1
    }
}
