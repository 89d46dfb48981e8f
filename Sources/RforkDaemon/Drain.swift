import Foundation
import Glibc
import NIOCore
import RforkPlacement
import RforkProtocol
import RforkSystem

/// A `rfork migrate --all` waiting for its moves: the state machine and the command's connection.
final class PendingDrain: @unchecked Sendable {  // confined to Node.loop
    var machine: Drain
    let command: Channel
    init(machine: Drain, command: Channel) {
        self.machine = machine
        self.command = command
    }
}

extension Node {
    /// `rfork migrate --all --from NODE [--to TARGET]`, run on NODE by root: every process this node runs
    /// for another node is moved off it, all at once (each by its own migration, as `rfork migrate`
    /// from its home would), to TARGET or spread over the peers that are up.
    func handleDrain(_ fields: [String: String], peerUID: UInt32?, from channel: Channel) {
        func refuse(_ why: String) {
            answerJSON(channel, Drain.Outcome(from: fields["from"] ?? "", moves: []).refused(why))
        }
        guard peerUID == 0 else { return refuse("only root moves every process off a node") }
        guard let from = fields["from"], !from.isEmpty else { return refuse("malformed migrate request") }
        guard from == config.node else {
            return refuse("this is \(config.node): run 'rfork migrate --all --from \(from)' on \(from)")
        }
        let to = fields["to"].flatMap { $0.isEmpty ? nil : $0 }
        if let to {
            if to == config.node { return refuse("--to names the node being drained") }
            guard config.peers.contains(where: { $0.name == to }) else { return refuse("unknown node '\(to)'") }
        }
        // In a stable order: the command lists them as they were found.
        let sessions = hosted.values.filter { $0.restored && !$0.ended }.sorted { $0.key < $1.key }
        let id = nextDrain
        nextDrain += 1
        drains[id] = PendingDrain(machine: Drain(from: config.node, count: sessions.count), command: channel)
        logger.info("moving the \(sessions.count) processes this node runs for others off it")
        for (index, session) in sessions.enumerated() {
            func failed(_ why: String) {
                let outcome = Migration.Outcome(
                    pid: session.pid, node: to ?? "", moved: false, reason: why, home: session.home)
                drainEvent(id, .answered(index: index, outcome))
            }
            guard let pid = hostedProcess(session), let pidfd = Posix.openProcess(pid) else {
                failed("process \(session.pid) ended")
                continue
            }
            defer { Posix.close(pidfd) }
            if let through = homeSessions.values.first(where: { $0.localPID == pid }) {
                // Its stand-in: the process runs on (it was moved on from here); the route through this
                // node stays until routes can switch.
                failed(
                    "process \(session.pid) runs on \(through.target) and only passes through \(config.node), which it still needs"
                )
                continue
            }
            var target = to
            if target == nil {
                switch placement.choose(policy: .spread, node: nil, peers: peerViews()) {
                case .remote(let node): target = node
                case .local(let reason): failed(reason ?? "no other node is up")
                }
            }
            guard let target else { continue }
            moveProcess(
                pid, pidfd: pidfd, target: target,
                requester: .drain(id, index: index, local: pid, shown: session.pid, home: session.home))
        }
        drainEvent(id, .started)
    }

    func drainEvent(_ id: UInt64, _ event: Drain.Event) {
        guard let pending = drains[id] else { return }
        for action in pending.machine.handle(event) {
            switch action {
            case .answer(let outcome):
                drains[id] = nil
                logger.info("moved \(outcome.moved) of \(outcome.moves.count) processes off \(config.node)")
                answerJSON(pending.command, outcome)
            }
        }
    }
}

extension Drain.Outcome {
    /// An outcome that moved nothing because the request itself was refused (no processes, one reason).
    func refused(_ why: String) -> Drain.Outcome {
        var outcome = self
        outcome.moves = [Migration.Outcome(pid: 0, node: "", moved: false, reason: why)]
        outcome.moved = 0
        return outcome
    }
}
