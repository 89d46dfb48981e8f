import RforkProtocol
import Testing

@Suite("Migration request (pure)") struct MigrationTests {
    typealias Outcome = Migration.Outcome

    struct Row: Sendable, CustomStringConvertible {
        var name: String
        var events: [Migration.Event]
        var actions: [[Migration.Action]]
        var final: Migration.State
        var description: String { name }
    }

    static let rows: [Row] = [
        Row(
            name: "moves", events: [.called(session: 7), .running(session: 7, frozenMs: 21.5, postCopy: false)],
            actions: [[], [.answer(Outcome(pid: 42, node: "node2", moved: true, frozenMs: 21.5, postCopy: false))]],
            final: .finished),
        Row(
            name: "the session ends early: the process stays",
            events: [.called(session: 7), .stayed(session: 7, reason: "criu dump failed: x")],
            actions: [
                [],
                [
                    .answer(
                        Outcome(
                            pid: 42, node: "node2", moved: false, reason: "criu dump failed: x; it keeps running here"))
                ],
            ],
            final: .finished),
        Row(
            name: "no call in time", events: [.deadline(seconds: 5)],
            actions: [
                [
                    .answer(
                        Outcome(
                            pid: 42, node: "node2", moved: false,
                            reason:
                                "process 42 did not answer the move within 5 s (it blocks the move signal or is stuck in the kernel); it keeps running here"
                        ))
                ]
            ], final: .finished),
        Row(
            name: "a deadline after the call changes nothing",
            events: [.called(session: 7), .deadline(seconds: 5), .running(session: 7, frozenMs: 3, postCopy: true)],
            actions: [[], [], [.answer(Outcome(pid: 42, node: "node2", moved: true, frozenMs: 3, postCopy: true))]],
            final: .finished),
        Row(
            name: "the call cannot start a move", events: [.refused(reason: "node 'node2' is not reachable")],
            actions: [
                [
                    .answer(
                        Outcome(
                            pid: 42, node: "node2", moved: false,
                            reason: "node 'node2' is not reachable; it keeps running here"))
                ]
            ], final: .finished),
        Row(
            name: "another session's end is not ours",
            events: [
                .called(session: 7), .stayed(session: 8, reason: "x"),
                .running(session: 9, frozenMs: 1, postCopy: false),
            ],
            actions: [[], [], []], final: .moving(session: 7)),
        Row(
            name: "a second call while moving stays here", events: [.called(session: 7), .called(session: 8)],
            actions: [[], [.keepProcessHere]], final: .moving(session: 7)),
        Row(
            name: "a call after the answer stays here", events: [.deadline(seconds: 5), .called(session: 8)],
            actions: [
                [
                    .answer(
                        Outcome(
                            pid: 42, node: "node2", moved: false,
                            reason:
                                "process 42 did not answer the move within 5 s (it blocks the move signal or is stuck in the kernel); it keeps running here"
                        ))
                ], [.keepProcessHere],
            ], final: .finished),
    ]

    @Test(arguments: rows) func table(_ row: Row) {
        var m = Migration(pid: 42, node: "node2")
        #expect(m.state == .signalled)
        for (event, expected) in zip(row.events, row.actions) {
            #expect(m.handle(event) == expected, "after \(event)")
        }
        #expect(m.state == row.final)
    }
}
