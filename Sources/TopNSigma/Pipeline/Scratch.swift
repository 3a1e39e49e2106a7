import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RowPipeline {
    /// One row's scratch: a candidate slot and a weight per logit, and per chunk the threshold
    /// its slot was compacted at, a survivor count and (split rows) partial statistics. Laid out in one block by
    /// ``Layout``.
    package struct Scratch {
        // The regions, in the order ``place(vocab:in:)`` lays them out in the block.
        package var candidates: UnsafeMutablePointer<Candidate>
        /// Top-p's weights, one per candidate slot.
        package var weights: UnsafeMutablePointer<Double>
        /// Split rows: each chunk's partial statistics, merged in chunk order by the task that
        /// settles the row.
        var partials: UnsafeMutablePointer<StatisticsKernel.ChunkPartial>
        /// Each chunk's survivor count in its candidate slot.
        var counts: UnsafeMutablePointer<Int>
        /// The threshold each chunk's slot was compacted at (`+inf` before the settle compacts it).
        var thresholds: UnsafeMutablePointer<Float>
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
        /// Per 1024-logit block, its maximum from the pass (at least every allowed logit of the
        /// block; `+inf` where the pass kept none), stored for every reduced chunk, so that
        /// compacting a chunk at a cut after the pass skips the blocks below it
        /// (``compactChunk(_:vocab:chunk:threshold:scratch:mask:)``: the settle, the routes' gathers).
        var blockMaxima: UnsafeMutablePointer<Float>
        /// Top-k: per chunk, ``TopKBound/groupsPerChunk`` group maxima (``TopKBound``).
        var groupMaxima: UnsafeMutablePointer<Float>
        /// The row-mass and dynamic-temperature routes: per chunk, `Σ e`, `Σ e·y` and `Σ e²`
        /// relative to the chunk's maximum (``OnlineSoftmax/rowMass(moments:maxima:chunks:maximum:temperature:zError:momentError:)``).
        var chunkMoments: UnsafeMutablePointer<Double>
        /// The dynamic-temperature route: per chunk, bounds on the absolute error of its `Σ e` and
        /// `Σ e·y` from their Float part (``WideExp/splitMass(_:count:mask:maximum:cut:buffer:)``).
        var chunkErrors: UnsafeMutablePointer<Double>

        /// Lays the regions out for rows of `vocab` logits, each on a 64-byte boundary, in
        /// `block` (bound and, where a stage reads before it writes, initialized) or, with no
        /// block, only sized: the one list of the regions and their sizes. Nil when the size
        /// overflows `Int`.
        static func place(vocab: Int, in block: UnsafeMutableRawPointer?) -> (scratch: Scratch, byteCount: Int)? {
            let chunks = StatisticsKernel.chunkCount(length: vocab)
            var offset = 0, overflow = false
            func region<T>(_ type: T.Type, _ count: Int) -> UnsafeMutablePointer<T> {
                let (bytes, tooMany) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
                let start = offset
                if tooMany || offset > Int.max - bytes - 64 {
                    overflow = true
                } else {
                    offset = (offset + bytes + 63) & ~63
                }
                // Sizing only (or an overflow): a placeholder, never dereferenced.
                guard let block, !overflow else { return UnsafeMutablePointer(bitPattern: 64)! }
                return (block + start).bindMemory(to: T.self, capacity: count)
            }
            let tableCapacity = Self.tableCapacity(vocab: vocab)
            let scratch = Scratch(
                candidates: region(Candidate.self, vocab), weights: region(Double.self, vocab),
                partials: region(StatisticsKernel.ChunkPartial.self, chunks), counts: region(Int.self, chunks),
                thresholds: region(Float.self, chunks), state: region(ProcessingState.self, 1),
                mask: region(UInt32.self, vocab / 32 + 2), table: region(Int32.self, tableCapacity),
                tableCapacity: tableCapacity, edits: region(Edit.self, vocab), staging: region(Edit.self, vocab),
                editStarts: region(Int.self, chunks + 1), expSums: region(Double.self, chunks),
                chunkMaxima: region(Float.self, chunks), topCounts: region(Int.self, chunks),
                topTokens: region(Candidate.self, chunks * TopLogprobs.maximumCount),
                drawSums: region(Double.self, chunks * StatisticsKernel.blocksPerChunk),
                blockMaxima: region(Float.self, chunks * StatisticsKernel.blocksPerChunk),
                groupMaxima: region(Float.self, chunks * TopKBound.groupsPerChunk),
                chunkMoments: region(Double.self, 3 * chunks), chunkErrors: region(Double.self, 2 * chunks))
            guard !overflow else { return nil }
            if block != nil {
                scratch.partials.initialize(repeating: StatisticsKernel.ChunkPartial(), count: chunks)
                scratch.counts.initialize(repeating: 0, count: chunks)
                scratch.thresholds.initialize(repeating: 0, count: chunks)
                scratch.state.initialize(to: ProcessingState())
                scratch.topCounts.initialize(repeating: 0, count: chunks)
            }
            return (scratch, max(offset, 64))
        }

        /// The hash table's capacity: a power of two, at least twice the vocabulary (load at
        /// most one half).
        static func tableCapacity(vocab: Int) -> Int {
            var capacity = 16
            while capacity < 2 * vocab { capacity *= 2 }
            return capacity
        }

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

        /// The size of a row's scratch block, and its binding (``place(vocab:in:)``).
        struct Layout {
            let vocab: Int
            /// Bytes of one block.
            let byteCount: Int

            /// The layout for rows of `vocab` logits, or nil when its size overflows `Int`.
            init?(vocab: Int) {
                guard let sized = Scratch.place(vocab: vocab, in: nil) else { return nil }
                self.vocab = vocab
                byteCount = sized.byteCount
            }

            /// Binds and initializes a scratch in `block` (at least ``byteCount`` bytes, 64-byte
            /// aligned).
            func bind(_ block: UnsafeMutableRawPointer) -> Scratch { Scratch.place(vocab: vocab, in: block)!.scratch }
        }
    }

}

extension RowPipeline.Scratch {
    /// Bytes of one row's scratch for rows of `vocab` logits (the block a sampler allocates per
    /// thread, and ``FilteredDistribution/withScratch(vocab:_:)`` per call), or nil when it
    /// overflows `Int`.
    package static func byteCount(vocab: Int) -> Int? { Layout(vocab: vocab)?.byteCount }
}
