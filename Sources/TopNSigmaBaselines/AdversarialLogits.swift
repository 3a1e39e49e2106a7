import TopNSigma
/// Rows built to defeat selection algorithms: the worst-case inputs of top-k / top-p selection,
/// for correctness tests and worst-case benchmarks (never a fast path).
///
/// Every row has distinct finite logits, so the kept set of any truncation is unique.
public enum AdversarialLogits {
    /// Logits that rise by token id to the middle of the row, then fall: `min(i, V-1-i) · step`.
    /// A median-of-three pivot of a range of this row (first, middle, last) is never near its
    /// median, which made the former quickselect quadratic. Ids `i` and `V-1-i` tie: key order
    /// takes the lower id first.
    public static func organPipe(vocab: Int, step: Float = 1e-4) -> [Float] {
        (0..<vocab).map { Float(min($0, vocab - 1 - $0)) * step }
    }

    /// `i · step` (ascending ids hold ascending logits) or its reverse.
    public static func sorted(vocab: Int, ascending: Bool, step: Float = 1e-4) -> [Float] {
        (0..<vocab).map { Float(ascending ? $0 : vocab - 1 - $0) * step }
    }

    /// The pivot rule of the selection an adversarial row is built against.
    public enum Pivot: Sendable, CaseIterable {
        /// The former kernel's: median of three of the range's first, middle and last candidates.
        case firstMiddleLast
        /// The current kernel's (`Truncation.partition`): median of three at positions drawn
        /// from SplitMix64 with a fixed seed. Against it the adversary exhausts the partition
        /// budget (`2·⌈log2 V⌉ + 4`), so the kernel finishes with its heapsort fallback.
        case sampled
    }

    /// McIlroy's killer adversary ("A Killer Adversary for Quicksort", Software: Practice and
    /// Experience 29(4), 1999) run against a top-k quickselect: in place, Lomuto partition, over
    /// the survivors in ascending id order, selecting the `k` first in key order (higher logit,
    /// then lower id), with the given pivot rule.
    ///
    /// The adversary answers the algorithm's comparisons lazily: items start as "gas" (not yet
    /// valued); a comparison of two gas items freezes one, the likely pivot, at the next lowest
    /// rank, so the pivot always turns out to be an extreme of its range. The ranks, as logits
    /// (`(V - 1 - rank) · step`, rank 0 highest), form a row on which a quickselect with that
    /// pivot rule and no depth limit does Θ(V²) comparisons (the former kernel: about 2 s for
    /// V = 128256, k = 64128). Top-p over the same row takes the same partitions while its
    /// target mass lies beyond them (flat rows: small `step`, large `p`).
    ///
    /// - Returns: the row, and how many partitions the simulated selection made (for `.sampled`,
    ///   the simulation stops at the kernel's partition budget).
    /// - Complexity: `.firstMiddleLast` runs the quadratic algorithm once, Θ(V²) time (a few
    ///   seconds for V = 128256); `.sampled` stops after O(log V) partitions.
    public static func mcIlroy(
        vocab n: Int, k: Int, pivot: Pivot = .firstMiddleLast, step: Float = 1e-4
    ) -> (row: [Float], partitions: Int) {
        precondition(n >= 1 && k >= 1 && k <= n, "need 1 <= k <= vocab")
        let gas = Int.max
        var value = [Int](repeating: gas, count: n)
        var solid = 0
        var candidate = -1
        // Whether item x precedes item y (a lower value precedes), answered by the adversary.
        func precedes(_ x: Int, _ y: Int) -> Bool {
            if value[x] == gas && value[y] == gas {
                if x == candidate { value[x] = solid } else { value[y] = solid }
                solid += 1
            }
            if value[x] == gas {
                candidate = x
            } else if value[y] == gas {
                candidate = y
            }
            return value[x] < value[y]
        }
        var a = Array(0..<n)
        // The library's own pivot generator, replayed: the adversary answers its picks.
        var sampler = Truncation.PivotSampler()
        func position(_ lo: Int, _ hi: Int) -> Int { sampler.position(lo, hi) }
        func partition(_ lo: Int, _ hi: Int) -> Int {
            let last = hi - 1
            switch pivot {
            case .firstMiddleLast:
                let mid = lo + (hi - lo) / 2
                if precedes(a[mid], a[lo]) { a.swapAt(mid, lo) }
                if precedes(a[last], a[lo]) { a.swapAt(last, lo) }
                if precedes(a[mid], a[last]) { a.swapAt(mid, last) }
            case .sampled:
                if hi - lo > 2 {
                    let x = position(lo, hi), y = position(lo, hi), z = position(lo, hi)
                    let median: Int
                    if precedes(a[x], a[y]) {
                        median = precedes(a[y], a[z]) ? y : precedes(a[x], a[z]) ? z : x
                    } else {
                        median = precedes(a[x], a[z]) ? x : precedes(a[y], a[z]) ? z : y
                    }
                    a.swapAt(median, last)
                }
            }
            let pivot = a[last]
            var i = lo
            for j in lo..<last where precedes(a[j], pivot) {
                a.swapAt(i, j)
                i += 1
            }
            a.swapAt(i, last)
            return i
        }
        let budget = pivot == .sampled ? 2 * (Int.bitWidth - n.leadingZeroBitCount) + 4 : Int.max
        var lo = 0, hi = n, partitions = 0
        while hi - lo > 1 && partitions < budget {
            let i = partition(lo, hi)
            partitions += 1
            if i == k || i == k - 1 { break }
            if i > k { hi = i } else { lo = i + 1 }
        }
        // Items never frozen come after every frozen one, in id order.
        for x in 0..<n where value[x] == gas {
            value[x] = solid
            solid += 1
        }
        return (value.map { Float(n - 1 - $0) * step }, partitions)
    }
}
