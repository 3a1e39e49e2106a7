#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One step of a sampler chain (``SamplerOrder``), named as llama.cpp's `--samplers` names it.
public enum SamplerStep: UInt8, Sendable, CaseIterable {
    /// Top-nσ (``SamplingParameters/nSigma``), over what the steps before it kept.
    case topNSigma = 1
    /// Top-k (``SamplingParameters/topK``).
    case topK
    /// Locally typical sampling (``SamplingParameters/typicalP``).
    case typicalP
    /// Top-p (``SamplingParameters/topP``).
    case topP
    /// Min-p (``SamplingParameters/minP``), relative to the most probable token left.
    case minP
    /// XTC (``SamplingParameters/xtcThreshold``).
    case xtc
    /// The temperature, dynamic when ``SamplingParameters/dynamicTemperatureRange`` is set; the
    /// steps after it read probabilities at that temperature.
    case temperature
    /// ε-sampling (``SamplingParameters/epsilon``).
    case epsilon
    /// η-sampling (``SamplingParameters/eta``).
    case eta
    /// p-less (``SamplingParameters/pLess``).
    case pLess

    /// The step's name in a `--samplers` list: llama.cpp's (`top_n_sigma`, `top_k`, `typ_p`,
    /// `top_p`, `min_p`, `xtc`, `temperature`), and `epsilon`, `eta`, `p_less` for ours.
    public var name: String {
        switch self {
        case .topNSigma: "top_n_sigma"
        case .topK: "top_k"
        case .typicalP: "typ_p"
        case .topP: "top_p"
        case .minP: "min_p"
        case .xtc: "xtc"
        case .temperature: "temperature"
        case .epsilon: "epsilon"
        case .eta: "eta"
        case .pLess: "p_less"
        }
    }

    /// The step a name (or one of llama.cpp's aliases: `typical`, `typical_p`, `nucleus`,
    /// `temp`, `top-k` with dashes…) stands for.
    public init?(name: String) {
        let key = name.lowercased().replacingOccurrences(of: "-", with: "_")
        switch key {
        case "top_n_sigma", "nsigma", "n_sigma": self = .topNSigma
        case "top_k": self = .topK
        case "typ_p", "typical", "typical_p": self = .typicalP
        case "top_p", "nucleus": self = .topP
        case "min_p": self = .minP
        case "xtc": self = .xtc
        case "temperature", "temp": self = .temperature
        case "epsilon": self = .epsilon
        case "eta": self = .eta
        case "p_less": self = .pLess
        default: return nil
        }
    }
}

/// A per-request sampler order, as llama.cpp's `--samplers` gives one: each listed step runs
/// over what the steps before it kept, renormalized, in the listed order. A step whose parameter
/// is off (nil in ``SamplingParameters``) does nothing; a sampler that is on but not listed does
/// not run, except the temperature, which applies last when it is not listed.
///
/// Request processing (bitmask, bias, penalties, DRY) always comes first: `penalties` and `dry`
/// are accepted at the head of a list, as llama.cpp's default
/// `penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature` has them.
///
/// Stored in 64 bits (4 per step, first step lowest): a POD value like the rest of
/// ``SamplingParameters``, the C ABI's `sampler_order`.
public struct SamplerOrder: Sendable, Hashable, CustomStringConvertible {
    /// The steps, 4 bits each (`SamplerStep.rawValue`), the first in the lowest bits, ended by
    /// a 0 nibble or the 16th step.
    public let packed: UInt64

    /// llama.cpp's default chain: `top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature`.
    public static let llamaCppDefault = SamplerOrder([
        .topNSigma, .topK, .typicalP, .topP, .minP, .xtc, .temperature
    ])!

    /// The order of `steps`, or nil when one is listed twice (at most ten distinct steps).
    public init?(_ steps: [SamplerStep]) {
        var seen = Set<SamplerStep>(), packed: UInt64 = 0
        for (i, step) in steps.enumerated() {
            guard seen.insert(step).inserted else { return nil }
            packed |= UInt64(step.rawValue) << UInt64(4 * i)
        }
        self.packed = packed
    }

    /// The order packed in `packed` (the C ABI's `sampler_order`), or nil when a nibble is not a
    /// step, a step repeats, or a step follows the end.
    public init?(packed: UInt64) {
        var steps: [SamplerStep] = [], ended = false
        for i in 0..<16 {
            let code = UInt8(truncatingIfNeeded: packed >> UInt64(4 * i)) & 15
            if code == 0 {
                ended = true
                continue
            }
            guard !ended, let step = SamplerStep(rawValue: code) else { return nil }
            steps.append(step)
        }
        guard let order = SamplerOrder(steps), order.packed == packed else { return nil }
        self = order
    }

    /// Why a `--samplers` list cannot be read.
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        /// A name that is no step's.
        case unknown(String)
        /// A step listed twice.
        case repeated(String)
        /// `penalties` or `dry` after a truncation: request processing always comes first here.
        case processingAfterTruncation(String)

        /// The message, naming the entry.
        public var description: String {
            switch self {
            case .unknown(let name):
                "unknown sampler \"\(name)\" (known: \(SamplerStep.allCases.map(\.name).joined(separator: ", ")), and penalties and dry first)"
            case .repeated(let name): "sampler \"\(name)\" is listed twice"
            case .processingAfterTruncation(let name):
                "\"\(name)\" must come before every truncation: request processing runs first"
            }
        }
    }

    /// A `--samplers` list: names separated by `;` (or `,`), as llama.cpp spells them.
    public init(llamaCpp text: String) throws(ParseError) {
        var steps: [SamplerStep] = []
        for raw in text.split(whereSeparator: { $0 == ";" || $0 == "," }) {
            let name = raw.trimmingCharacters(in: .whitespaces)
            if name.isEmpty { continue }
            if ["penalties", "dry"].contains(name.lowercased()) {
                guard steps.isEmpty else { throw .processingAfterTruncation(name) }
                continue
            }
            guard let step = SamplerStep(name: name) else { throw .unknown(name) }
            guard !steps.contains(step) else { throw .repeated(name) }
            steps.append(step)
        }
        self = SamplerOrder(steps)!
    }

    /// The steps in order.
    public var steps: [SamplerStep] {
        var steps: [SamplerStep] = []
        for i in 0..<16 {
            guard let step = step(at: i) else { break }
            steps.append(step)
        }
        return steps
    }

    /// Step `i`, or nil past the last.
    @inline(__always)
    func step(at i: Int) -> SamplerStep? {
        SamplerStep(rawValue: UInt8(truncatingIfNeeded: packed >> UInt64(4 * i)) & 15)
    }

    /// Whether the first step that changes the set under `parameters` is top-k: the steps before
    /// it are off (their parameter unset) or the temperature (top-k reads no probability). The
    /// fused pass may then gather only the row's top `k`, as it does without an order.
    @inlinable
    package func startsWithTopK(_ parameters: SamplingParameters) -> Bool {
        var rest = packed
        while rest != 0 {
            switch SamplerStep(rawValue: UInt8(truncatingIfNeeded: rest & 15)) {
            case .topK: return parameters.topK != nil
            case .temperature: break
            case .topNSigma: if parameters.nSigma != nil { return false }
            case .typicalP: if parameters.typicalP != nil { return false }
            case .topP: if parameters.topP != nil { return false }
            case .minP: if parameters.minP != nil { return false }
            case .xtc: if parameters.xtcThreshold != nil { return false }
            case .epsilon: if parameters.epsilon != nil { return false }
            case .eta: if parameters.eta != nil { return false }
            case .pLess: if parameters.pLess { return false }
            case nil: return false
            }
            rest >>= 4
        }
        return false
    }

    /// The list as `--samplers` spells it.
    public var description: String { steps.map(\.name).joined(separator: ";") }
}

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
