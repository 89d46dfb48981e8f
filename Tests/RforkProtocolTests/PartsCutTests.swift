import RforkProtocol
import Testing

@Suite("PartsCut (pure)") struct PartsCutTests {
    /// Two parts (sessions 7 and 9): every step of each, in an order the network may give.
    @Test func theTopPartIsCutOnceEveryPartIsSavedAndFlushed() {
        var cut = PartsCut(parts: [7, 9], leaveRunning: false)
        #expect(cut.handle(.paused(7)) == [])  // before the top process called in: not news
        #expect(cut.handle(.topCalledIn) == [.pause(7), .pause(9)])
        #expect(cut.handle(.topCalledIn) == [])
        #expect(cut.handle(.paused(9)) == [.ask(9)])
        #expect(cut.handle(.paused(9)) == [])  // a second echo
        #expect(cut.handle(.partSaved(7)) == [])  // not asked yet
        #expect(cut.handle(.flushed(9)) == [])  // not saved yet
        #expect(cut.handle(.partSaved(9)) == [.flush(9)])
        #expect(cut.handle(.paused(7)) == [.ask(7)])
        #expect(cut.handle(.flushed(9)) == [])
        #expect(cut.handle(.partSaved(7)) == [.flush(7)])
        #expect(cut.handle(.flushed(7)) == [.cutTop])
        #expect(cut.phase == .cuttingTop)
        #expect(cut.handle(.flushed(7)) == [])
        // Saved without --leave-running: every part ends with the job; no stand-in reads again.
        #expect(cut.handle(.ended(written: true)) == [.commit(7, written: true), .commit(9, written: true)])
        #expect(cut.handle(.ended(written: true)) == [])
    }

    /// A part whose process ends during the cut is dropped: the others are cut, then the top part, and
    /// only the parts still there hear the commit.
    @Test func aPartThatEndsDuringTheCutIsDropped() {
        var early = PartsCut(parts: [7, 9], leaveRunning: true)
        #expect(early.handle(.gone(7)) == [])  // before the top process called in: never paused
        #expect(early.handle(.topCalledIn) == [.pause(9)])
        #expect(early.handle(.ended(written: false)) == [.resume(9)])

        var cut = PartsCut(parts: [7, 9], leaveRunning: true)
        #expect(cut.handle(.topCalledIn) == [.pause(7), .pause(9)])
        #expect(cut.handle(.paused(7)) == [.ask(7)])
        #expect(cut.handle(.paused(9)) == [.ask(9)])
        #expect(cut.handle(.partSaved(9)) == [.flush(9)])
        #expect(cut.handle(.flushed(9)) == [])
        #expect(cut.handle(.gone(7)) == [.cutTop])
        #expect(cut.handle(.gone(7)) == [])
        #expect(cut.handle(.gone(9)) == [])  // saved already: it stays saved
        #expect(cut.handle(.ended(written: true)) == [.commit(9, written: true), .resume(9)])

        var alone = PartsCut(parts: [7], leaveRunning: false)
        _ = alone.handle(.topCalledIn)
        #expect(alone.handle(.gone(7)) == [.cutTop])  // before its stand-in even echoed
        #expect(alone.handle(.ended(written: true)) == [])

        var none = PartsCut(parts: [7], leaveRunning: false)
        _ = none.handle(.gone(7))
        #expect(none.handle(.topCalledIn) == [.cutTop])  // every part ended before the top called in
    }

    struct Failure: CustomTestStringConvertible, Sendable {
        let name: String
        let before: [PartsCut.Event]
        let leaveRunning: Bool
        let written: Bool
        let expected: [PartsCut.Action]
        var testDescription: String { name }
    }

    /// However it ends, a node asked for a part hears whether DIR holds it, and a job that goes on gets
    /// its stand-ins reading again; a node not asked yet hears nothing.
    static let endings: [Failure] = [
        Failure(
            name: "fails before the top process calls in", before: [], leaveRunning: false, written: false,
            expected: [.resume(7), .resume(9)]),
        Failure(
            name: "fails while the stand-ins pause", before: [.topCalledIn], leaveRunning: false, written: false,
            expected: [.resume(7), .resume(9)]),
        Failure(
            name: "fails with one part asked", before: [.topCalledIn, .paused(9)], leaveRunning: true,
            written: false, expected: [.resume(7), .commit(9, written: false), .resume(9)]),
        Failure(
            name: "fails with one part saved", before: [.topCalledIn, .paused(7), .partSaved(7), .paused(9)],
            leaveRunning: false, written: false,
            expected: [.commit(7, written: false), .resume(7), .commit(9, written: false), .resume(9)]),
        Failure(
            name: "a write said before the parts are in is no whole cut",
            before: [.topCalledIn, .paused(7), .partSaved(7), .flushed(7)], leaveRunning: false, written: true,
            expected: [.commit(7, written: false), .resume(7), .resume(9)]),
        Failure(
            name: "saved, left running: the parts go on and the stand-ins read again",
            before: [
                .topCalledIn, .paused(7), .paused(9), .partSaved(7), .partSaved(9), .flushed(9), .flushed(7),
            ], leaveRunning: true, written: true,
            expected: [.commit(7, written: true), .resume(7), .commit(9, written: true), .resume(9)]),
        Failure(
            name: "the top part's cut fails: the parts go on",
            before: [
                .topCalledIn, .paused(7), .paused(9), .partSaved(7), .partSaved(9), .flushed(9), .flushed(7),
            ], leaveRunning: false, written: false,
            expected: [.commit(7, written: false), .resume(7), .commit(9, written: false), .resume(9)]),
    ]

    @Test(arguments: endings) func everyEndingTellsTheAskedNodesAndResumesAJobThatGoesOn(_ f: Failure) {
        var cut = PartsCut(parts: [7, 9], leaveRunning: f.leaveRunning)
        for event in f.before { _ = cut.handle(event) }
        #expect(cut.handle(.ended(written: f.written)) == f.expected)
        #expect(cut.phase == .ended)
        #expect(cut.handle(.topCalledIn) == [])
        #expect(cut.handle(.paused(7)) == [])
    }
}
