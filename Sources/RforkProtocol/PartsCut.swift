/// The home's side of a checkpoint of a job with processes on other nodes: one consistent cut of every
/// part. Pure: events in, actions out (the daemon carries them out in `CheckpointParts.swift`).
///
/// Each part is a remote descendant of the job's top process, known here by the session of its
/// stand-in. The top process calls in and waits; then, for every part at once: its stand-in stops
/// reading its inputs and echoes a marker (`pause`), its node is asked for the cut once everything the
/// stand-in sent is in the part's pipes (`ask`), and once the part's images and result are here, a
/// second marker flushes everything the part wrote to this side (`flush`). When every part is saved and
/// flushed, the top part is cut (`cutTop`). However the checkpoint ends (`ended`), every part's node that
/// was asked hears whether DIR holds it (`commit`), and the stand-ins of a job that goes on read again
/// (`resume`). A part whose process ends during the cut (`gone`) is no part any more: its stand-in
/// ends too and is saved with the top part as any ending process; it hears nothing more.
///
/// ```
///  part:  pausing ──paused──► asked ──saved──► flushing ──flushed──► saved     (any but saved ──gone──► gone)
///  cut:   waiting ──topCalledIn──► cutting ──(every part saved)──► cuttingTop ──ended──► ended
///                                   └────────────────────ended (failed)──────────────────┘
/// ```
public struct PartsCut: Sendable, Equatable {
    public enum PartState: Sendable, Equatable {
        case pausing, asked, flushing, saved, gone
    }

    public enum Phase: Sendable, Equatable {
        case waiting, cutting, cuttingTop, ended
    }

    public enum Event: Sendable, Equatable {
        /// The job's top process called in and waits.
        case topCalledIn
        /// A part's stand-in echoed the INPUT marker: it reads its inputs no more.
        case paused(UInt64)
        /// A part's node sent every image and its result.
        case partSaved(UInt64)
        /// A part's stand-in echoed the OUTPUT marker: all the part wrote is written on this side.
        case flushed(UInt64)
        /// A part's process ended before it was saved (its node found it gone).
        case gone(UInt64)
        /// The checkpoint ended: DIR holds it (`written`), or it failed (any reason, at any point).
        case ended(written: Bool)
    }

    public enum Action: Sendable, Equatable {
        /// Send the part's stand-in the INPUT marker.
        case pause(UInt64)
        /// Pass the INPUT marker to the part's node, then ask it for the part's cut.
        case ask(UInt64)
        /// Send the part's stand-in the OUTPUT marker (after the part's last bytes).
        case flush(UInt64)
        /// Cut the top part (its stand-ins' sockets left out) and write DIR with every part's images.
        case cutTop
        /// Tell the part's node whether DIR holds its cut.
        case commit(UInt64, written: Bool)
        /// Let the part's stand-in read its inputs again.
        case resume(UInt64)
    }

    public let parts: [UInt64]
    public let leaveRunning: Bool
    public private(set) var phase: Phase = .waiting
    public private(set) var states: [UInt64: PartState]

    public init(parts: [UInt64], leaveRunning: Bool) {
        self.parts = parts
        self.leaveRunning = leaveRunning
        self.states = Dictionary(parts.map { ($0, PartState.pausing) }, uniquingKeysWith: { a, _ in a })
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (phase, event) {
        case (.waiting, .topCalledIn):
            phase = .cutting
            let live = parts.filter { states[$0] != .gone }
            guard !live.isEmpty else { return topIfWhole() }
            return live.map { .pause($0) }
        case (.waiting, .gone(let id)) where states[id] != nil:
            states[id] = .gone
            return []
        case (.cutting, .paused(let id)) where states[id] == .pausing:
            states[id] = .asked
            return [.ask(id)]
        case (.cutting, .partSaved(let id)) where states[id] == .asked:
            states[id] = .flushing
            return [.flush(id)]
        case (.cutting, .flushed(let id)) where states[id] == .flushing:
            states[id] = .saved
            return topIfWhole()
        case (.cutting, .gone(let id)) where states[id] != nil && states[id] != .saved && states[id] != .gone:
            states[id] = .gone
            return topIfWhole()
        case (.waiting, .ended(let written)), (.cutting, .ended(let written)), (.cuttingTop, .ended(let written)):
            phase = .ended
            // Only a whole cut is written; a part asked before a failure hears that it was not.
            let whole = written && states.values.allSatisfy { $0 == .saved || $0 == .gone }
            var actions: [Action] = []
            for id in parts where states[id] != .gone {
                if states[id] != .pausing { actions.append(.commit(id, written: whole)) }
                if !whole || leaveRunning { actions.append(.resume(id)) }
            }
            return actions
        default:
            return []
        }
    }

    /// The top part is cut once every part is saved and flushed, or gone.
    private mutating func topIfWhole() -> [Action] {
        guard parts.allSatisfy({ states[$0] == .saved || states[$0] == .gone }) else { return [] }
        phase = .cuttingTop
        return [.cutTop]
    }
}
