import Foundation
import RforkPlacement
import Testing

@Suite("Balancer: which process moves, when, where")
struct BalancerTests {
    static func load(_ runQueue: Double, cpus: Int = 1, used: UInt64 = 0, limit: UInt64 = 1 << 30) -> NodeLoad {
        NodeLoad(runQueue: runQueue, cpus: cpus, memoryUsed: used, memoryLimit: limit)
    }
    static func busy(_ pid: Int32, share: Double = 1, age: Double = 10, moves: Int = 0, memory: UInt64 = 8 << 20)
        -> Balancer.Candidate
    {
        .init(pid: pid, cpuShare: share, ageSeconds: age, staySeconds: age, moves: moves, memoryBytes: memory)
    }

    /// One decision of a fresh balancer: the PIDs moved, and where.
    static func decide(
        local: NodeLoad, peers: [(String, NodeLoad)], candidates: [Balancer.Candidate],
        configuration: Balancer.Configuration = .init(maxMovesUnderWay: 4)
    ) -> [String] {
        var b = Balancer(configuration: configuration)
        return b.handle(
            .tick(
                now: 100, local: local, peers: peers.map { .init(name: $0.0, load: $0.1) }, candidates: candidates)
        ).map {
            guard case .move(let pid, let to, _) = $0 else { return "" }
            return "\(pid)->\(to)"
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let local: NodeLoad
        let peers: [(String, NodeLoad)]
        let candidates: [Balancer.Candidate]
        let moves: [String]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "4 busy on one CPU, an idle peer: two move (2 and 2), no more", local: load(4),
            peers: [("node2", load(0))], candidates: [busy(1), busy(2), busy(3), busy(4)],
            moves: ["1->node2", "2->node2"]),
        Case(
            name: "3 against 2: a move would only swap the imbalance", local: load(3), peers: [("node2", load(2))],
            candidates: [busy(1), busy(2), busy(3)], moves: []),
        Case(
            name: "pinned, too young, idle, or moved too often: nothing moves", local: load(4),
            peers: [("node2", load(0))],
            candidates: [
                .init(pid: 1, cpuShare: 1, ageSeconds: 10, staySeconds: 10, pinned: true),
                .init(pid: 2, cpuShare: 1, ageSeconds: 10, staySeconds: 1),
                busy(3, share: 0.1), busy(4, moves: 8),
            ], moves: []),
        Case(
            name: "too dear for what is left: 2 GiB that ran 1 s stays", local: load(4), peers: [("node2", load(0))],
            candidates: [.init(pid: 1, cpuShare: 1, ageSeconds: 4, staySeconds: 4, memoryBytes: 2 << 30)],
            moves: []),
        Case(
            name: "the busiest process goes first", local: load(3), peers: [("node2", load(0))],
            candidates: [busy(1, share: 0.6), busy(2, share: 0.9)], moves: ["2->node2", "1->node2"]),
        Case(
            name: "a bigger node takes more", local: load(5), peers: [("node2", load(0, cpus: 4))],
            candidates: (1...5).map { busy($0) }, moves: ["1->node2", "2->node2", "3->node2", "4->node2"]),
        Case(
            name: "short of memory: the largest process goes where memory is free, whatever the CPU",
            local: load(1, used: 950 << 20),
            peers: [("node2", load(3, used: 100 << 20)), ("node3", load(3, used: 800 << 20))],
            candidates: [busy(1, share: 0.2, memory: 10 << 20), busy(2, share: 0.1, memory: 200 << 20)],
            moves: ["2->node2"]),
        Case(
            name: "a peer short of memory is not a target", local: load(4),
            peers: [("node2", load(0, used: 1000 << 20))], candidates: [busy(1)], moves: []),
    ]

    @Test(arguments: cases) func decides(_ c: Case) {
        #expect(Self.decide(local: c.local, peers: c.peers, candidates: c.candidates) == c.moves)
    }

    @Test func offMeansOff() {
        #expect(
            Self.decide(
                local: Self.load(4), peers: [("node2", Self.load(0))], candidates: [Self.busy(1)],
                configuration: .init(enabled: false)
            ).isEmpty)
    }

    @Test func aMoveCountsAtOnceAndFadesAsTheMeasurementsCatchUp() {
        var b = Balancer()
        let peers = [Balancer.Peer(name: "node2", load: Self.load(0))]
        let all = (1...4).map { Self.busy(Int32($0)) }
        #expect(b.handle(.tick(now: 0, local: Self.load(4), peers: peers, candidates: all)).count == 1)
        // Under way: counted as done; one at a time (maxMovesUnderWay 1).
        #expect(b.handle(.tick(now: 1, local: Self.load(4), peers: peers, candidates: all)).isEmpty)
        _ = b.handle(.ended(pid: 1, moved: true, now: 1))
        // The measurements have not moved yet: node2 still says 0, this node 4. The second move goes
        // (3 here against 1 there), the third does not (2 against 2).
        let rest = Array(all.dropFirst())
        #expect(b.handle(.tick(now: 2, local: Self.load(4), peers: peers, candidates: rest)).count == 1)
        _ = b.handle(.ended(pid: 2, moved: true, now: 2))
        #expect(b.handle(.tick(now: 3, local: Self.load(4), peers: peers, candidates: Array(rest.dropFirst()))).isEmpty)
        // Later, the measurements show it (2 and 2): still nothing.
        let settled = [Balancer.Peer(name: "node2", load: Self.load(2))]
        #expect(
            b.handle(.tick(now: 30, local: Self.load(2), peers: settled, candidates: Array(rest.dropFirst()))).isEmpty)
    }

    @Test func aMoveThatFailedLeavesNoTrace() {
        var b = Balancer()
        let peers = [Balancer.Peer(name: "node2", load: Self.load(0))]
        #expect(
            b.handle(.tick(now: 0, local: Self.load(2), peers: peers, candidates: [Self.busy(1), Self.busy(2)])).count
                == 1)
        _ = b.handle(.ended(pid: 1, moved: false, now: 0.5))
        #expect(b.underWay.isEmpty)
        #expect(
            b.handle(.tick(now: 1, local: Self.load(2), peers: peers, candidates: [Self.busy(1), Self.busy(2)])).count
                == 1)
    }

    @Test func configurationProblemsAreNamed() {
        #expect(Balancer.Configuration().problem() == nil)
        #expect(Balancer.Configuration(intervalSeconds: 0).problem() == "intervalSeconds must be 0.1 to 3600")
        #expect(Balancer.Configuration(maxMovesPerProcess: 0).problem() == "maxMovesPerProcess must be at least 1")
    }
}

/// 1000 nodes with changing load, no I/O: every node runs a `Balancer` on what it would know (its own
/// run queue as an average that lags, the loads of a few random peers told a second late), moves take
/// effect at once. It must converge, not oscillate, and bound the moves of each process.
@Suite("Balancer: a simulated cluster of 1000 nodes")
struct BalancerSimulationTests {
    struct Process {
        var id: Int
        var work: Double  // CPU seconds left
        var age = 0.0
        var stay = 0.0
        var moves = 0
        var memory: UInt64
        var share = 0.0
    }

    struct Node {
        var cpus: Int
        var processes: [Process] = []
        var average = RunQueueAverage()
        var balancer: Balancer
        var told = NodeLoad(runQueue: 0, cpus: 1)  // what it said last second
    }

    struct Outcome {
        var maxPerCPUAtStart = 0.0
        var maxPerCPUAtEnd = 0.0
        var meanPerCPUAtEnd = 0.0
        var movesInLastSeconds = 0
        var maxMovesOfOneProcess = 0
        var movesPerProcess = 0.0
        var loadMessagesPerNodeSecond = 0.0
    }

    /// `burst` of the nodes get `perCPU` long jobs per CPU at the start; more arrive at random nodes for
    /// `arrivalSeconds`; then it runs on for `quietSeconds`.
    static func simulate(
        nodes count: Int, view: Int, burst: Double, perCPU: Int, arrivalSeconds: Int, quietSeconds: Int,
        seed: UInt64
    ) -> Outcome {
        var rng = SplitMix(seed)
        var nodes = (0..<count).map { i in
            Node(cpus: [1, 2, 4][Int(rng.next() % 3)], balancer: Balancer(seed: seed &+ UInt64(i)))
        }
        var nextID = 0
        func newProcess() -> Process {
            nextID += 1
            return Process(
                id: nextID, work: 200 + Double(rng.next() % 400), memory: UInt64(1 + rng.next() % 64) << 20)
        }
        for i in 0..<Int(Double(count) * burst) {
            for _ in 0..<(nodes[i].cpus * perCPU) { nodes[i].processes.append(newProcess()) }
        }
        var outcome = Outcome()
        var movesAt: [Int] = []
        var movesOf: [Int: Int] = [:]
        var messages = 0
        let seconds = arrivalSeconds + quietSeconds
        for second in 0..<seconds {
            let now = Double(second)
            if second < arrivalSeconds {
                for _ in 0..<(count / 20) {
                    let i = Int(rng.next() % UInt64(count))
                    nodes[i].processes.append(newProcess())
                }
            }
            // Run one second: each process gets its share of the node's CPUs.
            for i in nodes.indices {
                let n = nodes[i].processes.count
                let share = n == 0 ? 0 : min(1, Double(nodes[i].cpus) / Double(n))
                for j in nodes[i].processes.indices {
                    nodes[i].processes[j].work -= share
                    nodes[i].processes[j].share = 1  // CPU-bound: it runs or waits to run all the time
                    nodes[i].processes[j].age += 1
                    nodes[i].processes[j].stay += 1
                }
                nodes[i].processes.removeAll { $0.work <= 0 }
                nodes[i].average.add(Double(nodes[i].processes.count), elapsed: 1)
            }
            let perCPU = nodes.map { Double($0.processes.count) / Double($0.cpus) }
            if second == 0 { outcome.maxPerCPUAtStart = perCPU.max() ?? 0 }
            // What each node told its view last second is what the others know now.
            let told = nodes.map(\.told)
            for i in nodes.indices {
                nodes[i].told = NodeLoad(
                    runQueue: nodes[i].average.value, cpus: nodes[i].cpus, memoryUsed: 0, memoryLimit: 64 << 30)
            }
            messages += count * view
            for i in nodes.indices {
                let peers = (0..<view).map { _ -> Balancer.Peer in
                    var j = Int(rng.next() % UInt64(count))
                    if j == i { j = (j + 1) % count }
                    return Balancer.Peer(name: "\(j)", load: told[j])
                }
                let local = NodeLoad(
                    runQueue: nodes[i].average.value, cpus: nodes[i].cpus, memoryUsed: 0, memoryLimit: 64 << 30)
                let candidates = nodes[i].processes.map {
                    Balancer.Candidate(
                        pid: Int32($0.id), cpuShare: $0.share, ageSeconds: $0.age, staySeconds: $0.stay,
                        moves: $0.moves, memoryBytes: $0.memory)
                }
                for action in nodes[i].balancer.handle(
                    .tick(now: now, local: local, peers: peers, candidates: candidates))
                {
                    guard case .move(let pid, let to, _) = action, let j = Int(to),
                        let k = nodes[i].processes.firstIndex(where: { $0.id == Int(pid) })
                    else { continue }
                    var p = nodes[i].processes.remove(at: k)
                    p.moves += 1
                    p.stay = 0
                    nodes[j].processes.append(p)
                    movesOf[p.id, default: 0] += 1
                    movesAt.append(second)
                    _ = nodes[i].balancer.handle(.ended(pid: pid, moved: true, now: now))
                }
            }
        }
        let perCPU = nodes.map { Double($0.processes.count) / Double($0.cpus) }
        outcome.maxPerCPUAtEnd = perCPU.max() ?? 0
        outcome.meanPerCPUAtEnd =
            Double(nodes.map(\.processes.count).reduce(0, +)) / Double(nodes.map(\.cpus).reduce(0, +))
        outcome.movesInLastSeconds = movesAt.filter { $0 >= seconds - 20 }.count
        outcome.maxMovesOfOneProcess = movesOf.values.max() ?? 0
        outcome.movesPerProcess = Double(movesOf.values.reduce(0, +)) / Double(max(1, nextID))
        outcome.loadMessagesPerNodeSecond = Double(messages) / Double(count * seconds)
        return outcome
    }

    struct SplitMix {
        var state: UInt64
        init(_ seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test func convergesWithoutOscillationAndBoundsMovesPerProcess() {
        let o = Self.simulate(
            nodes: 1000, view: 16, burst: 0.1, perCPU: 8, arrivalSeconds: 40, quietSeconds: 80, seed: 7)
        print(
            "simulation of 1000 nodes: max runnable per CPU \(o.maxPerCPUAtStart) at the start, \(o.maxPerCPUAtEnd) at the end (mean \(String(format: "%.2f", o.meanPerCPUAtEnd))); moves per process \(String(format: "%.2f", o.movesPerProcess)), at most \(o.maxMovesOfOneProcess); moves in the last 20 s: \(o.movesInLastSeconds); load messages per node per second: \(o.loadMessagesPerNodeSecond)"
        )
        #expect(o.maxPerCPUAtStart >= 8)
        // Converged: no node is more than 1.5 tasks per CPU above the mean.
        #expect(o.maxPerCPUAtEnd <= o.meanPerCPUAtEnd + 1.5)
        // No oscillation: once balanced, (almost) nothing moves.
        #expect(o.movesInLastSeconds <= 20)
        #expect(o.maxMovesOfOneProcess <= Balancer.Configuration().maxMoves)
        #expect(o.movesPerProcess < 1.5)
        // What a node sends does not grow with the cluster: its view, not every peer.
        #expect(o.loadMessagesPerNodeSecond == 16)
    }
}
