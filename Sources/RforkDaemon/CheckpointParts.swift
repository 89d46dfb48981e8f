import Foundation
import Glibc
import NIOCore
import NIOPosix
import RforkCheckpoint
import RforkProtocol
import RforkSystem
import RforkWire

/// A checkpoint of a job with processes on several nodes: one consistent cut of every part.
///
/// The job's top process runs here (its home); some of its descendants run on other nodes, each a *part*
/// whose stand-in here keeps its PID and relays its descriptors. Every part is cut by its node, the top
/// part last, and the bytes on their way between the parts are flushed into pipes with markers
/// (Chandy-Lamport) so that each is in exactly one image:
///
/// ```
///  home                                        a part's node
///  top process calls in (waits)
///  stand-in ◄ MARK INPUT: stops reading, echoes
///  Mark INPUT, CheckpointRequest{part} ───────►  nsinit: every input in the pipes, echoes with its keys
///                                                signal 62, the part calls in, CRIU dump (left stopped)
///                                    ◄──────────  ImageChunk × n
///                                                nsinit ◄ MARK OUTPUT: sends what the part wrote, echoes
///  stand-in ◄ MARK OUTPUT (after those bytes) ◄─  CheckpointResult{manifest}
///  stand-in echoes: every byte written here
///  CRIU dump of the top part (stand-ins' sockets external), DIR written with every part's images
///  CheckpointCommit{written} ─────────────────►  the part goes on (or ends, without --leave-running)
///  stand-in ◄ MARK RESUME
/// ```
///
/// A byte a part's stand-in read before its INPUT marker is in that part's pipe (saved in its
/// `pipes-data.img`, written back at restart); one read after is still in the top part's pipe. A byte
/// a part wrote is in its stand-in's pipe, or its stand-in's memory, when the top part is cut. A restart
/// restores the top part with its stand-ins, each given a new socket to the daemon of the node it is
/// restored on, which restores that part as a remote child of the stand-in (`startRestoredParts`).
final class PartCut: @unchecked Sendable {  // confined to Node.loop
    let session: HomeSession
    let request: UInt64
    let staging: String
    var manifest: CheckpointManifest.Part

    init(session: HomeSession, request: UInt64, staging: String) {
        self.session = session
        self.request = request
        self.staging = staging
        self.manifest = CheckpointManifest.Part(
            pid: session.pid, node: session.target, prefix: "part-\(session.pid)-", standInSocketInode: 0,
            controlSocketInode: 0, channels: [])
    }
}

extension LocalFrame {
    /// A checkpoint's marker (RFORK_MSG_MARK): `phase`, and for RESUME whether the far side is new.
    static func mark(_ phase: UInt32, fresh: Bool = false) -> LocalFrame {
        var buffer = ByteBuffer()
        buffer.writeInteger(phase, endianness: .little)
        if phase == LocalWire.markResume { buffer.writeInteger(UInt32(fresh ? 1 : 0), endianness: .little) }
        return LocalFrame(type: .mark, payload: buffer)
    }
}

extension Envelope {
    static func mark(session: UInt64, phase: UInt32, keys: Data = Data()) -> Envelope {
        var mark = Rfork_Wire_V1_Mark()
        mark.session = session
        mark.phase = phase
        mark.keys = keys
        var envelope = Envelope()
        envelope.mark = mark
        return envelope
    }
}

extension Node {
    /// How long the parts of a job have to be cut before the checkpoint is given up (`checkpoint` in the
    /// daemon's configuration).
    var partCutSeconds: Int64 { config.resolvedCheckpoint.resolvedPartCutSeconds }
    /// How long a part's namespace init has to put every input in its pipes (a full pipe never takes it).
    var inputMarkSeconds: Int64 { config.resolvedCheckpoint.resolvedInputMarkSeconds }

    // MARK: home

    /// Why a process of the job running on another node (`session`, its stand-in here) cannot be saved
    /// with it, or nil. The job may itself be a part of a job saved across nodes: its own parts are cut
    /// the same way, from here, before it is (parts of parts, to any depth).
    func partRefusal(_ session: HomeSession) -> String? {
        let p = session.pid
        guard session.state == .running else {
            return "process \(p) of the job is being placed on or moved to another node"
        }
        // One that moved on from `target` is cut there with the stand-in it left (`standInCall`).
        guard usableLink(session.target) != nil else {
            return "node '\(session.target)', which runs process \(p) of the job, is not reachable"
        }
        if commands.checkpoints[session.localPID] != nil || commands.migrations[session.localPID] != nil {
            return "process \(p) of the job is being moved or saved already"
        }
        return nil
    }

    /// The parts of a job (the stand-ins among `tree`), each with its own staging directory.
    func makePartCuts(tree: [Int32]) throws -> [PartCut] {
        var parts: [PartCut] = []
        for p in tree {
            guard let session = sessions.home.values.first(where: { $0.localPID == p }) else { continue }
            let request = commands.newMigrateRequest()
            let staging = imageRoot + "/k\(session.id)-\(request)"
            try Posix.makeDirectory(staging)
            parts.append(PartCut(session: session, request: request, staging: staging))
        }
        return parts
    }

    /// The top process called in: every part's stand-in stops reading its inputs and echoes the marker.
    func startPartCuts(_ top: Int32, _ pending: PendingCheckpoint) {
        guard commands.checkpoints[top] === pending, pending.topCall != nil else { return }
        // A part whose process ended since the job was looked at is no part any more (`partGone`: the top
        // part's cut waits for its stand-in to let go of its socket).
        for part in pending.parts where part.session.ended { partGone(top, pending, part) }
        for part in pending.parts {
            guard let inode = Self.socketInode(of: part.session.localPID) else {
                return checkpointEvent(
                    pid: top, .failed(reason: "the stand-in of process \(part.session.pid) has no socket to rforkd"))
            }
            part.manifest.standInSocketInode = inode
        }
        logger.info("saving the job of process \(top) with \(pending.parts.count) part(s) on other nodes")
        partsEvent(top, pending, .topCalledIn)
        loop.scheduleTask(in: .seconds(self.partCutSeconds)) {
            guard self.commands.checkpoints[top] === pending, pending.topCall != nil else { return }
            self.checkpointEvent(
                pid: top,
                .failed(reason: "the parts of the job on other nodes were not saved within \(self.partCutSeconds) s"))
        }
    }

    /// The socket a stand-in holds to rforkd (its only one: a job holding sockets is not saved).
    static func socketInode(of pid: Int32) -> UInt64? {
        for fd in Posix.listDirectory("/proc/\(pid)/fd") {
            guard let target = Posix.readLink("/proc/\(pid)/fd/\(fd)"), target.hasPrefix("socket:[") else { continue }
            return UInt64(target.dropFirst(8).dropLast())
        }
        return nil
    }

    /// The checkpoint and part a stand-in's session belongs to.
    func partCut(session id: UInt64, node: String? = nil) -> (Int32, PendingCheckpoint, PartCut)? {
        for (pid, pending) in commands.checkpoints {
            if let part = pending.parts.first(where: {
                $0.session.id == id && (node == nil || $0.session.target == node)
            }) {
                return (pid, pending, part)
            }
        }
        return nil
    }

    /// A stand-in echoed a marker: INPUT, it reads no more; OUTPUT, every byte its part wrote is here.
    func standInMarked(_ session: HomeSession, phase: UInt32) {
        guard let (pid, pending, _) = partCut(session: session.id) else { return }
        if phase == LocalWire.markInput {
            partsEvent(pid, pending, .paused(session.id))
        } else if phase == LocalWire.markOutput {
            partsEvent(pid, pending, .flushed(session.id))
        }
    }

    /// Feeds one event to the cut of a job's parts (`PartsCut`) and carries its actions out.
    func partsEvent(_ top: Int32, _ pending: PendingCheckpoint, _ event: PartsCut.Event) {
        guard var machine = pending.partsCut else { return }
        let actions = machine.handle(event)
        pending.partsCut = machine
        for action in actions {
            switch action {
            case .pause(let id):
                pending.parts.first { $0.session.id == id }?.session.child.writeAndFlush(
                    LocalFrame.mark(LocalWire.markInput), promise: nil)
            case .ask(let id):
                // The marker first, on the same link: the part's node cuts it once the marker is through.
                guard let part = pending.parts.first(where: { $0.session.id == id }) else { continue }
                guard let link = usableLink(part.session.target) else {
                    return checkpointEvent(
                        pid: top, .failed(reason: "lost the link to \(part.session.target) during the checkpoint"))
                }
                link.wire.writeAndFlush(Envelope.mark(session: id, phase: LocalWire.markInput), promise: nil)
                link.wire.writeAndFlush(
                    Envelope.checkpointRequest(
                        session: id, request: part.request, leaveRunning: pending.machine.leaveRunning, part: true),
                    promise: nil)
            case .flush(let id):
                // After the part's last bytes, which came before its result.
                pending.parts.first { $0.session.id == id }?.session.child.writeAndFlush(
                    LocalFrame.mark(LocalWire.markOutput), promise: nil)
            case .cutTop:
                cutTopOnceStandInsLetGo(top, pending)
            case .commit(let id, let written):
                guard let part = pending.parts.first(where: { $0.session.id == id }),
                    let link = usableLink(part.session.target)
                else { continue }
                link.wire.writeAndFlush(
                    Envelope.checkpointCommit(session: id, request: part.request, written: written), promise: nil)
            case .resume(let id):
                pending.parts.first { $0.session.id == id }?.session.child.writeAndFlush(
                    LocalFrame.mark(LocalWire.markResume), promise: nil)
            }
        }
    }

    /// A part's node says how its cut went: with its manifest, its channels are renumbered as its stand-in
    /// numbers them (every one, with a placeholder for those the part no longer holds).
    func partSaved(
        _ result: Rfork_Wire_V1_CheckpointResult, pid: Int32, _ pending: PendingCheckpoint, _ part: PartCut,
        from node: String
    ) {
        guard result.saved else {
            // Its process may have ended meanwhile, its end on its way here: then it is no part any more
            // (`partEnded`); else the checkpoint fails.
            let why = "process \(part.session.pid) on \(node): \(result.reason)"
            if part.session.ended { return partGone(pid, pending, part) }
            loop.scheduleTask(in: .milliseconds(300)) {
                guard self.commands.checkpoints[pid] === pending, pending.parts.contains(where: { $0 === part }) else {
                    return
                }
                self.checkpointEvent(pid: pid, .failed(reason: why))
            }
            return
        }
        guard let saved = try? JSONDecoder().decode(CheckpointManifest.self, from: Data(result.manifestJson.utf8))
        else {
            return checkpointEvent(pid: pid, .failed(reason: "\(node) sent a checkpoint manifest that cannot be read"))
        }
        let held = Dictionary(saved.channels.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        part.manifest.controlSocketInode = saved.controlSocketInode
        // Its own parts, cut by its node before it: their images came with its own, under their prefixes.
        part.manifest.parts = saved.parts
        part.manifest.channels = part.session.request.channels.map { c in
            let kind = part.session.eagerChannels.contains(c.id) ? ChannelKindCode.input : c.kind
            let reads = kind == .input || kind == .lazyInput
            return CheckpointManifest.Channel(
                id: c.id, kind: kind.rawValue, criuID: held[c.id]?.criuID ?? (reads ? "pipe:[0]r" : "pipe:[0]w"),
                fd: c.fd, ended: held[c.id]?.ended)
        }
        partsEvent(pid, pending, .partSaved(part.session.id))
    }

    /// A remote child ended: if it is a part of a cut under way, it is no part any more.
    func partEnded(_ session: HomeSession) {
        guard let (pid, pending, part) = partCut(session: session.id),
            pending.partsCut?.states[session.id] != .saved
        else { return }
        logger.info("process \(session.pid) ended during the checkpoint of the job of \(pid): saved as it ends")
        partGone(pid, pending, part)
    }

    private func partGone(_ pid: Int32, _ pending: PendingCheckpoint, _ part: PartCut) {
        Posix.removeFlatDirectory(part.staging)
        pending.parts.removeAll { $0 === part }
        pending.goneStandIns.append(part.session.localPID)
        partsEvent(pid, pending, .gone(part.session.id))
    }

    /// The top part is cut once the stand-ins of parts that ended during the cut have let go of their
    /// sockets to rforkd (they end: CRIU saves them as ending processes, or zombies), up to a second.
    func cutTopOnceStandInsLetGo(_ top: Int32, _ pending: PendingCheckpoint, attempt: Int = 0) {
        guard commands.checkpoints[top] === pending, let call = pending.topCall else { return }
        if attempt < 100, pending.goneStandIns.contains(where: { Self.socketInode(of: $0) != nil }) {
            loop.scheduleTask(in: .milliseconds(10)) {
                self.cutTopOnceStandInsLetGo(top, pending, attempt: attempt + 1)
            }
            return
        }
        pending.topCall = nil
        takeCut(call.request, localPID: top, helper: call.helper, pending: pending)
    }

    /// The checkpoint of a job with parts ended: each part's node hears whether DIR holds it (its part
    /// goes on, or ends if saved without --leave-running), and stand-ins of a job that goes on read again.
    func finishParts(_ pending: PendingCheckpoint, written: Bool) {
        guard pending.partsCut != nil else { return }
        partsEvent(pending.machine.pid, pending, .ended(written: written))
        for part in pending.parts { Posix.removeFlatDirectory(part.staging) }
        pending.parts = []
        pending.partsCut = nil
        pending.topCall = nil
    }

    /// Moves a part's images into the top part's dump, each under `prefix`.
    static func adoptPartImages(from staging: String, into dir: String, prefix: String) throws {
        for name in Posix.listDirectory(staging) where name.hasSuffix(".img") {
            guard rename(staging + "/" + name, dir + "/" + prefix + name) == 0 else {
                throw SystemError("rename \(name)", errno: errno)
            }
        }
    }

    // MARK: the part's node

    /// A part's cut waits for its namespace init's INPUT echo (every input in the pipes), then signals it.
    func awaitInputMark(_ hosted: HostedSession, pid: Int32, _ pending: PendingCheckpoint) {
        if hosted.markKeys != nil { return signalPart(hosted, pid: pid, pending) }
        hosted.partWaiting = (pid, pending)
        loop.scheduleTask(in: .seconds(self.inputMarkSeconds)) {
            guard let waiting = hosted.partWaiting, waiting.pending === pending else { return }
            hosted.partWaiting = nil
            self.commands.checkpointWaits[pid] = nil
            self.finishParts(pending, written: false)
            self.sendCheckpointResult(
                pending, saved: false,
                reason:
                    "it does not read what was sent to it (its pipe is full), so that input cannot be saved with it"
            )
        }
    }

    private func signalPart(_ hosted: HostedSession, pid: Int32, _ pending: PendingCheckpoint) {
        if pending.standInTop != nil {
            // A stand-in does not call in (it relays): its call is made up here, from what it holds.
            commands.checkpoints[pid] = pending
            commands.checkpointWaits[pid] = nil
            switch standInCall(hosted, pid: pid) {
            case .success(let request):
                return checkpointCall(request, localPID: pid, helper: hosted.helperPID, from: nil)
            case .failure(let why): return checkpointEvent(pid: pid, .failed(reason: why.description))
            }
        }
        guard let pidfd = Posix.openProcess(pid) else {
            finishParts(pending, written: false)
            return sendCheckpointResult(pending, saved: false, reason: "the process ended")
        }
        defer { Posix.close(pidfd) }
        if let why = signalForCheckpoint(pid, pidfd: pidfd, pending) {
            finishParts(pending, written: false)
            sendCheckpointResult(pending, saved: false, reason: why)
        }
    }

    /// The call a part's stand-in here (the part moved on) would make if it could: its PID in its
    /// namespace, and as channels the pipes it holds to its namespace init (by the INPUT echo's keys). Its
    /// socket to this daemon is its part's stand-in socket, not a control socket (a restart reconnects it
    /// as a part's). A terminal is not done.
    func standInCall(_ hosted: HostedSession, pid: Int32) -> Result<LocalForkRequest, DaemonError> {
        guard let keys = hosted.markKeys else { return .failure(DaemonError("its namespace init did not answer")) }
        let byInode = Dictionary(keys.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        var channels: [LocalForkRequest.Channel] = []
        for held in Self.held(by: pid) {
            if held.target.hasPrefix("/dev/pts/") || held.target.hasPrefix("/dev/tty") {
                return .failure(
                    DaemonError(
                        "process \(hosted.pid) moved on from \(config.node) and its stand-in here holds a terminal; saving it with its job is not done (move it back first)"
                    ))
            }
            guard let inode = Self.pipeInode(held.target), let id = byInode[inode], let fd = Int32(held.fd),
                !channels.contains(where: { $0.id == id })
            else { continue }
            let reads = held.mode == O_RDONLY
            channels.append(
                .init(id: id, kind: reads ? .input : .output, criuID: held.target + (reads ? "r" : "w"), fd: fd))
        }
        return .success(
            LocalForkRequest(
                pid: hosted.pid, uid: hosted.uid, socketInode: 0, policy: nil, node: nil,
                forkStartedNanoseconds: Posix.monotonicNanoseconds(), channels: channels.sorted { $0.id < $1.id },
                postCopy: nil))
    }

    /// A marker from a remote child's namespace init: INPUT (with its channels' keys) lets a part's cut
    /// start; OUTPUT goes home, followed by the part's result.
    func helperMarked(_ s: HostedSession, _ frame: LocalFrame) {
        guard let phase = frame.word else { return }
        if phase == LocalWire.markInput {
            var keys: [UInt32: UInt64] = [:]
            var closed: Set<UInt32> = []
            var payload = frame.payload
            payload.moveReaderIndex(forwardBy: 4)
            while let word = payload.readInteger(endianness: .little, as: UInt32.self),
                let key = payload.readInteger(endianness: .little, as: UInt64.self)
            {
                let id = word & ~LocalWire.markClosed
                keys[id] = key
                if word & LocalWire.markClosed != 0 { closed.insert(id) }
            }
            s.markKeys = keys
            s.markClosed = closed
            if let waiting = s.partWaiting {
                s.partWaiting = nil
                signalPart(s, pid: waiting.pid, waiting.pending)
            }
        } else if phase == LocalWire.markOutput {
            // Every byte the part wrote went home before this: its result is the home's marker.
            if let pending = s.partResultWaiting, let result = pending.partResult {
                s.partResultWaiting = nil
                pending.partResult = nil
                sendCheckpointResult(pending, saved: true, manifest: result.manifest, frozenMs: result.frozenMs)
            }
        }
    }

    /// A marker from the home of a process this node runs: INPUT goes to its namespace init.
    func homeMarked(_ s: HostedSession, _ mark: Rfork_Wire_V1_Mark) {
        guard mark.phase == LocalWire.markInput else { return }
        s.markKeys = nil
        s.helper?.writeAndFlush(LocalFrame.mark(mark.phase), promise: nil)
    }

    /// A part's images are at its home: its channels are named by the stand-in's numbers (the namespace
    /// init's keys say which is which), and its namespace init sends what it wrote before the result goes.
    func flushPartOutputs(localPID: Int32, _ pending: PendingCheckpoint, manifest: CheckpointManifest, frozenMs: Double)
    {
        guard let s = hostedSession(containing: localPID), let keys = s.markKeys, let helper = s.helper else {
            return abandonPart(localPID, pending, "its namespace init is gone")
        }
        let byKey = Dictionary(keys.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        var mapped = manifest
        mapped.channels = []
        for c in manifest.channels {
            if c.criuID.hasPrefix("pipe:["), let inode = Self.pipeInode(c.criuID), byKey[inode] == nil {
                // A pipe no namespace init relays: its other end was never outside the part (its writer, a
                // child that ended, say, is gone). CRIU saves it with its bytes, and restores it so.
                continue
            }
            guard let key = Self.channelKey(c.criuID), let id = byKey[key] else {
                return abandonPart(
                    localPID, pending,
                    "process \(s.pid) holds \(c.criuID) (descriptor \(c.fd)), which leads outside the job on \(config.node); saving it across nodes is not done"
                )
            }
            mapped.channels.append(
                .init(id: id, kind: c.kind, criuID: c.criuID, fd: c.fd, ended: s.markClosed.contains(id) ? true : nil))
        }
        // A channel the part's top process closed may still be held below it (by a child of its own, or
        // the stand-in of one on yet another node): it is the part's too, or a restart would give that
        // holder a pipe no one reads or writes.
        let tree = [localPID] + Self.descendants(of: localPID)
        for (id, key) in keys.sorted(by: { $0.key < $1.key }) where !mapped.channels.contains(where: { $0.id == id }) {
            let pipe = "pipe:[\(key)]"
            for p in tree {
                guard let held = Self.held(by: p).first(where: { $0.target == pipe }), let fd = Int32(held.fd) else {
                    continue
                }
                let reads = held.mode == O_RDONLY
                mapped.channels.append(
                    .init(
                        id: id, kind: (reads ? ChannelKindCode.input : .output).rawValue,
                        criuID: pipe + (reads ? "r" : "w"),
                        fd: fd, ended: s.markClosed.contains(id) ? true : nil))
                break
            }
        }
        pending.partResult = (mapped, pending.bytes, frozenMs)
        s.partResultWaiting = pending
        helper.writeAndFlush(LocalFrame.mark(LocalWire.markOutput), promise: nil)
    }

    /// A part that cannot be saved goes on (it was left stopped), and its home hears why.
    private func abandonPart(_ localPID: Int32, _ pending: PendingCheckpoint, _ why: String) {
        for fd in pending.stopped {
            _ = Posix.signal(process: fd, SIGCONT)
            Posix.close(fd)
        }
        pending.stopped = []
        checkpointEvent(pid: localPID, .failed(reason: why), call: pending.call)
    }

    /// What identifies a channel's object on both sides: a pipe's or file's inode, a terminal's rdev
    /// (as CRIU names them: "pipe:[INO]r", "file[MNT:INO]" and "tty[RDEV:DEV]", the last two in hex).
    static func channelKey(_ criuID: String) -> UInt64? {
        if let inode = pipeInode(criuID) { return inode }
        func field(_ prefix: String, _ index: Int) -> UInt64? {
            guard criuID.hasPrefix(prefix), criuID.hasSuffix("]") else { return nil }
            let fields = criuID.dropFirst(prefix.count).dropLast().split(separator: ":")
            guard fields.count == 2 else { return nil }
            return UInt64(fields[index], radix: 16)
        }
        return field("file[", 1) ?? field("tty[", 0)
    }
}

// MARK: restart

extension Node {
    /// The restart's list of the job's parts, among the images sent to the node that restores the job.
    static let partsFileName = "rfork-parts.img"

    /// The top part of a restarted job runs: each of its stand-ins (restored paused, with a new socket to
    /// this daemon) gets its part restored as its remote child, where the part ran if that node is up,
    /// else where placement says; what was in the part's input pipes at the cut goes first. A part that
    /// cannot be restored loses its stand-in's socket: the stand-in reports it killed to its parent.
    func startRestoredParts(_ s: HostedSession) {
        let parts = s.restoredParts
        s.restoredParts = []
        for (part, socket) in parts {
            let id = sessions.newID()
            let dir = imageRoot + "/r\(id)"
            func giveUp(_ why: String) {
                logger.error("cannot restore process \(part.pid) of the job restarted as \(s.pid): \(why)")
                Posix.close(socket)
                Posix.removeFlatDirectory(dir)
            }
            do {
                try Posix.makeDirectory(dir)
                for name in Posix.listDirectory(s.imageDirectory) where name.hasPrefix(part.prefix) {
                    guard rename(s.imageDirectory + "/" + name, dir + "/" + name.dropFirst(part.prefix.count)) == 0
                    else { throw SystemError("rename \(name)", errno: errno) }
                }
                for c in part.channels where c.ended == true {
                    try Posix.writeFile(dir + "/rfork-closed-\(c.id).img", [UInt8]())
                }
                if let nested = part.parts, !nested.isEmpty {
                    // Its own parts: the node that restores it restores them in turn, as this one does.
                    try Posix.writeFile(dir + "/" + Self.partsFileName, try JSONEncoder().encode(nested))
                }
                let held = try PipeData.read(directory: dir)
                for c in part.channels
                where c.kind == ChannelKindCode.input.rawValue || c.kind == ChannelKindCode.lazyInput.rawValue {
                    guard let inode = Self.pipeInode(c.criuID), let bytes = held[UInt32(truncatingIfNeeded: inode)],
                        !bytes.isEmpty
                    else { continue }
                    try Posix.writeFile(dir + "/rfork-input-\(c.id).img", bytes)
                }
            } catch {
                giveUp("\(error)")
                continue
            }
            guard let helper = s.helperPID,
                let standIn = ([helper] + Self.descendants(of: helper)).first(where: {
                    let pids = Posix.namespacePIDs($0)
                    return pids.count > 1 && pids.last == part.pid
                })
            else {
                giveUp("its stand-in is not in the restored tree")
                continue
            }
            let target: String
            if usableLink(part.node) != nil {
                target = part.node
            } else if case .remote(let chosen) = placement.choose(policy: .spread, node: nil, peers: peerViews()) {
                target = chosen
            } else {
                target = config.node
            }
            guard let peer = usableLink(target)?.wire else {
                giveUp("no node to restore it on")
                continue
            }
            let channels = part.channels.compactMap { c in
                ChannelKindCode(rawValue: c.kind).map {
                    LocalForkRequest.Channel(id: c.id, kind: $0, criuID: c.criuID, fd: c.fd)
                }
            }
            let request = LocalForkRequest(
                pid: part.pid, uid: s.uid, socketInode: part.controlSocketInode, policy: nil, node: target,
                forkStartedNanoseconds: Posix.monotonicNanoseconds(), channels: channels, postCopy: "never")
            let handler = LocalHandler(node: self)
            handler.session = id
            handler.sawFirst = true
            NIOPipeBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            ByteToMessageHandler(LocalFrameDecoder()), MessageToByteHandler(LocalFrameEncoder()),
                            handler,
                        ])
                    }
                }
                .takingOwnershipOfDescriptor(inputOutput: socket)
                .whenComplete { result in
                    guard case .success(let channel) = result else {
                        self.logger.error(
                            "cannot restore process \(part.pid) of the restarted job: cannot watch its stand-in's socket"
                        )
                        return Posix.removeFlatDirectory(dir)
                    }
                    let session = HomeSession(
                        id: id, pid: part.pid, localPID: standIn, uid: s.uid, target: target, child: channel,
                        request: request, started: Posix.monotonicNanoseconds())
                    session.resumeStandIn = true
                    self.sessions.home[id] = session
                    self.logger.info("restoring process \(part.pid) of the restarted job on \(target)")
                    self.startHomeSession(session, peer: peer) { staging in
                        for name in Posix.listDirectory(dir) {
                            guard rename(dir + "/" + name, staging + "/" + name) == 0 else {
                                throw SystemError("rename \(name)", errno: errno)
                            }
                        }
                        Posix.removeFlatDirectory(dir)
                        return nil
                    }
                }
        }
    }
}
