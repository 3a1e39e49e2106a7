import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One token whose logit the request's bias or penalties change.
struct Edit {
    var token: Int32
    /// Occurrences in the output.
    var count: Int32
    /// The summed bias.
    var bias: Float
    /// The processed logit, computed in the pass while its chunk is in L1 (`-inf` takes no
    /// part).
    var value: Float
    /// In the prompt or the output (the repetition penalty applies).
    var seen: Bool
    /// DRY's penalty, subtracted last (0: none). While ``Dry`` gathers, it holds the repeat
    /// length plus one as a bit pattern (``dryMarker(_:)``).
    var dry: Float = 0

    /// `value` stored in a Float's bits (saturating at `UInt32.max`).
    @inline(__always)
    static func dryMarker(_ value: Int) -> Float { Float(bitPattern: UInt32(clamping: value)) }

    /// The value a ``dryMarker(_:)`` stored.
    @inline(__always)
    static func dryLength(_ marker: Float) -> Int { Int(marker.bitPattern) }
}

/// A row's processing as the pass needs it, prepared in the row's scratch before the pass
/// (``RowPipeline/prepare(_:vocab:scratch:logprobs:)``).
struct ProcessingState {
    /// The effective bitmask (the request's, less the edited tokens), or nil when the pass
    /// reads every logit as it is.
    var mask: UnsafeMutablePointer<UInt32>?
    /// Edited tokens that the request's bitmask allows (a masked one is dropped), at the front
    /// of the scratch's `edits`.
    var editCount = 0
    /// Top logprobs to return, or -1 for none.
    var topLogprobs = -1
    var repetitionPenalty: Float = 1
    var frequencyPenalty: Float = 0
    var presencePenalty: Float = 0
    /// The request's error, found before the pass (it then reads nothing).
    var error: RowError?

    /// The processed logit of an edited token whose raw logit is `x` (vLLM's order, in Float).
    @inline(__always)
    func process(_ x: Float, _ edit: Edit) -> Float {
        var v = x + edit.bias
        // Both candidates computed, one selected: the sign of a logit is a coin flip for the
        // branch predictor.
        let divided = v / repetitionPenalty, multiplied = v * repetitionPenalty
        let repeated = v > 0 ? divided : multiplied
        v = edit.seen ? repeated : v
        let penalized = (v - frequencyPenalty * Float(edit.count)) - presencePenalty
        v = edit.count > 0 ? penalized : v
        // An edit without DRY subtracts 0, which changes no value (-0 included).
        return v - edit.dry
    }
}

/// One row's request processing as pointers: what ``RowPipeline/prepare(view:vocab:scratch:logprobs:)``
/// reads. The C ABI builds it from a `tns_processing` without allocating; a ``RequestProcessing``
/// lends its arrays for the call.
package struct ProcessingView {
    /// The allowed-token bitmask (`allowedWords` words are readable), read only when
    /// `allowedWords >= 0`.
    package var allowed: UnsafePointer<UInt32>
    /// Words of `allowed`, or -1 for no bitmask (every token allowed). The C ABI passes
    /// `ceil(vocab / 32)`: its caller vouches for the length.
    package var allowedWords: Int
    /// `biasCount` token ids (`Int32`) and biases (`Float`), each `biasStride` bytes apart.
    package var biasTokens: UnsafeRawPointer?
    package var biasValues: UnsafeRawPointer?
    package var biasStride: Int
    package var biasCount: Int
    package var promptTokens: UnsafeBufferPointer<Int32>
    package var outputTokens: UnsafeBufferPointer<Int32>
    package var repetitionPenalty: Float
    package var frequencyPenalty: Float
    package var presencePenalty: Float
    /// Top logprobs to return, `0...20` (any other value is the row's error), or nil for none.
    package var topLogprobs: Int?
    /// DRY's settings and sequence breakers (off by default).
    var dry = DrySettings()
    package var dryBreakers = BreakerList.none

    /// Sets DRY's settings (read when `multiplier` is not 0).
    package mutating func setDry(
        multiplier: Float, base: Float, allowedLength: Int, penaltyLastN: Int, breakers: BreakerList
    ) {
        dry = DrySettings(multiplier: multiplier, base: base, allowedLength: allowedLength, penaltyLastN: penaltyLastN)
        dryBreakers = breakers
    }

    /// A view of the given pointers; counts must be `>= 0` (the caller checks them).
    package init(
        allowed: UnsafePointer<UInt32>, allowedWords: Int, biasTokens: UnsafeRawPointer?,
        biasValues: UnsafeRawPointer?, biasStride: Int, biasCount: Int, promptTokens: UnsafeBufferPointer<Int32>,
        outputTokens: UnsafeBufferPointer<Int32>, repetitionPenalty: Float, frequencyPenalty: Float,
        presencePenalty: Float, topLogprobs: Int?
    ) {
        self.allowed = allowed
        self.allowedWords = allowedWords
        self.biasTokens = biasTokens
        self.biasValues = biasValues
        self.biasStride = biasStride
        self.biasCount = biasCount
        self.promptTokens = promptTokens
        self.outputTokens = outputTokens
        self.repetitionPenalty = repetitionPenalty
        self.frequencyPenalty = frequencyPenalty
        self.presencePenalty = presencePenalty
        self.topLogprobs = topLogprobs
    }
}

/// A call's per-row request processing: the Swift API's requests, or the C ABI's views.
enum ProcessingSource {
    case requests(UnsafePointer<RequestProcessing>)
    case views(UnsafePointer<ProcessingView>)
}

/// Where a row's requested logprobs go.
enum LogprobsDestination {
    /// A buffer the caller passed: compute them.
    case buffer
    /// None was passed: a request for logprobs fails its row.
    case missing
    /// The call does not return logprobs (a filter): the count is validated, nothing computed.
    case ignored
}

extension RowPipeline {
    /// Prepares a row's processing in `scratch.state` (and its bitmask and edits): validates the
    /// request, gathers the edited tokens (bias, then prompt and output when a penalty is on)
    /// into a hash table, groups them by chunk, and builds the effective bitmask. O(bitmask words + bias + history);
    /// reads no logit. A request with nothing to do leaves the state inactive, so the pass is
    /// the plain one.
    static func prepare(_ processing: RequestProcessing?, vocab: Int, scratch: Scratch, logprobs: LogprobsDestination) {
        guard let processing,
            // Nothing to do (the default request): the plain pass, without touching the scratch.
            !(processing.allowedTokens == nil && processing.logitBias.isEmpty && processing.topLogprobs == nil
                && processing.promptTokens.isEmpty && processing.outputTokens.isEmpty
                && processing.repetitionPenalty == 1 && processing.frequencyPenalty.isFinite
                && processing.presencePenalty.isFinite && processing.dryMultiplier == 0)
        else {
            scratch.state.pointee = ProcessingState()
            return
        }
        // Through buffer pointers: iterating an Array (its read coroutine) allocates in
        // unoptimized builds, and a call must not.
        processing.logitBias.withUnsafeBytes { bias in
            processing.promptTokens.withUnsafeBufferPointer { prompt in
                processing.outputTokens.withUnsafeBufferPointer { output in
                    func run(_ allowed: UnsafeBufferPointer<UInt32>?) {
                        let view = ProcessingView(
                            allowed: allowed?.baseAddress ?? UnsafePointer(bitPattern: 64)!,
                            allowedWords: allowed.map { $0.count } ?? -1,
                            biasTokens: bias.baseAddress.map { $0 + MemoryLayout<LogitBias>.offset(of: \.token)! },
                            biasValues: bias.baseAddress.map { $0 + MemoryLayout<LogitBias>.offset(of: \.bias)! },
                            biasStride: MemoryLayout<LogitBias>.stride, biasCount: processing.logitBias.count,
                            promptTokens: prompt, outputTokens: output,
                            repetitionPenalty: processing.repetitionPenalty,
                            frequencyPenalty: processing.frequencyPenalty, presencePenalty: processing.presencePenalty,
                            topLogprobs: processing.topLogprobs)
                        if processing.dryMultiplier == 0 {
                            prepare(view: view, vocab: vocab, scratch: scratch, logprobs: logprobs)
                            return
                        }
                        processing.drySequenceBreakers.withUnsafeBufferPointer { breakers in
                            var view = view
                            view.setDry(
                                multiplier: processing.dryMultiplier, base: processing.dryBase,
                                allowedLength: processing.dryAllowedLength, penaltyLastN: processing.dryPenaltyLastN,
                                breakers: .nested(breakers))
                            prepare(view: view, vocab: vocab, scratch: scratch, logprobs: logprobs)
                        }
                    }
                    if let words = processing.allowedTokens {
                        words.withUnsafeBufferPointer { run($0) }
                    } else {
                        run(nil)
                    }
                }
            }
        }
    }

    /// ``prepare(_:vocab:scratch:logprobs:)`` of row `index` of a call's processing (none when nil).
    static func prepare(
        _ source: ProcessingSource?, index: Int, vocab: Int, scratch: Scratch, logprobs: LogprobsDestination
    ) {
        switch source {
        case nil: scratch.state.pointee = ProcessingState()
        case .requests(let requests): prepare(requests[index], vocab: vocab, scratch: scratch, logprobs: logprobs)
        case .views(let views): prepare(view: views[index], vocab: vocab, scratch: scratch, logprobs: logprobs)
        }
    }

    /// ``prepare(_:vocab:scratch:logprobs:)`` of a row's processing given as pointers (the C
    /// ABI's `tns_processing`, or a ``RequestProcessing``'s arrays).
    static func prepare(view processing: ProcessingView, vocab: Int, scratch: Scratch, logprobs: LogprobsDestination) {
        var state = ProcessingState()
        defer { scratch.state.pointee = state }
        if processing.allowedWords < 0 && processing.biasCount == 0 && processing.topLogprobs == nil
            && processing.promptTokens.isEmpty && processing.outputTokens.isEmpty
            && processing.repetitionPenalty == 1 && processing.frequencyPenalty.isFinite
            && processing.presencePenalty.isFinite && processing.dry.multiplier == 0
        {
            return
        }
        // The request's own checks, in its order; a missing logprobs buffer comes after the count.
        if let error = RequestProcessing.settingsError(
            repetitionPenalty: processing.repetitionPenalty, frequencyPenalty: processing.frequencyPenalty,
            presencePenalty: processing.presencePenalty,
            topLogprobs: processing.topLogprobs, dry: processing.dry)
        {
            state.error = error
            return
        }
        if let n = processing.topLogprobs {
            switch logprobs {
            case .buffer: state.topLogprobs = n
            case .missing:
                state.error = .missingLogprobsBuffer
                return
            case .ignored: break
            }
        }
        let words = (vocab + 31) / 32
        if processing.allowedWords >= 0 && processing.allowedWords < words {
            state.error = .bitmaskTooShort(words: processing.allowedWords, needed: words)
            return
        }
        let r = processing.repetitionPenalty
        (state.repetitionPenalty, state.frequencyPenalty, state.presencePenalty) =
            (r, processing.frequencyPenalty, processing.presencePenalty)
        // The edited tokens, deduplicated through a hash table sized for this request (so the
        // part that is cleared and probed stays in L1).
        let edits = scratch.staging, table = scratch.table
        let penalizes = r != 1 || processing.frequencyPenalty != 0 || processing.presencePenalty != 0
        let dry = processing.dry.isOn
        let entries =
            processing.biasCount + (r != 1 ? processing.promptTokens.count : 0)
            + (penalizes ? processing.outputTokens.count : 0)
            + (dry ? processing.promptTokens.count + processing.outputTokens.count : 0)
        var size = 16, shift: UInt32 = 28
        while size < 2 * min(entries, vocab) && size < scratch.tableCapacity {
            size *= 2
            shift -= 1
        }
        table.update(repeating: -1, count: size)
        var n = 0
        let error = gatherEdits(
            processing, prompt: r != 1 ? processing.promptTokens : UnsafeBufferPointer(start: nil, count: 0),
            penalizes: penalizes, vocab: vocab, table: table, size: size, shift: shift, edits: edits, count: &n)
        if let error {
            state.error = error
            return
        }
        if processing.dry.multiplier != 0 {
            if let error = addDryEdits(
                processing, vocab: vocab, scratch: scratch, size: size, shift: shift, count: &n)
            {
                state.error = error
                return
            }
            if dry { Dry.finish(edits: edits, count: n, settings: processing.dry) }
        }
        guard processing.allowedWords >= 0 || n > 0 else { return }
        // The effective bitmask: the request's (or all ones), less the edited tokens. Copied
        // first, in one sequential stream: the edits' random probes below then hit the copy in
        // L1, not the caller's words in memory.
        let mask = scratch.mask
        if processing.allowedWords >= 0 {
            mask.update(from: processing.allowed, count: words)
            // A masked token stays masked whatever its bias or penalties: drop its edit (about
            // half of them under a grammar mask), so that no later loop branches on it.
            var kept = 0
            for k in 0..<n {
                let t = Int(edits[k].token)
                edits[kept] = edits[k]
                kept &+= Int(mask[t >> 5] >> UInt32(t & 31) & 1)
            }
            n = kept
        } else {
            mask.update(repeating: ~0, count: words)
        }
        if vocab % 32 != 0 { mask[words - 1] &= (1 << UInt32(vocab % 32)) &- 1 }
        // Group the edits by chunk into `scratch.edits` (a counting sort) and clear their bits.
        let chunks = StatisticsKernel.chunkCount(length: vocab)
        let starts = scratch.editStarts, cursor = scratch.editCursor
        starts.update(repeating: 0, count: chunks + 1)
        for k in 0..<n { starts[Int(edits[k].token) / StatisticsKernel.chunkLength + 1] += 1 }
        for c in 0..<chunks { starts[c + 1] += starts[c] }
        cursor.update(from: starts, count: chunks)
        for k in 0..<n {
            let t = Int(edits[k].token)
            let c = t / StatisticsKernel.chunkLength
            scratch.edits[cursor[c]] = edits[k]
            cursor[c] += 1
            mask[t >> 5] &= ~(1 << UInt32(t & 31))
        }
        state.editCount = n
        state.mask = mask
    }

    /// ``Dry/addEdits(settings:breakers:prompt:output:vocab:heads:free:freeCount:edits:slot:)`` in
    /// the row's scratch: the breakers are checked whenever DRY is on (the window may still be
    /// empty); the head bitmap borrows the mask's words and the Z-values the weights, both free
    /// until later in ``prepare(view:vocab:scratch:logprobs:)`` and the pass.
    static func addDryEdits(
        _ processing: ProcessingView, vocab: Int, scratch: Scratch, size: Int, shift: UInt32, count n: inout Int
    ) -> RowError? {
        let table = scratch.table, edits = scratch.staging
        return scratch.withDryWords(vocab: vocab) { free in
            Dry.addEdits(
                settings: processing.dry, breakers: processing.dryBreakers, prompt: processing.promptTokens,
                output: processing.outputTokens, vocab: vocab, heads: scratch.dryHeads, free: free,
                freeCount: 2 * vocab, edits: edits
            ) { token in
                editSlot(token, table: table, size: size, shift: shift, edits: edits, count: &n)
            }
        }
    }

    /// The index in `edits` of `token`'s edit, added (and `count` incremented) if it is new:
    /// open addressing over `table[0..<size]` (`size = 2^(32 - shift)`, entries -1 when free).
    @inline(__always)
    static func editSlot(
        _ token: Int32, table: UnsafeMutablePointer<Int32>, size: Int, shift: UInt32, edits: UnsafeMutablePointer<Edit>,
        count n: inout Int
    ) -> Int {
        var h = Int((UInt32(bitPattern: token) &* 0x9E37_79B1) >> shift)
        while true {
            let s = Int(table[h])
            if s < 0 { break }
            if edits[s].token == token { return s }
            h = (h + 1) & (size - 1)
        }
        table[h] = Int32(truncatingIfNeeded: n)
        edits[n] = Edit(token: token, count: 0, bias: 0, value: -.infinity, seen: false)
        n += 1
        return n - 1
    }

    /// Adds the bias and history entries to the edits (``editSlot(_:table:size:shift:edits:count:)``):
    /// the bias, the prompt (`prompt`: empty unless the repetition penalty is on; every token of
    /// the request's prompt is range-checked), and the output when a penalty is on. Returns the
    /// first bad entry's error.
    static func gatherEdits(
        _ processing: ProcessingView, prompt: UnsafeBufferPointer<Int32>, penalizes: Bool, vocab: Int,
        table: UnsafeMutablePointer<Int32>, size: Int, shift: UInt32, edits: UnsafeMutablePointer<Edit>,
        count n: inout Int
    ) -> RowError? {
        let bound = Int32(truncatingIfNeeded: vocab)
        let stride = processing.biasStride
        for i in 0..<processing.biasCount {
            let token = processing.biasTokens!.loadUnaligned(fromByteOffset: i * stride, as: Int32.self)
            let bias = processing.biasValues!.loadUnaligned(fromByteOffset: i * stride, as: Float.self)
            guard token >= 0 && token < bound else { return .tokenOutOfRange(Int(token)) }
            guard bias.isFinite else { return .invalidLogitBias(token: Int(token), bias) }
            edits[editSlot(token, table: table, size: size, shift: shift, edits: edits, count: &n)].bias += bias
        }
        let promptToValidate = processing.promptTokens, output = processing.outputTokens
        for i in 0..<promptToValidate.count {
            let token = promptToValidate[i]
            guard token >= 0 && token < bound else { return .tokenOutOfRange(Int(token)) }
        }
        for i in 0..<prompt.count {
            edits[editSlot(prompt[i], table: table, size: size, shift: shift, edits: edits, count: &n)].seen = true
        }
        for i in 0..<output.count {
            let token = output[i]
            guard token >= 0 && token < bound else { return .tokenOutOfRange(Int(token)) }
            if penalizes {
                let k = editSlot(token, table: table, size: size, shift: shift, edits: edits, count: &n)
                edits[k].seen = true
                edits[k].count &+= 1
            }
        }
        return nil
    }
}
