// The C ABI declared in include/topnsigma.h, implemented with @_cdecl over the Swift library.
//
// The structs, enums and limits come from the header itself (module CTopNSigma), so the
// implementation cannot drift from the layouts C callers compile against. Every entry point
// validates its arguments before touching a Swift API that has preconditions: no argument a C
// caller can pass makes the library trap.
import CTopNSigma
import Synchronization
import TopNSigma

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The library's version (`tns_version`).
let libraryVersion: StaticString = "0.1.0"

/// Status codes, as Swift constants of the header's type.
enum Status {
    static let ok = tns_status(TNS_OK)
    static let nullPointer = tns_status(TNS_ERR_NULL_POINTER)
    static let vocabSize = tns_status(TNS_ERR_VOCAB_SIZE)
    static let batchSize = tns_status(TNS_ERR_BATCH_SIZE)
    static let threads = tns_status(TNS_ERR_THREADS)
    static let placement = tns_status(TNS_ERR_PLACEMENT)
    static let format = tns_status(TNS_ERR_FORMAT)
    static let rowStride = tns_status(TNS_ERR_ROW_STRIDE)
    static let structSize = tns_status(TNS_ERR_STRUCT_SIZE)
    static let unsupported = tns_status(TNS_ERR_UNSUPPORTED)
    static let busy = tns_status(TNS_ERR_BUSY)
    static let bufferTooSmall = tns_status(TNS_ERR_BUFFER_TOO_SMALL)
    static let outOfMemory = tns_status(TNS_ERR_OUT_OF_MEMORY)
    static let draft = tns_status(TNS_ERR_DRAFT)

    /// The row status of a row error, and the index it names (-1 when none).
    static func of(_ error: RowError) -> (status: tns_status, index: Int) {
        switch error {
        case .notANumber(let index): return (tns_status(TNS_ROW_NAN), index)
        case .positiveInfinity(let index): return (tns_status(TNS_ROW_POSITIVE_INFINITY), index)
        case .noFiniteLogit: return (tns_status(TNS_ROW_NO_FINITE_LOGIT), -1)
        case .invalidTemperature: return (tns_status(TNS_ROW_INVALID_TEMPERATURE), -1)
        case .invalidNSigma: return (tns_status(TNS_ROW_INVALID_N_SIGMA), -1)
        case .invalidTopK: return (tns_status(TNS_ROW_INVALID_TOP_K), -1)
        case .invalidTopP: return (tns_status(TNS_ROW_INVALID_TOP_P), -1)
        case .invalidMinP: return (tns_status(TNS_ROW_INVALID_MIN_P), -1)
        case .invalidSampler: return (tns_status(TNS_ROW_INVALID_SAMPLER), -1)
        // The vocabulary is checked at the ABI (1 ... 2^31 - 2) before any row is read.
        case .vocabularyTooLarge: return (tns_status(TNS_ERR_VOCAB_SIZE), -1)
        case .invalidLogitBias(let token, _), .tokenOutOfRange(let token):
            return (tns_status(TNS_ROW_INVALID_PROCESSING), token)
        case .invalidRepetitionPenalty, .invalidFrequencyPenalty, .invalidPresencePenalty, .bitmaskTooShort,
            .invalidTopLogprobs,
            .missingLogprobsBuffer:
            return (tns_status(TNS_ROW_INVALID_PROCESSING), -1)
        }
    }

    static func message(_ status: tns_status) -> StaticString {
        switch Int(status) {
        case Int(TNS_OK): return "ok"
        case Int(TNS_ERR_NULL_POINTER): return "a required pointer is NULL"
        case Int(TNS_ERR_VOCAB_SIZE): return "vocabulary size must be in 1...2^31-2"
        case Int(TNS_ERR_BATCH_SIZE):
            return "batch size out of range (max_batch must be in 1...2^24, rows in 0...max_batch)"
        case Int(TNS_ERR_THREADS): return "thread count must be in 0...1024 (0: all cores)"
        case Int(TNS_ERR_PLACEMENT):
            return "placement must be TNS_PLACEMENT_AUTOMATIC, TNS_PLACEMENT_DISABLED or a NUMA node id >= 0"
        case Int(TNS_ERR_FORMAT): return "unknown logit format (TNS_FORMAT_F32, TNS_FORMAT_F16 or TNS_FORMAT_BF16)"
        case Int(TNS_ERR_ROW_STRIDE):
            return "row stride must be at least the vocabulary size (and rows * stride must fit in memory)"
        case Int(TNS_ERR_STRUCT_SIZE):
            return
                "tns_params.struct_size (40...4096) or tns_processing.struct_size (88...4096) invalid: a multiple of 8, the same in every row (tns_params_init, tns_processing_init)"
        case Int(TNS_ERR_UNSUPPORTED): return "tns_params.flags has a bit this library does not know"
        case Int(TNS_ERR_BUSY): return "another call is running on this sampler (use one sampler per concurrent caller)"
        case Int(TNS_ERR_BUFFER_TOO_SMALL): return "output buffer too small (the needed count was written)"
        case Int(TNS_ERR_OUT_OF_MEMORY): return "out of memory"
        case Int(TNS_ERR_DRAFT):
            return
                "invalid drafts (k below 0, unknown kind, a missing draft array, or sparse offsets negative or decreasing)"
        case Int(TNS_ROW_NAN): return "a logit is NaN"
        case Int(TNS_ROW_POSITIVE_INFINITY): return "a logit is +inf"
        case Int(TNS_ROW_NO_FINITE_LOGIT): return "no finite logit (every logit is -inf)"
        case Int(TNS_ROW_INVALID_TEMPERATURE): return "temperature is invalid (must be >= 0)"
        case Int(TNS_ROW_INVALID_N_SIGMA): return "n is invalid (must be >= 0, or Top-n sigma off)"
        case Int(TNS_ROW_INVALID_TOP_K): return "top-k is invalid (must be >= 1)"
        case Int(TNS_ROW_INVALID_TOP_P): return "top-p is invalid (must be in (0, 1])"
        case Int(TNS_ROW_INVALID_MIN_P): return "min-p is invalid (must be in [0, 1])"
        case Int(TNS_ROW_INVALID_PROCESSING):
            return "request processing is invalid (bias, penalty, token id, count, bitmask or logprobs)"
        case Int(TNS_ROW_INVALID_DRAFT): return "a draft token or sparse draft id is outside the vocabulary"
        case Int(TNS_ROW_INVALID_SAMPLER):
            return "a typical, epsilon, eta, XTC, dynamic temperature or DRY parameter is out of its range"
        default: return "unknown status"
        }
    }
}

/// The largest vocabulary, the library's one constant (`TNS_MAX_VOCAB_SIZE` in the header).
let maximumVocabulary = Vocabulary.maximumSize

/// Creates the Swift sampler, the only place that calls `BatchSampler.init`; nil when it throws
/// (the arguments were checked before, so only its scratch allocation can fail).
func makeSampler(
    vocabularySize: Int, maximumBatchSize: Int, threadCount: Int?, placement: NUMAPlacement
) -> BatchSampler? {
    try? BatchSampler(
        vocabularySize: vocabularySize, maximumBatchSize: maximumBatchSize, threadCount: threadCount,
        placement: placement)
}

/// What a `tns_sampler *` points to: the Swift sampler plus the per-row buffers a call converts
/// into, allocated once at creation so that `tns_sample` allocates nothing.
final class SamplerHandle {
    let sampler: BatchSampler
    let parameters: UnsafeMutablePointer<SamplingParameters>
    let results: UnsafeMutablePointer<SampleResult>
    /// Per-row request processing, top logprobs, drafts and verification outcomes: trivial
    /// types, written before they are read, so their pages are touched only when a call uses
    /// them.
    let views: UnsafeMutablePointer<ProcessingView>
    let topLogprobs: UnsafeMutablePointer<TopLogprobs>
    let drafts: UnsafeMutablePointer<DraftView>
    let outcomes: UnsafeMutablePointer<Result<Int, VerificationError>>
    let capacity: Int
    let busy = Atomic<Bool>(false)

    /// Bytes of the per-row buffers, per row of `max_batch`.
    static let bytesPerRow =
        MemoryLayout<SamplingParameters>.stride + MemoryLayout<SampleResult>.stride
        + MemoryLayout<ProcessingView>.stride + MemoryLayout<TopLogprobs>.stride + MemoryLayout<DraftView>.stride
        + MemoryLayout<Result<Int, VerificationError>>.stride

    init?(vocabularySize: Int, maximumBatchSize: Int, threadCount: Int?, placement: NUMAPlacement) {
        // malloc, not Swift's allocate: a failure becomes TNS_ERR_OUT_OF_MEMORY instead of a trap.
        func buffer<T>(_ type: T.Type) -> UnsafeMutablePointer<T>? {
            malloc(maximumBatchSize * MemoryLayout<T>.stride)?.bindMemory(to: T.self, capacity: maximumBatchSize)
        }
        let p = buffer(SamplingParameters.self), r = buffer(SampleResult.self), v = buffer(ProcessingView.self)
        let t = buffer(TopLogprobs.self), d = buffer(DraftView.self), o = buffer(Result<Int, VerificationError>.self)
        guard let p, let r, let v, let t, let d, let o,
            let sampler = makeSampler(
                vocabularySize: vocabularySize, maximumBatchSize: maximumBatchSize, threadCount: threadCount,
                placement: placement)
        else {
            for b in [
                UnsafeMutableRawPointer(p), UnsafeMutableRawPointer(r), UnsafeMutableRawPointer(v),
                UnsafeMutableRawPointer(t), UnsafeMutableRawPointer(d), UnsafeMutableRawPointer(o)
            ] { free(b) }
            return nil
        }
        self.sampler = sampler
        capacity = maximumBatchSize
        (parameters, results, views, topLogprobs, drafts, outcomes) = (p, r, v, t, d, o)
        parameters.initialize(repeating: SamplingParameters(), count: maximumBatchSize)
        results.initialize(repeating: .failure(.noFiniteLogit), count: maximumBatchSize)
    }

    deinit {
        parameters.deinitialize(count: capacity)
        results.deinitialize(count: capacity)
        for b in [
            UnsafeMutableRawPointer(parameters), UnsafeMutableRawPointer(results), UnsafeMutableRawPointer(views),
            UnsafeMutableRawPointer(topLogprobs), UnsafeMutableRawPointer(drafts), UnsafeMutableRawPointer(outcomes)
        ] {
            free(b)
        }
    }
}

/// The machine's physical memory in bytes (`+inf` when unknown).
package func physicalMemoryBytes() -> Double {
    let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
    return pages > 0 && size > 0 ? Double(pages) * Double(size) : .infinity
}

/// Bytes of one row's scratch for rows of `vocab` logits, from the layout the library allocates
/// (`+inf` when it overflows `Int`): 64 to 70 bytes per logit.
package func rowScratchBytes(vocab: Int) -> Double {
    BatchSampler.scratchByteCount(vocab: vocab).map(Double.init) ?? .infinity
}

/// Bytes a handle allocates: one row scratch per thread, and its per-row parameter, result,
/// processing, logprobs and draft buffers.
package func samplerMemoryEstimate(vocabularySize: Int, maximumBatchSize: Int, threadCount: Int) -> Double {
    Double(threadCount) * rowScratchBytes(vocab: vocabularySize)
        + Double(maximumBatchSize) * Double(SamplerHandle.bytesPerRow)
}

/// Whether `bytes` of scratch may be asked for. Swift's allocations trap, and on Linux a large
/// `malloc` can succeed and leave the process to the OOM killer when the pages are touched, so
/// anything not below physical memory is refused up front (TNS_ERR_OUT_OF_MEMORY).
func fitsInMemory(_ bytes: Double) -> Bool { bytes < physicalMemoryBytes() }

/// Whether a `tns_params.struct_size` can be read: at least version 1's size, a multiple of 8,
/// and at most TNS_PARAMS_MAX_SIZE (an uninitialized field is rejected, not used as a stride).
@inline(__always)
func validStructSize(_ size: Int) -> Bool {
    size >= Int(TNS_PARAMS_V1_SIZE) && size <= Int(TNS_PARAMS_MAX_SIZE) && size % 8 == 0
}

@inline(__always)
func handle(_ pointer: OpaquePointer) -> SamplerHandle {
    Unmanaged<SamplerHandle>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
}

/// Reads one row's `tns_params` (whose `struct_size` the caller checked): the fields that fit in
/// `structSize`, defaults for the rest.
@inline(__always)
func readParameters(_ raw: UnsafeRawPointer, structSize: Int) -> tns_params {
    var p = tns_params()
    tns_params_init(&p)
    withUnsafeMutableBytes(of: &p) { dst in
        dst.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: min(structSize, dst.count)))
    }
    return p
}

/// The Swift parameters of a C struct, or the whole-call status that rejects it.
@inline(__always)
func swiftParameters(_ p: tns_params) -> (SamplingParameters, tns_status) {
    if p.flags & ~UInt32(TNS_KNOWN_FLAGS) != 0 { return (SamplingParameters(), Status.unsupported) }
    let flags = Int32(bitPattern: p.flags)
    var order: SamplerOrder? = nil
    if flags & Int32(TNS_USE_SAMPLER_ORDER) != 0 {
        guard let read = SamplerOrder(packed: p.sampler_order) else {
            return (SamplingParameters(), Status.unsupported)
        }
        order = read
    }
    var parameters = SamplingParameters(
        temperature: p.temperature,
        nSigma: flags & Int32(TNS_USE_N_SIGMA) != 0 ? p.n_sigma : nil,
        seed: p.seed,
        topK: flags & Int32(TNS_USE_TOP_K) != 0 ? Int(p.top_k) : nil,
        topP: flags & Int32(TNS_USE_TOP_P) != 0 ? p.top_p : nil,
        minP: flags & Int32(TNS_USE_MIN_P) != 0 ? p.min_p : nil,
        typicalP: flags & Int32(TNS_USE_TYPICAL_P) != 0 ? p.typical_p : nil,
        epsilon: flags & Int32(TNS_USE_EPSILON) != 0 ? p.epsilon : nil,
        eta: flags & Int32(TNS_USE_ETA) != 0 ? p.eta : nil,
        xtcThreshold: flags & Int32(TNS_USE_XTC) != 0 ? p.xtc_threshold : nil,
        xtcProbability: p.xtc_probability,
        dynamicTemperatureRange: flags & Int32(TNS_USE_DYNATEMP) != 0 ? p.dynatemp_range : nil,
        dynamicTemperatureExponent: p.dynatemp_exponent,
        pLess: flags & Int32(TNS_USE_P_LESS) != 0, order: order)
    if flags & Int32(TNS_LLAMA_CPP_SENTINELS) != 0 { parameters = parameters.withLlamaCppSentinels() }
    return (parameters, Status.ok)
}

// MARK: - Versions and messages

@_cdecl("tns_abi_version")
public func cABIVersion() -> Int32 { Int32(TNS_ABI_VERSION) }

@_cdecl("tns_max_vocab_size")
public func cMaxVocabSize() -> Int64 { Int64(maximumVocabulary) }

@_cdecl("tns_version")
public func cVersion() -> UnsafePointer<CChar> {
    UnsafeRawPointer(libraryVersion.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("tns_build_info")
public func cBuildInfo() -> UnsafePointer<CChar> {
    UnsafeRawPointer(BuildTarget.features.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("tns_sampler_order_parse")
public func cSamplerOrderParse(
    _ text: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UInt64>?, _ message: UnsafeMutablePointer<CChar>?,
    _ capacity: Int64
) -> tns_status {
    guard let text, let out else { return Status.nullPointer }
    do throws(SamplerOrder.ParseError) {
        out.pointee = try SamplerOrder(llamaCpp: String(cString: text)).packed
        return Status.ok
    } catch {
        if let message, capacity > 0 {
            let bytes = Array(error.description.utf8.prefix(Int(min(capacity - 1, Int64(Int32.max)))))
            for (i, b) in bytes.enumerated() { message[i] = CChar(bitPattern: b) }
            message[bytes.count] = 0
        }
        return tns_status(TNS_ERR_UNSUPPORTED)
    }
}

@_cdecl("tns_status_message")
public func cStatusMessage(_ status: tns_status) -> UnsafePointer<CChar> {
    UnsafeRawPointer(Status.message(status).utf8Start).assumingMemoryBound(to: CChar.self)
}

// MARK: - Sampler lifetime

@_cdecl("tns_sampler_create")
public func cSamplerCreate(
    _ vocabSize: Int64, _ maxBatch: Int64, _ threads: Int32, _ placement: Int32,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> tns_status {
    guard let out else { return Status.nullPointer }
    out.pointee = nil
    guard vocabSize >= 1 && vocabSize <= Int64(maximumVocabulary) else { return Status.vocabSize }
    guard maxBatch >= 1 && maxBatch <= Int64(TNS_MAX_BATCH) else { return Status.batchSize }
    guard threads >= 0 && threads <= Int32(TNS_MAX_THREADS) else { return Status.threads }
    let numaPlacement: NUMAPlacement
    switch placement {
    case Int32(TNS_PLACEMENT_AUTOMATIC): numaPlacement = .automatic
    case Int32(TNS_PLACEMENT_DISABLED): numaPlacement = .disabled
    case 0...: numaPlacement = .node(Int(placement))
    default: return Status.placement
    }
    // Refuse sizes that cannot fit in this machine's memory: a scratch region per thread, of the
    // layout the sampler allocates (about 64 bytes per logit).
    let threadCount = threads == 0 ? BatchSampler.defaultThreadCount : Int(threads)
    let estimate = samplerMemoryEstimate(
        vocabularySize: Int(vocabSize), maximumBatchSize: Int(maxBatch), threadCount: threadCount)
    guard fitsInMemory(estimate) else { return Status.outOfMemory }
    guard
        let h = SamplerHandle(
            vocabularySize: Int(vocabSize), maximumBatchSize: Int(maxBatch),
            threadCount: threads == 0 ? nil : Int(threads),
            placement: numaPlacement)
    else { return Status.outOfMemory }
    out.pointee = OpaquePointer(Unmanaged.passRetained(h).toOpaque())
    return Status.ok
}

@_cdecl("tns_sampler_destroy")
public func cSamplerDestroy(_ sampler: OpaquePointer?) {
    guard let sampler else { return }
    Unmanaged<SamplerHandle>.fromOpaque(UnsafeRawPointer(sampler)).release()
}

@_cdecl("tns_sampler_vocab_size")
public func cSamplerVocabSize(_ sampler: OpaquePointer?) -> Int64 {
    guard let sampler else { return 0 }
    return Int64(handle(sampler).sampler.vocabularySize)
}

@_cdecl("tns_sampler_max_batch")
public func cSamplerMaxBatch(_ sampler: OpaquePointer?) -> Int64 {
    guard let sampler else { return 0 }
    return Int64(handle(sampler).sampler.maximumBatchSize)
}

@_cdecl("tns_sampler_threads")
public func cSamplerThreads(_ sampler: OpaquePointer?) -> Int32 {
    guard let sampler else { return 0 }
    return Int32(handle(sampler).sampler.threadCount)
}

// MARK: - Batched sampling

@_cdecl("tns_sample")
public func cSample(
    _ sampler: OpaquePointer?, _ logits: UnsafeRawPointer?, _ format: Int32, _ rows: Int64, _ rowStride: Int64,
    _ params: UnsafeRawPointer?, _ steps: UnsafePointer<UInt64>?,
    _ tokens: UnsafeMutablePointer<Int64>?, _ logprobs: UnsafeMutablePointer<Double>?,
    _ kept: UnsafeMutablePointer<Int64>?, _ rowStatus: UnsafeMutablePointer<tns_status>?
) -> tns_status {
    sampleRows(sampler, logits, format, rows, rowStride, params, nil, steps, tokens, logprobs, kept, rowStatus, nil)
}

@_cdecl("tns_sample_processed")
public func cSampleProcessed(
    _ sampler: OpaquePointer?, _ logits: UnsafeRawPointer?, _ format: Int32, _ rows: Int64, _ rowStride: Int64,
    _ params: UnsafeRawPointer?, _ processing: UnsafeRawPointer?, _ steps: UnsafePointer<UInt64>?,
    _ tokens: UnsafeMutablePointer<Int64>?, _ logprobs: UnsafeMutablePointer<Double>?,
    _ kept: UnsafeMutablePointer<Int64>?, _ rowStatus: UnsafeMutablePointer<tns_status>?,
    _ topLogprobs: UnsafeMutablePointer<tns_top_logprobs>?
) -> tns_status {
    sampleRows(
        sampler, logits, format, rows, rowStride, params, processing, steps, tokens, logprobs, kept, rowStatus,
        topLogprobs)
}

/// The format argument of a call, or nil for an unknown one.
func logitFormat(_ format: Int32) -> LogitFormat? {
    switch format {
    case Int32(TNS_FORMAT_F32): return .float32
    case Int32(TNS_FORMAT_F16): return .float16
    case Int32(TNS_FORMAT_BF16): return .bfloat16
    default: return nil
    }
}

/// Whether `rows` rows of `vocab` elements of `format`, `stride` elements apart, are addressable.
func addressable(rows: Int, stride: Int, vocab: Int, format: LogitFormat) -> Bool {
    let (span, o1) = (rows - 1).multipliedReportingOverflow(by: stride)
    let (elements, o2) = span.addingReportingOverflow(vocab)
    let (_, o3) = elements.multipliedReportingOverflow(by: format.byteCount)
    return !o1 && !o2 && !o3
}

/// Reads each row's `tns_params` into the handle's buffer: TNS_OK, or the whole-call status.
func readAllParameters(_ params: UnsafeRawPointer, rows n: Int, into h: SamplerHandle) -> tns_status {
    let structSize = Int(params.loadUnaligned(as: UInt32.self))
    guard validStructSize(structSize) else { return Status.structSize }
    for r in 0..<n {
        let raw = params + r * structSize
        guard Int(raw.loadUnaligned(as: UInt32.self)) == structSize else { return Status.structSize }
        let (p, status) = swiftParameters(readParameters(raw, structSize: structSize))
        guard status == Status.ok else { return status }
        h.parameters[r] = p
    }
    return Status.ok
}

/// The largest count a `tns_processing` array may have.
let maximumProcessingCount = Int64(Int32.max)

/// Reads one row's `tns_processing` (whose `struct_size` the caller checked) as a view. An
/// invalid count or a NULL array with a positive count gives a view whose repetition penalty is
/// NaN, so that the row fails with TNS_ROW_INVALID_PROCESSING (index -1) before reading anything.
func processingView(_ raw: UnsafeRawPointer, structSize: Int, vocab: Int) -> ProcessingView {
    var c = tns_processing()
    tns_processing_init(&c)
    withUnsafeMutableBytes(of: &c) { dst in
        dst.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: min(structSize, dst.count)))
    }
    func valid(_ pointer: UnsafeRawPointer?, _ count: Int64) -> Bool {
        count >= 0 && count <= maximumProcessingCount && (count == 0 || pointer != nil)
    }
    let ok =
        valid(c.bias_ids, c.bias_count) && valid(c.bias_values, c.bias_count)
        && valid(c.prompt_tokens, c.prompt_count) && valid(c.output_tokens, c.output_count) && c.top_logprobs >= -1
        && (c.dry_multiplier == 0
            || (valid(c.dry_breaker_lengths, c.dry_breaker_count) && valid(c.dry_breaker_tokens, c.dry_breaker_count)))
    let words = (vocab + 31) / 32
    var view = ProcessingView(
        allowed: c.allowed ?? UnsafePointer(bitPattern: 64)!, allowedWords: c.allowed != nil ? words : -1,
        biasTokens: c.bias_count > 0 ? UnsafeRawPointer(c.bias_ids) : nil,
        biasValues: c.bias_count > 0 ? UnsafeRawPointer(c.bias_values) : nil,
        biasStride: 4, biasCount: ok ? Int(c.bias_count) : 0,
        promptTokens: UnsafeBufferPointer(start: c.prompt_tokens, count: ok ? Int(c.prompt_count) : 0),
        outputTokens: UnsafeBufferPointer(start: c.output_tokens, count: ok ? Int(c.output_count) : 0),
        repetitionPenalty: ok ? c.repetition_penalty : .nan, frequencyPenalty: c.frequency_penalty,
        presencePenalty: c.presence_penalty, topLogprobs: ok && c.top_logprobs != -1 ? Int(c.top_logprobs) : nil)
    if ok && c.dry_multiplier != 0 {
        view.setDry(
            multiplier: c.dry_multiplier, base: c.dry_base, allowedLength: Int(c.dry_allowed_length),
            penaltyLastN: Int(c.dry_penalty_last_n),
            breakers: .flat(
                tokens: c.dry_breaker_tokens,
                lengths: UnsafeBufferPointer(start: c.dry_breaker_lengths, count: Int(c.dry_breaker_count))))
    }
    return view
}

/// The body of `tns_sample` and `tns_sample_processed`.
func sampleRows(
    _ sampler: OpaquePointer?, _ logits: UnsafeRawPointer?, _ format: Int32, _ rows: Int64, _ rowStride: Int64,
    _ params: UnsafeRawPointer?, _ processing: UnsafeRawPointer?, _ steps: UnsafePointer<UInt64>?,
    _ tokens: UnsafeMutablePointer<Int64>?, _ logprobs: UnsafeMutablePointer<Double>?,
    _ kept: UnsafeMutablePointer<Int64>?, _ rowStatus: UnsafeMutablePointer<tns_status>?,
    _ topLogprobs: UnsafeMutablePointer<tns_top_logprobs>?
) -> tns_status {
    guard let sampler else { return Status.nullPointer }
    let h = handle(sampler)
    let vocab = h.sampler.vocabularySize
    guard rows >= 0 && rows <= Int64(h.capacity) else { return Status.batchSize }
    guard let logitFormat = logitFormat(format) else { return Status.format }
    guard rowStride >= Int64(vocab) else { return Status.rowStride }
    let n = Int(rows)
    if n == 0 { return Status.ok }
    guard let logits, let params, let steps, let tokens, let rowStatus else { return Status.nullPointer }
    guard addressable(rows: n, stride: Int(rowStride), vocab: vocab, format: logitFormat) else {
        return Status.rowStride
    }
    guard validStructSize(Int(params.loadUnaligned(as: UInt32.self))) else { return Status.structSize }
    var processingSize = 0
    if let processing {
        processingSize = Int(processing.loadUnaligned(as: UInt32.self))
        guard
            processingSize >= Int(TNS_PROCESSING_V1_SIZE) && processingSize <= Int(TNS_PARAMS_MAX_SIZE)
                && processingSize % 8 == 0
        else { return Status.structSize }
    }

    let (exchanged, _) = h.busy.compareExchange(expected: false, desired: true, ordering: .acquiring)
    guard exchanged else { return Status.busy }
    defer { h.busy.store(false, ordering: .releasing) }

    let status = readAllParameters(params, rows: n, into: h)
    guard status == Status.ok else { return status }
    if let processing {
        for r in 0..<n {
            let raw = processing + r * processingSize
            guard Int(raw.loadUnaligned(as: UInt32.self)) == processingSize else { return Status.structSize }
            (h.views + r).initialize(to: processingView(raw, structSize: processingSize, vocab: vocab))
        }
    }
    h.sampler.sample(
        logits: logits, format: logitFormat, rows: n, rowStride: Int(rowStride), parameters: h.parameters,
        processing: processing != nil ? UnsafePointer(h.views) : nil, steps: steps, into: h.results,
        logprobs: topLogprobs != nil ? h.topLogprobs : nil)
    for r in 0..<n {
        let asked = processing != nil && h.views[r].topLogprobs != nil
        switch h.results[r] {
        case .success(let token):
            tokens[r] = Int64(token.token)
            logprobs?[r] = token.logProbability
            kept?[r] = Int64(token.candidateCount)
            rowStatus[r] = Status.ok
        case .failure(let error):
            let (status, index) = Status.of(error)
            tokens[r] = Int64(index)
            logprobs?[r] = .nan
            kept?[r] = 0
            rowStatus[r] = status
        }
        guard let topLogprobs else { continue }
        let out = topLogprobs + r
        if asked, case .success = h.results[r] {
            let l = h.topLogprobs[r]
            out.pointee.count = Int32(l.count)
            out.pointee.rank = Int32(l.sampledRank)
            out.pointee.sampled_logprob = l.sampledLogprob
            withUnsafeMutableBytes(of: &out.pointee.ids) { ids in
                withUnsafeMutableBytes(of: &out.pointee.logprobs) { values in
                    for i in 0..<l.count {
                        let entry = l[i]
                        ids.storeBytes(of: Int32(entry.token), toByteOffset: 4 * i, as: Int32.self)
                        values.storeBytes(of: entry.logprob, toByteOffset: 8 * i, as: Double.self)
                    }
                }
            }
        } else {
            out.pointee.count = 0
            out.pointee.rank = 0
            out.pointee.sampled_logprob = .nan
        }
    }
    return Status.ok
}

// MARK: - Speculative verification

@_cdecl("tns_verify")
public func cVerify(
    _ sampler: OpaquePointer?, _ logits: UnsafeRawPointer?, _ format: Int32, _ requests: Int64, _ k: Int64,
    _ rowStride: Int64, _ params: UnsafeRawPointer?, _ steps: UnsafePointer<UInt64>?,
    _ drafts: UnsafePointer<tns_drafts>?, _ accepted: UnsafeMutablePointer<Int64>?,
    _ outTokens: UnsafeMutablePointer<Int64>?, _ outLogprobs: UnsafeMutablePointer<Double>?,
    _ requestStatus: UnsafeMutablePointer<tns_status>?, _ errorPosition: UnsafeMutablePointer<Int64>?
) -> tns_status {
    guard let sampler else { return Status.nullPointer }
    let h = handle(sampler)
    let vocab = h.sampler.vocabularySize
    guard requests >= 0 && requests <= Int64(h.capacity) else { return Status.batchSize }
    guard let logitFormat = logitFormat(format) else { return Status.format }
    guard rowStride >= Int64(vocab) else { return Status.rowStride }
    guard k >= 0 else { return Status.draft }
    let n = Int(requests)
    if n == 0 { return Status.ok }
    guard let logits, let params, let steps, let drafts, let accepted, let outTokens, let requestStatus else {
        return Status.nullPointer
    }
    // requests · (k + 1) rows must be addressable, and requests · (k + 1) output slots.
    let (perRequest, o0) = Int(k).addingReportingOverflow(1)
    let (rowCount, o1) = n.multipliedReportingOverflow(by: perRequest)
    guard !o0 && !o1 && addressable(rows: rowCount, stride: Int(rowStride), vocab: vocab, format: logitFormat)
    else { return Status.rowStride }
    guard validStructSize(Int(params.loadUnaligned(as: UInt32.self))) else { return Status.structSize }
    let d = drafts.pointee
    let kk = Int(k), positions = n * kk
    guard positions == 0 || (d.tokens != nil && d.probabilities != nil) else { return Status.draft }
    switch d.kind {
    case Int32(TNS_DRAFT_POINT_MASS): break
    case Int32(TNS_DRAFT_DENSE):
        let (_, o) = positions.multipliedReportingOverflow(by: vocab)
        guard positions == 0 || (d.dense != nil && !o) else { return Status.draft }
    case Int32(TNS_DRAFT_SPARSE):
        guard let offsets = d.sparse_offsets else { return Status.draft }
        guard offsets[0] == 0 else { return Status.draft }
        for i in 0..<positions where offsets[i + 1] < offsets[i] { return Status.draft }
        guard offsets[positions] == 0 || (d.sparse_ids != nil && d.sparse_probabilities != nil) else {
            return Status.draft
        }
    default: return Status.draft
    }

    let (exchanged, _) = h.busy.compareExchange(expected: false, desired: true, ordering: .acquiring)
    guard exchanged else { return Status.busy }
    defer { h.busy.store(false, ordering: .releasing) }

    let status = readAllParameters(params, rows: n, into: h)
    guard status == Status.ok else { return status }
    let draftTokens = TokenIDs.wide(d.tokens ?? UnsafePointer(bitPattern: 64)!)
    let draftProbabilities = d.probabilities ?? UnsafePointer(bitPattern: 64)!
    for r in 0..<n {
        let distribution: DraftView.Distribution
        switch d.kind {
        case Int32(TNS_DRAFT_DENSE): distribution = kk == 0 ? .pointMass : .dense(d.dense! + r * kk * vocab)
        case Int32(TNS_DRAFT_SPARSE):
            distribution = .compressed(
                offsets: d.sparse_offsets! + r * kk, ids: d.sparse_ids ?? UnsafePointer(bitPattern: 64)!,
                probabilities: d.sparse_probabilities ?? UnsafePointer(bitPattern: 64)!)
        default: distribution = .pointMass
        }
        (h.drafts + r).initialize(
            to: DraftView(
                tokens: draftTokens + r * kk, probabilities: draftProbabilities + r * kk, distribution: distribution))
    }
    let tokensOut = TokenIDSink.wide(outTokens)
    h.sampler.verify(
        logits: logits, format: logitFormat, requests: n, k: kk, rowStride: Int(rowStride), drafts: h.drafts,
        parameters: h.parameters, steps: steps, tokens: tokensOut, logProbabilities: outLogprobs, outcomes: h.outcomes)
    for r in 0..<n {
        let base = r * perRequest
        let emitted: Int
        switch h.outcomes[r] {
        case .success(let a):
            accepted[r] = Int64(a)
            requestStatus[r] = Status.ok
            errorPosition?[r] = -1
            emitted = a + 1
        case .failure(let error):
            accepted[r] = -1
            let (status, position, index) = verificationStatus(error)
            requestStatus[r] = status
            errorPosition?[r] = Int64(position)
            outTokens[base] = Int64(index)
            outLogprobs?[base] = .nan
            emitted = 1
        }
        for i in emitted..<perRequest {
            outTokens[base + i] = -1
            outLogprobs?[base + i] = .nan
        }
    }
    return Status.ok
}

/// A failed request's status, error position and the index `out_tokens` reports.
func verificationStatus(_ error: VerificationError) -> (tns_status, Int, Int) {
    switch error {
    case .row(let row, let rowError):
        let (status, index) = Status.of(rowError)
        return (status, row, index)
    case .tokenOutOfRange(let position, let token), .sparseTokenOutOfRange(let position, let token):
        return (tns_status(TNS_ROW_INVALID_DRAFT), position, token)
    // Counts come from k here: they cannot mismatch.
    case .tokenCount, .probabilityCount, .denseLength, .sparseCount:
        return (tns_status(TNS_ROW_INVALID_DRAFT), -1, -1)
    }
}

// MARK: - Single rows

func writeStatistics(_ stats: UnsafeMutablePointer<tns_row_stats>?, _ s: RowStatistics, threshold: Double) {
    guard let stats else { return }
    stats.pointee = tns_row_stats(
        max: Double(s.maximum), mean: s.mean, std: s.standardDeviation, threshold: threshold,
        finite: Int64(s.finiteCount), argmax: Int64(s.argmax), error_index: -1)
}

/// Writes a failed row's statistics and returns its status. A row without a finite logit has
/// well-defined statistics, those of the empty set as `RowStatistics` states them (max -inf,
/// mean 0, std 0, finite 0, argmax -1) and the threshold they give (`max - n·0` = -inf); any
/// other row error leaves the statistics undefined: NaN, finite 0, argmax -1.
func writeRowError(_ stats: UnsafeMutablePointer<tns_row_stats>?, _ error: RowError) -> tns_status {
    let (status, index) = Status.of(error)
    if error == .noFiniteLogit {
        stats?.pointee = tns_row_stats(
            max: -.infinity, mean: 0, std: 0, threshold: -.infinity, finite: 0, argmax: -1, error_index: -1)
    } else {
        stats?.pointee = tns_row_stats(
            max: .nan, mean: .nan, std: .nan, threshold: .nan, finite: 0, argmax: -1, error_index: Int64(index))
    }
    return status
}

// MARK: - Single rows on a handle's scratch (no allocation)

/// Runs `body` with the handle's scratch, holding its busy flag (the same one `tns_sample` takes),
/// or returns TNS_ERR_BUSY.
func withHandleScratch(_ h: SamplerHandle, _ body: (FilteredDistribution.Scratch) -> tns_status) -> tns_status {
    let (exchanged, _) = h.busy.compareExchange(expected: false, desired: true, ordering: .acquiring)
    guard exchanged else { return Status.busy }
    defer { h.busy.store(false, ordering: .releasing) }
    return h.sampler.withRowScratch(body) ?? Status.busy
}

/// `tns_filter`'s and `tns_sampler_filter`'s shared body: Top-nσ's kept ids of one row, worked
/// out in `scratch` (the caller has checked the pointers and sizes).
func filterRow(
    _ row: UnsafePointer<Float>, vocab: Int, _ useNSigma: Int32, _ nSigma: Float, scratch: FilteredDistribution.Scratch,
    _ stats: UnsafeMutablePointer<tns_row_stats>?, _ keptIDs: UnsafeMutablePointer<Int32>?, _ capacity: Int64,
    _ keptCount: UnsafeMutablePointer<Int64>
) -> tns_status {
    let parameters = SamplingParameters(temperature: 1, nSigma: useNSigma != 0 ? nSigma : nil)
    switch FilteredDistribution.survivors(row, vocab: vocab, parameters: parameters, scratch: scratch) {
    case .failure(let error):
        return writeRowError(stats, error)
    case .success(let (statistics, threshold, n)):
        keptCount.pointee = Int64(n)
        guard n <= capacity else { return Status.bufferTooSmall }
        writeStatistics(stats, statistics, threshold: threshold)
        for i in 0..<n { keptIDs![i] = scratch.candidates[i].index }
        return Status.ok
    }
}

/// `tns_filtered_distribution`'s and `tns_sampler_filtered_distribution`'s shared body:
/// `FilteredDistribution.keep` (the body of `FilteredDistribution.of`) in `scratch`, copied out.
func filteredDistribution(
    _ row: UnsafePointer<Float>, vocab: Int, _ parameters: SamplingParameters, scratch: FilteredDistribution.Scratch,
    _ stats: UnsafeMutablePointer<tns_row_stats>?, _ tokens: UnsafeMutablePointer<Int32>?,
    _ probabilities: UnsafeMutablePointer<Double>?, _ capacity: Int64, _ count: UnsafeMutablePointer<Int64>
) -> tns_status {
    switch FilteredDistribution.keep(row, vocab: vocab, parameters: parameters, processing: nil, scratch: scratch) {
    case .failure(let error):
        return writeRowError(stats, error)
    case .success(let (statistics, threshold, n)):
        count.pointee = Int64(n)
        guard n <= capacity else { return Status.bufferTooSmall }
        writeStatistics(stats, statistics, threshold: threshold)
        for i in 0..<n {
            tokens![i] = scratch.candidates[i].index
            probabilities![i] = scratch.weights[i]
        }
        return Status.ok
    }
}

/// Reads and checks a `tns_params` for a single-row call: the Swift parameters, or a status.
func singleRowParameters(_ params: UnsafeRawPointer) -> (SamplingParameters, tns_status) {
    let structSize = Int(params.loadUnaligned(as: UInt32.self))
    guard validStructSize(structSize) else { return (SamplingParameters(), Status.structSize) }
    return swiftParameters(readParameters(params, structSize: structSize))
}

@_cdecl("tns_filter")
public func cFilter(
    _ row: UnsafePointer<Float>?, _ vocab: Int64, _ useNSigma: Int32, _ nSigma: Float,
    _ stats: UnsafeMutablePointer<tns_row_stats>?, _ keptIDs: UnsafeMutablePointer<Int32>?, _ capacity: Int64,
    _ keptCount: UnsafeMutablePointer<Int64>?
) -> tns_status {
    guard let row, let keptCount else { return Status.nullPointer }
    guard vocab >= 1 && vocab <= Int64(maximumVocabulary) else { return Status.vocabSize }
    // A negative capacity holds nothing: as 0, the count is written with TNS_ERR_BUFFER_TOO_SMALL.
    let capacity = max(capacity, 0)
    guard capacity == 0 || keptIDs != nil else { return Status.nullPointer }
    if useNSigma != 0, let error = SamplingParameters(nSigma: nSigma).validationError {
        return writeRowError(stats, error)
    }
    guard fitsInMemory(rowScratchBytes(vocab: Int(vocab))) else { return Status.outOfMemory }
    return FilteredDistribution.withScratch(vocab: Int(vocab)) { scratch in
        filterRow(row, vocab: Int(vocab), useNSigma, nSigma, scratch: scratch, stats, keptIDs, capacity, keptCount)
    } ?? Status.outOfMemory
}

@_cdecl("tns_filtered_distribution")
public func cFilteredDistribution(
    _ row: UnsafePointer<Float>?, _ vocab: Int64, _ params: UnsafeRawPointer?,
    _ stats: UnsafeMutablePointer<tns_row_stats>?, _ tokens: UnsafeMutablePointer<Int32>?,
    _ probabilities: UnsafeMutablePointer<Double>?, _ capacity: Int64, _ count: UnsafeMutablePointer<Int64>?
) -> tns_status {
    guard let row, let params, let count else { return Status.nullPointer }
    guard vocab >= 1 && vocab <= Int64(maximumVocabulary) else { return Status.vocabSize }
    // A negative capacity holds nothing: as 0, the count is written with TNS_ERR_BUFFER_TOO_SMALL.
    let capacity = max(capacity, 0)
    guard capacity == 0 || (tokens != nil && probabilities != nil) else { return Status.nullPointer }
    let (parameters, status) = singleRowParameters(params)
    guard status == Status.ok else { return status }
    if let error = parameters.validationError { return writeRowError(stats, error) }
    guard fitsInMemory(rowScratchBytes(vocab: Int(vocab))) else { return Status.outOfMemory }
    return FilteredDistribution.withScratch(vocab: Int(vocab)) { scratch in
        filteredDistribution(
            row, vocab: Int(vocab), parameters, scratch: scratch, stats, tokens, probabilities, capacity, count)
    } ?? Status.outOfMemory
}

@_cdecl("tns_sampler_filter")
public func cSamplerFilter(
    _ sampler: OpaquePointer?, _ row: UnsafePointer<Float>?, _ useNSigma: Int32, _ nSigma: Float,
    _ stats: UnsafeMutablePointer<tns_row_stats>?, _ keptIDs: UnsafeMutablePointer<Int32>?, _ capacity: Int64,
    _ keptCount: UnsafeMutablePointer<Int64>?
) -> tns_status {
    guard let sampler, let row, let keptCount else { return Status.nullPointer }
    // A negative capacity holds nothing: as 0, the count is written with TNS_ERR_BUFFER_TOO_SMALL.
    let capacity = max(capacity, 0)
    guard capacity == 0 || keptIDs != nil else { return Status.nullPointer }
    if useNSigma != 0, let error = SamplingParameters(nSigma: nSigma).validationError {
        return writeRowError(stats, error)
    }
    let h = handle(sampler)
    return withHandleScratch(h) { scratch in
        filterRow(
            row, vocab: h.sampler.vocabularySize, useNSigma, nSigma, scratch: scratch, stats, keptIDs, capacity,
            keptCount)
    }
}

@_cdecl("tns_sampler_filtered_distribution")
public func cSamplerFilteredDistribution(
    _ sampler: OpaquePointer?, _ row: UnsafePointer<Float>?, _ params: UnsafeRawPointer?,
    _ stats: UnsafeMutablePointer<tns_row_stats>?, _ tokens: UnsafeMutablePointer<Int32>?,
    _ probabilities: UnsafeMutablePointer<Double>?, _ capacity: Int64, _ count: UnsafeMutablePointer<Int64>?
) -> tns_status {
    guard let sampler, let row, let params, let count else { return Status.nullPointer }
    // A negative capacity holds nothing: as 0, the count is written with TNS_ERR_BUFFER_TOO_SMALL.
    let capacity = max(capacity, 0)
    guard capacity == 0 || (tokens != nil && probabilities != nil) else { return Status.nullPointer }
    let (parameters, status) = singleRowParameters(params)
    guard status == Status.ok else { return status }
    if let error = parameters.validationError { return writeRowError(stats, error) }
    let h = handle(sampler)
    return withHandleScratch(h) { scratch in
        filteredDistribution(
            row, vocab: h.sampler.vocabularySize, parameters, scratch: scratch, stats, tokens, probabilities, capacity,
            count)
    }
}
