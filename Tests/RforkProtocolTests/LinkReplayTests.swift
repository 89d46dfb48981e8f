import RforkProtocol
import Testing

@Suite("Link replay: a link that survives its connections")
struct LinkReplayTests {
    @Test func keepsWhatThePeerHasNotAcknowledgedAndSendsItAgainInOrder() {
        var r = ReplayBuffer<String>()
        for m in ["a", "b", "c", "d", "e"] { _ = r.append(m, bytes: 10) }
        #expect(r.acknowledge(2) == ["a", "b"])
        #expect(r.count == 3 && r.bytes == 30)
        // The connection breaks; the peer says it received 4: only "e" goes again.
        #expect(r.canResume(peerReceived: 4))
        #expect(r.acknowledge(4) == ["c", "d"])
        #expect(r.keptNumbers == 5...5)
        #expect(r[5] == "e")
        #expect(r.append("f", bytes: 1) == 6)
        #expect(r.keptNumbers.map { $0.compactMap { r[$0] } } == ["e", "f"])
    }

    struct Resume: Sendable, CustomTestStringConvertible {
        let peerReceived: UInt64
        let resumes: Bool
        var testDescription: String { "peer says \(peerReceived)" }
    }

    /// 5 sent, 2 acknowledged.
    @Test(arguments: [
        Resume(peerReceived: 1, resumes: false),  // fewer than it acknowledged: another link
        Resume(peerReceived: 2, resumes: true),
        Resume(peerReceived: 5, resumes: true),
        Resume(peerReceived: 6, resumes: false),  // more than were sent: another link
    ])
    func aResumeIsTakenOnlyIfTheCountsCanBeRight(_ c: Resume) {
        var r = ReplayBuffer<Int>()
        for m in 1...5 { _ = r.append(m, bytes: 1) }
        _ = r.acknowledge(2)
        #expect(r.canResume(peerReceived: c.peerReceived) == c.resumes)
    }

    @Test func oldOrImpossibleAcknowledgementsChangeNothing() {
        var r = ReplayBuffer<Int>()
        for m in 1...3 { _ = r.append(m, bytes: 1) }
        #expect(r.acknowledge(2) == [1, 2])
        #expect(r.acknowledge(1).isEmpty)
        #expect(r.acknowledge(9).isEmpty)
        #expect(r.count == 1 && r.acknowledged == 2)
    }

    @Test func givingUpReturnsEverythingKeptAndStartsAgain() {
        var r = ReplayBuffer<Int>()
        for m in 1...4 { _ = r.append(m, bytes: 1) }
        _ = r.acknowledge(1)
        #expect(r.reset() == [2, 3, 4])
        #expect(r.sent == 0 && r.count == 0 && r.bytes == 0)
    }

    @Test func manyMessagesStayCheap() {
        var r = ReplayBuffer<Int>()
        for m in 1...10_000 {
            _ = r.append(m, bytes: 1)
            if m % 7 == 0 { _ = r.acknowledge(UInt64(m - 3)) }
        }
        #expect(r.count == 3 + 10_000 % 7)
        #expect(r[UInt64(10_000)] == 10_000)
    }

    @Test func theReceiverSaysHowManyArrivedPeriodicallyOrPastEightMiB() {
        var c = ReceiveCounter(bytesPerAck: 100)
        let nothingYet = c.due()
        let first = c.count(bytes: 60)
        let second = c.count(bytes: 60)
        let told = c.due()
        let again = c.due()
        #expect(nothingYet == nil && !first && second && told == 2 && again == nil)
        _ = c.count(bytes: 1)
        c.toldByHello()
        let afterHello = c.due()
        #expect(afterHello == nil)
    }
}
