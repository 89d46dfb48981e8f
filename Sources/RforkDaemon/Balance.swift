import Foundation
import Glibc
import RforkPlacement
import RforkProtocol
import RforkSystem

/// What the daemon remembers of one process it may move, between two balancing rounds.
struct WatchedProcess {
    /// /proc/PID/stat field 22: tells a process from a later one with the same PID.
    let startTicks: UInt64
    /// It carries librfork (started under `rfork run`) and was not started with `rfork run --pin`.
    let movable: Bool
    let pinned: Bool
    let uid: UInt32
    /// Nanoseconds its threads ran or waited to run, as last read.
    var demand: UInt64
    var sampledAt: UInt64
    var share = 0.0
}

extension Node {
    /// One balancing round (every `balance.intervalSeconds`; with balancing off it only samples, for
    /// `rfork top`): the processes this node could move, its
    /// load and its peers' fresh loads go to the `Balancer`; its moves are made as `rfork migrate` makes
    /// them, one process with its descendants at a time.
    func balanceRound(now: UInt64) {
        let candidates = balanceCandidates(now: now)
        balance.lastTop = candidates.compactMap { local, c, session in
            guard let w = balance.watched[local] else { return nil }
            return TopRow(
                pid: c.pid, uid: w.uid, home: session?.home, homePID: session?.pid, cpu: c.cpuShare,
                memoryBytes: c.memoryBytes, seconds: c.staySeconds, moves: c.moves, pinned: c.pinned)
        }
        let peers = self.net.peers.compactMap { peer -> Balancer.Peer? in
            guard let link = net.links[peer.name], link.isUp || link.dormant || link.waking,
                let said = balance.peerLoads[peer.name], said.isFresh(now: now, maxAge: loadMaxAge)
            else {
                return nil
            }
            return Balancer.Peer(name: peer.name, load: said.load)
        }
        let actions = balance.balancer.handle(
            .tick(
                now: Double(now) / 1e9, local: probe.load(hosted: sessions.hosted.count), peers: peers,
                candidates: candidates.map(\.candidate)))
        for case .move(let pid, let to, let reason) in actions {
            guard let local = candidates.first(where: { $0.candidate.pid == pid })?.local,
                let pidfd = Posix.openProcess(local)
            else {
                _ = balance.balancer.handle(.ended(pid: pid, moved: false, now: Double(now) / 1e9))
                continue
            }
            logger.info("balancing: moving process \(local) to \(to) (\(reason))")
            moveProcess(local, pidfd: pidfd, target: to, requester: .balancer(pid))
            Posix.close(pidfd)
        }
    }

    /// A move the balancer asked for ended.
    func balancedMoveEnded(_ pid: Int32, _ outcome: Migration.Outcome) {
        _ = balance.balancer.handle(
            .ended(pid: pid, moved: outcome.moved, now: Double(Posix.monotonicNanoseconds()) / 1e9))
        if outcome.moved {
            balance.balancedMoves += 1
            RforkMetrics.balanced.increment()
            logger.info(
                "balancing: process \(pid) runs on \(outcome.node) (frozen \(String(format: "%.1f", outcome.frozenMs ?? 0)) ms)"
            )
        } else {
            // Not tried again before it has stayed its minimum again.
            balance.watched[pid] = nil
            balance.refusedUntil[pid] = Posix.monotonicNanoseconds() + 30_000_000_000
            logger.info("balancing: process \(pid) stays: \(outcome.reason ?? "")")
        }
    }

    /// The processes this node runs that could move: those started here under `rfork run` (and not as
    /// stand-ins), and those it runs for other nodes; each with the CPU it wanted since the last round
    /// (ran or waited to run).
    /// `local` is its PID here, `candidate.pid` the same (the balancer's key).
    /// `session` is the hosted session it runs for, when it came from another node.
    func balanceCandidates(now: UInt64) -> [(local: Int32, candidate: Balancer.Candidate, session: HostedSession?)] {
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        let uptime = Posix.uptimeSeconds()
        let standIns = Set(sessions.home.values.map(\.localPID))
        var seen: Set<Int32> = []
        var out: [(Int32, Balancer.Candidate, HostedSession?)] = []
        func consider(_ pid: Int32, stay: Double?, moves: Int, session: HostedSession? = nil) {
            guard !seen.contains(pid), pid != getpid(), !standIns.contains(pid),
                commands.migrations[pid] == nil, commands.checkpoints[pid] == nil,
                let stat = Posix.processStat(pid), let demand = Posix.cpuDemandNanoseconds(pid)
            else { return }
            seen.insert(pid)
            if let until = balance.refusedUntil[pid] {
                if now < until { return }
                balance.refusedUntil[pid] = nil
            }
            var entry: WatchedProcess
            if let known = balance.watched[pid], known.startTicks == stat.startTicks {
                entry = known
                let seconds = Double(now - known.sampledAt) / 1e9
                entry.share = seconds > 0 ? Double(demand - min(demand, known.demand)) / 1e9 / seconds : 0
                entry.demand = demand
                entry.sampledAt = now
            } else {
                let environment = Posix.environment(of: pid)
                let movable = Posix.mapsLibrary(pid, named: "/librfork.so") && environment["RFORK_SOCKET"] != nil
                let uid = Posix.processStatus(pid).flatMap { Self.firstNumber($0["Uid"]) } ?? 0
                entry = WatchedProcess(
                    startTicks: stat.startTicks, movable: movable, pinned: environment["RFORK_PIN"] == "1", uid: uid,
                    demand: demand, sampledAt: now)
            }
            balance.watched[pid] = entry
            guard entry.movable else { return }
            let age = max(0, uptime - Double(stat.startTicks) / ticksPerSecond)
            out.append(
                (
                    pid,
                    Balancer.Candidate(
                        pid: pid, cpuShare: entry.share, ageSeconds: age, staySeconds: stay ?? age, moves: moves,
                        memoryBytes: stat.residentBytes, pinned: entry.pinned),
                    session
                ))
        }
        // Processes it runs for others: the top process of each (its descendants go with it).
        for session in sessions.hosted.values where session.restored && !session.ended && session.lazyPID == nil {
            guard let pid = hostedProcess(session) else { continue }
            consider(pid, stay: Double(now - session.started) / 1e9, moves: session.moves, session: session)
        }
        // Its own: processes in rforkd's PID namespace (not inside a child's).
        for pid in probe.processes() where Posix.namespacePIDs(pid).count == 1 {
            consider(pid, stay: nil, moves: 0)
        }
        balance.watched = balance.watched.filter { seen.contains($0.key) }
        return out
    }
}

/// What peers said of their load, and what this node's balancer watches and did. Confined to `Node.loop`.
final class BalanceState: @unchecked Sendable {
    var peerLoads: [String: PeerLoad] = [:]  // the last load each peer said, and when
    var placedSinceReport: [String: Int] = [:]  // children sent to a peer since it last said its load
    var lastLoadSent: (at: UInt64, runQueue: Double) = (0, -10)
    var balancer: Balancer
    var gossip: Gossip  // which peers hear this node's load each round
    var watched: [Int32: WatchedProcess] = [:]  // processes the balancer may move, as last sampled
    var refusedUntil: [Int32: UInt64] = [:]  // processes whose balancing move was refused, until then
    var balancedMoves = 0
    var lastTop: [TopRow] = []  // the processes as sampled in the last balancing round, for `rfork top`

    init(balancer: Balancer, gossip: Gossip) {
        self.balancer = balancer
        self.gossip = gossip
    }
}
