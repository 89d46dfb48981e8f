import Foundation
import Glibc
import NIOCore
import RforkCheckpoint
import RforkProtocol
import RforkSystem
import RforkWire

/// A `rfork migrate` waiting for its answer: the request's state machine and the command's connection.
final class PendingMigration: @unchecked Sendable {  // confined to Node.loop
    var machine: Migration
    let command: Channel
    init(machine: Migration, command: Channel) {
        self.machine = machine
        self.command = command
    }
}

extension Node {
    /// How long a signalled process has to call in before the move is called off.
    static let migrationCallSeconds = 5

    /// `rfork migrate`: checks that the process may move, then signals it; its librfork asks to be
    /// placed (a fork request marked `migrate`), and the answer goes back once the move ended.
    func handleMigrate(_ text: String, peerUID: UInt32?, from channel: Channel) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        guard let pid = fields["pid"].flatMap({ Int32($0) }), pid > 0, let target = fields["node"], !target.isEmpty
        else {
            return answerMigration(channel, .init(pid: 0, node: "", moved: false, reason: "malformed migrate request"))
        }
        // The checks below read /proc/PID; a pidfd opened first and still naming a live process proves
        // they were about this process, and the signal can reach no other.
        guard let pidfd = Posix.openProcess(pid) else {
            return answerMigration(channel, .init(pid: pid, node: target, moved: false, reason: "no process \(pid)"))
        }
        defer { Posix.close(pidfd) }
        if let why = migrationRefusal(pid: pid, target: target, uid: peerUID) {
            return answerMigration(channel, .init(pid: pid, node: target, moved: false, reason: why))
        }
        let pending = PendingMigration(machine: Migration(pid: pid, node: target), command: channel)
        migrations[pid] = pending
        logger.info("moving process \(pid) to \(target)")
        guard Posix.signal(process: pidfd, LocalWire.migrateSignal) else {
            return migrationEvent(pid: pid, .refused(reason: "process \(pid) ended"))
        }
        let seconds = Self.migrationCallSeconds
        // Each timer belongs to this request only: a later move of the same PID has its own.
        loop.scheduleTask(in: .seconds(Int64(seconds))) {
            guard self.migrations[pid] === pending else { return }
            self.migrationEvent(pid: pid, .deadline(seconds: seconds))
        }
        loop.scheduleTask(in: .minutes(10)) {
            guard self.migrations[pid] === pending else { return }
            self.migrationEvent(
                pid: pid, .abandoned(reason: "the move of process \(pid) did not end within 10 minutes"))
        }
    }

    /// Why process `pid` cannot be moved to `target` by a caller with `uid`, or nil if it can be tried.
    func migrationRefusal(pid: Int32, target: String, uid: UInt32?) -> String? {
        guard let uid else { return "the caller cannot be identified" }
        // Who owns it comes first: nothing else about another user's process is told.
        guard let status = Posix.processStatus(pid) else { return "no process \(pid) on \(config.node)" }
        let owner = Self.firstNumber(status["Uid"])
        guard uid == 0 || owner == uid else { return "process \(pid) belongs to another user" }
        if let session = homeSessions.values.first(where: { $0.pid == pid }) {
            return
                "process \(pid) already runs on \(session.target) (its stand-in is here); moving a process that has moved comes later"
        }
        if Posix.namespacePIDs(pid).count > 1 {
            return isInHostedNamespace(pid)
                ? "process \(pid) runs in a remote child hosted here; moving it from here comes later"
                : "process \(pid) runs in a PID namespace below rforkd's, from which CRIU cannot move it"
        }
        if migrations[pid] != nil || checkpoints[pid] != nil {
            return "process \(pid) is being moved or saved already"
        }
        if target == config.node { return "process \(pid) already runs on \(target)" }
        guard config.peers.contains(where: { $0.name == target }) else { return "unknown node '\(target)'" }
        guard let link = links[target], link.isUp, link.channel != nil else {
            return "node '\(target)' is not reachable"
        }
        if let why = Self.signalRefusal(pid: pid, status: status) { return why }
        if Posix.hasChildren(pid) {
            return "process \(pid) has children on \(config.node); moving a process with its children comes later"
        }
        if let why = Self.heldResourceRefusal(pid: pid) { return why }
        return nil
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
        guard let pending = migrations[pid] else {
            if let channel { reply(channel, .local, "") }
            return
        }
        for action in pending.machine.handle(event) {
            switch action {
            case .answer(let outcome):
                migrations[pid] = nil
                if outcome.moved {
                    logger.info("process \(pid) moved to \(outcome.node), frozen \(outcome.frozenMs ?? 0) ms")
                } else {
                    logger.info("process \(pid) did not move: \(outcome.reason ?? "")")
                }
                answerMigration(pending.command, outcome)
            case .keepProcessHere:
                if let channel { reply(channel, .local, "") }
            }
        }
    }

    /// A home session ended before its copy ran: if it was a migration, the command hears why.
    func migrationSessionEnded(_ session: HomeSession, reason: String) {
        guard session.request.migrate else { return }
        migrationEvent(pid: session.pid, .stayed(session: session.id, reason: reason))
    }

    func answerMigration(_ channel: Channel, _ outcome: Migration.Outcome) { answerJSON(channel, outcome) }
}
