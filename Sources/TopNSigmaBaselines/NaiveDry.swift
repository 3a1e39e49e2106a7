import Foundation

/// DRY (llama.cpp's `dry`) written from its definition, position by position, with no Z-algorithm
/// and no code shared with the library: the oracle of the DRY tests and the request-processing
/// fuzzer. The window is the context's last `penaltyLastN` tokens (-1: all); the last breaker
/// occurrence in it (latest start, then longest) bounds every repeat to the tokens after it; a
/// repeat ending at position `e` is the longest suffix of the window that also ends at `e`; the
/// token after `e` takes the longest such repeat; the penalty is llama.cpp's
/// `Float(Double(multiplier) · pow(Double(base), min(L − allowed, E)))` with
/// `E = Int(88.7228391 / logf(base))` when `base > 1.000001` (else no cap); one-token breakers
/// are never penalized.
public enum NaiveDry {
    /// Each penalized token's penalty (valid settings and ids assumed).
    public static func penalties(
        context: [Int32], multiplier: Float, base: Float, allowedLength: Int, penaltyLastN: Int, breakers: [[Int32]]
    ) -> [Int: Float] {
        guard multiplier != 0, penaltyLastN != 0 else { return [:] }
        let w = penaltyLastN < 0 ? context.count : min(context.count, penaltyLastN)
        let window = context.suffix(w).map(Int.init)
        guard w > allowedLength else { return [:] }
        var best: (start: Int, length: Int)?
        for breaker in breakers {
            let b = breaker.map(Int.init)
            guard b.count <= w else { continue }
            for s in 0...(w - b.count) where Array(window[s..<(s + b.count)]) == b {
                if best == nil || s > best!.start || (s == best!.start && b.count > best!.length) {
                    best = (s, b.count)
                }
            }
        }
        let limit = best.map { w - ($0.start + $0.length) } ?? w
        guard limit >= allowedLength else { return [:] }
        var longest: [Int: Int] = [:]
        for e in 0..<(w - 1) {
            var length = 0
            while length <= e && window[e - length] == window[w - 1 - length] { length += 1 }
            length = min(length, limit)
            if length >= allowedLength { longest[window[e + 1]] = max(longest[window[e + 1]] ?? -1, length) }
        }
        for breaker in breakers where breaker.count == 1 { longest[Int(breaker[0])] = nil }
        let cap = base > 1.000001 ? Int(min(Float(Int32.max), Float(88.7228391) / logf(base))) : 0
        return longest.mapValues { length in
            var exponent = length - allowedLength
            if cap > 0 && exponent > cap { exponent = cap }
            return Float(Double(multiplier) * Foundation.pow(Double(base), Double(exponent)))
        }
    }
}
