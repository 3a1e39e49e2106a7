import TopNSigma
#if canImport(Glibc)
import Glibc
#endif

/// Synthetic logits shaped like a real LM's: a Gaussian bulk (std ≈ 3.9, as SmolLM2-135M's rows)
/// plus a heavy top tail of up to 1000 tokens spaced exponentially below the maximum (cut at 6σ), with a per-row
/// spacing drawn so that Top-nσ at n = 1 keeps a log-normal number of tokens (median about 5,
/// rarely more than about 100), as the real rows do. Deterministic for a seed.
public enum SyntheticLogits {
    /// `rows × vocab` logits, row-major.
    public static func generate(rows: Int, vocab: Int, seed: UInt64 = 1) -> [Float] {
        precondition(vocab >= 2, "vocab must be at least 2")
        var out = [Float](repeating: 0, count: rows * vocab)
        let rng = Philox4x32(seed: seed)
        let sigma = 3.9
        let tailCount = min(1000, vocab / 4)
        out.withUnsafeMutableBufferPointer { buffer in
            for r in 0..<rows {
                var counter = UInt64(r) << 32
                func uniform() -> Double {
                    counter &+= 1
                    return rng.uniform(step: counter, stream: 7)
                }
                func gaussian() -> Double {
                    let u1 = max(uniform(), 0x1p-53), u2 = uniform()
                    return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
                }
                let row = UnsafeMutableBufferPointer(rebasing: buffer[(r * vocab)..<((r + 1) * vocab)])
                for i in 0..<vocab { row[i] = Float(gaussian() * sigma) }
                // The top: max at 5.5–7.5 σ above the bulk mean (above the bulk's own maximum even
                // at vocab 256000); the tail below it, exponentially spaced, cut at 6 σ.
                let top = sigma * (5.5 + 2 * uniform())
                let targetWithinOneSigma = min(150, max(1, exp(log(5) + 1.1 * gaussian())))
                let rate = -log(max(1e-9, 1 - targetWithinOneSigma / Double(tailCount)))
                for k in 0..<tailCount {
                    let index = min(vocab - 1, Int(uniform() * Double(vocab)))
                    let offset = k == 0 ? 0 : -log(max(uniform(), 1e-300)) / rate
                    if offset < 6 { row[index] = Float(top - sigma * offset) }
                }
            }
        }
        return out
    }
}
