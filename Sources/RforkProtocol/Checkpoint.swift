/// One `rfork checkpoint PID DIR` request on the job's home node. Pure: events in, actions out.
///
/// As for a migration, the daemon checks the job and signals its top process, whose librfork calls in
/// and waits (frozen) while CRIU saves the job's process tree into a staging directory that is then
/// swapped in at DIR. With `leaveRunning` the job goes on afterwards; without it, it is ended.
///
/// A job whose top process runs on another node (it moved, or a restart put it there) is saved by that
/// node: the home passes the request on (`passedOn`) and waits for the images and the outcome; the node
/// running the job follows this same machine for its cut, and its answer goes back to the home.
public struct Checkpoint: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case signalled
        /// Asked of the node running the job; its images come here, and DIR is written here.
        case passedOn(node: String)
        case saving
        /// Left running: CRIU's cut is taken and the job goes on (it was frozen `frozenMs`) while the
        /// images are written to DIR.
        case writing(frozenMs: Double)
        case finished
    }

    public enum Event: Sendable, Equatable {
        /// The top process runs on `node`: that node was asked to save the job.
        case passedOn(node: String)
        /// The top process called in; saving starts.
        case called
        /// CRIU has the job's images (the cut); the job was frozen `frozenMs` until now.
        case cut(frozenMs: Double)
        /// A call this request cannot take (it is already saving, or finished).
        case strayCall
        /// The checkpoint is complete at DIR.
        case saved(bytes: Int, frozenMs: Double)
        /// It could not be saved; DIR is as it was.
        case failed(reason: String)
        case deadline(seconds: Int)
    }

    public enum Action: Sendable, Equatable {
        /// Tell the command how it ended (and forget this request).
        case answer(Outcome)
        /// Let the job's top process go on (quietly: it says nothing on stderr).
        case resumeProcess
        /// End the job (it was saved without --leave-running).
        case endJob
        /// Tell a stray caller to carry on.
        case keepProcessHere
    }

    public struct Outcome: Codable, Sendable, Equatable {
        public var pid: Int32
        public var directory: String
        public var saved: Bool
        public var bytes: Int?
        public var frozenMs: Double?
        public var leftRunning: Bool?
        public var reason: String?

        public init(
            pid: Int32, directory: String, saved: Bool, bytes: Int? = nil, frozenMs: Double? = nil,
            leftRunning: Bool? = nil, reason: String? = nil
        ) {
            self.pid = pid
            self.directory = directory
            self.saved = saved
            self.bytes = bytes
            self.frozenMs = frozenMs
            self.leftRunning = leftRunning
            self.reason = reason
        }
    }

    public let pid: Int32
    public let directory: String
    public let leaveRunning: Bool
    public private(set) var state: State = .signalled

    public init(pid: Int32, directory: String, leaveRunning: Bool) {
        self.pid = pid
        self.directory = directory
        self.leaveRunning = leaveRunning
    }

    /// Not saved, and nothing lost: the job goes on and DIR is untouched.
    private func notSaved(_ reason: String) -> Outcome {
        Outcome(
            pid: pid, directory: directory, saved: false,
            reason: "\(reason); the job keeps running and \(directory) is as it was")
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (.signalled, .called):
            state = .saving
            return []
        case (.signalled, .passedOn(let node)):
            state = .passedOn(node: node)
            return []
        case (.passedOn, .saved(let bytes, let frozenMs)):
            // The node running the job has ended it, or let it go on, as asked.
            state = .finished
            return [
                .answer(
                    Outcome(
                        pid: pid, directory: directory, saved: true, bytes: bytes, frozenMs: frozenMs,
                        leftRunning: leaveRunning))
            ]
        case (.passedOn, .failed(let reason)):
            state = .finished
            return [
                .answer(notSaved(reason))
            ]
        case (.signalled, .deadline(let seconds)):
            state = .finished
            return [
                .answer(
                    Outcome(
                        pid: pid, directory: directory, saved: false,
                        reason:
                            "process \(pid) did not answer within \(seconds) s (it blocks the checkpoint signal or is stuck in the kernel); nothing was saved"
                    ))
            ]
        case (.saving, .cut(let frozenMs)) where leaveRunning:
            // The images are taken: the job need not wait for them to be copied, checked and flushed.
            state = .writing(frozenMs: frozenMs)
            return [.resumeProcess]
        case (.writing(let frozenMs), .saved(let bytes, _)):
            state = .finished
            return [
                .answer(
                    Outcome(
                        pid: pid, directory: directory, saved: true, bytes: bytes, frozenMs: frozenMs, leftRunning: true
                    ))
            ]
        case (.writing, .failed(let reason)):
            state = .finished
            return [
                .answer(notSaved(reason))
            ]
        case (.saving, .saved(let bytes, let frozenMs)):
            state = .finished
            let outcome = Outcome(
                pid: pid, directory: directory, saved: true, bytes: bytes, frozenMs: frozenMs, leftRunning: leaveRunning
            )
            return leaveRunning ? [.resumeProcess, .answer(outcome)] : [.endJob, .answer(outcome)]
        case (.saving, .failed(let reason)):
            state = .finished
            return [
                .resumeProcess,
                .answer(notSaved(reason)),
            ]
        case (_, .strayCall), (.saving, .called), (.writing, .called), (.finished, .called), (.passedOn, .called):
            return [.keepProcessHere]
        default:
            return []
        }
    }
}
