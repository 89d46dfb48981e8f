import Foundation
import Glibc
import NIOCore
import NIOPosix
import RforkSystem
import RforkWire

/// AF_UNIX socket paths across nodes (flow control: at most `unixWindow` bytes a stream's other end has
/// not written into its socket are in flight; reading this end pauses meanwhile): a process of a job connects to a path its node lacks (librfork's
/// `connect()`, after ENOENT or ECONNREFUSED, asks on the program's own socket: `UNIX_CONNECT`), and rforkd
/// asks every peer for it (`UnixStream` OPEN). A peer with a socket at that path, owned by the same user,
/// connects to it and says OPENED; the first to do so carries the stream, the program's socket becomes a
/// raw relay, and bytes travel as DATA until either side closes (CLOSE). No peer within
/// `unixConnectTimeout`: the program's connect() fails as it first did. A path no peer had is not asked
/// for again for `unixMissTime`, so a program retrying a socket nobody serves does not flood the peers.
final class UnixStreamState: @unchecked Sendable {  // confined to Node.loop
    let key: String
    let origin: String
    let id: UInt64
    /// The program's socket (on the connecting node) or the connection to the server (on the other).
    var channel: Channel?
    /// What writes to it, once it relays.
    var relay: UnixRelayHandler?
    /// The node at the other end, once known.
    var peer: String?
    /// Connecting node: peers asked that have not answered.
    var waiting: Set<String> = []
    var timeout: Scheduled<Void>?
    let path: String
    /// Server side: what the server said before OPENED went out (it goes after it).
    var early: [ByteBuffer] = []
    /// Flow control: bytes sent to the other node it has not acknowledged; bytes written here since
    /// the last acknowledgement.
    var unacked = 0
    var written = 0

    init(key: String, origin: String, id: UInt64, path: String) {
        self.key = key
        self.origin = origin
        self.id = id
        self.path = path
    }
}

/// Relays a connected stream's bytes to the node at the other end, and writes the other end's. First in
/// its pipeline: on the program's socket the frame handlers behind it no longer see anything.
final class UnixRelayHandler: ChannelDuplexHandler, @unchecked Sendable {  // confined to Node.loop
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let node: Node
    let key: String
    private var context: ChannelHandlerContext?

    init(node: Node, key: String) {
        self.node = node
        self.key = key
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Bytes from the other node, to this end; `written` runs once they are in the socket (or failed).
    func send(_ buffer: ByteBuffer, written: @escaping @Sendable () -> Void) {
        guard let context else { return written() }
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in written() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        node.unixStreamRead(key, unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        node.unixStreamClosed(key)
        context.fireChannelInactive()
    }

    /// This end half-closed (end of file, with half-closure allowed): the other end's socket is shut
    /// down for writing once what came before has been written.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            node.unixStreamInputClosed(key)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The other end will send nothing more: shut down writing here, after what is queued.
    func shutdownOutput() {
        guard let context else { return }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

extension Node {
    static let unixConnectTimeout: TimeAmount = .seconds(5)
    static let unixWindow = 4 << 20
    static let unixAckEvery = 64 << 10
    static let unixMissTime: UInt64 = 2_000_000_000

    /// UNIX_CONNECT from librfork, on the program's socket.
    func handleUnixConnect(_ text: String, peerUID: UInt32?, from channel: Channel) {
        let path = text.trimmingCharacters(in: .whitespacesAndNewlines)
        func refuse(_ why: String) { reply(channel, .refused, why) }
        guard let uid = peerUID else { return refuse("the caller cannot be identified") }
        guard path.hasPrefix("/"), !path.contains("\0") else { return refuse("not an absolute path") }
        let now = Posix.monotonicNanoseconds()
        unix.misses = unix.misses.filter { now - $0.value < Self.unixMissTime }
        if unix.misses[path] != nil { return refuse("no node has \(path)") }
        // Peers whose links are up, or closed for want of use while their load is fresh (asking connects
        // them again); not peers of unknown state, which could hold the answer up for its whole timeout.
        let fresh = Set(peerViews().filter(\.isUp).map(\.name))
        let up = net.links.filter { $0.value.isUp || fresh.contains($0.key) }.map(\.key)
        guard !up.isEmpty else { return refuse("no peer is up") }
        let id = unix.newStreamID()
        let state = UnixStreamState(key: "\(config.node)/\(id)", origin: config.node, id: id, path: path)
        state.channel = channel
        state.waiting = Set(up)
        unix.streams[state.key] = state
        for peer in up {
            var open = Rfork_Wire_V1_UnixStream()
            open.kind = .open
            open.path = path
            open.uid = uid
            sendUnixStream(open, state: state, to: peer)
        }
        state.timeout = loop.scheduleTask(in: Self.unixConnectTimeout) { [weak self] in
            guard let self, let s = self.unix.streams[state.key], s.peer == nil else { return }
            self.unix.streams[state.key] = nil
            refuse("no answer for \(path)")
        }
        // The program gave up (or ended) before an answer.
        channel.closeFuture.whenComplete { [weak self] _ in
            guard let self, let s = self.unix.streams[state.key], s.peer == nil else { return }
            s.timeout?.cancel()
            self.unix.streams[state.key] = nil
        }
    }

    func sendUnixStream(_ message: Rfork_Wire_V1_UnixStream, state: UnixStreamState, to peer: String) {
        var m = message
        m.origin = state.origin
        m.id = state.id
        m.from = config.node
        var envelope = Envelope()
        envelope.body = .unixStream(m)
        wire(to: peer)?.writeAndFlush(envelope, promise: nil)
    }

    /// A UnixStream message from a peer (over either link).
    func receivedUnixStream(_ m: Rfork_Wire_V1_UnixStream) {
        let key = "\(m.origin)/\(m.id)"
        switch m.kind {
        case .open:
            serveUnixOpen(m, key: key)
        case .opened:
            guard let s = unix.streams[key], m.origin == config.node else {
                return  // answered too late: the stream is gone (CLOSE goes back below)
            }
            if s.peer != nil {
                var close = Rfork_Wire_V1_UnixStream()
                close.kind = .close
                sendUnixStream(close, state: s, to: m.from)
                return
            }
            s.peer = m.from
            s.timeout?.cancel()
            unix.misses[s.path] = nil
            guard let channel = s.channel else { return }
            // The program's socket stops speaking frames: from here on its bytes are the stream's.
            channel.writeAndFlush(LocalFrame.reply(.attached, ""), promise: nil)
            do {
                let ops = channel.pipeline.syncOperations
                let relay = UnixRelayHandler(node: self, key: key)
                try ops.addHandler(relay, position: .first)
                s.relay = relay
                // A program that half-closes (shutdown(SHUT_WR)) still reads the answer.
                channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).whenComplete { _ in }
                let local = try ops.handler(type: LocalHandler.self)
                ops.removeHandler(local, promise: nil)
                let decoder = try ops.handler(type: ByteToMessageHandler<LocalFrameDecoder>.self)
                ops.removeHandler(decoder, promise: nil)
            } catch {
                logger.warning("unix relay \(key): \(error)")
                channel.close(promise: nil)
            }
            RforkMetrics.unixStreams.increment()
            logger.debug("unix socket \(s.path): relayed to \(m.from)")
        case .refused:
            guard let s = unix.streams[key], s.peer == nil else { return }
            s.waiting.remove(m.from)
            if s.waiting.isEmpty {
                s.timeout?.cancel()
                unix.streams[key] = nil
                unix.misses[s.path] = Posix.monotonicNanoseconds()
                if let channel = s.channel { reply(channel, .refused, "no node has \(s.path)") }
            }
        case .data:
            guard let s = unix.streams[key], s.peer == m.from, let relay = s.relay else { return }
            let count = m.data.count
            relay.send(ByteBuffer(bytes: m.data)) { [weak self] in
                // Written into the socket (or the stream is gone): the other end may send that much more.
                guard let self, self.unix.streams[key] === s else { return }
                s.written += count
                if s.written >= Self.unixAckEvery {
                    var ack = Rfork_Wire_V1_UnixStream()
                    ack.kind = .ack
                    ack.acked = UInt64(s.written)
                    s.written = 0
                    self.sendUnixStream(ack, state: s, to: m.from)
                }
            }
        case .ack:
            guard let s = unix.streams[key], s.peer == m.from else { return }
            let was = s.unacked
            s.unacked = max(0, s.unacked - Int(clamping: m.acked))
            if was >= Self.unixWindow && s.unacked < Self.unixWindow {
                s.channel?.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            }
        case .close:
            guard let s = unix.streams[key], s.peer == m.from else { return }
            unix.streams[key] = nil
            s.channel?.close(promise: nil)
        case .shutdown:
            guard let s = unix.streams[key], s.peer == m.from else { return }
            s.relay?.shutdownOutput()
        case .UNRECOGNIZED:
            break
        }
    }

    /// OPEN from a connecting node: connects to the path here if it is a socket of that user.
    private func serveUnixOpen(_ m: Rfork_Wire_V1_UnixStream, key: String) {
        let state = UnixStreamState(key: key, origin: m.origin, id: m.id, path: m.path)
        state.peer = m.from
        var answer = Rfork_Wire_V1_UnixStream()
        var st = stat()
        guard m.path.hasPrefix("/"), lstat(m.path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK,
            st.st_uid == m.uid || m.uid == 0
        else {
            answer.kind = .refused
            return sendUnixStream(answer, state: state, to: m.from)
        }
        // Bound to an abstract name the server's librfork recognises (it refuses to send descriptors,
        // which could not cross). A unix stream connects at once, or not (EAGAIN: a full backlog).
        let socket: Int32
        do {
            // A random name: nobody can take it first (abstract names are anyone's to bind).
            let name =
                LocalWire.relayName + String(UInt64.random(in: 0...UInt64.max), radix: 16)
                + String(UInt64.random(in: 0...UInt64.max), radix: 16)
            socket = try Posix.connectUnix(path: m.path, boundTo: name)
        } catch {
            answer.kind = .refused
            return sendUnixStream(answer, state: state, to: m.from)
        }
        unix.streams[key] = state
        let relay = UnixRelayHandler(node: self, key: key)
        state.relay = relay
        ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(relay)
                }
            }
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .withConnectedSocket(socket)
            .whenComplete { [weak self] result in
                guard let self else { return }
                switch result {
                case .success(let channel):
                    guard self.unix.streams[key] === state else {
                        channel.close(promise: nil)
                        return
                    }
                    state.channel = channel
                    answer.kind = .opened
                case .failure:
                    if self.unix.streams[key] === state { self.unix.streams[key] = nil }
                    answer.kind = .refused
                }
                self.sendUnixStream(answer, state: state, to: m.from)
                for buffer in state.early { self.unixStreamRead(key, buffer) }
                state.early = []
            }
    }

    /// Bytes from the local end of a stream: to the other node.
    func unixStreamRead(_ key: String, _ buffer: ByteBuffer) {
        guard let s = unix.streams[key], let peer = s.peer else { return }
        if s.channel == nil {
            s.early.append(buffer)
            return
        }
        var data = Rfork_Wire_V1_UnixStream()
        data.kind = .data
        data.data = Data(buffer.readableBytesView)
        sendUnixStream(data, state: s, to: peer)
        s.unacked += buffer.readableBytes
        if s.unacked >= Self.unixWindow {
            s.channel?.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
    }

    /// The local end of a stream closed: the other node closes its end.
    func unixStreamClosed(_ key: String) {
        guard let s = unix.streams.removeValue(forKey: key) else { return }
        s.timeout?.cancel()
        guard let peer = s.peer else { return }
        var close = Rfork_Wire_V1_UnixStream()
        close.kind = .close
        sendUnixStream(close, state: s, to: peer)
    }

    /// The local end half-closed: so does the other end's socket, for writing.
    func unixStreamInputClosed(_ key: String) {
        guard let s = unix.streams[key], let peer = s.peer else { return }
        var shutdown = Rfork_Wire_V1_UnixStream()
        shutdown.kind = .shutdown
        sendUnixStream(shutdown, state: s, to: peer)
    }

    /// A peer is gone: the streams through it end.
    func unixStreamsNodeLost(_ peer: String) {
        for (key, s) in unix.streams where s.peer == peer {
            unix.streams[key] = nil
            s.channel?.close(promise: nil)
        }
    }
}

/// AF_UNIX streams relayed across nodes, by "origin/id", and paths no peer had, by when. Confined to
/// `Node.loop`.
final class UnixRelayTable: @unchecked Sendable {
    var streams: [String: UnixStreamState] = [:]
    private(set) var nextStream: UInt64 = 1
    var misses: [String: UInt64] = [:]

    func newStreamID() -> UInt64 {
        defer { nextStream += 1 }
        return nextStream
    }
}
