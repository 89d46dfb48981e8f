/// Where a forked child should run.
///
/// A pure value: the daemon feeds it the request and what it knows of its peers, and it answers.
/// Nothing here does I/O, so every rule is tested without a network.
public enum PlacementPolicy: String, Sendable, CaseIterable, Codable {
    /// Round robin over the other nodes that are up.
    case spread
    /// The other node with the fewest runnable tasks per CPU (children sent there since it last said its
    /// load count as runnable).
    case leastLoaded = "least-loaded"
    /// Never leave this node.
    case local

    /// The policy `rfork run` uses when none is given.
    public static let `default`: PlacementPolicy = .spread
}

/// What a daemon knows of one peer when it places a child.
public struct PeerView: Sendable, Equatable {
    public var name: String
    public var isUp: Bool
    /// Its runnable tasks (averaged) as it last said.
    public var runQueue: Double
    public var cpus: Int
    /// Children this node sent it since it last said its load.
    public var placedSinceReport: Int

    public init(name: String, isUp: Bool, runQueue: Double = 0, cpus: Int = 1, placedSinceReport: Int = 0) {
        self.name = name
        self.isUp = isUp
        self.runQueue = runQueue
        self.cpus = cpus
        self.placedSinceReport = placedSinceReport
    }

    /// Runnable tasks per CPU, counting the children sent since its report as runnable.
    public var pressure: Double { (runQueue + Double(placedSinceReport)) / Double(max(1, cpus)) }
}

public enum PlacementDecision: Sendable, Equatable {
    /// Run on this node. `reason` is set when the child was meant to leave but cannot (said on stderr).
    case local(reason: String?)
    case remote(node: String)
}

public struct Placement: Sendable {
    public private(set) var nextIndex = 0
    public let selfName: String

    public init(selfName: String) { self.selfName = selfName }

    /// Chooses a node for one child. `node` (a named target) wins over `policy`.
    public mutating func choose(policy: PlacementPolicy?, node: String?, peers: [PeerView]) -> PlacementDecision {
        if let node {
            if node == selfName { return .local(reason: nil) }
            guard let peer = peers.first(where: { $0.name == node }) else {
                return .local(reason: "unknown node '\(node)' (see 'rfork nodes')")
            }
            guard peer.isUp else { return .local(reason: "node '\(node)' is not reachable") }
            return .remote(node: node)
        }
        let policy = policy ?? .default
        let candidates = peers.filter { $0.isUp && $0.name != selfName }.sorted { $0.name < $1.name }
        switch policy {
        case .local:
            return .local(reason: nil)
        case .spread:
            guard !candidates.isEmpty else { return .local(reason: noPeers(peers)) }
            let chosen = candidates[nextIndex % candidates.count]
            nextIndex &+= 1
            return .remote(node: chosen.name)
        case .leastLoaded:
            guard let best = candidates.min(by: { $0.pressure < $1.pressure }) else {
                return .local(reason: noPeers(peers))
            }
            return .remote(node: best.name)
        }
    }

    private func noPeers(_ peers: [PeerView]) -> String {
        peers.isEmpty ? "no peer nodes are configured" : "no peer node is reachable"
    }
}
