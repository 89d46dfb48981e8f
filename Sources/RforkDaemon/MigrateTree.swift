import Glibc
import RforkSystem

/// Moving a process with its descendants: CRIU takes the whole tree; these checks say whether what the
/// descendants hold lets it arrive whole.
extension Node {
    /// One descriptor of a process: its number, what it names (`pipe:[…]`, a path) and its access mode.
    struct Held {
        var fd: String
        var target: String
        var mode: Int32?
    }

    static func held(by pid: Int32) -> [Held] {
        Posix.listDirectory("/proc/\(pid)/fd").compactMap { fd in
            Posix.readLink("/proc/\(pid)/fd/\(fd)").map {
                Held(fd: fd, target: $0, mode: Posix.accessMode(pid: pid, fd: fd))
            }
        }
    }

    /// Why process `pid` cannot move with its descendants, or nil (also nil when it has none). Its own
    /// descriptors are its channels (relayed for the whole tree); a descendant may share those, and may
    /// hold pipes whose every holder is in the tree (CRIU carries them, bytes included), but nothing else
    /// that leads outside: a pipe to a process outside the tree, a terminal or a written file the top
    /// process does not hold. `standIns` are the PIDs of processes that run on other nodes.
    static func treeRefusal(pid: Int32, owner: UInt32, standIns: Set<Int32>) -> String? {
        let tree = descendants(of: pid)
        guard !tree.isEmpty else { return nil }
        let members = Set([pid] + tree)
        let depth = Posix.namespacePIDs(pid).count
        let top = held(by: pid)
        let topTargets = Set(top.map(\.target))
        var outside: Set<String>?  // pipes held by processes outside the tree, read when first needed
        func heldOutside(_ target: String) -> Bool {
            if outside == nil {
                var found: Set<String> = []
                for name in Posix.listDirectory("/proc") {
                    guard let p = Int32(name), !members.contains(p) else { continue }
                    for h in held(by: p) where h.target.hasPrefix("pipe:") { found.insert(h.target) }
                }
                outside = found
            }
            return outside?.contains(target) ?? true
        }
        for d in tree {
            let child = "process \(d), a descendant of \(pid),"
            if standIns.contains(d) {
                return "\(child) runs on another node; moving a process with remote children comes later"
            }
            if Posix.namespacePIDs(d).count != depth { return "\(child) runs in a PID namespace of its own" }
            if let why = jobMemberRefusal(pid: d, allowCoherent: false) { return why }
            if let why = identityRefusal(pid: d, uid: owner), Posix.processState(d) != nil { return why }
            for h in held(by: d) {
                if h.target.hasPrefix("pipe:") {
                    // The other end of one of the top process's pipes: its channel would take it out of the tree.
                    if top.contains(where: {
                        $0.target == h.target && $0.mode != h.mode && $0.mode != O_RDWR && h.mode != O_RDWR
                    }) {
                        return
                            "process \(pid) and \(child.dropLast()) are the two ends of a pipe (\(h.target)); moving such a pair comes later"
                    }
                    if !topTargets.contains(h.target) && heldOutside(h.target) {
                        return "\(child) holds a pipe (\(h.target)) to a process that would stay here"
                    }
                } else if h.target.hasPrefix("/dev/pts/") || h.target.hasPrefix("/dev/tty") {
                    if !topTargets.contains(h.target) {
                        return "\(child) holds a terminal (\(h.target)) that process \(pid) does not"
                    }
                } else if h.target.hasPrefix("/"), h.mode != O_RDONLY, !topTargets.contains(h.target),
                    !h.target.hasPrefix("/dev/null")
                {
                    return "\(child) writes a file (\(h.target)) that process \(pid) does not hold"
                }
            }
        }
        return nil
    }
}
