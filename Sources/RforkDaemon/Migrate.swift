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
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), pid > 0, let target = fields["node"], !target.isEmpty
        else {
            return answerMigration(channel, .init(pid: 0, node: "", moved: false, reason: "malformed migrate request"))
        }
        if let why = migrationRefusal(pid: pid, target: target, uid: peerUID) {
            return answerMigration(channel, .init(pid: pid, node: target, moved: false, reason: why))
        }
        let pending = PendingMigration(machine: Migration(pid: pid, node: target), command: channel)
        migrations[pid] = pending
        logger.info("moving process \(pid) to \(target)")
        Posix.kill(pid, LocalWire.migrateSignal)
        let seconds = Self.migrationCallSeconds
        loop.scheduleTask(in: .seconds(Int64(seconds))) {
            self.migrationEvent(pid: pid, .deadline(seconds: seconds))
        }
    }

    /// Why process `pid` cannot be moved to `target` by a caller with `uid`, or nil if it can be tried.
    func migrationRefusal(pid: Int32, target: String, uid: UInt32?) -> String? {
        guard let uid else { return "the caller cannot be identified" }
        if let session = homeSessions.values.first(where: { $0.pid == pid }) {
            return
                "process \(pid) already runs on \(session.target) (its stand-in is here); moving a process that has moved comes later"
        }
        guard let status = try? Posix.readFile("/proc/\(pid)/status") else {
            return "no process \(pid) on \(config.node)"
        }
        var owner: UInt32?
        for line in String(decoding: status, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.first == "Uid:", fields.count > 1 { owner = UInt32(fields[1]) }
        }
        guard uid == 0 || owner == uid else { return "process \(pid) belongs to another user" }
        if migrations[pid] != nil { return "a move of process \(pid) is already under way" }
        if target == config.node { return "process \(pid) already runs on \(target)" }
        guard config.peers.contains(where: { $0.name == target }) else { return "unknown node '\(target)'" }
        guard let link = links[target], link.isUp, link.channel != nil else {
            return "node '\(target)' is not reachable"
        }
        guard let maps = try? Posix.readFile("/proc/\(pid)/maps"),
            String(decoding: maps, as: UTF8.self).contains("/librfork.so")
        else { return "process \(pid) was not started under 'rfork run' (librfork.so is not loaded in it)" }
        let children = Posix.listDirectory("/proc/\(pid)/task").flatMap {
            (try? Posix.readFile("/proc/\(pid)/task/\($0)/children")) ?? []
        }
        if children.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") }) {
            return "process \(pid) has children on \(config.node); moving a process with its children comes later"
        }
        for name in Posix.listDirectory("/proc/\(pid)/fd") {
            if let target = Posix.readLink("/proc/\(pid)/fd/\(name)"), target.hasPrefix("socket:") {
                return "process \(pid) holds a socket (descriptor \(name), \(target)), which rfork cannot move yet"
            }
        }
        if let why = SharedMemory.check(pid: pid) {
            return why.replacingOccurrences(of: "the child", with: "process \(pid)")
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

    func answerMigration(_ channel: Channel, _ outcome: Migration.Outcome) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(outcome)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        channel.writeAndFlush(LocalFrame.text(.answer, json)).whenComplete { _ in channel.close(promise: nil) }
    }
}
