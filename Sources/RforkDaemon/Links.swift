import Glibc
import NIOCore
import NIOPosix
import NIOSSL
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
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = chain
        client.privateKey = key
        client.trustRoots = .certificates(ca)
        client.certificateVerification = .noHostnameVerification
        client.minimumTLSVersion = .tlsv13
        self.server = try NIOSSLContext(configuration: server)
        self.client = try NIOSSLContext(configuration: client)
    }
}

extension Node {
    func connect(_ link: PeerLink, tls: NIOSSLContext) {
        guard !shuttingDown else { return }
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
        future.whenSuccess { channel in link.channel = channel }
        future.whenFailure { error in
            let text = "\(error)"
            if link.lastError != text {
                self.logger.info("cannot reach \(link.name) at \(link.host):\(link.port): \(text); retrying")
                link.lastError = text
            }
            self.scheduleConnect(link)
        }
    }

    func scheduleConnect(_ link: PeerLink) {
        guard !shuttingDown, let tls = clientTLS else { return }
        loop.scheduleTask(in: .milliseconds(500)) { self.connect(link, tls: tls) }
    }
}
