import Foundation
import Glibc
import NIOCore
import RforkCheckpoint
import RforkProtocol
import RforkSystem
import RforkWire

/// A `rfork migrate` waiting for its answer: the request's state machine and who asked (the command, or
/// the home node of a process this node runs, which passed the command's request on).
final class PendingMigration: @unchecked Sendable {  // confined to Node.loop
    enum Requester {
        case command(Channel)
        /// `local` is the process's PID here, `shown` its PID as its home node knows it (its reasons say that one).
        case home(InboundLink, session: UInt64, request: UInt64, local: Int32, shown: Int32)
        /// Process number `index` of `rfork migrate --all` number `drain`.
        case drain(UInt64, index: Int, local: Int32, shown: Int32, home: String)
        /// This node's balancer (the process's PID here).
        case balancer(Int32)
    }
    var machine: Migration
    let requester: Requester
    /// Passed on: the home session whose node was asked, and the number of that request.
    var passedOn: (session: UInt64, request: UInt64)?
    init(machine: Migration, requester: Requester) {
        self.machine = machine
        self.requester = requester
    }
}

extension Node {
    /// How long a signalled process has to call in before the move is called off.
    static let migrationCallSeconds = 5

    /// `rfork migrate`: checks that the process may move, then signals it; its librfork asks to be
    /// placed (a fork request marked `migrate`), and the answer goes back once the move ended. A process
    /// that has moved is a stand-in here: the node that runs it is asked instead.
    func handleMigrate(_ text: String, peerUID: UInt32?, from channel: Channel) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        if fields["all"] == "1" { return handleDrain(fields, peerUID: peerUID, from: channel) }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), pid > 0, let target = fields["node"], !target.isEmpty
        else {
            return answerJSON(
                channel, Migration.Outcome(pid: 0, node: "", moved: false, reason: "malformed migrate request"))
        }
        let requester = PendingMigration.Requester.command(channel)
        func refuse(_ why: String) {
            answerMigration(requester, .init(pid: pid, node: target, moved: false, reason: why))
        }
        // The checks below read /proc/PID; a pidfd opened first and still naming a live process proves
        // they were about this process, and the signal can reach no other.
        guard let pidfd = Posix.openProcess(pid) else { return refuse("no process \(pid)") }
        defer { Posix.close(pidfd) }
        guard let uid = peerUID else { return refuse("the caller cannot be identified") }
        // Who owns it comes first: nothing else about another user's process is told.
        guard let status = Posix.processStatus(pid) else { return refuse("no process \(pid) on \(config.node)") }
        guard uid == 0 || Self.firstNumber(status["Uid"]) == uid else {
            return refuse("process \(pid) belongs to another user")
        }
        if Posix.namespacePIDs(pid).count > 1 {
            return refuse(
                isInHostedNamespace(pid)
                    ? "process \(pid) runs inside a process this node runs for another node; rfork migrate names processes by the PID their home node knows"
                    : "process \(pid) runs in a PID namespace below rforkd's, from which rfork cannot move it")
        }
        moveProcess(pid, pidfd: pidfd, target: target, requester: requester)
    }

    /// A home node asks this node to move a process it runs for it (a `rfork migrate` there).
    func handleMigrateRequest(_ request: Rfork_Wire_V1_MigrateRequest, link: InboundLink) {
        func refuse(_ why: String) {
            let requester = PendingMigration.Requester.home(
                link, session: request.session, request: request.request, local: 0, shown: 0)
            answerMigration(requester, .init(pid: 0, node: request.node, moved: false, reason: why))
        }
        guard let hosted = sessions.hosted[hostedKey(link, request.session)], hosted.restored, !hosted.ended else {
            return refuse("the process no longer runs on \(config.node)")
        }
        guard let (pid, pidfd) = openHostedProcess(hosted) else { return refuse("the process ended") }
        defer { Posix.close(pidfd) }
        let requester = PendingMigration.Requester.home(
            link, session: request.session, request: request.request, local: pid, shown: hosted.pid)
        if hosted.lazyPID != nil {
            return refuse(
                "the memory of process \(hosted.pid) is still arriving on \(config.node) (post-copy); move it when it is there"
            )
        }
        moveProcess(pid, pidfd: pidfd, target: request.node, requester: requester)
    }

    /// Moves process `pid` (as this daemon sees it; `pidfd` names it) to `target`: if it is the stand-in
    /// of a process that runs elsewhere, the node running it is asked; else it is checked and signalled.
    func moveProcess(_ pid: Int32, pidfd: Int32, target: String, requester: PendingMigration.Requester) {
        func refuse(_ why: String) {
            answerMigration(requester, .init(pid: pid, node: target, moved: false, reason: why))
        }
        if commands.migrations[pid] != nil || commands.checkpoints[pid] != nil {
            return refuse("process \(pid) is being moved or saved already")
        }
        guard target == config.node || net.peers.contains(where: { $0.name == target }) else {
            return refuse("unknown node '\(target)'")
        }
        if let session = sessions.home.values.first(where: { $0.localPID == pid }) {
            // Its stand-in: the node it went to runs it, or passes the request on again (only the node
            // running it can tell whether it runs on `target` already).
            guard session.state == .running else { return refuse("process \(pid) is being moved already") }
            guard let peer = usableLink(session.target)?.wire else {
                return refuse("node '\(session.target)', which runs process \(pid), is not reachable")
            }
            let pending = PendingMigration(machine: Migration(pid: pid, node: target), requester: requester)
            let number = commands.newMigrateRequest()
            pending.passedOn = (session.id, number)
            commands.migrations[pid] = pending
            logger.info("asking \(session.target) to move process \(pid) to \(target)")
            migrationEvent(pid: pid, .passedOn(node: session.target))
            migrationProgress(pid: pid, "it runs on \(session.runsOn): asking \(session.target) to move it on")
            var request = Rfork_Wire_V1_MigrateRequest()
            request.session = session.id
            request.node = target
            request.request = number
            var envelope = Envelope()
            envelope.migrateRequest = request
            peer.writeAndFlush(envelope, promise: nil)
            abandonLater(pid, pending)
            return
        }
        if let why = migrationRefusal(pid: pid, target: target) { return refuse(why) }
        let pending = PendingMigration(machine: Migration(pid: pid, node: target), requester: requester)
        commands.migrations[pid] = pending
        logger.info("moving process \(pid) to \(target)")
        migrationProgress(pid: pid, "asking process \(pid) to stop")
        guard Posix.signal(process: pidfd, LocalWire.migrateSignal) else {
            return migrationEvent(pid: pid, .refused(reason: "process \(pid) ended"))
        }
        let seconds = Self.migrationCallSeconds
        // Each timer belongs to this request only: a later move of the same PID has its own.
        loop.scheduleTask(in: .seconds(Int64(seconds))) {
            guard self.commands.migrations[pid] === pending else { return }
            self.migrationEvent(pid: pid, .deadline(seconds: seconds))
        }
        abandonLater(pid, pending)
    }

    private func abandonLater(_ pid: Int32, _ pending: PendingMigration) {
        loop.scheduleTask(in: .minutes(10)) {
            guard self.commands.migrations[pid] === pending else { return }
            self.migrationEvent(
                pid: pid, .abandoned(reason: "the move of process \(pid) did not end within 10 minutes"))
        }
    }

    /// The process a hosted session restored, with a pidfd checked to name it (not a later process with
    /// its PID); the caller closes the pidfd.
    func openHostedProcess(_ session: HostedSession) -> (pid: Int32, pidfd: Int32)? {
        guard let pid = hostedProcess(session), let pidfd = Posix.openProcess(pid) else { return nil }
        guard Posix.namespacePIDs(pid).last == session.pid else {
            Posix.close(pidfd)
            return nil
        }
        return (pid, pidfd)
    }

    /// The process a hosted session restored (as this daemon sees it): the child of the namespace's init
    /// whose PID there is the session's.
    func hostedProcess(_ session: HostedSession) -> Int32? {
        guard let outer = session.helperPID else { return nil }
        for inner in Posix.children(of: outer) {
            for pid in Posix.children(of: inner) where Posix.namespacePIDs(pid).last == session.pid { return pid }
        }
        return nil
    }

    /// Why process `pid`, which runs here (not a stand-in), cannot be moved to `target`, or nil if it can be
    /// tried.
    func migrationRefusal(pid: Int32, target: String) -> String? {
        guard let status = Posix.processStatus(pid) else { return "no process \(pid) on \(config.node)" }
        if target == config.node { return "process \(pid) already runs on \(target)" }
        guard usableLink(target) != nil else {
            return "node '\(target)' is not reachable from \(config.node)"
        }
        if let why = Self.signalRefusal(pid: pid, status: status) { return why }
        // Memory it shares moves with it, kept coherent (SharedRegions.swift), System V segments only it can
        // reach included (librfork makes them memfds as it moves); what its children share does not.
        if let why = Self.heldResourceRefusal(pid: pid, allowCoherent: true, moving: true) { return why }
        // Its descendants go with it (CRIU takes the tree), if what they hold lets them.
        let owner = Self.firstNumber(status["Uid"]) ?? 0
        return Self.treeRefusal(pid: pid, owner: owner, standIns: Set(sessions.home.values.map(\.localPID)))
    }

    /// Why a process would not answer signal 62 with a call (its default action would kill it), or nil:
    /// librfork must be loaded in it and must have caught the signal, which it leaves neither blocked
    /// nor ignored. Programs that lost RFORK_SOCKET, or link librfork without `rfork run`, have no handler.
    static func signalRefusal(pid: Int32, status: [String: String]) -> String? {
        guard let maps = try? Posix.readFile("/proc/\(pid)/maps"),
            String(decoding: maps, as: UTF8.self).contains("/librfork.so")
        else { return "process \(pid) was not started under 'rfork run' (librfork.so is not loaded in it)" }
        func has(_ key: String) -> Bool {
            guard let mask = status[key].flatMap({ UInt64($0, radix: 16) }) else { return false }
            return mask & (UInt64(1) << UInt64(LocalWire.migrateSignal - 1)) != 0
        }
        guard has("SigCgt") else {
            return
                "process \(pid) does not handle the move signal (\(LocalWire.migrateSignal)); was it started under 'rfork run'?"
        }
        if has("SigBlk") || has("SigIgn") {
            return "process \(pid) blocks the move signal (\(LocalWire.migrateSignal)); it cannot be moved now"
        }
        return nil
    }

    /// Feeds one event to the migration of `pid` (if there is one) and carries its actions out.
    /// `channel` is the process's placement connection, when the event is its call.
    func migrationEvent(pid: Int32, _ event: Migration.Event, call channel: Channel? = nil) {
        guard let pending = commands.migrations[pid] else {
            if let channel { reply(channel, .local, "") }
            return
        }
        for action in pending.machine.handle(event) {
            switch action {
            case .answer(let outcome):
                commands.migrations[pid] = nil
                if outcome.moved {
                    logger.info("process \(pid) moved to \(outcome.node), frozen \(outcome.frozenMs ?? 0) ms")
                } else {
                    logger.info("process \(pid) did not move: \(outcome.reason ?? "")")
                }
                answerMigration(pending.requester, outcome)
            case .keepProcessHere:
                if let channel { reply(channel, .local, "") }
            }
        }
    }

    /// A home session whose process ran elsewhere is gone (it ended, or its stand-in did): a move of it
    /// that was passed on will get no answer, so the command hears now.
    func passedOnSessionEnded(_ session: HomeSession) {
        for (pid, pending) in commands.checkpoints where pending.passedOn?.session == session.id {
            checkpointEvent(pid: pid, .failed(reason: "process \(pid) ended during the checkpoint"))
        }
        guard let pending = commands.migrations[session.localPID], pending.passedOn?.session == session.id else {
            return
        }
        migrationEvent(
            pid: session.localPID, .abandoned(reason: "process \(session.localPID) ended during the move"))
    }

    /// A tree moved with its top process was left stopped by CRIU. Moved: the copies here end (they never
    /// run again) and the top process, woken, becomes the stand-in. Not moved: all of it runs on here.
    func releaseTree(_ session: HomeSession, moved: Bool) {
        guard session.treeStopped else { return }
        session.treeStopped = false
        let descendants = Self.descendants(of: session.localPID)
        for pid in descendants where pid > 1 { Posix.kill(pid, moved ? SIGKILL : SIGCONT) }
        Posix.kill(session.localPID, SIGCONT)
        // The stop events this caused are swallowed (see handleHelperFrame); a failed dump never stopped
        // the tree, so what was not used is dropped soon after, and later stops are the process's again.
        if let container = hostedSession(containing: session.localPID) {
            loop.scheduleTask(in: .seconds(2)) {
                container.quietStops = 0
                container.quietContinues = 0
            }
        }
    }

    /// A home session ended before its copy ran: if it was a migration, the command hears why.
    func migrationSessionEnded(_ session: HomeSession, reason: String) {
        releaseTree(session, moved: false)
        guard session.request.migrate else { return }
        migrationEvent(pid: session.localPID, .stayed(session: session.id, reason: reason))
    }

    /// The answer to whoever asked: the command as JSON, a home node as a MigrateResult.
    func answerMigration(_ requester: PendingMigration.Requester, _ outcome: Migration.Outcome) {
        if outcome.moved {
            RforkMetrics.moved.increment()
            if let ms = outcome.frozenMs { RforkMetrics.freeze.recordNanoseconds(Int64(ms * 1e6)) }
        } else {
            RforkMetrics.stayed.increment()
        }
        switch requester {
        case .command(let channel):
            answerJSON(channel, outcome)
        case .balancer(let pid):
            balancedMoveEnded(pid, outcome)
        case .drain(let id, let index, let local, let shown, let home):
            var renamed = outcome
            renamed.pid = shown
            renamed.home = home
            renamed.reason = outcome.reason.map { Migration.renaming(process: local, to: shown, in: $0) }
            drainEvent(id, .answered(index: index, renamed))
        case .home(let link, let session, let request, let local, let shown):
            var result = Rfork_Wire_V1_MigrateResult()
            result.session = session
            result.request = request
            result.moved = outcome.moved
            result.node = outcome.node
            result.frozenMs = outcome.frozenMs ?? 0
            result.postCopy = outcome.postCopy ?? false
            result.reason = Migration.renaming(process: local, to: shown, in: outcome.reason ?? "")
            var envelope = Envelope()
            envelope.migrateResult = result
            link.wire.writeAndFlush(envelope, promise: nil)
        }
    }

    /// One line of progress for the command that asked to move `pid`: here, or at the home that passed the
    /// move on (which shows it, or passes it on to its own home in turn).
    func migrationProgress(pid: Int32, _ text: String) {
        guard let pending = commands.migrations[pid] else { return }
        switch pending.requester {
        case .command(let channel):
            channel.writeAndFlush(LocalFrame.text(.progress, text), promise: nil)
        case .home(let link, let session, let request, let local, let shown):
            var progress = Rfork_Wire_V1_MigrateProgress()
            progress.session = session
            progress.request = request
            progress.text = Migration.renaming(process: local, to: shown, in: text)
            var envelope = Envelope()
            envelope.migrateProgress = progress
            link.wire.writeAndFlush(envelope, promise: nil)
        case .drain, .balancer:
            break
        }
    }

    /// A phase of a move this node passed on to the node running the process.
    func handleMigrateProgress(_ progress: Rfork_Wire_V1_MigrateProgress, from link: PeerLink) {
        guard let session = sessions.home[progress.session], session.target == link.name,
            let pending = commands.migrations[session.localPID], let asked = pending.passedOn,
            asked == (progress.session, progress.request)
        else { return }
        migrationProgress(pid: session.localPID, progress.text)
    }

    /// The node running the process of home session `result.session` answered a passed-on move.
    func handleMigrateResult(_ result: Rfork_Wire_V1_MigrateResult, from link: PeerLink) {
        // Only the node asked, about the request it was asked (not a late answer to an older one).
        guard let session = sessions.home[result.session], session.target == link.name,
            let pending = commands.migrations[session.localPID], let asked = pending.passedOn,
            asked == (result.session, result.request)
        else { return }
        if result.moved { session.runsOn = result.node }
        let outcome = Migration.Outcome(
            pid: session.localPID, node: result.node, moved: result.moved,
            frozenMs: result.moved ? result.frozenMs : nil, postCopy: result.moved ? result.postCopy : nil,
            reason: result.reason.isEmpty ? nil : result.reason)
        migrationEvent(pid: session.localPID, .answered(outcome))
    }
}
