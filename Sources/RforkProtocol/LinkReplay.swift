/// The sending half of a link that survives its connections: every counted message sent is numbered
/// (1, 2, ...) and kept until the peer acknowledges it, so that after a new connection the messages the
/// peer lacks are sent again, in order, before anything new. A pure value: the daemon's `PeerPort` keeps
/// one per link end and does the I/O.
public struct ReplayBuffer<Element> {
    /// Messages numbered so far, and how many of them the peer said it has.
    public private(set) var sent: UInt64 = 0
    public private(set) var acknowledged: UInt64 = 0
    /// The bytes of the messages kept (as their senders counted them).
    public private(set) var bytes = 0
    /// Kept messages from `head` on; those before it are acknowledged and already let go (nil), until
    /// the array is compacted.
    private var entries: [(element: Element?, bytes: Int)] = []
    private var head = 0

    public init() {}

    /// Messages kept (sent, not acknowledged).
    public var count: Int { entries.count - head }

    /// Keeps a message; returns its number.
    public mutating func append(_ element: Element, bytes: Int) -> UInt64 {
        sent += 1
        entries.append((element, bytes))
        self.bytes += bytes
        return sent
    }

    /// The peer has the first `count` messages: they are dropped and returned, oldest first. A count
    /// below what it said before, or above what was sent, changes nothing.
    public mutating func acknowledge(_ count: UInt64) -> [Element] {
        guard count > acknowledged, count <= sent else { return [] }
        let n = Int(count - acknowledged)
        var out: [Element] = []
        out.reserveCapacity(n)
        for i in head..<(head + n) {
            if let element = entries[i].element { out.append(element) }
            bytes -= entries[i].bytes
            entries[i].element = nil
        }
        head += n
        acknowledged = count
        if head > 64 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
        return out
    }

    /// Whether a peer that says it received `peerReceived` messages can carry on this link: it cannot
    /// have fewer than it acknowledged, nor more than were sent.
    public func canResume(peerReceived: UInt64) -> Bool {
        peerReceived >= acknowledged && peerReceived <= sent
    }

    /// The message numbered `number`, while it is kept.
    public subscript(number: UInt64) -> Element? {
        get {
            guard number > acknowledged, number <= sent else { return nil }
            return entries[head + Int(number - acknowledged - 1)].element
        }
        set {
            guard let newValue, number > acknowledged, number <= sent else { return }
            entries[head + Int(number - acknowledged - 1)].element = newValue
        }
    }

    /// The numbers of the messages kept, oldest first (what a new connection sends again).
    public var keptNumbers: ClosedRange<UInt64>? { count > 0 ? (acknowledged + 1)...sent : nil }

    /// Gives the link up: every message kept is returned, and numbering starts again.
    public mutating func reset() -> [Element] {
        let out = entries[head...].compactMap(\.element)
        self = ReplayBuffer()
        return out
    }
}

/// The receiving half: how many counted messages arrived, and when to say so (`LinkAck`).
public struct ReceiveCounter: Sendable, Equatable {
    public private(set) var received: UInt64 = 0
    public private(set) var told: UInt64 = 0
    private var bytesSinceTold = 0
    /// Say it at once past this many bytes since the last time (else at the next periodic turn).
    public let bytesPerAck: Int

    public init(bytesPerAck: Int = 8 << 20) { self.bytesPerAck = bytesPerAck }

    /// One message of `bytes` arrived; true when the peer should be told now.
    public mutating func count(bytes: Int) -> Bool {
        received += 1
        bytesSinceTold += bytes
        return bytesSinceTold >= bytesPerAck
    }

    /// The count to tell the peer, or nil when it knows it already.
    public mutating func due() -> UInt64? {
        guard received > told else { return nil }
        told = received
        bytesSinceTold = 0
        return received
    }

    /// A new connection: the peer learns the count from its `Hello`.
    public mutating func toldByHello() {
        told = received
        bytesSinceTold = 0
    }
}
