import Glibc
import NIOCore
import NIOPosix
import NIOSSL
import RforkPlacement
import RforkProtocol
import RforkSystem
import RforkWire

/// Mutual TLS for peer links: every node presents a certificate signed by the cluster's CA and accepts
/// only peers that do the same.
struct PeerTLS {
    let server: NIOSSLContext
    let client: NIOSSLContext

    init(files: DaemonConfiguration.TLSFiles) throws {
        let ca = try NIOSSLCertificate.fromPEMFile(files.ca)
        let chain = try NIOSSLCertificate.fromPEMFile(files.certificate).map { NIOSSLCertificateSource.certificate($0) }
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem))
        var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
        server.trustRoots = .certificates(ca)
        server.certificateVerification = .noHostnameVerification  // requires and verifies the client's certificate
        server.minimumTLSVersion = .tlsv13
        // A connection given up (silent peer) closes at once instead of waiting 5 s for the peer's
        // close_notify: its link reconnects and resumes meanwhile.
        server.shutdownTimeout = .milliseconds(100)
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = chain
        client.privateKey = key
        client.trustRoots = .certificates(ca)
        client.certificateVerification = .noHostnameVerification
        client.minimumTLSVersion = .tlsv13
        client.shutdownTimeout = .milliseconds(100)
        self.server = try NIOSSLContext(configuration: server)
        self.client = try NIOSSLContext(configuration: client)
    }
}

extension Node {
    func connect(_ link: PeerLink, tls: NIOSSLContext) {
        guard !shuttingDown, !link.removed, !link.dormant, !link.connecting, link.wire.channel == nil else { return }
        link.connecting = true
        let future = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: Node.bulkReads)
            .connectTimeout(.seconds(2))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: tls, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(EnvelopeDecoder()), MessageToByteHandler(EnvelopeEncoder()),
                        PeerHandler(node: self, role: .outbound(link)),
                    ])
                }
            }
            .connect(host: link.host, port: link.port)
        future.whenFailure { error in
            link.connecting = false
            let text = "\(error)"
            if link.lastError != text {
                self.logger.info("cannot reach \(link.name) at \(link.host):\(link.port): \(text); retrying")
                link.lastError = text
            }
            // Nothing listens there: its rforkd is gone, and with it what it held of the links; waiting
            // for them to resume would only delay what their sessions' ends must hear.
            if Self.refused(error) { self.peerGone(link.name, why: "rforkd on \(link.name) is not running") }
            self.scheduleConnect(link)
        }
    }

    static func refused(_ error: Error) -> Bool {
        if let e = error as? NIOConnectionError {
            return e.connectionErrors.contains { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }
        }
        return (error as? IOError)?.errnoCode == ECONNREFUSED
    }

    func scheduleConnect(_ link: PeerLink) {
        guard !shuttingDown, let tls = net.clientTLS else { return }
        loop.scheduleTask(in: .milliseconds(500)) { self.connect(link, tls: tls) }
    }

    /// A connection of `link` ended: try again, unless another one carries the link already.
    /// At once: a peer whose rforkd died refuses it, and its sessions hear so in milliseconds.
    func scheduleConnect(_ link: PeerLink, after channel: Channel) {
        if let retired = link.retiredChannel, retired === channel {
            // Closed by agreement: a connection being made meanwhile is the link's, and stays so.
            link.retiredChannel = nil
            return
        }
        link.connecting = false
        guard link.wire.channel == nil, !shuttingDown, let tls = net.clientTLS else { return }
        loop.scheduleTask(in: .milliseconds(10)) { self.connect(link, tls: tls) }
    }
}

/// This node's end of one logical link to a peer (the connection it opened, or the one the peer opened).
/// Envelopes sent through it are counted and kept until the peer says it has them, so that when the
/// connection breaks (a reset, a silent peer) and a new one is made within `peerTimeoutSeconds`, both
/// ends say how many they received and send the rest again: the sessions on the link go on, with no
/// envelope lost, repeated or reordered. Heartbeats (`Load`) and the link's own messages (`Hello`,
/// `LinkAck`) are not counted: they belong to one connection.
///
/// What waits here is bounded by the senders' own flow control (relayed descriptors keep a 4 MiB window
/// each, image streams 8 chunks, page streams 8 MiB), and acknowledged every 100 ms or 8 MiB.
final class PeerPort: @unchecked Sendable {  // confined to loop
    let loop: EventLoop
    private(set) var channel: Channel?
    /// What was sent and not yet acknowledged, with the promise of a writer still waiting for its write.
    private var replay = ReplayBuffer<(envelope: Envelope, promise: EventLoopPromise<Void>?)>()
    private var counter = ReceiveCounter()
    /// Bumped when the link starts anew (given up, or rested): envelopes are numbered from 0 again, so a
    /// write still completing on a connection of before must not settle the new envelope of its number.
    private var generation: UInt64 = 0
    /// When the connection ended (monotonic ns), while no new one carries the link.
    var suspendedSince: UInt64?
    /// How many times a new connection took the link over.
    private(set) var resumptions = 0
    /// Given up (until a new connection starts a new link): counted writes are dropped, their promises fail.
    private(set) var givenUp = false

    init(loop: EventLoop) { self.loop = loop }

    var received: UInt64 { counter.received }
    var replayCount: Int { replay.count }
    var replayBytes: Int { replay.bytes }

    /// Envelopes that are part of the link's stream (sent again after a break).
    static func isCounted(_ envelope: Envelope) -> Bool {
        switch envelope.body {
        case .hello, .load, .linkAck, .linkClose, .none: return false
        default: return true
        }
    }

    /// Sends an envelope; the future succeeds once it is written to a connection (after a break, to the
    /// next one), and fails only if the link is given up.
    @discardableResult
    func writeAndFlush(_ envelope: Envelope) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        writeAndFlush(envelope, promise: promise)
        return promise.futureResult
    }

    func writeAndFlush(_ envelope: Envelope, promise: EventLoopPromise<Void>?) {
        guard loop.inEventLoop else {
            loop.execute { self.writeAndFlush(envelope, promise: promise) }
            return
        }
        guard Self.isCounted(envelope) else {
            // A heartbeat or link message: this connection only.
            if let channel { channel.writeAndFlush(envelope, promise: promise) } else { promise?.succeed(()) }
            return
        }
        guard !givenUp else {
            promise?.fail(LinkGivenUp())
            return
        }
        if case .data(let d) = envelope.body { RforkMetrics.relayedOut.increment(by: d.data.count) }
        let number = replay.append((envelope, promise), bytes: Self.size(envelope))
        if let channel { write(number, on: channel) }
    }

    private func write(_ number: UInt64, on channel: Channel) {
        guard let entry = replay[number] else { return }
        let generation = self.generation
        channel.writeAndFlush(entry.envelope).whenSuccess { [self] in
            // Written; kept until acknowledged, but its writer may go on. (A failed write waits for
            // the next connection.)
            guard self.generation == generation, let promise = replay[number]?.promise else { return }
            replay[number]?.promise = nil
            promise.succeed(())
        }
    }

    /// The peer has the first `count` counted envelopes (their writers, if still waiting, may go on).
    func acknowledge(_ count: UInt64) {
        for entry in replay.acknowledge(count) { entry.promise?.succeed(()) }
    }

    /// One counted envelope arrived; true when it is time to tell the peer how many (8 MiB since).
    func countReceived(_ envelope: Envelope) -> Bool {
        guard Self.isCounted(envelope) else { return false }
        if case .data(let d) = envelope.body { RforkMetrics.relayedIn.increment(by: d.data.count) }
        return counter.count(bytes: Self.size(envelope))
    }

    /// A `LinkAck` telling the peer what arrived, or nil when it knows.
    func linkAck() -> Envelope? {
        guard channel != nil, let received = counter.due() else { return nil }
        return Self.linkAck(received: received)
    }

    /// The link's pulse (see `LinkLiveness`): what arrived, this end's clock and the peer's newest stamp;
    /// nil without a connection.
    func pulse(stamp: UInt64, echo: UInt64) -> Envelope? {
        guard channel != nil else { return nil }
        return Self.linkAck(received: received, stamp: stamp, echo: echo)
    }

    static func linkAck(received: UInt64, stamp: UInt64 = 0, echo: UInt64 = 0) -> Envelope {
        var ack = Rfork_Wire_V1_LinkAck()
        ack.received = received
        ack.stamp = stamp
        ack.echo = echo
        var envelope = Envelope()
        envelope.linkAck = ack
        return envelope
    }

    func canAttach(peerReceived: UInt64) -> Bool { replay.canResume(peerReceived: peerReceived) }

    /// A new connection carries the link; the peer received `peerReceived` of ours, so the rest is sent
    /// again, in order, before anything new. False (nothing changed) if that count cannot be right.
    func attach(_ channel: Channel, peerReceived: UInt64, resumed: Bool) -> Bool {
        guard canAttach(peerReceived: peerReceived) else { return false }
        acknowledge(peerReceived)
        self.channel = channel
        suspendedSince = nil
        givenUp = false
        counter.toldByHello()
        if resumed {
            resumptions += 1
            RforkMetrics.resumptions.increment()
        }
        if let numbers = replay.keptNumbers {
            for number in numbers { write(number, on: channel) }
        }
        return true
    }

    /// The connection is gone (`channel` is it): the link waits for a new one.
    func detach(_ gone: Channel, at now: UInt64) {
        guard channel === gone else { return }
        channel = nil
        suspendedSince = now
    }

    /// The link was closed by agreement, with nothing sent and unacknowledged: it starts anew when used
    /// (writes wait for the next connection meanwhile).
    func rest() {
        generation &+= 1
        channel = nil
        suspendedSince = nil
        givenUp = false
        for entry in replay.reset() { entry.promise?.fail(LinkGivenUp()) }
        counter = ReceiveCounter()
    }

    /// The link is given up: nothing more will be sent; waiting writers hear so; counts start again.
    func giveUp() {
        generation &+= 1
        channel = nil
        suspendedSince = nil
        givenUp = true
        for entry in replay.reset() { entry.promise?.fail(LinkGivenUp()) }
        counter = ReceiveCounter()
    }

    static func size(_ envelope: Envelope) -> Int {
        switch envelope.body {
        case .data(let d): return d.data.count + 32
        case .imageChunk(let c): return c.data.count + 64
        case .pageStream(let p): return p.data.count + 32
        case .forkRequest(let r): return r.images.reduce(256) { $0 + $1.data.count }
        default: return 64
        }
    }
}

struct LinkGivenUp: Error, CustomStringConvertible {
    var description: String { "the link to the peer was given up" }
}

extension Node {
    func hello(resume: Bool, received: UInt64, peerIncarnation: UInt64) -> Envelope {
        var hello = Rfork_Wire_V1_Hello()
        hello.protocolVersion = PeerProtocol.version
        hello.node = config.node
        hello.incarnation = incarnation
        hello.resume = resume
        hello.received = received
        hello.peerIncarnation = peerIncarnation
        var envelope = Envelope()
        envelope.hello = hello
        return envelope
    }

    /// The peer answered this node's connection. If both daemons are those that had the link, it goes on
    /// where it stopped; else what was on the old one is lost, and a new link starts.
    func outboundGreeted(_ link: PeerLink, _ hello: Rfork_Wire_V1_Hello, on channel: Channel) {
        guard !link.removed else {
            channel.close(promise: nil)  // it left etcd while this connection was being made
            return
        }
        let known = link.peerIncarnation
        let resumed = known != nil && hello.resume && hello.incarnation == known
        if known != nil && !resumed {
            giveUpOutbound(link, why: "\(link.name) restarted (a new rforkd answered)")
        }
        link.peerIncarnation = hello.incarnation
        if !link.wire.attach(channel, peerReceived: resumed ? hello.received : 0, resumed: resumed) {
            // The peer resumed with counts this end cannot match: both start anew on the next connection
            // (this end says resume=false then, having forgotten the peer).
            giveUpOutbound(link, why: "\(link.name) could not resume the link (it received \(hello.received))")
            channel.close(promise: nil)
            return
        }
        link.isUp = true
        link.waking = false
        link.connecting = false
        link.lastError = nil
        link.liveness.started(now: Posix.monotonicNanoseconds())
        logger.info(
            resumed
                ? "link to \(link.name) resumed (\(link.wire.replayCount) envelopes sent again)"
                : "link to \(link.name) is up")
    }

    /// A peer connected to this node: a new link, or the one it had, which the new connection takes over
    /// (the old connection, if this node still thinks it open, is closed). Returns the link to use.
    func inboundGreeted(_ fresh: InboundLink, _ hello: Rfork_Wire_V1_Hello, on channel: Channel) -> InboundLink {
        if let old = net.inboundByPeer[hello.node], old !== fresh, old.closeAgreed, !hello.resume {
            forgetInbound(old)  // its close was agreed; the new connection starts a new link
        }
        if let old = net.inboundByPeer[hello.node], old !== fresh {
            if hello.resume && old.peerIncarnation == hello.incarnation && hello.peerIncarnation == incarnation
                && old.wire.canAttach(peerReceived: hello.received)
            {
                let stale = old.wire.channel
                if let stale { old.wire.detach(stale, at: Posix.monotonicNanoseconds()) }
                // Hello first: what is sent again follows it.
                channel.writeAndFlush(
                    self.hello(resume: true, received: old.wire.received, peerIncarnation: hello.incarnation),
                    promise: nil)
                _ = old.wire.attach(channel, peerReceived: hello.received, resumed: true)
                stale?.close(promise: nil)
                net.inbound[ObjectIdentifier(fresh)] = nil
                old.liveness.started(now: Posix.monotonicNanoseconds())
                logger.info("link from \(hello.node) resumed (\(old.wire.replayCount) envelopes sent again)")
                return old
            }
            giveUpInbound(old, why: "\(hello.node) started a new link")
        }
        fresh.peerName = hello.node
        fresh.peerIncarnation = hello.incarnation
        net.inboundByPeer[hello.node] = fresh
        _ = fresh.wire.attach(channel, peerReceived: 0, resumed: false)
        channel.writeAndFlush(
            self.hello(resume: false, received: 0, peerIncarnation: hello.incarnation), promise: nil)
        return fresh
    }

    /// This node's connection to a peer ended: the link waits up to `peerTimeoutSeconds` for a new one.
    func outboundClosed(_ link: PeerLink, _ channel: Channel) {
        guard link.wire.channel === channel else { return }
        link.wire.detach(channel, at: Posix.monotonicNanoseconds())
        link.isUp = false
        logger.warning(
            "connection to \(link.name) lost; its sessions wait up to \(config.resolvedPeerTimeoutSeconds) s for the link to resume"
        )
    }

    func inboundClosed(_ link: InboundLink, _ channel: Channel) {
        guard link.peerName != nil else {
            net.inbound[ObjectIdentifier(link)] = nil  // it never said hello
            return
        }
        if link.closeAgreed, link.wire.channel === channel {
            forgetInbound(link)  // closed by agreement: nothing was on it
            return
        }
        guard link.wire.channel === channel else { return }
        link.wire.detach(channel, at: min(Posix.monotonicNanoseconds(), link.liveness.lastHeard))
    }

    /// The link this node opened to a peer is given up: its sessions are lost (children there are
    /// reported killed), and a later connection starts a new link.
    func giveUpOutbound(_ link: PeerLink, why: String) {
        logger.warning("link to \(link.name) given up: \(why)")
        RforkMetrics.declaredDead.increment()
        let channel = link.wire.channel
        link.isUp = false
        link.waking = false
        link.closingSince = nil
        link.wire.giveUp()
        link.peerIncarnation = nil
        linkLost(link)
        sharedMemoryNodeLost(link.name)
        unixStreamsNodeLost(link.name)
        channel?.close(promise: nil)
    }

    /// The link a peer opened is given up: the children this node runs for it are ended.
    func giveUpInbound(_ link: InboundLink, why: String) {
        logger.warning("link from \(link.peerName ?? "a peer") given up: \(why)")
        RforkMetrics.declaredDead.increment()
        let channel = link.wire.channel
        link.wire.giveUp()
        if let name = link.peerName, net.inboundByPeer[name] === link { net.inboundByPeer[name] = nil }
        inboundLost(link)
        if let name = link.peerName {
            sharedMemoryNodeLost(name)
            unixStreamsNodeLost(name)
        }
        channel?.close(promise: nil)
    }

    /// The peer's rforkd is gone (its port refuses connections): links with it waiting to resume are given up.
    func peerGone(_ name: String, why: String) {
        if let link = net.links[name], link.wire.suspendedSince != nil { giveUpOutbound(link, why: why) }
        if let link = net.inboundByPeer[name], link.wire.suspendedSince != nil { giveUpInbound(link, why: why) }
    }

    /// Every 100 ms: tells peers what arrived (and, with `pulse`, every 200 ms, stamps the link and
    /// echoes the peer's stamp, on every connection), closes connections silent for half of
    /// `peerTimeoutSeconds` (a new one may resume the link) and gives up links whose peer is lost.
    func maintainLinks(now: UInt64, pulse: Bool = false) {
        func acknowledge(_ wire: PeerPort, echo: UInt64) {
            if let ack = pulse ? wire.pulse(stamp: now, echo: echo) : wire.linkAck() {
                wire.channel?.writeAndFlush(ack, promise: nil)
            }
        }
        for link in net.links.values { acknowledge(link.wire, echo: link.liveness.peerStamp) }
        closeIdleLinks(now: now)
        for link in net.inbound.values where link.peerName != nil {
            acknowledge(link.wire, echo: link.liveness.peerStamp)
        }
        // Checked every 100 ms, by the rule `LinkLiveness` states: the host of a peer's children ends them
        // before their home reports them, whichever way a link is cut.
        let rule = LinkLiveness.Configuration(peerTimeout: UInt64(config.resolvedPeerTimeoutSeconds) * 1_000_000_000)
        for link in net.links.values {
            let verdict = link.liveness.check(
                now: now, connected: link.wire.channel != nil, suspendedSince: link.wire.suspendedSince, rule)
            if let from = verdict.reconnectFrom, let channel = link.wire.channel {
                logger.warning("no word from \(link.name) for \(config.resolvedPeerTimeoutSeconds / 2) s: reconnecting")
                link.wire.detach(channel, at: from)
                link.isUp = false
                channel.close(promise: nil)
            }
            if verdict.giveUp {
                giveUpOutbound(
                    link,
                    why: "no word from \(link.name) for \(config.resolvedPeerTimeoutSeconds) s: it is declared dead")
            }
        }
        for link in Array(net.inbound.values) where link.peerName != nil {
            let verdict = link.liveness.check(
                now: now, connected: link.wire.channel != nil, suspendedSince: link.wire.suspendedSince, rule)
            if let from = verdict.reconnectFrom, let channel = link.wire.channel {
                link.wire.detach(channel, at: from)
                channel.close(promise: nil)
            }
            if verdict.giveUp {
                giveUpInbound(
                    link,
                    why:
                        "no round trip with \(link.peerName ?? "it") for \(config.resolvedPeerTimeoutSeconds) s: it is declared dead"
                )
            }
        }
    }
}

// MARK: links on demand

extension Node {
    /// The link to send to `name` on now, or nil (no such peer, or its connection is lost and waits to
    /// resume). A link closed for want of use connects again: what is sent meanwhile waits for the
    /// connection, and if none comes within peerTimeout the link is given up like any other.
    func usableLink(_ name: String) -> PeerLink? {
        guard let link = net.links[name] else { return nil }
        use(link, now: Posix.monotonicNanoseconds(), needed: true)
        return link.isUp || link.waking ? link : nil
    }

    /// The end of the link to `name` to write on: what is written waits there while the link connects or
    /// resumes, as always; a link closed for want of use connects again.
    func wire(to name: String) -> PeerPort? {
        guard let link = net.links[name] else { return nil }
        use(link, now: Posix.monotonicNanoseconds(), needed: true)
        return link.wire
    }

    /// The link is used now: it is not idle (a proposal to close it is dropped), and it connects again
    /// if it was closed for want of use (`needed`: see `wake`).
    func use(_ link: PeerLink, now: UInt64, needed: Bool) {
        link.lastUsed = now
        link.closingSince = nil
        wake(link, now: now, needed: needed)
    }

    /// Connects a link closed for want of use (or not yet opened). `needed`: something is sent on it, so
    /// if no connection comes within peerTimeout (or the peer refuses it), the link is given up and what
    /// waited hears so; a link woken only to tell the peer this node's load just keeps trying.
    func wake(_ link: PeerLink, now: UInt64, needed: Bool) {
        if link.dormant {
            link.dormant = false
            link.waking = true
            link.liveness.started(now: now)
            if let tls = net.clientTLS { connect(link, tls: tls) }
        }
        if needed && link.waking && link.wire.suspendedSince == nil { link.wire.suspendedSince = now }
    }

    /// Whether anything of this node's still needs the link to `name`: a session, a request passed on and
    /// not answered, a relayed unix connection, memory shared with a process there.
    func linkInUse(_ name: String) -> Bool {
        if sessions.home.values.contains(where: { $0.target == name }) { return true }
        if commands.migrations.values.contains(where: { $0.machine.state == .passedOn(node: name) }) { return true }
        if commands.checkpoints.values.contains(where: { $0.passedOn?.node == name }) { return true }
        if commands.forwardedDrains.values.contains(where: { $0.node == name }) { return true }
        if unix.streams.values.contains(where: { $0.peer == name }) { return true }
        let prefix = name + "/"
        return shared.regions.values.contains { region in
            region.manager.hasPrefix(prefix) || region.participants.contains { $0.hasPrefix(prefix) }
        }
    }

    /// Every 100 ms (from `maintainLinks`): proposes to close links that carried nothing for `idleSeconds`;
    /// a proposal the peer did not agree to within a second is dropped (the link stays).
    func closeIdleLinks(now: UInt64) {
        let idle = UInt64(config.resolvedLinks.resolvedIdleSeconds) * 1_000_000_000
        for link in net.links.values where link.isUp && link.name != config.node {
            if let since = link.closingSince {
                if now - min(now, since) > 1_000_000_000 {
                    link.closingSince = nil
                    link.lastUsed = now
                }
                continue
            }
            guard now - min(now, link.lastUsed) > idle, link.wire.replayCount == 0, !linkInUse(link.name),
                let channel = link.wire.channel
            else { continue }
            link.closingSince = now
            channel.writeAndFlush(Envelope.linkClose(agreed: false), promise: nil)
        }
    }

    /// The peer agreed to close a link this node opened: if it is still unused, it closes (quietly: no
    /// session was on it) and opens again when needed.
    func outboundCloseAgreed(_ link: PeerLink) {
        guard link.closingSince != nil, link.isUp, link.wire.replayCount == 0, !linkInUse(link.name) else { return }
        let channel = link.wire.channel
        link.isUp = false
        link.waking = false
        link.closingSince = nil
        link.dormant = true
        link.peerIncarnation = nil
        link.wire.rest()
        link.retiredChannel = channel
        channel?.close(promise: nil)
        RforkMetrics.linksClosedIdle.increment()
        logger.info(
            "link to \(link.name) closed: unused for \(config.resolvedLinks.resolvedIdleSeconds) s (it opens again when needed)"
        )
    }

    /// A peer proposes to close the link it opened to this node: agreed if nothing of this node's is on it
    /// (no child it runs for the peer, nothing unacknowledged).
    func inboundCloseProposed(_ link: InboundLink, on channel: Channel) {
        guard link.wire.channel === channel, link.wire.replayCount == 0,
            !sessions.hosted.values.contains(where: { $0.link === link && !$0.ended })
        else { return }
        link.closeAgreedAt = Posix.monotonicNanoseconds()
        channel.writeAndFlush(Envelope.linkClose(agreed: true), promise: nil)
    }

    /// Drops a link a peer opened, closed by agreement: nothing is lost with it.
    func forgetInbound(_ link: InboundLink) {
        net.inbound[ObjectIdentifier(link)] = nil
        if let name = link.peerName, net.inboundByPeer[name] === link { net.inboundByPeer[name] = nil }
        link.wire.rest()
    }

    /// How old a peer's load may be and still count: three rounds of loads, as many as it takes every
    /// peer to be told once with the configured fanout.
    var loadMaxAge: UInt64 {
        PeerLoad.maxAgeNanoseconds
            * UInt64(Gossip.rounds(peers: net.peers.count, fanout: config.resolvedLinks.resolvedFanout))
    }
}

extension Envelope {
    static func linkClose(agreed: Bool) -> Envelope {
        var close = Rfork_Wire_V1_LinkClose()
        close.agreed = agreed
        var envelope = Envelope()
        envelope.linkClose = close
        return envelope
    }
}

/// The links between this node and its peers, and who the peers are. Confined to `Node.loop`.
final class PeerTable: @unchecked Sendable {
    var links: [String: PeerLink] = [:]  // outbound links, by peer name
    var inbound: [ObjectIdentifier: InboundLink] = [:]
    var inboundByPeer: [String: InboundLink] = [:]  // the link each peer opened to this node
    /// The peers: those of the configuration, and those etcd lists (when configured).
    var peers: [DaemonConfiguration.Peer]
    var membership = MembershipState()
    var clientTLS: NIOSSLContext?

    init(peers: [DaemonConfiguration.Peer]) { self.peers = peers }
}
