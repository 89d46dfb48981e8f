import Glibc
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RforkProtocol
import RforkSystem
import RforkWire
import ServiceLifecycle

/// The node daemon as a `Service`: binds the local socket and the peer listener, links to every peer,
/// and on graceful shutdown ends what it cannot hand over and says so.
public struct RforkDaemon: Service {
    public let configuration: DaemonConfiguration
    public let logger: Logger
    /// Written "READY\n" and closed once both listeners are bound (for `rfork cluster up`).
    public let readyDescriptor: Int32?

    public init(configuration: DaemonConfiguration, logger: Logger, readyDescriptor: Int32? = nil) {
        self.configuration = configuration
        self.logger = logger
        self.readyDescriptor = readyDescriptor
    }

    public func run() async throws {
        Posix.keepFreedMemory()
        RforkMetrics.bootstrap()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threads = NIOThreadPool(numberOfThreads: 4)
        threads.start()
        // Post-copy transfers each keep a thread waiting for their CRIU process while pages flow.
        let waiters = NIOThreadPool(numberOfThreads: 64)
        waiters.start()
        let node = Node(config: configuration, group: group, threads: threads, waiters: waiters, logger: logger)
        let nice = configuration.resolvedEventLoopNice
        try await group.next().submit {
            if let e = Posix.setThreadNice(nice) {
                node.logger.warning("cannot give the event loop nice \(nice): \(Posix.errorText(e))")
            }
        }.get()
        do { try node.criu.check() } catch { throw DaemonError("\(error)") }
        let tls: PeerTLS
        do { tls = try PeerTLS(files: configuration.tls) } catch {
            throw DaemonError("cannot load the TLS files (\(configuration.tls.certificate)): \(error)")
        }
        try Posix.makeDirectory(node.imageRoot)
        for stale in Posix.listDirectory(node.imageRoot) { Posix.removeFlatDirectory(node.imageRoot + "/" + stale) }
        let socketPath = configuration.resolvedSocket
        try Posix.makeDirectory(
            String(socketPath.split(separator: "/").dropLast().joined(separator: "/")).withRoot, mode: 0o755)

        let local = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(LocalFrameDecoder()), MessageToByteHandler(LocalFrameEncoder()),
                        LocalHandler(node: node),
                    ])
                }
            }
            .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).get()
        chmod(socketPath, 0o666)  // any local user may fork; each acts only on its own processes

        let peers: Channel
        do {
            peers = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.recvAllocator, value: Node.bulkReads)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let link = InboundLink(loop: node.loop)
                        node.net.inbound[ObjectIdentifier(link)] = link
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.server))
                        try channel.pipeline.syncOperations.addHandlers([
                            ByteToMessageHandler(EnvelopeDecoder()), MessageToByteHandler(EnvelopeEncoder()),
                            PeerHandler(node: node, role: .inbound(link)),
                        ])
                    }
                }
                .bind(host: configuration.listen ?? "0.0.0.0", port: configuration.resolvedPort).get()
        } catch {
            try? await local.close()
            throw DaemonError("cannot listen on port \(configuration.resolvedPort): \(error)")
        }

        var metrics: Channel?
        if configuration.resolvedMetricsPort > 0 {
            do {
                metrics = try await RforkMetrics.serve(
                    host: configuration.resolvedMetricsListen, port: configuration.resolvedMetricsPort, group: group)
            } catch {
                try? await local.close()
                try? await peers.close()
                throw DaemonError(
                    "cannot serve metrics on \(configuration.resolvedMetricsListen):\(configuration.resolvedMetricsPort): \(error)"
                )
            }
        }

        try await node.loop.submit {
            node.net.clientTLS = tls.client
            // Links are made on demand: the first round of loads connects the peers it picks (all of them,
            // up to the fanout); the others connect when something is sent to them.
            for peer in configuration.peers {
                let link = PeerLink(
                    name: peer.name, host: peer.host, port: peer.port ?? DaemonConfiguration.defaultPort,
                    loop: node.loop)
                link.dormant = true
                node.net.links[peer.name] = link
            }
            node.gossipRound(now: Posix.monotonicNanoseconds())
            // A link to itself, through its own listener: a checkpoint restarts on this node as on any
            // other (restored under an rfork-nsinit here, below the command's stand-in). Placement never
            // chooses it (it places among the peers).
            let listen = configuration.listen ?? "0.0.0.0"
            let own = PeerLink(
                name: configuration.node, host: listen == "0.0.0.0" || listen == "::" ? "127.0.0.1" : listen,
                port: configuration.resolvedPort, loop: node.loop)
            node.net.links[configuration.node] = own
            node.connect(own, tls: tls.client)
            node.ticker = node.loop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) {
                _ in
                node.tickCount += 1
                node.tick(count: node.tickCount)
            }
        }.get()
        logger.info(
            "rforkd \(configuration.node) ready",
            metadata: [
                "socket": "\(socketPath)", "port": "\(configuration.resolvedPort)",
                "peers": "\(configuration.peers.count)",
            ])
        if let fd = readyDescriptor {
            _ = "READY\n".withCString { write(fd, $0, 6) }
            close(fd)
        }

        try? await gracefulShutdown()

        logger.info("rforkd \(configuration.node) shutting down")
        try await node.loop.submit { node.shutdown() }.get()
        try? await local.close()
        try? await peers.close()
        try? await metrics?.close()
        unlink(socketPath)
        try? await Task.sleep(for: .milliseconds(100))  // let the last frames leave
        try await node.loop.submit {
            for link in node.net.links.values { link.wire.channel?.close(promise: nil) }
            for link in node.net.inbound.values { link.wire.channel?.close(promise: nil) }
            node.endLazyPages()
        }.get()
        try await threads.shutdownGracefully()
        try await group.shutdownGracefully()
    }
}

extension Node {
    /// Ends every session this node holds, and says what became of each.
    func shutdown() {
        shuttingDown = true
        ticker?.cancel()
        for s in sessions.hosted.values {
            logger.warning("shutdown: remote child \(s.pid) of \(s.home) is ended (killed); its parent sees SIGKILL")
            endHosted(s, abortHelper: true)
            var event = Rfork_Wire_V1_ChildEvent()
            event.session = s.session
            event.kind = .killed
            event.code = SIGKILL
            var envelope = Envelope()
            envelope.childEvent = event
            s.link.wire.writeAndFlush(envelope, promise: nil)
        }
        for s in sessions.home.values {
            switch s.state {
            case .running:
                logger.warning("shutdown: child \(s.pid) on \(s.target) is ended; its parent sees SIGKILL")
                sendAbort(session: s.id, to: s.target, reason: "rforkd on the home node stopped")
                s.child.writeAndFlush(
                    LocalFrame.event(kind: EventKindCode.killed.rawValue, code: SIGKILL), promise: nil)
            case .dumping, .restoring:
                sendAbort(session: s.id, to: s.target, reason: "rforkd on the home node stopped")
                reply(s.child, .local, "rforkd on \(config.node) is shutting down")
                migrationSessionEnded(s, reason: "rforkd on \(config.node) is shutting down")
            }
        }
        sessions.home.removeAll()
        for pid in commands.periodic.keys { dropSchedule(pid) }
        for (pid, pending) in commands.checkpoints {
            commands.checkpoints[pid] = nil
            if let command = pending.command {
                answerJSON(
                    command,
                    Checkpoint.Outcome(
                        pid: pid, directory: pending.machine.directory, saved: false,
                        reason: "rforkd on \(config.node) is shutting down"))
            }
        }
        for (pid, pending) in commands.migrations {
            commands.migrations[pid] = nil
            answerMigration(
                pending.requester,
                .init(
                    pid: pid, node: pending.machine.node, moved: false,
                    reason: "rforkd on \(config.node) is shutting down"))
        }
        // Post-copy dumps still serving pages give up when their relays close; their children run on here.
        for relay in sessions.pageRelays.values { relay.channel.close(promise: nil) }
        sessions.pageRelays.removeAll()
    }

    /// The last step of a shutdown: each lazy-pages daemon ends after the child it served.
    func endLazyPages() {
        for (helper, lazy) in sessions.lazyKillAfter {
            Posix.kill(helper, SIGKILL)
            _ = try? Posix.wait(helper)
            Posix.kill(lazy, SIGKILL)
        }
        sessions.lazyKillAfter.removeAll()
    }
}

public struct DaemonError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension String {
    fileprivate var withRoot: String { hasPrefix("/") ? self : "/" + self }
}
