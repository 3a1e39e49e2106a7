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
