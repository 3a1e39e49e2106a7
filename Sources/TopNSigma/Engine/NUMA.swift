#if os(Linux) && canImport(CNUMA)
import CNUMA
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The machine's NUMA nodes as the library sees them.
///
/// From libnuma when `numa_available() >= 0` (Linux); otherwise a single node holding every CPU,
/// with ``fallbackReason`` saying why. A libnuma failure never traps.
public struct NUMATopology: Sendable, Equatable {
    /// One NUMA node.
    public struct Node: Sendable, Equatable {
        /// libnuma's node number.
        public var id: Int
        /// The CPUs of the node.
        public var cpus: [Int]
        /// The node's memory in bytes (0 when unknown).
        public var memoryBytes: Int64

        /// A node with libnuma's number `id`, its CPUs and its memory in bytes (0 when unknown).
        public init(id: Int, cpus: [Int], memoryBytes: Int64) {
            self.id = id
            self.cpus = cpus
            self.memoryBytes = memoryBytes
        }
    }

    /// Nodes with at least one CPU, by id.
    public var nodes: [Node]
    /// Whether libnuma is usable (allocation and binding go through it).
    public var available: Bool
    /// Why the single-node fallback is in use, when it is.
    public var fallbackReason: String?

    /// A topology with the given nodes; use it to plan for a machine other than this one
    /// (see ``NUMAPlan/init(threads:topology:placement:)`` and the `topology:` argument of
    /// ``BatchSampler``).
    ///
    /// - Parameters:
    ///   - nodes: the nodes with at least one CPU, by id.
    ///   - available: whether libnuma is usable (allocation and binding go through it).
    ///   - fallbackReason: why the single-node fallback is in use, when it is.
    public init(nodes: [Node], available: Bool, fallbackReason: String? = nil) {
        self.nodes = nodes
        self.available = available
        self.fallbackReason = fallbackReason
    }

    /// One node holding CPUs `0..<cpus`: the fallback, and a convenient test topology.
    package static func singleNode(cpus: Int, memoryBytes: Int64 = 0, reason: String?) -> NUMATopology {
        NUMATopology(
            nodes: [Node(id: 0, cpus: Array(0..<max(1, cpus)), memoryBytes: memoryBytes)], available: false,
            fallbackReason: reason)
    }

    /// The topology of this machine (detected once, then cached).
    public static var current: NUMATopology { detected }

    private static let detected: NUMATopology = detect()

    private static func detect() -> NUMATopology {
        let cpuCount = activeProcessorCount()
        #if os(Linux) && canImport(CNUMA)
        guard numa_available() >= 0 else {
            return singleNode(cpus: cpuCount, reason: "libnuma reports NUMA unavailable (numa_available() < 0)")
        }
        let maxNode = Int(numa_max_node())
        let configuredCPUs = Int(numa_num_configured_cpus())
        var cpusByNode = [Int: [Int]]()
        for cpu in 0..<max(configuredCPUs, cpuCount) {
            let node = Int(numa_node_of_cpu(Int32(cpu)))
            if node >= 0 && node <= maxNode { cpusByNode[node, default: []].append(cpu) }
        }
        let nodes = cpusByNode.keys.sorted().map { id -> Node in
            var free: Int64 = 0
            let size = numa_node_size64(Int32(id), &free)
            return Node(id: id, cpus: cpusByNode[id]!, memoryBytes: max(0, size))
        }
        guard !nodes.isEmpty else {
            return singleNode(cpus: cpuCount, reason: "libnuma listed no node with CPUs")
        }
        return NUMATopology(nodes: nodes, available: true)
        #else
        return singleNode(cpus: cpuCount, reason: "libnuma is not available on this platform")
        #endif
    }
}

/// Where a sampler's workers run and where its memory lives.
public enum NUMAPlacement: Sendable, Equatable, CustomStringConvertible {
    /// Workers spread over the nodes in proportion to their CPUs, each bound to its node, its
    /// scratch on that node, and the batch partitioned across nodes in the same proportion.
    case automatic
    /// No binding; scratch from the process's default policy (first touch).
    case disabled
    /// Every worker bound to one node, all scratch on it.
    case node(Int)

    /// The policy as `nsigma info` prints it: `automatic`, `disabled` or `node 1`.
    public var description: String {
        switch self {
        case .automatic: return "automatic"
        case .disabled: return "disabled"
        case .node(let id): return "node \(id)"
        }
    }
}

/// The placement of a sampler's workers, scratch and rows: a pure function of the topology, the
/// thread count and the placement policy, so it can be checked against any topology.
public struct NUMAPlan: Sendable, Equatable {
    /// The node of each worker (index 0 is the calling thread), or nil when unbound.
    public var workerNodes: [Int?]
    /// The nodes that take part, in order, with their workers.
    package var groups: [(node: Int?, workers: Range<Int>)]

    /// Two plans are equal when they bind the same workers to the same nodes in the same groups.
    public static func == (a: NUMAPlan, b: NUMAPlan) -> Bool {
        a.workerNodes == b.workerNodes && a.groups.map(\.node) == b.groups.map(\.node)
            && a.groups.map(\.workers) == b.groups.map(\.workers)
    }

    /// The plan for `threads` workers on `topology` under `placement`. ``BatchSampler`` makes
    /// one in its initializer (``BatchSampler/plan``); make one yourself to see where a sampler
    /// would run on another machine:
    ///
    /// ```swift
    /// let twoSockets = NUMATopology(nodes: [.init(id: 0, cpus: Array(0..<8), memoryBytes: 0),
    ///                                       .init(id: 1, cpus: Array(8..<16), memoryBytes: 0)],
    ///                               available: true)
    /// let plan = NUMAPlan(threads: 16, topology: twoSockets, placement: .automatic)
    /// plan.rowRanges(batch: 64)   // [(node: 0, rows: 0..<32), (node: 1, rows: 32..<64)]
    /// ```
    ///
    /// - Parameters:
    ///   - threads: workers per call.
    ///   - topology: the machine (or an injected one).
    ///   - placement: the policy. A `.node(id)` that the topology lacks falls back to unbound.
    public init(threads: Int, topology: NUMATopology, placement: NUMAPlacement) {
        precondition(threads > 0, "threads must be positive")
        switch placement {
        case .disabled:
            workerNodes = [Int?](repeating: nil, count: threads)
            groups = [(nil, 0..<threads)]
        case .node(let id):
            let known = topology.nodes.contains { $0.id == id }
            workerNodes = [Int?](repeating: known ? id : nil, count: threads)
            groups = [(known ? id : nil, 0..<threads)]
        case .automatic:
            let nodes = topology.nodes
            if nodes.count <= 1 {
                workerNodes = [Int?](repeating: nodes.first?.id, count: threads)
                groups = [(nodes.first?.id, 0..<threads)]
                return
            }
            // Workers in proportion to CPUs (largest remainders), at most one node per worker.
            let shares = Self.proportional(total: threads, weights: nodes.map { $0.cpus.count })
            var start = 0
            var groups: [(node: Int?, workers: Range<Int>)] = []
            var workerNodes: [Int?] = []
            for (node, share) in zip(nodes, shares) where share > 0 {
                groups.append((node.id, start..<(start + share)))
                workerNodes += [Int?](repeating: node.id, count: share)
                start += share
            }
            self.workerNodes = workerNodes
            self.groups = groups
        }
    }

    /// The rows of a batch each group takes: contiguous, in group order, in proportion to the
    /// group's workers (group `g` ends at `round(batch · workers before and in g / threads)`). A
    /// server that allocates its logits partitioned by node
    /// (``NodeMemory/allocateLogits(rows:vocab:layout:plan:topology:)``) puts each range on its node.
    public func rowRanges(batch: Int) -> [(node: Int?, rows: Range<Int>)] {
        groups.indices.map { g in
            (groups[g].node, rowStart(group: g, batch: batch)..<rowStart(group: g + 1, batch: batch))
        }
    }

    /// The first row of group `group` (or the batch size for `group == groups.count`), without
    /// allocating: the sampler calls it on every call.
    @inline(__always)
    func rowStart(group: Int, batch: Int) -> Int {
        let threads = workerNodes.count
        let before = group < groups.count ? groups[group].workers.lowerBound : threads
        return (batch * before * 2 + threads) / (2 * threads)
    }

    /// Splits `total` in proportion to `weights` (largest remainders; ties to the earlier entry).
    static func proportional(total: Int, weights: [Int]) -> [Int] {
        let sum = weights.reduce(0, +)
        guard sum > 0 else { return weights.map { _ in 0 } }
        var shares = weights.map { total * $0 / sum }
        var remainders = weights.enumerated().map { (index: $0.offset, remainder: total * $0.element % sum) }
        remainders.sort { $0.remainder > $1.remainder || ($0.remainder == $1.remainder && $0.index < $1.index) }
        for k in 0..<(total - shares.reduce(0, +)) { shares[remainders[k].index] += 1 }
        return shares
    }
}

/// Memory from a NUMA node (libnuma) or, in the fallback, 64-byte aligned from the C heap.
public enum NodeMemory {
    /// How a block was allocated, so that it goes back the same way.
    package enum Source: Sendable, Equatable {
        /// From libnuma (`numa_alloc_onnode`, `numa_alloc_local` or `numa_alloc_interleaved`);
        /// freed with `numa_free`.
        case libnuma
        /// 64-byte aligned from the C heap; freed with `free`.
        case heap
    }

    /// A block of bytes.
    public struct Block: @unchecked Sendable {
        /// The first byte of the block.
        public let pointer: UnsafeMutableRawPointer
        /// The block's size in bytes, as requested.
        public let byteCount: Int
        /// How the block was allocated; ``NodeMemory/free(_:)`` returns it the same way.
        package let source: Source
    }

    /// `byteCount` bytes on `node` (`numa_alloc_onnode`), on the calling thread's node
    /// (`numa_alloc_local`, node nil), or 64-byte aligned from the heap when libnuma is
    /// unavailable (in `topology`) or fails. libnuma's blocks are page-aligned and zero-filled on
    /// first touch. Nil when the memory cannot be had.
    package static func allocate(byteCount: Int, node: Int?, topology: NUMATopology = .current) -> Block? {
        let size = max(byteCount, 1)
        #if os(Linux) && canImport(CNUMA)
        if topology.available {
            let raw: UnsafeMutableRawPointer? =
                node.map { numa_alloc_onnode(size, Int32($0)) } ?? numa_alloc_local(size)
            if let raw { return Block(pointer: raw, byteCount: size, source: .libnuma) }
        }
        #endif
        return heapBlock(size)
    }

    /// `byteCount` bytes interleaved page by page over all nodes (`numa_alloc_interleaved`).
    /// Nil when the memory cannot be had.
    package static func allocateInterleaved(byteCount: Int, topology: NUMATopology = .current) -> Block? {
        let size = max(byteCount, 1)
        #if os(Linux) && canImport(CNUMA)
        if topology.available, let raw = numa_alloc_interleaved(size) {
            return Block(pointer: raw, byteCount: size, source: .libnuma)
        }
        #endif
        return heapBlock(size)
    }

    /// `byteCount` bytes, 64-byte aligned, from the C heap (the process's default NUMA policy).
    /// Nil when the memory cannot be had.
    package static func allocateFromHeap(byteCount: Int) -> Block? {
        heapBlock(max(byteCount, 1))
    }

    private static func heapBlock(_ size: Int) -> Block? {
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, size) == 0, let raw else { return nil }
        return Block(pointer: raw, byteCount: size, source: .heap)
    }

    /// Returns a block (`numa_free` or `free`).
    public static func free(_ block: Block) {
        switch block.source {
        case .libnuma:
            #if os(Linux) && canImport(CNUMA)
            numa_free(block.pointer, block.byteCount)
            #endif
        case .heap:
            #if canImport(Glibc)
            Glibc.free(block.pointer)
            #else
            Darwin.free(block.pointer)
            #endif
        }
    }

    /// The node that holds the page at `address`, asked of the kernel
    /// (`get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`); nil when it cannot tell. The page must have
    /// been touched.
    package static func node(of address: UnsafeRawPointer) -> Int? {
        #if os(Linux) && canImport(CNUMA)
        var node: Int32 = -1
        let status = get_mempolicy(
            &node, nil, 0, UnsafeMutableRawPointer(mutating: address), UInt32(MPOL_F_NODE | MPOL_F_ADDR))
        return status == 0 && node >= 0 ? Int(node) : nil
        #else
        return nil
        #endif
    }

    /// How a server's logits buffer is laid out over the nodes.
    public enum LogitsLayout: Sendable, Equatable {
        /// Pages interleaved over all nodes: every worker reads at the average speed.
        case interleaved
        /// Each node's rows (``NUMAPlan/rowRanges(batch:)``) on that node, so every worker reads
        /// local memory. Page-granular: a page that straddles two ranges goes to the first.
        case partitioned
    }

    /// A `[rows, vocab]` Float buffer for a sampler's batch. Free it with ``free(_:)``.
    ///
    /// - Parameters:
    ///   - rows: the batch size the buffer holds.
    ///   - vocab: logits per row.
    ///   - layout: interleaved, or partitioned by node as `plan` splits a batch of `rows`.
    ///   - plan: the sampler's plan (``BatchSampler/plan``).
    ///   - topology: the machine; default the detected one.
    /// - Returns: the block, or nil when `rows × vocab` floats overflow or cannot be allocated.
    public static func allocateLogits(
        rows: Int, vocab: Int, layout: LogitsLayout, plan: NUMAPlan, topology: NUMATopology = .current
    ) -> Block? {
        guard rows >= 0, vocab >= 0 else { return nil }
        let (elements, overflow) = rows.multipliedReportingOverflow(by: vocab)
        guard !overflow, elements <= Int.max / MemoryLayout<Float>.stride else { return nil }
        let bytes = elements * MemoryLayout<Float>.stride
        switch layout {
        case .interleaved:
            return allocateInterleaved(byteCount: bytes, topology: topology)
        case .partitioned:
            #if os(Linux) && canImport(CNUMA)
            if topology.available, let raw = numa_alloc(max(bytes, 1)) {
                let page = Int(sysconf(Int32(_SC_PAGESIZE)))
                for (node, range) in plan.rowRanges(batch: rows) {
                    guard let node, !range.isEmpty else { continue }
                    let start = (range.lowerBound * vocab * 4) / page * page
                    let end = min(bytes, (range.upperBound * vocab * 4 + page - 1) / page * page)
                    if end > start { numa_tonode_memory(raw + start, end - start, Int32(node)) }
                }
                return Block(pointer: raw, byteCount: max(bytes, 1), source: .libnuma)
            }
            #endif
            return heapBlock(max(bytes, 1))
        }
    }

    /// Binds the calling thread to `node`'s CPUs (`numa_run_on_node`). Returns false, and leaves
    /// the thread unbound, when libnuma is unavailable or refuses.
    @discardableResult
    package static func bindCurrentThread(toNode node: Int) -> Bool {
        #if os(Linux) && canImport(CNUMA)
        guard NUMATopology.current.available else { return false }
        return numa_run_on_node(Int32(node)) == 0
        #else
        return false
        #endif
    }
}
