import Foundation
import Glibc
import NIOCore
import RforkCheckpoint
import RforkPlacement
import RforkProtocol
import RforkSystem
import RforkWire

/// A `rfork checkpoint` waiting for its answer.
final class PendingCheckpoint: @unchecked Sendable {  // confined to Node.loop
    var machine: Checkpoint
    let command: Channel?  // nil for a periodic checkpoint (`rfork run --checkpoint-every`)
    let gid: UInt32
    init(machine: Checkpoint, command: Channel?, gid: UInt32) {
        self.machine = machine
        self.command = command
        self.gid = gid
    }
}

extension Node {
    // MARK: checkpoint

    /// `rfork checkpoint PID DIR`: checks the job and DIR, then signals the job's top process, whose
    /// call (a fork request marked `migrate`) is answered once its tree is saved.
    func handleCheckpoint(_ text: String, peerUID: UInt32?, from channel: Channel) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        let dir = fields["dir"] ?? ""
        func refuse(_ pid: Int32, _ why: String) {
            answerCheckpoint(channel, .init(pid: pid, directory: dir, saved: false, reason: why))
        }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), pid > 0, dir.hasPrefix("/") else {
            return refuse(0, "malformed checkpoint request")
        }
        guard let pidfd = Posix.openProcess(pid) else { return refuse(pid, "no process \(pid)") }
        defer { Posix.close(pidfd) }
        guard let uid = peerUID else { return refuse(pid, "the caller cannot be identified") }
        if let why = startCheckpoint(
            pid: pid, pidfd: pidfd, directory: dir, uid: uid, leaveRunning: fields["leave"] == "1", command: channel)
        {
            refuse(pid, why)
        }
    }

    /// Checks the job and DIR and signals the job's top process; the reason when it cannot start.
    func startCheckpoint(
        pid: Int32, pidfd: Int32, directory dir: String, uid: UInt32, leaveRunning: Bool, command channel: Channel?
    ) -> String? {
        let status = Posix.processStatus(pid)
        if let why = checkpointRefusal(pid: pid, directory: dir, uid: uid, status: status) { return why }
        let gid = status?["Gid"]?.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { UInt32($0) } ?? 0
        let pending = PendingCheckpoint(
            machine: Checkpoint(pid: pid, directory: dir, leaveRunning: leaveRunning), command: channel, gid: gid)
        checkpoints[pid] = pending
        logger.info("saving the job of process \(pid) to \(dir)")
        guard Posix.signal(process: pidfd, LocalWire.migrateSignal) else {
            checkpoints[pid] = nil
            return "process \(pid) ended"
        }
        let seconds = Self.migrationCallSeconds
        loop.scheduleTask(in: .seconds(Int64(seconds))) {
            self.checkpointEvent(pid: pid, .deadline(seconds: seconds))
        }
        return nil
    }

    // MARK: periodic checkpoints

    /// `rfork run --checkpoint-every`: before it execs the job, `rfork run` (the job's top process to be,
    /// same PID) asks for a checkpoint of itself into DIR every so often, left running, as long as it lives.
    func handleSchedule(_ text: String, peerUID: UInt32?, peerPID: Int32?, from channel: Channel) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        let dir = fields["dir"] ?? ""
        func answer(_ error: String?) {
            answerJSON(channel, ScheduleAnswer(ok: error == nil, reason: error))
        }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), let seconds = fields["every"].flatMap({ Int($0) }),
            seconds >= 1, dir.hasPrefix("/"), let uid = peerUID
        else { return answer("malformed checkpoint schedule") }
        // Only a process may schedule its own checkpoints.
        guard peerPID == pid else { return answer("a process can only schedule checkpoints of itself") }
        let parent = "/" + dir.split(separator: "/").dropLast().joined(separator: "/")
        guard Posix.isDirectory(parent), uid == 0 || Posix.owner(parent)?.uid == uid else {
            return answer("\(parent) is not a directory of yours")
        }
        if Posix.fileExists(dir) {
            guard (try? CheckpointDirectory.readManifest(dir)) != nil, uid == 0 || Posix.owner(dir)?.uid == uid else {
                return answer("\(dir) exists and is not a checkpoint of yours; it is left alone")
            }
        }
        guard let pidfd = Posix.openProcess(pid) else { return answer("no process \(pid)") }
        logger.info("process \(pid) is saved to \(dir) every \(seconds) s")
        let task = loop.scheduleRepeatedTask(initialDelay: .seconds(Int64(seconds)), delay: .seconds(Int64(seconds))) {
            task in
            guard Posix.processAlive(pidfd: pidfd) else {
                task.cancel()
                Posix.close(pidfd)
                return
            }
            if self.checkpoints[pid] != nil || self.migrations[pid] != nil { return }  // one at a time
            if let why = self.startCheckpoint(
                pid: pid, pidfd: pidfd, directory: dir, uid: uid, leaveRunning: true, command: nil)
            {
                self.logger.warning("periodic checkpoint of process \(pid) to \(dir) skipped: \(why)")
            }
        }
        periodic[pid] = task
        answer(nil)
    }

    /// Why the job of `pid` cannot be saved to `dir` for a caller with `uid`, or nil.
    func checkpointRefusal(pid: Int32, directory dir: String, uid: UInt32, status: [String: String]?) -> String? {
        guard let status else { return "no process \(pid) on \(config.node)" }
        let owner = status["Uid"]?.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { UInt32($0) }
        guard uid == 0 || owner == uid else { return "process \(pid) belongs to another user" }
        if homeSessions.values.contains(where: { $0.pid == pid }) {
            return "process \(pid) runs on another node; saving a job from there comes later"
        }
        if Posix.namespacePIDs(pid).count > 1 { return "process \(pid) runs in a PID namespace below rforkd's" }
        if migrations[pid] != nil || checkpoints[pid] != nil { return "process \(pid) is being moved or saved already" }
        if let why = Self.signalRefusal(pid: pid, status: status) { return why }
        let tree = Self.descendants(of: pid)
        if let standIn = tree.first(where: { p in homeSessions.values.contains { $0.pid == p } }) {
            return "process \(standIn) of the job runs on another node; saving a job with remote processes comes later"
        }
        for name in Posix.listDirectory("/proc/\(pid)/fd") {
            if let target = Posix.readLink("/proc/\(pid)/fd/\(name)"), target.hasPrefix("socket:") {
                return "process \(pid) holds a socket (descriptor \(name), \(target)), which rfork cannot save yet"
            }
        }
        if let why = SharedMemory.check(pid: pid) {
            return why.replacingOccurrences(of: "the child", with: "process \(pid)")
        }
        // DIR: its parent is the caller's, and DIR is new or a checkpoint of theirs (it is replaced).
        let parent = "/" + dir.split(separator: "/").dropLast().joined(separator: "/")
        guard Posix.isDirectory(parent), let parentOwner = Posix.owner(parent) else {
            return "\(parent) is not a directory"
        }
        guard uid == 0 || parentOwner.uid == uid else { return "\(parent) is not yours" }
        if Posix.fileExists(dir) {
            do { _ = try CheckpointDirectory.readManifest(dir) } catch {
                return "\(dir) exists and is not an rfork checkpoint; it is left alone"
            }
            guard uid == 0 || Posix.owner(dir)?.uid == uid else { return "\(dir) is not yours" }
        }
        return nil
    }

    /// Every descendant of a process (not the process itself), from /proc's children lists.
    static func descendants(of pid: Int32) -> [Int32] {
        var out: [Int32] = []
        var queue = [pid]
        while let p = queue.popLast() {
            for tid in Posix.listDirectory("/proc/\(p)/task") {
                let bytes = (try? Posix.readFile("/proc/\(p)/task/\(tid)/children")) ?? []
                let kids = String(decoding: bytes, as: UTF8.self).split(separator: " ").compactMap { Int32($0) }
                out += kids
                queue += kids
            }
        }
        return out
    }

    /// The job's top process called in: its tree is saved (on a pool thread) into a staging directory
    /// next to DIR, which then replaces DIR in one step.
    func checkpointCall(_ request: LocalForkRequest, from channel: Channel) {
        guard let pending = checkpoints[request.pid] else { return reply(channel, .local, "") }
        let before = pending.machine.state
        checkpointEvent(pid: request.pid, .called, call: channel)
        guard before == .signalled else { return }
        let machine = pending.machine
        let dir = machine.directory
        let staging = dir + ".rfork-staging-\(request.pid)"
        let criu = self.criu
        let node = config.node
        let uid = request.uid
        let gid = pending.gid
        // Pipes between processes of the job stay inside it (CRIU saves them with their bytes); only what
        // leads outside is replaced at restart: a pipe end whose other end no process of the job holds.
        let tree = [request.pid] + Self.descendants(of: request.pid)
        let outside = request.channels.filter { channel in
            guard channel.criuID.hasPrefix("pipe:["), let direction = channel.criuID.last else { return true }
            let key = String(channel.criuID.dropLast())  // "pipe:[INO]"
            let wantReader = direction == "w"
            return !tree.contains { p in
                Posix.listDirectory("/proc/\(p)/fd").contains { fd in
                    Posix.readLink("/proc/\(p)/fd/\(fd)") == key
                        && (Posix.accessMode(pid: p, fd: fd) == O_RDONLY) == wantReader
                }
            }
        }.enumerated().map { index, channel in
            // Channels are numbered 0..<n, in order.
            LocalForkRequest.Channel(id: UInt32(index), kind: channel.kind, criuID: channel.criuID, fd: channel.fd)
        }
        threads.runIfActive(eventLoop: loop) { () throws -> Int in
            CheckpointDirectory.remove(staging)
            try Posix.makeDirectory(staging)
            let images = staging + "/" + CheckpointDirectory.imagesName
            try Posix.makeDirectory(images)
            do {
                try criu.dump(
                    pid: request.pid, imageDirectory: images, externalSocketInode: request.socketInode,
                    externalFiles: outside.filter { $0.criuID.hasPrefix("file[") }.map(\.criuID))
                unlink(images + "/dump.log")
                let manifest = CheckpointManifest(
                    created: ISO8601DateFormatter().string(from: Date()), node: node, pid: request.pid, uid: uid,
                    controlSocketInode: request.socketInode,
                    channels: outside.map { .init(id: $0.id, kind: $0.kind.rawValue, criuID: $0.criuID, fd: $0.fd) },
                    files: [])
                try CheckpointDirectory.commit(staging: staging, to: dir, manifest: manifest, uid: uid, gid: gid)
            } catch {
                CheckpointDirectory.remove(staging)
                throw error
            }
            return Posix.listDirectory(dir + "/" + CheckpointDirectory.imagesName).reduce(0) {
                $0 + Posix.fileSize(dir + "/" + CheckpointDirectory.imagesName + "/" + $1)
            }
        }.whenComplete { result in
            switch result {
            case .success(let bytes):
                let frozen = Double(Posix.monotonicNanoseconds() &- request.forkStartedNanoseconds) / 1e6
                self.checkpointEvent(pid: request.pid, .saved(bytes: bytes, frozenMs: frozen), call: channel)
            case .failure(let error):
                self.checkpointEvent(pid: request.pid, .failed(reason: "\(error)"), call: channel)
            }
        }
    }

    /// Feeds one event to the checkpoint of `pid` and carries its actions out; `channel` is the job's
    /// top process, blocked in its call.
    func checkpointEvent(pid: Int32, _ event: Checkpoint.Event, call channel: Channel? = nil) {
        guard let pending = checkpoints[pid] else {
            if let channel { reply(channel, .local, "") }
            return
        }
        for action in pending.machine.handle(event) {
            switch action {
            case .answer(let outcome):
                checkpoints[pid] = nil
                logger.info(
                    "job of process \(pid): \(outcome.saved ? "saved to \(outcome.directory)" : "not saved: \(outcome.reason ?? "")")"
                )
                if let command = pending.command { answerCheckpoint(command, outcome) }
            case .resumeProcess, .keepProcessHere:
                if let channel { reply(channel, .local, "") }
            case .endJob:
                // Saved without --leave-running: the job ends now (its parent sees SIGKILL), children first.
                for p in Self.descendants(of: pid).reversed() { Posix.kill(p, SIGKILL) }
                Posix.kill(pid, SIGKILL)
                if let channel { channel.close(promise: nil) }
            }
        }
    }

    func answerCheckpoint(_ channel: Channel, _ outcome: Checkpoint.Outcome) {
        answerJSON(channel, outcome)
    }

    // MARK: restart

    /// `rfork restart DIR [--node NODE]`: the caller (the command, which becomes the job's stand-in)
    /// gets the job restored on NODE with its stdio in place of the job's.
    func handleRestart(
        _ text: String, peerUID: UInt32?, peerPID: Int32?, from channel: Channel,
        onSession: @escaping @Sendable (UInt64) -> Void
    ) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        let dir = fields["dir"] ?? ""
        guard dir.hasPrefix("/"), let uid = peerUID, let callerPID = peerPID else {
            return reply(channel, .local, "malformed restart request")
        }
        let wanted = fields["node"].flatMap { $0 == "-" ? nil : $0 }
        threads.runIfActive(eventLoop: loop) { () throws -> CheckpointManifest in
            try CheckpointDirectory.load(dir)
        }.whenComplete { result in
            let manifest: CheckpointManifest
            switch result {
            case .success(let m): manifest = m
            case .failure(let error): return self.reply(channel, .local, "\(error)")
            }
            guard uid == 0 || manifest.uid == uid else {
                return self.reply(channel, .local, "\(dir) is another user's job")
            }
            if self.shuttingDown {
                return self.reply(channel, .local, "rforkd on \(self.config.node) is shutting down")
            }
            if wanted == self.config.node {
                return self.reply(
                    channel, .local, "restarting on the node that runs 'rfork restart' comes later; give another --node"
                )
            }
            let decision = self.placement.choose(policy: .spread, node: wanted, peers: self.peerViews())
            guard case .remote(let target) = decision else {
                if case .local(let reason) = decision {
                    return self.reply(channel, .local, reason ?? "no other node is up to restart the job on")
                }
                return
            }
            guard let link = self.links[target], let peer = link.channel, link.isUp else {
                return self.reply(channel, .local, "node '\(target)' is not reachable")
            }
            let channels = manifest.channels.compactMap { c in
                ChannelKindCode(rawValue: c.kind).map {
                    LocalForkRequest.Channel(id: c.id, kind: $0, criuID: c.criuID, fd: c.fd)
                }
            }
            let request = LocalForkRequest(
                pid: manifest.pid, uid: manifest.uid, socketInode: manifest.controlSocketInode, policy: nil,
                node: target, forkStartedNanoseconds: Posix.monotonicNanoseconds(), channels: channels,
                postCopy: "never")
            let id = self.nextSession
            self.nextSession += 1
            let session = HomeSession(
                id: id, pid: callerPID, uid: manifest.uid, target: target, child: channel, request: request,
                started: Posix.monotonicNanoseconds())
            self.homeSessions[id] = session
            onSession(id)
            self.logger.info("restarting the job of \(dir) on \(target) for process \(callerPID)")
            let images = dir + "/" + CheckpointDirectory.imagesName
            self.startHomeSession(session, peer: peer) { staging in
                // The checkpoint stays as it is: its images are copied for this restart.
                for name in Posix.listDirectory(images) {
                    try Posix.copyFile(images + "/" + name, to: staging + "/" + name)
                }
                return nil
            }
        }
    }

    static func fields(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }

    func answerJSON<T: Encodable>(_ channel: Channel, _ value: T) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        channel.writeAndFlush(LocalFrame.text(.answer, json)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// The answer to a checkpoint schedule.
public struct ScheduleAnswer: Codable, Sendable {
    public var ok: Bool
    public var reason: String?
}
