// swift-tools-version: 6.1
// Lethe: an embeddable, event-sourced engine for the lifecycle of personal data.
import PackageDescription

let package = Package(
    name: "Lethe",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LetheJournal", targets: ["LetheJournal"]),
        .library(name: "LetheEvents", targets: ["LetheEvents"]),
        .library(name: "LetheViews", targets: ["LetheViews"]),
        .library(name: "LetheRetention", targets: ["LetheRetention"]),
        // Its own product, as Fluent keeps its drivers: a host that embeds only SQLite never
        // builds postgres-nio and its NIO stack.
        .library(name: "LethePostgres", targets: ["LethePostgres"]),
        .executable(name: "lethe", targets: ["LetheCLI"]),
    ],
    traits: [
        // `lethe --journal postgres://…`: the command links the PostgreSQL backend and its NIO
        // stack. On by default; `--disable-default-traits` builds an embedded-only `lethe`
        // several minutes sooner from nothing (what the demo's first part runs).
        .trait(name: "PostgreSQL", description: "The lethe command reaches journals in PostgreSQL (postgres-nio)."),
        .default(enabledTraits: ["PostgreSQL"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // C libraries from the system (apt: libsqlite3-dev, liblz4-dev); nothing vendored.
        .systemLibrary(
            name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(
            name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]),
        // Durable, compressed, encrypted, hash-chained storage of opaque event payloads.
        .target(
            name: "LetheJournal",
            dependencies: [
                "CSQLite", "CLZ4",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The journal in a PostgreSQL database: a `JournalBackend` for several instances on one journal.
        .target(
            name: "LethePostgres",
            dependencies: [
                "LetheJournal", "LetheViews",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The contract's events: NDJSON in and out, envelope validation, payload coding.
        .target(name: "LetheEvents", dependencies: ["LetheJournal"]),
        // Read models projected from the journal into their own SQLite file, caught up from a checkpoint.
        .target(
            name: "LetheViews",
            dependencies: [
                "LetheJournal", "LetheEvents",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The retention policy at work: dry-run reports, runs that purge, the in-process scheduler.
        .target(
            name: "LetheRetention",
            dependencies: ["LetheJournal", "LetheEvents", "LetheViews", .product(name: "Logging", package: "swift-log")]),
        // The `lethe` command.
        .executableTarget(
            name: "LetheCLI",
            dependencies: [
                "LetheJournal", "LetheEvents", "LetheViews", "LetheRetention",
                .target(name: "LethePostgres", condition: .when(traits: ["PostgreSQL"])),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Workload generator: realistic NDJSON histories.
        .executableTarget(name: "lethe-gen", dependencies: ["LetheJournal"], path: "Tools/LetheGen"),
        // Benchmarks: append, read, size and memory figures for the README.
        .executableTarget(
            name: "lethe-bench",
            dependencies: [
                "LetheJournal", "LetheEvents", "LetheViews", "LetheRetention",
                // (`--postgres`: concurrent writers on one PostgreSQL journal.)
                .target(name: "LethePostgres", condition: .when(traits: ["PostgreSQL"])),
            ],
            path: "Tools/LetheBench"),
        // An account service embedding the engine: typed events, a follower, a reader.
        .executableTarget(
            name: "lethe-example-service",
            dependencies: ["LetheJournal", "LetheEvents", "LetheViews", "LetheRetention", .product(name: "Logging", package: "swift-log")],
            path: "Examples/AccountService"),
        // Appends forever and acknowledges each commit; the crash test kills it mid-write.
        .executableTarget(
            name: "lethe-crash-writer", dependencies: ["LetheJournal", "LetheEvents", "LethePostgres"],
            path: "Tools/CrashWriter"),
        .testTarget(
            name: "LetheTests",
            dependencies: [
                "LetheJournal", "LetheEvents", "LetheViews", "LetheRetention", "LethePostgres",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
    ]
)

// One place for the settings every target shares (swift-log's pattern).
for target in package.targets where target.type != .system {
    var settings = target.swiftSettings ?? []
    settings.append(.swiftLanguageMode(.v6))
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    target.swiftSettings = settings
}
