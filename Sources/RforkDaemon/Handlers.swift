import CRforkSystem
import Foundation
import Glibc
import NIOCore
import NIOPosix
import NIOSSL
import RforkProtocol
import RforkSystem
import RforkWire

/// A local client: a forked child asking where to run (later its stand-in), or the CLI asking a query.
final class LocalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = LocalFrame
    let node: Node
    var session: UInt64?
    var sawFirst = false

    init(node: Node) { self.node = node }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if let session {
            node.handleStandInFrame(frame, session: session)
            return
        }
        guard !sawFirst else { return }
        sawFirst = true
        let creds = peerCredentials(context.channel)
        switch frame.type {
        case .forkRequest:
            do {
                let request = try LocalForkRequest(parsing: frame.text)
                let before = node.sessions.nextID
                node.handleForkRequest(
                    request, peerUID: creds?.uid, peerPID: creds?.pid,
                    pin: peerPIDFD(context.channel).map(ProcessPin.init),
                    from: context.channel)
                if node.sessions.nextID != before { session = before }
            } catch {
                node.logger.warning("malformed placement request: \(error)")
                node.reply(context.channel, .local, "malformed placement request: \(error)")
            }
        case .shmAttach:
            node.handleShmAttach(frame.text, peerUID: creds?.uid, peerPID: creds?.pid, from: context.channel)
        case .unixConnect:
            node.handleUnixConnect(frame.text, peerUID: creds?.uid, from: context.channel)
        case .migrate:
            node.handleMigrate(frame.text, peerUID: creds?.uid, from: context.channel)
        case .checkpoint:
            node.handleCheckpoint(frame.text, peerUID: creds?.uid, from: context.channel)
        case .schedule:
            node.handleSchedule(frame.text, peerUID: creds?.uid, peerPID: creds?.pid, from: context.channel)
        case .restart:
            // The command becomes the stand-in of the session that restores its job (once the checkpoint
            // has been read): its later frames belong to that session.
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            node.handleRestart(frame.text, peerUID: creds?.uid, peerPID: creds?.pid, from: context.channel) {
                handler.value.session = $0
            }
        case .query:
            let answer = node.answer(query: frame.text, uid: creds?.uid ?? UInt32.max)
            context.writeAndFlush(wrapOutboundOut(LocalFrame.text(.answer, answer)), promise: nil)
        default:
            node.logger.warning("unexpected first local frame \(frame.type); closing")
            context.close(promise: nil)
        }
    }

    typealias OutboundOut = LocalFrame

    func channelInactive(context: ChannelHandlerContext) {
        if let session { node.standInClosed(session: session) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        node.logger.warning("local client error: \(error)")
        context.close(promise: nil)
    }
}

/// The socket to one rfork-nsinit.
final class HelperHandler: ChannelInboundHandler {
    typealias InboundIn = LocalFrame
    let node: Node
    let key: String
    init(node: Node, key: String) {
        self.node = node
        self.key = key
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        node.handleHelperFrame(unwrapInboundIn(data), key: key)
    }
    func channelInactive(context: ChannelHandlerContext) {
        node.helperClosed(key: key)
        context.fireChannelInactive()
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        node.logger.warning("rfork-nsinit link error: \(error)")
        context.close(promise: nil)
    }
}

/// One TLS link to a peer. Outbound: this node is the home of the children it carries. Inbound: the target.
final class PeerHandler: ChannelInboundHandler {
    typealias InboundIn = Rfork_Wire_V1_Envelope
    typealias OutboundOut = Rfork_Wire_V1_Envelope
    enum Role {
        case outbound(PeerLink)
        case inbound(InboundLink)
    }
    let node: Node
    var role: Role
    var greeted = false

    init(node: Node, role: Role) {
        self.node = node
        self.role = role
    }

    func channelActive(context: ChannelHandlerContext) {
        // A connection that has not said hello (and had its TLS handshake) in 5 s is closed: the link
        // tries again rather than wait for TCP to give up.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: .seconds(5)) { [weak self] in
            if self?.greeted != true { channel.close(promise: nil) }
        }
        // The side that connected speaks first; the other answers once it knows which link this is.
        if case .outbound(let link) = role {
            let resume = link.peerIncarnation != nil
            context.writeAndFlush(
                wrapOutboundOut(
                    node.hello(
                        resume: resume, received: resume ? link.wire.received : 0,
                        peerIncarnation: link.peerIncarnation ?? 0)), promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let port: PeerPort
        switch role {
        case .outbound(let link):
            link.liveness.heard(now: Posix.monotonicNanoseconds())
            port = link.wire
        case .inbound(let link):
            link.liveness.heard(now: Posix.monotonicNanoseconds())
            port = link.wire
        }
        if !greeted {
            guard case .hello(let hello) = envelope.body else {
                node.logger.warning("peer \(remote(context)) spoke before saying hello; closing")
                return context.close(promise: nil)
            }
            guard hello.protocolVersion == PeerProtocol.version else {
                node.logger.warning(
                    "refused peer \(hello.node) at \(remote(context)): protocol version \(hello.protocolVersion), this node speaks \(PeerProtocol.version)"
                )
                return context.close(promise: nil)
            }
            greeted = true
            switch role {
            case .outbound(let link):
                guard hello.node == link.name else {
                    node.logger.warning(
                        "peer at \(link.host):\(link.port) says it is '\(hello.node)', expected '\(link.name)'")
                    return context.close(promise: nil)
                }
                node.outboundGreeted(link, hello, on: context.channel)
            case .inbound(let fresh):
                let link = node.inboundGreeted(fresh, hello, on: context.channel)
                role = .inbound(link)
                context.writeAndFlush(wrapOutboundOut(node.loadEnvelope()), promise: nil)
            }
            return
        }
        // Only the connection that carries the link now: a replaced one may still deliver a little.
        guard port.channel === context.channel else { return }
        if case .linkAck(let ack) = envelope.body {
            port.acknowledge(ack.received)
            switch role {
            case .outbound(let link):
                link.liveness.pulse(stamp: ack.stamp, echo: ack.echo, now: Posix.monotonicNanoseconds())
            case .inbound(let link):
                link.liveness.pulse(stamp: ack.stamp, echo: ack.echo, now: Posix.monotonicNanoseconds())
            }
            return
        }
        if case .linkClose(let close) = envelope.body {
            switch role {
            case .outbound(let link): if close.agreed { node.outboundCloseAgreed(link) }
            case .inbound(let link): if !close.agreed { node.inboundCloseProposed(link, on: context.channel) }
            }
            return
        }
        // Something for a session after this node agreed to close the link: the link stays.
        if case .inbound(let link) = role, PeerPort.isCounted(envelope) { link.closeAgreedAt = nil }
        if port.countReceived(envelope), let ack = port.linkAck() {
            context.writeAndFlush(wrapOutboundOut(ack), promise: nil)
        }
        switch role {
        case .outbound(let link): node.handleFromTarget(envelope, link: link)
        case .inbound(let link): node.handleFromHome(envelope, link: link)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch role {
        case .outbound(let link):
            node.outboundClosed(link, context.channel)
            if !node.shuttingDown { node.scheduleConnect(link, after: context.channel) }
        case .inbound(let link):
            node.inboundClosed(link, context.channel)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let who: String
        switch role {
        case .outbound(let link): who = "\(link.name) (\(link.host):\(link.port))"
        case .inbound(let link): who = link.peerName ?? remote(context)
        }
        if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl {
            node.logger.info("peer \(who): the connection ended without a TLS goodbye")
        } else if error is NIOSSLError || error is BoringSSLError {
            node.logger.warning("refused peer \(who): TLS authentication failed: \(error)")
        } else {
            node.logger.warning("peer \(who): \(error)")
        }
        context.close(promise: nil)
    }

    private func remote(_ context: ChannelHandlerContext) -> String {
        context.remoteAddress.map { "\($0)" } ?? "?"
    }
}

/// SO_PEERPIDFD (Linux 6.5): a pidfd for the process that connected, taken when it connected; unlike its
/// PID it can never name another process later.
func peerPIDFD(_ channel: Channel) -> Int32? {
    guard let provider = channel as? SocketOptionProvider else { return nil }
    let soPeerPIDFD: Int32 = 77  // not in this glibc's headers yet
    let future: EventLoopFuture<Int32> = provider.unsafeGetSocketOption(
        level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(soPeerPIDFD))
    var result: Int32?
    future.assumeIsolated().whenSuccess { result = $0 >= 0 ? $0 : nil }
    return result
}

/// An open pidfd, closed when the last holder lets go.
final class ProcessPin: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { Posix.close(fd) }
    /// Whether the process it was taken for still runs (so its PID is still its own).
    var isAlive: Bool { Posix.processAlive(pidfd: fd) }
}

struct PeerCredentials {
    var pid: Int32
    var uid: UInt32
}

/// SO_PEERCRED of a unix socket: who is really on the other end (PID as this daemon's namespace sees it).
func peerCredentials(_ channel: Channel) -> PeerCredentials? {
    guard let provider = channel as? SocketOptionProvider else { return nil }
    let future: EventLoopFuture<crfork_ucred> = provider.unsafeGetSocketOption(
        level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
    // On the channel's loop the option is read at once, so the future is already complete here.
    var result: PeerCredentials?
    future.assumeIsolated().whenSuccess { result = PeerCredentials(pid: $0.pid, uid: $0.uid) }
    return result
}

/// Post-copy: relays the bytes of one end of CRIU's page-server connection (the home's `criu dump
/// --lazy-pages` or the target's `criu lazy-pages`) to the peer as PageStream envelopes. Reading pauses
/// while more than `limit` bytes wait to be written to the peer.
final class PageRelayHandler: ChannelInboundHandler, @unchecked Sendable {  // confined to Node.loop
    typealias InboundIn = ByteBuffer
    let session: UInt64
    let peer: PeerPort
    let limit = 8 << 20
    var unsent = 0

    init(session: UInt64, peer: PeerPort) {
        self.session = session
        self.peer = peer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        var stream = Rfork_Wire_V1_PageStream()
        stream.session = session
        stream.data = Data(buffer.readableBytesView)
        var envelope = Envelope()
        envelope.pageStream = stream
        let count = buffer.readableBytes
        unsent += count
        let channel = context.channel
        if unsent > limit { channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        peer.writeAndFlush(envelope).whenComplete { _ in
            self.unsent -= count
            if self.unsent <= self.limit / 2 {
                channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
