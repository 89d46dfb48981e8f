import Foundation
import Testing

@testable import RforkDaemon

@Suite struct CheckpointRefusalTests {
    /// A process of a job that ended between the walk of the tree and the reading of its memory map holds
    /// nothing: the job is not refused for it (a shell forking all the time was, now and then).
    @Test func aProcessThatEndedSinceTheWalkHoldsNothing() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        let pid = p.processIdentifier
        #expect(Node.heldResourceRefusal(pid: pid)?.contains("cannot read the memory map") == true)
        #expect(Node.jobMemberRefusal(pid: pid) == nil)
    }

    /// A process that lives and holds a socket is still refused.
    @Test func aLiveProcessHoldingASocketIsStillRefused() throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        let why = Node.jobMemberRefusal(pid: getpid())
        #expect(why?.contains("holds a socket") == true)
    }
}

@Suite struct SharedMapperTests {
    /// A process that maps one object twice (a System V segment attached again) has each page at two
    /// addresses: both are protected and woken, and a fault at either is found.
    @Test func aPageMappedTwiceHasBothAddresses() {
        let page: UInt64 = 4096
        let mapper = ShmMapper(pid: 1, pidfd: -1, uffd: -1, uid: 0)
        mapper.ranges["node2/7@0:1"] = [
            (start: 0x10000, end: 0x10000 + 2 * page, firstPage: 0),
            (start: 0x40000, end: 0x40000 + 2 * page, firstPage: 0),
        ]
        #expect(mapper.addresses(of: 1, in: "node2/7@0:1") == [0x10000 + page, 0x40000 + page])
        #expect(mapper.addresses(of: 2, in: "node2/7@0:1").isEmpty)
        #expect(mapper.addresses(of: 0, in: "node3/7@0:1").isEmpty)
        #expect(mapper.pages(at: 0x40000 + page + 12).map { $0.page } == [1])
    }
}
