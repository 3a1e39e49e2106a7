import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RowPipeline {
    /// The row's logprobs at temperature 1 before truncation: `log Z` from the chunks' exp-sums
    /// (each rescaled from its chunk max to the row's) and the edited tokens; the top tokens from
    /// the chunks' top lists and the edited tokens; the sampled token's rank from the survivors
    /// (`survivors` of them in `scratch.candidates`, permuted by truncation but all there), which
    /// hold every token at or above any kept one.
    static func rowLogprobs(
        statistics: RowStatistics, sampled: Float, survivors: Int, vocab: Int, state: ProcessingState, scratch: Scratch
    ) -> TopLogprobs {
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let maximum = Double(statistics.maximum)
        var z = 0.0
        for c in 0..<chunks where scratch.chunkMaxima[c] > -.infinity {
            z += scratch.expSums[c] * exp(Double(scratch.chunkMaxima[c]) - maximum)
        }
        for k in 0..<state.editCount where scratch.edits[k].value > -.infinity {
            z += exp(Double(scratch.edits[k].value) - maximum)
        }
        let logZ = log(z)
        var result = TopLogprobs()
        result.sampledLogprob = Double(sampled) - maximum - logZ
        var rank = 0
        for j in 0..<survivors where scratch.candidates[j].logit >= sampled { rank += 1 }
        result.sampledRank = max(rank, 1)
        let keep = min(state.topLogprobs, vocab)
        guard keep > 0 else { return result }
        // The best `keep` in key order, in the candidates region's tail (free after the draw,
        // which used only the survivors at its front).
        let best = scratch.topList(vocab: vocab, keep: keep)
        var found = 0
        for c in 0..<chunks {
            for j in 0..<scratch.topCounts[c] {
                LogprobKernel.insert(
                    scratch.topTokens[c * TopLogprobs.maximumCount + j], into: best, found: &found, keep: keep)
            }
        }
        for k in 0..<state.editCount where scratch.edits[k].value > -.infinity {
            LogprobKernel.insert(
                Candidate(index: scratch.edits[k].token, logit: scratch.edits[k].value), into: best, found: &found,
                keep: keep)
        }
        for j in 0..<found { result.append(token: best[j].index, logprob: Double(best[j].logit) - maximum - logZ) }
        return result
    }
}
