#if canImport(Glibc)
import Glibc
#endif
import FuzzSupport
import TopNSigma
import TopNSigmaBaselines

// libFuzzer target: one row and one request with arbitrary bitmask, bias, history, penalties and
// top-logprobs count (hostile values included) through `FilteredDistribution.of` and a one-row
// `BatchSampler`, against a float64 oracle written here from the README's definitions.
//
// Input layout: 7 setting bytes (vocabulary size, repetition, frequency, presence penalty, top
// logprobs, n, DRY: off, or a multiplier, base, allowed length and window from tables of ordinary
// and hostile values, with breakers made of the request's first prompt tokens), then for the row one byte per logit (0–239: (b − 120) / 8; 240 −inf; 241 NaN;
// 242 +inf; 243–255 the next 4 bytes as raw Float bits), then the bitmask (a flag byte; words of
// 4 bytes, possibly too few), then entries of 3 bytes each: a kind (bias / prompt / output), a
// token byte (ids past the vocabulary and negative ones included) and a value byte.
//
// Checked: the request's error (the library's order: penalties, top logprobs, DRY's settings,
// bitmask, then each entry in order, then DRY's breakers); otherwise, when the processed row has a NaN or +inf, that the row fails with
// one naming a token whose processed logit is such; otherwise max, argmax, finite count, the kept
// set (exactly the float64 definition's, up to 1e-12 relative at the threshold), and the top
// logprobs (tokens, 2e-6 on logprobs), the sampled logprob and rank.

let penalties: [Float] = [1, 0, 1.3, 0.5, -1, .nan, .infinity, -.infinity, 1e30, 2, 1e-30]
let biases: [Float] = [0, 1, -1, 5, -100, 100, .nan, .infinity, -.infinity, 3e38, -3e38, 0.25]
let dryMultipliers: [Float] = [0.8, 2, 1e-3, 1e30, -1, .nan, .infinity, 0]
let dryBases: [Float] = [1.75, 1, 1.0000005, 3e38, 0.5, .nan, 1.1, 8]
let dryAllowed = [2, 0, 1, -1]
let dryWindows = [-1, 0, 5, -2]

/// DRY's settings error, in the library's order (multiplier, then while it is not 0: base,
/// allowed length, window).
func drySettingsError(_ q: RequestProcessing) -> RowError? {
    let m = q.dryMultiplier
    if !(m >= 0 && m.isFinite) { return .invalidSampler(name: "dry-multiplier", value: m) }
    guard m != 0 else { return nil }
    if !(q.dryBase >= 1 && q.dryBase.isFinite) { return .invalidSampler(name: "dry-base", value: q.dryBase) }
    if q.dryAllowedLength < 0 { return .invalidSampler(name: "dry-allowed-length", value: Float(q.dryAllowedLength)) }
    if q.dryPenaltyLastN < -1 { return .invalidSampler(name: "dry-penalty-last-n", value: Float(q.dryPenaltyLastN)) }
    return nil
}

/// The processed row, as the README defines it (masked: -inf), and the request's error if any.
func reference(_ row: [Float], _ q: RequestProcessing) -> (values: [Float], error: RowError?) {
    let v = row.count
    if !(q.repetitionPenalty > 0 && q.repetitionPenalty.isFinite) {
        return ([], .invalidRepetitionPenalty(q.repetitionPenalty))
    }
    if !q.frequencyPenalty.isFinite { return ([], .invalidFrequencyPenalty(q.frequencyPenalty)) }
    if !q.presencePenalty.isFinite { return ([], .invalidPresencePenalty(q.presencePenalty)) }
    if let n = q.topLogprobs, !(0...20).contains(n) { return ([], .invalidTopLogprobs(n)) }
    if let error = drySettingsError(q) { return ([], error) }
    if let words = q.allowedTokens, words.count < (v + 31) / 32 {
        return ([], .bitmaskTooShort(words: words.count, needed: (v + 31) / 32))
    }
    var bias = [Float](repeating: 0, count: v)
    var biased = [Bool](repeating: false, count: v)
    for entry in q.logitBias {
        if entry.token < 0 || Int(entry.token) >= v { return ([], .tokenOutOfRange(Int(entry.token))) }
        if !entry.bias.isFinite { return ([], .invalidLogitBias(token: Int(entry.token), entry.bias)) }
        bias[Int(entry.token)] += entry.bias
        biased[Int(entry.token)] = true
    }
    var seen = [Bool](repeating: false, count: v), count = [Int](repeating: 0, count: v)
    for t in q.promptTokens {
        if t < 0 || Int(t) >= v { return ([], .tokenOutOfRange(Int(t))) }
        seen[Int(t)] = true
    }
    for t in q.outputTokens {
        if t < 0 || Int(t) >= v { return ([], .tokenOutOfRange(Int(t))) }
        seen[Int(t)] = true
        count[Int(t)] += 1
    }
    if q.dryMultiplier != 0 {
        for breaker in q.drySequenceBreakers {
            if !(1...21).contains(breaker.count) {
                return ([], .invalidSampler(name: "dry-sequence-breakers", value: Float(breaker.count)))
            }
            if let t = breaker.first(where: { $0 < 0 || Int($0) >= v }) { return ([], .tokenOutOfRange(Int(t))) }
        }
    }
    let dry = NaiveDry.penalties(
        context: q.promptTokens + q.outputTokens, multiplier: q.dryMultiplier, base: q.dryBase,
        allowedLength: q.dryAllowedLength, penaltyLastN: q.dryPenaltyLastN, breakers: q.drySequenceBreakers)
    let values = (0..<v).map { t -> Float in
        if let words = q.allowedTokens, (words[t / 32] >> UInt32(t % 32)) & 1 == 0 { return -.infinity }
        var x = row[t]
        if biased[t] { x = x + bias[t] }
        if seen[t] && q.repetitionPenalty != 1 { x = x > 0 ? x / q.repetitionPenalty : x * q.repetitionPenalty }
        if count[t] > 0 && (q.frequencyPenalty != 0 || q.presencePenalty != 0 || q.repetitionPenalty != 1) {
            x = x - q.frequencyPenalty * Float(count[t])
            x = x - q.presencePenalty
        }
        if let p = dry[t] { x = x - p }
        return x
    }
    return (values, nil)
}

nonisolated(unsafe) var cachedSampler: BatchSampler?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var reader = Reader(bytes: Array(UnsafeBufferPointer(start: data, count: size)))
    let vocab = 1 + Int(reader.byte()) % 200
    var q = RequestProcessing()
    q.repetitionPenalty = penalties[Int(reader.byte()) % penalties.count]
    q.frequencyPenalty = penalties[Int(reader.byte()) % penalties.count]
    q.presencePenalty = penalties[Int(reader.byte()) % penalties.count]
    let top = Int(reader.byte())
    q.topLogprobs = top < 200 ? top % 23 - 1 : nil
    if q.topLogprobs == -1 { q.topLogprobs = nil }
    if top == 255 { q.topLogprobs = -3 }
    let nByte = reader.byte()
    let n: Float? = nByte % 4 == 3 ? nil : Float(nByte % 4)
    let dryByte = reader.byte()
    var row = [Float](repeating: 0, count: vocab)
    for i in 0..<vocab {
        let b = reader.byte()
        switch b {
        case 0..<240: row[i] = Float(Int(b) - 120) / 8
        case 240: row[i] = -.infinity
        case 241: row[i] = .nan
        case 242: row[i] = .infinity
        default: row[i] = Float(bitPattern: reader.uint32())
        }
    }
    let maskFlag = reader.byte()
    if maskFlag & 1 == 1 {
        let words = (vocab + 31) / 32 - (maskFlag & 2 == 2 ? 1 : 0)
        q.allowedTokens = (0..<max(0, words)).map { _ in reader.uint32() | (maskFlag & 4 == 4 ? 0 : 0x0101_0101) }
    }
    while !reader.isEmpty && q.logitBias.count + q.promptTokens.count + q.outputTokens.count < 64 {
        let kind = reader.byte() % 3, token = Int32(Int(reader.byte()) - 20), value = reader.byte()
        switch kind {
        case 0: q.logitBias.append(LogitBias(token: token, bias: biases[Int(value) % biases.count]))
        case 1: q.promptTokens.append(token)
        default: q.outputTokens.append(token)
        }
    }

    if dryByte & 3 != 0 {
        q.dryMultiplier = dryMultipliers[Int(dryByte >> 2) % dryMultipliers.count]
        q.dryBase = dryBases[Int(dryByte >> 5) % dryBases.count]
        q.dryAllowedLength = dryAllowed[Int(dryByte & 3)]
        q.dryPenaltyLastN = dryWindows[Int(dryByte >> 3) % dryWindows.count]
        // One- and two-token breakers from the prompt (ids out of range included), and an empty
        // one when the byte says so.
        let prompt = q.promptTokens
        if let first = prompt.first { q.drySequenceBreakers.append([first]) }
        if prompt.count >= 3 { q.drySequenceBreakers.append([prompt[1], prompt[2]]) }
        if dryByte == 255 { q.drySequenceBreakers.append([]) }
    }

    let parameters = SamplingParameters(temperature: 1, nSigma: n, seed: 1)
    let expected = reference(row, q)
    if cachedSampler?.vocabularySize != vocab {
        cachedSampler = try! BatchSampler(vocabularySize: vocab, maximumBatchSize: 1, threadCount: 1)
    }
    let (results, logprobs) = cachedSampler!.sample(logits: row, parameters: [parameters], processing: [q])
    let filtered = Result { () throws(RowError) in
        try FilteredDistribution.of(row, parameters: parameters, processing: q)
    }
    if let error = expected.error {
        check(filtered.failure.map { "\($0)" } == "\(error)", "filter: expected \(error), got \(filtered)")
        check(results[0].failure.map { "\($0)" } == "\(error)", "sample: expected \(error), got \(results[0])")
        return 0
    }
    let values = expected.values
    if let bad = values.firstIndex(where: { $0.isNaN || $0 == .infinity }) {
        for result in [filtered.failure, results[0].failure] {
            switch result {
            case .notANumber(let i)?:
                check(values[i].isNaN, "NaN reported at \(i), value \(values[i]) (first bad \(bad))")
            case .positiveInfinity(let i)?:
                check(values[i] == .infinity || values[i].isNaN, "+inf reported at \(i), value \(values[i])")
            default: check(false, "expected a NaN/+inf error (token \(bad)), got \(String(describing: result))")
            }
        }
        return 0
    }
    let finite = values.indices.filter { values[$0] > -.infinity }
    if finite.isEmpty {
        check(filtered.failure == .noFiniteLogit && results[0].failure == .noFiniteLogit, "expected noFiniteLogit")
        return 0
    }
    guard case .success(let f) = filtered, case .success(let drawn) = results[0] else {
        check(false, "unexpected failure: \(filtered) \(results[0])")
        return 0
    }
    // float64 statistics of the processed row.
    var maximum = -Double.infinity, argmax = -1, sum = 0.0
    for i in finite {
        sum += Double(values[i])
        if Double(values[i]) > maximum { maximum = Double(values[i]); argmax = i }
    }
    let mean = sum / Double(finite.count)
    var m2 = 0.0
    for i in finite { m2 += (Double(values[i]) - mean) * (Double(values[i]) - mean) }
    let std = finite.count > 1 ? (m2 / Double(finite.count - 1)).squareRoot() : 0
    check(
        Double(f.statistics.maximum) == maximum && f.statistics.argmax == argmax,
        "max/argmax \(f.statistics) vs \(maximum) \(argmax)")
    check(f.statistics.finiteCount == finite.count, "finite count")
    let threshold = n.map { maximum - Double($0) * std } ?? -.infinity
    let slack = 1e-12 * Swift.max(1, Swift.abs(threshold))
    let kept = Set(f.kept.map { Int($0.token) })
    for i in finite {
        let x = Double(values[i])
        if x >= threshold + slack { check(kept.contains(i), "token \(i) (\(x)) must be kept, threshold \(threshold)") }
        if x < threshold - slack {
            check(!kept.contains(i), "token \(i) (\(x)) must not be kept, threshold \(threshold)")
        }
    }
    check(kept.contains(Int(drawn.token)), "drawn token \(drawn.token) outside the kept set")
    if let topN = q.topLogprobs {
        let z = finite.reduce(0.0) { $0 + exp(Double(values[$1]) - maximum) }
        let logZ = log(z)
        let order = finite.sorted { values[$0] > values[$1] || (values[$0] == values[$1] && $0 < $1) }
        let lp = logprobs[0]
        check(
            lp.entries.map { Int($0.token) } == Array(order.prefix(topN)),
            "top tokens \(lp.entries) vs \(order.prefix(topN))")
        for e in lp.entries {
            let want = Double(values[Int(e.token)]) - maximum - logZ
            check(
                Swift.abs(e.logprob - want) <= 2e-6 * Swift.max(1, Swift.abs(want)),
                "logprob of \(e.token): \(e.logprob) vs \(want)")
        }
        let want = Double(values[Int(drawn.token)]) - maximum - logZ
        check(
            Swift.abs(lp.sampledLogprob - want) <= 2e-6 * Swift.max(1, Swift.abs(want)),
            "sampled logprob \(lp.sampledLogprob) vs \(want)")
        check(
            lp.sampledRank == finite.filter { values[$0] >= values[Int(drawn.token)] }.count, "rank \(lp.sampledRank)")
    }
    return 0
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
