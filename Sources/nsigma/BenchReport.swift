import Foundation

/// The `--json` document of `nsigma bench`.
struct BenchReport: Codable {
    var machine: MachineDescription
    var results: [BenchResult]

    func write(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path))
    }

    /// Reads an earlier report's results, or throws a ``UsageError``.
    static func load(path: String) throws -> [BenchResult] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw UsageError(message: "--baseline \(path): cannot read the file")
        }
        do {
            return try JSONDecoder().decode(BenchReport.self, from: data).results
        } catch {
            throw UsageError(message: "--baseline \(path) is not an nsigma bench JSON report: \(error)")
        }
    }

    /// The real logits file if it is where the repository layout puts it.
    static func defaultDataPath() -> String? {
        let candidates = [
            ProcessInfo.processInfo.environment["TOPNSIGMA_DATA"],
            "../shared/data/smollm2-135m-logits.f32",
            "shared/data/smollm2-135m-logits.f32"
        ]
        return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The comparison of a run with a baseline: results are matched on (method, batch, vocab,
    /// threads, workload). `regressions`: every current result whose ratio to the floor exceeds
    /// its baseline twin's by more than `maxRegressionPercent` percent (the floors themselves,
    /// ratio 1 by definition, are matched but not compared). Ratios, not times: a machine that is
    /// uniformly slower today does not fail. `unmatched`: every baseline entry that no current
    /// result matches (a baseline from other options or methods proves nothing about this run).
    struct Comparison {
        var regressions: [String] = []
        var unmatched: [String] = []
        var compared = 0
        /// A regression, an unmatched baseline entry, or nothing compared at all.
        var failed: Bool { !regressions.isEmpty || !unmatched.isEmpty || compared == 0 }
    }

    static func key(_ r: BenchResult) -> String {
        "\(r.method) batch \(r.batch) vocab \(r.vocab) threads \(r.threads) [\(r.workload)]"
    }

    static func compare(current: [BenchResult], baseline: [BenchResult], maxRegressionPercent: Double) -> Comparison {
        var now: [String: BenchResult] = [:]
        for r in current { now[key(r)] = r }
        var comparison = Comparison()
        var seen = Set<String>()
        for before in baseline where seen.insert(key(before)).inserted {
            guard let r = now[key(before)] else {
                comparison.unmatched.append(key(before))
                continue
            }
            guard r.kind?.role != .floor, r.ratioToFloor > 0, before.ratioToFloor > 0 else { continue }
            comparison.compared += 1
            let change = (r.ratioToFloor / before.ratioToFloor - 1) * 100
            if change > maxRegressionPercent {
                comparison.regressions.append(
                    "\(key(r)): ratio to floor \(fmt(before.ratioToFloor, 3)) → \(fmt(r.ratioToFloor, 3)) (+\(fmt(change, 1))%, allowed \(fmt(maxRegressionPercent, 1))%)"
                )
            }
        }
        return comparison
    }
}

/// Throughput against vocab size per method, one panel per (batch, threads), the floor dashed.
enum BenchChart {
    static func svg(_ results: [BenchResult]) -> String {
        var measured = results.filter { $0.hidden == nil && $0.kind?.role != .floor }
        // The floor line: at each point the faster of floor-read and floor-sasum, the same floor
        // every ratio is taken against.
        var floors: [String: BenchResult] = [:]
        for r in results where r.hidden == nil && r.kind?.dividesResults == true {
            let key = "\(r.vocab) \(r.batch) \(r.threads)"
            if floors[key].map({ $0.gbPerSecond < r.gbPerSecond }) ?? true {
                var floor = r
                floor.method = "floor"
                floors[key] = floor
            }
        }
        measured += floors.values
        let panels = Array(Set(measured.map { PanelKey(batch: $0.batch, threads: $0.threads) })).sorted()
        let palette = [
            "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#2ca02c"
        ]
        let methodOrder = ["floor"] + BenchMethod.allCases.map(\.rawValue)
        let methods = methodOrder.filter { m in measured.contains { $0.method == m } }
        var colors = ["floor": "#555555"]
        for (index, m) in methods.filter({ $0 != "floor" }).enumerated() { colors[m] = palette[index % palette.count] }
        let vocabs = Array(Set(measured.map(\.vocab))).sorted()
        let maxGB = max(1, measured.map(\.gbPerSecond).max() ?? 1)
        let minGB = max(1e-3, measured.map(\.gbPerSecond).filter { $0 > 0 }.min() ?? 1e-3)
        let (lo, hi) = (floor(log10(minGB)), ceil(log10(maxGB)))
        let panelW = 420.0, panelH = 300.0, margin = 60.0
        let columns = min(2, max(1, panels.count))
        let rowsCount = (panels.count + columns - 1) / columns
        let width = Double(columns) * (panelW + margin) + margin,
            height = Double(rowsCount) * (panelH + 2 * margin) + 90
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(margin)" y="28" font-size="18" font-weight="bold">nsigma bench: logits consumed per second (log scale)</text>

            """
        var legendX = margin
        for m in methods {
            let dash = m == "floor" ? " stroke-dasharray=\"6,4\"" : ""
            let label = m == "floor" ? "floor (fastest read: floor-read or cblas_sasum)" : m
            out +=
                "<line x1=\"\(legendX)\" y1=\"50\" x2=\"\(legendX + 24)\" y2=\"50\" stroke=\"\(colors[m]!)\" stroke-width=\"3\"\(dash)/>"
            out += "<text x=\"\(legendX + 30)\" y=\"54\">\(label)</text>\n"
            legendX += 54 + Double(label.count) * 7
        }
        for (index, panel) in panels.enumerated() {
            let ox = margin + Double(index % columns) * (panelW + margin)
            let oy = 90 + Double(index / columns) * (panelH + 2 * margin)
            func x(_ v: Int) -> Double {
                vocabs.count == 1
                    ? ox + panelW / 2
                    : ox + 20 + (panelW - 40) * Double(vocabs.firstIndex(of: v)!) / Double(vocabs.count - 1)
            }
            func y(_ gb: Double) -> Double {
                oy + panelH - panelH * (log10(max(gb, pow(10, lo))) - lo) / max(1e-9, hi - lo)
            }
            out +=
                "<text x=\"\(ox)\" y=\"\(oy - 10)\" font-size=\"14\" font-weight=\"bold\">batch \(panel.batch), \(panel.threads) thread\(panel.threads == 1 ? "" : "s")</text>\n"
            out +=
                "<rect x=\"\(ox)\" y=\"\(oy)\" width=\"\(panelW)\" height=\"\(panelH)\" fill=\"none\" stroke=\"#999\"/>\n"
            var decade = lo
            while decade <= hi {
                let yy = y(pow(10, decade))
                out += "<line x1=\"\(ox)\" y1=\"\(yy)\" x2=\"\(ox + panelW)\" y2=\"\(yy)\" stroke=\"#e5e5e5\"/>"
                out += "<text x=\"\(ox - 6)\" y=\"\(yy + 4)\" text-anchor=\"end\">\(formatGB(pow(10, decade)))</text>\n"
                decade += 1
            }
            for v in vocabs {
                out += "<text x=\"\(x(v))\" y=\"\(oy + panelH + 18)\" text-anchor=\"middle\">\(v)</text>\n"
            }
            out +=
                "<text x=\"\(ox + panelW / 2)\" y=\"\(oy + panelH + 36)\" text-anchor=\"middle\" fill=\"#444\">vocabulary size</text>\n"
            out +=
                "<text x=\"\(ox - 44)\" y=\"\(oy + panelH / 2)\" text-anchor=\"middle\" fill=\"#444\" transform=\"rotate(-90 \(ox - 44) \(oy + panelH / 2))\">GB/s</text>\n"
            for m in methods {
                let points = measured.filter {
                    $0.method == m && $0.batch == panel.batch && $0.threads == panel.threads
                }.sorted { $0.vocab < $1.vocab }
                guard !points.isEmpty else { continue }
                let dash = m == "floor" ? " stroke-dasharray=\"6,4\"" : ""
                let path = points.map { "\(fmt(x($0.vocab), 1)),\(fmt(y($0.gbPerSecond), 1))" }.joined(separator: " ")
                out +=
                    "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(colors[m]!)\" stroke-width=\"2.5\"\(dash)/>\n"
                for p in points {
                    out +=
                        "<circle cx=\"\(fmt(x(p.vocab), 1))\" cy=\"\(fmt(y(p.gbPerSecond), 1))\" r=\"3.5\" fill=\"\(colors[m]!)\"><title>\(m): \(fmt(p.gbPerSecond, 2)) GB/s, \(fmt(p.usPerRow, 1)) µs/row</title></circle>\n"
                }
            }
        }
        return out + "</svg>\n"
    }

    struct PanelKey: Hashable, Comparable {
        var batch: Int
        var threads: Int
        static func < (a: PanelKey, b: PanelKey) -> Bool { (a.batch, a.threads) < (b.batch, b.threads) }
    }

    static func formatGB(_ x: Double) -> String {
        x >= 1 ? String(format: "%.0f", x) : String(format: "%g", x)
    }
}
