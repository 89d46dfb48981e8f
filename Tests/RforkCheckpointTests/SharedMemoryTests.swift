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
}

enum SharedMemoryTestError: Error { case mmapFailed }
