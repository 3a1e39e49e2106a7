import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The per-row pipeline shared by whole-row and split-row scheduling.
///
/// Each chunk of ``StatisticsKernel/chunkLength`` logits is reduced, and its 1024-logit blocks'
/// maxima are kept. Once the row's statistics are final, each chunk is compacted at the final
/// threshold into its own slot of the row's candidate region (slot `c` starts at `c · chunkLength`,
/// so a chunk can never overflow into the next), reading from cache only the blocks whose maximum
/// reaches the threshold: for Top-nσ and min-p a few blocks of the row. (Until December 2026 each
/// chunk was compacted in the pass against a provisional threshold from the statistics of the
/// chunks before it; until the row's top token had been read, that cut lay deep in the row.) The
/// slots are then gathered in chunk order.
///
/// The row is read from memory once. The candidate set is exactly `{ i : x_i >= threshold }` in
/// id order, so how chunks are grouped into tasks never changes a result.
package enum RowPipeline {
    typealias ChunkPartial = StatisticsKernel.ChunkPartial

    /// How many rows had their moments recomputed in double precision because a survivor lay
    /// within the Float sums' error bound of the threshold, or left a softmax route for the
    /// survivor pipeline because its sums left the row undecided (``exactDraw``): diagnostics for
    /// tests and benchmarks.
    package static let exactRecomputations = Atomic<Int>(0)

    /// How many dynamic-temperature rows took their entropy again in double precision from
    /// cache because the pass's Float part left the temperature undecided
    /// (``dynamicTemperatureDraw(_:vocab:statistics:parameters:step:scratch:mask:)``): diagnostics
    /// for tests and benchmarks.
    package static let entropyRetries = Atomic<Int>(0)
}
