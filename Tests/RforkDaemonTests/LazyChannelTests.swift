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

@Suite struct PartChannelTests {
    /// A part's channel is known on both sides by its object: a pipe's or memfd's inode, a terminal's rdev.
    @Test func aChannelsKeyIsItsObject() {
        #expect(Node.channelKey("pipe:[4711]w") == 4711)
        #expect(Node.channelKey("file[1f:2a]") == 0x2a)
        #expect(Node.channelKey("tty[8801:16]") == 0x8801)
        #expect(Node.channelKey("tty[8801]") == nil)
        #expect(Node.channelKey("socket:[5]") == nil)
    }
}
