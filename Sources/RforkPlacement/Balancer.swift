import Foundation

/// Which process to move, when and where, so that no node is overloaded while another idles: the
/// decision part of automatic balancing (seed 002's distributed scheduling), as a pure state machine.
/// Each node runs one. The daemon feeds it, once a `intervalSeconds`, its own load, the fresh loads its
/// peers told it and the processes it could move; it answers with at most `maxMovesUnderWay` moves, and
/// hears how each ended. Nothing here does I/O or reads a clock.
///
/// The rules (MOSIX's, with the hysteresis a measured, delayed load needs):
/// - only processes that are worth it move: not pinned, wanting at least `minimumCPUShare` of a CPU, on
///   this node for at least `minimumStaySeconds`, moved fewer than `maxMovesPerProcess` times, and cheap
///   to move for what is left (a process that has run T seconds is expected to run about T more; its
///   move, `moveFixedSeconds` plus its memory at `moveBytesPerSecond`, may cost at most `maxCostShare`
///   of that);
/// - a move goes to the least-loaded peer (runnable tasks per CPU) among the `choiceWidth` least
///   loaded, picked at random so that many overloaded nodes do not all pick the same one, and only if
///   the target, with the process, would still be at least `threshold` less loaded than this node is
///   without it: a move that would only swap the imbalance never happens, so nothing ping-pongs;
/// - a node short of memory (over `memoryHighWater` of its limit) moves its largest process to the peer
///   with the most memory free, whatever the CPU load;
/// - loads are averages that lag (about 2 s, and up to 1 s more on the way): a move's effect is counted
///   at once on both sides, fading as the measurements catch up.
public struct Balancer: Sendable {
    public struct Configuration: Sendable, Equatable, Codable {
        /// Off: nothing moves by itself. Default: on.
        public var enabled: Bool?
        /// Seconds between two decisions. Default: 1.
        public var intervalSeconds: Double?
        /// How much less loaded (runnable tasks per CPU) the target must stay after the move than this
        /// node is before it. Default: 0.5.
        public var threshold: Double?
        /// Seconds a process stays on a node (since it started or arrived) before it may move. Default: 3.
        public var minimumStaySeconds: Double?
        /// Share of one CPU a process must have wanted (run or waited to run) over the last interval to be
        /// worth moving. Default: 0.5.
        public var minimumCPUShare: Double?
        /// Moves of one process at most, over its life. Default: 8.
        public var maxMovesPerProcess: Int?
        /// Moves from this node under way at once. Default: 1.
        public var maxMovesUnderWay: Int?
        /// Share of its memory limit above which a node sheds processes. Default: 0.9.
        public var memoryHighWater: Double?
        /// The cost model of a move: a fixed part (s) and the memory's transfer rate (bytes/s).
        /// Defaults: 0.05 s and 500 MiB/s (measured: a 64 MiB process is frozen about 28 ms).
        public var moveFixedSeconds: Double?
        public var moveBytesPerSecond: Double?
        /// Largest share of a process's expected remaining time its move may cost. Default: 0.2.
        public var maxCostShare: Double?
        /// How many of the least-loaded peers a target is picked from at random. Default: 2.
        public var choiceWidth: Int?

        public init(
            enabled: Bool? = nil, intervalSeconds: Double? = nil, threshold: Double? = nil,
            minimumStaySeconds: Double? = nil, minimumCPUShare: Double? = nil, maxMovesPerProcess: Int? = nil,
            maxMovesUnderWay: Int? = nil, memoryHighWater: Double? = nil, moveFixedSeconds: Double? = nil,
            moveBytesPerSecond: Double? = nil, maxCostShare: Double? = nil, choiceWidth: Int? = nil
        ) {
            self.enabled = enabled
            self.intervalSeconds = intervalSeconds
            self.threshold = threshold
            self.minimumStaySeconds = minimumStaySeconds
            self.minimumCPUShare = minimumCPUShare
            self.maxMovesPerProcess = maxMovesPerProcess
            self.maxMovesUnderWay = maxMovesUnderWay
            self.memoryHighWater = memoryHighWater
            self.moveFixedSeconds = moveFixedSeconds
            self.moveBytesPerSecond = moveBytesPerSecond
            self.maxCostShare = maxCostShare
            self.choiceWidth = choiceWidth
        }

        public var isEnabled: Bool { enabled ?? true }
        public var interval: Double { intervalSeconds ?? 1 }
        var resolvedThreshold: Double { threshold ?? 0.5 }
        var minimumStay: Double { minimumStaySeconds ?? 3 }
        var minimumShare: Double { minimumCPUShare ?? 0.5 }
        public var maxMoves: Int { maxMovesPerProcess ?? 8 }
        var underWayLimit: Int { maxMovesUnderWay ?? 1 }
        var highWater: Double { memoryHighWater ?? 0.9 }
        var fixedSeconds: Double { moveFixedSeconds ?? 0.05 }
        var bytesPerSecond: Double { moveBytesPerSecond ?? 500 * 1024 * 1024 }
        var costShare: Double { maxCostShare ?? 0.2 }
        var width: Int { max(1, choiceWidth ?? 2) }

        /// Why the configuration cannot be used, or nil.
        public func problem() -> String? {
            if let v = intervalSeconds, !(0.1...3600).contains(v) { return "intervalSeconds must be 0.1 to 3600" }
            if let v = threshold, !(0...100).contains(v) { return "threshold must be 0 to 100" }
            if let v = minimumStaySeconds, v < 0 { return "minimumStaySeconds must be 0 or more" }
            if let v = minimumCPUShare, !(0...1).contains(v) { return "minimumCPUShare must be 0 to 1" }
            if let v = maxMovesPerProcess, v < 1 { return "maxMovesPerProcess must be at least 1" }
            if let v = maxMovesUnderWay, v < 1 { return "maxMovesUnderWay must be at least 1" }
            if let v = memoryHighWater, !(0.1...1).contains(v) { return "memoryHighWater must be 0.1 to 1" }
            if let v = moveBytesPerSecond, v <= 0 { return "moveBytesPerSecond must be positive" }
            if let v = choiceWidth, v < 1 { return "choiceWidth must be at least 1" }
            return nil
        }
    }

    /// A process this node could move.
    public struct Candidate: Sendable, Equatable {
        public var pid: Int32
        /// How much of one CPU it wanted over the last interval: the time it ran plus the time it waited
        /// runnable for a CPU (so a CPU-bound process on an overloaded node counts 1, not its small share).
        public var cpuShare: Double
        /// Seconds since it started (or, for one that arrived here, since it arrived).
        public var ageSeconds: Double
        /// Seconds since it started or arrived on this node.
        public var staySeconds: Double
        /// How often it has moved already.
        public var moves: Int
        /// Its memory (resident), which a move copies.
        public var memoryBytes: UInt64
        /// Started with `rfork run --pin`.
        public var pinned: Bool

        public init(
            pid: Int32, cpuShare: Double, ageSeconds: Double, staySeconds: Double, moves: Int = 0,
            memoryBytes: UInt64 = 0, pinned: Bool = false
        ) {
            self.pid = pid
            self.cpuShare = cpuShare
            self.ageSeconds = ageSeconds
            self.staySeconds = staySeconds
            self.moves = moves
            self.memoryBytes = memoryBytes
            self.pinned = pinned
        }
    }

    public struct Peer: Sendable, Equatable {
        public var name: String
        public var load: NodeLoad
        public init(name: String, load: NodeLoad) {
            self.name = name
            self.load = load
        }
    }

    public enum Event: Sendable, Equatable {
        /// Time to decide: `now` in seconds (any monotonic origin), this node's load, the peers whose load
        /// is fresh, the processes that could move.
        case tick(now: Double, local: NodeLoad, peers: [Peer], candidates: [Candidate])
        /// A move this machine asked for ended (moved or not).
        case ended(pid: Int32, moved: Bool, now: Double)
    }

    public enum Action: Sendable, Equatable {
        case move(pid: Int32, to: String, reason: String)
    }

    /// A move's effect on the run queues that the measurements do not show yet.
    struct Pending: Sendable, Equatable {
        var node: String
        var delta: Double
        var since: Double
    }

    public let configuration: Configuration
    /// Moves asked for and not ended, by PID: where to and how much CPU it takes along.
    public private(set) var underWay: [Int32: (to: String, share: Double)] = [:]
    var pending: [Pending] = []
    private var random: UInt64
    /// The time constant of the measured run queue, plus the delay of a report.
    static let lagSeconds = RunQueueAverage.defaultSeconds
    static let reportDelaySeconds = 1.0

    public init(configuration: Configuration = .init(), seed: UInt64 = 0x5eed) {
        self.configuration = configuration
        self.random = seed
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .ended(let pid, let moved, let now):
            guard let move = underWay.removeValue(forKey: pid) else { return [] }
            if moved {
                pending.append(Pending(node: move.to, delta: move.share, since: now))
                pending.append(Pending(node: "", delta: -move.share, since: now))  // "" is this node
            }
            return []
        case .tick(let now, let local, let peers, let candidates):
            guard configuration.isEnabled else { return [] }
            pending.removeAll { now - $0.since > Self.reportDelaySeconds + 4 * Self.lagSeconds }
            return decide(now: now, local: local, peers: peers, candidates: candidates)
        }
    }

    /// The part of a move's effect still unseen at `now`.
    func unseen(_ node: String, now: Double) -> Double {
        pending.filter { $0.node == node }.reduce(0) { sum, p in
            let age = max(0, now - p.since - Self.reportDelaySeconds)
            return sum + p.delta * exp(-age / Self.lagSeconds)
        }
    }

    private mutating func decide(now: Double, local: NodeLoad, peers: [Peer], candidates: [Candidate]) -> [Action] {
        var actions: [Action] = []
        var here = local
        here.runQueue = max(0, local.runQueue + unseen("", now: now))
        // Moves under way count as done for this decision.
        for move in underWay.values { here.runQueue = max(0, here.runQueue - move.share) }
        var others = peers.map { peer -> Peer in
            var p = peer
            p.load.runQueue = max(0, peer.load.runQueue + unseen(peer.name, now: now))
            for move in underWay.values where move.to == peer.name { p.load.runQueue += move.share }
            return p
        }
        var eligible = candidates.filter { c in
            underWay[c.pid] == nil && !c.pinned && c.staySeconds >= configuration.minimumStay
                && c.moves < configuration.maxMoves && cost(c) <= configuration.costShare * max(c.ageSeconds, 0)
        }
        while underWay.count < configuration.underWayLimit, !eligible.isEmpty, !others.isEmpty {
            guard let (index, target, reason) = choose(here: here, others: others, eligible: eligible) else { break }
            let c = eligible.remove(at: index)
            let share = min(1, max(c.cpuShare, 0))
            underWay[c.pid] = (others[target].name, share)
            actions.append(.move(pid: c.pid, to: others[target].name, reason: reason))
            here.runQueue = max(0, here.runQueue - share)
            here.memoryUsed -= min(here.memoryUsed, c.memoryBytes)
            others[target].load.runQueue += share
            others[target].load.memoryUsed += c.memoryBytes
        }
        return actions
    }

    /// Seconds a move of `c` is expected to take.
    func cost(_ c: Candidate) -> Double {
        configuration.fixedSeconds + Double(c.memoryBytes) / configuration.bytesPerSecond
    }

    /// The next move: the index of the process in `eligible`, the index of the target in `others`, why.
    private mutating func choose(here: NodeLoad, others: [Peer], eligible: [Candidate])
        -> (Int, Int, String)?
    {
        // Short of memory: the largest process goes where the most memory is free.
        if here.memoryShare > configuration.highWater {
            let roomy = others.indices.filter { others[$0].load.memoryShare < configuration.highWater - 0.2 }
            if let t = roomy.max(by: {
                freeMemory(others[$0].load) < freeMemory(others[$1].load)
            }), let i = eligible.indices.max(by: { eligible[$0].memoryBytes < eligible[$1].memoryBytes }),
                eligible[i].memoryBytes <= freeMemory(others[t].load)
            {
                return (
                    i, t,
                    String(
                        format: "this node uses %.0f%% of its memory; %@ has %d MiB free", here.memoryShare * 100,
                        others[t].name, Int(freeMemory(others[t].load) >> 20))
                )
            }
        }
        // CPU: the busiest process worth moving, to a much less loaded peer.
        let busy = eligible.indices.filter { eligible[$0].cpuShare >= configuration.minimumShare }
        guard
            let i = busy.max(by: {
                (eligible[$0].cpuShare, eligible[$0].ageSeconds) < (eligible[$1].cpuShare, eligible[$1].ageSeconds)
            })
        else { return nil }
        let share = min(1, eligible[i].cpuShare)
        let before = here.perCPU
        let ranked = others.indices.filter { others[$0].load.memoryShare < configuration.highWater }.sorted {
            (others[$0].load.perCPU, others[$0].name) < (others[$1].load.perCPU, others[$1].name)
        }
        let fitting = ranked.filter { t in
            let after = (others[t].load.runQueue + share) / Double(max(1, others[t].load.cpus))
            return before - after >= configuration.resolvedThreshold
        }
        guard !fitting.isEmpty else { return nil }
        let t = fitting[Int(next() % UInt64(min(configuration.width, fitting.count)))]
        let reason = String(
            format: "%.1f runnable per CPU here, %.1f on %@", before, others[t].load.perCPU, others[t].name)
        return (i, t, reason)
    }

    private func freeMemory(_ load: NodeLoad) -> UInt64 {
        load.memoryLimit > load.memoryUsed ? load.memoryLimit - load.memoryUsed : 0
    }

    /// SplitMix64: a seeded, reproducible choice.
    private mutating func next() -> UInt64 {
        random &+= 0x9E37_79B9_7F4A_7C15
        var z = random
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
