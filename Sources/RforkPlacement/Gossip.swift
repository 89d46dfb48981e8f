/// Which peers a node tells its load each round (each second), so that links are made on demand rather
/// than as a full mesh.
///
/// A full mesh costs every node N − 1 load messages a second and 2(N − 1) connections. Instead each round
/// tells `fanout` peers, taken in turn from a shuffled order that is shuffled again after each pass, so
/// every peer hears from this node at least once every ⌈(N − 1) / fanout⌉ rounds (`rounds`), not merely
/// on average. A link is opened when something is sent on it (a fork, a move, a page, a load) and closed
/// again once it has carried nothing for `idleSeconds` (see the daemon's `Links.swift`). With
/// N − 1 ≤ fanout every peer is told every round, and every link stays open: a full mesh, as before.
/// Pure: no I/O, a seeded generator.
public struct Gossip: Sendable {
    /// The `links` section of the daemon's configuration.
    public struct Configuration: Codable, Sendable, Equatable {
        /// Peers told this node's load each second. Default: 16 (the balancing simulation converges with
        /// 16 peers' loads a second at 1000 nodes).
        public var fanout: Int?
        /// A link that carried nothing (no session, no message but loads to peers it was not picked
        /// for) for this many seconds is closed, in agreement with the peer; it opens again when used.
        /// Default: 10.
        public var idleSeconds: Int?

        public static let defaultFanout = 16
        public static let defaultIdleSeconds = 10

        public init(fanout: Int? = nil, idleSeconds: Int? = nil) {
            self.fanout = fanout
            self.idleSeconds = idleSeconds
        }

        public var resolvedFanout: Int { fanout ?? Self.defaultFanout }
        public var resolvedIdleSeconds: Int { idleSeconds ?? Self.defaultIdleSeconds }

        /// What is wrong with it, or nil.
        public func problem() -> String? {
            if let fanout, !(1...1024).contains(fanout) { return "fanout must be between 1 and 1024, not \(fanout)" }
            if let idleSeconds, !(1...86400).contains(idleSeconds) {
                return "idleSeconds must be between 1 and 86400, not \(idleSeconds)"
            }
            return nil
        }
    }

    public let fanout: Int
    private var order: [String] = []
    private var position = 0
    private var state: UInt64

    public init(fanout: Int, seed: UInt64) {
        self.fanout = max(1, fanout)
        self.state = seed
    }

    /// At most how many rounds apart one node hears another's load, with `peers` peers each.
    public static func rounds(peers: Int, fanout: Int) -> Int {
        max(1, (peers + max(1, fanout) - 1) / max(1, fanout))
    }

    /// The peers to tell this round: all of them while they are no more than `fanout`, else the next
    /// `fanout` of the shuffled order (peers that left are skipped, new ones join at the next shuffle).
    public mutating func pick(from peers: [String]) -> [String] {
        let known = Set(peers)
        guard fanout < known.count else { return known.sorted() }
        var picked: [String] = []
        var reshuffles = 0
        while picked.count < fanout {
            if position >= order.count {
                order = shuffled(known.sorted())
                position = 0
                reshuffles += 1
                if reshuffles > 2 { break }  // cannot happen while fanout < known.count
            }
            let peer = order[position]
            position += 1
            if known.contains(peer) && !picked.contains(peer) { picked.append(peer) }
        }
        return picked
    }

    private mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private mutating func shuffled(_ items: [String]) -> [String] {
        var out = items
        guard out.count > 1 else { return out }
        for i in stride(from: out.count - 1, to: 0, by: -1) {
            let j = Int(next() % UInt64(i + 1))
            out.swapAt(i, j)
        }
        return out
    }
}
