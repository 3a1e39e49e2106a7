import ArgumentParser
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe the machine as the library sees it.")
    func run() throws {}
}
