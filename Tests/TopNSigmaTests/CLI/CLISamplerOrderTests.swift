import Foundation
import Testing
import TopNSigma

/// `--samplers` and `--llama-cpp-sentinels` through the CLI.
extension CLITests {
    @Test("nsigma filter --samplers and --llama-cpp-sentinels: the library's chain; bad lists are usage errors")
    func commandLine() throws {
        let run = try CLI.run([
            "filter", "--logits", Fixture.path, "--n", "off", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.05",
            "--samplers", "top_p;min_p;top_k"
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let parameters = SamplingParameters(
            nSigma: nil, topK: 40, topP: 0.9, minP: 0.05, order: try SamplerOrder(llamaCpp: "top_p;min_p;top_k"))
        for (r, line) in run.lines.enumerated() {
            let expected = ChainReference.kept(Fixture.row(r), parameters).map { Int($0.token) }
            #expect(line["kept"] as? [Int] == expected, "row \(r)")
        }
        let sentinels = try CLI.run([
            "filter", "--logits", Fixture.path, "--n", "0", "--top-k", "0", "--top-p", "1", "--llama-cpp-sentinels"
        ])
        #expect(sentinels.status == 0, "\(sentinels.stderr)")
        #expect(sentinels.lines.first?["kept"] as? [Int] == Array(0..<Fixture.logits.vocab))
        let strict = try CLI.run(["filter", "--logits", Fixture.path, "--top-k", "0"])
        #expect(strict.status == 2)
        let bad = try CLI.run(["filter", "--logits", "/nonexistent.npy", "--samplers", "top_k;top_k"])
        #expect(bad.status == 2 && bad.stderr.contains("listed twice"), "\(bad.stderr)")
    }
}
