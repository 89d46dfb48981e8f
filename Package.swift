// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "rfork",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "rfork", targets: ["rfork"]),
        .executable(name: "rforkd", targets: ["rforkd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Linux calls Swift cannot make directly (CMSG, prctl, clone flags), all prefixed `crfork_`.
        .target(name: "CRforkSystem", cSettings: [.define("_GNU_SOURCE")]),
        // Thin, throwing wrappers over libc: spawning with chosen descriptors, /proc, signals.
        .target(name: "RforkSystem", dependencies: ["CRforkSystem"], swiftSettings: strict),
        // The wire formats: the peer protocol (protobuf, proto/peer.proto) and the local frames
        // spoken with librfork and its helpers (librfork/wire.h).
        .target(
            name: "RforkWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),
        // Where a forked child should run. Pure: no I/O.
        .target(name: "RforkPlacement", swiftSettings: strict),
        // The protocols' state machines (migration, ...): events in, actions out. Pure: no I/O.
        .target(name: "RforkProtocol", swiftSettings: strict),
        // The checkpoint engine adapter: CRIU command lines, runs and errors.
        .target(
            name: "RforkCheckpoint",
            dependencies: ["RforkSystem", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        // The node daemon's core: local socket, peer links over mutual TLS, sessions, relays.
        .target(
            name: "RforkDaemon",
            dependencies: [
                "RforkWire", "RforkPlacement", "RforkProtocol", "RforkCheckpoint", "RforkSystem", "CRforkSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // A cluster of nodes on one machine (network, mount and UTS namespaces) and cluster keys.
        .target(
            name: "RforkCluster", dependencies: ["RforkSystem", "RforkDaemon", "RforkCheckpoint", "RforkPlacement"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "rforkd",
            dependencies: [
                "RforkDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "rfork",
            dependencies: [
                "RforkCheckpoint", "RforkCluster", "RforkDaemon", "RforkPlacement", "RforkProtocol", "RforkSystem",
                "RforkWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "RforkWireTests", dependencies: ["RforkWire"], swiftSettings: strict),
        .testTarget(name: "RforkPlacementTests", dependencies: ["RforkPlacement"], swiftSettings: strict),
        .testTarget(
            name: "RforkDaemonTests",
            dependencies: [
                "RforkDaemon", "RforkPlacement", "RforkWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ], swiftSettings: strict),
        .testTarget(name: "RforkSystemTests", dependencies: ["RforkSystem"], swiftSettings: strict),
        .testTarget(name: "RforkProtocolTests", dependencies: ["RforkProtocol"], swiftSettings: strict),
        .testTarget(
            name: "RforkCheckpointTests", dependencies: ["RforkCheckpoint", "RforkSystem"], swiftSettings: strict),
        .testTarget(name: "RforkClusterTests", dependencies: ["RforkCluster"], swiftSettings: strict),
    ]
)
