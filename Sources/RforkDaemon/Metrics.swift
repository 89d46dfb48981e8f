import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// rforkd's metrics, through swift-metrics, served in Prometheus' text format at
/// `http://metricsListen:metricsPort/metrics` (default 127.0.0.1:9420).
enum RforkMetrics {
    /// Placement requests (forks, and processes calling in to move), by where they went.
    static let placedRemote = Counter(label: "rfork_placements_total", dimensions: [("outcome", "remote")])
    static let placedLocal = Counter(label: "rfork_placements_total", dimensions: [("outcome", "local")])
    /// Moves asked of this node (rfork migrate, --all, the balancer), by outcome, and how long each
    /// moved process was frozen.
    static let moved = Counter(label: "rfork_migrations_total", dimensions: [("outcome", "moved")])
    static let stayed = Counter(label: "rfork_migrations_total", dimensions: [("outcome", "stayed")])
    static let freeze = Metrics.Timer(label: "rfork_migration_freeze_seconds")
    static let balanced = Counter(label: "rfork_balancer_moves_total")
    /// Bytes of pipes, files and terminals relayed over peer links, each way.
    static let relayedOut = Counter(label: "rfork_relayed_bytes_total", dimensions: [("direction", "sent")])
    static let relayedIn = Counter(label: "rfork_relayed_bytes_total", dimensions: [("direction", "received")])
    static let homeSessions = Gauge(label: "rfork_sessions", dimensions: [("role", "home")])
    static let hostedSessions = Gauge(label: "rfork_sessions", dimensions: [("role", "hosted")])
    static let resumptions = Counter(label: "rfork_link_resumptions_total")
    static let peersUp = Gauge(label: "rfork_peers_up")
    static let peersDown = Gauge(label: "rfork_peers_down")
    static let declaredDead = Counter(label: "rfork_links_given_up_total")
    /// Links closed by agreement for want of use (they open again when used).
    static let linksClosedIdle = Counter(label: "rfork_links_closed_idle_total")
    static let runQueue = Gauge(label: "rfork_node_run_queue")
    /// Shared memory across nodes: page faults taken, pages received from peers, futex sleepers interrupted.
    static let sharedFaults = Counter(label: "rfork_shared_memory_faults_total")
    /// AF_UNIX connections relayed to a path on another node, counted where the connecting process runs.
    static let unixStreams = Counter(label: "rfork_unix_streams_relayed_total")
    static let sharedPagesIn = Counter(label: "rfork_shared_memory_pages_received_total")
    static let futexKicks = Counter(label: "rfork_shared_memory_futex_kicks_total")

    static let registry = PrometheusCollectorRegistry()

    /// Once per process, before any metric is used.
    static func bootstrap() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["rfork_migration_freeze_seconds"] = [
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10),
        ]
        MetricsSystem.bootstrap(factory)
    }

    /// Serves the metrics over HTTP/1.1 until the channel closes.
    static func serve(host: String, port: Int, group: EventLoopGroup) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler())
                }
            }
            .bind(host: host, port: port).get()
    }
}

/// GET /metrics: the registry in Prometheus' text format; anything else: 404.
final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data) else { return }
        let found = request.method == .GET && (request.uri == "/metrics" || request.uri.hasPrefix("/metrics?"))
        let body = found ? RforkMetrics.registry.emitToBuffer() : Array("not found; try /metrics\n".utf8)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4" : "text/plain")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(version: request.version, status: found ? .ok : .notFound, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
