import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RowPipeline {
    /// One row start to finish on the calling thread: its processing prepared, reduced,
    /// settled and drawn; its logprobs written to `logprobs` when it asks for them.
    static func sampleRow<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, parameters: SamplingParameters, processing: ProcessingSource?, index: Int,
        step: UInt64, scratch: Scratch, logprobs: UnsafeMutablePointer<TopLogprobs>? = nil
    ) -> SampleResult {
        prepare(
            processing, index: index, vocab: vocab, scratch: scratch, logprobs: logprobs != nil ? .buffer : .missing)
        let state = scratch.state.pointee
        if let error = parameters.validationError ?? state.error {
            logprobs?.pointee = TopLogprobs()
            return .failure(error)
        }
        let accumulator = reduceRow(
            p, vocab: vocab, parameters: parameters, scratch: scratch, state: state, sampling: true)
        return settle(
            p, vocab: vocab, accumulator: accumulator, parameters: parameters, step: step, scratch: scratch,
            logprobs: logprobs)
    }

    /// Settles a reduced row (``settleSurvivors``), then truncates and draws; writes the row's
    /// logprobs when its (prepared) processing asks for them.
    static func settle<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, accumulator: StatisticsKernel.RowAccumulator, parameters: SamplingParameters,
        step: UInt64, scratch: Scratch, logprobs: UnsafeMutablePointer<TopLogprobs>? = nil
    ) -> SampleResult {
        let state = scratch.state.pointee
        switch settleSurvivors(
            p, vocab: vocab, accumulator: accumulator, parameters: parameters, scratch: scratch, state: state,
            sampling: true)
        {
        case .failure(let error):
            logprobs?.pointee = TopLogprobs()
            return .failure(error)
        case .success(let (statistics, count)):
            let drawn: SampledToken
            if parameters.drawsArgmax {
                drawn = SampledToken(token: TokenID(statistics.argmax), logProbability: 0, candidateCount: 1)
            } else if let route = softmaxRoute(parameters, state) {
                drawn = softmaxDraw(
                    p, vocab: vocab, route: route, statistics: statistics, parameters: parameters, step: step,
                    count: count ?? 0, scratch: scratch, mask: state.mask.map { UnsafePointer($0) })
            } else {
                drawn = draw(
                    p, vocab: vocab, statistics: statistics, parameters: parameters, step: step, count: count ?? 0,
                    scratch: scratch)
            }
            if state.topLogprobs >= 0, let logprobs {
                // The drawn token's logit (the maximum when greedy), found only for the rows that
                // ask for logprobs: with Top-nσ off the kept set can be the whole row.
                var sampledLogit = statistics.maximum
                if !parameters.drawsArgmax {
                    for j in 0..<drawn.candidateCount where Int(scratch.candidates[j].index) == drawn.token {
                        sampledLogit = scratch.candidates[j].logit
                        break
                    }
                }
                logprobs.pointee = rowLogprobs(
                    statistics: statistics, sampled: sampledLogit, survivors: count ?? 0, vocab: vocab, state: state,
                    scratch: scratch)
            }
            return .success(drawn)
        }
    }

    /// The truncation (``truncate``) of the gathered survivors, then the draw.
    static func draw<E: LogitElement>(
        _ p: UnsafePointer<E>, vocab: Int, statistics: RowStatistics, parameters: SamplingParameters, step: UInt64,
        count: Int, scratch: Scratch
    ) -> SampledToken {
        let (kept, temperature, maximum) = truncate(
            p, vocab: vocab, statistics: statistics, parameters: parameters, count: count, scratch: scratch,
            step: step)
        let u = Philox4x32(seed: parameters.seed).uniform(step: step)
        return DrawKernel.draw(
            UnsafeBufferPointer(start: scratch.candidates, count: kept), maximum: maximum, temperature: temperature,
            uniform: u, weights: scratch.weights)
    }
}
