import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The per-row pipeline shared by whole-row and split-row scheduling.
///
/// Each chunk of ``StatisticsKernel/chunkLength`` logits is reduced and, while it is still in L1,
/// compacted against a *provisional* threshold `max' - 1.2·n·std'` built from the chunks reduced so
/// far (primed values: statistics of a prefix of the row). The survivors go to the chunk's own slot
/// of the row's candidate region (slot `c` starts at `c · chunkLength`, so a chunk can never
/// overflow into the next). Once the row's statistics are final, each chunk whose provisional
/// threshold was at or below the final one is filtered in its slot (its survivors are a superset
/// of the final ones); a chunk whose provisional threshold came out stricter is compacted again
/// from the row. The slots are then gathered in chunk order.
///
/// Since the prefix maximum never exceeds the row maximum and the prefix std is close to the
/// row's after one chunk, rescans are rare, and the row is read from memory once. The final
/// candidate set is exactly `{ i : x_i >= threshold }` in id order, whatever the provisional
/// thresholds were, so how chunks are grouped into tasks never changes a result.
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
