import Glibc
import RforkSystem

/// What a process shares with processes that would stay behind if it moved: writable shared memory.
/// A moved copy of such a mapping is private on the other node, so the two sides would silently
/// diverge; until memory can be shared across nodes, a process holding any of it stays where it is.
///
/// Pure parsing of `/proc/PID/maps` and of descriptor targets, plus one reader of /proc.
public enum SharedMemory {
    /// One line of `/proc/PID/maps`.
    public struct Mapping: Equatable, Sendable {
        public var start: UInt64
        public var end: UInt64
        /// "rw-s" and the like: read, write, execute, shared (s) or private (p).
        public var permissions: String
        /// The path column, empty for anonymous private memory; "/dev/zero (deleted)" for
        /// MAP_SHARED|MAP_ANONYMOUS, "/SYSV0000abcd (deleted)" for System V segments.
        public var path: String
        /// The mapping's offset in its file or memory object, in bytes.
        public var offset: UInt64 = 0
        /// The inode of the file or memory object (for shared anonymous memory, its shmem object).
        public var inode: UInt64 = 0

        public init(
            start: UInt64, end: UInt64, permissions: String, path: String, offset: UInt64 = 0, inode: UInt64 = 0
        ) {
            self.start = start
            self.end = end
            self.permissions = permissions
            self.path = path
            self.offset = offset
            self.inode = inode
        }

        public var isShared: Bool { permissions.count == 4 && permissions.last == "s" }
        public var isWritable: Bool { permissions.dropFirst().first == "w" }
    }

    /// What kind of shared memory a path names, when it is memory made to be shared between processes.
    public enum Kind: Equatable, Sendable {
        case anonymous  // MAP_SHARED|MAP_ANONYMOUS, inherited across fork
        case systemV(key: String)  // shmget/shmat
        case posix(path: String)  // shm_open, sem_open and anything else under /dev/shm
        case memfd(name: String)  // memfd_create
    }

    /// Parses `/proc/PID/maps`; lines it cannot read are skipped.
    public static func parseMaps(_ text: String) -> [Mapping] {
        var result: [Mapping] = []
        for line in text.split(separator: "\n") {
            // start-end perms offset dev inode [path]; the path may contain spaces.
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16)
            else { continue }
            var path = fields.count == 6 ? String(fields[5]) : ""
            while path.first == " " { path.removeFirst() }
            result.append(
                Mapping(
                    start: start, end: end, permissions: String(fields[1]), path: path,
                    offset: UInt64(fields[2], radix: 16) ?? 0, inode: UInt64(fields[4]) ?? 0))
        }
        return result
    }

    /// The kind of shared memory behind a path (a mapping's or a descriptor's), or nil for other files.
    public static func kind(ofPath path: String) -> Kind? {
        let deleted = " (deleted)"
        let bare = path.hasSuffix(deleted) ? String(path.dropLast(deleted.count)) : path
        // CRIU restores shared anonymous memory as a memfd it names "/dev/zero".
        if bare == "/dev/zero" || bare == "/memfd:/dev/zero" || bare.hasPrefix("[anon_shmem") { return .anonymous }
        if bare.hasPrefix("/SYSV") { return .systemV(key: "0x" + bare.dropFirst(5)) }
        if bare.hasPrefix("/memfd:") { return .memfd(name: String(bare.dropFirst(7))) }
        if bare.hasPrefix("/dev/shm/") { return .posix(path: bare) }
        return nil
    }

    /// Why a mapping keeps its process from moving, or nil when it may move: every shared mapping of
    /// memory made for sharing (even read-only: the writer stays behind), and writable shared mappings
    /// of any file. Read-only shared mappings of ordinary files (program text, locale archives) move.
    public static func reason(for mapping: Mapping) -> String? {
        guard mapping.isShared else { return nil }
        let at = "at 0x\(String(mapping.start, radix: 16))-0x\(String(mapping.end, radix: 16))"
        switch kind(ofPath: mapping.path) {
        case .anonymous?: return "shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS) \(at)"
        case .systemV(let key)?: return "System V shared memory segment (key \(key)) \(at)"
        case .posix(let path)?: return "POSIX shared memory \(path) \(at)"
        case .memfd(let name)?: return "shared memfd '\(name)' \(at)"
        case nil:
            guard mapping.isWritable else { return nil }
            return "a writable shared mapping of \(mapping.path.isEmpty ? "anonymous memory" : mapping.path) \(at)"
        }
    }

    /// Why a descriptor's target keeps its process from moving (it could map it shared later), or nil.
    public static func reason(forDescriptor fd: Int32, target: String) -> String? {
        switch kind(ofPath: target) {
        case .posix(let path)?: return "POSIX shared memory \(path) (descriptor \(fd))"
        case .memfd(let name)?: return "a memfd '\(name)' (descriptor \(fd))"
        case .systemV?, .anonymous?, nil: return nil
        }
    }

    /// The first reason, over a process's mappings and then its descriptors, why it must stay; nil if none.
    /// With `allowAnonymous`, shared anonymous memory does not count: rforkd keeps it coherent across nodes.
    public static func firstReason(
        maps: String, descriptors: [(fd: Int32, target: String)], allowAnonymous: Bool = false
    ) -> String? {
        for mapping in parseMaps(maps) {
            if allowAnonymous && mapping.isShared && kind(ofPath: mapping.path) == .anonymous { continue }
            if let why = reason(for: mapping) { return why }
        }
        for (fd, target) in descriptors {
            if let why = reason(forDescriptor: fd, target: target) { return why }
        }
        return nil
    }

    /// The sentence a process that must stay is told (after "rfork: "), or nil when nothing it holds is
    /// shared. Reads /proc/PID/maps and /proc/PID/fd; a process whose maps cannot be read stays too.
    public static func check(pid: Int32, allowAnonymous: Bool = false) -> String? {
        guard let bytes = try? Posix.readFile("/proc/\(pid)/maps") else {
            return "cannot read the memory map of process \(pid)"
        }
        let maps = String(decoding: bytes, as: UTF8.self)
        var descriptors: [(fd: Int32, target: String)] = []
        for name in Posix.listDirectory("/proc/\(pid)/fd") {
            guard let fd = Int32(name), let target = Posix.readLink("/proc/\(pid)/fd/\(name)") else { continue }
            // A write-only descriptor cannot be mapped (mmap needs read access): output redirected to a
            // file under /dev/shm is relayed like any written file.
            if Posix.accessMode(pid: pid, fd: name) == O_WRONLY { continue }
            descriptors.append((fd, target))
        }
        return firstReason(maps: maps, descriptors: descriptors, allowAnonymous: allowAnonymous).map {
            "the child shares memory with processes that stay here (\($0)), which cannot follow it to another node yet"
        }
    }
}
