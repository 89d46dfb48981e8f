/// One `rfork migrate PID NODE` request on the process's home node, from the command's ask to its
/// answer. Pure: events in, actions out; the daemon carries the actions out.
///
/// The daemon has checked that the process may move and signalled it. The process's librfork answers
/// the signal by asking to be placed, exactly as a freshly forked child does, and from then on the move is
/// an ordinary home session: the copy runs on the target and the local one becomes its stand-in, or
/// the session ends early and the process simply continues here. Either way the command hears once.
///
/// A process that has already moved runs elsewhere and is a stand-in here: the request is passed on to
/// the node that runs it (which moves it as its own, or passes it on again), and its answer comes back.
public struct Migration: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        /// The process was signalled; its call has not come yet.
        case signalled
        /// The process called in; home session `session` moves it.
        case moving(session: UInt64)
        /// The process runs on `node` (it is a stand-in here): that node was asked to move it.
        case passedOn(node: String)
        /// The command has its answer.
        case finished
    }

    public enum Event: Sendable, Equatable {
        /// The process called in and home session `session` started.
        case called(session: UInt64)
        /// A placement call from the process that this request cannot take (it is already moving).
        case strayCall
        /// The moved copy runs on the target; `frozenMs` since the process stopped its own work.
        case running(session: UInt64, frozenMs: Double, postCopy: Bool)
        /// The session ended before the copy ran: the process continues where it was.
        case stayed(session: UInt64, reason: String)
        /// The process did not call in time (it blocks the signal, or does not run librfork).
        case deadline(seconds: Int)
        /// The process called in, but the move could not start (placement, an unreachable node).
        case refused(reason: String)
        /// The move took longer than any move may (its session is gone, or stuck): give up on it.
        case abandoned(reason: String)
        /// The process runs on `node`, which was asked to move it (instead of signalling it here).
        case passedOn(node: String)
        /// The node asked to move it answered.
        case answered(Outcome)
        /// The link to `node` closed (the process there is reported killed to its parent).
        case linkLost(node: String)
    }

    public enum Action: Sendable, Equatable {
        /// Tell the command how it ended (and forget this request).
        case answer(Outcome)
        /// Tell the process to stay, quietly (a call this request does not take).
        case keepProcessHere
    }

    /// What `rfork migrate` reports (JSON with --json).
    public struct Outcome: Codable, Sendable, Equatable {
        public var pid: Int32
        public var node: String
        public var moved: Bool
        /// From the process's stop (its signal handler) until its copy ran on the target.
        public var frozenMs: Double?
        public var postCopy: Bool?
        public var reason: String?
        /// The process's home node, when the move was not asked there (`rfork migrate --all`).
        public var home: String?

        public init(
            pid: Int32, node: String, moved: Bool, frozenMs: Double? = nil, postCopy: Bool? = nil,
            reason: String? = nil, home: String? = nil
        ) {
            self.pid = pid
            self.node = node
            self.moved = moved
            self.frozenMs = frozenMs
            self.postCopy = postCopy
            self.reason = reason
            self.home = home
        }
    }

    public let pid: Int32
    public let node: String
    public private(set) var state: State = .signalled

    public init(pid: Int32, node: String) {
        self.pid = pid
        self.node = node
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (.signalled, .called(let session)):
            state = .moving(session: session)
            return []
        case (.signalled, .deadline(let seconds)):
            state = .finished
            return [
                .answer(
                    Outcome(
                        pid: pid, node: node, moved: false,
                        reason:
                            "process \(pid) did not answer the move within \(seconds) s (it blocks the move signal or is stuck in the kernel); it keeps running here"
                    ))
            ]
        case (.signalled, .refused(let reason)):
            state = .finished
            return [.answer(Outcome(pid: pid, node: node, moved: false, reason: "\(reason); it keeps running here"))]
        case (.moving(let current), .running(let session, let frozenMs, let postCopy)) where current == session:
            state = .finished
            return [.answer(Outcome(pid: pid, node: node, moved: true, frozenMs: frozenMs, postCopy: postCopy))]
        case (.moving(let current), .stayed(let session, let reason)) where current == session:
            state = .finished
            return [.answer(Outcome(pid: pid, node: node, moved: false, reason: "\(reason); it keeps running here"))]
        case (.moving, .abandoned(let reason)):
            // A backstop: the session behind the move vanished without its end being seen.
            state = .finished
            return [.answer(Outcome(pid: pid, node: node, moved: false, reason: reason))]
        case (.signalled, .passedOn(let where_)):
            state = .passedOn(node: where_)
            return []
        case (.passedOn, .answered(let outcome)):
            state = .finished
            var answer = outcome
            answer.pid = pid
            answer.node = node
            return [.answer(answer)]
        case (.passedOn(let where_), .linkLost(let lost)) where where_ == lost:
            state = .finished
            return [
                .answer(
                    Outcome(
                        pid: pid, node: node, moved: false,
                        reason: "lost the link to \(lost), which ran process \(pid), during the move"))
            ]
        case (.passedOn, .abandoned(let reason)):
            state = .finished
            return [.answer(Outcome(pid: pid, node: node, moved: false, reason: reason))]
        case (_, .strayCall), (.finished, .called), (.moving, .called), (.passedOn, .called):
            return [.keepProcessHere]
        default:
            // Late or foreign events (another session's end, a deadline after the call) change nothing.
            return []
        }
    }

    /// `text` with "process LOCAL" said as "process SHOWN" (whole numbers only): a node that runs a process
    /// for another knows it by another PID than its home, whose user reads the reasons.
    public static func renaming(process local: Int32, to shown: Int32, in text: String) -> String {
        guard local != shown else { return text }
        let from = "process \(local)"
        var out = ""
        var rest = Substring(text)
        while let range = rest.firstRange(of: from) {
            let after = rest[range.upperBound...]
            let whole = after.first.map { !$0.isNumber } ?? true
            out += rest[..<range.lowerBound]
            out += whole ? "process \(shown)" : from
            rest = after
        }
        return out + rest
    }
}
