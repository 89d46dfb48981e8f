import Foundation
import RforkDaemon
import Testing

@Suite("Membership from etcd: configuration")
struct MembershipTests {
    let tls = DaemonConfiguration.TLSFiles(ca: "/k/ca.pem", certificate: "/k/n.pem", key: "/k/n.key")

    @Test func endpointsMustBeHTTPURLsWithAPort() {
        #expect(
            EtcdConfiguration(endpoints: ["http://10.0.0.1:2379", "http://etcd:4001/"], advertise: "a").hostsAndPorts?
                .map { "\($0.host):\($0.port)" } == ["10.0.0.1:2379", "etcd:4001"])
        #expect(EtcdConfiguration(endpoints: ["https://10.0.0.1:2379"], advertise: "a").hostsAndPorts == nil)
        #expect(EtcdConfiguration(endpoints: ["http://10.0.0.1"], advertise: "a").hostsAndPorts == nil)
        #expect(EtcdConfiguration(endpoints: [], advertise: "a").hostsAndPorts == nil)
        #expect(EtcdConfiguration(endpoints: ["http://h:1"], advertise: "a").resolvedPrefix == "/rfork")
    }

    @Test func aConfigurationWithEtcdNeedsNoPeersButAnAddress() throws {
        var c = DaemonConfiguration(node: "a", tls: tls, peers: [])
        c.etcd = .init(endpoints: ["http://10.0.0.1:2379"], advertise: "10.0.0.2")
        try c.validate()
        c.etcd?.advertise = ""
        #expect(throws: ConfigurationError.self) { try c.validate() }
        c.etcd = .init(endpoints: ["etcd:2379"], advertise: "10.0.0.2")
        #expect(throws: ConfigurationError.self) { try c.validate() }
    }
}
