import Testing
import TopNSigma
import TopNSigmaBaselines

@Suite struct NUMATests {
    static func topology(_ cpusPerNode: [Int], available: Bool = false) -> NUMATopology {
        var next = 0
        return NUMATopology(
            nodes: cpusPerNode.enumerated().map { id, count in
                defer { next += count }
                return NUMATopology.Node(id: id, cpus: Array(next..<(next + count)), memoryBytes: Int64(count) << 30)
            },
            available: available)
    }

    @Test("one node: every worker and every row on it")
    func oneNode() {
        let plan = NUMAPlan(threads: 4, topology: Self.topology([4]), placement: .automatic)
        #expect(plan.workerNodes == [0, 0, 0, 0])
        #expect(plan.rowRanges(batch: 10).map(\.rows) == [0..<10])
        #expect(plan.rowRanges(batch: 10).map(\.node) == [0])
    }

    @Test("two nodes: workers and rows split in proportion to CPUs")
    func twoNodes() {
        let plan = NUMAPlan(threads: 16, topology: Self.topology([8, 8]), placement: .automatic)
        #expect(plan.workerNodes == [Int?](repeating: 0, count: 8) + [Int?](repeating: 1, count: 8))
        #expect(plan.rowRanges(batch: 64).map(\.rows) == [0..<32, 32..<64])
        #expect(plan.rowRanges(batch: 7).map(\.rows) == [0..<4, 4..<7])
        // Fewer threads than CPUs: still proportional.
        let small = NUMAPlan(threads: 3, topology: Self.topology([8, 8]), placement: .automatic)
        #expect(small.workerNodes == [0, 0, 1])
        #expect(small.rowRanges(batch: 3).map(\.rows) == [0..<2, 2..<3])
    }

    @Test("four unequal nodes: largest remainders, then rows follow the workers")
    func fourNodes() {
        let topology = Self.topology([8, 8, 4, 4])
        let plan = NUMAPlan(threads: 12, topology: topology, placement: .automatic)
        #expect(plan.groups.map(\.node) == [0, 1, 2, 3])
        #expect(plan.groups.map(\.workers) == [0..<4, 4..<8, 8..<10, 10..<12])
        #expect(plan.rowRanges(batch: 60).map(\.rows) == [0..<20, 20..<40, 40..<50, 50..<60])
        let three = NUMAPlan(threads: 3, topology: topology, placement: .automatic)
        #expect(three.workerNodes == [0, 1, 2])
        // Every row goes to exactly one node, in order, for any batch.
        for batch in [1, 5, 12, 13, 100] {
            let ranges = plan.rowRanges(batch: batch).map(\.rows)
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == batch)
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        }
    }

    @Test("placement policies: disabled leaves workers unbound; one node pins them all; an unknown node falls back")
    func policies() {
        let topology = Self.topology([4, 4])
        #expect(NUMAPlan(threads: 4, topology: topology, placement: .disabled).workerNodes == [nil, nil, nil, nil])
        #expect(NUMAPlan(threads: 4, topology: topology, placement: .node(1)).workerNodes == [1, 1, 1, 1])
        #expect(NUMAPlan(threads: 2, topology: topology, placement: .node(7)).workerNodes == [nil, nil])
    }

    @Test("samplers planned for 2 and 4 nodes give the same tokens as one node (rows scheduled per node)")
    func plannedSamplersAgree() throws {
        let vocab = 20_000, rows = 12
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 8)
        let parameters = (0..<rows).map { SamplingParameters(temperature: 1, nSigma: 1.5, seed: UInt64($0)) }
        let reference = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
            .sample(logits: logits, parameters: parameters).map { try $0.get() }
        for cpus in [[2, 2], [1, 1, 1, 1]] {
            // Not available: the plan is made, nothing is bound, memory comes from the heap.
            let sampler = try BatchSampler(
                vocabularySize: vocab, maximumBatchSize: rows, threadCount: 4, topology: Self.topology(cpus))
            #expect(sampler.plan.groups.count == cpus.count)
            #expect(try sampler.sample(logits: logits, parameters: parameters).map { try $0.get() } == reference)
        }
    }

    // Needs libnuma (without it nothing is bound, so nothing can fail) and fewer than 4 nodes
    // (workers 1…3 must be planned on nodes this machine lacks).
    @Test(
        "libnuma failures never trap: binding to nodes this machine lacks leaves workers unbound and correct",
        .enabled(
            if: NUMATopology.current.available && NUMATopology.current.nodes.count < 4,
            "needs libnuma and fewer than 4 NUMA nodes"))
    func bindingFailuresFallBack() throws {
        let vocab = 5_000, rows = 8
        let logits = SyntheticLogits.generate(rows: rows, vocab: vocab, seed: 9)
        let parameters = [SamplingParameters](repeating: SamplingParameters(seed: 3), count: rows)
        let sampler = try BatchSampler(
            vocabularySize: vocab, maximumBatchSize: rows, threadCount: 4,
            topology: Self.topology([1, 1, 1, 1], available: true))
        let results = try sampler.sample(logits: logits, parameters: parameters).map { try $0.get() }
        let reference = try BatchSampler(vocabularySize: vocab, maximumBatchSize: rows, threadCount: 1)
            .sample(logits: logits, parameters: parameters).map { try $0.get() }
        #expect(results == reference)
        // Workers 1…3 were to run on nodes 1…3, which do not exist here.
        #expect(sampler.unboundWorkerCount == 3)
    }

    // Needs libnuma: without it there is no node to ask the kernel about (the next test covers
    // that machine).
    @Test(
        "allocations sit on the requested node, as the kernel reports after first touch",
        .enabled(if: NUMATopology.current.available, "needs libnuma"))
    func allocationsOnNode() throws {
        let topology = NUMATopology.current
        for node in topology.nodes.map(\.id) {
            let block = NodeMemory.allocate(byteCount: 1 << 20, node: node)!
            defer { NodeMemory.free(block) }
            #expect(block.source == .libnuma)
            block.pointer.initializeMemory(as: UInt8.self, repeating: 1, count: block.byteCount)
            for offset in stride(from: 0, to: block.byteCount, by: 1 << 16) {
                #expect(NodeMemory.node(of: block.pointer + offset) == node, "offset \(offset)")
            }
        }
        // A server's logits buffer, partitioned as the sampler splits the batch.
        let sampler = try BatchSampler(vocabularySize: 32_000, maximumBatchSize: 16, threadCount: 2)
        let logits = try #require(
            NodeMemory.allocateLogits(rows: 16, vocab: 32_000, layout: .partitioned, plan: sampler.plan))
        defer { NodeMemory.free(logits) }
        logits.pointer.initializeMemory(as: Float.self, repeating: 0, count: 16 * 32_000)
        for (node, rows) in sampler.plan.rowRanges(batch: 16) where !rows.isEmpty {
            #expect(NodeMemory.node(of: logits.pointer + rows.lowerBound * 32_000 * 4) == node)
        }
        let interleaved = try #require(
            NodeMemory.allocateLogits(rows: 4, vocab: 1000, layout: .interleaved, plan: sampler.plan))
        defer { NodeMemory.free(interleaved) }
        interleaved.pointer.initializeMemory(as: Float.self, repeating: 0, count: 4000)
        #expect(NodeMemory.node(of: interleaved.pointer).map { id in topology.nodes.contains { $0.id == id } } == true)
    }

    // Only where libnuma is unavailable: the detected topology is then the fallback.
    @Test(
        "without libnuma, an allocation on a node comes from the heap",
        .enabled(if: !NUMATopology.current.available, "libnuma is available"))
    func allocationWithoutLibNUMA() throws {
        let block = try #require(NodeMemory.allocate(byteCount: 1 << 16, node: 0))
        #expect(block.source == .heap)
        NodeMemory.free(block)
    }

    @Test("the fallback topology: unavailable libnuma means heap memory and no binding")
    func fallback() throws {
        let topology = NUMATopology.singleNode(cpus: 3, reason: "testing the fallback")
        #expect(topology.nodes.count == 1 && topology.nodes[0].cpus == [0, 1, 2] && !topology.available)
        let block = NodeMemory.allocate(byteCount: 4096, node: 0, topology: topology)!
        #expect(block.source == .heap)
        #expect(Int(bitPattern: block.pointer) % 64 == 0)
        NodeMemory.free(block)
        let sampler = try BatchSampler(vocabularySize: 1000, maximumBatchSize: 2, threadCount: 3, topology: topology)
        #expect(sampler.plan.workerNodes == [0, 0, 0])
        let token = sampler.sample(
            logits: [Float](repeating: 0, count: 1000) + (0..<1000).map(Float.init),
            parameters: [.init(temperature: 0), .init(temperature: 0)])
        #expect(try token.map { try $0.get().token } == [0, 999])
        #expect(sampler.unboundWorkerCount == 0)
    }
}
