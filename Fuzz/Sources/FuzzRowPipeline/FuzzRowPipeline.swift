#if canImport(Glibc)
import Glibc
#endif
import FuzzSupport
import TopNSigma

// libFuzzer target: one row with arbitrary logits and parameters through the public API
// (FilteredDistribution.of with Top-nσ alone and with every parameter, BatchSampler with one row), checked against a
// float64 oracle written here from the README's semantics, sharing no code with the library.
//
// Input layout: 8 parameter bytes (temperature, n, top-k, top-p, min-p, logit scale, logit
// offset, repeat count), each picking a value from a table of ordinary and hostile values or
// reading a raw value from the following bytes; then the row pattern, one byte per logit
// (0–239: (b − 120) · scale + offset; 240 −inf; 241 NaN; 242 +inf; 243–255: the next 4 bytes as
// raw Float bits), tiled `repeat` times so rows cross the kernel's 4096-logit chunks.
//
// Checked strictly: the error (parameter errors first, then the first NaN / +inf, then no finite
// logit), max, argmax, finite count, mean and std (within the library's documented error bound:
// the statistics come from Float lane sums), the kept sets of all three APIs (exactly the float64
// definition's: only logits within 1e-12 relative of the threshold may go either way, the last
// bits of two double-precision summation orders), the distribution's probabilities and order, the
// sampled token's membership, candidate count and log-probability. The reported threshold may lie
// n times the std's bound from the float64 one, and the top-p cut may fall on either side of a
// cumulative mass within 1e-9 of p.
//
// Then the same row and values as a sampler chain (an order, typical-p, XTC and p-less the
// input's size picks, llama.cpp's sentinels on every other size): the filter and the draw must
// agree (``verifyChain``); the chain's values have their own float64 oracle in the unit tests.

func pick<T>(_ table: [T], _ b: UInt8, raw: () -> T) -> T {
    Int(b) < table.count ? table[Int(b)] : raw()
}

/// A reusable one-thread sampler for the current vocabulary (creating one per input would
/// dominate the run time).
nonisolated(unsafe) var cachedSampler: BatchSampler?

struct Failure: Error, CustomStringConvertible {
    var description: String
}

/// Key order: higher logit first, then lower id.
func precedes(_ row: [Float], _ a: Int, _ b: Int) -> Bool {
    row[a] > row[b] || (row[a] == row[b] && a < b)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRowPipeline(_ start: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = Reader(bytes: Array(UnsafeBufferPointer(start: start, count: size)))
    let temperature: Float = pick(
        [1, 0, 0.5, 2, 0.01, 100, 1e-30, 1e30, .infinity, -1, .nan, -0.0, 0.7, 1.5], input.byte()
    ) { input.float() }
    let nSigma: Float? = pick([1, nil, 0, 0.5, 2, 3, 1e-7, 1e30, .infinity, -1, .nan, 1.5], input.byte()) {
        input.float()
    }
    let topK: Int? = pick([nil, 1, 2, 3, 10, 100, Int.max, 0, -1, 5000], input.byte()) {
        Int(Int32(bitPattern: input.uint32()))
    }
    let topP: Float? = pick([nil, 1, 0.9, 0.5, 1e-9, 0.999999, 0, 1.0000001, .nan, 0.95, 0.1], input.byte()) {
        input.float()
    }
    let minP: Float? = pick([nil, 0, 1, 0.1, 0.5, 1e-30, -0.1, 1.5, .nan, 0.05, 0.9], input.byte()) { input.float() }
    let scale: Float = pick([1, 0.01, 1e-3, 1e-30, 1e30, 1e36, 100, 0.1, 1e-45], input.byte()) { input.float() }
    let offset: Float = pick([0, 1000, -1000, 1e6, 3e38, -3e38, 0.5, 1e-40], input.byte()) { input.float() }
    let repeatCount = 1 + Int(input.byte() % 64) * (Int(input.byte() % 4) + 1)

    var pattern: [Float] = []
    while !input.isEmpty && pattern.count < 4096 {
        let b = input.byte()
        switch b {
        case 0..<240: pattern.append(Float(Int(b) - 120) * scale + offset)
        case 240: pattern.append(-.infinity)
        case 241: pattern.append(.nan)
        case 242: pattern.append(.infinity)
        default: pattern.append(input.float())
        }
    }
    guard !pattern.isEmpty else { return 0 }
    var row: [Float] = []
    let copies = min(repeatCount, max(1, 70_000 / pattern.count))
    row.reserveCapacity(pattern.count * copies)
    for _ in 0..<copies { row += pattern }
    let parameters = SamplingParameters(
        temperature: temperature, nSigma: nSigma, seed: UInt64(size), topK: topK, topP: topP, minP: minP)
    verify(row, parameters)
    // The same row and values as a sampler chain in an order the input's size picks, with
    // llama.cpp's sentinels on every other size.
    var chained = parameters
    var hash = UInt64(truncatingIfNeeded: size) &* 0x9E37_79B9_7F4A_7C15 | 1
    var steps = SamplerStep.allCases
    for i in steps.indices.reversed() {
        hash = hash &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        steps.swapAt(i, Int((hash >> 33) % UInt64(i + 1)))
    }
    chained.order = SamplerOrder(Array(steps.prefix(1 + Int((hash >> 40) % UInt64(steps.count)))))
    chained.typicalP = [nil, 0.9, 0.5][size % 3]
    chained.xtcThreshold = [nil, 0.1][size % 2]
    chained.pLess = size % 5 == 0
    if size % 2 == 0 { chained = chained.withLlamaCppSentinels() }
    verifyChain(row, chained)
    // The same row and values with the other samplers in the fixed order, Top-nσ, min-p and
    // top-k off on most sizes: their softmax routes (typical-p, ε/η/p-less, XTC, the dynamic
    // temperature, plain sampling) against the survivor pipeline's filter.
    var zoo = parameters
    hash = hash &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    if hash >> 62 != 0 { (zoo.nSigma, zoo.minP, zoo.topK) = (nil, nil, nil) }
    if (hash >> 58) & 3 != 0 { zoo.topP = nil }
    switch (hash >> 40) % 6 {
    case 0: zoo.typicalP = [0.95, 0.5, 0.2][size % 3]
    case 1: zoo.dynamicTemperatureRange = [0.5, 2][size % 2]
    case 2: zoo.xtcThreshold = [0.1, 0.01][size % 2]
    case 3: zoo.epsilon = [3e-4, 0.2][size % 2]
    case 4: zoo.eta = [3e-4, 0.01][size % 2]
    default: zoo.pLess = true
    }
    if (hash >> 36) & 3 == 0 {
        (zoo.typicalP, zoo.epsilon, zoo.eta, zoo.xtcThreshold, zoo.dynamicTemperatureRange, zoo.pLess) = (
            0.9, 1e-4, 3e-4, 0.1, 0.5, true
        )
    }
    verifyChain(row, zoo, logTolerance: 1e-4)
    return 0
}

/// A chain's filter and draw agree, whatever the values: the same error, or a drawn token in the
/// kept set (the argmax alone when greedy), the same candidate count, probabilities summing to 1.
/// Step 0 for both, so that XTC's coin is the same.
func verifyChain(_ row: [Float], _ parameters: SamplingParameters, logTolerance: Double? = nil) {
    let distribution = Result { () throws(RowError) in try FilteredDistribution.of(row, parameters: parameters) }
    if cachedSampler?.vocabularySize != row.count {
        cachedSampler = try! BatchSampler(
            vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1, spinMicroseconds: 0)
    }
    let sampled = cachedSampler!.sample(logits: row, parameters: [parameters], steps: [0])[0]
    switch (distribution, sampled) {
    case (.failure(let a), .failure(let b)):
        check(a.description == b.description, "chain: filter error '\(a)', sampler error '\(b)' \(parameters)")
    case (.success(let d), .success(let drawn)):
        check(!d.kept.isEmpty, "chain: nothing kept \(parameters)")
        let total = d.kept.reduce(0.0) { $0 + $1.probability }
        check(Swift.abs(total - 1) < 1e-9, "chain: probabilities sum to \(total) \(parameters)")
        check(d.kept.contains { $0.token == drawn.token }, "chain: drawn \(drawn.token) not kept \(parameters)")
        check(
            drawn.candidateCount == d.kept.count,
            "chain: \(drawn.candidateCount) candidates drawn from, \(d.kept.count) kept \(parameters)")
        if let logTolerance, let entry = d.kept.first(where: { $0.token == drawn.token }) {
            check(
                Swift.abs(drawn.logProbability - log(entry.probability)) <= logTolerance,
                "log-probability \(drawn.logProbability) vs \(log(entry.probability)) \(parameters)")
        }
    default:
        check(false, "chain: filter \(distribution) and sampler \(sampled) disagree \(parameters)")
    }
}

func verify(_ row: [Float], _ parameters: SamplingParameters) {
    let distribution = Result { () throws(RowError) in try FilteredDistribution.of(row, parameters: parameters) }
    // Top-nσ alone: temperature 1, no other filter.
    let filterResult = Result { () throws(RowError) in
        try FilteredDistribution.of(row, parameters: SamplingParameters(temperature: 1, nSigma: parameters.nSigma))
    }
    if cachedSampler?.vocabularySize != row.count {
        cachedSampler = try! BatchSampler(
            vocabularySize: row.count, maximumBatchSize: 1, threadCount: 1, spinMicroseconds: 0)
    }
    let sampled = cachedSampler!.sample(logits: row, parameters: [parameters], steps: [7])[0]

    // Errors, in the library's documented order: parameters, then the row.
    let t = Double(parameters.temperature)
    var expectedError: String?
    if !(t >= 0) {
        expectedError = RowError.invalidTemperature(parameters.temperature).description
    } else if let n = parameters.nSigma, !(n >= 0) {
        expectedError = RowError.invalidNSigma(n).description
    } else if let k = parameters.topK, k < 1 {
        expectedError = RowError.invalidTopK(k).description
    } else if let p = parameters.topP, !(p > 0 && p <= 1) {
        expectedError = RowError.invalidTopP(p).description
    } else if let m = parameters.minP, !(m >= 0 && m <= 1) {
        expectedError = RowError.invalidMinP(m).description
    } else if let bad = row.firstIndex(where: { $0.isNaN || $0 == .infinity }) {
        expectedError =
            row[bad].isNaN
            ? RowError.notANumber(index: bad).description : RowError.positiveInfinity(index: bad).description
    } else if !row.contains(where: { $0 != -.infinity }) {
        expectedError = RowError.noFiniteLogit.description
    }
    // filter checks only n (its temperature is 1, no truncation).
    var filterError: String?
    if let n = parameters.nSigma, !(n >= 0) {
        filterError = RowError.invalidNSigma(n).description
    } else if let bad = row.firstIndex(where: { $0.isNaN || $0 == .infinity }) {
        filterError =
            row[bad].isNaN
            ? RowError.notANumber(index: bad).description : RowError.positiveInfinity(index: bad).description
    } else if !row.contains(where: { $0 != -.infinity }) {
        filterError = RowError.noFiniteLogit.description
    }

    switch (distribution, expectedError) {
    case (.failure(let error), let expected?):
        check(
            error.description == expected, "FilteredDistribution error '\(error)', expected '\(expected)' \(parameters)"
        )
    case (.failure(let error), nil):
        check(false, "FilteredDistribution failed: \(error), \(parameters), row \(row.count)")
    case (.success, let expected?):
        check(false, "FilteredDistribution succeeded, expected '\(expected)' \(parameters)")
    case (.success, nil): break
    }
    switch (sampled, expectedError) {
    case (.failure(let error), let expected?):
        check(error.description == expected, "sampler error '\(error)', expected '\(expected)'")
    case (.failure(let error), nil):
        check(false, "sampler failed: \(error), \(parameters)")
    case (.success, let expected?):
        check(false, "sampler succeeded, expected '\(expected)' \(parameters)")
    case (.success, nil): break
    }
    switch (filterResult, filterError) {
    case (.failure(let error), let expected?):
        check(error.description == expected, "filter error '\(error)', expected '\(expected)'")
    case (.failure(let error), nil):
        check(false, "filter failed: \(error), n \(String(describing: parameters.nSigma))")
    case (.success, let expected?):
        check(false, "filter succeeded, expected '\(expected)'")
    case (.success, nil): break
    }

    // Statistics in float64, two passes.
    let finite = row.indices.filter { row[$0] != -.infinity && !row[$0].isNaN && row[$0] != .infinity }
    if case .success(let filtered) = filterResult {
        var maximum = -Double.infinity, argmax = -1, sum = 0.0
        for i in finite {
            sum += Double(row[i])
            if Double(row[i]) > maximum { maximum = Double(row[i]); argmax = i }
        }
        let mean = sum / Double(finite.count)
        var m2 = 0.0
        for i in finite { m2 += (Double(row[i]) - mean) * (Double(row[i]) - mean) }
        let std = finite.count > 1 ? (m2 / Double(finite.count - 1)).squareRoot() : 0
        let s = filtered.statistics
        let magnitude = finite.map { Swift.abs(Double(row[$0])) }.max() ?? 0
        check(
            Double(s.maximum) == maximum && s.argmax == argmax && s.finiteCount == finite.count,
            "statistics \(s), expected max \(maximum) at \(argmax), finite \(finite.count)")
        // The statistics come from Float lane sums (unshifted while |mean| < ~8σ per chunk). Their
        // error has the library's documented bound: |ΔM2| ≤ 2·(3·256 + 7)·2⁻²⁴·Σx² (a re-shifted
        // chunk only lowers its Σ), |Δmean| ≤ 2·258·2⁻²⁴·√(Σx²/N), plus the double-precision
        // merges. The kept sets, checked below, are exact whatever the statistics' error.
        let sumSquares = finite.reduce(0.0) { $0 + Double(row[$1]) * Double(row[$1]) }
        let m2Bound = 2 * Double(3 * 256 + 7) * 0x1p-24 * sumSquares * 1.01 + 1e-12 * sumSquares
        let denominator = Double(max(1, finite.count - 1))
        let stdBound =
            finite.count > 1
            ? (m2 / denominator).squareRoot() - (max(0, m2 - m2Bound) / denominator).squareRoot()
            : 0
        let meanBound =
            2 * 258 * 0x1p-24 * (sumSquares / Double(max(1, finite.count))).squareRoot() * 1.01 + 1e-12 * magnitude
        check(Swift.abs(s.mean - mean) <= meanBound, "mean \(s.mean), expected \(mean)")
        check(
            Swift.abs(s.standardDeviation - std) <= stdBound + 1e-12 * magnitude,
            "std \(s.standardDeviation), expected \(std)")
        if case .success(let d) = distribution { check(d.statistics == s, "the two APIs' statistics differ") }

        // filter: Top-nσ alone.
        let threshold = topNSigmaThreshold(parameters.nSigma, maximum: maximum, std: std)
        let band = thresholdBand(parameters.nSigma, stdBound: stdBound, threshold: threshold)
        let kept = filtered.kept.map { Int($0.token) }.sorted()
        check(Set(kept).count == kept.count, "filter's kept ids are not distinct")
        for c in filtered.kept {
            check(row[Int(c.token)].bitPattern == c.logit.bitPattern, "kept token \(c) does not carry its logit")
        }
        checkThresholdSet(
            row, finite, kept: kept, threshold: threshold, band: keptSetBand(threshold: threshold, maximum: maximum),
            what: "filter")
        if parameters.nSigma != nil {
            check(
                Swift.abs(filtered.threshold - threshold) <= band || filtered.threshold == threshold,
                "filter threshold \(filtered.threshold), expected \(threshold)")
        } else {
            check(filtered.threshold == -.infinity, "filter threshold \(filtered.threshold) with n off")
        }

        guard case .success(let d) = distribution, case .success(let token) = sampled else { return }
        // Greedy.
        if t == 0 {
            check(
                d.kept.count == 1 && d.kept[0].token == argmax && d.kept[0].probability == 1,
                "greedy kept \(d.kept.prefix(3)), argmax \(argmax)")
            check(
                token.token == argmax && token.logProbability == 0 && token.candidateCount == 1,
                "greedy draw \(token), argmax \(argmax)")
            return
        }
        checkTruncated(row, finite, parameters, maximum: maximum, std: std, got: d, token: token)
    }
}

/// `max − n·std`; a row with std 0 keeps the max-tied tokens whatever n (`∞ · 0` included).
func topNSigmaThreshold(_ n: Float?, maximum: Double, std: Double) -> Double {
    guard let n else { return -.infinity }
    return std == 0 ? maximum : maximum - Double(n) * std
}

/// How far the *reported* threshold (from the kernel's Float-sum statistics) may lie from the
/// float64 definition: n times the std's bound, plus 1e-12 of its magnitude.
func thresholdBand(_ n: Float?, stdBound: Double, threshold: Double) -> Double {
    Double(n ?? 1) * stdBound * 1.01 + 1e-12 * Swift.abs(threshold)
}

/// How far from the float64 threshold a logit may be decided either way in a *kept set*: the
/// library decides every logit near the threshold against a bound on its sums' error and
/// recomputes the moments in double precision when one could go either way, so only the last
/// bits of two double-precision summation orders remain.
func keptSetBand(threshold: Double, maximum: Double) -> Double {
    1e-12 * (Swift.abs(threshold) + Swift.abs(maximum))
}

/// `kept` equals `{ i finite : x_i >= threshold }`, except that logits within `band` of the
/// threshold may be left out as long as every kept logit is at least every left-out one.
func checkThresholdSet(_ row: [Float], _ finite: [Int], kept: [Int], threshold: Double, band: Double, what: String) {
    let keptSet = Set(kept)
    var lowestKept = Double.infinity, highestDropped = -Double.infinity
    for i in finite {
        let x = Double(row[i])
        if keptSet.contains(i) {
            check(x >= threshold - band, "\(what) kept \(i) (\(x)) below the threshold \(threshold)")
            lowestKept = min(lowestKept, x)
        } else {
            check(x < threshold + band, "\(what) dropped \(i) (\(x)) at or above the threshold \(threshold)")
            highestDropped = max(highestDropped, x)
        }
    }
    check(highestDropped < lowestKept || kept.isEmpty, "\(what) dropped \(highestDropped) but kept \(lowestKept)")
    check(keptSet.count == kept.count && keptSet.isSubset(of: Set(finite)), "\(what) kept a non-finite or repeated id")
}

/// The distribution after Top-nσ, min-p, top-k and top-p, against the oracle over every
/// admissible resolution of the threshold band.
func checkTruncated(
    _ row: [Float], _ finite: [Int], _ parameters: SamplingParameters, maximum: Double, std: Double,
    got: FilteredDistribution, token: SampledToken
) {
    let t = Double(parameters.temperature)
    // The combined threshold: Top-nσ and min-p (probability ratio p_i / p_max >= minP).
    var threshold = topNSigmaThreshold(parameters.nSigma, maximum: maximum, std: std)
    var band = parameters.nSigma != nil ? keptSetBand(threshold: threshold, maximum: maximum) : 0
    if let m = parameters.minP, m > 0 {
        let minPThreshold = t.isInfinite ? -Double.infinity : maximum + t * log(Double(m))
        if minPThreshold > threshold {
            threshold = minPThreshold
            band = 1e-12 * Swift.abs(minPThreshold) + 1e-12 * Swift.abs(maximum)
        }
    }
    let ids = got.kept.map { Int($0.token) }
    check(Set(ids).count == ids.count, "repeated ids in the distribution")
    // Key order (probability descending, ties to the lower id).
    for j in 1..<max(1, ids.count) {
        check(precedes(row, ids[j - 1], ids[j]), "distribution not in key order at \(j): \(ids[j - 1]), \(ids[j])")
    }
    // Probabilities over what was kept.
    let weights = ids.map { exp((Double(row[$0]) - maximum) / t) }
    let total = weights.reduce(0, +)
    for (j, entry) in got.kept.enumerated() {
        let expected = weights[j] / total
        check(
            Swift.abs(entry.probability - expected) <= 1e-9 * max(expected, 1e-300) + 1e-300,
            "probability of \(entry.token): \(entry.probability), expected \(expected)")
    }
    check(ids.contains(Int(token.token)), "sampled \(token.token), not in the kept set")
    check(
        token.candidateCount == ids.count, "sampler candidate count \(token.candidateCount), distribution \(ids.count)")
    if let j = ids.firstIndex(of: Int(token.token)) {
        let expected = log(weights[j] / total)
        check(
            Swift.abs(token.logProbability - expected) <= 1e-6 * max(1, Swift.abs(expected)),
            "log-probability \(token.logProbability), expected \(expected)")
    }

    // The candidates before top-k / top-p: strictly above the band, plus any top part of the band.
    let ordered = finite.sorted { precedes(row, $0, $1) }
    let sure = ordered.prefix { Double(row[$0]) >= threshold + band }.count
    let loose = ordered.prefix { Double(row[$0]) >= threshold - band }.count
    // Resolutions of the band: the first `c` of the key order for c in sure...loose (at most
    // 64 tried; beyond that only the bounds are checked).
    let resolutions = loose - sure <= 64 ? Array(sure...loose) : [sure, loose]
    let need = parameters.topP.map(Double.init)
    for count in resolutions {
        var candidates = Array(ordered.prefix(count))
        if let k = parameters.topK, candidates.count > k { candidates = Array(candidates.prefix(k)) }
        if let p = need, p < 1, candidates.count > 1 {
            let w = candidates.map { exp((Double(row[$0]) - maximum) / t) }
            let sum = w.reduce(0, +)
            let target = p * sum, slack = 1e-9 * sum
            var cumulative = 0.0
            var admissible: [Int] = []
            for (j, weight) in w.enumerated() {
                let before = cumulative
                cumulative += weight
                if cumulative >= target - slack && before < target + slack { admissible.append(j + 1) }
            }
            if admissible.isEmpty { admissible = [candidates.count] }
            if admissible.contains(ids.count) && Array(candidates.prefix(ids.count)) == ids { return }
        } else if candidates == ids {
            return
        }
    }
    if loose - sure > 64 {
        // Many logits inside the band: the kept set must still be a key-order prefix within the bounds.
        check(ordered.prefix(ids.count).elementsEqual(ids), "kept set is not a key-order prefix")
        return
    }
    check(
        false,
        "kept \(ids.count) tokens \(ids.prefix(8)) matches no admissible oracle set (sure \(sure), loose \(loose), threshold \(threshold), \(parameters))"
    )
}
