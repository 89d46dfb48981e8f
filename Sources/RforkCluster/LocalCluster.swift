import Foundation
import Glibc
import RforkCheckpoint
import RforkDaemon
import RforkPlacement
import RforkSystem

/// A cluster of N nodes on this machine. Each node has its own network namespace (joined to the others
/// by veth links on a bridge), its own mount namespace, its own UTS namespace (its hostname is its
/// name) and its own IPC namespace (a System V key made on one node finds nothing on another), and runs
/// one rforkd. Nodes share the host's file system, standing in for a cluster's shared
/// file system, except what separate machines never share: each node has its own tmpfs at `/tmp`,
/// `/dev/shm` and `/run` (its socket and images live in `/run/rfork`), so nothing passes between two
/// nodes through a file there. Directories under those that the nodes must see (the cluster's state,
/// the installation, `sharedPaths`) are bound back in.
public struct LocalCluster: Sendable {
    public struct Configuration: Sendable {
        /// Where the cluster's state, keys, configuration files and logs live. Default: /run/rfork-cluster.
        public var stateDirectory: String
        /// The first three octets of the nodes' addresses; node i gets .i. Default: "10.250.0".
        public var subnet: String
        /// The installation prefix holding bin/rforkd and libexec/rfork. Default: next to this binary.
        public var prefix: String
        /// How long `up` waits for every daemon to say READY. Default: 15 s.
        public var readyTimeoutSeconds: Int
        /// Directories under /tmp, /dev/shm or /run that every node sees as the host does (a checkout
        /// under /tmp, a scratch directory shared like an NFS export). Default: none.
        public var sharedPaths: [String]
        /// CPUs each node runs on. Default: an equal share of this machine's (at least one); nodes get
        /// distinct CPUs while there are enough, and share them beyond.
        public var cpusPerNode: Int?
        /// Each node's memory limit in bytes. Default: an equal share of this machine's memory.
        public var memoryPerNode: UInt64?
        /// How long a node waits for word from a peer before it declares it dead (rforkd's
        /// `peerTimeoutSeconds`). Default: rforkd's own (10 s).
        public var peerTimeoutSeconds: Int?
        /// Membership from a real etcd (started in the hub namespace, at SUBNET.254:2379) instead of
        /// static peer lists: each daemon registers under a lease and finds the others there. Default: off.
        public var etcd: Bool
        /// Links on demand (rforkd's `links`: peers told each node's load each second, seconds before an
        /// unused link closes). Default: rforkd's own (16, 10 s).
        public var links: Gossip.Configuration?

        public init(
            stateDirectory: String = "/run/rfork-cluster", subnet: String = "10.250.0",
            prefix: String = LocalCluster.installPrefix(), readyTimeoutSeconds: Int = 15, sharedPaths: [String] = [],
            cpusPerNode: Int? = nil, memoryPerNode: UInt64? = nil, peerTimeoutSeconds: Int? = nil, etcd: Bool = false,
            links: Gossip.Configuration? = nil
        ) {
            self.etcd = etcd
            self.links = links
            self.stateDirectory = stateDirectory
            self.subnet = subnet
            self.prefix = prefix
            self.readyTimeoutSeconds = readyTimeoutSeconds
            self.sharedPaths = sharedPaths
            self.cpusPerNode = cpusPerNode
            self.memoryPerNode = memoryPerNode
            self.peerTimeoutSeconds = peerTimeoutSeconds
        }
    }

    public struct NodeState: Codable, Sendable {
        public var name: String
        public var address: String
        public var namespace: String
        public var daemonPID: Int32
        public var log: String
        /// Its CPUs and memory, and the cgroup directories that hold them (one per hierarchy).
        public var resources: NodeResources?
        public var cgroups: [String]?
    }

    public struct State: Codable, Sendable {
        public var nodes: [NodeState]
        public var hub: String
        /// The etcd server of an `--etcd` cluster, and its client URL.
        public var etcdPID: Int32?
        public var etcdURL: String?
    }

    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    public let configuration: Configuration
    public init(configuration: Configuration = .init()) { self.configuration = configuration }

    /// The prefix this binary was installed under (its directory's parent).
    public static func installPrefix() -> String {
        let exe = Posix.executablePath()
        var parts = exe.split(separator: "/")
        parts.removeLast(2)
        return "/" + parts.joined(separator: "/")
    }

    var statePath: String { configuration.stateDirectory + "/cluster.json" }
    static let hubNamespace = "rfork-hub"
    static func namespace(_ i: Int) -> String { "rfork-node\(i)" }

    public func load() throws(Error) -> State {
        guard let bytes = try? Posix.readFile(statePath) else {
            throw Error("no local cluster is up (start one with 'rfork cluster up --nodes 3')")
        }
        do { return try JSONDecoder().decode(State.self, from: Data(bytes)) } catch {
            throw Error("the cluster state \(statePath) is damaged; run 'rfork cluster down' to clean up")
        }
    }

    public func up(nodes count: Int) throws(Error) -> State {
        guard geteuid() == 0 else { throw Error("rfork cluster up needs root (network and mount namespaces)") }
        guard (1...200).contains(count) else { throw Error("--nodes must be between 1 and 200") }
        guard !Posix.fileExists(statePath) else {
            throw Error("a local cluster is already up; run 'rfork cluster down' first")
        }
        let criu = RforkCheckpointPath.criu()
        guard Posix.fileExists(criu) else { throw Error("CRIU is not installed; run 'make setup'") }
        let rforkd = configuration.prefix + "/bin/rforkd"
        guard Posix.fileExists(rforkd) else { throw Error("\(rforkd) is missing; run 'make' or 'make install'") }
        let dir = configuration.stateDirectory
        do {
            try Posix.makeDirectory(dir)
            try Posix.makeDirectory(dir + "/keys")
        } catch { throw Error("\(error)") }
        do {
            try ClusterKeys.createAuthority(in: dir + "/keys")
            for i in 1...count { try ClusterKeys.issue(node: "node\(i)", caDir: dir + "/keys", out: dir + "/keys") }
            try CheckpointDirectory.createKey(dir + "/keys/checkpoint.key")
        } catch { throw Error("\(error)") }

        var state = State(nodes: [], hub: Self.hubNamespace)
        let hierarchies = CgroupHierarchy.discoverHere()
        let plans = NodeResources.plan(
            nodes: count, cpusPerNode: configuration.cpusPerNode, memoryPerNode: configuration.memoryPerNode,
            available: Self.availableCPUs(hierarchies), memory: Self.availableMemory(hierarchies))
        do {
            try ip(["netns", "add", Self.hubNamespace])
            try ip(["-n", Self.hubNamespace, "link", "add", "br0", "type", "bridge"])
            try ip(["-n", Self.hubNamespace, "link", "set", "br0", "up"])
            if configuration.etcd {
                try ip(["-n", Self.hubNamespace, "link", "set", "lo", "up"])
                try ip(["-n", Self.hubNamespace, "addr", "add", "\(configuration.subnet).254/24", "dev", "br0"])
                let (pid, url) = try startEtcd()
                state.etcdPID = pid
                state.etcdURL = url
            }
            for i in 1...count {
                let ns = Self.namespace(i)
                let veth = "rfk\(i)"
                try ip(["netns", "add", ns])
                try ip(["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
                try ip(["link", "set", veth, "netns", Self.hubNamespace])
                try ip(["-n", Self.hubNamespace, "link", "set", veth, "master", "br0", "up"])
                try ip(["-n", ns, "addr", "add", "\(configuration.subnet).\(i)/24", "dev", "eth0"])
                try ip(["-n", ns, "link", "set", "eth0", "up"])
                try ip(["-n", ns, "link", "set", "lo", "up"])
                state.nodes.append(
                    NodeState(
                        name: "node\(i)", address: "\(configuration.subnet).\(i)", namespace: ns, daemonPID: 0,
                        log: dir + "/node\(i).log", resources: plans[i - 1], cgroups: []))
                state.nodes[i - 1].cgroups = try makeCgroups(
                    for: "node\(i)", plans[i - 1], hierarchies: hierarchies)
            }
            for (index, node) in state.nodes.enumerated() {
                var config = DaemonConfiguration(
                    node: node.name, criu: criu, helperDirectory: configuration.prefix + "/libexec/rfork",
                    checkpointKey: dir + "/keys/checkpoint.key",
                    tls: .init(
                        ca: dir + "/keys/ca.pem", certificate: dir + "/keys/\(node.name).pem",
                        key: dir + "/keys/\(node.name).key"),
                    peers: state.nodes.filter { $0.name != node.name }.map { .init(name: $0.name, host: $0.address) })
                config.peerTimeoutSeconds = configuration.peerTimeoutSeconds
                config.links = configuration.links
                if let url = state.etcdURL {
                    // Nobody is listed: the daemons find each other in etcd.
                    config.peers = []
                    config.etcd = .init(endpoints: [url], advertise: node.address)
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try Posix.writeFile(dir + "/\(node.name).json", try encoder.encode(config), mode: 0o644)
                state.nodes[index].daemonPID = try startDaemon(
                    node, rforkd: rforkd, config: dir + "/\(node.name).json", hierarchies: hierarchies)
            }
            try save(state)
            try waitForLinks(state)
        } catch let error as Error {
            try? save(state)
            _ = down()
            throw error
        } catch {
            try? save(state)
            _ = down()
            throw Error("\(error)")
        }
        return state
    }

    /// Starts etcd in the hub namespace, its data in the state directory; returns once it is healthy.
    private func startEtcd() throws(Error) -> (Int32, String) {
        guard let etcd = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: Posix.fileExists) else {
            throw Error("etcd is not installed (Debian package etcd-server); run 'make setup'")
        }
        let address = "\(configuration.subnet).254"
        let url = "http://\(address):2379"
        let log = open(configuration.stateDirectory + "/etcd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer {
            Posix.close(log)
            Posix.close(devnull)
        }
        let pid: Int32
        do {
            pid = try Posix.spawn(
                "/usr/sbin/ip",
                [
                    "ip", "netns", "exec", Self.hubNamespace, etcd, "--name", "rfork-hub", "--data-dir",
                    configuration.stateDirectory + "/etcd", "--listen-client-urls", url, "--advertise-client-urls", url,
                    "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls",
                    "http://127.0.0.1:2380", "--initial-cluster", "rfork-hub=http://127.0.0.1:2380",
                ], descriptors: [devnull, log, log], newSession: true)
        } catch { throw Error("cannot start etcd: \(error)") }
        let health = "import urllib.request; urllib.request.urlopen('\(url)/health', timeout=1).read()"
        for _ in 0..<100 {
            if let (status, _) = try? Posix.run([
                "/usr/sbin/ip", "netns", "exec", Self.hubNamespace, "python3", "-c", health,
            ]),
                status == .exited(0)
            {
                return (pid, url)
            }
            if Posix.poll(pid) != nil { break }
            usleep(100_000)
        }
        Posix.kill(pid, SIGKILL)
        throw Error("etcd did not become healthy: \(tail(configuration.stateDirectory + "/etcd.log"))")
    }

    private func save(_ state: State) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try Posix.writeFile(statePath, try encoder.encode(state), mode: 0o644)
    }

    /// The file systems a node has for itself, as separate machines do.
    public static let privateMounts = ["/tmp", "/dev/shm", "/run"]

    /// The directories under a private mount that a node must still see: the state directory (its
    /// configuration and keys), the installation and `sharedPaths`; nested ones are covered by their parent.
    func keptPaths() -> [String] {
        let candidates = ([configuration.stateDirectory, configuration.prefix] + configuration.sharedPaths).map {
            $0.hasSuffix("/") && $0.count > 1 ? String($0.dropLast()) : $0
        }
        let under = candidates.filter { path in Self.privateMounts.contains { path.hasPrefix($0 + "/") } }
        return Array(
            Set(under.filter { path in !under.contains { $0 != path && path.hasPrefix($0 + "/") } })
        ).sorted()
    }

    /// Starts rforkd inside the node's namespaces and waits for its READY line.
    private func startDaemon(
        _ node: NodeState, rforkd: String, config: String, hierarchies: [CgroupHierarchy]
    ) throws -> Int32 {
        // Directories to keep are opened before their mount is covered, and bound back from those
        // descriptors. CRIU's feature cache (its RUNDIR, /dev/shm/criu) is the node's own. The node has
        // a cgroup namespace of its own, rooted at its cgroups: its /sys/fs/cgroup shows them as the
        // root, as a machine's would.
        let cgroupMounts = hierarchies.map { h in
            let options = h.type == "cgroup" ? "-o \(h.options) " : ""
            return "mkdir -p \(h.mountPoint); mount -t \(h.type) \(options)rfork-\(node.name) \(h.mountPoint)"
        }
        let coverCgroupRoot =
            hierarchies.contains { $0.mountPoint == "/sys/fs/cgroup" }
            ? "" : "mount -t tmpfs -o mode=755 rfork-\(node.name) /sys/fs/cgroup"
        let script = """
            set -e
            hostname \(node.name)
            rforkd=$1; config=$2; shift 2
            fds=(); for p in "$@"; do exec {fd}<"$p"; fds+=("$fd"); done
            \(hierarchies.isEmpty ? "" : coverCgroupRoot)
            \(cgroupMounts.joined(separator: "\n"))
            for m in \(Self.privateMounts.joined(separator: " ")); do
              mode=1777; [ "$m" = /run ] && mode=755
              mount -t tmpfs -o mode=$mode,size=50% "rfork-\(node.name)" "$m"
            done
            mkdir -p /run/rfork /dev/shm/criu /run/lock
            i=0; for p in "$@"; do mkdir -p "$p"; mount --no-canonicalize --bind "/proc/self/fd/${fds[$i]}" "$p"; eval "exec ${fds[$i]}<&-"; i=$((i + 1)); done
            exec "$rforkd" --config "$config" --ready-fd 3 --log-level "${RFORK_LOG_LEVEL:-info}"
            """
        let (readEnd, writeEnd) = try Posix.socketPair()
        let log = open(node.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer {
            Posix.close(log)
            Posix.close(devnull)
            Posix.close(readEnd)
        }
        // The first shell puts itself into the node's cgroups while it still sees the machine's, then
        // becomes `ip netns exec` (which mounts a /sys of the namespace's), so nothing of the node ever
        // runs outside them.
        let procs = (node.cgroups ?? []).map { $0 + "/cgroup.procs" }
        let join =
            #"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 1; shift; n=$((n - 1)); done; exec "$@""#
        let pid = try Posix.spawn(
            "/bin/sh",
            ["sh", "-c", join, "rfork-join", "\(procs.count)"] + procs + [
                "/usr/sbin/ip", "netns", "exec", node.namespace, "unshare", "--mount", "--uts", "--ipc", "--cgroup",
                "--propagation", "private", "/bin/bash", "-c", script, "rfork-node", rforkd, config,
            ] + keptPaths(), descriptors: [devnull, log, log, writeEnd], newSession: true)
        Posix.close(writeEnd)
        var pfd = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        var buf = [UInt8](repeating: 0, count: 16)
        let deadline = Posix.monotonicNanoseconds() + UInt64(configuration.readyTimeoutSeconds) * 1_000_000_000
        while Posix.monotonicNanoseconds() < deadline {
            if poll(&pfd, 1, 200) > 0 {
                let n = read(readEnd, &buf, buf.count)
                if n > 0 && buf.starts(with: Array("READY".utf8)) { return pid }
                break
            }
            if let status = Posix.poll(pid) {
                throw Error("rforkd on \(node.name) ended (\(status)): \(tail(node.log))")
            }
        }
        Posix.kill(pid, SIGKILL)
        throw Error("rforkd on \(node.name) did not become ready: \(tail(node.log))")
    }

    /// Waits until every daemon has its links to all peers up (asked over each node's socket).
    private func waitForLinks(_ state: State) throws(Error) {
        let deadline = Posix.monotonicNanoseconds() + UInt64(configuration.readyTimeoutSeconds) * 1_000_000_000
        for node in state.nodes {
            while true {
                let rows = (try? queryNode(node, "nodes")).flatMap {
                    try? JSONDecoder().decode([NodeRow].self, from: Data($0.utf8))
                }
                if let rows, rows.count == state.nodes.count, rows.allSatisfy({ $0.state != "down" }) { break }
                if Posix.monotonicNanoseconds() > deadline {
                    throw Error("the links of \(node.name) did not come up: \(tail(node.log))")
                }
                usleep(20_000)
            }
        }
    }

    /// Runs a query against a node's daemon from inside that node's namespaces.
    public func queryNode(_ node: NodeState, _ query: String) throws -> String {
        let out = try capture(
            [
                "/usr/bin/nsenter", "-t", String(node.daemonPID), "-n", "-m", "-u", "-i", "--", Posix.executablePath(),
                "query", query,
            ])
        return out
    }

    private func capture(_ argv: [String]) throws -> String {
        let (status, out) = try Posix.run(argv)
        guard status == .exited(0) else { throw Error("\(argv.joined(separator: " ")) failed (\(status))") }
        return out
    }

    /// Stops every daemon, ends every process left in the nodes, removes the namespaces and the state.
    /// Safe to run twice, and with no cluster up.
    @discardableResult
    public func down() -> [String] {
        var notes: [String] = []
        let state = try? load()
        for node in state?.nodes ?? [] where node.daemonPID > 0 && Posix.isAlive(node.daemonPID) {
            Posix.kill(node.daemonPID, SIGTERM)
        }
        for node in state?.nodes ?? [] where node.daemonPID > 0 {
            var waited = 0
            while Posix.isAlive(node.daemonPID) && Posix.processState(node.daemonPID) != "Z" && waited < 100 {
                usleep(50_000)
                waited += 1
            }
            if Posix.isAlive(node.daemonPID) && Posix.processState(node.daemonPID) != "Z" {
                Posix.kill(node.daemonPID, SIGKILL)
                notes.append("rforkd on \(node.name) did not stop in 5 s; killed it")
            }
        }
        // Every namespace this tool may have made, whether or not the state file still names it.
        let namespaces = Posix.listDirectory("/run/netns").filter {
            $0.hasPrefix("rfork-node") || $0 == Self.hubNamespace
        }
        for ns in namespaces {
            if let pids = try? capture(["/usr/sbin/ip", "netns", "pids", ns]) {
                for line in pids.split(separator: "\n") {
                    if let pid = Int32(line) {
                        Posix.kill(pid, SIGKILL)
                        notes.append("ended process \(pid) left in \(ns)")
                    }
                }
            }
            _ = try? capture(["/usr/sbin/ip", "netns", "del", ns])
        }
        if let pid = state?.etcdPID, pid > 0 { Posix.kill(pid, SIGKILL) }
        _ = try? Posix.run(["/bin/rm", "-rf", configuration.stateDirectory + "/etcd"])
        notes += removeCgroups()
        for name in Posix.listDirectory(configuration.stateDirectory + "/keys") {
            unlink(configuration.stateDirectory + "/keys/" + name)
        }
        rmdir(configuration.stateDirectory + "/keys")
        for name in Posix.listDirectory(configuration.stateDirectory) {
            unlink(configuration.stateDirectory + "/" + name)
        }
        rmdir(configuration.stateDirectory)
        return notes
    }

    private func ip(_ args: [String]) throws(Error) {
        do { _ = try capture(["/usr/sbin/ip"] + args) } catch {
            throw Error("ip \(args.joined(separator: " ")) failed; is iproute2 installed and are you root?")
        }
    }

    func tail(_ path: String) -> String {
        guard let bytes = try? Posix.readFile(path) else { return "(no log)" }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n").suffix(3)
        return lines.joined(separator: " | ")
    }
}

/// Where CRIU is, for the cluster's configuration files.
enum RforkCheckpointPath {
    static func criu() -> String {
        ["/usr/local/sbin/criu", "/usr/sbin/criu"].first(where: Posix.fileExists) ?? "/usr/local/sbin/criu"
    }
}
