import Foundation
import TopNSigma

// MARK: - The reference of the other samplers

extension Reference {
    /// The distribution a row is drawn from at `step` under every sampler of `parameters`, in
    /// float64 from the definitions in the README's semantics table and the order
    /// ``SamplingParameters`` documents, sharing no code with the library: Top-nσ, min-p,
    /// top-k, ε, η and p-less intersected (each over the whole row at temperature `T`), then
    /// typical-p, top-p and XTC each over the renormalized rest, then the temperature (dynamic
    /// from the entropy at temperature 1 of what is left). Most probable first, ties by lower id;
    /// `temperature` is the one the draw uses.
    static func extended(
        _ row: [Float], _ parameters: SamplingParameters, step: UInt64 = 0
    ) -> (
        distribution: [(token: Int, probability: Double)], temperature: Double
    ) {
        let t = Double(parameters.temperature)
        let finite = row.indices.filter { row[$0] > -.infinity }
        let maximum = finite.map { Double(row[$0]) }.max()!
        let z = finite.map { Foundation.exp((Double(row[$0]) - maximum) / t) }.reduce(0, +)
        func probability(_ i: Int) -> Double { Foundation.exp((Double(row[i]) - maximum) / t) / z }
        let entropy = finite.map { i -> Double in
            let p = probability(i)
            return p > 0 ? -p * Foundation.log(p) : 0
        }.reduce(0, +)
        func keyOrder(_ a: Int, _ b: Int) -> Bool { row[a] > row[b] || (row[a] == row[b] && a < b) }

        var kept = Reference.kept(row, n: parameters.nSigma.map(Double.init))
        if let minP = parameters.minP {
            kept = kept.filter { Foundation.exp((Double(row[$0]) - maximum) / t) >= Double(minP) }
        }
        let top = finite.max { keyOrder($1, $0) }!
        if let epsilon = parameters.epsilon {
            kept = kept.filter { Double(row[$0]) == maximum || probability($0) > Double(epsilon) }
        }
        if let eta = parameters.eta {
            let cut = min(Double(eta), Double(eta).squareRoot() * Foundation.exp(-entropy))
            kept = kept.filter { Double(row[$0]) == maximum || probability($0) > cut }
        }
        if parameters.pLess {
            let collision = finite.map { probability($0) * probability($0) }.reduce(0, +)
            kept = kept.filter { Double(row[$0]) == maximum || probability($0) >= collision }
        }
        precondition(kept.contains(top))
        if let k = parameters.topK { kept = Array(kept.sorted(by: keyOrder).prefix(k)) }

        /// The renormalized distribution of `ids` at temperature `temperature`.
        func normalized(_ ids: [Int], _ temperature: Double) -> [(token: Int, probability: Double)] {
            let m = ids.map { Double(row[$0]) }.max()!
            let weights = ids.map { Foundation.exp((Double(row[$0]) - m) / temperature) }
            let total = weights.reduce(0, +)
            return zip(ids, weights).map { ($0, $1 / total) }.sorted { keyOrder($0.0, $1.0) }
        }
        /// The shortest prefix of `ordered` whose mass reaches `mass`.
        func prefix(_ ordered: [(token: Int, probability: Double)], mass: Double) -> [Int] {
            var reached = 0.0, count = 0
            for entry in ordered {
                reached += entry.probability
                count += 1
                if reached >= mass { break }
            }
            return ordered.prefix(count).map(\.token)
        }
        if let typical = parameters.typicalP, typical < 1, kept.count > 1 {
            let q = normalized(kept, t)
            let h = q.map { $0.probability > 0 ? -$0.probability * Foundation.log($0.probability) : 0 }.reduce(0, +)
            let ordered = q.sorted { a, b in
                let da = Swift.abs(-Foundation.log(a.probability) - h),
                    db = Swift.abs(-Foundation.log(b.probability) - h)
                return da < db || (da == db && keyOrder(a.token, b.token))
            }
            kept = prefix(ordered, mass: Double(typical))
        }
        if let p = parameters.topP, p < 1, kept.count > 1 { kept = prefix(normalized(kept, t), mass: Double(p)) }
        if let threshold = parameters.xtcThreshold, kept.count > 1,
            Philox4x32(seed: parameters.seed).uniform(step: step, stream: 3) < Double(parameters.xtcProbability)
        {
            let q = normalized(kept, t)
            let above = q.filter { $0.probability >= Double(threshold) }
            if above.count >= 2 {
                kept = q.filter { $0.probability < Double(threshold) }.map(\.token) + [above.last!.token]
            }
        }
        var temperature = t
        if let range = parameters.dynamicTemperatureRange, range > 0 {
            let low = max(0, t - Double(range)), high = t + Double(range)
            temperature = low
            if kept.count > 1 {
                let q = normalized(kept, 1)
                let h = q.map { $0.probability > 0 ? -$0.probability * Foundation.log($0.probability) : 0 }.reduce(0, +)
                temperature =
                    low + (high - low)
                    * Foundation.pow(
                        h / Foundation.log(Double(kept.count)), Double(parameters.dynamicTemperatureExponent))
            }
            // Every temperature is a Float.
            temperature = Double(Float(temperature))
            if temperature == 0 { return ([(kept.min(by: keyOrder)!, 1)], 0) }
        }
        return (normalized(kept, temperature), temperature)
    }
}
