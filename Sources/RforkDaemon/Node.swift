import Foundation
import Glibc
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RforkCheckpoint
import RforkPlacement
import RforkProtocol
import RforkSystem
import RforkWire

typealias Envelope = Rfork_Wire_V1_Envelope

/// The state of one node daemon. Every method runs on `loop`; nothing here is touched from elsewhere.
/// (It is `@unchecked Sendable` so NIO's initializer closures can carry it to the loop.)
final class Node: @unchecked Sendable {
    let config: DaemonConfiguration
    let loop: EventLoop
    let group: EventLoopGroup
    let threads: NIOThreadPool
    let waiters: NIOThreadPool  // threads that only wait for post-copy CRIU processes
    let logger: Logger
    let criu: CRIU
    var placement: Placement
    /// The node's state, by concern. Each table is a class confined to `loop` (as `Node` is), declared in
    /// the file that owns it, so that touching one table never conflicts with touching another.
    let net: PeerTable  // links to and from peers, and who they are (Links.swift, Membership.swift)
    let sessions = SessionTable()  // fork, move and restore sessions, as home and as target (Hosted.swift)
    let commands = CommandTable()  // what the CLI asked that is under way: moves, checkpoints, drains
    let balance: BalanceState  // what peers said of their load, and what the balancer watches (Balance.swift)
    let unix = UnixRelayTable()  // AF_UNIX streams relayed across nodes (UnixRelay.swift)
    var shared = SharedMemoryState()  // shared memory kept coherent across nodes (SharedRegions.swift)
    var shuttingDown = false
    var ticker: RepeatedTask?
    var tickCount = 0
    let probe = LoadProbe()
    /// Random, new each start: peers tell a restarted daemon (whose links cannot resume) from this one.
    let incarnation = UInt64.random(in: 1...UInt64.max)
    /// How long a target may take to restore a child before it runs locally instead.
    let restoreDeadline = TimeAmount.seconds(20)

    init(
        config: DaemonConfiguration, group: EventLoopGroup, threads: NIOThreadPool, waiters: NIOThreadPool,
        logger: Logger
    ) {
        self.config = config
        self.group = group
        self.loop = group.next()
        self.threads = threads
        self.waiters = waiters
        self.logger = logger
        self.criu = CRIU(configuration: .init(path: config.criu ?? CRIU.defaultPath()))
        self.placement = Placement(selfName: config.node)
        self.net = PeerTable(peers: config.peers)
        self.balance = BalanceState(
            balancer: Balancer(
                configuration: config.balance ?? .init(), seed: UInt64(truncatingIfNeeded: config.node.hashValue)),
            gossip: Gossip(
                fanout: config.resolvedLinks.resolvedFanout,
                seed: UInt64(truncatingIfNeeded: config.node.hashValue) ^ 0x5EED))
        var key: CheckpointKey?
        if let path = config.checkpointKey {
            do { key = try CheckpointKey(file: path) } catch {
                logger.error("checkpoints are off: \(error)")
            }
        }
        self.checkpointKey = key
    }

    /// Signs and checks checkpoints; nil when the configuration names no (readable) key.
    let checkpointKey: CheckpointKey?

    var imageRoot: String { config.resolvedRuntimeDirectory + "/images" }

    /// Reads on links that carry memory (peer links, page relays) grow up to 1 MiB, not NIO's 64 KiB:
    /// fewer reads, envelopes and TLS records per page stream.
    static let bulkReads = AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 65536, maximum: 1 << 20)

    // MARK: placement requests (home side)

    func handleForkRequest(
        _ asked: LocalForkRequest, peerUID: UInt32?, peerPID: Int32?, pin: ProcessPin? = nil, from channel: Channel
    ) {
        var request = asked
        loop.preconditionInEventLoop()
        // Only a process may ask to move itself: the kernel says who is on the other end of the socket.
        // The pin (a pidfd taken when it connected) proves, up to the end of its dump, that its PID is still
        // its own.
        guard let peerPID, let uid = peerUID, let pin, pin.isAlive else {
            reply(channel, .local, "placement refused: the caller cannot be identified")
            return
        }
        // The caller's PID as this daemon sees it (for /proc); `request.pid` is its PID in its own namespace.
        let localPID = peerPID
        // The rfork-nsinit whose namespaces a nested caller lives in (CRIU dumps it from there).
        var helper: Int32?
        if peerPID != request.pid {
            // A process inside a nested PID namespace knows itself by its PID there.
            let nested = Posix.namespacePIDs(peerPID)
            guard nested.count > 1 && nested.last == request.pid else {
                logger.warning("refused a placement request for PID \(request.pid) from PID \(peerPID)")
                reply(channel, .local, "placement refused: PID \(request.pid) is not the caller")
                return
            }
            // A fork inside a remote child this node hosts (or a program it exec'd), or that child called
            // in to move on, is placed like any other, and CRIU dumps it from inside the namespaces of that
            // child's rfork-nsinit. Other nested namespaces are not rfork's.
            guard let container = hostedSession(containing: peerPID), let outer = container.helperPID else {
                reply(
                    channel, .local,
                    isInHostedNamespace(peerPID)
                        ? ""
                        : "the child runs in a PID namespace below rforkd's on \(config.node), from which rfork cannot move it"
                )
                return
            }
            guard uid == container.uid else {
                reply(channel, .local, "placement refused: the caller is not the user whose child runs here")
                return
            }
            if container.lazyPID != nil {
                // Its pages are still arriving (post-copy): a dump now would miss those not yet here.
                reply(
                    channel, .local,
                    "the memory of the process it comes from is still arriving on \(config.node) (post-copy); it runs here"
                )
                if request.migrate { migrationEvent(pid: localPID, .refused(reason: "its memory is still arriving")) }
                return
            }
            helper = outer
        }
        let nested = helper != nil
        let inside = helper
        // t0 is the caller's CLOCK_MONOTONIC: a restored process's runs in its time namespace, and nothing
        // it sends may be trusted to lie in the past; in ours, and no later than now.
        let now = Posix.monotonicNanoseconds()
        var t0 = Int64(clamping: request.forkStartedNanoseconds)
        if nested {
            let (adjusted, overflow) = t0.subtractingReportingOverflow(Posix.monotonicOffset(localPID))
            t0 = overflow ? 0 : adjusted
        }
        request.forkStartedNanoseconds = t0 <= 0 ? 0 : min(UInt64(t0), now)
        let placed = request
        // A parent that maps shared memory is watched from its first fork on, wherever the child goes.
        if !request.migrate { takeParentUserfault(request.parentUserfault, childPID: localPID, uid: uid) }
        if request.migrate, commands.checkpoints[localPID] != nil {
            return checkpointCall(request, localPID: localPID, helper: inside, from: channel)
        }
        if !request.migrate, inJobBeingSaved(localPID) {
            // A cut waits for forks in flight to land; new ones stay here until it is taken.
            logger.info("process \(localPID) forked while its job is being saved: the child stays on \(config.node)")
            return reply(channel, .local, "")
        }
        var migrationTarget: String?
        if request.migrate {
            // A process told to move (rfork migrate) calls in from its signal handler.
            guard let pending = commands.migrations[localPID], pending.machine.state == .signalled else {
                return migrationEvent(pid: localPID, .strayCall, call: channel)
            }
            migrationTarget = pending.machine.node
        }
        let policy = migrationTarget == nil ? request.policy.flatMap(PlacementPolicy.init(rawValue:)) : nil
        if migrationTarget == nil && request.policy != nil && policy == nil {
            reply(channel, .local, "unknown placement policy '\(request.policy ?? "")'")
            return
        }
        if shuttingDown {
            reply(channel, .local, "rforkd on \(config.node) is shutting down")
            if request.migrate { migrationEvent(pid: localPID, .refused(reason: "rforkd is shutting down")) }
            return
        }
        let named = migrationTarget ?? request.node
        let decision = placement.choose(policy: policy, node: named, peers: peerViews(named: named))
        guard case .remote(let target) = decision else {
            if case .local(let reason) = decision {
                reply(channel, .local, reason ?? "")
                if request.migrate {
                    migrationEvent(pid: localPID, .refused(reason: reason ?? "placement chose this node"))
                }
            }
            return
        }
        balance.placedSinceReport[target, default: 0] += 1
        guard let link = usableLink(target) else {
            reply(channel, .local, "node '\(target)' is not reachable")
            if request.migrate {
                migrationEvent(pid: localPID, .refused(reason: "node '\(target)' is not reachable"))
            }
            return
        }
        // Shared anonymous memory follows the child coherently (SharedRegions.swift), or keeps it here.
        var sharedRegions: [Rfork_Wire_V1_SharedRegion] = []
        switch prepareSharedRegions(request, localPID: localPID, uid: uid) {
        case .success(let infos): sharedRegions = infos
        case .failure(let e):
            reply(channel, .local, e.message)
            if request.migrate { migrationEvent(pid: localPID, .refused(reason: e.message)) }
            return
        }
        let sharesMemory = !sharedRegions.isEmpty
        let id = sessions.newID()
        let session = HomeSession(
            id: id, pid: request.pid, localPID: localPID, uid: uid, target: target, child: channel, request: request,
            started: Posix.monotonicNanoseconds())
        sessions.home[id] = session
        session.sharedRegions = sharedRegions
        for info in sharedRegions { shared.regions[info.manager]?.sessions.insert(id) }
        if request.migrate {
            migrationEvent(pid: localPID, .called(session: id))
            migrationProgress(pid: localPID, "stopped; saving it (CRIU)")
        }
        // A process moved with its descendants: CRIU leaves the whole tree stopped after the dump, so the
        // descendants' copies here do nothing more; they end once the tree runs on the target, or all go on
        // here if it does not (see `releaseTree`).
        let tree = request.migrate && Posix.hasChildren(localPID)
        session.treeStopped = tree
        if tree, nested, let container = hostedSession(containing: localPID) {
            container.quietStops += 1
            container.quietContinues += 1
        }
        let standIns = Set(sessions.home.values.map(\.localPID))
        let criu = self.criu
        let postCopyBytes = UInt64(config.resolvedPostCopyMiB) << 20
        startHomeSession(session, peer: link.wire) { dir in
            // The directory goes with a failed dump; a successful one keeps it until its pages are sent.
            let externalFiles = placed.channels.filter { $0.criuID.hasPrefix("file[") }.map(\.criuID)
            var lazy: CRIU.LazyDump?
            do {
                // CRIU runs as root: the process must still be the caller, and run as the user who asked, with
                // no more privilege (a setuid program exec'd since it connected is not theirs to move).
                guard pin.isAlive else { throw CheckpointError(.unmovable, "the process ended") }
                if let why = Self.identityRefusal(pid: localPID, uid: uid) { throw CheckpointError(.unmovable, why) }
                // Decided before CRIU runs: memory it shares would become a private copy there.
                if let why = SharedMemory.check(pid: localPID, allowCoherent: sharesMemory) {
                    throw CheckpointError(.unmovable, why)
                }
                // CRIU takes the whole tree: checked again now that the process is parked (its descendants
                // may have changed since `rfork migrate` was checked).
                if placed.migrate, let why = Self.treeRefusal(pid: localPID, owner: uid, standIns: standIns) {
                    throw CheckpointError(.unmovable, why)
                }
                if !tree && Posix.hasChildren(localPID) {
                    throw CheckpointError(.unmovable, "process \(placed.pid) has children since it was asked to move")
                }
                let postCopy: Bool
                switch placed.postCopy {
                case _ where tree: postCopy = false  // a stopped tree waits for no page server
                case "always": postCopy = true
                case "never": postCopy = false
                default: postCopy = postCopyBytes > 0 && Posix.anonymousBytes(localPID) >= postCopyBytes
                }
                if postCopy {
                    lazy = try criu.lazyDump(
                        pid: placed.pid, imageDirectory: dir, externalSocketInode: placed.socketInode,
                        externalFiles: externalFiles, insideNamespacesOf: inside)
                } else {
                    try criu.dump(
                        pid: placed.pid, imageDirectory: dir, externalSocketInode: placed.socketInode,
                        externalFiles: externalFiles, leaveStopped: tree, insideNamespacesOf: inside)
                }
                // Dumped while its PID was its own: a process that ended meanwhile may have left its PID
                // (in its namespace too) to another, whose images these would be.
                guard pin.isAlive else {
                    if let lazy { Self.stopLazyDump(lazy) }
                    throw CheckpointError(.unmovable, "the process ended during its dump")
                }
            } catch {
                Posix.removeFlatDirectory(dir)
                throw error
            }
            return lazy
        }
    }

    /// Moves the process of a new home session: `prepare` fills the session's image directory (a CRIU
    /// dump, or a checkpoint's images) on a pool thread; its images then go to the target as a
    /// ForkRequest, and the session follows the target's answer.
    func startHomeSession(
        _ session: HomeSession, peer peerChannel: PeerPort,
        prepare: @escaping @Sendable (String) throws -> CRIU.LazyDump?
    ) {
        let id = session.id
        let request = session.request
        let uid = session.uid
        let dir = imageRoot + "/h\(id)"
        let node = config.node
        let work = threads.runIfActive(eventLoop: loop) { () throws -> (Envelope, UInt64, CRIU.LazyDump?) in
            try Posix.makeDirectory(dir)
            let t0 = Posix.monotonicNanoseconds()
            let lazy = try prepare(dir)
            let dumpNs = Posix.monotonicNanoseconds() - t0
            var fork = Rfork_Wire_V1_ForkRequest()
            fork.session = id
            fork.pid = UInt32(request.pid)
            fork.uid = uid
            fork.homeNode = node
            fork.controlSocketInode = request.socketInode
            fork.forkStartedNs = request.forkStartedNanoseconds
            fork.lazyPages = lazy != nil
            fork.sharedRegions = session.sharedRegions
            // Counted across nodes, so the balancer bounds how often one process moves.
            fork.moves =
                request.migrate ? UInt32((self.hostedSession(containing: session.localPID)?.moves ?? 0) + 1) : 0
            fork.channels = request.channels.map { c in
                var ch = Rfork_Wire_V1_Channel()
                ch.id = c.id
                ch.kind = Rfork_Wire_V1_ChannelKind(rawValue: Int(c.kind.rawValue)) ?? .unspecified
                ch.criuID = c.criuID
                ch.fd = c.fd
                return ch
            }
            // Small images go inline (at most inlineTotalLimit in all, well under the peer envelope
            // limit); the large ones, and the rest, follow as a stream of ImageChunks.
            do {
                var inlined = 0
                for name in Posix.listDirectory(dir) where name.hasSuffix(".img") {
                    let size = Posix.fileSize(dir + "/" + name)
                    if size > Self.inlineImageLimit || inlined + size > Self.inlineTotalLimit {
                        fork.imageBytes += UInt64(size)
                    } else {
                        var file = Rfork_Wire_V1_ImageFile()
                        file.name = name
                        file.data = try Posix.readData(dir + "/" + name)
                        inlined += file.data.count
                        fork.images.append(file)
                    }
                }
            } catch {
                if let lazy { Self.stopLazyDump(lazy) }
                Posix.removeFlatDirectory(dir)
                throw error
            }
            // A post-copy dump keeps its directory (CRIU logs there) until it ends.
            if fork.imageBytes == 0 && lazy == nil { Posix.removeFlatDirectory(dir) }
            var envelope = Envelope()
            envelope.forkRequest = fork
            return (envelope, dumpNs, lazy)
        }
        .map { (envelope: Envelope, dumpNs: UInt64, lazy: CRIU.LazyDump?) -> (Envelope, UInt64, CRIU.LazyDump?) in
            self.sessions.home[id]?.imageBytes =
                envelope.forkRequest.images.reduce(0) { $0 + $1.data.count } + Int(envelope.forkRequest.imageBytes)
            return (envelope, dumpNs, lazy)
        }
        work.whenComplete { result in
            guard let session = self.sessions.home[id] else {
                if case .success(let (_, _, lazy)) = result {
                    if let lazy {
                        // The child is still frozen in a post-copy dump: ending it lets the child run on here.
                        _ = self.threads.runIfActive(eventLoop: self.loop) { Self.stopLazyDump(lazy) }
                    }
                    Posix.removeFlatDirectory(dir)
                }
                return
            }
            switch result {
            case .success(let (envelope, dumpNs, lazy)):
                session.dumpNanoseconds = dumpNs
                session.sentAt = Posix.monotonicNanoseconds()
                session.state = .restoring
                if request.migrate { self.sayDumped(session, dumpNs: dumpNs, postCopy: lazy != nil) }
                if let lazy {
                    session.postCopy = true
                    self.startPageServerRelay(lazy, session: session, peer: peerChannel, directory: dir)
                }
                peerChannel.writeAndFlush(envelope, promise: nil)
                if envelope.forkRequest.imageBytes > 0 {
                    self.sendImages(envelope, of: session, from: dir, removeAfter: lazy == nil, to: peerChannel)
                }
                self.loop.scheduleTask(in: self.restoreDeadline) {
                    guard let late = self.sessions.home[id], late.state == .restoring else { return }
                    self.logger.warning("node \(late.target) did not restore child \(late.pid) in time; it stays local")
                    self.sendAbort(session: id, to: late.target, reason: "restore took too long")
                    self.endHomeSession(late, localReason: "node \(late.target) did not restore the child in time")
                }
            case .failure(let error):
                Posix.removeFlatDirectory(dir)
                self.logger.info("child \(request.pid) stays local: \(error)")
                self.endHomeSession(session, localReason: "\(error)")
            }
        }
    }

    /// The hosted session in whose PID namespace (under its rfork-nsinit) process `pid` lives.
    func hostedSession(containing pid: Int32) -> HostedSession? {
        guard let namespace = Posix.readLink("/proc/\(pid)/ns/pid") else { return nil }
        return sessions.hosted.values.first { session in
            session.helperPID.map { Posix.readLink("/proc/\($0)/ns/pid_for_children") == namespace } ?? false
        }
    }

    /// Why a process may not be dumped for `uid` (CRIU runs as root), or nil: every one of its user IDs is
    /// `uid`, and a process of an ordinary user holds no effective capability.
    static func identityRefusal(pid: Int32, uid: UInt32) -> String? {
        guard let status = Posix.processStatus(pid) else { return "the process ended" }
        guard runsOnlyAs(uid, status: status) else {
            return "process \(pid) runs with another identity or capabilities than its user's (a setuid program?)"
        }
        return nil
    }

    /// Whether every user ID of a process (from its /proc status) is `uid`, and, for an ordinary user, it
    /// holds no effective capability.
    static func runsOnlyAs(_ uid: UInt32, status: [String: String]) -> Bool {
        let uids = (status["Uid"] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }).map { UInt32($0) }
        guard uids.count == 4, uids.allSatisfy({ $0 == uid }) else { return false }
        return uid == 0 || status["CapEff"].flatMap { UInt64($0, radix: 16) } == 0
    }

    /// Streams the images of `session` that did not go inline, from a pool thread; a move's command hears
    /// the bytes sent so far.
    func sendImages(
        _ envelope: Envelope, of session: HomeSession, from dir: String, removeAfter: Bool, to peer: PeerPort
    ) {
        let logger = self.logger
        let inlined = Set(envelope.forkRequest.images.map(\.name))
        let id = session.id
        let pid = session.pid
        var progress: (@Sendable (UInt64) -> Void)?
        var done: (@Sendable () -> Void)?
        if session.request.migrate {
            let loop = self.loop
            let local = session.localPID
            let target = session.target
            let total = Double(envelope.forkRequest.imageBytes) / 1_048_576
            progress = { sent in
                let text = String(format: "sent %.0f of %.0f MiB to %@", Double(sent) / 1_048_576, total, target)
                loop.execute { self.migrationProgress(pid: local, text) }
            }
            done = { loop.execute { self.migrationProgress(pid: local, "restoring on \(target)") } }
        }
        let report = progress
        let finished = done
        _ = threads.runIfActive(eventLoop: loop) {
            defer { if removeAfter { Posix.removeFlatDirectory(dir) } }
            do {
                try Self.streamImages(from: dir, inlined: inlined, session: id, to: peer, progress: report)
                finished?()
            } catch {
                logger.warning("sending the image of child \(pid) failed: \(error)")
            }
        }
    }

    /// A move's command hears that the process is saved, and what comes next.
    func sayDumped(_ session: HomeSession, dumpNs: UInt64, postCopy: Bool) {
        let ms = Int(Double(dumpNs) / 1e6)
        let mib = Double(session.imageBytes) / 1_048_576
        migrationProgress(
            pid: session.localPID,
            postCopy
                ? "saved in \(ms) ms; restoring on \(session.target), its memory follows"
                : String(format: "saved in %d ms; sending %.1f MiB to %@", ms, mib, session.target))
    }

    /// Whether a process lives in the PID namespace of a child this node hosts (under its rfork-nsinit).
    func isInHostedNamespace(_ pid: Int32) -> Bool {
        guard let namespace = Posix.readLink("/proc/\(pid)/ns/pid") else { return false }
        return sessions.helperPIDs.contains { Posix.readLink("/proc/\($0)/ns/pid_for_children") == namespace }
    }

    /// Ends a post-copy dump nobody will take pages from: with its page socket closed, CRIU gives up and
    /// lets the child run on. Blocking (reaps it).
    static func stopLazyDump(_ lazy: CRIU.LazyDump) {
        Posix.close(lazy.pageSocket)
        _ = try? Posix.wait(lazy.process)
    }

    /// Post-copy, home side: relays the page server's socket to the target, and watches the dump; when it
    /// ends, every page has been sent (exit 0) or the child's memory is lost.
    func startPageServerRelay(_ lazy: CRIU.LazyDump, session: HomeSession, peer: PeerPort, directory: String) {
        let id = session.id
        let relay = NIOPipeBootstrap(group: loop)
            .channelOption(.recvAllocator, value: Node.bulkReads)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PageRelayHandler(session: id, peer: peer))
                }
            }
            .takingOwnershipOfDescriptor(inputOutput: lazy.pageSocket)
        relay.whenSuccess { self.sessions.pageRelays[id] = PageRelay(channel: $0, socket: lazy.pageSocket) }
        relay.whenFailure { error in
            self.logger.error("cannot relay the pages of child \(session.pid): \(error)")
            // With nsenter in front, the kill reaches nsenter, not CRIU: the closed socket ends CRIU too.
            Posix.shutdownWrite(lazy.pageSocket)
            Posix.kill(lazy.process, SIGKILL)
        }
        waiters.runIfActive(eventLoop: loop) { () -> (ExitStatus?, String?) in
            let status = try? Posix.wait(lazy.process)
            var why: String?
            if case .signaled(let signo)? = status {
                why = "criu dump was killed by signal \(signo)"
            } else if status != .exited(0) {
                why = CRIU.lastError(inLog: directory + "/dump.log")
            }
            Posix.removeFlatDirectory(directory)
            return (status, why)
        }.whenSuccess { (status, why) in
            self.pageServerEnded(id, ok: status == .exited(0), why: why ?? "criu dump \(status.map { "\($0)" } ?? "?")")
        }
    }

    /// The post-copy dump of session `id` ended: all pages sent, or the child's memory is gone with it.
    func pageServerEnded(_ id: UInt64, ok: Bool, why: String) {
        dropPageRelay(id)
        guard let session = sessions.home[id] else { return }
        if ok {
            logger.debug("all memory of child \(session.pid) sent to \(session.target)")
            return
        }
        // The target must end its copy before its lazy-pages daemon could hand it a missing page.
        wire(to: session.target)?.writeAndFlush(Envelope.pageStreamEnd(session: id, error: why), promise: nil)
        switch session.state {
        case .running:
            logger.warning("post-copy of child \(session.pid) to \(session.target) failed (\(why)); it is ended")
            sessions.home[id] = nil
            session.ended = true
            session.child.writeAndFlush(
                LocalFrame.event(kind: EventKindCode.killed.rawValue, code: SIGKILL), promise: nil)
        case .dumping, .restoring:
            logger.info("child \(session.pid) stays local: post-copy to \(session.target) failed: \(why)")
            endHomeSession(session, localReason: "post-copy to \(session.target) failed: \(why)")
        }
    }

    /// Image files up to this size travel inside the ForkRequest; larger ones are streamed.
    static let inlineImageLimit = 256 * 1024
    /// Image files inline in one ForkRequest add up to at most this (PeerFraming's limit is 16 MiB).
    static let inlineTotalLimit = 4 << 20
    static let chunkSize = 1 << 20

    /// Sends the large image files of `dir` as ImageChunks, at most 8 MiB in flight. On a pool thread.
    /// `progress` hears the bytes sent so far, every 64 MiB.
    static func streamImages(
        from dir: String, inlined: Set<String>, session: UInt64, to channel: PeerPort,
        progress: (@Sendable (UInt64) -> Void)? = nil
    ) throws {
        let names = Posix.listDirectory(dir).filter { $0.hasSuffix(".img") && !inlined.contains($0) }
        var inFlight: [EventLoopFuture<Void>] = []
        var sent: UInt64 = 0
        for (index, name) in names.enumerated() {
            try Posix.readChunks(dir + "/" + name, size: chunkSize) { offset, data, isLast in
                let before = sent
                sent += UInt64(data.count)
                if let progress, before >> 26 != sent >> 26 { progress(sent) }
                var chunk = Rfork_Wire_V1_ImageChunk()
                chunk.session = session
                chunk.name = name
                chunk.offset = offset
                chunk.data = data
                chunk.last = isLast && index == names.count - 1
                var envelope = Envelope()
                envelope.imageChunk = chunk
                inFlight.append(channel.writeAndFlush(envelope))
                if inFlight.count >= 8 {
                    try inFlight.removeFirst().wait()
                }
            }
        }
        for future in inFlight { try future.wait() }
    }

    func reply(_ channel: Channel, _ verdict: Verdict, _ text: String) {
        if verdict == .local { RforkMetrics.placedLocal.increment() }
        channel.writeAndFlush(LocalFrame.reply(verdict, text)).whenComplete { _ in channel.close(promise: nil) }
    }

    /// Closes a post-copy dump's page-server relay: the dump stops serving and thaws the home copy.
    func dropPageRelay(_ id: UInt64) {
        sessions.pageRelays.removeValue(forKey: id)?.channel.close(promise: nil)
    }

    /// Ends a home session before the remote child ran: the local copy continues as the child.
    func endHomeSession(_ session: HomeSession, localReason: String) {
        sessions.home[session.id] = nil
        // A post-copy dump still serving pages gives up when its relay closes, and the child runs on here.
        dropPageRelay(session.id)
        reply(session.child, .local, localReason)
        migrationSessionEnded(session, reason: localReason)
    }

    /// A frame from a stand-in (or from a child still waiting for its verdict).
    func handleStandInFrame(_ frame: LocalFrame, session id: UInt64) {
        guard let session = sessions.home[id], session.state == .running,
            let peer = wire(to: session.target)
        else { return }
        var envelope = Envelope()
        switch frame.type {
        case .data, .endOfFile, .ack:
            guard let relayed = Envelope(relaying: frame, session: id) else { return }
            envelope = relayed
        case .mark:
            guard let phase = frame.word else { return }
            return standInMarked(session, phase: phase)
        case .signal:
            guard let signo = frame.word else { return }
            var signal = Rfork_Wire_V1_Signal()
            signal.session = id
            signal.signo = signo
            envelope.signal = signal
        default:
            return
        }
        peer.writeAndFlush(envelope, promise: nil)
    }

    /// The child's (or stand-in's) connection closed.
    func standInClosed(session id: UInt64) {
        guard let session = sessions.home.removeValue(forKey: id) else { return }
        passedOnSessionEnded(session)
        if session.state != .running {
            migrationSessionEnded(session, reason: "process \(session.pid) ended during the move")
        }
        guard session.state == .running || session.state == .restoring, !session.ended else { return }
        logger.info("stand-in of child \(session.pid) ended; ending the remote child on \(session.target)")
        sendAbort(session: id, to: session.target, reason: "the child's stand-in ended")
    }

    func sendAbort(session: UInt64, to target: String, reason: String) {
        wire(to: target)?.writeAndFlush(Envelope.abort(session: session, reason: reason), promise: nil)
    }

    /// Something arrived from a target node over our outbound link to it.
    func handleFromTarget(_ envelope: Envelope, link: PeerLink) {
        logger.trace("from \(link.name): \(envelope.body.map { "\($0)".prefix(80) } ?? "empty")")
        switch envelope.body {
        case .forkReply(let reply):
            guard let session = sessions.home[reply.session], session.state == .restoring else { return }
            if reply.ok {
                session.state = .running
                if session.resumeStandIn {
                    // A part of a restarted job: its stand-in was saved paused, and its far side is new.
                    session.resumeStandIn = false
                    session.child.writeAndFlush(LocalFrame.mark(LocalWire.markResume, fresh: true), promise: nil)
                }
                session.restoreNanoseconds = reply.restoreNs
                session.runningAt = Posix.monotonicNanoseconds()
                logger.info(
                    "child \(session.pid) runs on \(session.target)",
                    metadata: [
                        "dump_ms": "\(Double(session.dumpNanoseconds) / 1e6)",
                        "restore_ms": "\(Double(reply.restoreNs) / 1e6)",
                    ])
                releaseTree(session, moved: true)
                session.child.writeAndFlush(LocalFrame.reply(.standIn, "\(session.id)"), promise: nil)
                recordPhases(session)
                if session.request.migrate {
                    let frozen = Double(session.runningAt &- session.request.forkStartedNanoseconds) / 1e6
                    migrationEvent(
                        pid: session.localPID,
                        .running(session: session.id, frozenMs: frozen, postCopy: session.postCopy))
                }
            } else {
                logger.info("child \(session.pid) stays local: restore on \(session.target) failed: \(reply.error)")
                endHomeSession(session, localReason: "restore on \(session.target) failed: \(reply.error)")
            }
        case .data(let data):
            guard let session = sessions.home[data.session], session.state == .running else { return }
            session.child.writeAndFlush(
                LocalFrame.data(channel: data.channel, ByteBuffer(bytes: data.data)), promise: nil)
        case .endOfFile(let eof):
            guard let session = sessions.home[eof.session], session.state == .running else { return }
            session.child.writeAndFlush(LocalFrame.u32(.endOfFile, eof.channel), promise: nil)
        case .demand(let demand):
            guard let session = sessions.home[demand.session], session.state == .running else { return }
            session.child.writeAndFlush(LocalFrame.demand(channel: demand.channel, bytes: demand.bytes), promise: nil)
            checkSoleReader(session, channel: demand.channel)
        case .ack(let ack):
            guard let session = sessions.home[ack.session], session.state == .running else { return }
            session.child.writeAndFlush(LocalFrame.ack(channel: ack.channel, bytes: ack.bytes), promise: nil)
        case .childEvent(let event):
            guard let session = sessions.home[event.session], session.state == .running else { return }
            let kind = UInt32(event.kind.rawValue)
            if event.kind == .stopped {
                session.remoteStopped = true
                if session.expectRemoteStop {
                    // The echo of a SIGSTOP this daemon forwarded because the stand-in was stopped.
                    session.expectRemoteStop = false
                    return
                }
            }
            if event.kind == .continued {
                session.remoteStopped = false
                // Continued over there (not through the stand-in): the stand-in, stopped by the stop
                // before, wakes, so its parent sees it continue too and it reads on.
                if Posix.processState(session.localPID) == "T" { Posix.kill(session.localPID, SIGCONT) }
            }
            if event.kind == .exited || event.kind == .killed {
                session.ended = true
                sessions.home[event.session] = nil
                passedOnSessionEnded(session)
                partEnded(session)
            }
            session.child.writeAndFlush(LocalFrame.event(kind: kind, code: event.code), promise: nil)
        case .abort(let abort):
            guard let session = sessions.home.removeValue(forKey: abort.session) else { return }
            passedOnSessionEnded(session)
            logger.warning("remote child \(session.pid) on \(session.target) was ended: \(abort.reason)")
            if session.state == .running {
                session.ended = true
                session.child.writeAndFlush(
                    LocalFrame.event(kind: EventKindCode.killed.rawValue, code: SIGKILL), promise: nil)
            } else {
                reply(session.child, .local, "node \(session.target) refused the child: \(abort.reason)")
                migrationSessionEnded(session, reason: "node \(session.target) refused it: \(abort.reason)")
            }
        case .pageStream(let stream):
            sessions.pageRelays[stream.session]?.channel.writeAndFlush(ByteBuffer(bytes: stream.data), promise: nil)
        case .pageStreamEnd(let end):
            // The target's lazy-pages is gone: the dump's page server reads end of stream and stops (it may
            // still write its last words, so only our side of writing is shut), which thaws the home copy.
            if let relay = sessions.pageRelays[end.session] { Posix.shutdownWrite(relay.socket) }
        case .migrateResult(let result):
            handleMigrateResult(result, from: link)
        case .migrateProgress(let progress):
            handleMigrateProgress(progress, from: link)
        case .imageChunk(let chunk):
            receiveCheckpointChunk(chunk, from: link)
        case .checkpointResult(let result):
            handleCheckpointResult(result, from: link)
        case .drainResult(let result):
            handleDrainResult(result, from: link)
        case .load(let load):
            receivedLoad(load, from: link.name)
        case .coherence(let c):
            receivedCoherence(c)
        case .regionEnd(let e):
            receivedRegionEnd(e)
        case .unixStream(let m):
            receivedUnixStream(m)
        default:
            break
        }
    }

    /// The link to a target node is gone: its remote children are lost (or, mid-fork, stay local).
    func linkLost(_ link: PeerLink) {
        forwardedDrainsLost(link.name)
        passedOnCheckpointsLost(link.name)
        for (pid, pending) in commands.migrations where pending.machine.state == .passedOn(node: link.name) {
            migrationEvent(pid: pid, .linkLost(node: link.name))
        }
        for session in sessions.home.values where session.target == link.name {
            sessions.home[session.id] = nil
            dropPageRelay(session.id)
            switch session.state {
            case .dumping, .restoring:
                reply(session.child, .local, "lost the link to \(link.name) during the fork")
                migrationSessionEnded(session, reason: "lost the link to \(link.name) during the move")
            case .running:
                logger.warning("lost node \(link.name): remote child \(session.pid) is reported killed")
                session.ended = true
                session.child.writeAndFlush(
                    LocalFrame.event(kind: EventKindCode.killed.rawValue, code: SIGKILL), promise: nil)
            }
        }
    }

    func recordPhases(_ s: HomeSession) {
        RforkMetrics.placedRemote.increment()
        func ms(_ ns: UInt64) -> Double { Double(ns) / 1e6 }
        let t0 = s.request.forkStartedNanoseconds
        let ship = s.runningAt - s.sentAt
        let record = PlacementRecord(
            pid: s.pid, uid: s.uid, node: s.target,
            requestMs: t0 > 0 && s.started > t0 ? ms(s.started - t0) : 0,
            dumpMs: ms(s.dumpNanoseconds),
            prepareMs: ms(s.sentAt - s.started - min(s.dumpNanoseconds, s.sentAt - s.started)),
            transferMs: ms(ship - min(ship, s.restoreNanoseconds)),
            restoreMs: ms(s.restoreNanoseconds),
            totalMs: t0 > 0 ? ms(s.runningAt - t0) : ms(s.runningAt - s.started),
            imageBytes: s.imageBytes, postCopy: s.postCopy)
        sessions.recent.append(record)
        if sessions.recent.count > SessionTable.recentLimit {
            sessions.recent.removeFirst(sessions.recent.count - SessionTable.recentLimit)
        }
    }

    /// `named`: a node asked for by name counts while its link is closed for want of use even if its
    /// load is not known here (placing on it connects it; a dead one is given up as any link).
    func peerViews(named: String? = nil) -> [PeerView] {
        let now = Posix.monotonicNanoseconds()
        return net.peers.map { peer in
            // A node whose load is not known (or too old to trust) comes last for least-loaded.
            let load = balance.peerLoads[peer.name].flatMap { $0.isFresh(now: now, maxAge: loadMaxAge) ? $0.load : nil }
            // A link closed for want of use counts while the peer's load is fresh (it told this node lately).
            let link = net.links[peer.name]
            let reachable =
                link.map { $0.isUp || (($0.dormant || $0.waking) && (load != nil || peer.name == named)) } ?? false
            return PeerView(
                name: peer.name, isUp: reachable, runQueue: load?.runQueue ?? .infinity,
                cpus: load?.cpus ?? 1, placedSinceReport: balance.placedSinceReport[peer.name] ?? 0)
        }
    }

    func receivedLoad(_ wire: Rfork_Wire_V1_Load, from peer: String) {
        let load = NodeLoad(
            runQueue: wire.runQueue, cpus: Int(wire.cpus), cpuPressure: wire.cpuPressure,
            memoryUsed: wire.memoryUsed, memoryLimit: wire.memoryLimit, hosted: Int(wire.hostedChildren))
        balance.peerLoads[peer] = PeerLoad(load: load, at: Posix.monotonicNanoseconds())
        balance.placedSinceReport[peer] = nil
    }

    func loadEnvelope() -> Envelope {
        let now = probe.load(hosted: sessions.hosted.count)
        var load = Rfork_Wire_V1_Load()
        load.runQueue = now.runQueue
        load.cpus = UInt32(now.cpus)
        load.hostedChildren = UInt32(now.hosted)
        load.cpuPressure = now.cpuPressure
        load.memoryUsed = now.memoryUsed
        load.memoryLimit = now.memoryLimit
        var envelope = Envelope()
        envelope.load = load
        return envelope
    }

    /// Tells every peer, on both links to it, this node's load: each second, which is also what shows a
    /// link alive, and at once when the run queue moved by a task or more (at most every 200 ms).
    func sendLoad(now: UInt64, force: Bool) {
        let runQueue = probe.average.value
        guard
            force
                || (abs(runQueue - balance.lastLoadSent.runQueue) >= 1 && now - balance.lastLoadSent.at >= 200_000_000)
        else { return }
        balance.lastLoadSent = (now, runQueue)
        if force { gossipRound(now: now) }
        let envelope = loadEnvelope()
        for link in net.inbound.values where link.peerName != nil { link.wire.writeAndFlush(envelope, promise: nil) }
        for link in net.links.values where link.isUp { link.wire.writeAndFlush(envelope, promise: nil) }
    }

    /// Each second: the peers picked to hear this node's load this round (all of them, up to the fanout)
    /// have their links kept, or connected again if they were closed for want of use.
    func gossipRound(now: UInt64) {
        guard !shuttingDown else { return }
        for name in balance.gossip.pick(from: net.peers.map(\.name)) {
            guard let link = net.links[name] else { continue }
            use(link, now: now, needed: false)
        }
    }

    /// Runs every 20 ms: notices stand-ins stopped by SIGSTOP (which they cannot catch), reaps helpers,
    /// and every second tells peers this node's load.
    func tick(count: Int) {
        for session in sessions.home.values where session.state == .running {
            let stopped = Posix.processState(session.localPID) == "T"
            if stopped && !session.standInStopped && !session.remoteStopped {
                session.expectRemoteStop = true
                var signal = Rfork_Wire_V1_Signal()
                signal.session = session.id
                signal.signo = UInt32(SIGSTOP)
                var envelope = Envelope()
                envelope.signal = signal
                wire(to: session.target)?.writeAndFlush(envelope, promise: nil)
            }
            session.standInStopped = stopped
        }
        var reaped: [pid_t] = []
        sessions.helperPIDs = sessions.helperPIDs.filter { pid in
            guard Posix.poll(pid) != nil else { return true }
            reaped.append(pid)
            return false
        }
        // A failed post-copy's lazy-pages daemon dies only after the child it served (see endHosted).
        for pid in reaped {
            guard let lazy = sessions.lazyKillAfter.removeValue(forKey: pid) else { continue }
            logger.debug("post-copy: rfork-nsinit \(pid) is gone; ending criu lazy-pages \(lazy)")
            Posix.kill(lazy, SIGKILL)
        }
        if count % 5 == 0 {
            let now = Posix.monotonicNanoseconds()
            let second = count % 50 == 0
            probe.sample(now: now, slow: second)
            sendLoad(now: now, force: second)
            maintainLinks(now: now, pulse: count % 10 == 0)
            if second {
                followMembership(now: now)
                RforkMetrics.homeSessions.record(sessions.home.count)
                RforkMetrics.hostedSessions.record(sessions.hosted.count)
                let peers = net.links.values.filter { $0.name != config.node }
                // A peer whose link was closed for want of use is not down.
                let down = peers.filter { !$0.isUp && !$0.dormant && !$0.waking }.count
                RforkMetrics.peersUp.record(peers.count - down)
                RforkMetrics.peersDown.record(down)
                RforkMetrics.runQueue.record(probe.average.value)
            }
            let every = max(1, Int((config.balance ?? .init()).interval * 10))  // rounds of 100 ms
            if (count / 5) % every == 0 && !shuttingDown {
                balanceRound(now: now)
            }
        }
    }
}

/// What a peer last said of its load, and when (monotonic ns).
struct PeerLoad {
    var load: NodeLoad
    var at: UInt64
    /// Load older than this is not trusted (three reports missed).
    static let maxAgeNanoseconds: UInt64 = 3_000_000_000
    func isFresh(now: UInt64, maxAge: UInt64 = maxAgeNanoseconds) -> Bool { now < at || now - at <= maxAge }
}

/// Home, post-copy: the relay of a dump's page-server socket, and that socket (valid while the channel is open).
struct PageRelay {
    let channel: Channel
    let socket: Int32
}

extension Envelope {
    /// Either way: forget `session`; a target kills the remote child if it still runs.
    static func abort(session: UInt64, reason: String) -> Envelope {
        var abort = Rfork_Wire_V1_Abort()
        abort.session = session
        abort.reason = reason
        var envelope = Envelope()
        envelope.abort = abort
        return envelope
    }

    /// The end of a post-copy page stream: from the home, `error` says the memory source failed; from the
    /// target (no error), its lazy-pages is gone.
    static func pageStreamEnd(session: UInt64, error: String? = nil) -> Envelope {
        var end = Rfork_Wire_V1_PageStreamEnd()
        end.session = session
        end.ok = error == nil
        end.error = error ?? ""
        var envelope = Envelope()
        envelope.pageStreamEnd = end
        return envelope
    }

    /// The peer envelope for a relayed local DATA, END-OF-FILE or ACK frame of `session`; nil for other frames.
    init?(relaying frame: LocalFrame, session: UInt64) {
        guard let channel = frame.word else { return nil }
        self.init()
        switch frame.type {
        case .data:
            var data = Rfork_Wire_V1_Data()
            data.session = session
            data.channel = channel
            data.data = Data(frame.afterWord.readableBytesView)
            self.data = data
        case .endOfFile:
            var eof = Rfork_Wire_V1_EndOfFile()
            eof.session = session
            eof.channel = channel
            self.endOfFile = eof
        case .ack:
            guard let bytes = frame.secondWord else { return nil }
            var ack = Rfork_Wire_V1_Ack()
            ack.session = session
            ack.channel = channel
            ack.bytes = UInt32(bitPattern: bytes)
            self.ack = ack
        default:
            return nil
        }
    }
}

/// One child whose parent runs on this node and which runs (or is being moved) elsewhere.
final class HomeSession: @unchecked Sendable {  // confined to Node.loop
    enum State { case dumping, restoring, running }
    let id: UInt64
    /// The child's PID in its own PID namespace (what CRIU and the target see).
    let pid: Int32
    /// The same process as this daemon sees it (for /proc); differs from `pid` for a child forked inside a
    /// remote child this node hosts.
    let localPID: Int32
    let uid: UInt32
    let target: String
    let child: Channel
    let request: LocalForkRequest
    let started: UInt64
    var state: State = .dumping
    var ended = false
    var standInStopped = false
    var remoteStopped = false
    var expectRemoteStop = false  // a SIGSTOP was forwarded for a stopped stand-in; its STOPPED echo is not news
    var dumpNanoseconds: UInt64 = 0
    var restoreNanoseconds: UInt64 = 0
    var sentAt: UInt64 = 0
    var runningAt: UInt64 = 0
    var postCopy = false
    var imageBytes = 0
    var sharedRegions: [Rfork_Wire_V1_SharedRegion] = []  // shared memory the child maps (SharedRegions.swift)
    /// Lazy channels the stand-in reads ahead (it holds the only read end), and when each other one was
    /// last checked (`Node.checkSoleReader`).
    var eagerChannels: Set<UInt32> = []
    /// A part of a restarted job: its stand-in, restored paused, reads again once the part runs.
    var resumeStandIn = false
    var readersCheckedAt: [UInt32: UInt64] = [:]
    /// Moved with its descendants: the tree here is stopped until `releaseTree`.
    var treeStopped = false
    /// Where the process runs now: `target`, or the node it was moved on to from there.
    var runsOn: String

    init(
        id: UInt64, pid: Int32, localPID: Int32? = nil, uid: UInt32, target: String, child: Channel,
        request: LocalForkRequest, started: UInt64
    ) {
        self.id = id
        self.pid = pid
        self.localPID = localPID ?? pid
        self.runsOn = target
        self.uid = uid
        self.target = target
        self.child = child
        self.request = request
        self.started = started
    }
}

/// An outbound link to a peer (this node is the home of the children it carries).
final class PeerLink: @unchecked Sendable {  // confined to Node.loop
    let name: String
    /// Where the peer listens; etcd may say it moved (the link then reconnects there, and resumes if the
    /// same rforkd answers).
    var host: String
    var port: Int
    /// The link's end here: what is sent to the peer goes through it, whichever connection carries it.
    let wire: PeerPort
    /// A connection carries the link and the peer said hello on it.
    var isUp = false
    var connecting = false
    /// The peer's rforkd as it said on the link (a different one means the link cannot resume).
    var peerIncarnation: UInt64?
    var lastError: String?
    /// No longer a peer (it left etcd): never connect again.
    var removed = false
    /// When the peer was last heard, and the last round trip: the link is judged by them.
    var liveness = LinkLiveness(role: .home, now: Posix.monotonicNanoseconds())
    /// Closed for want of use (links are made on demand): no connection, none tried, nothing lost; the
    /// next thing sent on it connects it again.
    var dormant = false
    /// When something was last sent on it (or it was picked to hear this node's load).
    var lastUsed = Posix.monotonicNanoseconds()
    /// This node proposed to close it (LinkClose), then; the peer has a second to agree.
    var closingSince: UInt64?
    /// Connecting again after it was dormant (sends wait for the connection meanwhile).
    var waking = false
    /// The connection closed by agreement, until it is inactive (its end starts no new connection).
    var retiredChannel: Channel?

    init(name: String, host: String, port: Int, loop: EventLoop) {
        self.name = name
        self.host = host
        self.port = port
        self.wire = PeerPort(loop: loop)
    }
}

/// An inbound link from a peer (this node hosts the children it carries).
final class InboundLink: @unchecked Sendable {  // confined to Node.loop
    /// The link's end here, whichever connection from the peer carries it.
    let wire: PeerPort
    var peerName: String?
    var peerIncarnation: UInt64 = 0
    /// When the peer was last heard, and the last round trip: the link is judged by them.
    var liveness = LinkLiveness(role: .host, now: Posix.monotonicNanoseconds())
    /// The peer closes this link for want of use, and this node agreed: its connection's end is no loss.
    var closeAgreedAt: UInt64?
    /// Agreed within the last 2 s (the peer closes at once once it hears; an older agreement was dropped).
    var closeAgreed: Bool {
        guard let at = closeAgreedAt else { return false }
        return Posix.monotonicNanoseconds() &- at < 2_000_000_000
    }
    init(loop: EventLoop) { self.wire = PeerPort(loop: loop) }
}

/// Sessions this node takes part in: as home (it sent a child or a moved process elsewhere) and as
/// target (it runs one for another node), with what serves them. Confined to `Node.loop`.
final class SessionTable: @unchecked Sendable {
    var home: [UInt64: HomeSession] = [:]
    var hosted: [String: HostedSession] = [:]  // "home/session"
    private(set) var nextID: UInt64 = 1
    /// Restores whose image holds ghost files (unlinked files CRIU recreates at their path for a moment,
    /// named after the image: two siblings' restores would collide) run one at a time: the one running,
    /// and those waiting.
    var ghostRestore: String?
    var ghostRestoresWaiting: [(HostedSession, Rfork_Wire_V1_ForkRequest)] = []
    var helperPIDs: [pid_t] = []  // rfork-nsinit processes not yet reaped
    var pageRelays: [UInt64: PageRelay] = [:]  // home: post-copy page-server relays, by session
    var lazyRelays: [String: Channel] = [:]  // target: post-copy relays to criu lazy-pages, by hosted key
    var lazyKillAfter: [pid_t: pid_t] = [:]  // target: criu lazy-pages to kill once this rfork-nsinit is reaped
    var recent: [PlacementRecord] = []  // the last remote forks from this node, newest last
    static let recentLimit = 256

    /// A new session number, unique on this node for its lifetime.
    func newID() -> UInt64 {
        defer { nextID += 1 }
        return nextID
    }
}

/// What the command line asked of this node that is still under way. Confined to `Node.loop`.
final class CommandTable: @unchecked Sendable {
    var migrations: [Int32: PendingMigration] = [:]  // `rfork migrate` requests under way, by PID
    var checkpoints: [Int32: PendingCheckpoint] = [:]  // `rfork checkpoint` requests under way, by PID
    var checkpointWaits: [Int32: UInt64] = [:]  // jobs to save once no fork of theirs is in flight: deadline
    var periodic: [Int32: Schedule] = [:]  // `rfork run --checkpoint-every`, by PID
    var drains: [UInt64: PendingDrain] = [:]  // `rfork migrate --all` requests under way
    private(set) var nextDrain: UInt64 = 1
    private(set) var nextMigrateRequest: UInt64 = 0  // numbers the moves passed on to other nodes
    var forwardedDrains: [UInt64: (command: Channel, node: String)] = [:]  // `rfork migrate --all` asked of peers

    func newDrainID() -> UInt64 {
        defer { nextDrain += 1 }
        return nextDrain
    }

    /// A new number for a request passed on to another node (a move, a part's cut, a drain): its answer
    /// counts only for the request it was asked.
    func newMigrateRequest() -> UInt64 {
        nextMigrateRequest += 1
        return nextMigrateRequest
    }
}
