import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The float64 scalar oracle, sharing no code with the kernels: two-pass statistics in double
/// precision over the finite logits `F` (max, argmax, count and mean, then `M2` from a second
/// pass; the Bessel-corrected std `sqrt(M2 / (N − 1))`, 0 for one finite logit), and the Top-nσ
/// rule as the README's semantics table states it: keep `i` iff `x_i >= max(F) − n · std(F)`
/// (`-inf` is never kept; `n` nil keeps every finite logit), `p_i = exp(x_i / T)` renormalized
/// over the kept set. A NaN or `+inf` logit fails the row.
enum Reference {
    struct Statistics {
        var maximum: Double
        var argmax: Int
        var count: Int
        var mean: Double
        var std: Double
    }

    enum Failure: Error, Equatable {
        case nan(Int)
        case positiveInfinity(Int)
    }

    static func statistics(_ row: [Float]) -> Result<Statistics, Failure> {
        for (i, x) in row.enumerated() {
            if x.isNaN { return .failure(.nan(i)) }
            if x == .infinity { return .failure(.positiveInfinity(i)) }
        }
        var maximum = -Double.infinity, argmax = -1, count = 0, sum = 0.0
        for (i, x) in row.enumerated() where x != -.infinity {
            count += 1
            sum += Double(x)
            if Double(x) > maximum { maximum = Double(x); argmax = i }
        }
        let mean = count > 0 ? sum / Double(count) : 0
        var m2 = 0.0
        for x in row where x != -.infinity { m2 += (Double(x) - mean) * (Double(x) - mean) }
        return .success(
            Statistics(
                maximum: maximum, argmax: argmax, count: count, mean: mean,
                std: count > 1 ? (m2 / Double(count - 1)).squareRoot() : 0))
    }

    /// Token ids kept by Top-nσ, ascending.
    static func kept(_ row: [Float], n: Double?) -> [Int] {
        guard case .success(let s) = statistics(row), s.count > 0 else { return [] }
        let threshold = n.map { s.maximum - $0 * s.std } ?? -.infinity
        return row.indices.filter { row[$0] != -.infinity && Double(row[$0]) >= threshold }
    }

    /// The exact sampling distribution over the kept set: token → probability.
    static func distribution(_ row: [Float], n: Double?, temperature: Double) -> [Int: Double] {
        let ids = kept(row, n: n)
        let maximum = ids.map { Double(row[$0]) }.max()!
        var weights: [Int: Double] = [:]
        for i in ids { weights[i] = Foundation.exp((Double(row[i]) - maximum) / temperature) }
        let total = weights.values.reduce(0, +)
        return weights.mapValues { $0 / total }
    }
}

/// Upper-tail p-value of the chi-square distribution with `k` degrees of freedom (regularized
/// incomplete gamma by series / continued fraction, Numerical Recipes §6.2).
func chiSquarePValue(_ x: Double, degreesOfFreedom k: Int) -> Double {
    let a = Double(k) / 2, z = x / 2
    if z <= 0 { return 1 }
    let lnGammaA: Double = logGamma(a)
    if z < a + 1 {
        var sum = 1 / a, term = sum, ap = a
        for _ in 0..<10_000 {
            ap += 1
            term *= z / ap
            sum += term
            if abs(term) < abs(sum) * 1e-15 { break }
        }
        return 1 - sum * Foundation.exp(-z + a * Foundation.log(z) - lnGammaA)
    }
    var b = z + 1 - a, c = 1 / 1e-300, d = 1 / b, h = d
    for i in 1..<10_000 {
        let an = -Double(i) * (Double(i) - a)
        b += 2
        d = an * d + b
        if abs(d) < 1e-300 { d = 1e-300 }
        c = b + an / c
        if abs(c) < 1e-300 { c = 1e-300 }
        d = 1 / d
        let delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15 { break }
    }
    return Foundation.exp(-z + a * Foundation.log(z) - lnGammaA) * h
}

/// ln Γ(a) for a > 0 (Lanczos approximation, g = 7, n = 9; relative error below 1e-13).
func logGamma(_ a: Double) -> Double {
    let coefficients = [
        0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
        -176.61502916214059, 12.507343278686905, -0.13857109526572012,
        9.9843695780195716e-6, 1.5056327351493116e-7
    ]
    if a < 0.5 { return Foundation.log(Double.pi / Foundation.sin(Double.pi * a)) - logGamma(1 - a) }
    let x = a - 1
    var sum = coefficients[0]
    for i in 1..<9 { sum += coefficients[i] / (x + Double(i)) }
    let t = x + 7.5
    return 0.5 * Foundation.log(2 * Double.pi) + (x + 0.5) * Foundation.log(t) - t + Foundation.log(sum)
}

/// Pearson's chi-square statistic of observed counts against expected probabilities, bins with an
/// expected count below 5 pooled into one; returns (statistic, degrees of freedom).
func chiSquare(observed: [Int: Int], expected: [Int: Double], draws: Int) -> (Double, Int) {
    var statistic = 0.0, bins = 0
    var pooledObserved = 0.0, pooledExpected = 0.0
    for (token, p) in expected {
        let e = p * Double(draws), o = Double(observed[token] ?? 0)
        if e < 5 { pooledObserved += o; pooledExpected += e; continue }
        statistic += (o - e) * (o - e) / e
        bins += 1
    }
    if pooledExpected > 0 {
        statistic += (pooledObserved - pooledExpected) * (pooledObserved - pooledExpected) / pooledExpected
        bins += 1
    }
    return (statistic, max(1, bins - 1))
}
