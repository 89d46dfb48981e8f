import Foundation
import NIOCore
import NIOEmbedded
import RforkWire
import Testing

@testable import RforkDaemon

/// Holds every write's promise instead of completing it, so a test decides when a write "completes".
final class HeldWrites: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Rfork_Wire_V1_Envelope
    var promises: [EventLoopPromise<Void>] = []
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let promise { promises.append(promise) }
    }
}

@Suite("Peer port: one end of a link") struct PeerPortTests {
    static func data() -> Rfork_Wire_V1_Envelope {
        var data = Rfork_Wire_V1_Data()
        data.session = 1
        data.data = Data("x".utf8)
        var envelope = Rfork_Wire_V1_Envelope()
        envelope.data = data
        return envelope
    }

    /// A link given up (or closed for want of use) numbers its envelopes from 0 again: a write of the old
    /// connection that completes late must not settle the new envelope 0, whose own write has not.
    @Test(arguments: [false, true]) func aLateWriteOfAnOldConnectionSettlesNothingNew(rested: Bool) throws {
        let loop = EmbeddedEventLoop()
        let port = PeerPort(loop: loop)
        let old = HeldWrites()
        let first = EmbeddedChannel(handler: old, loop: loop)
        #expect(port.attach(first, peerReceived: 0, resumed: false))
        let lost = port.writeAndFlush(Self.data())
        #expect(old.promises.count == 1)
        if rested { port.rest() } else { port.giveUp() }
        var lostFailed = false
        lost.whenFailure { _ in lostFailed = true }
        #expect(lostFailed)
        let new = HeldWrites()
        let second = EmbeddedChannel(handler: new, loop: loop)
        #expect(port.attach(second, peerReceived: 0, resumed: false))
        let fresh = port.writeAndFlush(Self.data())
        var settled = false
        fresh.whenComplete { _ in settled = true }
        old.promises.first?.succeed(())  // the old connection's write completes now
        #expect(!settled)
        new.promises.first?.succeed(())
        #expect(settled)
        _ = try? first.finish()
        _ = try? second.finish()
    }
}
