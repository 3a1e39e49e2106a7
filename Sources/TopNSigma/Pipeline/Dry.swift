import Foundation

/// DRY (llama.cpp's `llama_sampler_dry_apply`, p-e-w's "don't repeat yourself") as edits of the
/// row: the tokens that would extend a repeat get their penalty in ``Edit/dry``.
///
/// The context is the prompt followed by the output; its last `W` tokens are the window. For
/// each earlier end position, the repeat length is how many of the window's last tokens also end
/// there (a reverse Z-algorithm, linear in `W`), capped by the last sequence breaker; the token
/// right after that position would extend the repeat. The lengths are only needed up to the cap
/// where the penalty stops growing, so the Z-values kept are `min(W, cap)` integers.
enum Dry {
    /// The context's token at window position `j` (oldest first).
    @inline(__always)
    static func token(
        _ j: Int, start: Int, prompt: UnsafeBufferPointer<Int32>, output: UnsafeBufferPointer<Int32>
    ) -> Int32 {
        let i = start + j
        return i < prompt.count ? prompt[i] : output[i - prompt.count]
    }

    /// `Int(88.7228391 / logf(base))` when `base > 1.000001`, else 0 (no cap): llama.cpp's
    /// overflow clamp of the exponent, in its Float arithmetic.
    static func maximumExponent(base: Float) -> Int {
        guard base > 1.000001 else { return 0 }
        let e = Float(88.7228391) / Foundation.log(base)
        return e < Float(Int32.max) ? Int(e) : Int(Int32.max)
    }

    /// Adds the DRY edits of one row (the context's tokens and the breakers already checked to be
    /// valid ids): each penalized token's edit (through `slot`) gets ``Edit/dry``. `heads` is
    /// `vocab / 32 + 1` free words; `free` is `freeCount` free `Int32`s for the Z-values (a larger
    /// need allocates). Returns a breaker's error.
    static func addEdits(
        settings: DrySettings, breakers: BreakerList, prompt: UnsafeBufferPointer<Int32>,
        output: UnsafeBufferPointer<Int32>, vocab: Int, heads: UnsafeMutablePointer<UInt32>,
        free: UnsafeMutablePointer<Int32>, freeCount: Int, edits: UnsafeMutablePointer<Edit>,
        slot: (Int32) -> Int
    ) -> RowError? {
        // Every breaker is checked, whatever the context.
        if let error = breakers.error(vocab: vocab) { return error }

        let n = prompt.count + output.count
        let w = settings.penaltyLastN < 0 ? n : min(n, settings.penaltyLastN)
        let allowed = settings.allowedLength
        guard w > allowed else { return nil }
        let start = n - w
        // rat(i): the i-th token from the end of the window.
        @inline(__always) func rat(_ i: Int) -> Int32 { token(w - 1 - i, start: start, prompt: prompt, output: output) }

        // Step 1: the last breaker in the window bounds the repeats to the tokens after it.
        let words = vocab / 32 + 1
        heads.update(repeating: 0, count: words)
        _ = breakers.forEach { b in
            heads[Int(b[0]) >> 5] |= 1 << UInt32(b[0] & 31)
            return true
        }
        var limit = w
        for i in 0..<w {
            let t = rat(i)
            guard heads[Int(t) >> 5] >> UInt32(t & 31) & 1 != 0 else { continue }
            var longest = -1
            _ = breakers.forEach { b in
                let tail = b.count - 1
                if b[0] == t && tail > longest && tail <= i {
                    var match = true
                    for o in 0..<tail where b[1 + o] != rat(i - o - 1) {
                        match = false
                        break
                    }
                    if match { longest = tail }
                }
                return true
            }
            if longest >= 0 {
                limit = i - longest
                break
            }
        }
        guard limit >= allowed else { return nil }

        // Step 2: the repeat lengths, capped where the penalty stops changing: at `allowed` for a
        // base of 1 (every length gives the multiplier), at `allowed + E` under the exponent cap.
        var cap = limit
        let maxExponent = maximumExponent(base: settings.base)
        if settings.base == 1 {
            cap = min(cap, allowed)
        } else if maxExponent > 0 {
            cap = min(cap, allowed + maxExponent)
        }
        let stored = min(cap, w)
        let z = stored <= freeCount ? free : UnsafeMutablePointer<Int32>.allocate(capacity: stored)
        defer { if z != free { z.deallocate() } }
        var lt = 0, rt = 0
        for k in 1..<w {
            var length: Int
            if k > rt {
                length = 0
                while length < cap && length + k < w && rat(length) == rat(length + k) { length += 1 }
                if length > 0 { (lt, rt) = (k, k + length - 1) }
            } else {
                // Inside the box [lt, rt]: position k - lt (< cap) repeats here.
                let mirrored = Int(z[k - lt]), right = rt - k + 1
                if mirrored < right {
                    length = mirrored
                } else {
                    var i = rt + 1
                    while i - k < cap && i < w && rat(i) == rat(i - k) { i += 1 }
                    length = i - k
                    (lt, rt) = (k, i - 1)
                }
            }
            if k < stored { z[k] = Int32(truncatingIfNeeded: length) }
            // Step 3: the token after this repeat would extend it; keep each token's longest.
            if length >= allowed {
                let e = slot(rat(k - 1))
                if Edit.dryLength(edits[e].dry) < length + 1 { edits[e].dry = Edit.dryMarker(length + 1) }
            }
        }

        // Step 4: a single-token breaker is never penalized; the others get their penalty.
        _ = breakers.forEach { b in
            if b.count == 1 { edits[slot(b[0])].dry = Edit.dryMarker(0) }
            return true
        }
        return nil
    }

    /// Turns the lengths that ``addEdits`` left in `edits[0..<count]` into llama.cpp's penalties:
    /// `multiplier · base^min(length − allowed, E)` in double (`std::pow(float, int)`), rounded
    /// to Float (``maximumExponent(base:)`` is `E`, 0 for none).
    static func finish(edits: UnsafeMutablePointer<Edit>, count: Int, settings: DrySettings) {
        let cap = maximumExponent(base: settings.base)
        for k in 0..<count {
            let marked = Edit.dryLength(edits[k].dry)
            guard marked > 0 else {
                edits[k].dry = 0
                continue
            }
            var exponent = marked - 1 - settings.allowedLength
            if cap > 0 && exponent > cap { exponent = cap }
            edits[k].dry = Float(
                Double(settings.multiplier) * Foundation.pow(Double(settings.base), Double(exponent)))
        }
    }
}
