// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "appendbench",
    products: [
        .library(name: "MMLog", targets: ["MMLog"]),
        .library(name: "MMLogLogging", targets: ["MMLogLogging"]),
        .executable(name: "appendbench", targets: ["appendbench"]),
        .executable(name: "mmlog", targets: ["mmlog"]),
        .executable(name: "mmlog-writer", targets: ["mmlog-writer"]),
        .executable(name: "mmlog-fuzz", targets: ["mmlog-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Raw C calls MMLog needs that Swift cannot express directly (variadic fcntl, OFD locks).
        .target(name: "CMMLogShims"),
        // The library: many processes and threads appending to one regular file.
        .target(
            name: "MMLog",
            dependencies: [
                "CMMLogShims",
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        // MMLog as a swift-log backend: one line per event, one append per line.
        .target(
            name: "MMLogLogging",
            dependencies: ["MMLog", .product(name: "Logging", package: "swift-log")]
        ),
        // MMLog's options as command-line flags (one ParsableArguments group) for every tool that
        // opens a log; kept out of MMLog so the library does not depend on ArgumentParser.
        .target(
            name: "MMLogArguments",
            dependencies: ["MMLog", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // What the executables and the harness share, kept out of MMLog: retrying EINTR, unbuffered
        // stdout/stderr, clocks, fixed decimals, kernel and filesystem facts, a thread per job.
        .target(name: "ToolSupport"),
        // The record format and verifier shared by the harness and the MMLog tests.
        .target(name: "BenchRecords"),
        // The harness's C: libaio and liburing appends, statx and syncfs, memory warming, a held
        // kernel parameter, prctl (one file each); needs libaio-dev and liburing-dev.
        .target(
            name: "CBackends",
            linkerSettings: [.linkedLibrary("aio"), .linkedLibrary("uring")]
        ),
        // The harness: backends, forked workers, verification, reports.
        .target(
            name: "AppendBenchCore",
            dependencies: [
                "MMLog", "BenchRecords", "CBackends", "ToolSupport",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .executableTarget(
            name: "appendbench",
            dependencies: [
                "AppendBenchCore", "MMLogArguments", "ToolSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The operator's tool: cat, tail -f/-F, stat, recover.
        .executableTarget(
            name: "mmlog",
            dependencies: ["MMLog", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Writer process used by the multi-process tests (and handy for manual experiments).
        .executableTarget(
            name: "mmlog-writer",
            dependencies: ["MMLog", "MMLogArguments", "MMLogLogging", "BenchRecords", "ToolSupport", .product(name: "Logging", package: "swift-log"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Logs through MMLogHandler in each format, from one process (used by the handler tests).
        .executableTarget(
            name: "mmlog-handler-writer",
            dependencies: ["MMLog", "MMLogLogging", "ToolSupport", .product(name: "Logging", package: "swift-log"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Counts heap allocations by wrapping malloc, for mmlog-handler-bench only.
        .target(name: "CHandlerBenchShims"),
        // ns and allocations per logger.info: MMLogHandler's formats against StreamLogHandler.
        .executableTarget(
            name: "mmlog-handler-bench",
            dependencies: ["MMLog", "MMLogLogging", "CHandlerBenchShims", "ToolSupport", .product(name: "Logging", package: "swift-log"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Opens thousands of randomly corrupted headers, each in a forked child (used by the tests).
        .executableTarget(
            name: "mmlog-fuzz",
            dependencies: ["MMLog", "BenchRecords", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Single-process floor comparison and resident-memory check (benchmark, not a test).
        .executableTarget(
            name: "mmlog-floor",
            dependencies: ["MMLog", "ToolSupport", .product(name: "Atomics", package: "swift-atomics"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Spawning helper processes and scratch directories, for the test targets only.
        .target(name: "CTestSupport", path: "Tests/CTestSupport"),
        .target(name: "TestSupport", dependencies: ["CTestSupport"], path: "Tests/TestSupport"),
        .testTarget(name: "MMLogTests", dependencies: [
                "MMLog", "MMLogLogging", "BenchRecords", "TestSupport", "mmlog-writer", "mmlog-fuzz", "mmlog",
                "mmlog-handler-writer",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "AppendBenchTests", dependencies: [
                "AppendBenchCore", "BenchRecords", "MMLog", "TestSupport", "ToolSupport", "appendbench",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]),
    ]
)
