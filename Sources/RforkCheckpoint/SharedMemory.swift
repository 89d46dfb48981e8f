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
        /// The device of the file system holding it, as (major, minor).
        public var device: Device = Device(major: 0, minor: 0)

        public init(
            start: UInt64, end: UInt64, permissions: String, path: String, offset: UInt64 = 0, inode: UInt64 = 0,
            device: Device = Device(major: 0, minor: 0)
        ) {
            self.start = start
            self.end = end
            self.permissions = permissions
            self.path = path
            self.offset = offset
            self.inode = inode
            self.device = device
        }

        public var isShared: Bool { permissions.count == 4 && permissions.last == "s" }
        public var isWritable: Bool { permissions.dropFirst().first == "w" }

        /// Whether rforkd keeps this mapping coherent across nodes: a shared mapping of an in-memory object
        /// no path outside the job can reach, so every process that maps it is one rforkd knows: shared
        /// anonymous memory, memfds, and files under /dev/shm that are already unlinked (what
        /// `multiprocessing` makes for its locks and `Value`/`Array` with the fork start method).
        public var isCoherentAcrossNodes: Bool {
            guard isShared else { return false }
            switch SharedMemory.kind(ofPath: path) {
            case .anonymous?, .memfd?: return true
            case .posix?: return path.hasSuffix(" (deleted)")
            case .systemV?, nil: return false
            }
        }

        /// The object it maps: its device and inode.
        public var object: Object { Object(device: device, inode: inode) }
    }

    /// A device number split as /proc prints it.
    public struct Device: Hashable, Sendable {
        public var major: UInt32
        public var minor: UInt32
        public init(major: UInt32, minor: UInt32) {
            self.major = major
            self.minor = minor
        }
        /// From a `dev_t`, split as glibc's major(3) and minor(3) do.
        public init(_ dev: UInt) {
            let d = UInt64(dev)
            major = UInt32(truncatingIfNeeded: ((d >> 8) & 0xfff) | ((d >> 32) & ~UInt64(0xfff)))
            minor = UInt32(truncatingIfNeeded: (d & 0xff) | ((d >> 12) & ~UInt64(0xff)))
        }
    }

    /// A file or memory object, by device and inode.
    public struct Object: Hashable, Sendable {
        public var device: Device
        public var inode: UInt64
        public init(device: Device, inode: UInt64) {
            self.device = device
            self.inode = inode
        }
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
            let dev = fields[3].split(separator: ":")
            let device = Device(
                major: dev.count == 2 ? UInt32(dev[0], radix: 16) ?? 0 : 0,
                minor: dev.count == 2 ? UInt32(dev[1], radix: 16) ?? 0 : 0)
            result.append(
                Mapping(
                    start: start, end: end, permissions: String(fields[1]), path: path,
                    offset: UInt64(fields[2], radix: 16) ?? 0, inode: UInt64(fields[4]) ?? 0, device: device))
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

    /// A descriptor of a process: its number, the target /proc names, the object it opens (nil when it
    /// cannot be told) and its open flags.
    public struct Descriptor: Sendable {
        public var fd: Int32
        public var target: String
        public var object: Object?
        public var flags: Int32
        public init(fd: Int32, target: String, object: Object? = nil, flags: Int32 = O_RDWR) {
            self.fd = fd
            self.target = target
            self.object = object
            self.flags = flags
        }
    }

    /// The descriptors of a process that can read or write (O_PATH ones left out), from /proc.
    public static func openDescriptors(pid: Int32) -> [Descriptor] {
        Posix.listDirectory("/proc/\(pid)/fd").compactMap { name in
            guard let fd = Int32(name), let target = Posix.readLink("/proc/\(pid)/fd/\(name)"),
                let flags = Posix.descriptorFlags(pid: pid, fd: name), flags & Posix.openPathFlag == 0
            else { return nil }
            return Descriptor(fd: fd, target: target, object: object(pid: pid, fd: fd), flags: flags)
        }
    }

    /// A System V segment as `/proc/sysvipc/shm` lists it.
    public struct SystemVSegment: Equatable, Sendable {
        public var id: UInt64
        /// 0 for IPC_PRIVATE.
        public var key: Int64
        /// The permission bits with the kernel's own: `SHM_DEST` (0o1000) once it was removed.
        public var mode: UInt32
        public var size: UInt64
        /// Attaches by every process (`shm_nattch`).
        public var attaches: UInt64
        public init(id: UInt64, key: Int64, mode: UInt32, size: UInt64, attaches: UInt64) {
            self.id = id
            self.key = key
            self.mode = mode
            self.size = size
            self.attaches = attaches
        }
        /// Whether no other process can find it: made with IPC_PRIVATE, or already removed.
        public var unreachable: Bool { key == 0 || mode & 0o1000 != 0 }
    }

    /// Parses `/proc/sysvipc/shm` ("key shmid perms size cpid lpid nattch ..."), by id; lines it cannot read
    /// (the header) are skipped.
    public static func parseSystemV(_ text: String) -> [UInt64: SystemVSegment] {
        var out: [UInt64: SystemVSegment] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 7, let key = Int64(f[0]), let id = UInt64(f[1]), let mode = UInt32(f[2], radix: 8),
                let size = UInt64(f[3]), let attaches = UInt64(f[6])
            else { continue }
            out[id] = SystemVSegment(id: id, key: key, mode: mode, size: size, attaches: attaches)
        }
        return out
    }

    /// The System V segments (by id, the inode of their mappings) that librfork moves into memfds when the
    /// process moves (`rfork migrate`, librfork/sysv.c): no other process can find one or attaches it, and
    /// every attach of it here is whole. Such memory then moves coherent like a memfd; others keep it home.
    public static func movableSystemV(_ mappings: [Mapping], segments: [UInt64: SystemVSegment]) -> Set<UInt64> {
        var attaches: [UInt64: [Mapping]] = [:]
        for m in mappings {
            if case .systemV? = kind(ofPath: m.path) { attaches[m.inode, default: []].append(m) }
        }
        let page = Userfault.pageSize
        return Set(
            attaches.compactMap { id, maps in
                guard let s = segments[id], s.unreachable, s.attaches == UInt64(maps.count) else { return nil }
                let whole = (s.size + page - 1) / page * page
                return maps.allSatisfy { $0.offset == 0 && $0.end - $0.start == whole } ? id : nil
            })
    }

    /// The first reason, over a process's mappings and then its descriptors, why it must stay; nil if none.
    /// With `allowCoherent`, memory rforkd keeps coherent across nodes does not count
    /// (`Mapping.isCoherentAcrossNodes`), nor do descriptors of the objects of such mappings: librfork
    /// reduces those to O_PATH once the memory is shared across nodes, so read(2) and write(2) through
    /// them fail instead of seeing one node's copy. With `systemV` (a move), the segments
    /// `movableSystemV` names do not count either: librfork makes them memfds as it moves.
    public static func firstReason(
        maps: String, descriptors: [Descriptor], allowCoherent: Bool = false,
        systemV: [UInt64: SystemVSegment]? = nil
    ) -> String? {
        let mappings = parseMaps(maps)
        let coherent = Set(mappings.filter(\.isCoherentAcrossNodes).map(\.object))
        let movable = systemV.map { movableSystemV(mappings, segments: $0) } ?? []
        for mapping in mappings {
            if allowCoherent && mapping.isCoherentAcrossNodes { continue }
            if allowCoherent && movable.contains(mapping.inode), case .systemV? = kind(ofPath: mapping.path) {
                continue
            }
            if let why = reason(for: mapping) { return why }
        }
        for d in descriptors {
            if allowCoherent, let object = d.object, coherent.contains(object) { continue }
            if let why = reason(forDescriptor: d.fd, target: d.target) { return why }
        }
        return nil
    }

    /// The processes of this machine outside `known` that map one of `objects`, with the object.
    public static func mappers(of objects: Set<SharedMemory.Object>, besides known: Set<Int32>) -> [(
        Int32, SharedMemory.Object
    )] {
        var out: [(Int32, SharedMemory.Object)] = []
        for name in Posix.listDirectory("/proc") {
            guard let pid = Int32(name), !known.contains(pid),
                let bytes = try? Posix.readFile("/proc/\(pid)/maps"), !bytes.isEmpty
            else { continue }
            let maps = parseMaps(String(decoding: bytes, as: UTF8.self))
            if let m = maps.first(where: { $0.isShared && objects.contains($0.object) }) { out.append((pid, m.object)) }
        }
        return out
    }

    /// The object a descriptor of a process opens, by stat(2) through /proc.
    public static func object(pid: Int32, fd: Int32) -> Object? {
        var st = stat()
        guard stat("/proc/\(pid)/fd/\(fd)", &st) == 0 else { return nil }
        return Object(device: Device(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// The sentence a process that must stay is told (after "rfork: "), or nil when nothing it holds is
    /// shared. Reads /proc/PID/maps and /proc/PID/fd; a process whose maps cannot be read stays too.
    /// `movingSystemV` (with `allowCoherent`, for `rfork migrate`): the System V segments librfork makes
    /// memfds as the process moves do not count (read from /proc/sysvipc/shm).
    public static func check(pid: Int32, allowCoherent: Bool = false, movingSystemV: Bool = false) -> String? {
        guard let bytes = try? Posix.readFile("/proc/\(pid)/maps") else {
            return "cannot read the memory map of process \(pid)"
        }
        let maps = String(decoding: bytes, as: UTF8.self)
        // A write-only descriptor cannot be mapped (mmap needs read access): output redirected to a file
        // under /dev/shm is relayed like any written file.
        let descriptors = openDescriptors(pid: pid).filter { $0.flags & O_ACCMODE != O_WRONLY }
        let systemV =
            movingSystemV
            ? (try? Posix.readFile("/proc/sysvipc/shm")).map { parseSystemV(String(decoding: $0, as: UTF8.self)) }
            : nil
        return firstReason(maps: maps, descriptors: descriptors, allowCoherent: allowCoherent, systemV: systemV).map {
            "the child shares memory with processes that stay here (\($0)), which cannot follow it to another node yet"
        }
    }
}
