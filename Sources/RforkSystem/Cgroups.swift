import Foundation

/// One cgroup hierarchy mounted on this machine, and this process's cgroup in it.
public struct CgroupHierarchy: Codable, Sendable, Equatable {
    /// "cgroup" (v1) or "cgroup2".
    public var type: String
    /// For v1, the mount options naming it ("cpuset", "cpu", "name=systemd"); empty for v2.
    public var options: String
    /// Where it is mounted ("/sys/fs/cgroup/cpuset").
    public var mountPoint: String
    /// This process's cgroup in it ("/" or "/some/path").
    public var path: String

    public init(type: String, options: String, mountPoint: String, path: String) {
        self.type = type
        self.options = options
        self.mountPoint = mountPoint
        self.path = path
    }

    public var directory: String { path == "/" ? mountPoint : mountPoint + path }

    /// The v1 controllers a node's resources use, and cpuacct for its CPU time.
    public static let wantedV1 = ["cpuset", "cpu", "cpuacct", "memory"]

    /// The hierarchies a node gets a cgroup in: the v1 ones of `wantedV1`, and the v2 one (its pressure
    /// files; and its cpuset and memory controllers, where they are enabled there rather than in v1).
    /// Parsed from /proc/self/mountinfo and /proc/self/cgroup.
    public static func discover(mountinfo: String, cgroup: String) -> [CgroupHierarchy] {
        var ours: [String: String] = [:]  // controllers ("cpu,cpuacct" or "" for v2) -> path
        for line in cgroup.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            ours[String(parts[1])] = String(parts[2])
        }
        var found: [CgroupHierarchy] = []
        var seen: Set<String> = []
        for line in mountinfo.split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 3 else { continue }
            let type = String(right[0])
            let mountPoint = String(left[4])
            guard !seen.contains(mountPoint) else { continue }
            if type == "cgroup2", let path = ours[""] {
                seen.insert(mountPoint)
                found.append(.init(type: type, options: "", mountPoint: mountPoint, path: path))
            } else if type == "cgroup" {
                let controllers = right[2].split(separator: ",").map(String.init).filter {
                    wantedV1.contains($0) || $0.hasPrefix("name=")
                }
                guard controllers.contains(where: { wantedV1.contains($0) }) else { continue }
                let key = ours.keys.first { Set($0.split(separator: ",").map(String.init)) == Set(controllers) }
                guard let key, let path = ours[key] else { continue }
                seen.insert(mountPoint)
                found.append(
                    .init(type: type, options: controllers.joined(separator: ","), mountPoint: mountPoint, path: path))
            }
        }
        return found
    }

    public static func discoverHere() -> [CgroupHierarchy] {
        let mountinfo = (try? Posix.readFile("/proc/self/mountinfo")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let cgroup = (try? Posix.readFile("/proc/self/cgroup")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return discover(mountinfo: mountinfo, cgroup: cgroup)
    }

    public var controllers: [String] { options.split(separator: ",").map(String.init) }
}
