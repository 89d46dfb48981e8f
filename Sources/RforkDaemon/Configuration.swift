import Foundation
import RforkPlacement
import RforkSystem

/// Everything `rforkd` needs to run one node. Read from a JSON file (see docs/rforkd.conf.sample.json).
public struct DaemonConfiguration: Codable, Sendable, Equatable {
    public struct Peer: Codable, Sendable, Equatable {
        public var name: String
        public var host: String
        /// Default: 7420.
        public var port: Int?
        public init(name: String, host: String, port: Int? = nil) {
            self.name = name
            self.host = host
            self.port = port
        }
    }

    /// How long the steps of a checkpoint of a job with processes on several nodes may take.
    public struct CheckpointTimes: Codable, Sendable, Equatable {
        /// Every part of the job cut (from its top process calling in) before the checkpoint is given up,
        /// and the job goes on. Default: 120; from 1 to 3600.
        public var partCutSeconds: Int?
        /// A part's namespace init has put every input its stand-in sent in the part's pipes (a part that
        /// does not read its full pipe never lets it: it is not saved). Default: 5; from 1 to 600.
        public var inputMarkSeconds: Int?
        /// The job's forks under way to other nodes land before its parts are listed (meanwhile the job's
        /// new forks stay on their node); past it, the cut goes on (refused with the reason if a fork is
        /// still under way). Default: 1000; from 0 to 60000.
        public var forkSettleMilliseconds: Int?

        public init(partCutSeconds: Int? = nil, inputMarkSeconds: Int? = nil, forkSettleMilliseconds: Int? = nil) {
            self.partCutSeconds = partCutSeconds
            self.inputMarkSeconds = inputMarkSeconds
            self.forkSettleMilliseconds = forkSettleMilliseconds
        }

        public var resolvedPartCutSeconds: Int64 { Int64(partCutSeconds ?? 120) }
        public var resolvedInputMarkSeconds: Int64 { Int64(inputMarkSeconds ?? 5) }
        public var resolvedForkSettleNanoseconds: UInt64 { UInt64(forkSettleMilliseconds ?? 1000) * 1_000_000 }

        /// What is wrong with these settings, or nil.
        public func problem() -> String? {
            if let s = partCutSeconds, !(1...3600).contains(s) { return "partCutSeconds must be 1 to 3600, not \(s)" }
            if let s = inputMarkSeconds, !(1...600).contains(s) { return "inputMarkSeconds must be 1 to 600, not \(s)" }
            if let m = forkSettleMilliseconds, !(0...60000).contains(m) {
                return "forkSettleMilliseconds must be 0 to 60000, not \(m)"
            }
            return nil
        }
    }

    public struct TLSFiles: Codable, Sendable, Equatable {
        /// The cluster's certificate authority (PEM). Only peers with a certificate it signed are accepted.
        public var ca: String
        /// This node's certificate (PEM), signed by `ca`.
        public var certificate: String
        /// This node's private key (PEM).
        public var key: String
        public init(ca: String, certificate: String, key: String) {
            self.ca = ca
            self.certificate = certificate
            self.key = key
        }
    }

    /// This node's name, as peers and `rfork run --node` know it.
    public var node: String
    /// The address the peer listener binds. Default: "0.0.0.0".
    public var listen: String?
    /// The peer listener's TCP port. Default: 7420.
    public var port: Int?
    /// The unix socket for local clients (librfork, the CLI). Default: "/run/rfork/rforkd.sock".
    public var socket: String?
    /// Where images live between dump and transfer; must be a tmpfs. Default: "/run/rfork".
    public var runtimeDirectory: String?
    /// The `criu` binary. Default: /usr/local/sbin/criu, else /usr/sbin/criu.
    public var criu: String?
    /// Where rfork-nsinit lives. Default: ../libexec/rfork next to the rforkd binary.
    public var helperDirectory: String?
    /// Children with at least this many MiB of anonymous memory move post-copy: the child runs on the
    /// target as soon as everything but its memory is there, and its pages follow on demand and in the
    /// background. 0 turns post-copy off. Default: 32.
    public var postCopyMiB: Int?
    /// A file of at least 32 random bytes, the same on every node and readable by root only
    /// (`rfork keys` writes one): it signs checkpoints, so a changed one is refused at restart. Without
    /// it, this node neither saves nor restarts checkpoints. Default: none.
    public var checkpointKey: String?
    /// How long a peer may stay silent (every link carries this node's load each second) before it is
    /// declared dead: the parents of children it ran see them killed (SIGKILL), and the children this node
    /// runs for it are ended, so none survives a partition twice. Default: 10.
    public var peerTimeoutSeconds: Int?
    /// Checkpoints of jobs on several nodes: how long their steps may take (see `CheckpointTimes`).
    public var checkpoint: CheckpointTimes?
    public var resolvedCheckpoint: CheckpointTimes { checkpoint ?? .init() }
    /// Automatic balancing: processes started under `rfork run` move by themselves from this node to
    /// less-loaded peers (see `Balancer.Configuration` for each setting and its default). Default: on.
    public var balance: Balancer.Configuration?
    /// Where Prometheus metrics are served (`/metrics`, plain HTTP, read-only): address and port; port 0
    /// turns them off. Defaults: "127.0.0.1" and 9420.
    public var metricsListen: String?
    public var metricsPort: Int?
    /// Links made on demand: how many peers hear this node's load each second, and how long an unused link
    /// stays open (see `Gossip.Configuration`). Default: 16 peers, 10 s.
    public var links: Gossip.Configuration?
    public var resolvedLinks: Gossip.Configuration { links ?? .init() }
    /// Peers from etcd as well as `peers` (which may then be empty): see `EtcdConfiguration`. Default: none.
    public var etcd: EtcdConfiguration?
    /// Shared memory across nodes: how long, in microseconds, a node keeps a page it was just given before
    /// it hands it on (so a woken process gets to use it; see `CoherenceNode.Configuration`). Default: 50.
    public var sharedMemoryHoldMicroseconds: Int?
    /// The nice value of rforkd's event loop thread and of its thread that reads page faults: every page,
    /// pipe byte and signal between nodes goes through them, so they should run as soon as they have
    /// work, even on a node whose CPUs its processes keep busy (a process spinning on a word of shared
    /// memory). The thread pools that run CRIU keep the daemon's own. Default: -20; from -20 to 19.
    public var eventLoopNice: Int?
    public var tls: TLSFiles
    public var peers: [Peer]

    public init(
        node: String, listen: String? = nil, port: Int? = nil, socket: String? = nil,
        runtimeDirectory: String? = nil, criu: String? = nil, helperDirectory: String? = nil,
        checkpointKey: String? = nil, tls: TLSFiles, peers: [Peer]
    ) {
        self.checkpointKey = checkpointKey
        self.node = node
        self.listen = listen
        self.port = port
        self.socket = socket
        self.runtimeDirectory = runtimeDirectory
        self.criu = criu
        self.helperDirectory = helperDirectory
        self.tls = tls
        self.peers = peers
    }

    public static let defaultPort = 7420
    public static let defaultSocket = "/run/rfork/rforkd.sock"
    public static let defaultRuntimeDirectory = "/run/rfork"

    public static let defaultPostCopyMiB = 32
    public static let defaultPeerTimeoutSeconds = 10

    public var resolvedPeerTimeoutSeconds: Int { peerTimeoutSeconds ?? Self.defaultPeerTimeoutSeconds }
    public static let defaultSharedMemoryHoldMicroseconds = 50
    public var resolvedSharedMemoryHold: Double {
        Double(sharedMemoryHoldMicroseconds ?? Self.defaultSharedMemoryHoldMicroseconds) / 1e6
    }
    public static let defaultEventLoopNice = -20
    public var resolvedEventLoopNice: Int32 { Int32(eventLoopNice ?? Self.defaultEventLoopNice) }
    public static let defaultMetricsPort = 9420
    public var resolvedMetricsPort: Int { metricsPort ?? Self.defaultMetricsPort }
    public var resolvedMetricsListen: String { metricsListen ?? "127.0.0.1" }

    public var resolvedPort: Int { port ?? Self.defaultPort }
    public var resolvedPostCopyMiB: Int { postCopyMiB ?? Self.defaultPostCopyMiB }
    public var resolvedSocket: String { socket ?? Self.defaultSocket }
    public var resolvedRuntimeDirectory: String { runtimeDirectory ?? Self.defaultRuntimeDirectory }
    public var resolvedHelperDirectory: String {
        if let helperDirectory { return helperDirectory }
        let exe = Posix.executablePath()
        let bin = exe.split(separator: "/").dropLast().joined(separator: "/")
        return "/" + bin + "/../libexec/rfork"
    }

    public static func load(from path: String) throws(ConfigurationError) -> DaemonConfiguration {
        let bytes: [UInt8]
        do { bytes = try Posix.readFile(path) } catch {
            throw ConfigurationError("cannot read the configuration \(path): \(error)")
        }
        let config: DaemonConfiguration
        do { config = try JSONDecoder().decode(DaemonConfiguration.self, from: Data(bytes)) } catch {
            throw ConfigurationError("the configuration \(path) is not valid: \(error)")
        }
        try config.validate()
        return config
    }

    public func validate() throws(ConfigurationError) {
        guard !node.isEmpty, node.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." })
        else { throw ConfigurationError("node name '\(node)' must be letters, digits, '-', '_' or '.'") }
        if let port, !(1...65535).contains(port) { throw ConfigurationError("port \(port) is out of range") }
        if let postCopyMiB, postCopyMiB < 0 {
            throw ConfigurationError("postCopyMiB must be 0 (off) or a size in MiB, not \(postCopyMiB)")
        }
        if let n = eventLoopNice, !(-20...19).contains(n) {
            throw ConfigurationError("eventLoopNice must be between -20 and 19, not \(n)")
        }
        if let h = sharedMemoryHoldMicroseconds, !(0...1_000_000).contains(h) {
            throw ConfigurationError("sharedMemoryHoldMicroseconds must be between 0 and 1000000, not \(h)")
        }
        if let peerTimeoutSeconds, !(2...3600).contains(peerTimeoutSeconds) {
            throw ConfigurationError("peerTimeoutSeconds must be between 2 and 3600, not \(peerTimeoutSeconds)")
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ConfigurationError("metricsPort \(metricsPort) is out of range (0 turns metrics off)")
        }
        if let etcd {
            guard etcd.hostsAndPorts != nil else {
                throw ConfigurationError("etcd.endpoints must be http://HOST:PORT URLs, not \(etcd.endpoints)")
            }
            guard !etcd.advertise.isEmpty else {
                throw ConfigurationError("etcd.advertise must give the address peers reach this node at")
            }
        }
        if let problem = balance?.problem() { throw ConfigurationError("balance: \(problem)") }
        if let problem = checkpoint?.problem() { throw ConfigurationError("checkpoint: \(problem)") }
        if let problem = links?.problem() { throw ConfigurationError("links: \(problem)") }
        var seen: Set<String> = [node]
        for peer in peers {
            guard seen.insert(peer.name).inserted else {
                throw ConfigurationError("node '\(peer.name)' is named twice")
            }
        }
    }
}

public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
