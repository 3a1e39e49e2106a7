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
    /// The weights are summed in double precision in candidate order, so the result depends only
    /// on the candidate set, never on how it was gathered.
    ///
    /// - Precondition: `candidates` is non-empty and contains a logit equal to `maximum`;
    ///   `temperature > 0`.
    static func draw(
        _ candidates: UnsafeBufferPointer<Candidate>, maximum: Float, temperature: Float, uniform u: Double
    ) -> SampledToken {
        let m = Double(maximum)
        let t = Double(temperature)
        var total = 0.0
        for c in candidates {
            total += exp((Double(c.logit) - m) / t)
        }
        let target = u * total
        var cumulative = 0.0
        var chosen = candidates[candidates.count - 1]
        for c in candidates {
            cumulative += exp((Double(c.logit) - m) / t)
            if cumulative > target {
                chosen = c
                break
            }
        }
        // Rounding can leave `target` at the very top of the last, zero-weight candidates: walk
        // back to one that carries mass.
        if cumulative <= target {
            for c in candidates.reversed() where exp((Double(c.logit) - m) / t) > 0 {
                chosen = c
                break
            }
        }
        let logProbability = (Double(chosen.logit) - m) / t - log(total)
        return SampledToken(token: Int(chosen.index), logProbability: logProbability, candidateCount: candidates.count)
    }
}
