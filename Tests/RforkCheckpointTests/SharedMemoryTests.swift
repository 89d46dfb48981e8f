import Glibc
import RforkCheckpoint
import RforkSystem
import Testing

@Suite(.serialized) struct SharedMemoryTests {
    static let maps = """
        55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234                       /usr/bin/python3.11
        55d0c0a02000-55d0c0b00000 r-xp 00002000 08:01 1234                       /usr/bin/python3.11
        7f10a0000000-7f10a0021000 rw-p 00000000 00:00 0
        7f10a1000000-7f10b0000000 r--p 00000000 08:01 99                         /usr/lib/locale/locale-archive
        7f10b0000000-7f10b0001000 r--s 00000000 08:01 77                         /usr/share/some/read only.db
        7ffd4a1c0000-7ffd4a1e1000 rw-p 00000000 00:00 0                          [stack]
        """

    /// One case: a line added to an otherwise movable map, and what the reason must mention (nil: moves).
    struct Case: Sendable, CustomStringConvertible {
        var line: String
        var mentions: String?
        var description: String { line }
    }

    static let cases: [Case] = [
        .init(
            line: "7f10c0000000-7f10c0001000 rw-s 00000000 00:01 5 /dev/zero (deleted)",
            mentions: "MAP_SHARED|MAP_ANONYMOUS"),
        .init(
            line: "7f10c0000000-7f10c0001000 r--s 00000000 00:01 5 /dev/zero (deleted)",
            mentions: "MAP_SHARED|MAP_ANONYMOUS"),
        .init(
            line: "7f10c0000000-7f10c0001000 rw-s 00000000 00:01 6 /SYSV0000abcd (deleted)", mentions: "key 0x0000abcd"),
        .init(
            line: "7f10c0000000-7f10c0001000 rw-s 00000000 00:19 7 /dev/shm/rfork-test", mentions: "/dev/shm/rfork-test"
        ),
        .init(
            line: "7f10c0000000-7f10c0001000 rw-s 00000000 00:19 8 /dev/shm/sem.3kX8aa (deleted)",
            mentions: "/dev/shm/sem.3kX8aa"),
        .init(
            line: "7f10c0000000-7f10c0001000 rw-s 00000000 00:01 9 /memfd:arena (deleted)", mentions: "memfd 'arena'"),
        .init(
            line: "7f10c0000000-7f10c0001000 rw-s 00000000 08:01 10 /var/data/table.bin",
            mentions: "/var/data/table.bin"),
        .init(
            line: "7f10c0000000-7f10c0001000 rw-s 00000000 08:01 10 /var/data/with space.bin",
            mentions: "with space.bin"),
        .init(line: "7f10c0000000-7f10c0001000 r--s 00000000 08:01 11 /usr/share/fonts/cache", mentions: nil),
        .init(line: "7f10c0000000-7f10c0001000 rw-p 00000000 08:01 12 /var/data/private.bin", mentions: nil),
        .init(line: "7f10c0000000-7f10c0001000 r--p 00000000 00:01 13 /memfd:code (deleted)", mentions: nil),
    ]

    @Test(arguments: cases) func aMappingKeepsTheProcessHereOrNot(_ c: Case) {
        let why = SharedMemory.firstReason(maps: Self.maps + "\n" + c.line, descriptors: [])
        if let mentions = c.mentions {
            #expect(why?.contains(mentions) == true, "reason: \(why ?? "none")")
            #expect(why?.contains("0x7f10c0000000-0x7f10c0001000") == true)
        } else {
            #expect(why == nil)
        }
    }

    @Test func sharedAnonymousMemoryMayFollowWhenAllowedAndCRIUsRestoredFormIsRecognized() {
        let maps = """
            7f0000000000-7f0000002000 rw-s 00002000 00:01 4242                       /dev/zero (deleted)
            7f0000003000-7f0000004000 rw-s 00000000 00:01 4343                       /memfd:/dev/zero (deleted)
            """
        let parsed = SharedMemory.parseMaps(maps)
        #expect(parsed.map(\.inode) == [4242, 4343] && parsed[0].offset == 0x2000)
        #expect(parsed.allSatisfy { SharedMemory.kind(ofPath: $0.path) == .anonymous })
        #expect(SharedMemory.firstReason(maps: maps, descriptors: []) != nil)
        #expect(SharedMemory.firstReason(maps: maps, descriptors: [], allowCoherent: true) == nil)
        // System V segments and named POSIX memory still keep the process here.
        let sysv = maps + "\n7f0000005000-7f0000006000 rw-s 00000000 00:01 9 /SYSV0000abcd (deleted)\n"
        #expect(SharedMemory.firstReason(maps: sysv, descriptors: [], allowCoherent: true) != nil)
        let named = maps + "\n7f0000005000-7f0000006000 rw-s 00000000 00:17 9 /dev/shm/table\n"
        #expect(
            SharedMemory.firstReason(maps: named, descriptors: [], allowCoherent: true)?.contains("/dev/shm/table")
                == true)
    }

    /// Memfds and unlinked /dev/shm files (multiprocessing's locks and arenas) are kept coherent too, and
    /// so a descriptor of one of those objects does not hold the process back; one of another object does.
    @Test func memfdsAndUnlinkedShmFilesFollowWithTheirDescriptors() {
        let maps = """
            7f0000000000-7f0000001000 rw-s 00000000 00:19 77 /dev/shm/sem.mp-x1 (deleted)
            7f0000001000-7f0000003000 rw-s 00000000 00:19 78 /dev/shm/pym-12-abc (deleted)
            7f0000003000-7f0000004000 rw-s 00000000 00:01 79 /memfd:arena (deleted)
            """
        let parsed = SharedMemory.parseMaps(maps)
        #expect(parsed.allSatisfy { $0.isCoherentAcrossNodes })
        #expect(parsed[1].object == SharedMemory.Object(device: .init(major: 0, minor: 0x19), inode: 78))
        #expect(SharedMemory.firstReason(maps: maps, descriptors: []) != nil)
        #expect(SharedMemory.firstReason(maps: maps, descriptors: [], allowCoherent: true) == nil)
        let arena = SharedMemory.Descriptor(
            fd: 5, target: "/dev/shm/pym-12-abc (deleted)",
            object: .init(device: .init(major: 0, minor: 0x19), inode: 78))
        #expect(SharedMemory.firstReason(maps: maps, descriptors: [arena], allowCoherent: true) == nil)
        // The same name, another object (another mount): not the mapped one.
        var other = arena
        other.object = .init(device: .init(major: 0, minor: 0x20), inode: 78)
        #expect(SharedMemory.firstReason(maps: maps, descriptors: [other], allowCoherent: true) != nil)
        let unmapped = SharedMemory.Descriptor(fd: 6, target: "/memfd:spare (deleted)", object: nil)
        #expect(
            SharedMemory.firstReason(maps: maps, descriptors: [unmapped], allowCoherent: true)
                == "a memfd 'spare' (descriptor 6)")
        // A read-only shared mapping of such memory is kept coherent as well (the writer may be elsewhere).
        #expect(
            SharedMemory.parseMaps("7f0000000000-7f0000001000 r--s 00000000 00:01 80 /memfd:ro (deleted)")[0]
                .isCoherentAcrossNodes)
    }

    @Test func anOrdinaryProcessMoves() {
        #expect(
            SharedMemory.firstReason(
                maps: Self.maps, descriptors: [.init(fd: 0, target: "/dev/pts/0"), .init(fd: 3, target: "pipe:[12]")])
                == nil)
        #expect(SharedMemory.parseMaps(Self.maps).count == 6)
        #expect(SharedMemory.parseMaps(Self.maps)[4].path == "/usr/share/some/read only.db")
    }

    @Test func sharedMemoryDescriptorsKeepTheProcessHere() {
        #expect(
            SharedMemory.firstReason(maps: Self.maps, descriptors: [.init(fd: 7, target: "/dev/shm/queue")])
                == "POSIX shared memory /dev/shm/queue (descriptor 7)")
        #expect(
            SharedMemory.firstReason(maps: Self.maps, descriptors: [.init(fd: 4, target: "/memfd:buf (deleted)")])
                == "a memfd 'buf' (descriptor 4)")
        #expect(SharedMemory.firstReason(maps: Self.maps, descriptors: [.init(fd: 5, target: "/var/log/x.log")]) == nil)
    }

    @Test func malformedLinesAreSkipped() {
        #expect(SharedMemory.parseMaps("garbage\n\nzz-yy rw-s 0 0 0 /dev/zero\n").isEmpty)
    }

    /// The real thing: this process maps shared anonymous memory, and /proc says so.
    @Test func aLiveProcessWithSharedMemoryIsSeen() throws {
        let size = 4096
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        try #require(p != MAP_FAILED)
        defer { munmap(p, size) }
        let why = SharedMemory.check(pid: getpid())
        #expect(why?.contains("MAP_SHARED|MAP_ANONYMOUS") == true, "reason: \(why ?? "none")")
        #expect(SharedMemory.check(pid: -1)?.contains("cannot read") == true)
    }

    /// Output redirected into /dev/shm (write-only: it cannot be mapped) does not hold a process back;
    /// the same file open for reading and writing does.
    @Test func onlyMappableDescriptorsCount() throws {
        let path = "/dev/shm/rfork-unit-\(getpid())"
        let writeOnly = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(writeOnly >= 0)
        defer {
            close(writeOnly)
            unlink(path)
        }
        #expect(SharedMemory.check(pid: getpid())?.contains(path) != true)
        let readWrite = open(path, O_RDWR)
        defer { close(readWrite) }
        #expect(SharedMemory.check(pid: getpid())?.contains(path) == true)
    }

    /// A checkpoint saves shared memory only when the job is all that maps it: every other mapper is found.
    @Test func findsEveryOtherProcessThatMapsAnObject() throws {
        let length = 4096
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED
        else { throw SharedMemoryTestError.mmapFailed }
        defer { munmap(p, length) }
        let start = UInt64(UInt(bitPattern: p))
        let maps = SharedMemory.parseMaps(String(decoding: try Posix.readFile("/proc/self/maps"), as: UTF8.self))
        let mapping = try #require(maps.first { $0.start == start })
        #expect(mapping.isCoherentAcrossNodes)
        let me = getpid()
        let found = SharedMemory.mappers(of: [mapping.object], besides: [])
        #expect(found.map(\.0) == [me])
        #expect(SharedMemory.mappers(of: [mapping.object], besides: [me]).isEmpty)
    }

    static let sysvipc = """
               key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
                 0         12   600                  5000 16486     0      2     0     0     0     0          0          0 1796119506                     0                     0
         177340673         13   600                  8192 16487     0      1     0     0     0     0          0          0 1796119506                     0                     0
         177340674         14  1600                  8192 16487     0      1     0     0     0     0          0          0 1796119506                     0                     0
                 0         15   600                  8192 16487     0      2     0     0     0     0          0          0 1796119506                     0                     0
        """

    /// What `rfork migrate` may take along: a private or removed segment only this process attaches, each
    /// attach whole (librfork makes it a memfd as the process moves); not one with a live key, one another
    /// process attaches, or one attached in part.
    @Test func systemVSegmentsThatMoveWithAProcess() {
        let segments = SharedMemory.parseSystemV(Self.sysvipc)
        #expect(segments.count == 4)
        #expect(segments[12] == .init(id: 12, key: 0, mode: 0o600, size: 5000, attaches: 2))
        #expect(segments[14]?.unreachable == true && segments[13]?.unreachable == false)
        func attach(_ id: UInt64, at start: UInt64, length: UInt64 = 8192, offset: UInt64 = 0) -> String {
            let key = String(id == 12 || id == 15 ? 0 : 0xa000_0000 + id, radix: 16)
            return
                "\(String(start, radix: 16))-\(String(start + length, radix: 16)) rw-s \(String(offset, radix: 16)) 00:01 \(id) /SYSV\(String(repeating: "0", count: 8 - key.count) + key) (deleted)"
        }
        let maps = [
            attach(12, at: 0x7f00_0000_0000), attach(12, at: 0x7f00_0001_0000),  // private, both attaches here
            attach(13, at: 0x7f00_0002_0000),  // a live key
            attach(14, at: 0x7f00_0003_0000),  // removed
            attach(15, at: 0x7f00_0004_0000),  // private, but another process attaches it too
        ].joined(separator: "\n")
        let mappings = SharedMemory.parseMaps(maps)
        #expect(SharedMemory.movableSystemV(mappings, segments: segments) == [12, 14])
        // An attach split by mprotect (two mappings, neither whole) does not move.
        let split = SharedMemory.parseMaps(
            [
                attach(14, at: 0x7f00_0003_0000, length: 4096),
                attach(14, at: 0x7f00_0003_1000, length: 4096, offset: 4096),
            ]
            .joined(separator: "\n"))
        #expect(SharedMemory.movableSystemV(split, segments: segments).isEmpty)
        // At a move the movable ones do not count; at a fork or a checkpoint (no segment list) they do.
        let onlyMovable = [attach(12, at: 0x7f00_0000_0000), attach(12, at: 0x7f00_0001_0000)].joined(separator: "\n")
        #expect(
            SharedMemory.firstReason(maps: onlyMovable, descriptors: [], allowCoherent: true, systemV: segments) == nil)
        #expect(
            SharedMemory.firstReason(maps: onlyMovable, descriptors: [], allowCoherent: true)?.contains("System V")
                == true)
        #expect(
            SharedMemory.firstReason(maps: maps, descriptors: [], allowCoherent: true, systemV: segments)?.contains(
                "key 0xa000000d") == true)
    }
}

enum SharedMemoryTestError: Error { case mmapFailed }
