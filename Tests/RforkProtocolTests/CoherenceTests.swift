import RforkProtocol
import Testing

/// A small world of nodes running the coherence protocol over ordered links, with the memory the actions
/// act on: each node's copy of each page (nil: dropped), and the value of the last write of each page.
private struct World {
    typealias Message = Coherence.Message
    var directory: CoherenceDirectory
    var nodes: [String: CoherenceNode]
    /// Ordered links, (from, to) → messages with the page value they carry.
    var links: [String: [(Message, Int?)]] = [:]
    var copies: [String: [Int: Int]] = [:]
    var latest: [Int: Int] = [:]
    var timers: [String: Double] = [:]
    var killed: [String] = []
    var now = 0.0

    init(names: [String], manager: String, hold: Double = 0.001, readAhead: Int = 0) {
        directory = CoherenceDirectory(manager: manager)
        nodes = [:]
        for n in names {
            nodes[n] = CoherenceNode(
                name: n, manager: manager,
                configuration: CoherenceNode.Configuration(minimumHold: hold, readAhead: readAhead, pageCount: 3))
            copies[n] = [:]
        }
        // The memory starts on the manager, all zero.
        for page in 0..<8 { copies[manager]?[page] = 0 }
    }

    func copy(_ node: String, _ page: Int) -> Int? { copies[node]?[page] }

    mutating func setCopy(_ node: String, _ page: Int, _ value: Int?) { copies[node]?[page] = value }

    /// A process on `node` reads (or writes) `page`; true when it could, false when it faulted.
    mutating func access(_ node: String, _ page: Int, write: Bool) -> Bool {
        guard let n = nodes[node] else { return false }
        if write && n.access(page) == .write && n.clean.contains(page) {
            // The first local write of a page held for writing faults (the page is protected here).
            let actions = nodes[node]!.handle(.fault(page: page, write: true, now: now))
            #expect(
                actions.first == .wake(page: page)
                    && actions.dropFirst().allSatisfy { if case .timer = $0 { true } else { false } })
            run(node, Array(actions.dropFirst()), received: nil)
        }
        let have = nodes[node]!.access(page)
        if have >= (write ? .write : .read) {
            let value = copy(node, page)
            #expect(value == latest[page, default: 0], "\(node) reads a stale page \(page)")
            if write {
                latest[page, default: 0] += 1
                setCopy(node, page, latest[page])
            }
            return true
        }
        let actions = nodes[node]!.handle(.fault(page: page, write: write, now: now))
        run(node, actions, received: nil)
        return false
    }

    mutating func run(_ node: String, _ actions: [CoherenceNode.Action], received: (Message, Int?)?) {
        for a in actions {
            switch a {
            case .send(let m):
                if case .sent = m.body {
                    // The manager's own node tells its directory at once (rforkd delivers it in place).
                    runDirectory(directory.handle(.received(m)))
                    continue
                }
                var value: Int? = nil
                if case .page(_, true) = m.body {
                    value = copy(node, m.page)
                    #expect(value != nil, "\(node) sends a page it does not have")
                }
                links["\(m.from)>\(m.to)", default: []].append((m, value))
            case .install(let page, _, let withData):
                if withData {
                    setCopy(node, page, received?.1)
                } else {
                    #expect(copy(node, page) == latest[page, default: 0], "a go-ahead without a current copy")
                }
            case .drop(let page):
                setCopy(node, page, nil)
            case .protect, .wake:
                break
            case .kill(let page, let reason):
                killed.append("\(node) p\(page): \(reason)")
            case .killAll(let reason):
                killed.append("\(node): \(reason)")
            case .timer(let at):
                timers[node] = min(timers[node] ?? at, at)
            }
        }
    }

    mutating func runDirectory(_ actions: [CoherenceDirectory.Action]) {
        for case .send(let m) in actions {
            links["\(m.from)>\(m.to)", default: []].append((m, nil))
        }
    }

    /// Delivers the first message of one link; false when every link is empty.
    mutating func deliver(link: String) {
        guard var queue = links[link], !queue.isEmpty else { return }
        let (m, value) = queue.removeFirst()
        links[link] = queue
        if m.forManager {
            runDirectory(directory.handle(.received(m)))
        } else if nodes[m.to] != nil {
            let actions = nodes[m.to]!.handle(.received(m, now: now))
            run(m.to, actions, received: (m, value))
        }
    }

    mutating func tick() {
        for (node, at) in timers where at <= now {
            timers[node] = nil
            let actions = nodes[node]!.handle(.tick(now: now))
            run(node, actions, received: nil)
        }
    }

    var busyLinks: [String] { links.filter { !$0.value.isEmpty }.keys.sorted() }

    /// Delivers everything, letting time pass for held pages.
    mutating func settle() {
        var rounds = 0
        while (!busyLinks.isEmpty || !timers.isEmpty) && rounds < 100_000 {
            if let l = busyLinks.first { deliver(link: l) } else { now += 0.0005 }
            tick()
            rounds += 1
        }
    }

    /// Single writer or many readers, and every readable copy holds the last write.
    func checkInvariants() {
        for page in Set(latest.keys).union([0, 1, 2]) {
            let access = nodes.mapValues { $0.access(page) }
            let writers = access.filter { $0.value == .write }.keys
            if let w = writers.first {
                #expect(writers.count == 1 && access.filter { $0.value > .none }.count == 1, "page \(page): \(access)")
                _ = w
            }
            for (node, a) in access where a > .none {
                #expect(copy(node, page) == latest[page, default: 0], "\(node) holds a stale page \(page)")
            }
        }
    }
}

@Suite("Coherence (pure)") struct CoherenceTests {
    typealias M = Coherence.Message

    /// The directory (manager n1) hears that `node`'s request for `page` was served: by the manager's own
    /// copy or a go-ahead (`sent`, or nothing), or by another owner (the requester's `done`).
    static func served(_ dir: inout CoherenceDirectory, page: Int, node: String, write: Bool) {
        guard let t = dir.entry(page).transaction else { return }
        let body: M.Body = t.fetchFrom == "n1" ? .sent(requester: node, write: write) : .done(write: write)
        _ = dir.handle(.received(M(page: page, from: t.fetchFrom == "n1" ? "n1" : node, to: "n1", body: body)))
    }

    @Test func aReadFaultTakesAWrittenPageForWritingProtectedUntilALocalWrite() {
        var n1 = CoherenceNode(name: "n1", manager: "n1")  // the memory starts here, written
        var n2 = CoherenceNode(name: "n2", manager: "n1")
        var dir = CoherenceDirectory(manager: "n1")
        let request = M(page: 3, from: "n2", to: "n1", body: .request(write: false))
        let r1 = n2.handle(.fault(page: 3, write: false, now: 0))
        #expect(r1 == [.send(request)])
        let r2 = n2.handle(.fault(page: 3, write: false, now: 0))
        #expect(r2 == [])  // one request per page
        let fetch = M(page: 3, from: "n1", to: "n1", body: .fetch(requester: "n2", write: false))
        let r3 = dir.handle(.received(request))
        #expect(r3 == [.send(fetch)])
        let page = M(page: 3, from: "n1", to: "n2", body: .page(write: true, withData: true))
        // The manager sends its own copy: its directory hears at once that the transaction is over.
        let sent = M(page: 3, from: "n1", to: "n1", body: .sent(requester: "n2", write: true))
        let r4 = n1.handle(.received(fetch, now: 0))
        #expect(r4 == [.protect(page: 3), .send(page), .drop(page: 3), .send(sent)])
        #expect(n1.access(3) == .none)
        let r5 = n2.handle(.received(page, now: 0))
        #expect(r5 == [.install(page: 3, access: .read, withData: true)])  // no `done` for the manager's page
        #expect(n2.access(3) == .write && n2.clean == [3])
        let r6 = dir.handle(.received(sent))
        #expect(r6 == [])
        #expect(dir.entry(3).owner == "n2" && dir.entry(3).holders == ["n2"])
        // The first local write only lifts the local protection.
        let r7 = n2.handle(.fault(page: 3, write: true, now: 0))
        #expect(r7 == [.wake(page: 3)])
        #expect(n2.clean.isEmpty)
    }

    @Test func anOwnerThatHasNotWrittenSharesAndKeepsReading() {
        var n2 = CoherenceNode(name: "n2", manager: "n1")
        _ = n2.handle(.fault(page: 0, write: false, now: 0))
        _ = n2.handle(.received(M(page: 0, from: "n1", to: "n2", body: .page(write: true, withData: true)), now: 0))
        let fetch = M(page: 0, from: "n1", to: "n2", body: .fetch(requester: "n3", write: false))
        let r1 = n2.handle(.received(fetch, now: 1))
        #expect(r1 == [.send(M(page: 0, from: "n2", to: "n3", body: .page(write: false, withData: true)))])
        #expect(n2.access(0) == .read)
        var dir = CoherenceDirectory(manager: "n1")
        _ = dir.handle(.received(M(page: 0, from: "n2", to: "n1", body: .request(write: false))))
        Self.served(&dir, page: 0, node: "n2", write: true)
        let r2 = dir.handle(.received(M(page: 0, from: "n3", to: "n1", body: .request(write: false))))
        #expect(r2 == [.send(fetch)])
        _ = dir.handle(.received(M(page: 0, from: "n3", to: "n1", body: .done(write: false))))
        #expect(dir.entry(0).owner == "n2" && dir.entry(0).holders == ["n2", "n3"])
    }

    @Test func aWriterThatHoldsACopyWaitsForEveryOtherCopyToBeDroppedThenGoesOnWithoutData() {
        var dir = CoherenceDirectory(manager: "n1")
        for n in ["n2", "n3"] {
            _ = dir.handle(.received(M(page: 0, from: n, to: "n1", body: .request(write: false))))
            Self.served(&dir, page: 0, node: n, write: false)
        }
        #expect(dir.entry(0).holders == ["n1", "n2", "n3"])
        let actions = dir.handle(.received(M(page: 0, from: "n2", to: "n1", body: .request(write: true))))
        #expect(
            actions == [
                .send(M(page: 0, from: "n1", to: "n1", body: .invalidate)),
                .send(M(page: 0, from: "n1", to: "n3", body: .invalidate)),
            ])
        let r8 = dir.handle(.received(M(page: 0, from: "n3", to: "n1", body: .invalidated)))
        #expect(r8 == [])
        let r9 = dir.handle(.received(M(page: 0, from: "n3", to: "n1", body: .invalidated)))
        #expect(r9 == [])  // twice
        let r10 = dir.handle(.received(M(page: 0, from: "n1", to: "n1", body: .invalidated)))
        #expect(
            r10 == [
                .send(M(page: 0, from: "n1", to: "n2", body: .page(write: true, withData: false)))
            ])
        // A go-ahead ends the transaction as it is sent.
        #expect(dir.entry(0).transaction == nil)
        #expect(dir.entry(0).owner == "n2" && dir.entry(0).holders == ["n2"])
    }

    @Test func aWriterWithoutACopyGetsTheOwnersWhichDropsIt() {
        var dir = CoherenceDirectory(manager: "n1")
        var n1 = CoherenceNode(name: "n1", manager: "n1")
        let fetch = M(page: 1, from: "n1", to: "n1", body: .fetch(requester: "n3", write: true))
        let r11 = dir.handle(.received(M(page: 1, from: "n3", to: "n1", body: .request(write: true))))
        #expect(r11 == [.send(fetch)])
        let r12 = n1.handle(.received(fetch, now: 0))
        #expect(
            r12 == [
                .protect(page: 1), .send(M(page: 1, from: "n1", to: "n3", body: .page(write: true, withData: true))),
                .drop(page: 1), .send(M(page: 1, from: "n1", to: "n1", body: .sent(requester: "n3", write: true))),
            ])
        #expect(n1.access(1) == .none)
        let r13 = n1.handle(.fault(page: 1, write: false, now: 0))
        #expect(r13 == [.send(M(page: 1, from: "n1", to: "n1", body: .request(write: false)))])
    }

    @Test func aSequentialPassAsksForThePagesAheadAndARandomOneDoesNot() {
        var n2 = CoherenceNode(
            name: "n2", manager: "n1", configuration: .init(minimumHold: 0, readAhead: 3, pageCount: 6))
        func request(_ p: Int, _ write: Bool) -> CoherenceNode.Action {
            .send(M(page: p, from: "n2", to: "n1", body: .request(write: write)))
        }
        let r1 = n2.handle(.fault(page: 0, write: true, now: 0))
        #expect(r1 == [request(0, true)])  // the first fault of a pass: no read-ahead
        let r2 = n2.handle(.fault(page: 1, write: true, now: 0))
        #expect(r2 == [request(1, true), request(2, true), request(3, true), request(4, true)])
        // A fault on a page already asked for keeps the window ahead, up to the region's end.
        let r3 = n2.handle(.fault(page: 2, write: true, now: 0))
        #expect(r3 == [request(5, true)])
        let r4 = n2.handle(.fault(page: 5, write: true, now: 0))
        #expect(r4 == [])
        // A fault far from the last: no read-ahead.
        var n3 = CoherenceNode(
            name: "n3", manager: "n1", configuration: .init(minimumHold: 0, readAhead: 3, pageCount: 100))
        let r5 = n3.handle(.fault(page: 40, write: false, now: 0))
        #expect(r5 == [.send(M(page: 40, from: "n3", to: "n1", body: .request(write: false)))])
        // Reads ahead of reads; a page held for writing counts as held for reading.
        let r6 = n3.handle(.fault(page: 41, write: false, now: 0))
        #expect(r6.count == 4)
    }

    @Test func requestsForOnePageAreServedOneAtATimeInOrder() {
        var dir = CoherenceDirectory(manager: "n1")
        let a = dir.handle(.received(M(page: 0, from: "n2", to: "n1", body: .request(write: true))))
        #expect(a == [.send(M(page: 0, from: "n1", to: "n1", body: .fetch(requester: "n2", write: true)))])
        let r14 = dir.handle(.received(M(page: 0, from: "n3", to: "n1", body: .request(write: false))))
        #expect(r14 == [])
        let r15 = dir.handle(.received(M(page: 0, from: "n3", to: "n1", body: .request(write: false))))
        #expect(r15 == [])
        // Another page is not held up.
        let r16 = dir.handle(.received(M(page: 1, from: "n3", to: "n1", body: .request(write: false))))
        #expect(r16.count == 1)
        let r17 = dir.handle(.received(M(page: 0, from: "n1", to: "n1", body: .sent(requester: "n3", write: true))))
        #expect(r17 == [])  // not its
        let r17b = dir.handle(.received(M(page: 0, from: "n2", to: "n1", body: .done(write: true))))
        #expect(r17b == [])  // the manager's own copy: the requester's `done` does not count
        let r18 = dir.handle(.received(M(page: 0, from: "n1", to: "n1", body: .sent(requester: "n2", write: true))))
        #expect(
            r18 == [
                .send(M(page: 0, from: "n1", to: "n2", body: .fetch(requester: "n3", write: false)))
            ])
    }

    @Test func aPageJustGivenIsKeptForTheMinimumHoldThenGivenUp() {
        var n2 = CoherenceNode(name: "n2", manager: "n1", configuration: .init(minimumHold: 0.001))
        _ = n2.handle(.fault(page: 0, write: true, now: 0))
        _ = n2.handle(.received(M(page: 0, from: "n1", to: "n2", body: .page(write: true, withData: true)), now: 0.01))
        let fetch = M(page: 0, from: "n1", to: "n2", body: .fetch(requester: "n3", write: true))
        let r19 = n2.handle(.received(fetch, now: 0.0104))
        #expect(r19 == [.timer(at: 0.011)])
        let inv = M(page: 5, from: "n1", to: "n2", body: .invalidate)
        let r20 = n2.handle(.received(inv, now: 0.0105))
        #expect(r20 == [])  // behind the first
        let r21 = n2.handle(.tick(now: 0.0108))
        #expect(r21 == [.timer(at: 0.011)])
        #expect(n2.access(0) == .write)
        let r22 = n2.handle(.tick(now: 0.011))
        #expect(
            r22 == [
                .protect(page: 0), .send(M(page: 0, from: "n2", to: "n3", body: .page(write: true, withData: true))),
                .drop(page: 0), .drop(page: 5), .send(M(page: 5, from: "n2", to: "n1", body: .invalidated)),
            ])
    }

    @Test func aPageHandedOverForWritingStaysUntilItsFirstWriteThenForTheMinimumHold() {
        /// A node that faulted to read page 0 and was answered with a written page: for writing, protected
        /// there until a local write; then n1 asks for it back. The fetch is held.
        func handedOver(_ name: String) -> CoherenceNode {
            var n = CoherenceNode(
                name: name, manager: "n1", configuration: .init(minimumHold: 0.0001, handOverHold: 0.001))
            _ = n.handle(.fault(page: 0, write: false, now: 0))
            _ = n.handle(.received(M(page: 0, from: "n1", to: name, body: .page(write: true, withData: true)), now: 0))
            let fetch = M(page: 0, from: "n1", to: name, body: .fetch(requester: "n1", write: false))
            #expect(n.handle(.received(fetch, now: 0.00001)) == [.timer(at: 0.001)])
            return n
        }
        var n2 = handedOver("n2")
        #expect(n2.handle(.tick(now: 0.0005)) == [.timer(at: 0.001)])  // past the minimum hold, not written
        // The first write: the minimum hold starts again.
        #expect(n2.handle(.fault(page: 0, write: true, now: 0.0006)) == [.wake(page: 0), .timer(at: 0.0007)])
        #expect(n2.handle(.tick(now: 0.00065)) == [.timer(at: 0.0007)])
        let given = n2.handle(.tick(now: 0.0007))
        #expect(given.contains(.send(M(page: 0, from: "n2", to: "n1", body: .page(write: true, withData: true)))))
        // Never written: it goes at the hand-over hold.
        var n3 = handedOver("n3")
        #expect(n3.handle(.tick(now: 0.0009)) == [.timer(at: 0.001)])
        let shared = n3.handle(.tick(now: 0.001))
        #expect(shared == [.send(M(page: 0, from: "n3", to: "n1", body: .page(write: false, withData: true)))])
    }

    @Test func theOnlyCopyLostWithItsNodeKillsThoseWhoNeedItAndNeverHandsOutStaleData() {
        var w = World(names: ["n1", "n2", "n3"], manager: "n1")
        // n3 writes page 0 (the only current copy is now there); n2 and n1 read page 1 (two copies).
        while !w.access("n3", 0, write: true) { w.settle() }
        while !w.access("n2", 1, write: false) { w.settle() }
        // n2 took page 1 for writing (n1 had it, written) and has not written it: n1 reading it shares it.
        while !w.access("n1", 1, write: false) { w.settle() }
        w.runDirectory(w.directory.handle(.nodeLost("n3")))
        w.links = w.links.filter { !$0.key.contains("n3") }
        #expect(w.directory.entry(0).lost)
        #expect(!w.directory.entry(1).lost && w.directory.entry(1).holders == ["n1", "n2"])
        let n2Read = w.access("n2", 0, write: false)
        #expect(!n2Read)
        w.settle()
        #expect(w.killed == ["n2 p0: page 0 of shared memory was lost with the node that held its only current copy"])
        #expect(w.nodes["n2"]?.access(0) == Coherence.Access.none)
        let n1Write = w.access("n1", 0, write: true)
        #expect(!n1Write)
        w.settle()
        #expect(w.killed.count == 2)
        // A page with copies left survives: n2 is lost, n1 goes on.
        w.runDirectory(w.directory.handle(.nodeLost("n2")))
        #expect(w.directory.entry(1).owner == "n1" && !w.directory.entry(1).lost)
        let n1Read = w.access("n1", 1, write: false)
        #expect(n1Read)
    }

    @Test func anOwnerLostWhileAskedForAReadCopyIsReplacedByAnotherHolder() {
        var dir = CoherenceDirectory(manager: "n1")
        for (n, write) in [("n2", true), ("n3", false)] {
            _ = dir.handle(.received(M(page: 0, from: n, to: "n1", body: .request(write: write))))
            Self.served(&dir, page: 0, node: n, write: write)
        }
        #expect(dir.entry(0).owner == "n2" && dir.entry(0).holders == ["n2", "n3"])
        let r23 = dir.handle(.received(M(page: 0, from: "n1", to: "n1", body: .request(write: false))))
        #expect(
            r23 == [
                .send(M(page: 0, from: "n1", to: "n2", body: .fetch(requester: "n1", write: false)))
            ])
        let r24 = dir.handle(.nodeLost("n2"))
        #expect(
            r24 == [
                .send(M(page: 0, from: "n1", to: "n3", body: .fetch(requester: "n1", write: false)))
            ])
        #expect(dir.entry(0).owner == "n3")
    }

    @Test func aReaderLostMidTransferLeavesThePageLostNeverAnEmptyCopy() {
        var dir = CoherenceDirectory(manager: "n1")
        let r1 = dir.handle(.received(M(page: 0, from: "n2", to: "n1", body: .request(write: false))))
        #expect(r1 == [.send(M(page: 0, from: "n1", to: "n1", body: .fetch(requester: "n2", write: false)))])
        _ = dir.handle(.nodeLost("n2"))
        #expect(dir.entry(0).lost)
        let r2 = dir.handle(.received(M(page: 0, from: "n3", to: "n1", body: .request(write: true))))
        #expect(r2 == [.send(M(page: 0, from: "n1", to: "n3", body: .lost))])
        // An owner asked for a page it no longer has answers that it is lost.
        var n2 = CoherenceNode(name: "n2", manager: "n1")
        let r3 = n2.handle(
            .received(M(page: 4, from: "n1", to: "n2", body: .fetch(requester: "n3", write: false)), now: 0))
        #expect(r3 == [.send(M(page: 4, from: "n2", to: "n3", body: .lost))])
    }

    @Test func aNodeServedByTheManagerMayAskAgainBeforeTheDirectoryHearsItWasSent() {
        var dir = CoherenceDirectory(manager: "n1")
        _ = dir.handle(.received(M(page: 0, from: "n2", to: "n1", body: .request(write: false))))
        // n2 got the manager's copy for reading and asks to write before `sent` reached the directory.
        let again = dir.handle(.received(M(page: 0, from: "n2", to: "n1", body: .request(write: true))))
        #expect(again == [])
        #expect(dir.entry(0).queue.map { "\($0.node) \($0.write)" } == ["n2 true"])
        let r = dir.handle(.received(M(page: 0, from: "n1", to: "n1", body: .sent(requester: "n2", write: false))))
        // The read ended (n1 and n2 hold copies); the write drops n1's and lets n2 go on with its own.
        #expect(r == [.send(M(page: 0, from: "n1", to: "n1", body: .invalidate))])
        // A repeat while its transaction is under way with another owner is still dropped.
        var dir2 = CoherenceDirectory(manager: "n1")
        for (n, write) in [("n3", true), ("n2", false)] {
            _ = dir2.handle(.received(M(page: 0, from: n, to: "n1", body: .request(write: write))))
            Self.served(&dir2, page: 0, node: n, write: write)
        }
        _ = dir2.handle(.received(M(page: 0, from: "n1", to: "n1", body: .request(write: true))))
        let repeated = dir2.handle(.received(M(page: 0, from: "n1", to: "n1", body: .request(write: true))))
        #expect(repeated == [] && dir2.entry(0).queue.isEmpty)
    }

    @Test func theManagerLostEndsEveryLocalProcess() {
        var n2 = CoherenceNode(name: "n2", manager: "n1")
        let r25 = n2.handle(.managerLost)
        #expect(r25 == [.killAll(reason: "the home node n1 of this shared memory is gone")])
        let r26 = n2.handle(.managerLost)
        #expect(r26 == [])
        let r27 = n2.handle(.fault(page: 0, write: false, now: 0))
        #expect(r27.count == 1)
    }

    /// Random reads, writes and message orders (each link in order) on three nodes and three pages: no
    /// read ever sees anything but the last write, no two nodes write one page at once, and every fault is
    /// served in the end.
    @Test(arguments: 0..<40) func randomizedRunsStaySequentiallyConsistentAndLive(seed: Int) {
        var rng = SplitMix(seed: UInt64(seed))
        var w = World(
            names: ["n1", "n2", "n3"], manager: "n1", hold: seed % 2 == 0 ? 0.001 : 0, readAhead: seed % 4 < 2 ? 0 : 2)
        let names = ["n1", "n2", "n3"]
        var served = 0
        for _ in 0..<3000 {
            switch rng.next() % 10 {
            case 0..<4:
                let node = names[Int(rng.next() % 3)]
                if w.access(node, Int(rng.next() % 3), write: rng.next() % 2 == 0) { served += 1 }
            case 4..<9:
                let busy = w.busyLinks
                if !busy.isEmpty { w.deliver(link: busy[Int(rng.next() % UInt64(busy.count))]) }
            default:
                w.now += 0.0003
                w.tick()
            }
            w.checkInvariants()
        }
        w.settle()
        w.checkInvariants()
        #expect(w.killed.isEmpty)
        for (name, n) in w.nodes {
            #expect(n.pending.isEmpty, "\(name) still waits for \(n.pending)")
        }
        for page in 0..<3 {
            #expect(w.directory.entry(page).transaction == nil && w.directory.entry(page).queue.isEmpty)
        }
        #expect(served > 100)
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
