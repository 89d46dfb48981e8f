import Foundation
import Glibc
import NIOCore
import RforkCheckpoint
import RforkPlacement
import RforkProtocol
import RforkSystem
import RforkWire

/// A `rfork checkpoint` (or a periodic one) waiting for its end.
final class PendingCheckpoint: @unchecked Sendable {  // confined to Node.loop
    var machine: Checkpoint
    let command: Channel?  // nil for a periodic checkpoint (`rfork run --checkpoint-every`)
    /// The job's owner, as the kernel says (/proc/PID/status): the checkpoint is written as them.
    let uid: UInt32
    let gid: UInt32
    /// Home: the job's top process runs on `node`, which was asked (home session, request number); its
    /// images arrive in `staging`. With `home` set too, this node relays (the process moved on from
    /// here): `staging` is empty and the images go on to the home.
    var passedOn: (session: UInt64, request: UInt64, node: String, staging: String)?
    /// On the node running the job for its home: who asked, and the job's call while it waits for the home.
    var home: (link: InboundLink, session: UInt64, request: UInt64)?
    var call: Channel?
    /// Without --leave-running, the stopped tree (pidfds) until the home says DIR is written.
    var stopped: [Int32] = []
    var resultSent = false
    var bytes = 0
    /// The session of a job saved here for its home without --leave-running, whose stop events are quiet.
    var quieted: HostedSession?
    /// Home of a job with processes on other nodes: those parts, cut before the top process's (which
    /// waits in its call meanwhile: `topCall`).
    var parts: [PartCut] = []
    var partsCut: PartsCut?
    var topCall: (request: LocalForkRequest, helper: Int32?)?
    /// On a part's node: this cut is one part of a job saved across nodes (left stopped until the
    /// home's commit, its result sent once its outputs are flushed: `partResult`).
    var part = false
    /// On a part's node: the part moved on from here, and what is cut here is its stand-in (which relays
    /// it, and cannot call in), with the part itself as a part of it (`standInCall`).
    var standInTop: HostedSession?
    /// Home of a job with parts: the stand-ins of parts whose process ended during the cut (no parts any
    /// more), which the top part's cut waits to see let go of their sockets.
    var goneStandIns: [Int32] = []
    var partResult: (manifest: CheckpointManifest, bytes: Int, frozenMs: Double)?
    init(machine: Checkpoint, command: Channel?, uid: UInt32, gid: UInt32) {
        self.machine = machine
        self.command = command
        self.uid = uid
        self.gid = gid
    }
}

/// How a cut ended on the pool thread: written to DIR here, or its images sent to the home.
enum CutOutcome {
    case written(bytes: Int)
    case sent(manifest: CheckpointManifest, bytes: Int, stopped: [Int32])
}

/// One `rfork run --checkpoint-every`: its timer and the process it saves.
struct Schedule {
    let task: RepeatedTask
    let pidfd: Int32
}

/// The answer to a checkpoint schedule.
public struct ScheduleAnswer: Codable, Sendable {
    public var ok: Bool
    public var reason: String?
}

extension Node {
    /// The most periodic checkpoints one daemon keeps.
    static let scheduleLimit = 256

    // MARK: checkpoint

    /// `rfork checkpoint PID DIR`: checks the job, then signals its top process, whose call (a fork
    /// request marked `migrate`) is answered once its tree is saved. DIR itself is only ever touched with
    /// the job owner's file system identity, on a pool thread.
    func handleCheckpoint(_ text: String, peerUID: UInt32?, from channel: Channel) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        let dir = fields["dir"].flatMap { Posix.cleanAbsolutePath($0, relativeTo: "/") } ?? ""
        func refuse(_ pid: Int32, _ why: String) {
            answerJSON(channel, Checkpoint.Outcome(pid: pid, directory: dir, saved: false, reason: why))
        }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), pid > 0, !dir.isEmpty else {
            return refuse(0, "malformed checkpoint request (DIR must be a path without '.' or '..')")
        }
        guard let pidfd = Posix.openProcess(pid) else { return refuse(pid, "no process \(pid)") }
        guard let uid = peerUID else {
            Posix.close(pidfd)
            return refuse(pid, "the caller cannot be identified")
        }
        // Another user's job is refused at once (by startCheckpoint), not waited for.
        let owner = Posix.processStatus(pid).flatMap { Self.firstNumber($0["Uid"]) }
        settleThenCheckpoint(
            pid: pid, pidfd: pidfd, directory: dir, uid: uid, leaveRunning: fields["leave"] == "1", command: channel,
            deadline: uid == 0 || owner == uid ? Posix.monotonicNanoseconds() + forkSettleNanoseconds : 0)
    }

    /// Starts the checkpoint of `pid` once no fork of its job is being placed on another node (until
    /// `deadline`; meanwhile the job's new forks stay here), and answers the command if it cannot start.
    func settleThenCheckpoint(
        pid: Int32, pidfd: Int32, directory dir: String, uid: UInt32, leaveRunning: Bool, command channel: Channel,
        deadline: UInt64
    ) {
        if jobUnsettled(pid), Posix.monotonicNanoseconds() < deadline, commands.checkpoints[pid] == nil {
            commands.checkpointWaits[pid] = deadline
            loop.scheduleTask(in: .milliseconds(20)) {
                self.settleThenCheckpoint(
                    pid: pid, pidfd: pidfd, directory: dir, uid: uid, leaveRunning: leaveRunning, command: channel,
                    deadline: deadline)
            }
            return
        }
        if commands.checkpointWaits[pid] != nil, commands.checkpoints[pid] == nil { settleExpired(pid) }
        commands.checkpointWaits[pid] = nil
        defer { Posix.close(pidfd) }
        if let why = startCheckpoint(
            pid: pid, pidfd: pidfd, directory: dir, uid: uid, leaveRunning: leaveRunning, command: channel)
        {
            answerJSON(channel, Checkpoint.Outcome(pid: pid, directory: dir, saved: false, reason: why))
        }
    }

    /// How long a checkpoint waits for the forks of its job in flight (being placed on another node) to
    /// land; meanwhile the job's new forks stay on their node.
    var forkSettleNanoseconds: UInt64 { config.resolvedCheckpoint.resolvedForkSettleNanoseconds }

    /// Whether a fork in the job of `top` (on this node) is under way: a child being placed on or moved to
    /// another node, a process inside librfork's placement (it blocks every signal there, and holds a
    /// socket to rforkd), or a top process in the middle of an exec (librfork not loaded yet in its new
    /// program). A cut waits for those to land rather than refuse the job.
    func jobUnsettled(_ top: Int32) -> Bool { unsettledBy(top) != nil }

    /// What keeps the job of `top` unsettled (see `jobUnsettled`), or nil.
    func unsettledBy(_ top: Int32) -> String? {
        let tree = [top] + Self.descendants(of: top)
        let members = Set(tree)
        if let s = sessions.home.values.first(where: { members.contains($0.localPID) && $0.state != .running }) {
            return "process \(s.pid) is being placed on or moved to \(s.target)"
        }
        let standIns = Set(sessions.home.values.map(\.localPID))
        if !standIns.contains(top), let maps = try? Posix.readFile("/proc/\(top)/maps"),
            !String(decoding: maps, as: UTF8.self).contains("/librfork.so")
        {
            return "process \(top) is in the middle of an exec"
        }
        return tree.first { p in
            guard !standIns.contains(p), let mask = Posix.processStatus(p)?["SigBlk"].flatMap({ UInt64($0, radix: 16) })
            else { return false }
            return mask & (UInt64(1) << UInt64(LocalWire.migrateSignal - 1)) != 0
        }.map { "process \($0) blocks signal \(LocalWire.migrateSignal) (inside librfork's placement)" }
    }

    /// Logs what still kept a job unsettled when its wait for forks in flight ran out (the cut goes on).
    func settleExpired(_ top: Int32) {
        if let why = unsettledBy(top) {
            logger.warning(
                "checkpoint of the job of \(top): still unsettled when its wait ended (\(why)); it is cut now")
        }
    }

    /// Whether `pid` belongs to a job being saved here, or about to be: its top process or one below it.
    func inJobBeingSaved(_ pid: Int32) -> Bool {
        let now = Posix.monotonicNanoseconds()
        let tops = Set(commands.checkpoints.keys).union(commands.checkpointWaits.filter { $0.value > now }.keys)
        guard !tops.isEmpty else { return false }
        var p: Int32? = pid
        for _ in 0..<64 {
            guard let q = p else { return false }
            if tops.contains(q) { return true }
            p = parentPID(of: q)
        }
        return false
    }

    /// Checks the job and signals its top process; the reason when it cannot start.
    func startCheckpoint(
        pid: Int32, pidfd: Int32, directory dir: String, uid: UInt32, leaveRunning: Bool, command channel: Channel?
    ) -> String? {
        guard checkpointKey != nil else {
            return "rforkd on \(config.node) has no checkpointKey in its configuration; it saves no checkpoints"
        }
        guard let status = Posix.processStatus(pid) else { return "no process \(pid) on \(config.node)" }
        let owner = Self.firstNumber(status["Uid"])
        guard let owner, uid == 0 || owner == uid else { return "process \(pid) belongs to another user" }
        let gid = Self.firstNumber(status["Gid"]) ?? owner
        if commands.migrations[pid] != nil || commands.checkpoints[pid] != nil {
            return "process \(pid) is being moved or saved already"
        }
        if let session = sessions.home.values.first(where: { $0.localPID == pid }) {
            // Its stand-in: the job runs on another node (it moved, or a restart put it there).
            // The job's owner is the session's (the stand-in of a job root restarted for a user is root's).
            return passOnCheckpoint(
                pid: pid, session: session, directory: dir, uid: session.uid,
                gid: session.uid == owner ? gid : session.uid, leaveRunning: leaveRunning, command: channel)
        }
        if let why = checkpointRefusal(pid: pid, status: status) { return why }
        let pending = PendingCheckpoint(
            machine: Checkpoint(pid: pid, directory: dir, leaveRunning: leaveRunning), command: channel, uid: owner,
            gid: gid)
        do {
            pending.parts = try makePartCuts(tree: [pid] + Self.descendants(of: pid))
        } catch {
            return "cannot make a staging directory: \(error)"
        }
        if !pending.parts.isEmpty {
            pending.partsCut = PartsCut(parts: pending.parts.map(\.session.id), leaveRunning: leaveRunning)
        }
        logger.info("saving the job of process \(pid) to \(dir)")
        let why = signalForCheckpoint(pid, pidfd: pidfd, pending)
        if why != nil { finishParts(pending, written: false) }
        return why
    }

    /// Records `pending` and signals the job's top process (`pid` here), which calls in to be saved;
    /// the reason when it cannot be signalled.
    func signalForCheckpoint(_ pid: Int32, pidfd: Int32, _ pending: PendingCheckpoint) -> String? {
        commands.checkpoints[pid] = pending
        commands.checkpointWaits[pid] = nil
        guard Posix.signal(process: pidfd, LocalWire.migrateSignal) else {
            commands.checkpoints[pid] = nil
            return "process \(pid) ended"
        }
        let seconds = Self.migrationCallSeconds
        loop.scheduleTask(in: .seconds(Int64(seconds))) {
            // Only this request's deadline: a later checkpoint of the same PID has its own.
            guard self.commands.checkpoints[pid] === pending else { return }
            self.checkpointEvent(pid: pid, .deadline(seconds: seconds))
        }
        return nil
    }

    static func firstNumber(_ field: String?) -> UInt32? {
        field?.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { UInt32($0) }
    }

    /// Why the job of `pid` cannot be saved, or nil: every process of it is checked. `hosted`: `pid` runs
    /// here for its home node (in the PID namespace of its rfork-nsinit, where CRIU saves it from).
    func checkpointRefusal(pid: Int32, status: [String: String], hosted: Bool = false, standIn: Bool = false)
        -> String?
    {
        if !standIn, sessions.home.values.contains(where: { $0.localPID == pid }) {
            return
                "process \(pid) moved on from \(config.node) to another node; saving it where it runs now is not done (move it back first)"
        }
        if !hosted && Posix.namespacePIDs(pid).count > 1 {
            return "process \(pid) runs in a PID namespace below rforkd's"
        }
        if commands.migrations[pid] != nil || commands.checkpoints[pid] != nil {
            return "process \(pid) is being moved or saved already"
        }
        if !standIn, let why = Self.signalRefusal(pid: pid, status: status) { return why }
        let owner = Self.firstNumber(status["Uid"]) ?? 0
        let relayed = Self.relayedFiles(of: pid)
        let tree = [pid] + Self.descendants(of: pid)
        for p in tree {
            if let session = sessions.home.values.first(where: { $0.localPID == p }) {
                // A part on another node: saved there at the same cut (CheckpointParts.swift).
                if let why = partRefusal(session) { return why }
                continue
            }
            if let why = Self.jobMemberRefusal(pid: p) {
                return why.replacingOccurrences(
                    of: "with processes that stay here", with: "in a way a checkpoint cannot save"
                ).replacingOccurrences(of: ", which cannot follow it to another node yet", with: "")
            }
            if owner != 0, let why = Self.restartSafetyRefusal(pid: p, owner: owner, relayed: relayed) { return why }
        }
        return sharedMemoryCheckpointRefusal(tree: tree)
    }

    /// Shared memory is saved with the job (CRIU restores it shared between the same processes) when the
    /// job is all that maps it: no process outside the job, and no other node (memory already kept
    /// coherent across nodes is refused). Only the kinds no path outside the job reaches get here (see
    /// `SharedMemory.Mapping.isCoherentAcrossNodes`).
    func sharedMemoryCheckpointRefusal(tree: [Int32]) -> String? {
        var objects: [SharedMemory.Object: Int32] = [:]
        for p in tree {
            for m in coherentMappings(p) ?? [] where objects[m.object] == nil { objects[m.object] = p }
        }
        if objects.isEmpty { return nil }
        for (object, p) in objects.sorted(by: { $0.value < $1.value }) {
            if let region = shared.regions[participantName(object)], !region.ended {
                return
                    "process \(p) of the job shares memory with processes on other nodes, and saving memory kept coherent across nodes is not done"
            }
        }
        if let (other, object) = SharedMemory.mappers(of: Set(objects.keys), besides: Set(tree)).first,
            let p = objects[object]
        {
            return
                "process \(other), which is not part of the job, shares memory with its process \(p); a checkpoint would save one side of it only"
        }
        return nil
    }

    /// The processes of `tree` that hold a userfaultfd (librfork makes one in a process that maps shared
    /// memory, and rforkd keeps a copy of it).
    static func userfaultHolders(_ tree: [Int32]) -> [Int32] {
        tree.filter { p in
            Posix.listDirectory("/proc/\(p)/fd").contains {
                Posix.readLink("/proc/\(p)/fd/\($0)") == "anon_inode:[userfaultfd]"
            }
        }
    }

    /// Asks every process of a job but its top (which closed its own before it called in) to close its
    /// userfaultfd, which CRIU cannot save (`LocalWire.releaseUserfaultValue`).
    static func releaseUserfaults(tree: [Int32], top: Int32) {
        for p in userfaultHolders(tree) where p != top {
            guard let pidfd = Posix.openProcess(p) else { continue }
            _ = Posix.signal(process: pidfd, LocalWire.sealSignal, value: LocalWire.releaseUserfaultValue)
            Posix.close(pidfd)
        }
    }

    /// Waits (up to a second) until no process of `tree` holds a userfaultfd; the error names one that does.
    static func awaitUserfaultsReleased(_ tree: [Int32]) throws(CheckpointError) {
        let deadline = Posix.monotonicNanoseconds() &+ 1_000_000_000
        while let p = userfaultHolders(tree).first {
            guard Posix.monotonicNanoseconds() < deadline else {
                throw CheckpointError(
                    .saveFailed,
                    "process \(p) of the job did not close its userfaultfd (it blocks signal \(LocalWire.sealSignal)?), which CRIU cannot save"
                )
            }
            usleep(2000)
        }
    }

    /// The files a job's top process writes (dev:ino): they are relayed at restart, not reopened.
    static func relayedFiles(of pid: Int32) -> Set<String> {
        var out: Set<String> = []
        for fd in Posix.listDirectory("/proc/\(pid)/fd") where Posix.accessMode(pid: pid, fd: fd) != O_RDONLY {
            var st = stat()
            if stat("/proc/\(pid)/fd/\(fd)", &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
                out.insert("\(st.st_dev):\(st.st_ino)")
            }
        }
        return out
    }

    /// Why a process of a user's job must not be saved: a restart, which CRIU does as root, would give
    /// it another identity than its owner's (a setuid program, capabilities), or reopen by path a file
    /// its owner could replace meanwhile (anything not root's, or below a directory others can write,
    /// or deleted). Until CRIU opens files with the task's identity, such jobs stay unsaved.
    static func restartSafetyRefusal(pid: Int32, owner: UInt32, relayed: Set<String>) -> String? {
        guard let status = Posix.processStatus(pid) else { return nil }
        if !runsOnlyAs(owner, status: status) {
            return "process \(pid) of the job runs with another identity or capabilities; it cannot be saved"
        }
        var files: [(String, String)] = []  // (what, path)
        for fd in Posix.listDirectory("/proc/\(pid)/fd") {
            guard let target = Posix.readLink("/proc/\(pid)/fd/\(fd)"), target.hasPrefix("/"),
                !target.hasPrefix("/dev/")
            else { continue }
            var st = stat()
            if stat("/proc/\(pid)/fd/\(fd)", &st) == 0, relayed.contains("\(st.st_dev):\(st.st_ino)") { continue }
            files.append(("descriptor \(fd)", target))
        }
        if let maps = try? Posix.readFile("/proc/\(pid)/maps") {
            for mapping in SharedMemory.parseMaps(String(decoding: maps, as: UTF8.self))
            where mapping.path.hasPrefix("/") && !mapping.path.hasPrefix("/dev/") {
                files.append(("a mapping", mapping.path))
            }
        }
        for (what, path) in files where !Self.isRootControlled(path) {
            return
                "process \(pid) holds \(path) (\(what)), which a restart would reopen by path while others could replace it; saving such a job comes later"
        }
        return nil
    }

    /// Whether a path and every directory above it belong to root and are writable by nobody else.
    static func isRootControlled(_ path: String) -> Bool {
        if path.hasSuffix(" (deleted)") { return false }
        var prefix = ""
        for part in [""] + path.split(separator: "/").map(String.init) {
            prefix = part.isEmpty ? "/" : (prefix == "/" ? "/" + part : prefix + "/" + part)
            var st = stat()
            guard lstat(prefix, &st) == 0, st.st_uid == 0, st.st_mode & 0o022 == 0 || (st.st_mode & S_IFMT) == S_IFLNK
            else { return false }
        }
        return true
    }

    /// What a process holds that cannot be saved or moved yet (a socket, shared memory), or nil. With
    /// `allowCoherent` (a move), memory rforkd keeps coherent across nodes does not count; with `moving`
    /// (`rfork migrate` of this very process), nor do the System V segments librfork makes memfds as it moves.
    static func heldResourceRefusal(pid: Int32, allowCoherent: Bool = false, moving: Bool = false) -> String? {
        for name in Posix.listDirectory("/proc/\(pid)/fd") {
            if let target = Posix.readLink("/proc/\(pid)/fd/\(name)"), target.hasPrefix("socket:") {
                return "process \(pid) holds a socket (descriptor \(name), \(target)), which rfork cannot move yet"
            }
        }
        return SharedMemory.check(pid: pid, allowCoherent: allowCoherent, movingSystemV: moving).map {
            $0.replacingOccurrences(of: "the child", with: "process \(pid)")
        }
    }

    /// `heldResourceRefusal` for a process of a job or tree walked while it runs (before it is stopped): one
    /// that ended since the walk holds nothing. A job that forks and reaps all the time loses processes
    /// between the walk and the reading of their memory maps; that is no reason to refuse it.
    static func jobMemberRefusal(pid: Int32, allowCoherent: Bool = true) -> String? {
        guard let why = heldResourceRefusal(pid: pid, allowCoherent: allowCoherent) else { return nil }
        return Posix.processState(pid) == nil ? nil : why
    }

    /// Every descendant of a process (not the process itself), from /proc's children lists.
    static func descendants(of pid: Int32) -> [Int32] {
        var out: [Int32] = []
        var queue = [pid]
        while let p = queue.popLast() {
            let kids = Posix.children(of: p)
            out += kids
            queue += kids
        }
        return out
    }

    /// The channels of a job's top process that lead outside the job: a pipe end whose other end no
    /// process of the job holds (pipes inside the job are saved by CRIU with their bytes). Renumbered.
    static func outsideChannels(_ channels: [LocalForkRequest.Channel], tree: [Int32]) -> [LocalForkRequest.Channel] {
        channels.filter { channel in
            guard channel.criuID.hasPrefix("pipe:["), let direction = channel.criuID.last else { return true }
            let key = String(channel.criuID.dropLast())  // "pipe:[INO]"
            let wantReader = direction == "w"
            return !tree.contains { p in
                held(by: p).contains { $0.target == key && ($0.mode == O_RDONLY) == wantReader }
            }
        }.enumerated().map { index, channel in
            LocalForkRequest.Channel(id: UInt32(index), kind: channel.kind, criuID: channel.criuID, fd: channel.fd)
        }
    }

    /// The job's top process called in: CRIU saves its tree into a private directory (left stopped when
    /// the job is to end, so nothing runs between the cut and the end), which is then written to DIR as
    /// the job's owner and swapped in. Saving it for its home (it runs here for another node), the images
    /// go to the home instead, and the job waits for the home's word (`checkpointCommitted`).
    /// `localPID` is the caller's PID here; `helper`, the rfork-nsinit whose namespaces it lives in.
    func checkpointCall(_ request: LocalForkRequest, localPID: Int32, helper: Int32?, from channel: Channel?) {
        guard let pending = commands.checkpoints[localPID], pending.machine.state == .signalled,
            pending.home != nil || checkpointKey != nil
        else { return checkpointEvent(pid: localPID, .strayCall, call: channel) }
        checkpointEvent(pid: localPID, .called, call: channel)
        pending.call = channel
        if !pending.machine.leaveRunning || pending.part, let container = hostedSession(containing: localPID) {
            // CRIU leaves the job stopped until it ends (or goes on): rfork's stop and continue, which its
            // home must not pass to the stand-in (a stopped stand-in would never read the job's end).
            container.quietStops += 1
            container.quietContinues += 1
            pending.quieted = container
        }
        if !pending.parts.isEmpty {
            // Its parts on other nodes are cut first, this one last (CheckpointParts.swift).
            pending.topCall = (request, helper)
            return startPartCuts(localPID, pending)
        }
        takeCut(request, localPID: localPID, helper: helper, pending: pending)
    }

    /// CRIU takes the cut of the job whose top process (`localPID`) waits in its call, then DIR is
    /// written (or the images go to the home). With parts on other nodes, their images are in each
    /// part's staging directory already, and their stand-ins' sockets are left out of this cut.
    func takeCut(_ request: LocalForkRequest, localPID: Int32, helper: Int32?, pending: PendingCheckpoint) {
        let channel = pending.call  // none for a stand-in cut as a part (`standInCall`)
        let key = checkpointKey
        let machine = pending.machine
        let part = pending.part
        let parts = pending.parts.map { ($0.manifest, $0.staging) }
        let id = sessions.newID()
        let privateDir = imageRoot + "/c\(id)"
        let criu = self.criu
        let node = config.node
        let (uid, gid) = (pending.uid, pending.gid)
        let home = pending.home
        Self.releaseUserfaults(tree: [localPID] + Self.descendants(of: localPID), top: localPID)
        let logger = self.logger
        threads.runIfActive(eventLoop: loop) { () throws -> CutOutcome in
            let started = Posix.monotonicNanoseconds()
            let tree = [localPID] + Self.descendants(of: localPID)
            try Self.awaitUserfaultsReleased(tree)
            let outside = Self.outsideChannels(request.channels, tree: tree)
            // A job saved here, alone (no parts, not for a home), is dumped straight into DIR's staging
            // directory (`CheckpointDirectory.InPlace`): its images are written once, not copied (unless
            // root cannot make a directory of its own there).
            let inPlace =
                home == nil && parts.isEmpty && helper == nil
                ? try CheckpointDirectory.beginInPlace(dir: machine.directory, pid: request.pid, uid: uid, gid: gid)
                : nil
            let imageDirectory = inPlace?.criuPath ?? privateDir
            if inPlace == nil { try Posix.makeDirectory(privateDir) }
            defer { if inPlace == nil { Posix.removeFlatDirectory(privateDir) } }
            do {
                try criu.dump(
                    pid: request.pid, imageDirectory: imageDirectory, externalSocketInode: request.socketInode,
                    externalFiles: outside.filter { $0.criuID.hasPrefix("file[") }.map(\.criuID)
                        + parts.map { "unix[\($0.0.standInSocketInode)]" },
                    leaveStopped: !machine.leaveRunning || part, insideNamespacesOf: helper)
            } catch {
                if let inPlace { CheckpointDirectory.discardInPlace(inPlace, uid: uid, gid: gid) }
                throw error
            }
            unlink(imageDirectory + "/dump.log")
            let dumped = Posix.monotonicNanoseconds()
            if machine.leaveRunning && !part {
                // The cut is taken: the job goes on while its images are checked and flushed (and copied,
                // unless CRIU wrote them in place).
                let frozen = Double(Posix.monotonicNanoseconds() &- request.forkStartedNanoseconds) / 1e6
                self.loop.execute { self.checkpointEvent(pid: localPID, .cut(frozenMs: frozen), call: channel) }
            }
            // The tree is stopped now: descriptors that name exactly these processes, for its end.
            let stopped = machine.leaveRunning && !part ? [] : tree.compactMap(Posix.openProcess)
            var manifest = CheckpointManifest(
                created: ISO8601DateFormatter().string(from: Date()), node: node, pid: request.pid, uid: uid,
                controlSocketInode: request.socketInode,
                channels: outside.map { .init(id: $0.id, kind: $0.kind.rawValue, criuID: $0.criuID, fd: $0.fd) },
                files: [])
            if !parts.isEmpty {
                // The parts' images join this cut's, each under its prefix.
                manifest.parts = try parts.map { (part, staging) in
                    try Self.adoptPartImages(from: staging, into: privateDir, prefix: part.prefix)
                    return part
                }
            }
            if let home {
                // The home keeps the checkpoint: the images go there, and a stopped job waits for its word.
                let bytes = Posix.listDirectory(privateDir).reduce(0) { $0 + Posix.fileSize(privateDir + "/" + $1) }
                do {
                    try Self.streamImages(from: privateDir, inlined: [], session: home.session, to: home.link.wire)
                } catch {
                    for fd in stopped {
                        _ = Posix.signal(process: fd, SIGCONT)
                        Posix.close(fd)
                    }
                    throw CheckpointError(
                        .saveFailed, "sending the images to \(home.link.peerName ?? "the home") failed: \(error)")
                }
                return .sent(manifest: manifest, bytes: bytes, stopped: stopped)
            }
            defer { for fd in stopped { Posix.close(fd) } }
            guard let key else {
                if let inPlace { CheckpointDirectory.discardInPlace(inPlace, uid: uid, gid: gid) }
                throw CheckpointError(.saveFailed, "no checkpoint key")
            }
            do {
                let bytes =
                    try inPlace.map {
                        try CheckpointDirectory.finishInPlace($0, manifest: manifest, key: key, uid: uid, gid: gid)
                    }
                    ?? CheckpointDirectory.write(
                        from: privateDir, to: machine.directory, manifest: manifest, key: key, uid: uid, gid: gid)
                let written = Posix.monotonicNanoseconds()
                logger.info(
                    "checkpoint of process \(request.pid): called in \((started &- request.forkStartedNanoseconds) / 1_000_000) ms before, criu dump \((dumped &- started) / 1_000_000) ms, \(bytes >> 20) MiB written and checked in \((written &- dumped) / 1_000_000) ms"
                )
                // Saved without --leave-running: the stopped job ends now (its parent sees SIGKILL).
                for fd in stopped.reversed() { _ = Posix.signal(process: fd, SIGKILL) }
                return .written(bytes: bytes)
            } catch {
                // The job was left stopped for its end: it goes on instead.
                for fd in stopped { _ = Posix.signal(process: fd, SIGCONT) }
                throw error
            }
        }.whenComplete { result in
            switch result {
            case .success(.written(let bytes)):
                let frozen = Double(Posix.monotonicNanoseconds() &- request.forkStartedNanoseconds) / 1e6
                self.checkpointEvent(pid: localPID, .saved(bytes: bytes, frozenMs: frozen), call: channel)
            case .success(.sent(let manifest, let bytes, let stopped)):
                let frozen = Double(Posix.monotonicNanoseconds() &- request.forkStartedNanoseconds) / 1e6
                self.checkpointImagesSent(
                    localPID: localPID, manifest: manifest, bytes: bytes, stopped: stopped, frozenMs: frozen)
            case .failure(let error):
                self.checkpointEvent(pid: localPID, .failed(reason: "\(error)"), call: channel)
            }
        }
    }

    /// Feeds one event to the checkpoint of `pid` and carries its actions out; `channel` is the job's
    /// top process, blocked in its call.
    func checkpointEvent(pid: Int32, _ event: Checkpoint.Event, call: Channel? = nil) {
        guard let pending = commands.checkpoints[pid] else {
            if let call { reply(call, .local, "") }
            return
        }
        // The top process waiting in its call (a failure of a part's cut, say, comes without it).
        let channel = call ?? pending.call
        for action in pending.machine.handle(event) {
            switch action {
            case .answer(let outcome):
                commands.checkpoints[pid] = nil
                finishParts(pending, written: outcome.saved)
                if let container = pending.quieted {
                    // Whatever of the stop and continue was not seen is dropped soon; later ones are the job's.
                    loop.scheduleTask(in: .seconds(2)) {
                        container.quietStops = 0
                        container.quietContinues = 0
                    }
                }
                logger.info(
                    "job of process \(pid): \(outcome.saved ? "saved to \(outcome.directory.isEmpty ? "its home" : outcome.directory)" : "not saved: \(outcome.reason ?? "")")"
                )
                if let command = pending.command { answerJSON(command, outcome) }
                if let staging = pending.passedOn?.staging, !staging.isEmpty { Posix.removeFlatDirectory(staging) }
                if !outcome.saved, !pending.resultSent, pending.home != nil {
                    // Saved for its home: the home hears why not (the reason without this node's suffix).
                    var reason = outcome.reason ?? "not saved"
                    if case .failed(let why) = event { reason = why }
                    sendCheckpointResult(pending, saved: false, reason: reason)
                }
            case .resumeProcess, .keepProcessHere:
                if let channel { reply(channel, .local, "") }
            case .endJob:
                // The job was killed on the pool thread, through pidfds taken while it was stopped.
                if let channel { channel.close(promise: nil) }
            }
        }
    }

    // MARK: periodic checkpoints

    /// `rfork run --checkpoint-every`: before it execs the job, `rfork run` (the job's top process to be,
    /// same PID) asks for a checkpoint of itself into DIR every so often, left running, as long as it lives.
    func handleSchedule(_ text: String, peerUID: UInt32?, peerPID: Int32?, from channel: Channel) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        func answer(_ error: String?) { answerJSON(channel, ScheduleAnswer(ok: error == nil, reason: error)) }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), let seconds = fields["every"].flatMap({ Int($0) }),
            (1...86400 * 365).contains(seconds),
            let dir = fields["dir"].flatMap({ Posix.cleanAbsolutePath($0, relativeTo: "/") }), let uid = peerUID
        else { return answer("malformed checkpoint schedule (DIR must be a path without '.' or '..')") }
        // Only a process may schedule its own checkpoints.
        guard peerPID == pid else { return answer("a process can only schedule checkpoints of itself") }
        guard checkpointKey != nil else {
            return answer("rforkd on \(config.node) has no checkpointKey in its configuration; it saves no checkpoints")
        }
        guard commands.periodic[pid] != nil || commands.periodic.count < Self.scheduleLimit else {
            return answer("rforkd on \(config.node) keeps \(Self.scheduleLimit) schedules already")
        }
        guard let pidfd = Posix.openProcess(pid) else { return answer("no process \(pid)") }
        dropSchedule(pid)
        logger.info("process \(pid) is saved to \(dir) every \(seconds) s")
        let task = loop.scheduleRepeatedTask(initialDelay: .seconds(Int64(seconds)), delay: .seconds(Int64(seconds))) {
            task in
            guard Posix.processAlive(pidfd: pidfd), !self.shuttingDown else {
                if self.commands.periodic[pid]?.task === task { self.dropSchedule(pid) }
                return
            }
            // One at a time.
            if self.commands.checkpoints[pid] != nil || self.commands.migrations[pid] != nil { return }
            if let why = self.startCheckpoint(
                pid: pid, pidfd: pidfd, directory: dir, uid: uid, leaveRunning: true, command: nil)
            {
                self.logger.warning("periodic checkpoint of process \(pid) to \(dir) skipped: \(why)")
            }
        }
        commands.periodic[pid] = Schedule(task: task, pidfd: pidfd)
        answer(nil)
    }

    /// Ends the periodic checkpoints of `pid` (its descriptor goes with them).
    func dropSchedule(_ pid: Int32) {
        guard let schedule = commands.periodic.removeValue(forKey: pid) else { return }
        schedule.task.cancel()
        Posix.close(schedule.pidfd)
    }

    // MARK: restart

    /// `rfork restart DIR [--node NODE]`: the caller (the command, which becomes the job's stand-in)
    /// gets the job restored on NODE with its stdio in place of the job's. DIR is read as the caller, and
    /// its copy is checked (signature, sizes, checksums) before anything is restored.
    func handleRestart(
        _ text: String, peerUID: UInt32?, peerPID: Int32?, from channel: Channel,
        onSession: @escaping @Sendable (UInt64) -> Void
    ) {
        loop.preconditionInEventLoop()
        let fields = Self.fields(text)
        guard let dir = fields["dir"].flatMap({ Posix.cleanAbsolutePath($0, relativeTo: "/") }), let uid = peerUID,
            let callerPID = peerPID
        else { return reply(channel, .local, "malformed restart request") }
        guard let key = checkpointKey else {
            return reply(channel, .local, "rforkd on \(config.node) has no checkpointKey in its configuration")
        }
        let gid = Self.firstNumber(Posix.processStatus(callerPID)?["Gid"]) ?? uid
        let wanted = fields["node"].flatMap { $0 == "-" ? nil : $0 }
        threads.runIfActive(eventLoop: loop) { () throws -> CheckpointManifest in
            try Posix.asFilesystemUser(
                uid: uid, gid: gid,
                unavailable: CheckpointError(.saveFailed, "cannot take the file system identity of uid \(uid)")
            ) {
                () throws(CheckpointError) in
                try CheckpointDirectory.readManifest(dir)
            }
        }.whenComplete { result in
            let manifest: CheckpointManifest
            switch result {
            case .success(let m): manifest = m
            case .failure(let error): return self.reply(channel, .local, "\(error)")
            }
            guard channel.isActive else { return }  // the command is gone: nothing to restart for
            guard uid == 0 || manifest.uid == uid else {
                return self.reply(channel, .local, "\(dir) is another user's job")
            }
            if self.shuttingDown {
                return self.reply(channel, .local, "rforkd on \(self.config.node) is shutting down")
            }
            let target: String
            if wanted == self.config.node {
                target = self.config.node  // through this node's link to itself
            } else {
                let decision = self.placement.choose(
                    policy: .spread, node: wanted, peers: self.peerViews(named: wanted))
                guard case .remote(let chosen) = decision else {
                    if case .local(let reason) = decision {
                        return self.reply(channel, .local, reason ?? "no other node is up to restart the job on")
                    }
                    return
                }
                target = chosen
            }
            guard let link = self.usableLink(target) else {
                return self.reply(channel, .local, "node '\(target)' is not reachable")
            }
            let peer = link.wire
            let channels = manifest.channels.compactMap { c in
                ChannelKindCode(rawValue: c.kind).map {
                    LocalForkRequest.Channel(id: c.id, kind: $0, criuID: c.criuID, fd: c.fd)
                }
            }
            let request = LocalForkRequest(
                pid: manifest.pid, uid: manifest.uid, socketInode: manifest.controlSocketInode, policy: nil,
                node: target, forkStartedNanoseconds: Posix.monotonicNanoseconds(), channels: channels,
                postCopy: "never")
            let id = self.sessions.newID()
            let session = HomeSession(
                id: id, pid: callerPID, uid: manifest.uid, target: target, child: channel, request: request,
                started: Posix.monotonicNanoseconds())
            self.sessions.home[id] = session
            onSession(id)
            guard channel.isActive else { return self.standInClosed(session: id) }  // it left meanwhile
            self.logger.info("restarting the job of \(dir) on \(target) for process \(callerPID)")
            self.startHomeSession(session, peer: peer) { staging in
                // What is restored is this checked copy; the checkpoint itself is never changed.
                let checked = try CheckpointDirectory.copyVerified(dir, into: staging, key: key, uid: uid, gid: gid)
                guard checked == manifest else { throw CheckpointError(.corrupt, "\(dir) changed while it was read") }
                if let parts = manifest.parts, !parts.isEmpty {
                    // The node restoring the job restores its parts too (`startRestoredParts`).
                    try Posix.writeFile(staging + "/" + Self.partsFileName, try JSONEncoder().encode(parts))
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
