import Testing

@testable import RforkDaemon

@Suite struct LazyChannelTests {
    /// Only a pipe end, as CRIU names it, has a pipe's inode.
    @Test func aPipeEndNamesItsInode() {
        #expect(Node.pipeInode("pipe:[123456]r") == 123456)
        #expect(Node.pipeInode("pipe:[7]w") == 7)
        #expect(Node.pipeInode("tty[8801:1]") == nil)
        #expect(Node.pipeInode("pipe:[]r") == nil)
        #expect(Node.pipeInode("pipe:[12") == nil)
    }
}
