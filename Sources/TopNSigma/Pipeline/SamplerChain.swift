#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A ``SamplerOrder``'s chain over a row's gathered candidates (the whole processed row, or its
/// top `k` when the chain starts with top-k), in double precision: the candidates are put in key
/// order (logit descending, then id), so each prefix step is a count and typical-p and XTC remove
/// tokens from a key-ordered list. `scale` is `1/T` once the temperature step has run (1
/// before): each step reads the probabilities at the scale the chain has reached, as llama.cpp's
/// do. Each step keeps at least one token.
enum SamplerChain {
    /// Truncates `c[0..<n]` (ascending ids) by `order`; returns the kept count (ascending ids on
    /// exit), the temperature of the kept set's distribution and its maximum logit. `w` has room
    /// for `n`.
    static func apply(
        _ c: UnsafeMutablePointer<Candidate>, count n: Int, weights w: UnsafeMutablePointer<Double>,
        parameters: SamplingParameters, order: SamplerOrder, step: UInt64
    ) -> (count: Int, temperature: Float, maximum: Float) {
        var count = n
        // Top-k first (after steps that are off): its selection, then a sort of `k` only.
        if order.startsWithTopK(parameters), let k = parameters.topK, count > k {
            Truncation.selectFirst(k, c, count: count)
            count = k
        }
        Truncation.sortByKey(c, nil, 0, count)
        // The chain's temperature so far (1 until the temperature step) and its inverse.
        var current: Float = 1
        var scale = 1.0
        var temperature: Float? = nil
        var i = 0
        while let s = order.step(at: i), count > 0 {
            i += 1
            switch s {
            case .topNSigma:
                // At scale 0 (T = +inf) every scaled logit is 0: nothing is cut.
                guard let nSigma = parameters.nSigma, count > 1, scale > 0 else { continue }
                var mean = 0.0
                for j in 0..<count { mean += Double(c[j].logit) }
                mean /= Double(count)
                var m2 = 0.0
                for j in 0..<count {
                    let d = Double(c[j].logit) - mean
                    m2 += d * d
                }
                let std = (m2 / Double(count - 1)).squareRoot()
                // On scaled logits `s·x`: `s·x >= s·max − n·std(s·x)` is `x >= max − n·std(x)`.
                // A set of equal logits (std 0) keeps them all, whatever n (+inf included).
                let threshold = std > 0 ? Double(c[0].logit) - Double(nSigma) * std : Double(c[0].logit)
                count = prefix(c, count) { Double($0.logit) >= threshold }
            case .topK:
                if let k = parameters.topK { count = min(count, k) }
            case .minP:
                guard let minP = parameters.minP else { continue }
                let cut = Double(c[0].logit) + log(Double(minP)) / scale
                count = prefix(c, count) { Double($0.logit) >= cut }
            case .topP:
                guard let p = parameters.topP, p < 1, count > 1 else { continue }
                let z = SoftmaxWeights.compute(c, count: count, maximum: c[0].logit, temperature: current, into: w)
                let need = Double(p) * z
                var mass = 0.0, kept = count
                for j in 0..<count {
                    mass += w[j]
                    if mass >= need {
                        kept = j + 1
                        break
                    }
                }
                count = kept
            case .typicalP:
                guard let p = parameters.typicalP, p < 1, count > 1, scale > 0 else { continue }
                let z = SoftmaxWeights.compute(c, count: count, maximum: c[0].logit, temperature: current, into: w)
                let m = Double(c[0].logit)
                var weighted = 0.0
                for j in 0..<count where w[j] > 0 { weighted += w[j] * ((Double(c[j].logit) - m) * scale) }
                let order = TypicalOrder(center: weighted / z, maximum: m, temperature: 1 / scale)
                count = Truncation.nucleus(c, w, count: count, need: Double(p) * z, order: order)
                Truncation.sortByKey(c, nil, 0, count)
            case .xtc:
                guard let threshold = parameters.xtcThreshold, count > 1,
                    Philox4x32(seed: parameters.seed).uniform(step: step, stream: SamplingParameters.xtcStream)
                        < Double(parameters.xtcProbability)
                else { continue }
                let z = SoftmaxWeights.compute(c, count: count, maximum: c[0].logit, temperature: current, into: w)
                var above = 0
                while above < count && w[above] / z >= Double(threshold) { above += 1 }
                if above >= 2 {
                    // Keep the last of them (the least probable) and everything below.
                    let drop = above - 1
                    for j in drop..<count { c[j - drop] = c[j] }
                    count -= drop
                }
            case .epsilon, .eta, .pLess:
                let cut: Double, strict: Bool
                let z = SoftmaxWeights.compute(c, count: count, maximum: c[0].logit, temperature: current, into: w)
                switch s {
                case .epsilon:
                    guard let e = parameters.epsilon else { continue }
                    (cut, strict) = (Double(e), true)
                case .eta:
                    guard let e = parameters.eta else { continue }
                    var weighted = 0.0
                    for j in 0..<count where w[j] > 0 {
                        weighted += w[j] * ((Double(c[j].logit) - Double(c[0].logit)) * scale)
                    }
                    let entropy = log(z) - weighted / z
                    (cut, strict) = (min(Double(e), Double(e).squareRoot() * exp(-entropy)), true)
                default:
                    guard parameters.pLess else { continue }
                    var squares = 0.0
                    for j in 0..<count { squares += w[j] * w[j] }
                    (cut, strict) = (squares / (z * z), false)
                }
                // The maximum (and its ties) always stays.
                let top = c[0].logit
                var kept = 0
                while kept < count
                    && (c[kept].logit == top || (strict ? w[kept] / z > cut : w[kept] / z >= cut))
                {
                    kept += 1
                }
                count = max(1, kept)
            case .temperature:
                // The only temperature step: the scale is still 1 here.
                temperature = ExtendedTruncation.dynamicTemperature(
                    c, count: count, weights: w, maximum: c[0].logit, parameters: parameters)
                if temperature == 0 {
                    count = 1
                    temperature = 1
                }
                current = temperature!
                scale = 1 / Double(current)
            }
        }
        // Not listed: the temperature applies last (the scale is still 1).
        let t =
            temperature
            ?? ExtendedTruncation.dynamicTemperature(
                c, count: count, weights: w, maximum: c[0].logit, parameters: parameters)
        let maximum = c[0].logit
        var final = t
        if final == 0 {
            count = 1
            final = 1
        }
        Truncation.sortByIndex(c, count: count)
        return (count, final, maximum)
    }

    /// The length of the longest prefix of the key-ordered `c[0..<count]` whose tokens satisfy
    /// `keep` (at least 1: the maximum always stays).
    @inline(__always)
    static func prefix(_ c: UnsafePointer<Candidate>, _ count: Int, _ keep: (Candidate) -> Bool) -> Int {
        var kept = 1
        while kept < count && keep(c[kept]) { kept += 1 }
        return kept
    }
}
