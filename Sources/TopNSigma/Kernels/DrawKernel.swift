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
        let target = u * total
        var cumulative = 0.0
        var chosen = candidates.count - 1
        for i in 0..<candidates.count {
            cumulative += weights[i]
            if cumulative > target {
                chosen = i
                break
            }
        }
        // Rounding can leave `target` at the very top of the last, zero-weight candidates: walk
        // back to one that carries mass.
        if cumulative <= target {
            for i in (0..<candidates.count).reversed() where weights[i] > 0 {
                chosen = i
                break
            }
        }
        let token = candidates[chosen]
        let logProbability = (Double(token.logit) - m) / t - log(total)
        return SampledToken(token: token.index, logProbability: logProbability, candidateCount: candidates.count)
    }
}
