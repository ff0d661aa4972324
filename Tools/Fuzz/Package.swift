// swift-tools-version: 6.0
// Fuzz targets of Lethe's decoders (libFuzzer, the Swift toolchain's `-sanitize=fuzzer`).
//
// A package of its own: each target is an executable that hands its command line to libFuzzer's
// driver, so it links only when built with `-sanitize=fuzzer` (which `Tools/fuzz.sh` passes) and
// would break a plain `swift build` of the engine. Each target is one line that hands libFuzzer's
// inputs (through `FuzzDriver`) to an entry point of the engine (`@_spi(Fuzzing)`).
import PackageDescription

let targets: [(name: String, module: String)] = [
    ("fuzz-ndjson", "LetheEvents"),
    ("fuzz-payload", "LetheEvents"),
    ("fuzz-block", "LetheJournal"),
    ("fuzz-lz4", "LetheJournal"),
    ("fuzz-backup", "LetheJournal"),
    ("fuzz-index", "LetheJournal"),
]

let package = Package(
    name: "LetheFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Lethe", path: "../..")],
    targets: targets.map { t in
        .executableTarget(
            name: t.name, dependencies: ["FuzzDriver", .product(name: t.module, package: "Lethe")],
            swiftSettings: [.swiftLanguageMode(.v6)])
    } + [
        // The driver every target shares: libFuzzer's command line, its inputs to a target's check.
        .target(name: "FuzzDriver", dependencies: ["CFuzzer"], swiftSettings: [.swiftLanguageMode(.v6)]),
        .target(name: "CFuzzer"),
    ]
)
