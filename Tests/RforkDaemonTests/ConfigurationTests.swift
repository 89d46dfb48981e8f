import Foundation
import RforkDaemon
import RforkPlacement
import Testing

@Suite("Daemon configuration")
struct ConfigurationTests {
    let tls = DaemonConfiguration.TLSFiles(ca: "/k/ca.pem", certificate: "/k/n.pem", key: "/k/n.key")

    @Test func defaultsAreDocumented() {
        let c = DaemonConfiguration(node: "node1", tls: tls, peers: [])
        #expect(c.resolvedPort == 7420)
        #expect(c.resolvedSocket == "/run/rfork/rforkd.sock")
        #expect(c.resolvedRuntimeDirectory == "/run/rfork")
        #expect(c.resolvedPeerTimeoutSeconds == 10)
        #expect(c.balance == nil)  // balancing on, with the Balancer's defaults
        #expect(c.resolvedLinks.resolvedFanout == 16 && c.resolvedLinks.resolvedIdleSeconds == 10)
        #expect(c.resolvedEventLoopNice == -20)
        #expect(c.resolvedCheckpoint.resolvedPartCutSeconds == 120)
        #expect(c.resolvedCheckpoint.resolvedInputMarkSeconds == 5)
        #expect(c.resolvedCheckpoint.resolvedForkSettleNanoseconds == 1_000_000_000)
    }

    @Test func refusesCheckpointTimesOutOfRange() {
        var c = DaemonConfiguration(node: "a", tls: tls, peers: [])
        c.checkpoint = .init(forkSettleMilliseconds: 0)
        #expect(throws: Never.self) { try c.validate() }
        #expect(c.resolvedCheckpoint.resolvedForkSettleNanoseconds == 0)
        c.checkpoint = .init(partCutSeconds: 0)
        #expect {
            try c.validate()
        } throws: { error in
            "\(error)" == "checkpoint: partCutSeconds must be 1 to 3600, not 0"
        }
        c.checkpoint = .init(inputMarkSeconds: 601)
        #expect(throws: ConfigurationError.self) { try c.validate() }
    }

    @Test func refusesABadPeerTimeoutOrBalanceSection() {
        var c = DaemonConfiguration(node: "a", tls: tls, peers: [])
        c.peerTimeoutSeconds = 1
        #expect(throws: ConfigurationError.self) { try c.validate() }
        c.peerTimeoutSeconds = nil
        c.balance = .init(minimumCPUShare: 2)
        #expect {
            try c.validate()
        } throws: { error in
            "\(error)" == "balance: minimumCPUShare must be 0 to 1"
        }
        c.balance = nil
        c.eventLoopNice = -21
        #expect {
            try c.validate()
        } throws: { error in
            "\(error)" == "eventLoopNice must be between -20 and 19, not -21"
        }
    }

    @Test func theSampleFileIsValid() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../docs/rforkd.conf.sample.json")
        let c = try DaemonConfiguration.load(from: url.standardizedFileURL.path)
        #expect(c.node == "alpha" && c.peers.map(\.name) == ["beta", "gamma"])
        #expect(c.balance?.isEnabled == true && c.balance?.maxMovesPerProcess == 8 && c.peerTimeoutSeconds == 10)
        #expect(c.checkpoint == .init(partCutSeconds: 120, inputMarkSeconds: 5, forkSettleMilliseconds: 1000))
    }

    @Test func refusesBadNamesAndDuplicates() {
        #expect(throws: ConfigurationError.self) {
            try DaemonConfiguration(node: "bad name", tls: tls, peers: []).validate()
        }
        #expect(throws: ConfigurationError.self) {
            try DaemonConfiguration(node: "a", tls: tls, peers: [.init(name: "a", host: "h")]).validate()
        }
        #expect(throws: ConfigurationError.self) {
            try DaemonConfiguration(node: "a", port: 70000, tls: tls, peers: []).validate()
        }
    }

    @Test func saysWhichFileIsBroken() throws {
        let path = NSTemporaryDirectory() + "rfork-bad-\(getpid()).json"
        try Data("{ not json".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect {
            try DaemonConfiguration.load(from: path)
        } throws: { error in
            "\(error)".contains(path) && "\(error)".contains("not valid")
        }
    }
}
