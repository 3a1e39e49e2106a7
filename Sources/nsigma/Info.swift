import ArgumentParser
import Foundation
import TopNSigma

/// `nsigma info [--json]`: the machine as the library sees it.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Describe the machine as the library sees it: CPUs, SIMD features, NUMA nodes, the sampler's defaults.",
        discussion: """
            --json prints one object with at least
            {"cpus": N, "numa": {"available": true|false, "nodes": [{"id": 0, "cpus": [0, 1], "memoryBytes": …}]}, "threads": N}.
            """
    )

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        let machine = MachineDescription.current()
        let topology = NUMATopology.current
        // The plan a default sampler would make, without starting its threads.
        let threads = machine.threads
        let placement = NUMAPlacement.automatic
        let plan = NUMAPlan(threads: threads, topology: topology, placement: placement)
        if json {
            let nodes = topology.nodes.map { node in
                "{\"id\": \(node.id), \"cpus\": [\(node.cpus.map(String.init).joined(separator: ", "))], \"memoryBytes\": \(node.memoryBytes)}"
            }
            let reason = topology.fallbackReason.map(jsonString) ?? "null"
            print(
                "{\"cpus\": \(machine.cpus), "
                    + "\"numa\": {\"available\": \(topology.available), \"nodes\": [\(nodes.joined(separator: ", "))], \"fallbackReason\": \(reason)}, "
                    + "\"threads\": \(threads), \"placement\": \(jsonString(placement.description)), "
                    + "\"workerNodes\": [\(plan.workerNodes.map { $0.map(String.init) ?? "null" }.joined(separator: ", "))], "
                    + "\"simd\": {\"build\": [\(machine.buildSIMD.map(jsonString).joined(separator: ", "))], \"cpu\": [\(machine.cpuFlags.map(jsonString).joined(separator: ", "))]}, "
                    + "\"cpuModel\": \(jsonString(machine.cpuModel)), \"openblas\": \(jsonString(machine.openblas)), \"openblasCoreType\": \(jsonString(machine.openblasCoreType))}"
            )
            return
        }
        print("CPU:        \(machine.cpuModel), \(machine.cpus) CPUs")
        print("SIMD build: \(machine.buildSIMD.joined(separator: ", "))  (what this binary was compiled for)")
        print("SIMD CPU:   \(machine.cpuFlags.joined(separator: ", "))  (what the processor offers)")
        if topology.available {
            print(
                "NUMA:       available (libnuma), \(topology.nodes.count) node\(topology.nodes.count == 1 ? "" : "s")")
        } else {
            print("NUMA:       unavailable, single-node fallback: \(topology.fallbackReason ?? "unknown reason")")
        }
        for node in topology.nodes {
            let gib = Double(node.memoryBytes) / Double(1 << 30)
            print("  node \(node.id): CPUs \(cpuList(node.cpus)), memory \(String(format: "%.1f", gib)) GiB")
        }
        let workerNodes = plan.workerNodes.map { $0.map(String.init) ?? "unbound" }
        print(
            "Sampler:    \(threads) threads by default, placement \(placement), worker nodes [\(workerNodes.joined(separator: ", "))]"
        )
        print("OpenBLAS:   \(machine.openblas), core type \(machine.openblasCoreType)")
    }

    /// `0-3,8` style CPU list.
    func cpuList(_ cpus: [Int]) -> String {
        var parts: [String] = []
        var index = 0
        while index < cpus.count {
            var end = index
            while end + 1 < cpus.count && cpus[end + 1] == cpus[end] + 1 { end += 1 }
            parts.append(end == index ? "\(cpus[index])" : "\(cpus[index])-\(cpus[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }
}
