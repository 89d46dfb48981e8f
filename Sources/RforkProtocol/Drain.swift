/// `rfork migrate --all --from NODE`: every process NODE runs for other nodes is moved off it. Pure: it
/// says when to start each process's migration (each its own `Migration`), and the daemon feeds their
/// answers here; the command hears once, when every move has ended.
///
/// At most `window` moves are under way at once: a process is frozen from its signal until it runs on
/// its new node, so starting all of them together would keep each frozen while the others' dumps and
/// restores queue for the same CPUs (measured: 20 at once froze each 10× as long as one move alone).
/// Started as the previous ones end, each is frozen about as long as a single move, and the moves
/// still overlap (one dumps here while another restores there).
public struct Drain: Sendable, Equatable {
    /// What the command reports (JSON with --json).
    public struct Outcome: Codable, Sendable, Equatable {
        /// The node drained.
        public var from: String
        /// One per process, in the order they were listed; `pid` is the PID its home knows it by.
        public var moves: [Migration.Outcome]
        /// How many moved.
        public var moved: Int
        /// The median freeze of the moves that happened.
        public var medianFrozenMs: Double?

        public init(from: String, moves: [Migration.Outcome]) {
            self.from = from
            self.moves = moves
            let frozen = moves.filter(\.moved).compactMap(\.frozenMs).sorted()
            moved = moves.filter(\.moved).count
            medianFrozenMs =
                frozen.isEmpty
                ? nil
                : frozen.count % 2 == 1
                    ? frozen[frozen.count / 2] : (frozen[frozen.count / 2 - 1] + frozen[frozen.count / 2]) / 2
        }
    }

    public enum Event: Sendable, Equatable {
        /// The moves have been started (the command hears at once when there is nothing to move).
        case started
        /// The move of process number `index` ended.
        case answered(index: Int, Migration.Outcome)
    }

    public enum Action: Sendable, Equatable {
        /// Start moving process number `index`.
        case start(index: Int)
        case answer(Outcome)
    }

    /// How many moves may be under way at once when none is given.
    public static let defaultWindow = 2

    public let from: String
    public let window: Int
    public private(set) var moves: [Migration.Outcome?]
    public private(set) var started = 0
    public private(set) var finished = false

    public init(from: String, count: Int, window: Int = Drain.defaultWindow) {
        self.from = from
        self.window = max(1, window)
        self.moves = Array(repeating: nil, count: max(0, count))
    }

    public mutating func handle(_ event: Event) -> [Action] {
        guard !finished else { return [] }
        switch event {
        case .started:
            guard started == 0 else { return [] }
        case .answered(let index, let outcome):
            // Each started process answers once; a second answer, or one for no such process, changes nothing.
            guard index < started, moves.indices.contains(index), moves[index] == nil else { return [] }
            moves[index] = outcome
        }
        let done = moves.compactMap { $0 }
        if done.count == moves.count {
            finished = true
            return [.answer(Outcome(from: from, moves: done))]
        }
        var actions: [Action] = []
        while started < moves.count && started - done.count < window {
            actions.append(.start(index: started))
            started += 1
        }
        return actions
    }
}
