import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RowPipeline {
    /// One row's scratch: a candidate slot and a weight per logit, and per chunk a provisional
    /// threshold, a survivor count and (split rows) partial statistics. Laid out in one block by
    /// ``Layout``.
    package struct Scratch {
        var thresholds: UnsafeMutablePointer<Float>
        var counts: UnsafeMutablePointer<Int>
        package var candidates: UnsafeMutablePointer<Candidate>
        /// Top-p's weights, one per candidate slot.
        package var weights: UnsafeMutablePointer<Double>
        /// Split rows: each chunk's partial statistics, merged in chunk order by the task that
        /// settles the row.
        var partials: UnsafeMutablePointer<StatisticsKernel.ChunkPartial>
        /// The row's request processing, prepared before its pass (``prepare(_:vocab:scratch:)``).
        var state: UnsafeMutablePointer<ProcessingState>
        /// The effective allowed-token bitmask: the request's, less the edited tokens.
        var mask: UnsafeMutablePointer<UInt32>
        /// The edited tokens' hash table (token → index in ``edits``), open addressing; only
        /// the part a request needs is cleared and used.
        var table: UnsafeMutablePointer<Int32>
        var tableCapacity: Int
        /// The tokens that the bias or the penalties change.
        var edits: UnsafeMutablePointer<Edit>
        /// The edits as the hash table gathers them, before they are grouped by chunk.
        var staging: UnsafeMutablePointer<Edit>
        /// Chunk `c`'s edits are `edits[editStarts[c]..<editStarts[c + 1]]` (``edits`` is grouped by
        /// chunk), so each chunk processes its edited tokens while it is in L1, in one sweep.
        var editStarts: UnsafeMutablePointer<Int>
        /// Logprobs: per chunk, `Σ exp(x - chunk max)`, the chunk max, and its top tokens.
        var expSums: UnsafeMutablePointer<Double>
        var chunkMaxima: UnsafeMutablePointer<Float>
        var topCounts: UnsafeMutablePointer<Int>
        var topTokens: UnsafeMutablePointer<Candidate>
        /// Plain sampling and top-p alone: per 1024-logit block, `Σ exp((x - chunk max) / T)`
        /// (``OnlineSoftmax``; ``StatisticsKernel/blocksPerChunk`` a chunk); the chunk maxima are in
        /// ``chunkMaxima``.
        var drawSums: UnsafeMutablePointer<Double>
        /// Top-k: per chunk, ``TopKBound/groupsPerChunk`` group maxima (``TopKBound``).
        var groupMaxima: UnsafeMutablePointer<Float>
        /// The row-mass and dynamic-temperature routes: per chunk, `Σ e`, `Σ e·y` and `Σ e²`
        /// relative to the chunk's maximum (``OnlineSoftmax/rowMass(moments:maxima:chunks:maximum:temperature:zError:momentError:)``).
        var chunkMoments: UnsafeMutablePointer<Double>

        // MARK: Regions a stage borrows while their owner does not need them
        //
        // (flashinfer declares such sharing as unions; here each borrower names its region,
        // and the one place that lends it says when it is free.)

        /// The survivor counts as the cursor of the edits' counting sort by chunk: the
        /// preparation runs before the pass, which sets every count.
        var editCursor: UnsafeMutablePointer<Int> { counts }

        /// The allowed-token bitmask's words as DRY's bitmap of window heads: DRY's edits are
        /// found before the effective bitmask is written.
        var dryHeads: UnsafeMutablePointer<UInt32> { mask }

        /// The weights region as `2 · vocab` Int32 words (DRY's Z-values): the preparation runs
        /// before any stage writes a weight.
        func withDryWords<R>(vocab: Int, _ body: (UnsafeMutablePointer<Int32>) -> R) -> R {
            weights.withMemoryRebound(to: Int32.self, capacity: 2 * vocab, body)
        }

        /// The weights under the candidate slots of chunks `c...`, as Floats: top-k's k-th search
        /// over the slots' logits, which runs before truncation writes the weights.
        func kthBuffer(fromChunk c: Int) -> UnsafeMutablePointer<Float> {
            UnsafeMutableRawPointer(weights + c * StatisticsKernel.chunkLength).assumingMemoryBound(to: Float.self)
        }

        /// The last `keep` candidate slots of a row of `vocab`: the row's merged top-logprobs list,
        /// built after the draw, which used only the survivors at the front.
        func topList(vocab: Int, keep: Int) -> UnsafeMutablePointer<Candidate> { candidates + (vocab - keep) }

        /// Stores chunk `c`'s `Σ e`, `Σ e·y` and `Σ e²` in ``chunkMoments``.
        @inline(__always)
        func storeMoments(_ moments: (z: Double, weighted: Double, squares: Double), chunk c: Int) {
            chunkMoments[3 * c] = moments.z
            chunkMoments[3 * c + 1] = moments.weighted
            chunkMoments[3 * c + 2] = moments.squares
        }

        /// Where each array of a ``Scratch`` lives in its block: offsets computed from the
        /// element types' own strides and alignments, each array on a 64-byte boundary.
        struct Layout {
            let vocab: Int
            let chunks: Int
            let candidates: Int, weights: Int, partials: Int, counts: Int, thresholds: Int
            let state: Int, mask: Int, maskWords: Int, table: Int, tableCapacity: Int, edits: Int, staging: Int,
                editStarts: Int
            let expSums: Int, chunkMaxima: Int, topCounts: Int, topTokens: Int, drawSums: Int, groupMaxima: Int,
                chunkMoments: Int
            /// Bytes of one block.
            let byteCount: Int

            /// The layout for rows of `vocab` logits, or nil when its size overflows `Int`.
            init?(vocab: Int) {
                let chunks = StatisticsKernel.chunkCount(length: vocab)
                var offset = 0
                func place<T>(_ type: T.Type, count: Int) -> Int? {
                    let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
                    guard !overflow, offset <= Int.max - bytes - 64 else { return nil }
                    let start = offset
                    offset = (offset + bytes + 63) & ~63
                    return start
                }
                guard let candidates = place(Candidate.self, count: vocab),
                    let weights = place(Double.self, count: vocab),
                    let partials = place(StatisticsKernel.ChunkPartial.self, count: chunks),
                    let counts = place(Int.self, count: chunks),
                    let thresholds = place(Float.self, count: chunks),
                    let state = place(ProcessingState.self, count: 1),
                    let mask = place(UInt32.self, count: vocab / 32 + 2),
                    let table = place(Int32.self, count: Self.tableCapacity(vocab: vocab)),
                    let edits = place(Edit.self, count: vocab),
                    let staging = place(Edit.self, count: vocab),
                    let editStarts = place(Int.self, count: chunks + 1),
                    let expSums = place(Double.self, count: chunks),
                    let chunkMaxima = place(Float.self, count: chunks),
                    let topCounts = place(Int.self, count: chunks),
                    let topTokens = place(Candidate.self, count: chunks * TopLogprobs.maximumCount),
                    let drawSums = place(Double.self, count: chunks * StatisticsKernel.blocksPerChunk),
                    let groupMaxima = place(Float.self, count: chunks * TopKBound.groupsPerChunk),
                    let chunkMoments = place(Double.self, count: 3 * chunks)
                else { return nil }
                self.chunkMoments = chunkMoments
                self.drawSums = drawSums
                self.groupMaxima = groupMaxima
                self.vocab = vocab
                self.chunks = chunks
                (self.candidates, self.weights, self.partials, self.counts, self.thresholds) =
                    (candidates, weights, partials, counts, thresholds)
                (self.state, self.mask, self.maskWords, self.edits) = (state, mask, vocab / 32 + 2, edits)
                (self.table, self.tableCapacity, self.staging, self.editStarts) = (
                    table, Self.tableCapacity(vocab: vocab), staging, editStarts
                )
                (self.expSums, self.chunkMaxima, self.topCounts, self.topTokens) = (
                    expSums, chunkMaxima, topCounts, topTokens
                )
                byteCount = max(offset, 64)
            }

            /// The hash table's capacity: a power of two, at least twice the vocabulary (load at
            /// most one half).
            static func tableCapacity(vocab: Int) -> Int {
                var capacity = 16
                while capacity < 2 * vocab { capacity *= 2 }
                return capacity
            }

            /// Binds and initializes a scratch in `block` (at least ``byteCount`` bytes, 64-byte
            /// aligned).
            func bind(_ block: UnsafeMutableRawPointer) -> Scratch {
                let partials = (block + self.partials).bindMemory(
                    to: StatisticsKernel.ChunkPartial.self, capacity: chunks)
                partials.initialize(repeating: StatisticsKernel.ChunkPartial(), count: chunks)
                let counts = (block + self.counts).bindMemory(to: Int.self, capacity: chunks)
                counts.initialize(repeating: 0, count: chunks)
                let thresholds = (block + self.thresholds).bindMemory(to: Float.self, capacity: chunks)
                thresholds.initialize(repeating: 0, count: chunks)
                let state = (block + self.state).bindMemory(to: ProcessingState.self, capacity: 1)
                state.initialize(to: ProcessingState())
                let topCounts = (block + self.topCounts).bindMemory(to: Int.self, capacity: chunks)
                topCounts.initialize(repeating: 0, count: chunks)
                return Scratch(
                    thresholds: thresholds, counts: counts,
                    candidates: (block + candidates).bindMemory(to: Candidate.self, capacity: vocab),
                    weights: (block + weights).bindMemory(to: Double.self, capacity: vocab),
                    partials: partials, state: state,
                    mask: (block + mask).bindMemory(to: UInt32.self, capacity: maskWords),
                    table: (block + table).bindMemory(to: Int32.self, capacity: tableCapacity),
                    tableCapacity: tableCapacity,
                    edits: (block + edits).bindMemory(to: Edit.self, capacity: vocab),
                    staging: (block + staging).bindMemory(to: Edit.self, capacity: vocab),
                    editStarts: (block + editStarts).bindMemory(to: Int.self, capacity: chunks + 1),
                    expSums: (block + expSums).bindMemory(to: Double.self, capacity: chunks),
                    chunkMaxima: (block + chunkMaxima).bindMemory(to: Float.self, capacity: chunks),
                    topCounts: topCounts,
                    topTokens: (block + topTokens).bindMemory(
                        to: Candidate.self, capacity: chunks * TopLogprobs.maximumCount),
                    drawSums: (block + drawSums).bindMemory(
                        to: Double.self, capacity: chunks * StatisticsKernel.blocksPerChunk),
                    groupMaxima: (block + groupMaxima).bindMemory(
                        to: Float.self, capacity: chunks * TopKBound.groupsPerChunk),
                    chunkMoments: (block + chunkMoments).bindMemory(to: Double.self, capacity: 3 * chunks))
            }
        }
    }

}

extension RowPipeline.Scratch {
    /// Bytes of one row's scratch for rows of `vocab` logits (the block a sampler allocates per
    /// thread, and ``FilteredDistribution/withScratch(vocab:_:)`` per call), or nil when it
    /// overflows `Int`.
    package static func byteCount(vocab: Int) -> Int? { Layout(vocab: vocab)?.byteCount }
}
