/// Memory shared across nodes, kept coherent page by page: the protocol, pure.
///
/// The design is Li and Hudak's fixed-manager write-invalidate protocol (Ivy), the one Kerrighed's
/// distributed memory also follows. For each shared region one node is the *manager*: the region's home,
/// where it was made. For every page the manager's `CoherenceDirectory` knows the *owner* (the node whose
/// copy is current and which answers for the page) and the *holders* (every node with a readable copy,
/// the owner included). On every node a `CoherenceNode` knows what its own processes may do with each page:
/// nothing, read, or write.
///
/// - A node whose process reads a page it has no copy of asks the manager; the manager asks the owner to
///   send a copy (the owner keeps reading, but no longer writes), and the reader becomes a holder.
/// - A node whose process writes asks the manager; the manager has every other holder drop its copy and
///   waits until each has said so, then either lets the writer write (it already had the current copy) or
///   has the owner send the page and drop it. The writer becomes the owner and the only holder.
/// - The manager runs one transaction per page at a time, in order of arrival; a transaction ends when the
///   requester says it has installed the page (`done`), so no later message about that page can overtake
///   the page itself. Links between nodes are ordered (TCP, resumed without loss), so a page that the
///   manager sends itself (its own copy, or a go-ahead) needs no `done`: the transaction ends as it is
///   sent (`sent`), and anything the manager sends the requester after it arrives after it. That saves a
///   message and a daemon's turn on each side for every page that leaves the manager's node (a page
///   handed back and forth with the home, a bulk copy out of memory the home made).
///
/// Hence at every moment a page has either one writer and no reader elsewhere, or readers that all hold
/// the value of the last write: sequential consistency at page granularity. Atomic instructions are
/// writes, so they are atomic across nodes too.
///
/// A node keeps a page it was just given for at least `minimumHold` before giving it up, so two nodes
/// writing one page in turns both make progress (Mirage's time window).
///
/// Pages that move between writers (a lock, a counter handed back and forth) cost one transfer per
/// turn, not two: an owner that has written its page hands it over *for writing* even to a reader (the
/// reader would write next), and the reader's processes get it write-protected until one of them writes
/// (then a local fault lifts the protection, with no message). An owner that has not written since it got
/// the page shares it instead, so a table read by many is copied once to each, not moved from reader to
/// reader (MESI's exclusive-clean state, and the migratory-sharing optimization of DSM systems).
///
/// What the actions mean to the daemon, which carries them out on the real memory:
/// `protect` write-protects the page in every local process (userfaultfd write-protection), `drop` punches
/// it out of the local memory object (every local process faults on its next touch), `install` copies the
/// received bytes in (or only lifts the protection) and wakes the waiting processes, and `send` of a
/// `page` message with data reads the page's bytes as they are at that moment (after any `protect`
/// before it in the same list).
public enum Coherence {
    public typealias Page = Int

    /// What the processes of one node may do with a page.
    public enum Access: Int, Sendable, Comparable, CustomStringConvertible {
        case none = 0
        case read
        case write

        public static func < (a: Access, b: Access) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["none", "read", "write"][rawValue] }
    }

    public struct Message: Sendable, Equatable, CustomStringConvertible {
        public enum Body: Sendable, Equatable {
            /// node → manager: a process here faulted; it wants to read (or write) the page.
            case request(write: Bool)
            /// manager → owner: send the page to `requester`; drop it after if `write`, else stop writing.
            case fetch(requester: String, write: Bool)
            /// manager → holder: drop your copy.
            case invalidate
            /// holder → manager: dropped.
            case invalidated
            /// owner → requester (with the page's bytes) or manager → requester (without: it already
            /// holds the current copy): you may now read (or write) it.
            case page(write: Bool, withData: Bool)
            /// requester → manager: installed; the transaction is over. Not sent for a page that came from
            /// the manager (see `sent`).
            case done(write: Bool)
            /// The manager's own node → its directory, at once (never over a link): the manager's copy went
            /// to `requester` (for writing if `write`); the transaction is over.
            case sent(requester: String, write: Bool)
            /// manager → requester: the page is lost (its only current copy was on a node that is gone).
            case lost
        }

        public var page: Page
        public var from: String
        public var to: String
        public var body: Body

        public init(page: Page, from: String, to: String, body: Body) {
            self.page = page
            self.from = from
            self.to = to
            self.body = body
        }

        /// Whether the manager's directory (rather than the node's own state) receives it.
        public var forManager: Bool {
            switch body {
            case .request, .invalidated, .done, .sent: return true
            case .fetch, .invalidate, .page, .lost: return false
            }
        }

        public var description: String { "\(from)→\(to) p\(page) \(body)" }
    }
}

/// One node's side of one shared region: what its processes may do with each page, and its requests.
public struct CoherenceNode: Sendable, Equatable {
    public struct Configuration: Sendable, Equatable {
        /// How long a node keeps a page it was given before it gives it up again, in seconds. Default
        /// 50 µs: enough for a woken process to run its next instructions on the page, short against a
        /// round trip between two daemons (about 0.3 ms here).
        public var minimumHold: Double
        /// How long a node keeps a page handed over for writing to a process that asked to read it (a
        /// page that moves between writers), waiting for that process's first write, in seconds; the
        /// minimum hold then starts again at that write. Default 1 ms. Without it the page could leave
        /// before the process it was fetched for had run: the manager's next request can arrive right
        /// behind the page itself (a page from the manager needs no `done`), and the process that
        /// faulted needs its node's CPU back first.
        public var handOverHold: Double
        /// Read-ahead: when a process faults on a page right after the one before it (held here or
        /// asked for), the node also asks for up to this many pages after it, so a sequential pass over
        /// memory has that many transfers under way instead of one. Default 32 (against 8, by hand on the
        /// local cluster: a 64 MiB bulk copy about 83 against 64 MiB/s written, 89 against 63 read back);
        /// 0 turns it off.
        public var readAhead: Int
        /// The region's size in pages (read-ahead stops there); nil: unknown, no read-ahead.
        public var pageCount: Int?

        public init(
            minimumHold: Double = 0.000_05, handOverHold: Double = 0.001, readAhead: Int = 32, pageCount: Int? = nil
        ) {
            self.minimumHold = minimumHold
            self.handOverHold = max(handOverHold, minimumHold)
            self.readAhead = readAhead
            self.pageCount = pageCount
        }
    }

    public enum Event: Sendable, Equatable {
        /// A local process touched `page` and the kernel stopped it (a missing page, or a write to a
        /// write-protected one).
        case fault(page: Coherence.Page, write: Bool, now: Double)
        case received(Coherence.Message, now: Double)
        /// Time passed (the timer asked for by `.timer` fired).
        case tick(now: Double)
        /// The manager (the region's home) is gone: no page can be had any more.
        case managerLost
    }

    public enum Action: Sendable, Equatable {
        case send(Coherence.Message)
        /// Make the page readable or writable by local processes (copying in the received bytes when
        /// `withData`), then wake the processes waiting for it. A page given for writing to a reader is
        /// installed readable: its first local write faults, and lifts the protection (`wake`).
        case install(page: Coherence.Page, access: Coherence.Access, withData: Bool)
        /// Write-protect the page in every local process; it stays readable.
        case protect(page: Coherence.Page)
        /// Take the page out of local memory: every local process faults on its next touch.
        case drop(page: Coherence.Page)
        /// The page is already accessible as asked (a fault that raced with an install, or the first local
        /// write of a page held for writing): lift the write protection if the node may write, and wake.
        case wake(page: Coherence.Page)
        /// The processes that need this page must end: no current copy of it exists any more.
        case kill(page: Coherence.Page, reason: String)
        /// Every local process of the region must end.
        case killAll(reason: String)
        /// Deliver `.tick` at (or after) this time.
        case timer(at: Double)
    }

    public let name: String
    public let manager: String
    public let configuration: Configuration
    /// What a page not in `access` allows: `.write` on the manager (the memory starts there), none elsewhere.
    public let initialAccess: Coherence.Access
    public private(set) var access: [Coherence.Page: Coherence.Access] = [:]
    /// Pages asked of the manager and not yet received, with whether for writing.
    public private(set) var pending: [Coherence.Page: Bool] = [:]
    /// When each page was last installed here.
    public private(set) var installedAt: [Coherence.Page: Double] = [:]
    /// Requests to give a page up that came within its minimum hold, in arrival order.
    public private(set) var deferred: [Coherence.Message] = []
    public private(set) var lost: Set<Coherence.Page> = []
    /// Pages this node may write that no local process has written since it got them (kept
    /// write-protected locally until one does).
    public private(set) var clean: Set<Coherence.Page> = []
    public private(set) var managerGone = false

    public init(name: String, manager: String, configuration: Configuration = Configuration()) {
        self.name = name
        self.manager = manager
        self.configuration = configuration
        self.initialAccess = name == manager ? .write : .none
    }

    public func access(_ page: Coherence.Page) -> Coherence.Access { access[page] ?? initialAccess }

    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .fault(let page, let write, let now):
            return fault(page: page, write: write, now: now)
        case .received(let message, let now):
            guard message.to == name, !message.forManager else { return [] }
            return receive(message, now: now)
        case .tick(let now):
            return releaseDeferred(now: now)
        case .managerLost:
            guard !managerGone else { return [] }
            managerGone = true
            pending = [:]
            deferred = []
            return [.killAll(reason: "the home node \(manager) of this shared memory is gone")]
        }
    }

    private mutating func fault(page: Coherence.Page, write: Bool, now: Double) -> [Action] {
        if lost.contains(page) || managerGone {
            return [.kill(page: page, reason: lostReason(page))]
        }
        let wanted: Coherence.Access = write ? .write : .read
        if access(page) >= wanted {
            if write && clean.remove(page) != nil, installedAt[page] != nil {
                // The first write of a page handed over: the minimum hold starts again now, so that the
                // writer, once woken, completes its write before the page can leave.
                installedAt[page] = now
                return [.wake(page: page)] + (deferred.isEmpty ? [] : [.timer(at: now + configuration.minimumHold)])
            }
            return [.wake(page: page)]
        }
        // One request per page at a time: a later fault waits for it and, woken, faults again if the
        // page came only readable and it writes.
        var actions: [Action] = []
        if pending[page] == nil {
            pending[page] = write
            actions.append(.send(Coherence.Message(page: page, from: name, to: manager, body: .request(write: write))))
        }
        return actions + readAhead(after: page, write: write)
    }

    /// Asks for the pages after `page` when the fault continues a sequential pass (the page before it
    /// is held as wanted, or asked for).
    private mutating func readAhead(after page: Coherence.Page, write: Bool) -> [Action] {
        guard configuration.readAhead > 0, let count = configuration.pageCount, page > 0 else { return [] }
        let wanted: Coherence.Access = write ? .write : .read
        guard access(page - 1) >= wanted || pending[page - 1] == write else { return [] }
        var actions: [Action] = []
        for next in (page + 1)..<min(count, page + 1 + configuration.readAhead) {
            guard access(next) < wanted, pending[next] == nil, !lost.contains(next) else { continue }
            pending[next] = write
            actions.append(.send(Coherence.Message(page: next, from: name, to: manager, body: .request(write: write))))
        }
        return actions
    }

    private mutating func receive(_ message: Coherence.Message, now: Double) -> [Action] {
        let page = message.page
        switch message.body {
        case .page(let write, let withData):
            guard let wanted = pending[page] else { return [] }
            pending[page] = nil
            let granted: Coherence.Access = write ? .write : .read
            access[page] = granted
            installedAt[page] = now
            // Given for writing to a reader: protected here until a local process writes.
            if write && !wanted { clean.insert(page) } else { clean.remove(page) }
            let install = Action.install(page: page, access: write && wanted ? .write : .read, withData: withData)
            // A page from the manager ended its transaction as it was sent.
            guard message.from != manager else { return [install] }
            return [install, .send(Coherence.Message(page: page, from: name, to: manager, body: .done(write: write)))]
        case .lost:
            pending[page] = nil
            lost.insert(page)
            access[page] = Coherence.Access.none
            return [.kill(page: page, reason: lostReason(page))]
        case .fetch, .invalidate:
            // Requests to give a page up wait behind earlier ones and for the page's minimum hold.
            if !deferred.isEmpty || held(page, now: now) {
                let first = deferred.isEmpty
                deferred.append(message)
                return first ? [.timer(at: heldUntil(page) ?? now)] : []
            }
            return giveUp(message)
        case .request, .invalidated, .done, .sent:
            return []
        }
    }

    /// Until when a page just given stays here: its minimum hold, or, handed over for writing and not
    /// yet written here, until its first local write (at most `handOverHold`).
    private func heldUntil(_ page: Coherence.Page) -> Double? {
        guard let at = installedAt[page] else { return nil }
        return at + (clean.contains(page) ? configuration.handOverHold : configuration.minimumHold)
    }

    private func held(_ page: Coherence.Page, now: Double) -> Bool {
        guard let until = heldUntil(page) else { return false }
        return now < until
    }

    private mutating func releaseDeferred(now: Double) -> [Action] {
        var actions: [Action] = []
        while let first = deferred.first {
            if held(first.page, now: now) {
                actions.append(.timer(at: heldUntil(first.page) ?? now))
                break
            }
            deferred.removeFirst()
            actions += giveUp(first)
        }
        return actions
    }

    private mutating func giveUp(_ message: Coherence.Message) -> [Action] {
        let page = message.page
        switch message.body {
        case .fetch(let requester, let write):
            // Never a page this node does not have: the requester hears it is lost.
            guard access(page) > .none else {
                return [.send(Coherence.Message(page: page, from: name, to: requester, body: .lost))]
            }
            var actions: [Action] = []
            // A written page goes on for writing even to a reader; an unwritten one is shared.
            let written = access(page) == .write && !clean.contains(page)
            let handOver = write || written
            if written { actions.append(.protect(page: page)) }
            clean.remove(page)
            actions.append(
                .send(
                    Coherence.Message(
                        page: page, from: name, to: requester, body: .page(write: handOver, withData: true))))
            if handOver {
                actions.append(.drop(page: page))
                access[page] = Coherence.Access.none
            } else {
                access[page] = .read
            }
            if name == manager {
                actions.append(
                    .send(
                        Coherence.Message(
                            page: page, from: name, to: manager, body: .sent(requester: requester, write: handOver))))
            }
            return actions
        case .invalidate:
            access[page] = Coherence.Access.none
            clean.remove(page)
            return [
                .drop(page: page), .send(Coherence.Message(page: page, from: name, to: manager, body: .invalidated)),
            ]
        default:
            return []
        }
    }

    private func lostReason(_ page: Coherence.Page) -> String {
        managerGone
            ? "the home node \(manager) of this shared memory is gone"
            : "page \(page) of shared memory was lost with the node that held its only current copy"
    }
}

/// The manager's directory for one shared region: who owns each page and who holds copies, and the one
/// transaction per page under way.
public struct CoherenceDirectory: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var owner: String
        public var holders: Set<String>
        public var lost = false
        public var transaction: Transaction?
        public var queue: [Request] = []
    }

    public struct Request: Sendable, Equatable {
        public var node: String
        public var write: Bool
    }

    public struct Transaction: Sendable, Equatable {
        public var request: Request
        /// Holders asked to drop their copies, not yet answered.
        public var awaiting: Set<String>
        /// Once `awaiting` is empty: the owner to ask for the page, or nil to let the requester go on with
        /// the copy it has.
        public var fetchFrom: String?
        /// Whether the page (or the go-ahead) has been asked for or sent.
        public var started = false
    }

    public enum Event: Sendable, Equatable {
        case received(Coherence.Message)
        /// A node is gone (given up by failure detection).
        case nodeLost(String)
    }

    public enum Action: Sendable, Equatable {
        case send(Coherence.Message)
    }

    public let manager: String
    public private(set) var entries: [Coherence.Page: Entry] = [:]

    public init(manager: String) {
        self.manager = manager
    }

    public func entry(_ page: Coherence.Page) -> Entry {
        entries[page] ?? Entry(owner: manager, holders: [manager])
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .received(let message):
            guard message.to == manager, message.forManager else { return [] }
            return receive(message)
        case .nodeLost(let node):
            return nodeLost(node)
        }
    }

    private mutating func receive(_ message: Coherence.Message) -> [Action] {
        let page = message.page
        var e = entry(page)
        var actions: [Action] = []
        switch message.body {
        case .request(let write):
            let request = Request(node: message.from, write: write)
            // One request per node and page (a repeat is dropped), but a node may ask again once the
            // manager sent it the page, even if the `sent` that ends that transaction comes later.
            let asking = e.transaction.map {
                $0.request.node == request.node && !($0.started && $0.fetchFrom == manager)
            }
            guard asking != true, !e.queue.contains(where: { $0.node == request.node }) else { return [] }
            e.queue.append(request)
        case .invalidated:
            guard var t = e.transaction, t.awaiting.remove(message.from) != nil else { return [] }
            e.holders.remove(message.from)
            e.transaction = t
        case .done(let write):
            // A read request may end with the page given for writing (the owner had written it).
            guard let t = e.transaction, t.request.node == message.from, t.started, t.fetchFrom != manager,
                t.request.write == write || (write && t.fetchFrom != nil)
            else { return [] }
            finish(&e, node: message.from, write: write)
        case .sent(let requester, let write):
            guard message.from == manager, let t = e.transaction, t.request.node == requester, t.started,
                t.fetchFrom == manager, write || !t.request.write
            else { return [] }
            finish(&e, node: requester, write: write)
        default:
            return []
        }
        actions += advance(page, &e)
        entries[page] = e
        return actions
    }

    /// Ends the transaction: `node` has the page, for writing (the only copy) or reading.
    private func finish(_ e: inout Entry, node: String, write: Bool) {
        if write {
            e.owner = node
            e.holders = [node]
        } else {
            e.holders.insert(node)
        }
        e.transaction = nil
    }

    /// Starts the next transaction, or the next step of the current one.
    private func advance(_ page: Coherence.Page, _ e: inout Entry) -> [Action] {
        var actions: [Action] = []
        while true {
            if e.lost {
                // Everyone waiting for a lost page hears it is lost.
                let waiting = (e.transaction.map { [$0.request] } ?? []) + e.queue
                e.transaction = nil
                e.queue = []
                for r in waiting {
                    actions.append(.send(Coherence.Message(page: page, from: manager, to: r.node, body: .lost)))
                }
                return actions
            }
            if var t = e.transaction {
                guard !t.started, t.awaiting.isEmpty else { return actions }
                t.started = true
                if let owner = t.fetchFrom {
                    actions.append(
                        .send(
                            Coherence.Message(
                                page: page, from: manager, to: owner,
                                body: .fetch(requester: t.request.node, write: t.request.write))))
                    e.transaction = t
                    return actions
                }
                // A go-ahead: the requester already holds the current copy; it ends the transaction.
                actions.append(
                    .send(
                        Coherence.Message(
                            page: page, from: manager, to: t.request.node,
                            body: .page(write: t.request.write, withData: false))))
                finish(&e, node: t.request.node, write: t.request.write)
                continue
            }
            guard !e.queue.isEmpty else { return actions }
            let r = e.queue.removeFirst()
            let hasCopy = e.holders.contains(r.node)
            var t = Transaction(request: r, awaiting: [], fetchFrom: nil)
            if r.write {
                // Every other copy goes first; the owner's too when the writer already holds the current copy.
                let drop = e.holders.subtracting(hasCopy ? [r.node] : [r.node, e.owner])
                t.awaiting = drop
                t.fetchFrom = hasCopy ? nil : e.owner
                for node in drop.sorted() {
                    actions.append(.send(Coherence.Message(page: page, from: manager, to: node, body: .invalidate)))
                }
            } else {
                t.fetchFrom = hasCopy ? nil : e.owner
            }
            e.transaction = t
        }
    }

    private mutating func nodeLost(_ node: String) -> [Action] {
        guard node != manager else { return [] }
        var actions: [Action] = []
        for page in entries.keys.sorted() {
            guard var e = entries[page], !e.lost else { continue }
            e.queue.removeAll { $0.node == node }
            let wasOwner = e.owner == node
            e.holders.remove(node)
            if var t = e.transaction {
                if t.request.node == node {
                    // The requester is gone. A page handed over for writing went with it: the owner (or,
                    // for a go-ahead, the requester itself) no longer has it. An owner asked for a read copy
                    // may have handed its page over for writing too (it had written it), or kept it: not
                    // knowing which, the page is lost (no write can happen any more; copies stay readable).
                    if t.started && t.request.write, let from = t.fetchFrom { e.holders.remove(from) }
                    if t.started && !t.request.write && t.fetchFrom != nil { e.lost = true }
                    e.transaction = nil
                } else {
                    t.awaiting.remove(node)
                    if t.fetchFrom == node {
                        if t.request.write {
                            // The other copies are being dropped; only the requester's own copy can serve.
                            if e.holders.contains(t.request.node) {
                                t.fetchFrom = nil
                                t.started = false
                            } else {
                                e.lost = true
                            }
                        } else if let next = e.holders.subtracting([t.request.node]).sorted().first {
                            // Every copy is current while no write is under way.
                            t.fetchFrom = next
                            t.started = false
                        } else {
                            e.lost = true
                        }
                    }
                    e.transaction = t
                }
            }
            if wasOwner && !e.lost {
                if let next = e.holders.sorted().first { e.owner = next } else { e.lost = true }
            }
            if e.holders.isEmpty { e.lost = true }
            actions += advance(page, &e)
            entries[page] = e
        }
        return actions
    }
}
