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
