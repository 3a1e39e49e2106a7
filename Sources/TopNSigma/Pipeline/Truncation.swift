#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// top-k and sort-free top-p over the survivors of the threshold filters, in place and without
/// heap allocation (the standard library's sort allocates a merge buffer), O(n log n) at worst.
///
/// Order of preference ("key order"): higher logit first, then lower token id, which is the
/// sort-based reference's order (probability descending, ties by lower id) for any temperature.
package enum Truncation {
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

    /// The pivot positions' generator: SplitMix64 from a fixed seed. The positions depend on the
    /// range sizes only, never on the logits, so no row can steer them; results never depend on
    /// them either (the kept set is defined by key order alone).
    package struct PivotSampler {
        var generator = SplitMix64(seed: 0x243F_6A88_85A3_08D3)

        /// A generator at the fixed seed, as every selection starts.
        package init() {}

        /// The next pivot position in `lo..<hi`.
        @inline(__always)
        package mutating func position(_ lo: Int, _ hi: Int) -> Int {
            lo + Int(truncatingIfNeeded: generator.next() % UInt64(hi - lo))
        }
    }

    /// How many partitions a selection over `n` candidates may take before it sorts what is left:
    /// `2·⌈log2 n⌉ + 4`. Random pivots need about `log_{4/3} n` partitions at worst in practice;
    /// the cap bounds any input (a McIlroy adversary included) to O(n log n).
    @inline(__always)
    static func partitionBudget(_ n: Int) -> Int { 2 * (Int.bitWidth - n.leadingZeroBitCount) + 4 }

    /// Partitions `c[lo..<hi]` around the median (in `order`) of three candidates at
    /// pseudo-random positions; returns the pivot's final index `i`: `c[lo..<i]` precede it,
    /// `c[(i+1)..<hi]` follow it.
    static func partition<Order: CandidateOrder>(
        _ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>?, _ lo: Int, _ hi: Int,
        _ sampler: inout PivotSampler, order: Order = KeyOrder()
    ) -> Int {
        let last = hi - 1
        if hi - lo > 2 {
            let x = sampler.position(lo, hi), y = sampler.position(lo, hi), z = sampler.position(lo, hi)
            let median: Int
            if order.precedes(c[x], c[y]) {
                median = order.precedes(c[y], c[z]) ? y : order.precedes(c[x], c[z]) ? z : x
            } else {
                median = order.precedes(c[x], c[z]) ? x : order.precedes(c[y], c[z]) ? z : y
            }
            swapAt(c, w, median, last)
        }
        let pivot = c[last]
        // Branch-free Lomuto: every candidate is written to the boundary and the boundary moves
        // when it precedes the pivot. On a random row the compare is a coin flip, and the
        // branching loop mispredicted half of the time (about 3× slower on a 49152-token row).
        var i = lo
        for j in lo..<last {
            let x = c[j]
            let moves = order.precedesFlag(x, pivot)
            c[j] = c[i]
            c[i] = x
            if let w {
                let weight = w[j]
                w[j] = w[i]
                w[i] = weight
            }
            i &+= moves
        }
        swapAt(c, w, i, last)
        return i
    }

    /// Sorts `c[lo..<hi]` (and their weights) in key order, in place: heapsort, O(m log m) for
    /// any input and no allocation. The fallback once a selection has used its partition budget.
    package static func sortByKey(
        _ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>?, _ lo: Int, _ hi: Int
    ) {
        sort(c, w, lo, hi, order: KeyOrder())
    }

    /// Sorts `c[lo..<hi]` (and their weights) in `order`, in place: heapsort, O(m log m) for any
    /// input and no allocation (the standard library's sort allocates a merge buffer).
    static func sort<Order: CandidateOrder>(
        _ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>?, _ lo: Int, _ hi: Int,
        order: Order
    ) {
        let n = hi - lo
        guard n > 1 else { return }
        // A heap whose root comes last in the order; popping it to the end sorts ascending.
        func siftDown(_ start: Int, _ end: Int) {
            var root = start
            while 2 * root + 1 < end {
                var child = 2 * root + 1
                if child + 1 < end && order.precedes(c[lo + child], c[lo + child + 1]) { child += 1 }
                if !order.precedes(c[lo + root], c[lo + child]) { return }
                swapAt(c, w, lo + root, lo + child)
                root = child
            }
        }
        for start in stride(from: n / 2 - 1, through: 0, by: -1) { siftDown(start, n) }
        for end in stride(from: n - 1, to: 0, by: -1) {
            swapAt(c, w, lo, lo + end)
            siftDown(0, end)
        }
    }

    /// Rearranges `c[0..<n]` so that `c[0..<k]` are the first `k` in key order (in no particular
    /// order). Introselect: quickselect with pseudo-random median-of-three pivots, O(n) expected;
    /// after ``partitionBudget(_:)`` partitions the remaining range is heapsorted, so the worst
    /// case is O(n log n) whatever the row.
    static func selectFirst(_ k: Int, _ c: UnsafeMutablePointer<Candidate>, count n: Int) {
        var lo = 0, hi = n
        var sampler = PivotSampler()
        var budget = partitionBudget(n)
        while hi - lo > 1 {
            if budget == 0 {
                sortByKey(c, nil, lo, hi)
                return
            }
            budget -= 1
            let i = partition(c, nil, lo, hi, &sampler)
            if i == k || i == k - 1 { return }
            if i > k { hi = i } else { lo = i + 1 }
        }
    }

    /// top-p without a full sort: given the weights `w[i] ∝ p_i` of `c[0..<n]`, rearranges the
    /// candidates so that `c[0..<m]` is the smallest prefix in key order whose mass reaches
    /// `p · Σw`, and returns `m`. Weighted introselect: O(n) expected, O(n log n) at worst (the
    /// same partition budget and heapsort fallback as ``selectFirst(_:_:count:)``).
    static func nucleus(
        _ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>, count n: Int, p: Double
    ) -> Int {
        var total = 0.0
        for i in 0..<n { total += w[i] }
        return nucleus(c, w, count: n, need: p * total)
    }

    /// As ``nucleus(_:_:count:p:)`` with the mass to reach given: `c[0..<m]` becomes the smallest
    /// prefix in `order` (key order unless given) whose weights reach `need` (all `n` when none
    /// does).
    static func nucleus<Order: CandidateOrder>(
        _ c: UnsafeMutablePointer<Candidate>, _ w: UnsafeMutablePointer<Double>, count n: Int, need: Double,
        order: Order = KeyOrder()
    ) -> Int {
        var need = need
        var lo = 0, hi = n
        var sampler = PivotSampler()
        var budget = partitionBudget(n)
        while lo < hi {
            if budget == 0 {
                // Sorted, the range is scanned in order for the first prefix reaching `need`.
                sort(c, w, lo, hi, order: order)
                var mass = 0.0
                for j in lo..<hi {
                    mass += w[j]
                    if mass >= need { return j + 1 }
                }
                lo = hi
                break
            }
            budget -= 1
            let i = partition(c, w, lo, hi, &sampler, order: order)
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

    /// top-p as a cut, without reordering: for `c[0..<n]` with weights `w` (any order), the
    /// smallest prefix in key order whose weights reach `need` (at most their total) is every
    /// candidate above a value `v`, then the candidates at `v` by id. Returns `v` and the mass
    /// strictly above it.
    ///
    /// Bisection on the values, each step a vector sum of the weights at or above the probe
    /// (the logits copied once, widened, into `logits`, room for `n`), until at most 16
    /// candidates lie in the interval left; those are then ordered and walked. O(n) per step,
    /// no data-dependent branch in the sums. (At 64 the ordering, quadratic, cost more than the
    /// steps it saved: on real rows at p = 0.99 a median of 230 candidates takes two steps to
    /// reach 64, and the cut was a sixth of the row's time from cache.)
    package static func nucleusCut(
        _ c: UnsafePointer<Candidate>, _ w: UnsafePointer<Double>, count n: Int, need: Double,
        logits: UnsafeMutablePointer<Double>
    ) -> (value: Float, above: Double) {
        typealias Lanes = SoftmaxWeights.Vector
        // Eight candidates a step: their logits are the odd floats of 64 bytes.
        var low8 = SIMD8<Float>(repeating: .infinity), high8 = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        let pairs = UnsafeRawPointer(c), copy = UnsafeMutableRawPointer(logits)
        while i &+ 8 <= n {
            let x = pairs.loadUnaligned(fromByteOffset: i &* 8, as: SIMD16<Float>.self).oddHalf
            copy.storeBytes(of: SIMD8<Double>(x), toByteOffset: i &* 8, as: SIMD8<Double>.self)
            low8.replace(with: x, where: x .< low8)
            high8.replace(with: x, where: x .> high8)
            i &+= 8
        }
        var lowest = low8.min(), highest = high8.max()
        while i < n {
            let x = c[i].logit
            logits[i] = Double(x)
            lowest = min(lowest, x)
            highest = max(highest, x)
            i &+= 1
        }
        /// The weights of the candidates at or above `t`, and how many they are.
        func mass(atLeast t: Float) -> (Double, Int) {
            let limit = Lanes(repeating: Double(t))
            var sum = Lanes()
            var reached = SIMD8<Int64>()
            var i = 0
            let weights = UnsafeRawPointer(w), values = UnsafeRawPointer(logits)
            while i &+ 8 <= n {
                let x = values.loadUnaligned(fromByteOffset: i &* 8, as: Lanes.self)
                let below = x .< limit
                sum += weights.loadUnaligned(fromByteOffset: i &* 8, as: Lanes.self).replacing(with: 0, where: below)
                // A true lane is -1.
                reached &-= unsafeBitCast(.!below, to: SIMD8<Int64>.self)
                i &+= 8
            }
            var total = sum.sum(), count = Int(reached.wrappedSum())
            while i < n {
                if c[i].logit >= t {
                    total += w[i]
                    count &+= 1
                }
                i &+= 1
            }
            return (total, count)
        }
        // mass(>= low) >= need > mass(>= high); `above` is mass(>= high); `inside` the candidates
        // in [low, high).
        var low = lowest, high = highest.nextUp, above = 0.0
        var atLow = n, atHigh = 0
        while atLow - atHigh > 16 {
            let middle = low + (high - low) * 0.5
            guard middle > low && middle < high else { break }
            let (m, reached) = mass(atLeast: middle)
            if m >= need { (low, atLow) = (middle, reached) } else { (high, above, atHigh) = (middle, m, reached) }
        }
        // The values in [low, high), highest first (insertion sort on at most a few dozen; a
        // range that cannot be halved further holds one value, however many candidates).
        return withUnsafeTemporaryAllocation(of: (Float, Double).self, capacity: 64) { buffer in
            var count = 0
            // Eight at a time through the double copy: most hold none of the few in range.
            let lowLanes = Lanes(repeating: Double(low)), highLanes = Lanes(repeating: Double(high))
            var i = 0
            while i < n {
                let end = min(n, i &+ 8)
                if end &- i == 8 {
                    let x = UnsafeRawPointer(logits).loadUnaligned(fromByteOffset: i &* 8, as: Lanes.self)
                    if !any((x .>= lowLanes) .& (x .< highLanes)) {
                        i = end
                        continue
                    }
                }
                for k in i..<end where c[k].logit >= low && c[k].logit < high {
                    let x = c[k].logit
                    var merged = false
                    for j in 0..<count where buffer[j].0 == x {
                        buffer[j].1 += w[k]
                        merged = true
                        break
                    }
                    if merged { continue }
                    if count == 64 { return (low, above) }  // one value left: all at `low`
                    var j = count
                    while j > 0 && buffer[j &- 1].0 < x {
                        buffer[j] = buffer[j &- 1]
                        j &-= 1
                    }
                    buffer[j] = (x, w[k])
                    count &+= 1
                }
                i = end
            }
            var reached = above
            for j in 0..<count {
                if reached + buffer[j].1 >= need || j == count &- 1 { return (buffer[j].0, reached) }
                reached += buffer[j].1
            }
            return (low, above)
        }
    }

    /// Sorts `c[0..<n]` by token id, in place (heapsort: no allocation).
    static func sortByIndex(_ c: UnsafeMutablePointer<Candidate>, count n: Int) {
        sort(c, nil, 0, n, order: IndexOrder())
    }

    /// Applies top-k, then top-p over the renormalized distribution of what is left, to the
    /// survivors `c[0..<n]` (ascending ids on entry and on exit); returns the new count.
    package static func apply(
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
            _ = SoftmaxWeights.compute(
                c, count: count, maximum: maximum, temperature: parameters.temperature, into: weights)
            count = nucleus(c, weights, count: count, p: Double(p))
            reordered = true
        }
        if reordered { sortByIndex(c, count: count) }
        return count
    }
}

/// An order of candidates for the selections and the heapsort of ``Truncation``.
protocol CandidateOrder {
    /// Whether `a` comes strictly before `b`.
    func precedes(_ a: Candidate, _ b: Candidate) -> Bool
    /// ``precedes(_:_:)`` as 0 or 1 (the partition's boundary step).
    func precedesFlag(_ a: Candidate, _ b: Candidate) -> Int
}

extension CandidateOrder {
    @inline(__always)
    func precedesFlag(_ a: Candidate, _ b: Candidate) -> Int { precedes(a, b) ? 1 : 0 }
}

/// Key order: higher logit first, then lower token id.
struct KeyOrder: CandidateOrder {
    @inline(__always)
    func precedes(_ a: Candidate, _ b: Candidate) -> Bool { Candidate.precedes(a, b) }
    @inline(__always)
    func precedesFlag(_ a: Candidate, _ b: Candidate) -> Int { Candidate.precedesFlag(a, b) }
}

/// Token id order.
struct IndexOrder: CandidateOrder {
    @inline(__always)
    func precedes(_ a: Candidate, _ b: Candidate) -> Bool { a.index < b.index }
}
