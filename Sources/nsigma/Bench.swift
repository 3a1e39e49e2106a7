import ArgumentParser
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmark.")
    func run() throws {}
}
