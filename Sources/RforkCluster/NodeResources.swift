import Foundation
import Glibc
import RforkSystem

/// The CPUs and memory one node of a local cluster has for itself: a cgroup of its own in every cgroup
/// hierarchy this machine mounts, holding its rforkd and everything rforkd runs or restores. Separate
/// machines do not share CPUs or memory, so neither do nodes: a node's load is its own.
public struct NodeResources: Codable, Sendable, Equatable {
    /// The CPUs the node may run on (distinct from other nodes' where the machine has enough).
    public var cpus: [Int]
    /// Its memory limit in bytes.
    public var memoryBytes: UInt64

    public init(cpus: [Int], memoryBytes: UInt64) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
    }

    /// Divides `available` CPUs and `memory` among `nodes`. `cpusPerNode` defaults to an equal share
    /// (at least one); nodes get distinct CPUs while there are enough, then they wrap round and share.
    /// `memoryPerNode` defaults to an equal share of `memory`.
    public static func plan(
        nodes: Int, cpusPerNode: Int?, memoryPerNode: UInt64?, available: [Int], memory: UInt64
    ) -> [NodeResources] {
        let cpus = available.isEmpty ? [0] : available.sorted()
        let per = max(1, min(cpusPerNode ?? max(1, cpus.count / max(1, nodes)), cpus.count))
        let bytes = memoryPerNode ?? max(64 << 20, memory / UInt64(max(1, nodes)))
        return (0..<nodes).map { i in
            NodeResources(cpus: (0..<per).map { cpus[(i * per + $0) % cpus.count] }, memoryBytes: bytes)
        }
    }

    /// "0-2,5" for the kernel's cpuset files.
    public var cpuList: String { cpus.map(String.init).joined(separator: ",") }

    /// Reads a kernel CPU list ("0-3,6,8-9").
    public static func parseCPUList(_ text: String) -> [Int] {
        var out: [Int] = []
        for part in text.split(whereSeparator: { $0 == "," || $0 == "\n" || $0 == " " }) {
            let ends = part.split(separator: "-").compactMap { Int($0) }
            if ends.count == 2, ends[0] <= ends[1] {
                out += Array(ends[0]...ends[1])
            } else if ends.count == 1 {
                out.append(ends[0])
            }
        }
        return out
    }

    /// "512M", "2G", "1048576" (bytes) in bytes; nil if it is not a size.
    public static func parseSize(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = Substring(text.uppercased())
        if digits.hasSuffix("IB") {
            digits = digits.dropLast(2)
        } else if digits.hasSuffix("B") {
            digits = digits.dropLast()
        }
        var unit: UInt64 = 1
        if let last = digits.last, let u = units[last] {
            unit = u
            digits = digits.dropLast()
        }
        guard let n = UInt64(digits), n > 0 else { return nil }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: unit)
        return overflow ? nil : bytes
    }
}

extension LocalCluster {
    static let cgroupPrefix = "rfork-node"

    /// The CPUs this process may use (its cpuset), which the nodes divide.
    static func availableCPUs(_ hierarchies: [CgroupHierarchy]) -> [Int] {
        for h in hierarchies where h.type == "cgroup2" || h.controllers.contains("cpuset") {
            let file = h.directory + (h.type == "cgroup2" ? "/cpuset.cpus.effective" : "/cpuset.cpus")
            if let bytes = try? Posix.readFile(file) {
                let cpus = NodeResources.parseCPUList(String(decoding: bytes, as: UTF8.self))
                if !cpus.isEmpty { return cpus }
            }
        }
        return Array(0..<max(1, Posix.cpuCount()))
    }

    /// This machine's memory, or this process's memory limit if that is lower.
    static func availableMemory(_ hierarchies: [CgroupHierarchy]) -> UInt64 {
        var total = Posix.memoryTotal()
        for h in hierarchies {
            let file =
                h.type == "cgroup2"
                ? h.directory + "/memory.max"
                : h.controllers.contains("memory") ? h.directory + "/memory.limit_in_bytes" : nil
            guard let file, let bytes = try? Posix.readFile(file) else { continue }
            let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if let limit = UInt64(text), limit > 0 { total = min(total, limit) }
        }
        return total
    }

    /// Makes node `name`'s cgroup in every hierarchy and gives it its CPUs and memory; returns the
    /// directories. Each hierarchy's controllers are set where they live (v1, else v2).
    func makeCgroups(for name: String, _ resources: NodeResources, hierarchies: [CgroupHierarchy]) throws(Error)
        -> [String]
    {
        var made: [String] = []
        let v1 = Set(hierarchies.filter { $0.type == "cgroup" }.flatMap(\.controllers))
        func write(_ path: String, _ text: String) throws(Error) {
            do { try Posix.overwrite(path, Array(text.utf8)) } catch {
                throw Error("cannot set \(path) to \(text): \(error)")
            }
        }
        for h in hierarchies {
            let dir = h.directory + "/" + name.replacingOccurrences(of: "node", with: Self.cgroupPrefix)
            do { try Posix.makeDirectory(dir, mode: 0o755) } catch {
                throw Error("cannot make the cgroup \(dir) for \(name): \(error)")
            }
            made.append(dir)
            if h.type == "cgroup" {
                if h.controllers.contains("cpuset") {
                    let mems = (try? Posix.readFile(h.directory + "/cpuset.mems")).map {
                        String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    }
                    try write(dir + "/cpuset.mems", mems ?? "0")
                    try write(dir + "/cpuset.cpus", resources.cpuList)
                }
                if h.controllers.contains("memory") {
                    try write(dir + "/memory.limit_in_bytes", "\(resources.memoryBytes)")
                }
            } else {
                // cgroup v2: its pressure files always; cpuset and memory where v1 does not have them.
                let available =
                    (try? Posix.readFile(h.directory + "/cgroup.controllers")).map {
                        String(decoding: $0, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }).map(
                            String.init)
                    } ?? []
                for controller in ["cpuset", "memory"] where available.contains(controller) && !v1.contains(controller)
                {
                    let control = h.directory + "/cgroup.subtree_control"
                    do { try Posix.overwrite(control, Array("+\(controller)".utf8)) } catch {
                        // v2 lets a cgroup hand controllers to its children only if it holds no process
                        // itself (the root aside).
                        throw Error(
                            "cannot give the \(controller) controller to node cgroups under \(h.directory) (\(error)): with cgroup v2 a cgroup that holds processes cannot; start 'rfork cluster up' from the root cgroup (as root: echo $$ > \(h.mountPoint)/cgroup.procs)"
                        )
                    }
                }
                if available.contains("cpuset") && !v1.contains("cpuset") {
                    try write(dir + "/cpuset.cpus", resources.cpuList)
                }
                if available.contains("memory") && !v1.contains("memory") {
                    try write(dir + "/memory.max", "\(resources.memoryBytes)")
                }
            }
        }
        guard v1.contains("cpuset") || hierarchies.contains(where: { $0.type == "cgroup2" }) else {
            throw Error(
                "no cpuset cgroup controller is mounted (v1 at /sys/fs/cgroup/cpuset, or cgroup v2); nodes need one to have CPUs of their own"
            )
        }
        return made
    }

    /// Removes every node cgroup under this process's cgroups (those of the state file and any left over
    /// by an earlier cluster), once the processes in them are gone.
    func removeCgroups() -> [String] {
        var notes: [String] = []
        for h in CgroupHierarchy.discoverHere() {
            for name in Posix.listDirectory(h.directory) where name.hasPrefix(Self.cgroupPrefix) {
                let dir = h.directory + "/" + name
                var tries = 0
                while rmdir(dir) != 0 && errno == EBUSY && tries < 100 {
                    // Processes leave a cgroup a moment after they are reaped.
                    for line
                        in ((try? Posix.readFile(dir + "/cgroup.procs")).map { String(decoding: $0, as: UTF8.self) }
                        ?? "")
                        .split(separator: "\n")
                    {
                        if let pid = Int32(line) { Posix.kill(pid, SIGKILL) }
                    }
                    usleep(20_000)
                    tries += 1
                }
                if Posix.isDirectory(dir) { notes.append("cannot remove the cgroup \(dir)") }
            }
        }
        return notes
    }
}
