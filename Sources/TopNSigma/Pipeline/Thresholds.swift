import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The threshold rules in one place: Top-nσ's `max - n·std`, min-p's `max + T·ln(minP)`, their
// combination, the exact Float compare threshold, the running maximum a split greedy row's tasks
// share, and the error range that decides when a row's moments must be recomputed in double
// precision.

extension RowPipeline {
    /// The Top-nσ threshold `max - n·std` for a row's statistics, in double precision (`-inf`
    /// for a row without finite logits).
    @inlinable
    package static func topNSigmaThreshold(for statistics: RowStatistics, n: Double) -> Double {
        topNSigmaThreshold(maximum: Double(statistics.maximum), n: n, std: statistics.standardDeviation)
    }

    /// `max - n·std`, with `n·std` taken as 0 when `std` is 0 whatever `n` (`+inf` included, where
    /// IEEE gives `∞·0 = NaN`): a row with std 0 keeps exactly its max-tied tokens, and its
    /// threshold is its maximum (`-inf` for a row without finite logits).
    @inlinable
    package static func topNSigmaThreshold(maximum: Double, n: Double, std: Double) -> Double {
        std == 0 ? maximum : maximum - n * std
    }

    /// The smallest `Float` `t` such that `Double(t) >= threshold`, so that the Float comparison
    /// `x >= t` decides exactly `Double(x) >= threshold`. Clamped below at
    /// `-Float.greatestFiniteMagnitude` so that `-inf` is never kept.
    @inlinable
    package static func floatThreshold(_ threshold: Double) -> Float {
        if !(threshold > -Double(Float.greatestFiniteMagnitude)) { return -Float.greatestFiniteMagnitude }
        if threshold > Double(Float.greatestFiniteMagnitude) { return .infinity }
        var t = Float(threshold)
        if Double(t) < threshold { t = t.nextUp }
        return t
    }
}

extension RowPipeline {
    /// Min-p's cut `max + T·ln(minP)`: a logit is kept iff its probability at temperature `T` is
    /// at least `minP` times the most probable's.
    @inline(__always)
    static func minPThreshold(maximum: Float, _ temperature: Float, _ minP: Float) -> Double {
        Double(maximum) + Double(temperature) * log(Double(minP))
    }

    /// The combined Top-nσ / min-p threshold in double precision (`-inf` when both are off).
    package static func logitThreshold(_ statistics: RowStatistics, _ parameters: SamplingParameters) -> Double {
        thresholdRange(statistics, parameters, m2Error: 0).lower
    }

    /// The range the float64 definition's threshold lies in, given a bound `m2Error` on the
    /// error of `statistics.sumOfSquaredDeviations` (the maximum is exact): Top-nσ's
    /// `max - n·std` with `std` anywhere in its error interval, then the larger of that and
    /// min-p's exact `max + T·ln(minP)`.
    static func thresholdRange(
        _ statistics: RowStatistics, _ parameters: SamplingParameters, m2Error: Double
    ) -> (lower: Double, upper: Double) {
        var lower = -Double.infinity, upper = -Double.infinity
        if let n = parameters.passNSigma {
            let maximum = Double(statistics.maximum), n = Double(n)
            // n = 0: the threshold is the maximum itself, exact whatever the moments' error.
            if n > 0 && m2Error > 0 && statistics.finiteCount > 1 {
                let m2 = statistics.sumOfSquaredDeviations, denominator = Double(statistics.finiteCount - 1)
                let high = ((m2 + m2Error) / denominator).squareRoot()
                let low = (max(0, m2 - m2Error) / denominator).squareRoot()
                // Two ulps of slack for the double roundings of this very computation.
                lower = topNSigmaThreshold(maximum: maximum, n: n, std: high).nextDown.nextDown
                upper = topNSigmaThreshold(maximum: maximum, n: n, std: low).nextUp.nextUp
            } else {
                lower = topNSigmaThreshold(for: statistics, n: n)
                upper = lower
            }
        }
        if let minP = parameters.passMinP {
            let t = minPThreshold(maximum: statistics.maximum, parameters.temperature, minP)
            lower = max(lower, t)
            upper = max(upper, t)
        }
        return (lower, upper)
    }

    /// The strictest threshold published so far by the tasks of one split row (a greedy row with
    /// logprobs: the running maximum whose ties it collects during the pass): a
    /// Float in an atomic word, kept in an order-preserving integer encoding so that "raise to"
    /// is an integer maximum.
    struct SharedThreshold {
        let word: UnsafeMutablePointer<Atomic<UInt32>>

        /// Resets to the loosest threshold.
        func reset() { word.pointee.store(OrderedKey.key(-.greatestFiniteMagnitude), ordering: .relaxed) }

        /// Publishes `threshold` if it is stricter than the shared one; returns the stricter.
        @inline(__always)
        func raise(to threshold: Float) -> Float {
            let key = OrderedKey.key(threshold)
            var current = word.pointee.load(ordering: .relaxed)
            while key > current {
                let (exchanged, original) = word.pointee.compareExchange(
                    expected: current, desired: key, ordering: .relaxed)
                if exchanged { return threshold }
                current = original
            }
            return OrderedKey.value(current)
        }
    }
}
