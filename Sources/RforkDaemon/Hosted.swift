import Foundation
import Glibc
import NIOCore
import NIOPosix
import RforkCheckpoint
import RforkSystem
import RforkWire

/// One child restored on this node for a parent on another node.
final class HostedSession: @unchecked Sendable {  // confined to Node.loop
    let key: String
    let session: UInt64
    let home: String
    let pid: Int32
    let uid: UInt32
    let link: InboundLink
    let imageDirectory: String
    var helperPID: pid_t?
    var sharedRegions: [Rfork_Wire_V1_SharedRegion] = []  // shared memory the child maps, from its home
    var helper: Channel?
    var restored = false
    var ended = false
    let started: UInt64
    var pending: Rfork_Wire_V1_ForkRequest?  // waiting for its ImageChunks
    var received: UInt64 = 0
    var openFile: (name: String, fd: Int32)?
    var lazyPID: pid_t?  // post-copy: the criu lazy-pages serving this child, while it runs
    var quietStops = 0  // stop events of rfork's own making (a tree moved on from here), not passed home
    var quietContinues = 0
    /// How often the process had moved before it came here (the balancer bounds it).
    var moves = 0
    /// A part of a job saved across nodes (CheckpointParts.swift): its namespace init's channel keys,
    /// once it echoed the INPUT marker; the part's cut waiting for them; its result waiting for the
    /// OUTPUT echo.
    var markKeys: [UInt32: UInt64]?
    var markClosed: Set<UInt32> = []
    var partWaiting: (pid: Int32, pending: PendingCheckpoint)?
    var partResultWaiting: PendingCheckpoint?
    /// A restart of a job saved with parts: each part and rforkd's end of the socket its stand-in gets.
    var restoredParts: [(part: CheckpointManifest.Part, socket: Int32)] = []

    init(key: String, session: UInt64, home: String, pid: Int32, uid: UInt32, link: InboundLink, imageDirectory: String)
    {
        self.key = key
        self.session = session
        self.home = home
        self.pid = pid
        self.uid = uid
        self.link = link
        self.imageDirectory = imageDirectory
        self.started = Posix.monotonicNanoseconds()
    }
}

extension Node {
    func hostedKey(_ link: InboundLink, _ session: UInt64) -> String {
        "\(link.peerName ?? "?")/\(ObjectIdentifier(link).hashValue)/\(session)"
    }

    /// Something arrived over an inbound link from a home node.
    func handleFromHome(_ envelope: Envelope, link: InboundLink) {
        switch envelope.body {
        case .forkRequest(let request):
            startRestore(request, link: link)
        case .imageChunk(let chunk):
            receiveChunk(chunk, link: link)
        case .migrateRequest(let request):
            handleMigrateRequest(request, link: link)
        case .checkpointRequest(let request):
            handleCheckpointRequest(request, link: link)
        case .checkpointCommit(let commit):
            checkpointCommitted(commit, link: link)
        case .drainRequest(let request):
            handleDrainRequest(request, link: link)
        case .load(let load):
            if let name = link.peerName { receivedLoad(load, from: name) }
        case .coherence(let c):
            receivedCoherence(c)
        case .regionEnd(let e):
            receivedRegionEnd(e)
        case .unixStream(let m):
            receivedUnixStream(m)
        case .data(let data):
            guard let s = sessions.hosted[hostedKey(link, data.session)] else { return }
            s.helper?.writeAndFlush(LocalFrame.data(channel: data.channel, ByteBuffer(bytes: data.data)), promise: nil)
        case .endOfFile(let eof):
            guard let s = sessions.hosted[hostedKey(link, eof.session)] else { return }
            s.helper?.writeAndFlush(LocalFrame.u32(.endOfFile, eof.channel), promise: nil)
        case .mark(let mark):
            guard let s = sessions.hosted[hostedKey(link, mark.session)] else { return }
            homeMarked(s, mark)
        case .demand(let demand):
            // From the home: only "read ahead" (`LocalWire.eagerDemand`) goes this way.
            guard let s = sessions.hosted[hostedKey(link, demand.session)], demand.bytes == LocalWire.eagerDemand else {
                return
            }
            s.helper?.writeAndFlush(LocalFrame.demand(channel: demand.channel, bytes: demand.bytes), promise: nil)
        case .ack(let ack):
            guard let s = sessions.hosted[hostedKey(link, ack.session)] else { return }
            s.helper?.writeAndFlush(LocalFrame.ack(channel: ack.channel, bytes: ack.bytes), promise: nil)
        case .signal(let signal):
            guard let s = sessions.hosted[hostedKey(link, signal.session)], signal.signo > 0, signal.signo < 65 else {
                return
            }
            s.helper?.writeAndFlush(LocalFrame.u32(.signal, signal.signo), promise: nil)
        case .abort(let abort):
            guard let s = sessions.hosted[hostedKey(link, abort.session)] else { return }
            logger.info("ending remote child \(s.pid) of \(s.home): \(abort.reason)")
            endHosted(s, abortHelper: true)
        case .pageStream(let stream):
            // Not through `hosted`: pages still flow after the child ended (answers to requests in flight).
            sessions.lazyRelays[hostedKey(link, stream.session)]?.writeAndFlush(
                ByteBuffer(bytes: stream.data), promise: nil)
        case .pageStreamEnd(let end):
            guard let s = sessions.hosted[hostedKey(link, end.session)], !end.ok else { return }
            // Also mid-restore: the home copy runs on at home, so this one must never start.
            logger.warning("the memory of remote child \(s.pid) of \(s.home) is lost (\(end.error)); ending it")
            endHosted(s, abortHelper: true)
        default:
            break
        }
    }

    func refuse(_ link: InboundLink, session: UInt64, _ error: String) {
        var reply = Rfork_Wire_V1_ForkReply()
        reply.session = session
        reply.ok = false
        reply.error = error
        var envelope = Envelope()
        envelope.forkReply = reply
        link.wire.writeAndFlush(envelope, promise: nil)
    }

    func startRestore(_ request: Rfork_Wire_V1_ForkRequest, link: InboundLink) {
        let key = hostedKey(link, request.session)
        guard sessions.hosted[key] == nil else {
            return refuse(link, session: request.session, "session already exists")
        }
        guard request.pid > 1, request.pid < 1 << 22 else {
            return refuse(link, session: request.session, "invalid PID \(request.pid)")
        }
        guard !request.images.isEmpty,
            request.images.allSatisfy({ !$0.name.isEmpty && !$0.name.contains("/") && $0.name.hasSuffix(".img") })
        else { return refuse(link, session: request.session, "the fork request carries no valid image") }
        guard request.channels.count <= LocalWire.maxChannels,
            request.channels.enumerated().allSatisfy({
                $0.offset == Int($0.element.id) && !$0.element.criuID.contains("\n")
            })
        else { return refuse(link, session: request.session, "the fork request has invalid channels") }
        if shuttingDown { return refuse(link, session: request.session, "rforkd on \(config.node) is shutting down") }

        let dir = imageRoot + "/t\(Posix.monotonicNanoseconds())-\(request.session)"
        let session = HostedSession(
            key: key, session: request.session, home: request.homeNode, pid: Int32(request.pid), uid: request.uid,
            link: link, imageDirectory: dir)
        session.moves = Int(request.moves)
        // Shared memory managed by a participant of the node the request comes from (or managed further
        // up, for a child of a remote child), with sane bounds.
        session.sharedRegions = request.sharedRegions.filter {
            $0.start < $0.end && $0.pages > 0 && $0.pages < 1 << 36 && $0.manager.contains("/")
        }
        sessions.hosted[key] = session
        do {
            try Posix.makeDirectory(dir)
            for file in request.images { try Posix.writeFile(dir + "/" + file.name, file.data) }
        } catch {
            logger.error("cannot store the image of child \(request.pid) of \(request.homeNode): \(error)")
            return abandon(session, "\(error)")
        }
        if request.imageBytes > 0 {
            session.pending = request  // the memory pages follow as ImageChunks
        } else {
            launch(session, request)
        }
    }

    /// One piece of a streamed image file; the last one starts the restore.
    func receiveChunk(_ chunk: Rfork_Wire_V1_ImageChunk, link: InboundLink) {
        guard let s = sessions.hosted[hostedKey(link, chunk.session)], let request = s.pending else { return }
        do {
            guard !chunk.name.isEmpty, !chunk.name.contains("/"), chunk.name.hasSuffix(".img"),
                s.received + UInt64(chunk.data.count) <= request.imageBytes
            else { throw DaemonError("invalid image piece '\(chunk.name)'") }
            if s.openFile?.name != chunk.name {
                if let previous = s.openFile { Posix.close(previous.fd) }
                let fd = open(s.imageDirectory + "/" + chunk.name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw SystemError("open \(chunk.name)", errno: errno) }
                s.openFile = (chunk.name, fd)
            }
            if let file = s.openFile { try Posix.writeAll(file.fd, chunk.data, at: chunk.offset) }
            s.received += UInt64(chunk.data.count)
            guard chunk.last else { return }
            if let file = s.openFile { Posix.close(file.fd) }
            s.openFile = nil
            s.pending = nil
            guard s.received == request.imageBytes else {
                throw DaemonError("the image is incomplete (\(s.received) of \(request.imageBytes) bytes)")
            }
            launch(s, request)
        } catch {
            logger.error("cannot store the image of child \(s.pid) of \(s.home): \(error)")
            abandon(s, "\(error)")
        }
    }

    /// Post-copy: starts `criu lazy-pages` for the image, relays its page-server socket to the home node,
    /// then restores. Without post-copy: restores.
    func launch(_ session: HostedSession, _ request: Rfork_Wire_V1_ForkRequest) {
        guard request.lazyPages else { return restore(session, request) }
        let dir = session.imageDirectory
        let criu = self.criu
        threads.runIfActive(eventLoop: loop) { try criu.startLazyPages(imageDirectory: dir) }.whenComplete { result in
            switch result {
            case .failure(let error):
                self.logger.error("cannot start post-copy for child \(request.pid) of \(request.homeNode): \(error)")
                if self.sessions.hosted[session.key] === session { self.abandon(session, "\(error)") }
            case .success(let lazy):
                session.lazyPID = lazy.process
                self.watchLazyPages(lazy, session: session)
                guard self.sessions.hosted[session.key] === session else {
                    Posix.kill(lazy.process, SIGKILL)  // no child to serve
                    Posix.close(lazy.pageSocket)
                    return
                }
                let relay = NIOPipeBootstrap(group: self.loop)
                    .channelOption(.recvAllocator, value: Node.bulkReads)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                PageRelayHandler(session: session.session, peer: session.link.wire))
                        }
                    }
                    .takingOwnershipOfDescriptor(inputOutput: lazy.pageSocket)
                relay.whenSuccess { channel in
                    self.sessions.lazyRelays[session.key] = channel
                    // lazy-pages is done (all pages, or it ended): the home's page server may stop too,
                    // which thaws the home copy. Without this a lazy-pages that never said goodbye (killed
                    // after its child ended, or crashed) left the home copy frozen in its dump for good.
                    channel.closeFuture.whenComplete { _ in
                        session.link.wire.writeAndFlush(
                            Envelope.pageStreamEnd(session: session.session), promise: nil)
                    }
                    guard self.sessions.hosted[session.key] === session else { return }
                    self.restore(session, request)
                }
                relay.whenFailure { error in
                    Posix.kill(lazy.process, SIGKILL)
                    if self.sessions.hosted[session.key] === session {
                        self.abandon(session, "cannot relay pages: \(error)")
                    }
                }
            }
        }
    }

    /// Waits for `criu lazy-pages` on a pool thread: a failure report ("F") ends the child first; its exit
    /// (all pages delivered, or killed) closes the relay and the image directory.
    func watchLazyPages(_ lazy: CRIU.LazyPages, session: HostedSession) {
        waiters.runIfActive(eventLoop: loop) { () -> Bool in
            var byte: UInt8 = 0
            var got = 0
            repeat { got = read(lazy.failure, &byte, 1) } while got < 0 && errno == EINTR
            return got == 1
        }.whenComplete { result in
            if case .success(true) = result, self.sessions.hosted[session.key] === session {
                self.logger.error("post-copy of child \(session.pid) of \(session.home) failed; ending it")
                self.endHostedChild(session, "its memory could not be fetched from \(session.home)")
            }
            self.waiters.runIfActive(eventLoop: self.loop) { try Posix.wait(lazy.process) }.whenComplete { status in
                Posix.close(lazy.failure)
                session.lazyPID = nil
                // Any end but success while the child still runs (a crash of lazy-pages, say): its pages
                // may be incomplete, so it is ended at once.
                if case .success(let end) = status, end != .exited(0), self.sessions.hosted[session.key] === session {
                    self.logger.error(
                        "criu lazy-pages of child \(session.pid) of \(session.home) ended (\(end)) before the child; ending it"
                    )
                    self.endHostedChild(session, "criu lazy-pages on \(self.config.node) ended (\(end))")
                }
                self.sessions.lazyRelays.removeValue(forKey: session.key)?.close(promise: nil)
                if session.restored || session.ended { Posix.removeFlatDirectory(session.imageDirectory) }
            }
        }
    }

    /// Starts rfork-nsinit on a complete image (one with ghost files once the previous such restore on
    /// this node has ended: see `ghostRestore`).
    func restore(_ session: HostedSession, _ request: Rfork_Wire_V1_ForkRequest) {
        let dir = session.imageDirectory
        let key = session.key
        if Posix.listDirectory(dir).contains(where: { $0.hasPrefix("ghost-file-") }) {
            if sessions.ghostRestore != nil && sessions.ghostRestore != key {
                sessions.ghostRestoresWaiting.append((session, request))
                return
            }
            sessions.ghostRestore = key
        }
        do {
            let (ours, theirs) = try Posix.socketPair()
            let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
            defer {
                Posix.close(theirs)
                Posix.close(devnull)
            }
            var args = [
                "rfork-nsinit", "3", dir, criu.configuration.path, String(request.pid),
                String(request.controlSocketInode),
            ]
            for c in request.channels { args.append("\(c.id):\(c.kind.rawValue):\(c.fd):\(c.criuID)") }
            // A restart of a job saved with parts on other nodes: each part's stand-in gets a new socket to
            // this daemon in place of its old one (CheckpointParts.swift).
            var descriptors = [devnull, devnull, 2, theirs]
            var given: [Int32] = []
            defer { for fd in given { Posix.close(fd) } }
            if let bytes = try? Posix.readFile(dir + "/" + Self.partsFileName) {
                let parts = try JSONDecoder().decode([CheckpointManifest.Part].self, from: Data(bytes))
                for part in parts {
                    let (mine, standIn) = try Posix.socketPair()
                    session.restoredParts.append((part, mine))
                    given.append(standIn)
                    args.append("sock:\(descriptors.count):\(part.standInSocketInode)")
                    descriptors.append(standIn)
                }
            }
            let nsinit = config.resolvedHelperDirectory + "/rfork-nsinit"
            // The child's clocks follow the realtime the move took (rfork's CRIU patch), so its
            // CLOCK_MONOTONIC and CLOCK_BOOTTIME agree with its parent's.
            let environment =
                Posix.currentEnvironment() + [CRIU.clockSync] + (request.lazyPages ? ["RFORK_LAZY_PAGES=1"] : [])
            let pid = try Posix.spawn(nsinit, args, environment: environment, descriptors: descriptors)
            session.helperPID = pid
            sessions.helperPIDs.append(pid)
            let future = NIOPipeBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            ByteToMessageHandler(LocalFrameDecoder()), MessageToByteHandler(LocalFrameEncoder()),
                            HelperHandler(node: self, key: key),
                        ])
                    }
                }
                .takingOwnershipOfDescriptor(inputOutput: ours)
            future.whenSuccess { session.helper = $0 }
            future.whenFailure { error in
                self.logger.error("cannot watch rfork-nsinit: \(error)")
                self.endHosted(session, abortHelper: true)
            }
        } catch {
            logger.error("cannot restore child \(request.pid) of \(request.homeNode): \(error)")
            abandon(session, "\(error)")
        }
    }

    /// The restore that held ghost files is over (restored, failed or given up): the next waiting starts.
    func ghostRestoreEnded(_ key: String) {
        guard sessions.ghostRestore == key else { return }
        sessions.ghostRestore = nil
        while !sessions.ghostRestoresWaiting.isEmpty {
            let (next, request) = sessions.ghostRestoresWaiting.removeFirst()
            guard sessions.hosted[next.key] === next else { continue }
            restore(next, request)
            if sessions.ghostRestore != nil { return }
        }
    }

    /// A frame from rfork-nsinit about its child.
    func handleHelperFrame(_ frame: LocalFrame, key: String) {
        logger.trace("nsinit frame \(frame.type) \(frame.payload.readableBytes) bytes for \(key)")
        guard let s = sessions.hosted[key] else { return }
        var envelope = Envelope()
        switch frame.type {
        case .restored:
            s.restored = true
            ghostRestoreEnded(key)
            markRestoredMappers(s)
            startRestoredParts(s)
            // Post-copy: criu lazy-pages reads the image until every page is delivered.
            if s.lazyPID == nil { Posix.removeFlatDirectory(s.imageDirectory) }
            var reply = Rfork_Wire_V1_ForkReply()
            reply.session = s.session
            reply.ok = true
            reply.restoreNs = frame.payload.getInteger(at: frame.payload.readerIndex, endianness: .little) ?? 0
            envelope.forkReply = reply
            logger.info("restored child \(s.pid) of \(s.home)")
        case .failed:
            logger.warning("restore of child \(s.pid) of \(s.home) failed: \(frame.text)")
            return abandon(s, frame.text)
        case .data, .endOfFile, .ack:
            guard let relayed = Envelope(relaying: frame, session: s.session) else { return }
            envelope = relayed
        case .mark:
            return helperMarked(s, frame)
        case .demand:
            guard let channel = frame.word else { return }
            var demand = Rfork_Wire_V1_Demand()
            demand.session = s.session
            demand.channel = channel
            demand.bytes = frame.secondWord.map { UInt32(bitPattern: $0) } ?? 0
            envelope.demand = demand
        case .event:
            guard let raw = frame.word, let code = frame.secondWord,
                let kind = Rfork_Wire_V1_ChildEvent.Kind(rawValue: Int(raw))
            else { return }
            guard s.restored else { return abandon(s, "the child ended during its restore") }
            // The stop and continue of a tree this node moves on (CRIU leaves it stopped) are rfork's, not
            // the process's: its home must not stop the stand-in for them.
            if kind == .stopped && s.quietStops > 0 {
                s.quietStops -= 1
                return
            }
            if kind == .continued && s.quietContinues > 0 {
                s.quietContinues -= 1
                return
            }
            var event = Rfork_Wire_V1_ChildEvent()
            event.session = s.session
            event.kind = kind
            event.code = code
            envelope.childEvent = event
            if kind == .exited || kind == .killed {
                s.ended = true
                sessions.hosted[key] = nil
                // Nothing needs the pages any more; lazy-pages may be waiting for answers that will
                // not come (a child that exec'd at once). It goes once nsinit, and with it the
                // namespace, is gone.
                retireLazyPages(s)
            }
        default:
            return
        }
        s.link.wire.writeAndFlush(envelope, promise: nil)
    }

    /// rfork-nsinit's socket closed.
    func helperClosed(key: String) {
        guard let s = sessions.hosted.removeValue(forKey: key) else { return }
        retireLazyPages(s)
        Posix.removeFlatDirectory(s.imageDirectory)
        if !s.ended {
            s.ended = true
            if s.restored {
                tellHome(s, "the child's namespace init on \(config.node) ended unexpectedly")
            } else {
                refuse(s.link, session: s.session, "rfork-nsinit on \(config.node) ended before the restore")
            }
        }
    }

    /// Drops a session whose child never ran here; its home node hears why and runs the child itself.
    func abandon(_ s: HostedSession, _ reason: String) {
        forget(s)
        refuse(s.link, session: s.session, reason)
    }

    /// Drops a session from this node: its open image file, its image directory and (post-copy) its
    /// lazy-pages daemon.
    func forget(_ s: HostedSession) {
        sessions.hosted[s.key] = nil
        ghostRestoreEnded(s.key)
        s.ended = true
        retireLazyPages(s)
        if let file = s.openFile { Posix.close(file.fd) }
        s.openFile = nil
        Posix.removeFlatDirectory(s.imageDirectory)
    }

    /// Ends a running child for a reason found here, and tells its home node, whose stand-in then ends as if
    /// killed by SIGKILL.
    func endHostedChild(_ s: HostedSession, _ reason: String) {
        tellHome(s, reason)
        endHosted(s, abortHelper: true)
    }

    /// Tells the child's home node that the child was ended here, and why.
    func tellHome(_ s: HostedSession, _ reason: String) {
        s.link.wire.writeAndFlush(Envelope.abort(session: s.session, reason: reason), promise: nil)
    }

    func endHosted(_ s: HostedSession, abortHelper: Bool) {
        forget(s)
        for (_, socket) in s.restoredParts { Posix.close(socket) }
        s.restoredParts = []
        if abortHelper, let helper = s.helper {
            helper.writeAndFlush(LocalFrame(type: .abort, payload: ByteBuffer())).whenComplete { _ in
                helper.close(promise: nil)
            }
        } else if let pid = s.helperPID {
            Posix.kill(pid, SIGKILL)
        }
    }

    /// Post-copy: lazy-pages must outlive the child, or the child could see a missing page as zeros. It is
    /// killed once rfork-nsinit (the init of the child's namespace, so the child too) has been reaped.
    func retireLazyPages(_ s: HostedSession) {
        guard let lazy = s.lazyPID else { return }
        if let helper = s.helperPID, sessions.helperPIDs.contains(helper) {
            logger.debug("post-copy: criu lazy-pages \(lazy) ends after rfork-nsinit \(helper)")
            sessions.lazyKillAfter[helper] = lazy
        } else {
            logger.debug("post-copy: criu lazy-pages \(lazy) ends now (no rfork-nsinit runs)")
            Posix.kill(lazy, SIGKILL)
        }
    }

    /// An inbound link closed: the children it carried lost their parent's node.
    func inboundLost(_ link: InboundLink) {
        net.inbound[ObjectIdentifier(link)] = nil
        for s in sessions.hosted.values where s.link === link {
            logger.warning("lost home node \(s.home): ending its remote child \(s.pid)")
            endHosted(s, abortHelper: true)
        }
    }
}
