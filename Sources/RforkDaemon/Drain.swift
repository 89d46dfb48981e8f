import Foundation
import Glibc
import NIOCore
import RforkPlacement
import RforkProtocol
import RforkSystem
import RforkWire

/// A `rfork migrate --all` waiting for its moves: the state machine and who asked (the command here, or
/// the node where it was run).
final class PendingDrain: @unchecked Sendable {  // confined to Node.loop
    enum Requester {
        case command(Channel)
        case peer(InboundLink, request: UInt64)
    }
    var machine: Drain
    let requester: Requester
    /// The processes to move, in order, and where to (nil: spread).
    let sessions: [HostedSession]
    let to: String?
    init(machine: Drain, requester: Requester, sessions: [HostedSession], to: String?) {
        self.machine = machine
        self.requester = requester
        self.sessions = sessions
        self.to = to
    }
}

extension Node {
    /// `rfork migrate --all --from NODE [--to TARGET]`, by root: every process NODE runs for another node
    /// is moved off it (each by its own migration, as `rfork migrate` from its home would, a `Drain`
    /// window of them at a time), to TARGET or spread over the peers that are up. Asked on another node, NODE is asked to do it.
    func handleDrain(_ fields: [String: String], peerUID: UInt32?, from channel: Channel) {
        func refuse(_ why: String) {
            answerJSON(channel, Drain.Outcome(from: fields["from"] ?? "", moves: []).refused(why))
        }
        guard peerUID == 0 else { return refuse("only root moves every process off a node") }
        guard let from = fields["from"], !from.isEmpty else { return refuse("malformed migrate request") }
        let to = fields["to"].flatMap { $0.isEmpty ? nil : $0 }
        guard from == config.node else {
            guard net.peers.contains(where: { $0.name == from }) else { return refuse("unknown node '\(from)'") }
            guard let link = usableLink(from) else {
                return refuse("node '\(from)' is not reachable from \(config.node)")
            }
            let peer = link.wire
            let number = commands.newMigrateRequest()
            commands.forwardedDrains[number] = (channel, from)
            var request = Rfork_Wire_V1_DrainRequest()
            request.request = number
            request.to = to ?? ""
            var envelope = Envelope()
            envelope.drainRequest = request
            peer.writeAndFlush(envelope, promise: nil)
            return
        }
        drain(to: to, requester: .command(channel))
    }

    /// A node where root ran `rfork migrate --all --from` this node.
    func handleDrainRequest(_ request: Rfork_Wire_V1_DrainRequest, link: InboundLink) {
        let requester = PendingDrain.Requester.peer(link, request: request.request)
        let to = request.to.isEmpty ? nil : request.to
        drain(to: to, requester: requester)
    }

    /// The node asked to empty itself answered: the command gets its answer as it came.
    func handleDrainResult(_ result: Rfork_Wire_V1_DrainResult, from link: PeerLink) {
        guard let (command, node) = commands.forwardedDrains[result.request], node == link.name else { return }
        commands.forwardedDrains[result.request] = nil
        command.writeAndFlush(LocalFrame.text(.answer, result.outcomeJson)).whenComplete { _ in
            command.close(promise: nil)
        }
    }

    /// Moves everything this node runs for others off it.
    func drain(to: String?, requester: PendingDrain.Requester) {
        func refuse(_ why: String) {
            answerDrain(requester, Drain.Outcome(from: config.node, moves: []).refused(why))
        }
        if let to {
            if to == config.node { return refuse("--to names the node being drained") }
            guard net.peers.contains(where: { $0.name == to }) else { return refuse("unknown node '\(to)'") }
        }
        // In a stable order: the command lists them as they were found.
        let sessions = sessions.hosted.values.filter { $0.restored && !$0.ended }.sorted { $0.key < $1.key }
        let id = commands.newDrainID()
        commands.drains[id] = PendingDrain(
            // One move under way per CPU of this node (at most Drain.defaultWindow): each dump and restore
            // wants a CPU, and a process waiting for one is frozen meanwhile.
            machine: Drain(
                from: config.node, count: sessions.count, window: min(Drain.defaultWindow, Posix.allowedCPUs())),
            requester: requester, sessions: sessions,
            to: to)
        logger.info("moving the \(sessions.count) processes this node runs for others off it")
        drainEvent(id, .started)
    }

    /// Starts moving process number `index` of drain `id` (the state machine says when).
    func startDrainMove(_ id: UInt64, index: Int) {
        guard let pending = commands.drains[id], pending.sessions.indices.contains(index) else { return }
        let session = pending.sessions[index]
        let to = pending.to
        func failed(_ why: String) {
            let outcome = Migration.Outcome(
                pid: session.pid, node: to ?? "", moved: false, reason: why, home: session.home)
            drainEvent(id, .answered(index: index, outcome))
        }
        guard !session.ended, let (pid, pidfd) = openHostedProcess(session) else {
            return failed("process \(session.pid) ended")
        }
        defer { Posix.close(pidfd) }
        if let through = sessions.home.values.first(where: { $0.localPID == pid }) {
            // Its stand-in: the process runs on (it was moved on from here); the route through this node
            // stays until routes can switch.
            return failed(
                "process \(session.pid) runs on \(through.runsOn) and only passes through \(config.node), which it still needs"
            )
        }
        var target = to
        if target == nil {
            switch placement.choose(policy: .spread, node: nil, peers: peerViews()) {
            case .remote(let node): target = node
            case .local(let reason): return failed(reason ?? "no other node is up")
            }
        }
        guard let target else { return }
        moveProcess(
            pid, pidfd: pidfd, target: target,
            requester: .drain(id, index: index, local: pid, shown: session.pid, home: session.home))
    }

    func drainEvent(_ id: UInt64, _ event: Drain.Event) {
        guard let pending = commands.drains[id] else { return }
        for action in pending.machine.handle(event) {
            switch action {
            case .start(let index):
                startDrainMove(id, index: index)
            case .answer(let outcome):
                commands.drains[id] = nil
                logger.info("moved \(outcome.moved) of \(outcome.moves.count) processes off \(config.node)")
                answerDrain(pending.requester, outcome)
            }
        }
    }
}

extension Node {
    func answerDrain(_ requester: PendingDrain.Requester, _ outcome: Drain.Outcome) {
        switch requester {
        case .command(let channel):
            answerJSON(channel, outcome)
        case .peer(let link, let request):
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var result = Rfork_Wire_V1_DrainResult()
            result.request = request
            result.outcomeJson = (try? encoder.encode(outcome)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            var envelope = Envelope()
            envelope.drainResult = result
            link.wire.writeAndFlush(envelope, promise: nil)
        }
    }

    /// The link to `node` closed: a drain it was asked to do will not be answered.
    func forwardedDrainsLost(_ node: String) {
        for (request, (command, asked)) in commands.forwardedDrains where asked == node {
            commands.forwardedDrains[request] = nil
            answerJSON(
                command,
                Drain.Outcome(from: node, moves: []).refused(
                    "lost the link to \(node) during the moves; see 'rfork ps' there"))
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
