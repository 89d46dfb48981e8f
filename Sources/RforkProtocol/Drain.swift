/// `rfork migrate --all --from NODE`: every process NODE runs for other nodes is moved off it, all at once.
/// Pure: the daemon starts one migration per process (each its own `Migration`) and feeds their answers
/// here; the command hears once, when every move has ended.
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
        case answer(Outcome)
    }

    public let from: String
    public private(set) var moves: [Migration.Outcome?]
    public private(set) var finished = false

    public init(from: String, count: Int) {
        self.from = from
        self.moves = Array(repeating: nil, count: max(0, count))
    }

    public mutating func handle(_ event: Event) -> [Action] {
        guard !finished else { return [] }
        switch event {
        case .started:
            break
        case .answered(let index, let outcome):
            // Each process answers once; a second answer, or one for no process, changes nothing.
            guard moves.indices.contains(index), moves[index] == nil else { return [] }
            moves[index] = outcome
        }
        let done = moves.compactMap { $0 }
        guard done.count == moves.count else { return [] }
        finished = true
        return [.answer(Outcome(from: from, moves: done))]
    }
}
