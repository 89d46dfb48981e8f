import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import RforkSystem

/// Where a daemon finds its peers when they are not listed in its configuration: an etcd cluster (v3,
/// through its JSON gateway). Each rforkd keeps `PREFIX/nodes/NAME` = {name, host, port} under a lease
/// of `peerTimeoutSeconds`, kept alive every third of it while it runs; the peers are the keys under
/// `PREFIX/nodes/`, read each second. A node whose lease ends (its rforkd stopped, hung or cut off from
/// etcd) leaves the list, and its links are given up at once.
public struct EtcdConfiguration: Codable, Sendable, Equatable {
    /// etcd client URLs, "http://HOST:PORT" (the first that answers is used).
    public var endpoints: [String]
    /// Key prefix. Default: "/rfork".
    public var prefix: String?
    /// The address peers reach this node's listener at (etcd tells them).
    public var advertise: String

    public init(endpoints: [String], prefix: String? = nil, advertise: String) {
        self.endpoints = endpoints
        self.prefix = prefix
        self.advertise = advertise
    }

    public var resolvedPrefix: String { prefix ?? "/rfork" }

    /// Host and port of each endpoint, or nil if one is not an http URL.
    public var hostsAndPorts: [(host: String, port: Int)]? {
        var out: [(String, Int)] = []
        for url in endpoints {
            guard url.hasPrefix("http://") else { return nil }
            let rest = url.dropFirst(7).split(separator: "/").first.map(String.init) ?? ""
            let parts = rest.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
            out.append((String(parts[0]), port))
        }
        return out.isEmpty ? nil : out
    }
}

/// What a node says of itself in etcd.
struct NodeRecord: Codable, Equatable {
    var name: String
    var host: String
    var port: Int
}

/// The etcd v3 JSON gateway's messages (64-bit numbers travel as strings, keys and values as base64).
enum EtcdWire {
    struct Grant: Codable {
        var ttl: Int
        enum CodingKeys: String, CodingKey { case ttl = "TTL" }
    }
    struct Granted: Codable {
        var id: String?
        var ttl: String?
        enum CodingKeys: String, CodingKey {
            case id = "ID"
            case ttl = "TTL"
        }
    }
    struct Put: Codable {
        var key: String
        var value: String
        var lease: String
    }
    struct KeepAlive: Codable {
        var id: String
        enum CodingKeys: String, CodingKey { case id = "ID" }
    }
    struct KeptAlive: Codable {
        var result: Granted?
    }
    struct Range: Codable {
        var key: String
        var rangeEnd: String
        enum CodingKeys: String, CodingKey {
            case key
            case rangeEnd = "range_end"
        }
    }
    struct Ranged: Codable {
        struct KeyValue: Codable {
            var key: String
            var value: String?
        }
        var kvs: [KeyValue]?
    }

    static func b64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
    static func text(_ b64: String) -> String? { Data(base64Encoded: b64).map { String(decoding: $0, as: UTF8.self) } }
}

/// One HTTP/1.1 POST with a JSON body; the answer's body, or a failure. Bounded by `timeout`.
enum HTTPPost {
    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    static func post(
        host: String, port: Int, path: String, body: [UInt8], on loop: EventLoop, timeout: TimeAmount = .seconds(3)
    ) -> EventLoopFuture<[UInt8]> {
        let promise = loop.makePromise(of: [UInt8].self)
        let collector = HTTPCollector(promise: promise)
        let connected = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: host, port: port)
        connected.whenFailure { collector.finish(.failure($0)) }
        connected.whenSuccess { channel in
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "\(host):\(port)")
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: "\(body.count)")
            headers.add(name: "Connection", value: "close")
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            let timer = loop.scheduleTask(in: timeout) {
                collector.finish(.failure(Failed(description: "no answer from \(host):\(port) in time")))
            }
            promise.futureResult.whenComplete { _ in
                timer.cancel()
                channel.close(promise: nil)
            }
        }
        return promise.futureResult
    }
}

final class HTTPCollector: ChannelInboundHandler, @unchecked Sendable {  // confined to its event loop
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<[UInt8]>
    var status: HTTPResponseStatus = .ok
    var body: [UInt8] = []
    var done = false

    init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

    /// Completes the request once (an answer, a timeout or a closed connection, whichever comes first).
    func finish(_ result: Result<[UInt8], Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = head.status
        case .body(let buffer): body += buffer.readableBytesView
        case .end:
            if status == .ok {
                finish(.success(body))
            } else {
                finish(
                    .failure(
                        HTTPPost.Failed(
                            description: "HTTP \(status.code): \(String(decoding: body.prefix(200), as: UTF8.self))")))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(HTTPPost.Failed(description: "the connection closed before the answer")))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(.failure(error))
        context.close(promise: nil)
    }
}

extension Node {
    /// Each second, with etcd configured: keeps this node's key alive (a new lease and key when the old
    /// lease ended) and follows the peers listed there. One request chain at a time; etcd unreachable
    /// changes nothing (the peers known stay, the links judge them).
    func followMembership(now: UInt64) {
        guard let etcd = config.etcd, let endpoints = etcd.hostsAndPorts, !net.membership.busy, !shuttingDown else {
            return
        }
        net.membership.busy = true
        let endpoint = endpoints[net.membership.endpoint % endpoints.count]
        let ttl = config.resolvedPeerTimeoutSeconds
        let prefix = etcd.resolvedPrefix + "/nodes/"
        let loop = self.loop
        func post<T: Encodable>(_ path: String, _ body: T) -> EventLoopFuture<[UInt8]> {
            let data = (try? JSONEncoder().encode(body)).map { Array($0) } ?? []
            // Short, so that a dead endpoint leaves time for another before the lease ends.
            let timeout = TimeAmount.milliseconds(Int64(max(500, ttl * 100)))
            return HTTPPost.post(
                host: endpoint.host, port: endpoint.port, path: path, body: data, on: loop, timeout: timeout)
        }
        func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) -> T? {
            try? JSONDecoder().decode(type, from: Data(bytes))
        }
        var registered: EventLoopFuture<Void> = loop.makeSucceededVoidFuture()
        if let lease = net.membership.lease {
            if now - min(now, net.membership.keptAliveAt) >= UInt64(ttl) * 1_000_000_000 / 4 {
                registered = post("/v3/lease/keepalive", EtcdWire.KeepAlive(id: lease)).map { bytes in
                    let ttlLeft = decode(EtcdWire.KeptAlive.self, bytes)?.result?.ttl.flatMap { Int($0) } ?? 0
                    if ttlLeft > 0 {
                        self.net.membership.keptAliveAt = now
                    } else {
                        self.logger.warning("membership: this node's lease in etcd ended; registering again")
                        self.net.membership.lease = nil
                    }
                }
            }
        } else {
            let record = NodeRecord(name: config.node, host: etcd.advertise, port: config.resolvedPort)
            let value = (try? JSONEncoder().encode(record)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            registered = post("/v3/lease/grant", EtcdWire.Grant(ttl: ttl)).flatMap { bytes in
                guard let id = decode(EtcdWire.Granted.self, bytes)?.id else {
                    return loop.makeFailedFuture(HTTPPost.Failed(description: "etcd granted no lease"))
                }
                return post(
                    "/v3/kv/put",
                    EtcdWire.Put(key: EtcdWire.b64(prefix + self.config.node), value: EtcdWire.b64(value), lease: id)
                ).map { _ in
                    self.net.membership.lease = id
                    self.net.membership.keptAliveAt = now
                    self.logger.info(
                        "membership: registered in etcd at \(endpoint.host):\(endpoint.port) (lease \(ttl) s)")
                }
            }
        }
        // The end of the range: the prefix with its last byte plus one.
        var end = Array(prefix.utf8)
        end[end.count - 1] += 1
        let rangeEnd = Data(end).base64EncodedString()
        registered.flatMap { _ in
            post("/v3/kv/range", EtcdWire.Range(key: EtcdWire.b64(prefix), rangeEnd: rangeEnd))
        }
        .whenComplete { result in
            self.net.membership.busy = false
            switch result {
            case .success(let bytes):
                guard let ranged = decode(EtcdWire.Ranged.self, bytes) else {
                    // Not an answer: nothing is concluded from it.
                    self.logger.warning("membership: etcd's answer could not be read; the peers known stay")
                    return
                }
                self.net.membership.lastError = nil
                let records = (ranged.kvs ?? []).compactMap { kv -> NodeRecord? in
                    guard let text = kv.value.flatMap(EtcdWire.text) else { return nil }
                    return try? JSONDecoder().decode(NodeRecord.self, from: Data(text.utf8))
                }
                self.applyMembership(records)
            case .failure(let error):
                let text = "\(error)"
                if self.net.membership.lastError != text {
                    self.logger.warning(
                        "membership: etcd at \(endpoint.host):\(endpoint.port) did not answer: \(text); the peers known stay"
                    )
                    self.net.membership.lastError = text
                }
                self.net.membership.endpoint += 1
            }
        }
    }

    /// The peers etcd lists now: new ones are linked, those whose key is gone (lease ended) are given up.
    func applyMembership(_ records: [NodeRecord]) {
        let listed = records.filter { $0.name != config.node && !$0.name.isEmpty && (1...65535).contains($0.port) }
        for record in listed where !net.peers.contains(where: { $0.name == record.name }) {
            net.peers.append(.init(name: record.name, host: record.host, port: record.port))
            let link = PeerLink(name: record.name, host: record.host, port: record.port, loop: loop)
            net.links[record.name] = link
            logger.info("membership: \(record.name) joined (\(record.host):\(record.port))")
            if let tls = net.clientTLS { connect(link, tls: tls) }
        }
        let fixed = Set(config.peers.map(\.name))
        for record in listed where !fixed.contains(record.name) {
            guard let index = net.peers.firstIndex(where: { $0.name == record.name }),
                net.peers[index].host != record.host || net.peers[index].port != record.port
            else { continue }
            // Re-registered at another address: the link follows it. Its connection closes now; the next
            // one goes there and resumes the link if the same rforkd answers (a new one starts anew).
            net.peers[index] = .init(name: record.name, host: record.host, port: record.port)
            logger.info("membership: \(record.name) moved to \(record.host):\(record.port)")
            guard let link = net.links[record.name] else { continue }
            link.host = record.host
            link.port = record.port
            link.lastError = nil
            if let channel = link.wire.channel {
                link.wire.detach(channel, at: Posix.monotonicNanoseconds())
                link.isUp = false
                channel.close(promise: nil)
            }
        }
        for peer in net.peers where !fixed.contains(peer.name) && !listed.contains(where: { $0.name == peer.name }) {
            let why = "\(peer.name) left etcd (its lease ended): it is declared dead"
            if let link = net.links[peer.name] {
                link.removed = true
                giveUpOutbound(link, why: why)
                net.links[peer.name] = nil
            }
            if let link = net.inboundByPeer[peer.name] { giveUpInbound(link, why: why) }
            net.peers.removeAll { $0.name == peer.name }
            balance.peerLoads[peer.name] = nil
        }
    }
}

/// The state of following etcd (confined to Node.loop).
struct MembershipState {
    var busy = false
    var lease: String?
    var keptAliveAt: UInt64 = 0
    var endpoint = 0
    var lastError: String?
}
