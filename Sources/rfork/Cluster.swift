import ArgumentParser
import Foundation
import Glibc
import RforkCluster
import RforkDaemon
import RforkPlacement
import RforkSystem

extension Rfork {
    struct Cluster: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A cluster of nodes on this machine (network, mount and UTS namespaces).",
            subcommands: [Up.self, Down.self, Status.self, Exec.self])

        struct Up: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Start N nodes named node1 ... nodeN, each running rforkd; returns when all are ready.")
            @Option(name: .long, help: "How many nodes.") var nodes: Int = 3
            @Option(
                name: .customLong("share"),
                help: ArgumentHelp(
                    "A directory under /tmp, /dev/shm or /run that every node sees as this machine does (repeatable).",
                    discussion: "Each node has its own /tmp, /dev/shm and /run, as separate machines do."))
            var shared: [String] = []
            @Option(
                name: .customLong("cpus-per-node"),
                help: "CPUs each node runs on (default: an equal share; distinct while there are enough).")
            var cpusPerNode: Int?
            @Option(
                name: .customLong("memory-per-node"),
                help: "Each node's memory limit, like 512M or 2G (default: an equal share of this machine's).")
            var memoryPerNode: String?
            @Option(
                name: .customLong("peer-timeout"),
                help: "Seconds a node waits for word from a peer before it declares it dead (default 10).")
            var peerTimeout: Int?
            @Flag(
                name: .long,
                help: "Start an etcd server (Debian's etcd-server) and let the daemons find each other there.")
            var etcd = false
            @Option(
                name: .customLong("link-fanout"),
                help: "Peers each node tells its load each second; links to others are made when used (default 16).")
            var linkFanout: Int?
            @Option(
                name: .customLong("link-idle"),
                help: "Seconds an unused link stays open before it is closed by agreement (default 10).")
            var linkIdle: Int?
            var links: Gossip.Configuration? {
                linkFanout == nil && linkIdle == nil ? nil : .init(fanout: linkFanout, idleSeconds: linkIdle)
            }
            func validate() throws {
                if let cpusPerNode, cpusPerNode < 1 { throw ValidationError("--cpus-per-node must be at least 1") }
                if let memoryPerNode, NodeResources.parseSize(memoryPerNode).map({ $0 >= 32 << 20 }) != true {
                    throw ValidationError(
                        "--memory-per-node takes a size of at least 32M, like 512M or 2G, not '\(memoryPerNode)'")
                }
                if let peerTimeout, !(2...3600).contains(peerTimeout) {
                    throw ValidationError("--peer-timeout must be between 2 and 3600 seconds")
                }
                if let problem = links?.problem() { throw ValidationError("--link-fanout/--link-idle: \(problem)") }
                for path in shared {
                    guard let real = Posix.realPath(path), Posix.isDirectory(real) else {
                        throw ValidationError("--share \(path): no such directory")
                    }
                    // Elsewhere the file system is shared already; a whole private mount cannot be.
                    guard !LocalCluster.privateMounts.contains(real) else {
                        throw ValidationError(
                            "--share \(path): each node has its own \(real); share a directory under it")
                    }
                }
            }
            func run() throws {
                let cluster = LocalCluster(
                    configuration: .init(
                        sharedPaths: shared.compactMap(Posix.realPath), cpusPerNode: cpusPerNode,
                        memoryPerNode: memoryPerNode.flatMap(NodeResources.parseSize), peerTimeoutSeconds: peerTimeout,
                        etcd: etcd, links: links))
                let state: LocalCluster.State
                do { state = try cluster.up(nodes: nodes) } catch { throw ValidationError("\(error)") }
                if let url = state.etcdURL { print("etcd  \(url)  pid \(state.etcdPID ?? 0)") }
                for node in state.nodes {
                    let resources =
                        node.resources.map { "  cpus \($0.cpuList)  memory \($0.memoryBytes >> 20) MiB" } ?? ""
                    print("\(node.name)  \(node.address)  rforkd pid \(node.daemonPID)\(resources)")
                }
            }
        }

        struct Down: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Stop the local cluster and remove every trace.")
            func run() throws {
                for note in LocalCluster().down() { print(note) }
            }
        }

        struct Status: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show the local cluster's nodes.")
            @Flag(name: .long, help: "Print JSON.") var json = false
            func run() throws {
                let cluster = LocalCluster()
                let state: LocalCluster.State
                do { state = try cluster.load() } catch { throw ValidationError("\(error)") }
                var rows: [[String]] = []
                var out: [[String: String]] = []
                for node in state.nodes {
                    let alive = node.daemonPID > 0 && Posix.isAlive(node.daemonPID)
                    let hosted = (try? cluster.queryNode(node, "ps")).flatMap {
                        try? JSONDecoder().decode([ProcessRow].self, from: Data($0.utf8))
                    }.map { $0.filter { $0.role == "hosted" }.count }
                    rows.append([
                        node.name, node.address, alive ? "up" : "down", "\(node.daemonPID)",
                        node.resources?.cpuList ?? "-", node.resources.map { "\($0.memoryBytes >> 20) MiB" } ?? "-",
                        hosted.map { "\($0)" } ?? "?",
                    ])
                    out.append([
                        "name": node.name, "address": node.address, "state": alive ? "up" : "down",
                        "pid": "\(node.daemonPID)",
                    ])
                }
                if json {
                    let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    print(
                        table(["NODE", "ADDRESS", "RFORKD", "PID", "CPUS", "MEMORY", "HOSTED"], rows), terminator: "")
                }
            }
        }

        struct Exec: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Run a command on a node, passing stdio and the exit status through.")
            @Argument(help: "The node, e.g. node1.") var node: String
            @Argument(parsing: .captureForPassthrough, help: "The command (after --).") var command: [String] = []
            func validate() throws { try helpIfAsked(command, Self.self) }
            func run() throws {
                let argv = command.first == "--" ? Array(command.dropFirst()) : command
                guard !argv.isEmpty else { throw ValidationError("give the command to run after --") }
                let state: LocalCluster.State
                do { state = try LocalCluster().load() } catch { throw ValidationError("\(error)") }
                guard let n = state.nodes.first(where: { $0.name == node }) else {
                    throw ValidationError(
                        "no node '\(node)' in the local cluster (\(state.nodes.map(\.name).joined(separator: ", ")))")
                }
                guard Posix.isAlive(n.daemonPID) else {
                    throw ValidationError("\(node) is down (its rforkd is not running)")
                }
                // Entering a mount namespace resets the working directory. Change to the caller's (the file
                // system is shared) from inside the node: a directory opened outside would keep pointing at a
                // mount the node cannot see, and CRIU could not dump what runs there.
                let cwd = Posix.currentDirectory()
                // What runs on a node uses its CPUs and memory: this process joins its cgroups (and, through
                // nsenter, its cgroup namespace) before it becomes the command.
                for dir in n.cgroups ?? [] {
                    do { try Posix.overwrite(dir + "/cgroup.procs", Array("\(getpid())".utf8)) } catch {
                        throw ValidationError("cannot join \(node)'s cgroup \(dir): \(error)")
                    }
                }
                // /dev/null on stdio is reopened inside the node for the same reason.
                let enter = """
                    cd "$1" 2>/dev/null || cd /; shift
                    for p in /proc/$$/fd/*; do
                      fd=${p##*/}
                      [ "$(readlink "$p" 2>/dev/null)" = /dev/null ] && eval "exec $fd<>/dev/null"
                    done
                    exec "$@"
                    """
                ProcessEnvironment.exec(
                    [
                        "nsenter", "-t", String(n.daemonPID), "-n", "-m", "-u", "-i", "-C", "--", "/bin/bash", "-c",
                        enter,
                        "bash",
                        cwd,
                    ]
                        + argv, environment: ProcessEnvironment.all())
                throw ValidationError("cannot run nsenter: \(Posix.errorText(errno)); install util-linux")
            }
        }
    }
}
