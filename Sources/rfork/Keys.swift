import ArgumentParser
import RforkCheckpoint
import RforkCluster

extension Rfork {
    /// Keys for a real cluster: one CA, one certificate per node (mutual TLS between daemons).
    struct Keys: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the cluster CA and node certificates for rforkd's mutual TLS.",
            discussion: """
                rfork keys --dir /etc/rfork/keys node1 node2 node3
                creates ca.pem/ca.key and checkpoint.key (once) and NODE.pem/NODE.key for each node. Copy \
                ca.pem, checkpoint.key, NODE.pem and NODE.key to each node and name them in its rforkd \
                configuration (checkpoint.key signs checkpoints: the same on every node, root's only). Keep \
                ca.key off the nodes.
                """)
        @Option(name: .long, help: "Where the keys go.") var dir: String
        @Argument(help: "Node names.") var nodes: [String]
        func run() throws {
            do {
                try ClusterKeys.createAuthority(in: dir)
                try CheckpointDirectory.createKey(dir + "/checkpoint.key")
                for node in nodes { try ClusterKeys.issue(node: node, caDir: dir, out: dir) }
            } catch { throw ValidationError("\(error)") }
            print("keys in \(dir): ca.pem checkpoint.key " + nodes.map { "\($0).pem \($0).key" }.joined(separator: " "))
        }
    }
}
