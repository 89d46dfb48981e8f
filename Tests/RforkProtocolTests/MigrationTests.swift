import RforkProtocol
import Testing

@Suite("Migration request (pure)") struct MigrationTests {
    typealias Outcome = Migration.Outcome
    static let noAnswer = Outcome(
        pid: 42, node: "node2", moved: false,
        reason:
            "process 42 did not answer the move within 5 s (it blocks the move signal or is stuck in the kernel); it keeps running here"
    )

    struct Row: Sendable, CustomStringConvertible {
        var name: String
        var events: [Migration.Event]
        var actions: [[Migration.Action]]
        var final: Migration.State
        var description: String { name }
    }

    static let rows: [Row] = [
        Row(
            name: "a process that runs elsewhere: the node running it answers",
            events: [
                .passedOn(node: "node2"), .deadline(seconds: 5),
                .answered(Outcome(pid: 13, node: "node3", moved: true, frozenMs: 30, postCopy: false)),
            ],
            actions: [[], [], [.answer(Outcome(pid: 42, node: "node2", moved: true, frozenMs: 30, postCopy: false))]],
            final: .finished),
        Row(
            name: "passed on, then the link to that node closes",
            events: [.passedOn(node: "node2"), .linkLost(node: "node3"), .linkLost(node: "node2")],
            actions: [
                [], [],
                [
                    .answer(
                        Outcome(
                            pid: 42, node: "node2", moved: false,
                            reason: "lost the link to node2, which ran process 42, during the move"))
                ],
            ],
            final: .finished),
        Row(
            name: "passed on: a call from the stand-in is not taken, a late answer changes nothing",
            events: [
                .passedOn(node: "node3"), .called(session: 1),
                .answered(Outcome(pid: 7, node: "x", moved: false, reason: "r")),
                .answered(Outcome(pid: 7, node: "x", moved: true)),
            ],
            actions: [
                [], [.keepProcessHere], [.answer(Outcome(pid: 42, node: "node2", moved: false, reason: "r"))], [],
            ],
            final: .finished),
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
                [.answer(Self.noAnswer)]
            ], final: .finished),
        Row(
            name: "a deadline after the call changes nothing",
            events: [.called(session: 7), .deadline(seconds: 5), .running(session: 7, frozenMs: 3, postCopy: true)],
            actions: [[], [], [.answer(Outcome(pid: 42, node: "node2", moved: true, frozenMs: 3, postCopy: true))]],
            final: .finished),
        Row(
            name: "a move that never ends is given up",
            events: [.called(session: 7), .abandoned(reason: "the move of process 42 did not end within 10 minutes")],
            actions: [
                [],
                [
                    .answer(
                        Outcome(
                            pid: 42, node: "node2", moved: false,
                            reason: "the move of process 42 did not end within 10 minutes"))
                ],
            ],
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
                [.answer(Self.noAnswer)], [.keepProcessHere],
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

@Suite("Checkpoint request (pure)") struct CheckpointTests {
    typealias Outcome = Checkpoint.Outcome

    @Test func savedAndEnded() {
        var c = Checkpoint(pid: 9, directory: "/ck", leaveRunning: false)
        #expect(c.handle(.called) == [])
        #expect(c.handle(.called) == [.keepProcessHere])
        #expect(
            c.handle(.saved(bytes: 4096, frozenMs: 12))
                == [
                    .endJob,
                    .answer(
                        Outcome(pid: 9, directory: "/ck", saved: true, bytes: 4096, frozenMs: 12, leftRunning: false)),
                ])
        #expect(c.state == .finished)
        #expect(c.handle(.deadline(seconds: 5)) == [])
    }

    @Test func savedAndLeftRunning() {
        var c = Checkpoint(pid: 9, directory: "/ck", leaveRunning: true)
        _ = c.handle(.called)
        #expect(
            c.handle(.saved(bytes: 1, frozenMs: 2))
                == [
                    .resumeProcess,
                    .answer(Outcome(pid: 9, directory: "/ck", saved: true, bytes: 1, frozenMs: 2, leftRunning: true)),
                ])
    }

    @Test func leftRunningTheJobGoesOnOnceCRIUHasItsImages() {
        var c = Checkpoint(pid: 9, directory: "/ck", leaveRunning: true)
        _ = c.handle(.called)
        #expect(c.handle(.cut(frozenMs: 30)) == [.resumeProcess])
        #expect(c.handle(.called) == [.keepProcessHere])
        #expect(
            c.handle(.saved(bytes: 1, frozenMs: 900))
                == [.answer(Outcome(pid: 9, directory: "/ck", saved: true, bytes: 1, frozenMs: 30, leftRunning: true))])
        var d = Checkpoint(pid: 9, directory: "/ck", leaveRunning: true)
        _ = d.handle(.called)
        _ = d.handle(.cut(frozenMs: 30))
        #expect(
            d.handle(.failed(reason: "disk full"))
                == [
                    .answer(
                        Outcome(
                            pid: 9, directory: "/ck", saved: false,
                            reason: "disk full; the job keeps running and /ck is as it was"))
                ])
        // Without --leave-running the job stays stopped until it is saved (then it ends).
        var e = Checkpoint(pid: 9, directory: "/ck", leaveRunning: false)
        _ = e.handle(.called)
        #expect(e.handle(.cut(frozenMs: 30)) == [])
        #expect(e.handle(.saved(bytes: 1, frozenMs: 40)).first == .endJob)
    }

    /// The top process runs on node2: node2 takes the cut and ends or resumes the job itself; the home
    /// only answers, and no call, deadline or stray call acts on a process here.
    @Test func passedOnToTheNodeRunningTheJob() {
        var c = Checkpoint(pid: 9, directory: "/ck", leaveRunning: false)
        #expect(c.handle(.passedOn(node: "node2")) == [])
        #expect(c.state == .passedOn(node: "node2"))
        #expect(c.handle(.deadline(seconds: 5)) == [])
        #expect(c.handle(.called) == [.keepProcessHere])
        #expect(
            c.handle(.saved(bytes: 8, frozenMs: 50))
                == [.answer(Outcome(pid: 9, directory: "/ck", saved: true, bytes: 8, frozenMs: 50, leftRunning: false))]
        )
        #expect(c.state == .finished)
        var d = Checkpoint(pid: 9, directory: "/ck", leaveRunning: true)
        _ = d.handle(.passedOn(node: "node2"))
        #expect(
            d.handle(.failed(reason: "lost the link to node2"))
                == [
                    .answer(
                        Outcome(
                            pid: 9, directory: "/ck", saved: false,
                            reason: "lost the link to node2; the job keeps running and /ck is as it was"))
                ])
        #expect(d.handle(.saved(bytes: 1, frozenMs: 1)) == [])
    }

    @Test func aFailedSaveLeavesTheJobRunning() {
        var c = Checkpoint(pid: 9, directory: "/ck", leaveRunning: false)
        _ = c.handle(.called)
        #expect(
            c.handle(.failed(reason: "criu dump failed: x"))
                == [
                    .resumeProcess,
                    .answer(
                        Outcome(
                            pid: 9, directory: "/ck", saved: false,
                            reason: "criu dump failed: x; the job keeps running and /ck is as it was")),
                ])
    }

    @Test func noCallInTime() {
        var c = Checkpoint(pid: 9, directory: "/ck", leaveRunning: false)
        let actions = c.handle(.deadline(seconds: 5))
        guard case .answer(let outcome)? = actions.first else {
            Issue.record("no answer: \(actions)")
            return
        }
        #expect(!outcome.saved)
        #expect(c.handle(.called) == [.keepProcessHere])
    }

    @Test func reasonsNameTheProcessAsItsHomeKnowsIt() {
        #expect(
            Migration.renaming(
                process: 114, to: 42, in: "process 114 already runs on node1; process 1140 too, process 114")
                == "process 42 already runs on node1; process 1140 too, process 42")
        #expect(Migration.renaming(process: 7, to: 7, in: "process 7") == "process 7")
    }
}
