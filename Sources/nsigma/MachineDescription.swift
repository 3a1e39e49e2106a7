import CBuildFeatures
import COpenBLAS
import Foundation
import TopNSigma

/// The machine as the library sees it: for `nsigma info` and the bench report.
struct MachineDescription: Codable {
    var cpus: Int
    var cpuModel: String
    var cpuFlags: [String]
    var buildSIMD: [String]
    /// The sampler's default thread count (`BatchSampler.defaultThreadCount`).
    var threads: Int
    var openblas: String
    /// The kernel set OpenBLAS picked for this CPU (`openblas_get_corename`): `Prescott` or
    /// `Cooperlake` on the virtual CPUs seen here is a misdetection with slow kernels.
    var openblasCoreType: String
    /// OPENBLAS_THREAD_TIMEOUT in force (`bench` sets 4 unless the caller set it).
    var openblasThreadTimeout: String?
    var date: String

    static func current() -> MachineDescription {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        func field(_ name: String) -> String? {
            cpuinfo.split(separator: "\n").first { $0.hasPrefix(name) }.flatMap {
                $0.split(separator: ":", maxSplits: 1).last
            }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let interesting: Set<String> = [
            "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "amx_bf16"
        ]
        let flags = (field("flags") ?? "").split(separator: " ").map(String.init).filter { interesting.contains($0) }
        var simd: [String] = []
        if topnsigma_build_sse4_2() != 0 { simd.append("sse4.2") }
        if topnsigma_build_avx() != 0 { simd.append("avx") }
        if topnsigma_build_avx2() != 0 { simd.append("avx2") }
        if topnsigma_build_fma() != 0 { simd.append("fma") }
        if topnsigma_build_f16c() != 0 { simd.append("f16c") }
        if topnsigma_build_avx512f() != 0 { simd.append("avx512f") }
        if simd.isEmpty { simd.append("baseline (x86-64: sse2)") }
        return MachineDescription(
            cpus: ProcessInfo.processInfo.activeProcessorCount,
            cpuModel: field("model name") ?? "unknown",
            cpuFlags: flags,
            buildSIMD: simd,
            threads: BatchSampler.defaultThreadCount,
            openblas: openblas_get_config().map { String(cString: $0) } ?? "unknown",
            openblasCoreType: openblas_get_corename().map { String(cString: $0) } ?? "unknown",
            openblasThreadTimeout: ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"],
            date: ISO8601DateFormatter().string(from: Date()))
    }
}
