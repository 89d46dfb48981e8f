import RforkProtocol
import Testing

@Suite("Drain (pure)") struct DrainTests {
    typealias Move = Migration.Outcome

    @Test func nothingToMoveIsAnsweredAtOnce() {
        var drain = Drain(from: "node2", count: 0)
        #expect(drain.handle(.started) == [.answer(Drain.Outcome(from: "node2", moves: []))])
        #expect(drain.handle(.started) == [])
    }

    @Test func theCommandHearsOnceWhenEveryMoveHasEnded() {
        var drain = Drain(from: "node2", count: 3, window: 3)
        let a = Move(pid: 10, node: "node3", moved: true, frozenMs: 30)
        let b = Move(pid: 11, node: "node1", moved: false, reason: "process 11 has children")
        let c = Move(pid: 12, node: "node3", moved: true, frozenMs: 50)
        #expect(drain.handle(.started) == [.start(index: 0), .start(index: 1), .start(index: 2)])
        #expect(drain.handle(.answered(index: 2, c)) == [])
        #expect(drain.handle(.answered(index: 2, a)) == [])  // a second answer for one process
        #expect(drain.handle(.answered(index: 7, a)) == [])  // an answer for no process
        #expect(drain.handle(.answered(index: 0, a)) == [])
        let actions = drain.handle(.answered(index: 1, b))
        #expect(actions == [.answer(Drain.Outcome(from: "node2", moves: [a, b, c]))])
        #expect(drain.handle(.answered(index: 1, b)) == [])
    }

    @Test func atMostAWindowOfMovesIsUnderWayAtOnce() {
        var drain = Drain(from: "node2", count: 5, window: 2)
        let m = Move(pid: 1, node: "node1", moved: true, frozenMs: 20)
        #expect(drain.handle(.started) == [.start(index: 0), .start(index: 1)])
        #expect(drain.handle(.started) == [])
        #expect(drain.handle(.answered(index: 3, m)) == [])  // not started: ignored
        #expect(drain.handle(.answered(index: 1, m)) == [.start(index: 2)])
        #expect(drain.handle(.answered(index: 0, m)) == [.start(index: 3)])
        #expect(drain.handle(.answered(index: 3, m)) == [.start(index: 4)])
        #expect(drain.handle(.answered(index: 2, m)) == [])
        #expect(
            drain.handle(.answered(index: 4, m)) == [.answer(Drain.Outcome(from: "node2", moves: [m, m, m, m, m]))])
    }

    @Test func theMedianIsOverTheMovesThatHappened() {
        let moves = [
            Move(pid: 1, node: "n", moved: true, frozenMs: 40), Move(pid: 2, node: "n", moved: true, frozenMs: 10),
            Move(pid: 3, node: "n", moved: false, reason: "x"), Move(pid: 4, node: "n", moved: true, frozenMs: 20),
            Move(pid: 5, node: "n", moved: true, frozenMs: 30),
        ]
        let outcome = Drain.Outcome(from: "node2", moves: moves)
        #expect(outcome.moved == 4)
        #expect(outcome.medianFrozenMs == 25)
        #expect(Drain.Outcome(from: "node2", moves: [moves[2]]).medianFrozenMs == nil)
    }
}
