import ArgumentParser
import COpenBLAS
import Dispatch
import Foundation
import TopNSigma
import TopNSigmaBaselines
import TopNSigmaIO

/// The methods `nsigma bench` compares.
enum BenchMethod: String, CaseIterable {
    case fused = "fused-topnsigma"
    /// The statistics pass alone (max, mean, std; no survivors, no draw): the kernel's own cost.
    case statistics = "fused-statistics"
    case fusedDispatch = "fused-topnsigma-gcd"
    /// The same logits stored as float16 / bfloat16 (half the bytes), converted in registers.
    case fusedHalf = "fused-topnsigma-f16"
    case fusedBrain = "fused-topnsigma-bf16"
    /// Sort-free top-p (Top-nσ off), the fused pipeline's answer to `sort-topp`.
    case fusedTopP = "fused-topp"
    /// Greedy (T = 0): the maximum and its id only.
    case fusedGreedy = "fused-greedy"
    /// Plain temperature sampling over the whole row (no truncation: the OpenAI API default).
    case fusedPlain = "fused-plain"
    /// top-k alone (``BenchRunner/topK``, Top-nσ off).
    case fusedTopK = "fused-topk"
    /// llama.cpp's default chain: top-k 40, top-p 0.95, min-p 0.05, T 0.8 (Top-nσ off).
    case fusedChain = "fused-chain"
    /// Every sampler of the zoo at once (``BenchMethod/zoo``): typical, ε, η, XTC, dynamic
    /// temperature and p-less.
    case fusedZoo = "fused-zoo"
    case naive = "naive-topnsigma"
    case sortTopP = "sort-topp"
    /// Speculative verification, k = ``BenchRunner/verifyK``: `batch` requests of k + 1 rows,
    /// timed with the plain sampling of the same rows (`fused-verify-plain`).
    case fusedVerify = "fused-verify"
    /// The separate-pass opponent: a softmax of each row, then the rejection loop.
    case separateVerify = "separate-verify"
    /// Every row a server-like request (``SyntheticRequests/serverLike(vocab:seed:topLogprobs:)``:
    /// grammar bitmask, 20 biased tokens, 512-token history, three penalties), processed in the
    /// fused pass.
    case fusedProcessed = "fused-processed"
    /// Top-nσ with 20 top logprobs per row, nothing else processed.
    case fusedLogprobs = "fused-logprobs"
    /// The same requests as `fused-processed`, processed as vLLM does (a copy, then separate
    /// passes: bitmask, bias, penalties), then sampled by the same fused sampler.
    case separateProcessed = "separate-processed"

    /// The request a fused sampling method sends for every row.
    func parameters(n: Float, temperature: Float, topP: Float, topK: Int) -> SamplingParameters {
        switch self {
        case .fusedTopP: SamplingParameters(temperature: temperature, nSigma: nil, seed: 7, topP: topP)
        case .fusedGreedy: SamplingParameters(temperature: 0, nSigma: nil, seed: 7)
        case .fusedPlain: SamplingParameters(temperature: temperature, nSigma: nil, seed: 7)
        case .fusedTopK: SamplingParameters(temperature: temperature, nSigma: nil, seed: 7, topK: topK)
        case .fusedChain: SamplingParameters(temperature: 0.8, nSigma: nil, seed: 7, topK: 40, topP: 0.95, minP: 0.05)
        case .fusedZoo: Self.zoo
        default: SamplingParameters(temperature: temperature, nSigma: n, seed: 7)
        }
    }

    /// typical 0.95, ε and η 3e-4, XTC 0.1 at probability 0.5, dynamic temperature ±0.5 and
    /// p-less together at T = 1 (Top-nσ off).
    static let zoo = SamplingParameters(
        temperature: 1, nSigma: nil, seed: 7, typicalP: 0.95, epsilon: 3e-4, eta: 3e-4, xtcThreshold: 0.1,
        xtcProbability: 0.5, dynamicTemperatureRange: 0.5, pLess: true)

    /// Rows read per batch entry: k + 1 for the verification methods.
    var rowsPerEntry: Int { self == .fusedVerify || self == .separateVerify ? BenchRunner.verifyK + 1 : 1 }

    /// How the method's rows are stored.
    var format: LogitFormat {
        switch self {
        case .fusedHalf: .float16
        case .fusedBrain: .bfloat16
        default: .float32
        }
    }

    /// Its role (ours, or an opponent) and the bytes per logit it reads.
    var kind: MethodKind {
        switch self {
        case .naive, .sortTopP, .separateVerify, .separateProcessed: MethodKind(role: .opponent)
        default: MethodKind(role: .fused, bytesPerLogit: format.byteCount)
        }
    }
}

/// What a timed method is: the runner groups, divides and relates results by this, never by a
/// method's name.
struct MethodKind: Codable, Equatable {
    enum Role: String, Codable {
        /// A read of the block: what the other results are ratios to.
        case floor
        /// One of this package's calls: all of them are timed in one group with the floors.
        case fused
        /// An opponent: timed alone with the floors, its `kept` read right after its own timing.
        case opponent
    }
    var role: Role
    /// Bytes per logit it reads: 2 for the 16-bit methods, whose ratio is to ``FloorMethod/read16``.
    var bytesPerLogit = 4
    /// One of the float32 floors results are divided by (the faster of floor-read and floor-sasum).
    var dividesResults = false
}

/// The floors `bench` times.
enum FloorMethod: String {
    /// A plain SIMD read of the block on a sampler's own threads (``ReadFloor``).
    case read = "floor-read"
    /// OpenBLAS's `cblas_sasum` over the block.
    case sasum = "floor-sasum"
    /// `cblas_sasum` row by row.
    case sasumRows = "floor-sasum-rows"
    /// floor-read over the same logits stored in 16 bits: the 16-bit methods' floor.
    case read16 = "floor-read-16"

    var kind: MethodKind {
        MethodKind(
            role: .floor, bytesPerLogit: self == .read16 ? 2 : 4, dividesResults: self == .read || self == .sasum)
    }
}
