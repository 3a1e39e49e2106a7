import Testing
import TopNSigma
import TopNSigmaBaselines

@Suite struct HalfPrecisionTests {
    /// The reference: binary16 decoded from its definition, in double precision.
    static func decode(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10) & 0x1F, mantissa = Double(bits & 0x3FF)
        if exponent == 0x1F { return mantissa == 0 ? sign * .infinity : .nan }
        if exponent == 0 { return sign * mantissa * 0x1p-24 }
        return sign * (1 + mantissa / 1024) * Double(sign: .plus, exponent: exponent - 15, significand: 1)
    }

    @Test("every one of the 65536 halves converts exactly, scalar and 16 lanes at a time")
    func exhaustive() {
        var lanes = SIMD16<UInt16>()
        for value in 0...0xFFFF {
            let bits = UInt16(value)
            let scalar = HalfPrecision.float(fromHalfBits: bits)
            let expected = Self.decode(bits)
            if expected.isNaN {
                #expect(scalar.isNaN, "bits \(bits)")
            } else {
                #expect(
                    Double(scalar) == expected && scalar.sign == (bits & 0x8000 != 0 ? .minus : .plus), "bits \(bits)")
            }
            lanes[value % 16] = bits
            if value % 16 == 15 {
                let vector = HalfPrecision.floats(fromHalfBits: lanes)
                for lane in 0..<16 {
                    let s = HalfPrecision.float(fromHalfBits: lanes[lane])
                    #expect(vector[lane].bitPattern == s.bitPattern, "bits \(lanes[lane])")
                }
            }
        }
    }

    static func halfBlock(_ values: [Float]) -> (bits: [UInt16], floats: [Float]) {
        // Round each value to a nearby half by truncating its Float bits to 10 mantissa bits.
        var table = [UInt32: UInt16]()
        for candidate in 0...0x7BFF {
            table[HalfPrecision.float(fromHalfBits: UInt16(candidate)).bitPattern] = UInt16(candidate)
        }
        var bits: [UInt16] = [], floats: [Float] = []
        for x in values {
            let clamped = max(-65000, min(65000, x))
            var truncated = Float(bitPattern: clamped.magnitude.bitPattern & 0xFFFF_E000)
            if truncated < 0x1p-14 { truncated = 0 }
            let h = (table[truncated.bitPattern] ?? 0) | (clamped < 0 ? 0x8000 : 0)
            bits.append(h)
            floats.append(HalfPrecision.float(fromHalfBits: h))
        }
        return (bits, floats)
    }

    @Test("float16 and bfloat16 batches sample exactly as their Float conversions, split or not", arguments: [1, 2, 3])
    func halfBatchesMatchFloat(threads: Int) throws {
        let vocab = 20_000, rows = 4
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 31)
        let parameters = (0..<rows).map {
            SamplingParameters(
                temperature: [1, 0.7, 0, 1.5][$0], nSigma: [1, 2, 1, nil][$0], seed: UInt64($0),
                topP: $0 == 3 ? 0.9 : nil)
        }
        let steps: [UInt64] = [4, 5, 6, 7]
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: threads)
        let half = Self.halfBlock(logits)
        let fromHalf = sampler.sample(bits: half.bits, format: .float16, parameters: parameters, steps: steps)
        let fromFloat = sampler.sample(logits: half.floats, parameters: parameters, steps: steps)
        #expect(try fromHalf.map { try $0.get() } == fromFloat.map { try $0.get() })
        // Float logits as raw words (two little-endian UInt16 per logit) are the Float API's.
        let words = logits.flatMap { [UInt16(truncatingIfNeeded: $0.bitPattern), UInt16($0.bitPattern >> 16)] }
        let fromWords = sampler.sample(bits: words, format: .float32, parameters: parameters, steps: steps)
        #expect(
            try fromWords.map { try $0.get() }
                == sampler.sample(logits: logits, parameters: parameters, steps: steps).map { try $0.get() })
        let brain = logits.map { UInt16($0.bitPattern >> 16) }
        let fromBrain = sampler.sample(bits: brain, format: .bfloat16, parameters: parameters, steps: steps)
        let brainFloats = brain.map { Float(bitPattern: UInt32($0) << 16) }
        #expect(
            try fromBrain.map { try $0.get() }
                == sampler.sample(logits: brainFloats, parameters: parameters, steps: steps).map { try $0.get() })
        // A NaN and a masked row in half precision fail exactly as in Float.
        var bad = half.bits
        bad[vocab + 123] = 0x7E00
        for i in (2 * vocab)..<(3 * vocab) { bad[i] = 0xFC00 }
        let failed = sampler.sample(bits: bad, format: .float16, parameters: parameters, steps: steps)
        #expect(throws: RowError.notANumber(index: 123)) { try failed[1].get() }
        #expect(throws: RowError.noFiniteLogit) { try failed[2].get() }
        #expect(try failed[0].get() == fromFloat[0].get())
        // With request processing (bias, penalties, logprobs): the same tokens and logprobs as
        // the Float array call on the converted values.
        let processing = (0..<rows).map { r in
            RequestProcessing(
                logitBias: [LogitBias(token: TokenID(17 + r), bias: 60)], outputTokens: [5, 5, TokenID(r)],
                frequencyPenalty: 0.4, topLogprobs: r == 1 ? 0 : 5)
        }
        let processedBrain = sampler.sample(
            bits: brain, format: .bfloat16, parameters: parameters, processing: processing, steps: steps)
        let processedFloat = sampler.sample(
            logits: brainFloats, parameters: parameters, processing: processing, steps: steps)
        #expect(try processedBrain.results.map { try $0.get() } == processedFloat.results.map { try $0.get() })
        #expect(processedBrain.logprobs == processedFloat.logprobs)
        #expect(processedBrain.logprobs[0].entries.count == 5 && processedBrain.logprobs[1].entries.isEmpty)
        // Processing changes the draw of some row (else the comparison above proves little).
        #expect(try processedBrain.results.map { try $0.get() } != fromBrain.map { try $0.get() })
    }

    @Test("float16 and bfloat16 rows take the other samplers' routes exactly as their Float conversions")
    func halfBatchesOnTheOtherRoutes() throws {
        let vocab = 20_000
        let parameters = [
            SamplingParameters(nSigma: nil, seed: 1, typicalP: 0.9),
            SamplingParameters(temperature: 0.8, nSigma: nil, seed: 2, dynamicTemperatureRange: 0.5),
            SamplingParameters(nSigma: nil, seed: 3, xtcThreshold: 0.02),
            SamplingParameters(nSigma: nil, seed: 4, typicalP: 0.95, epsilon: 1e-4, eta: 3e-4, pLess: true),
            SamplingParameters(temperature: 1.2, nSigma: nil, seed: 5)
        ]
        let rows = parameters.count
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 37)
        let sampler = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
        let half = Self.halfBlock(logits)
        let brain = logits.map { UInt16($0.bitPattern >> 16) }
        let brainFloats = brain.map { Float(bitPattern: UInt32($0) << 16) }
        for step in UInt64(0)..<4 {
            let steps = [UInt64](repeating: step, count: rows)
            let fromHalf = sampler.sample(bits: half.bits, format: .float16, parameters: parameters, steps: steps)
            let fromFloat = sampler.sample(logits: half.floats, parameters: parameters, steps: steps)
            #expect(try fromHalf.map { try $0.get() } == fromFloat.map { try $0.get() })
            let fromBrain = sampler.sample(bits: brain, format: .bfloat16, parameters: parameters, steps: steps)
            #expect(
                try fromBrain.map { try $0.get() }
                    == sampler.sample(logits: brainFloats, parameters: parameters, steps: steps).map { try $0.get() })
        }
    }
}
