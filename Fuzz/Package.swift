// swift-tools-version: 6.1
import Foundation
import PackageDescription

// A nested package, so `swift test` in the root never builds it: libFuzzer targets, the soak test
// and the truncation worst-case check. The root package is a path dependency; its identity is its
// directory's name.
//
// The fuzz targets define `LLVMFuzzerTestOneInput` and no `main` (libFuzzer supplies it), so they
// link only when built with `--sanitize=fuzzer` (see `scripts/fuzz`); build `soak` and
// `worst-case` by product name.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "TopNSigmaFuzz",
    dependencies: [
        .package(path: "..")
    ],
    targets: [
        // The input reader and the oracle's check, shared by the fuzz targets.
        .target(name: "FuzzSupport", path: "Sources/FuzzSupport"),
        .executableTarget(
            name: "FuzzLogitsFile",
            dependencies: [.product(name: "TopNSigma", package: root), .product(name: "TopNSigmaIO", package: root)],
            path: "Sources/FuzzLogitsFile"
        ),
        .executableTarget(
            name: "FuzzRowPipeline",
            dependencies: ["FuzzSupport", .product(name: "TopNSigma", package: root)],
            path: "Sources/FuzzRowPipeline"
        ),
        .executableTarget(
            name: "FuzzRequestProcessing",
            dependencies: [
                "FuzzSupport", .product(name: "TopNSigma", package: root),
                .product(name: "TopNSigmaBaselines", package: root)
            ],
            path: "Sources/FuzzRequestProcessing"
        ),
        .executableTarget(
            name: "soak",
            dependencies: [
                .product(name: "TopNSigma", package: root), .product(name: "TopNSigmaBaselines", package: root)
            ],
            path: "Sources/soak"
        ),
        .executableTarget(
            name: "worst-case",
            dependencies: [
                .product(name: "TopNSigma", package: root), .product(name: "TopNSigmaBaselines", package: root)
            ],
            path: "Sources/worst-case"
        )
    ]
)
