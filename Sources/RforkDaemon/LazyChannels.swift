import NIOCore
import RforkSystem
import RforkWire

/// Lazy input channels: every pipe read end a child moves with (at its fork its parent holds the same
/// read end, and may read it), so the stand-in reads it only when the remote child reads, one read(2) of
/// the child's size per demand (64 KiB when the child waits for it in poll, select or epoll, which says
/// no size), and takes no byte another reader should get. Once the stand-in holds the only read end
/// left on this node (the parent closed its own, as most parents do), nobody can lose bytes to it: the
/// home daemon, which as root sees every process's descriptors, tells the stand-in and the namespace init
/// to treat it as an ordinary input channel, read ahead within the flow-control window.
extension Node {
    /// The least time between two looks for other readers of one lazy channel's pipe.
    static let readerCheckNanoseconds: UInt64 = 250_000_000

    /// After a demand on `channel` of `session`: when the stand-in is the pipe's only reader, makes the
    /// channel eager (first at the target, whose namespace init stops asking, then at the stand-in).
    func checkSoleReader(_ session: HomeSession, channel: UInt32) {
        guard !session.eagerChannels.contains(channel),
            let lazy = session.request.channels.first(where: { $0.id == channel }), lazy.kind == .lazyInput,
            let inode = Self.pipeInode(lazy.criuID)
        else { return }
        let now = Posix.monotonicNanoseconds()
        if let last = session.readersCheckedAt[channel], now &- last < Self.readerCheckNanoseconds { return }
        session.readersCheckedAt[channel] = now
        let standIn = session.localPID
        threads.runIfActive(eventLoop: loop) { Posix.pipeReaders(inode: inode).map(\.pid) }.whenSuccess { readers in
            guard readers == [standIn], self.sessions.home[session.id] === session, session.state == .running,
                session.eagerChannels.insert(channel).inserted
            else { return }
            self.logger.info(
                "channel \(channel) of child \(session.pid) is read ahead: its stand-in holds the pipe's only read end")
            var demand = Rfork_Wire_V1_Demand()
            demand.session = session.id
            demand.channel = channel
            demand.bytes = LocalWire.eagerDemand
            var envelope = Envelope()
            envelope.demand = demand
            self.wire(to: session.target)?.writeAndFlush(envelope, promise: nil)
            session.child.writeAndFlush(
                LocalFrame.demand(channel: channel, bytes: LocalWire.eagerDemand), promise: nil)
        }
    }

    /// The inode of a pipe end named as CRIU names it ("pipe:[INO]r"), or nil for anything else.
    static func pipeInode(_ criuID: String) -> UInt64? {
        guard criuID.hasPrefix("pipe:["), let close = criuID.firstIndex(of: "]") else { return nil }
        return UInt64(criuID[criuID.index(criuID.startIndex, offsetBy: 6)..<close])
    }
}
