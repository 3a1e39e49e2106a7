#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// top-k and sort-free top-p over the survivors of the threshold filters, in place and without
/// heap allocation (the standard library's sort allocates a merge buffer).
///
/// Order of preference ("key order"): higher logit first, then lower token id, which is the
/// sort-based reference's order (probability descending, ties by lower id) for any temperature.
enum Truncation {
    /// Whether `a` comes before `b` in key order.
    @inline(__always)
    static func precedes(_ a: Candidate, _ b: Candidate) -> Bool {
        a.logit > b.logit || (a.logit == b.logit && a.index < b.index)
    }

    /// Swaps candidates `i` and `j` and, when given, their weights.
    @inline(__always)
    static func swapAt(_ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>?, _ i: Int, _ j: Int) {
        let t = c[i]
        c[i] = c[j]
        c[j] = t
        if let w {
            let u = w[i]
            w[i] = w[j]
            w[j] = u
        }
    }

    /// Partitions `c[lo..<hi]` around a median-of-three pivot in key order; returns the pivot's
    /// final index `i`: `c[lo..<i]` precede it, `c[(i+1)..<hi]` follow it.
    static func partition(_ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>?, _ lo: Int, _ hi: Int) -> Int {
        let mid = lo + (hi - lo) / 2, last = hi - 1
        if precedes(c[mid], c[lo]) { swapAt(c, w, mid, lo) }
        if precedes(c[last], c[lo]) { swapAt(c, w, last, lo) }
        if precedes(c[mid], c[last]) { swapAt(c, w, mid, last) }
        let pivot = c[last]
        var i = lo
        for j in lo..<last where precedes(c[j], pivot) {
            swapAt(c, w, i, j)
            i += 1
        }
        swapAt(c, w, i, last)
        return i
    }

    /// Rearranges `c[0..<n]` so that `c[0..<k]` are the first `k` in key order (in no particular
    /// order). Quickselect: O(n) expected.
    static func selectFirst(_ k: Int, _ c: UnsafeMutablePointer<Candidate>, count n: Int) {
        var lo = 0, hi = n
        while hi - lo > 1 {
            let i = partition(c, nil, lo, hi)
            if i == k || i == k - 1 { return }
            if i > k { hi = i } else { lo = i + 1 }
        }
    }

    /// top-p without a full sort: given the weights `w[i] ∝ p_i` of `c[0..<n]`, rearranges the
    /// candidates so that `c[0..<m]` is the smallest prefix in key order whose mass reaches
    /// `p · Σw`, and returns `m`. Weighted quickselect: O(n) expected.
    static func nucleus(_ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>, count n: Int, p: Double) -> Int {
        var total = 0.0
        for i in 0..<n { total += w[i] }
        var need = p * total
        var lo = 0, hi = n
        while lo < hi {
            let i = partition(c, w, lo, hi)
            var before = 0.0
            for j in lo..<i { before += w[j] }
            if i > lo && before >= need {
                hi = i
            } else if before + w[i] >= need {
                return i + 1
            } else {
                need -= before + w[i]
                lo = i + 1
            }
        }
        // Rounding left the mass a hair short inside the last range: take its next element.
        return min(lo + 1, n)
    }

    /// Sorts `c[0..<n]` by token id, in place (heapsort: no allocation).
    static func sortByIndex(_ c: UnsafeMutablePointer<Candidate>, count n: Int) {
        func siftDown(_ start: Int, _ end: Int) {
            var root = start
            while 2 * root + 1 < end {
                var child = 2 * root + 1
                if child + 1 < end && c[child].index < c[child + 1].index { child += 1 }
                if c[root].index >= c[child].index { return }
                swapAt(c, nil, root, child)
                root = child
            }
        }
        guard n > 1 else { return }
        for start in stride(from: n / 2 - 1, through: 0, by: -1) { siftDown(start, n) }
        for end in stride(from: n - 1, to: 0, by: -1) {
            swapAt(c, nil, 0, end)
            siftDown(0, end)
        }
    }

    /// Applies top-k, then top-p over the renormalized distribution of what is left, to the
    /// survivors `c[0..<n]` (ascending ids on entry and on exit); returns the new count.
    static func apply(
        _ c: UnsafeMutablePointer<Candidate>, count n: Int, weights: UnsafeMutablePointer<Double>,
        maximum: Float, parameters: SamplingParameters
    ) -> Int {
        var count = n
        var reordered = false
        if let k = parameters.topK, count > k {
            selectFirst(k, c, count: count)
            count = k
            reordered = true
        }
        if let p = parameters.topP, p < 1, count > 1 {
            let m = Double(maximum), t = Double(parameters.temperature)
            for i in 0..<count { weights[i] = exp((Double(c[i].logit) - m) / t) }
            count = nucleus(c, weights, count: count, p: Double(p))
            reordered = true
        }
        if reordered { sortByIndex(c, count: count) }
        return count
    }
}
