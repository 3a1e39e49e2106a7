// swift-tools-version: 6.1
import PackageDescription

// The core library `TopNSigma` depends only on the toolchain and, on Linux, libnuma.
// OpenBLAS serves the CLI's benchmark (memory-read floor, LM-head projection), never the library.
let package = Package(
    name: "TopNSigma",
    products: [
        .library(name: "TopNSigma", targets: ["TopNSigma"]),
        .library(name: "TopNSigmaBaselines", targets: ["TopNSigmaBaselines"]),
        .library(name: "TopNSigmaIO", targets: ["TopNSigmaIO"]),
        .executable(name: "nsigma", targets: ["nsigma"]),
        // The C ABI (include/topnsigma.h) as a shared library, libTopNSigmaC.so.
        .library(name: "TopNSigmaC", type: .dynamic, targets: ["TopNSigmaC"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0")
    ],
    targets: [
        .systemLibrary(
            name: "CNUMA",
            pkgConfig: "numa",
            providers: [.apt(["libnuma-dev"])]
        ),
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Header-only: which SIMD features the including module was compiled for.
        .systemLibrary(name: "CBuildFeatures"),
        // Header-only C helpers: naming worker threads (prctl), software prefetch.
        .systemLibrary(name: "CShims"),
        .target(
            name: "TopNSigma",
            dependencies: [.target(name: "CNUMA", condition: .when(platforms: [.linux])), "CBuildFeatures", "CShims"]
        ),
        .target(
            name: "TopNSigmaIO",
            dependencies: ["TopNSigma"]
        ),
        .target(
            name: "TopNSigmaBaselines",
            dependencies: ["TopNSigma"]
        ),
        .executableTarget(
            name: "nsigma",
            dependencies: [
                "TopNSigma",
                "TopNSigmaBaselines",
                "TopNSigmaIO",
                "COpenBLAS",
                "CBuildFeatures",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ]
        ),
        // The C header, as a module the Swift implementation imports (its structs are the ABI's).
        .systemLibrary(name: "CTopNSigma", path: "include"),
        .target(
            name: "TopNSigmaC",
            dependencies: ["TopNSigma", "CTopNSigma"]
        ),
        // Test support only: counts heap allocations by interposing malloc (not in any product).
        .target(name: "CAllocationCounter"),
        .testTarget(
            name: "TopNSigmaTests",
            dependencies: ["TopNSigma", "TopNSigmaBaselines", "TopNSigmaIO", "CAllocationCounter"],
            resources: [.copy("Fixtures")]
        ),
        // The C ABI's Swift-side test (zero allocations in tns_sample); the C program is Tests/CABI.
        .testTarget(
            name: "TopNSigmaCTests",
            dependencies: ["TopNSigma", "TopNSigmaC", "CTopNSigma", "CAllocationCounter"]
        )
    ]
)
