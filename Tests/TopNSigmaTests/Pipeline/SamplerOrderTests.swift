import Foundation
import Testing
import TopNSigma

/// A sampler chain written from llama.cpp's description of each sampler, over a sorted array of
/// (logit, id) in float64: each step over what the steps before it kept, renormalized, at the
/// scale reached (1 before the temperature step). No code shared with the library.
enum ChainReference {
    struct Token {
        var id: Int
        var x: Double
    }

    static func kept(_ row: [Float], _ p: SamplingParameters, step: UInt64 = 0) -> [(token: Int, probability: Double)] {
        var set = row.indices.filter { row[$0] > -.infinity }.map { Token(id: $0, x: Double(row[$0])) }
        set.sort { $0.x > $1.x || ($0.x == $1.x && $0.id < $1.id) }
        var scale = 1.0
        var temperature: Double? = nil
        func probabilities() -> [Double] {
            let e = set.map { exp(($0.x - set[0].x) * scale) }
            let z = e.reduce(0, +)
            return e.map { $0 / z }
        }
        func entropy(_ q: [Double]) -> Double { -q.reduce(0) { $1 > 0 ? $0 + $1 * log($1) : $0 } }
        var steps = p.order!.steps
        if !steps.contains(.temperature) { steps.append(.temperature) }
        for s in steps {
            switch s {
            case .topNSigma:
                guard let n = p.nSigma, set.count > 1, scale > 0 else { continue }
                let mean = set.reduce(0) { $0 + $1.x } / Double(set.count)
                let std = (set.reduce(0) { $0 + ($1.x - mean) * ($1.x - mean) } / Double(set.count - 1)).squareRoot()
                let cut = std > 0 ? set[0].x - Double(n) * std : set[0].x
                set = set.enumerated().filter { $0.offset == 0 || $0.element.x >= cut }.map(\.element)
            case .topK:
                if let k = p.topK { set = Array(set.prefix(k)) }
            case .minP:
                guard let m = p.minP else { continue }
                let top = set[0].x
                set = set.enumerated().filter { $0.offset == 0 || ($0.element.x - top) * scale >= log(Double(m)) }.map(
                    \.element)
            case .topP:
                guard let q = p.topP, q < 1 else { continue }
                let probs = probabilities()
                var mass = 0.0, n = set.count
                for (j, pr) in probs.enumerated() {
                    mass += pr
                    if mass >= Double(q) {
                        n = j + 1
                        break
                    }
                }
                set = Array(set.prefix(n))
            case .typicalP:
                guard let q = p.typicalP, q < 1, set.count > 1, scale > 0 else { continue }
                let probs = probabilities()
                let h = entropy(probs)
                let order = set.indices.sorted { a, b in
                    let da = abs(-log(probs[a]) - h), db = abs(-log(probs[b]) - h)
                    return da < db || (da == db && a < b)
                }
                var mass = 0.0, keep: [Int] = []
                for j in order {
                    keep.append(j)
                    mass += probs[j]
                    if mass >= Double(q) { break }
                }
                set = keep.sorted().map { set[$0] }
            case .xtc:
                guard let threshold = p.xtcThreshold, set.count > 1,
                    Philox4x32(seed: p.seed).uniform(step: step, stream: SamplingParameters.xtcStream)
                        < Double(p.xtcProbability)
                else { continue }
                let above = probabilities().filter { $0 >= Double(threshold) }.count
                if above >= 2 { set.removeFirst(above - 1) }
            case .epsilon, .eta, .pLess:
                let probs = probabilities()
                var keep: (Double) -> Bool
                switch s {
                case .epsilon:
                    guard let e = p.epsilon else { continue }
                    keep = { $0 > Double(e) }
                case .eta:
                    guard let e = p.eta else { continue }
                    let cut = min(Double(e), Double(e).squareRoot() * exp(-entropy(probs)))
                    keep = { $0 > cut }
                default:
                    guard p.pLess else { continue }
                    let cut = probs.reduce(0) { $0 + $1 * $1 }
                    keep = { $0 >= cut }
                }
                let top = set[0].x
                set = set.indices.filter { set[$0].x == top || keep(probs[$0]) }.map { set[$0] }
            case .temperature:
                guard temperature == nil else { continue }
                var t = Double(p.temperature)
                if let range = p.dynamicTemperatureRange, range > 0 {
                    let low = max(0, t - Double(range)), high = t + Double(range)
                    if set.count > 1 {
                        let h = entropy(probabilities())
                        t =
                            low + (high - low)
                            * pow(min(1, h / log(Double(set.count))), Double(p.dynamicTemperatureExponent))
                    } else {
                        t = low
                    }
                    t = Double(Float(t))
                }
                if t == 0 {
                    set = [set[0]]
                    t = 1
                }
                temperature = t
                scale = 1 / t
            }
        }
        let probs = probabilities()
        return zip(set, probs).map { ($0.id, $1) }.sorted { $0.token < $1.token }
    }
}

@Suite struct SamplerOrderTests {
    static let orders: [String] = [
        "top_k;top_p;min_p;temperature", "top_p;top_k", "min_p;top_p", "top_p;min_p", "temperature;top_p;top_k",
        "top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature", "top_k;top_n_sigma", "typ_p;top_p", "xtc;top_k",
        "top_k;temperature;min_p;top_p", "epsilon;eta;p_less;top_k", "top_k;p_less;eta"
    ]

    static let settings: [SamplingParameters] = [
        SamplingParameters(temperature: 1, nSigma: 1, topK: 40, topP: 0.95, minP: 0.05),
        SamplingParameters(temperature: 0.7, nSigma: 1.5, topK: 200, topP: 0.5, minP: 0.01, typicalP: 0.9),
        SamplingParameters(temperature: 1.6, nSigma: nil, topK: 20, topP: 0.8, typicalP: 0.6, xtcThreshold: 0.05),
        SamplingParameters(
            temperature: 1.2, nSigma: 2, topK: 1000, topP: 0.99, minP: 0.002, epsilon: 0.0003, eta: 0.001,
            dynamicTemperatureRange: 0.5, pLess: true)
    ]

    @Test("kept sets and probabilities equal the float64 chain reference on real rows", arguments: orders)
    func againstReference(order text: String) throws {
        let order = try SamplerOrder(llamaCpp: text)
        for var parameters in Self.settings {
            parameters.order = order
            for r in [0, 3, 6] {
                let row = Fixture.row(r)
                let got = try FilteredDistribution.of(row, parameters: parameters).kept.sorted { $0.token < $1.token }
                let expected = ChainReference.kept(row, parameters)
                #expect(got.map { Int($0.token) } == expected.map { Int($0.token) }, "\(text) row \(r) \(parameters)")
                for (a, b) in zip(got, expected) { #expect(Swift.abs(a.probability - b.probability) < 1e-9) }
            }
        }
    }

    @Test("the fixed order as a chain: the same sets at T = 1, or with the temperature first")
    func fixedOrderAsChain() throws {
        for (temperature, text) in [
            (Float(1), "top_n_sigma;min_p;top_k;typ_p;top_p;xtc;temperature"),
            (0.6, "temperature;top_n_sigma;min_p;top_k;typ_p;top_p;xtc")
        ] {
            for r in 0..<Fixture.logits.rows {
                let row = Fixture.row(r)
                let fixed = SamplingParameters(
                    temperature: temperature, nSigma: 1.5, topK: 300, topP: 0.9, minP: 0.001, typicalP: 0.95,
                    xtcThreshold: 0.2)
                var chained = fixed
                chained.order = try SamplerOrder(llamaCpp: text)
                let a = try FilteredDistribution.of(row, parameters: fixed).kept.sorted { $0.token < $1.token }
                let b = try FilteredDistribution.of(row, parameters: chained).kept.sorted { $0.token < $1.token }
                #expect(a.map { Int($0.token) } == b.map { Int($0.token) }, "\(text) row \(r)")
                for (x, y) in zip(a, b) { #expect(Swift.abs(x.probability - y.probability) < 1e-12) }
            }
        }
    }

    /// llama.cpp's `test_sampler_queue` (tests/test-sampling.cpp): V logits `log(id)` (id 0 is
    /// `-inf`), and the kept set's size and smallest id after each step, by its formulas.
    static let queueCases: [(String, Int, Float, Float)] = [
        ("k", 10000, Float(1), Float(1)), ("k", 1, 1, 1), ("p", 10000, 1, 1), ("p", 10000, 0, 1),
        ("m", 10000, 1, 1), ("m", 10000, 1, 1e-12), ("k", 100, 1, 1), ("p", 10000, 0.0003, 1),
        ("p", 10000, 0.8, 1), ("m", 10000, 1, 9997.9 / 9999), ("m", 10000, 1, 0.1), ("kp", 100, 0.8, 0.1),
        ("km", 100, 0.8, 0.1), ("pk", 100, 0.8, 0.1), ("pm", 100, 0.8, 0.1), ("mk", 100, 0.8, 0.1),
        ("mp", 100, 0.8, 9997.9 / 9999), ("mp", 100, 0.8, 0.1), ("kpm", 100, 0.8, 0.1), ("kmp", 100, 0.8, 0.1),
        ("pkm", 100, 0.8, 0.1), ("pmk", 100, 0.8, 0.1), ("mkp", 100, 0.8, 0.1), ("mpk", 100, 0.8, 0.1)
    ]

    @Test("llama.cpp's sampler-queue cases", arguments: queueCases)
    func samplerQueue(sequence: String, topK: Int, topP: Float, minP: Float) throws {
        let n = 10000
        let row = (0..<n).map { logf(Float($0)) }
        var minToken = 0
        let maxToken = n - 1
        var steps: [SamplerStep] = []
        for s in sequence {
            steps.append(s == "k" ? .topK : s == "p" ? .topP : .minP)
            // llama.cpp's values, its sentinels read as it reads them.
            let parameters = SamplingParameters(
                nSigma: nil, topK: topK, topP: topP, minP: minP, order: SamplerOrder(steps)
            ).withLlamaCppSentinels()
            let kept = try FilteredDistribution.of(row, parameters: parameters).kept.map { Int($0.token) }.sorted()
            let size = kept.count
            var expectedSize: Int
            switch s {
            case "k":
                expectedSize = min(size, topK)
                minToken = max(minToken, n - topK)
            case "p":
                let divisor = n * (n - 1) / 2 - minToken * (minToken - 1) / 2
                let target = Int(ceilf(topP * Float(divisor)))
                minToken = n
                expectedSize = 0
                var sum = 0
                repeat {
                    minToken -= 1
                    expectedSize += 1
                    sum += minToken
                } while sum < target
                if minToken == 1 {
                    minToken -= 1
                    expectedSize += 1
                }
            default:
                expectedSize = max(Int(ceilf((1 - minP) * Float(n))), 1)
                expectedSize = min(expectedSize, size)
                minToken = Int(floorf(minP * Float(n)))
                minToken = max(minToken, 1)
                minToken = max(minToken, n - size)
                minToken = min(minToken, n - 1)
            }
            // llama.cpp keeps id 0 (logit -inf, probability 0) when a step reaches it; our -inf
            // logit is a masked token, never kept: the size counts one fewer there.
            let zeroKept = minToken == 0 && s != "k"
            #expect(size == expectedSize - (zeroKept ? 1 : 0), "\(sequence) after \(s): \(size) vs \(expectedSize)")
            #expect(kept.last == maxToken)
            #expect(kept.first == max(minToken, 1), "\(sequence) after \(s)")
        }
    }

    @Test("orders: parsing, aliases, the packed form, and errors")
    func parsing() throws {
        let order = try SamplerOrder(llamaCpp: "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature")
        #expect(order == SamplerOrder.llamaCppDefault)
        #expect(order.description == "top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature")
        #expect(SamplerOrder(packed: order.packed) == order)
        #expect(try SamplerOrder(llamaCpp: "Top-K, nucleus ; temp").steps == [.topK, .topP, .temperature])
        #expect(SamplerOrder([.topK, .topK]) == nil)
        #expect(
            SamplerOrder(packed: 0x22) == nil && SamplerOrder(packed: 0xF) == nil && SamplerOrder(packed: 0x201) == nil)
        #expect(throws: SamplerOrder.ParseError.unknown("mirostat")) { try SamplerOrder(llamaCpp: "top_k;mirostat") }
        #expect(throws: SamplerOrder.ParseError.repeated("top_p")) { try SamplerOrder(llamaCpp: "top_p;top_k;top_p") }
        #expect(throws: SamplerOrder.ParseError.processingAfterTruncation("dry")) {
            try SamplerOrder(llamaCpp: "top_k;dry")
        }
    }

    @Test("the pass gathers only the top k when the first step that is on is top-k")
    func passTopK() throws {
        let order = SamplerOrder.llamaCppDefault
        var p = SamplingParameters(nSigma: nil, topK: 40, topP: 0.9, order: order)
        #expect(order.startsWithTopK(p) && p.passTopK == 40)
        p.nSigma = 1
        #expect(!order.startsWithTopK(p) && p.passTopK == nil)
        p = SamplingParameters(nSigma: nil, topK: 40, order: try SamplerOrder(llamaCpp: "temperature;top_k;top_p"))
        #expect(p.passTopK == 40)
        p.order = try SamplerOrder(llamaCpp: "top_p;top_k")
        #expect(p.passTopK == 40)  // top-p is off: top-k is the first step that cuts
        p.topP = 0.5
        #expect(p.passTopK == nil && p.passNSigma == nil && p.passMinP == nil)
    }

    @Test("llama.cpp's sentinels: off values, clamps, and strict errors otherwise")
    func sentinels() throws {
        let raw = SamplingParameters(
            temperature: -1, nSigma: -1, topK: 0, topP: 1, minP: 0, typicalP: 1, xtcThreshold: 0.6,
            dynamicTemperatureRange: 0)
        #expect(raw.validationError != nil)
        let read = raw.withLlamaCppSentinels()
        #expect(read.validationError == nil)
        #expect(read.temperature == 0 && read.nSigma == nil && read.topK == nil && read.topP == nil && read.minP == nil)
        #expect(read.typicalP == nil && read.xtcThreshold == nil && read.dynamicTemperatureRange == nil)
        // llama.cpp's test_top_p(…, 0) keeps one token; test_min_p(…, 1.05) the maximum.
        let row: [Float] = [0.1, 0.2, 0.3, 0.4].map { logf($0) }
        let top = try FilteredDistribution.of(
            row, parameters: SamplingParameters(nSigma: nil, topP: 0).withLlamaCppSentinels())
        #expect(top.kept.map { Int($0.token) } == [3])
        let min = try FilteredDistribution.of(
            row, parameters: SamplingParameters(nSigma: nil, minP: 1.05).withLlamaCppSentinels())
        #expect(min.kept.map { Int($0.token) } == [3])
        #expect(SamplingParameters(temperature: .nan).withLlamaCppSentinels().validationError != nil)
    }

    @Test("draws follow the chain's distribution (chi-square) and are the same at any thread count")
    func draws() throws {
        // 4096 real logits: the chain sorts what the pass gathers (the whole row when it does not
        // start with top-k), which keeps the test's 8000 draws quick in a debug build.
        let row = Array(Fixture.row(1).prefix(4096))
        let parameters = SamplingParameters(
            temperature: 0.9, nSigma: nil, seed: 5, topK: 30, topP: 0.9, minP: 0.02,
            order: try SamplerOrder(llamaCpp: "top_p;top_k;min_p;temperature"))
        let expected = ChainReference.kept(row, parameters)
        var counts: [Int: Int] = [:]
        let draws = 8_000
        let sampler = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1)
        for step in 0..<draws {
            let token = try sampler.sample(logits: row, parameters: [parameters], steps: [UInt64(step)])[0].get().token
            counts[Int(token), default: 0] += 1
        }
        #expect(Set(counts.keys).isSubset(of: Set(expected.map { Int($0.token) })))
        let chiSquare = expected.reduce(0.0) { sum, e in
            let observed = Double(counts[e.token] ?? 0), mean = e.probability * Double(draws)
            return sum + (observed - mean) * (observed - mean) / mean
        }
        // p > 1e-3 for the degrees of freedom (normal approximation to the chi-square quantile).
        let dof = Double(expected.count - 1)
        #expect(
            chiSquare < dof + 3.1 * (2 * dof).squareRoot() + 10, "chi-square \(chiSquare), \(expected.count) tokens")
        let two = try BatchSampler(vocabularySize: row.count, maximumBatchSize: 2, threadCount: 2)
        let pair = two.sample(logits: row + row, parameters: [parameters, parameters], steps: [7, 7])
        #expect(
            try pair[0].get().token
                == (try sampler.sample(logits: row, parameters: [parameters], steps: [7])[0].get().token))
        #expect(try pair[1].get().token == pair[0].get().token)
    }
}
