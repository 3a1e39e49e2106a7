import TopNSigma

/// Request processing the way vLLM's sampler applies it: separate full-row passes over a copy of
/// the logits (copy, bitmask, bias, penalties with full-vocabulary count and mask tensors), after
/// which the processed copy is sampled. The benchmark's opponent to the fused processing, and a
/// second implementation of the same definitions.
public struct SeparateProcessing {
    /// The processed copy of a row.
    public private(set) var processed: [Float]
    /// Output occurrences and the prompt-or-output mask, one entry per token (vLLM's
    /// `output_bin_counts` and `prompt_mask | output_mask`).
    private var counts: [Int32]
    private var seen: [Bool]

    /// Scratch for rows of `vocabularySize` logits.
    public init(vocabularySize: Int) {
        processed = [Float](repeating: 0, count: vocabularySize)
        counts = [Int32](repeating: 0, count: vocabularySize)
        seen = [Bool](repeating: false, count: vocabularySize)
    }

    /// Writes the processed row into ``processed`` (masked tokens `-inf`). Ids must be in range.
    public mutating func apply(_ row: UnsafeBufferPointer<Float>, _ q: RequestProcessing) {
        let v = row.count
        processed.withUnsafeMutableBufferPointer { out in
            // Pass 1: the copy.
            for i in 0..<v { out[i] = row[i] }
            // Pass 2: the bitmask (unpacked over the whole row).
            if let words = q.allowedTokens {
                for i in 0..<v where (words[i >> 5] >> UInt32(i & 31)) & 1 == 0 { out[i] = -.infinity }
            }
            // Sparse: the bias (a masked token stays masked: -inf + bias = -inf).
            for entry in q.logitBias { out[Int(entry.token)] += entry.bias }
            guard q.repetitionPenalty != 1 || q.frequencyPenalty != 0 || q.presencePenalty != 0 else { return }
            counts.withUnsafeMutableBufferPointer { counts in
                seen.withUnsafeMutableBufferPointer { seen in
                    // Pass 3: the bin counts and masks over the vocabulary.
                    for i in 0..<v {
                        counts[i] = 0
                        seen[i] = false
                    }
                    for t in q.outputTokens {
                        counts[Int(t)] += 1
                        seen[Int(t)] = true
                    }
                    if q.repetitionPenalty != 1 { for t in q.promptTokens { seen[Int(t)] = true } }
                    // Pass 4: repetition; pass 5: frequency and presence.
                    let r = q.repetitionPenalty
                    if r != 1 {
                        for i in 0..<v where seen[i] { out[i] = out[i] > 0 ? out[i] / r : out[i] * r }
                    }
                    let f = q.frequencyPenalty, p = q.presencePenalty
                    for i in 0..<v where counts[i] > 0 {
                        out[i] -= f * Float(counts[i])
                        out[i] -= p
                    }
                }
            }
        }
    }
}

/// Requests shaped like a structured-output server's: a grammar-like bitmask (runs of allowed and
/// masked words, about half the tokens allowed), 20 biased tokens, and a 512-token history
/// (256 prompt, 256 output) with all three penalties. Deterministic for a seed.
public enum SyntheticRequests {
    /// One request over `vocab` tokens.
    public static func serverLike(vocab: Int, seed: UInt64, topLogprobs: Int? = nil) -> RequestProcessing {
        var generator = SplitMix64(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        func next() -> UInt64 { generator.next() }
        let wordCount = (vocab + 31) / 32
        var words = [UInt32](repeating: 0, count: wordCount)
        var w = 0, allowed = true
        while w < wordCount {
            let run = 1 + Int(next() % 64)
            for k in w..<min(wordCount, w + run) { words[k] = allowed ? ~0 : 0 }
            if w + run < wordCount { words[w + run - 1] = UInt32(truncatingIfNeeded: next()) }
            w += run
            allowed.toggle()
        }
        let token = { Int32(truncatingIfNeeded: next() % UInt64(vocab)) }
        return RequestProcessing(
            allowedTokens: words,
            logitBias: (0..<20).map { _ in LogitBias(token: token(), bias: Float(Int(next() % 11)) - 5) },
            promptTokens: (0..<256).map { _ in token() }, outputTokens: (0..<256).map { _ in token() },
            repetitionPenalty: 1.1, frequencyPenalty: 0.3, presencePenalty: 0.2, topLogprobs: topLogprobs)
    }
}
