import Foundation
import Glibc
import NIOCore
import RforkCheckpoint
import RforkProtocol
import RforkSystem
import RforkWire

/// `rfork checkpoint` of a job whose top process runs on another node (it moved there, or a restart put
/// it there): the home passes the request on to that node, which takes the cut as it would its own (CRIU
/// inside the namespaces of the process's rfork-nsinit) and sends the images back; the home writes DIR
/// (signed, as its owner) and says whether it did, and only then does the node end a job saved without
/// `--leave-running` (or let it go on if DIR could not be written).
///
/// ```
///  home                                  node running the job
///  CheckpointRequest{session, request} ─►  checks, signal 62, the job calls in, CRIU dump
///                                      ◄─  ImageChunk × n (session), CheckpointResult{saved, manifest}
///  writes DIR (staging, swap)
///  CheckpointCommit{written}           ─►  ends the stopped job, or continues it
/// ```
extension Node {
    // MARK: home side

    /// Asks the node running the job of `pid` (its stand-in here) to save it; the reason when it cannot.
    func passOnCheckpoint(
        pid: Int32, session: HomeSession, directory: String, uid: UInt32, gid: UInt32, leaveRunning: Bool,
        command: Channel?
    ) -> String? {
        guard session.state == .running else { return "process \(pid) is being moved" }
        guard let link = usableLink(session.target) else {
            return "node '\(session.target)', which runs process \(pid), is not reachable"
        }
        let request = commands.newMigrateRequest()
        let staging = imageRoot + "/k\(session.id)-\(request)"
        do {
            try Posix.makeDirectory(staging)
        } catch {
            return "cannot make \(staging): \(error)"
        }
        let pending = PendingCheckpoint(
            machine: Checkpoint(pid: pid, directory: directory, leaveRunning: leaveRunning), command: command, uid: uid,
            gid: gid)
        pending.passedOn = (session.id, request, session.target, staging)
        commands.checkpoints[pid] = pending
        checkpointEvent(pid: pid, .passedOn(node: session.target))
        logger.info("saving the job of process \(pid) to \(directory): asking \(session.target), which runs it")
        link.wire.writeAndFlush(
            Envelope.checkpointRequest(session: session.id, request: request, leaveRunning: leaveRunning),
            promise: nil)
        loop.scheduleTask(in: .minutes(10)) {
            guard self.commands.checkpoints[pid] === pending else { return }
            self.checkpointEvent(
                pid: pid, .failed(reason: "\(session.target) did not save the job within 10 minutes"))
        }
        return nil
    }

    /// The passed-on checkpoint a message from `node` about `session` belongs to.
    private func passedOnCheckpoint(session: UInt64, request: UInt64?, node: String) -> (Int32, PendingCheckpoint)? {
        for (pid, pending) in commands.checkpoints {
            guard let asked = pending.passedOn, asked.session == session, asked.node == node else { continue }
            if let request, asked.request != request { continue }
            return (pid, pending)
        }
        return nil
    }

    /// A piece of an image of a job saved for this node: into its staging directory.
    func receiveCheckpointChunk(_ chunk: Rfork_Wire_V1_ImageChunk, from link: PeerLink) {
        if let (pid, _, part) = partCut(session: chunk.session, node: link.name) {
            if let why = Self.storeChunk(chunk, in: part.staging, from: link.name) {
                checkpointEvent(pid: pid, .failed(reason: why))
            }
            return
        }
        guard let (pid, pending) = passedOnCheckpoint(session: chunk.session, request: nil, node: link.name),
            let staging = pending.passedOn?.staging
        else { return }
        if let home = pending.home {
            // Relayed (the process moved on from here): on to the node that asked, as its session's.
            var relayed = chunk
            relayed.session = home.session
            var envelope = Envelope()
            envelope.imageChunk = relayed
            home.link.wire.writeAndFlush(envelope, promise: nil)
            return
        }
        if let why = Self.storeChunk(chunk, in: staging, from: link.name) {
            checkpointEvent(pid: pid, .failed(reason: why))
        }
    }

    /// Writes a piece of an image into `staging`; why not, or nil.
    static func storeChunk(_ chunk: Rfork_Wire_V1_ImageChunk, in staging: String, from node: String) -> String? {
        guard !chunk.name.isEmpty, !chunk.name.contains("/"), chunk.name.hasSuffix(".img") else {
            return "\(node) sent an image named '\(chunk.name)'"
        }
        let fd = open(staging + "/" + chunk.name, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return "cannot write \(chunk.name): \(Posix.errorText(errno))" }
        defer { Posix.close(fd) }
        do {
            try Posix.writeAll(fd, chunk.data, at: chunk.offset)
        } catch {
            return "cannot write \(chunk.name): \(error)"
        }
        return nil
    }

    /// The node running the job sent every image (or says why not): DIR is written here, as its owner,
    /// and that node hears whether it was.
    func handleCheckpointResult(_ result: Rfork_Wire_V1_CheckpointResult, from link: PeerLink) {
        if let (pid, pending, part) = partCut(session: result.session, node: link.name), part.request == result.request
        {
            return partSaved(result, pid: pid, pending, part, from: link.name)
        }
        guard
            let (pid, pending) = passedOnCheckpoint(session: result.session, request: result.request, node: link.name),
            let asked = pending.passedOn
        else {
            // Ended here already (a failed write of a piece, the deadline): the job there must not wait.
            if result.saved {
                link.wire.writeAndFlush(
                    Envelope.checkpointCommit(session: result.session, request: result.request, written: false),
                    promise: nil)
            }
            return
        }
        guard result.saved else { return checkpointEvent(pid: pid, .failed(reason: result.reason)) }
        if pending.home != nil {
            // Relayed: the node that asked writes DIR (or passes the result on again), and its commit
            // comes back through here (`commitCheckpoint`).
            return sendCheckpointResult(
                pending, saved: true, manifestJSON: result.manifestJson, frozenMs: result.frozenMs)
        }
        @Sendable func commit(_ written: Bool) {
            link.wire.writeAndFlush(
                Envelope.checkpointCommit(session: asked.session, request: asked.request, written: written),
                promise: nil)
        }
        guard let key = checkpointKey,
            var manifest = try? JSONDecoder().decode(CheckpointManifest.self, from: Data(result.manifestJson.utf8))
        else {
            commit(false)
            return checkpointEvent(
                pid: pid, .failed(reason: "\(link.name) sent a checkpoint manifest that cannot be read"))
        }
        // Its owner as this node knows it. The PID stays the one in the images (the process's PID in its
        // namespace: its home PID for a process that moved, the job's own for a restarted one).
        manifest.uid = pending.uid
        manifest.files = []  // listed (and signed) from what is in the staging directory
        let written = manifest
        let (directory, uid, gid) = (pending.machine.directory, pending.uid, pending.gid)
        threads.runIfActive(eventLoop: loop) { () throws -> Int in
            try CheckpointDirectory.write(
                from: asked.staging, to: directory, manifest: written, key: key, uid: uid, gid: gid)
        }.whenComplete { outcome in
            guard self.commands.checkpoints[pid] === pending else { return }
            switch outcome {
            case .success(let bytes):
                commit(true)
                self.checkpointEvent(pid: pid, .saved(bytes: bytes, frozenMs: result.frozenMs))
            case .failure(let error):
                commit(false)
                self.checkpointEvent(pid: pid, .failed(reason: "\(error)"))
            }
        }
    }

    /// The link to `node` is lost: checkpoints it was asked to take will not arrive.
    func passedOnCheckpointsLost(_ node: String) {
        for (pid, pending) in commands.checkpoints where pending.parts.contains(where: { $0.session.target == node }) {
            checkpointEvent(pid: pid, .failed(reason: "lost the link to \(node) during the checkpoint"))
        }
        for (pid, pending) in commands.checkpoints where pending.passedOn?.node == node {
            checkpointEvent(pid: pid, .failed(reason: "lost the link to \(node) during the checkpoint"))
        }
    }

    // MARK: the node running the job

    /// The home of a process this node runs asks for a checkpoint of its job.
    func handleCheckpointRequest(
        _ request: Rfork_Wire_V1_CheckpointRequest, link: InboundLink, settleBy: UInt64? = nil
    ) {
        let pending = PendingCheckpoint(
            machine: Checkpoint(pid: 0, directory: "", leaveRunning: request.leaveRunning), command: nil, uid: 0, gid: 0
        )
        pending.home = (link, request.session, request.request)
        var settling: Int32?
        func refuse(_ why: String) {
            if let settling { commands.checkpointWaits[settling] = nil }
            sendCheckpointResult(pending, saved: false, reason: why)
        }
        guard let hosted = sessions.hosted[hostedKey(link, request.session)], hosted.restored, !hosted.ended else {
            return refuse("the process no longer runs on \(config.node)")
        }
        if hosted.lazyPID != nil {
            return refuse(
                "the memory of process \(hosted.pid) is still arriving on \(config.node) (post-copy); save it when it is there"
            )
        }
        guard let (pid, pidfd) = openHostedProcess(hosted) else { return refuse("the process ended") }
        defer { Posix.close(pidfd) }
        let movedOn = sessions.home.values.contains { $0.localPID == pid }
        if let session = sessions.home.values.first(where: { $0.localPID == pid }), !request.part {
            return relayCheckpoint(request, shown: hosted.pid, localPID: pid, session: session, pending: pending)
        }
        guard let status = Posix.processStatus(pid) else { return refuse("the process ended") }
        let deadline = settleBy ?? Posix.monotonicNanoseconds() + forkSettleNanoseconds
        if jobUnsettled(pid), Posix.monotonicNanoseconds() < deadline, commands.checkpoints[pid] == nil {
            // A fork of the job is being placed: its cut waits for it (and new forks stay here).
            commands.checkpointWaits[pid] = deadline
            loop.scheduleTask(in: .milliseconds(20)) {
                self.handleCheckpointRequest(request, link: link, settleBy: deadline)
            }
            return
        }
        if settleBy != nil { settleExpired(pid) }
        // Until it is signalled, its forks stay here too (a part waits for its inputs first).
        commands.checkpointWaits[pid] = Posix.monotonicNanoseconds() + UInt64(inputMarkSeconds + 1) * 1_000_000_000
        settling = pid
        if let why = checkpointRefusal(pid: pid, status: status, hosted: true, standIn: movedOn) {
            return refuse(Migration.renaming(process: pid, to: hosted.pid, in: why))
        }
        let owner = hosted.uid
        let saved = PendingCheckpoint(
            machine: Checkpoint(pid: pid, directory: "", leaveRunning: request.leaveRunning), command: nil,
            uid: owner, gid: Self.firstNumber(status["Gid"]) ?? owner)
        saved.home = pending.home
        saved.part = request.part
        // A part that moved on from here: its stand-in here is cut with it, the part as its own part.
        if movedOn { saved.standInTop = hosted }
        // Its own descendants on other nodes are cut with it, as at a home (CheckpointParts.swift), also
        // when it is itself a part of a job saved across nodes: once it calls in, before its own cut.
        do {
            saved.parts = try makePartCuts(tree: [pid] + Self.descendants(of: pid))
        } catch {
            return refuse("cannot make a staging directory on \(config.node): \(error)")
        }
        if !saved.parts.isEmpty {
            saved.partsCut = PartsCut(parts: saved.parts.map(\.session.id), leaveRunning: request.leaveRunning)
        }
        if request.part {
            // Cut once the namespace init has every input the stand-in sent in the process's pipes.
            logger.info("saving process \(hosted.pid) for \(hosted.home), a part of a job saved across nodes")
            return awaitInputMark(hosted, pid: pid, saved)
        }
        logger.info("saving the job of process \(hosted.pid) for \(hosted.home)")
        if let why = signalForCheckpoint(pid, pidfd: pidfd, saved) {
            finishParts(saved, written: false)
            refuse(why)
        }
    }

    /// The process moved on from here (this node keeps its stand-in): the node it went to is asked in turn,
    /// as the home asked this one, and its images, its result and the home's commit pass through here,
    /// renumbered for each link. `pending` names who asked.
    private func relayCheckpoint(
        _ request: Rfork_Wire_V1_CheckpointRequest, shown: Int32, localPID: Int32, session: HomeSession,
        pending asker: PendingCheckpoint
    ) {
        func refuse(_ why: String) { sendCheckpointResult(asker, saved: false, reason: why) }
        guard commands.checkpoints[localPID] == nil, commands.migrations[localPID] == nil else {
            return refuse("process \(shown) is being moved or saved already")
        }
        guard session.state == .running else { return refuse("process \(shown) is being moved") }
        guard let link = usableLink(session.target) else {
            return refuse("node '\(session.target)', which runs process \(shown), is not reachable from \(config.node)")
        }
        let number = commands.newMigrateRequest()
        let pending = PendingCheckpoint(
            machine: Checkpoint(pid: localPID, directory: "", leaveRunning: request.leaveRunning), command: nil,
            uid: 0, gid: 0)
        pending.home = asker.home
        pending.passedOn = (session.id, number, session.target, "")
        commands.checkpoints[localPID] = pending
        checkpointEvent(pid: localPID, .passedOn(node: session.target))
        logger.info("saving the job of process \(shown) for its home: asking \(session.target), which runs it now")
        link.wire.writeAndFlush(
            Envelope.checkpointRequest(
                session: session.id, request: number, leaveRunning: request.leaveRunning),
            promise: nil)
        loop.scheduleTask(in: .minutes(10)) {
            guard self.commands.checkpoints[localPID] === pending else { return }
            if pending.resultSent {
                self.commitCheckpoint(localPID, pending, written: false)
            } else {
                self.checkpointEvent(
                    pid: localPID, .failed(reason: "\(session.target) did not save the job within 10 minutes"))
            }
        }
    }

    /// Tells the home how the cut went: every image sent (with the manifest), or why not.
    func sendCheckpointResult(
        _ pending: PendingCheckpoint, saved: Bool, reason: String = "", manifest: CheckpointManifest? = nil,
        manifestJSON: String? = nil, frozenMs: Double = 0
    ) {
        guard let home = pending.home, !pending.resultSent else { return }
        pending.resultSent = true
        var result = Rfork_Wire_V1_CheckpointResult()
        result.session = home.session
        result.request = home.request
        result.saved = saved
        result.reason = reason
        result.frozenMs = frozenMs
        if let manifest, let json = try? JSONEncoder().encode(manifest) {
            result.manifestJson = String(decoding: json, as: UTF8.self)
        } else if let manifestJSON {
            result.manifestJson = manifestJSON
        }
        var envelope = Envelope()
        envelope.checkpointResult = result
        home.link.wire.writeAndFlush(envelope, promise: nil)
    }

    /// The images of the cut of `localPID` are at its home: the home writes DIR and says so. A job
    /// saved without --leave-running stays stopped (`stopped`) until then.
    func checkpointImagesSent(
        localPID: Int32, manifest: CheckpointManifest, bytes: Int, stopped: [Int32], frozenMs: Double
    ) {
        guard let pending = commands.checkpoints[localPID], pending.home != nil else {
            for fd in stopped {
                _ = Posix.signal(process: fd, SIGCONT)
                Posix.close(fd)
            }
            return
        }
        pending.stopped = stopped
        pending.bytes = bytes
        // Left running, the job was frozen only until the cut; else it still is.
        var frozen = frozenMs
        if case .writing(let cut) = pending.machine.state { frozen = cut }
        if pending.part {
            // Its outputs are flushed to the home first (CheckpointParts.swift).
            flushPartOutputs(localPID: localPID, pending, manifest: manifest, frozenMs: frozen)
        } else {
            sendCheckpointResult(pending, saved: true, manifest: manifest, frozenMs: frozen)
        }
        // A home that never answers leaves the job as it was.
        loop.scheduleTask(in: .minutes(10)) {
            guard self.commands.checkpoints[localPID] === pending else { return }
            self.commitCheckpoint(localPID, pending, written: false)
        }
    }

    /// The home says whether it wrote the checkpoint of a job this node saved for it.
    func checkpointCommitted(_ commit: Rfork_Wire_V1_CheckpointCommit, link: InboundLink) {
        for (pid, pending) in commands.checkpoints {
            guard let home = pending.home, home.link === link, home.session == commit.session,
                home.request == commit.request, pending.resultSent
            else { continue }
            return commitCheckpoint(pid, pending, written: commit.written)
        }
    }

    /// Ends the saved job (written, without --leave-running) or lets it go on, and ends the request.
    func commitCheckpoint(_ pid: Int32, _ pending: PendingCheckpoint, written: Bool) {
        if let asked = pending.passedOn, let link = usableLink(asked.node) {
            // Relayed: the node that took the cut hears it too.
            link.wire.writeAndFlush(
                Envelope.checkpointCommit(session: asked.session, request: asked.request, written: written),
                promise: nil)
        }
        let stopped = pending.stopped
        pending.stopped = []
        // A part of a job saved across nodes was left stopped even with --leave-running.
        let end = written && !pending.machine.leaveRunning
        for fd in stopped.reversed() {
            _ = Posix.signal(process: fd, end ? SIGKILL : SIGCONT)
            Posix.close(fd)
        }
        checkpointEvent(
            pid: pid,
            written
                ? .saved(bytes: pending.bytes, frozenMs: 0)
                : .failed(reason: "the home did not write the checkpoint"),
            call: pending.call)
    }
}

extension Envelope {
    /// Home -> the node running a job (or a part of one: `part`): save it.
    static func checkpointRequest(session: UInt64, request: UInt64, leaveRunning: Bool, part: Bool = false)
        -> Envelope
    {
        var ask = Rfork_Wire_V1_CheckpointRequest()
        ask.session = session
        ask.request = request
        ask.leaveRunning = leaveRunning
        ask.part = part
        var envelope = Envelope()
        envelope.checkpointRequest = ask
        return envelope
    }

    /// Home -> the node that took a cut: whether DIR now holds it.
    static func checkpointCommit(session: UInt64, request: UInt64, written: Bool) -> Envelope {
        var commit = Rfork_Wire_V1_CheckpointCommit()
        commit.session = session
        commit.request = request
        commit.written = written
        var envelope = Envelope()
        envelope.checkpointCommit = commit
        return envelope
    }
}
