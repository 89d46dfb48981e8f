import NIOCore

/// Local frames: what librfork, the stand-in and the namespace init say to the node daemon.
///
/// Mirrors `librfork/wire.h`; change both together. A frame is a 4-byte length in host byte order
/// (little-endian on every Linux target rfork supports) of what follows, a 1-byte type, then the payload.
public enum LocalWire {
    public static let frameMax = 1 << 20
    public static let dataChunk = 64 * 1024
    /// Flow control: the most bytes of one channel a helper sends before the receiving helper acknowledges.
    public static let window = 4 << 20
    public static let maxChannels = 64
    /// The signal rforkd sends a process started under `rfork run` to make it move (RFORK_MIGRATE_SIGNAL:
    /// SIGRTMAX - 2 on Linux). librfork's handler asks to be placed, as a freshly forked child does.
    public static let migrateSignal: Int32 = 62
    /// rforkd interrupts a process asleep on a futex in shared memory with it (librfork's handler does
    /// nothing, with SA_RESTART): the kernel restarts the wait, which reads the futex word again.
    public static let kickSignal: Int32 = 61
    /// rforkd sends it, with an inode as sigqueue's value, to a process that maps memory which has just
    /// become shared across nodes: librfork's handler reduces its descriptors of that object to O_PATH.
    public static let sealSignal: Int32 = 60
    /// `sealSignal` with this value (no object has inode 0) asks the process to close its userfaultfd
    /// (rforkd holds a copy): CRIU cannot save one, and a checkpoint takes every process of a job.
    public static let releaseUserfaultValue: UInt64 = 0
    /// A DEMAND of this many bytes (RFORK_DEMAND_EAGER), from the home daemon to the stand-in and to the
    /// namespace init: the stand-in holds the only read end of that lazy channel's pipe, so it reads ahead.
    public static let eagerDemand: UInt32 = 0xFFFF_FFFF
    /// Phases of a checkpoint's marker (RFORK_MARK_*; `LocalMessageType.mark`).
    public static let markInput: UInt32 = 1
    public static let markOutput: UInt32 = 2
    public static let markResume: UInt32 = 3
    /// In the INPUT echo's channel numbers: the namespace init had closed its end (RFORK_MARK_CLOSED).
    public static let markClosed: UInt32 = 0x8000_0000
    /// On the server's node, rforkd's end of a relayed AF_UNIX connection is bound to an abstract name
    /// starting with this (RFORK_RELAY_NAME): librfork refuses to send descriptors to it.
    public static let relayName = "rfork-relay/"
}

public enum LocalMessageType: UInt8, Sendable {
    case forkRequest = 1
    case forkReply = 2
    case data = 3
    case endOfFile = 4
    case signal = 5
    case event = 6
    case restored = 7
    case failed = 8
    case query = 9
    case answer = 10
    case abort = 11
    case demand = 12
    case ack = 13
    case migrate = 14  // CLI -> daemon: "pid N\nnode NAME\n"; answered with ANSWER (JSON) once done
    case checkpoint = 15  // CLI -> daemon: "pid N\ndir PATH\nleave 0|1\n"; ANSWER (JSON) once saved
    case restart = 16  // CLI -> daemon: "dir PATH\nnode NAME|-\n"; FORK_REPLY: the caller becomes the stand-in
    case schedule = 17  // rfork run -> daemon: "pid N\ndir PATH\nevery SECONDS\n"; ANSWER (JSON)
    case progress = 18  // daemon -> CLI: one line of text, how a move goes, before its ANSWER
    case shmAttach = 19  // library -> daemon: "pid N\nuffd FD\n" (or "uffderr ERRNO"); FORK_REPLY 'A' or 'F'+why
    /// library -> daemon, on the program's own socket: an absolute AF_UNIX path this node lacks; FORK_REPLY
    /// 'A' (from then on the socket relays to the node that has the path) or 'F'.
    case unixConnect = 20
    case mark = 21
}

public enum Verdict: UInt8, Sendable {
    case local = 0x4C  // "L"
    case standIn = 0x53  // "S"
    case remote = 0x52  // "R"
    /// SHM_ATTACH answered: rforkd covers the caller's shared memory (RFORK_SHM_ATTACHED).
    case attached = 0x41  // "A"
    /// SHM_ATTACH answered: it does not; the text says why (RFORK_SHM_REFUSED).
    case refused = 0x46  // "F"
}

public enum ChannelKindCode: UInt32, Sendable {
    case input = 1
    case output = 2
    case terminal = 3
    case file = 4
    case lazyInput = 5
}

public enum EventKindCode: UInt32, Sendable {
    case exited = 1
    case killed = 2
    case stopped = 3
    case continued = 4
}

/// One decoded local frame.
public struct LocalFrame: Sendable, Equatable {
    public var type: LocalMessageType
    public var payload: ByteBuffer

    public init(type: LocalMessageType, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }

    public static func text(_ type: LocalMessageType, _ text: String) -> LocalFrame {
        LocalFrame(type: type, payload: ByteBuffer(string: text))
    }

    public static func reply(_ verdict: Verdict, _ text: String = "") -> LocalFrame {
        var buffer = ByteBuffer()
        buffer.writeInteger(verdict.rawValue)
        buffer.writeString(text)
        return LocalFrame(type: .forkReply, payload: buffer)
    }

    public static func data(channel: UInt32, _ bytes: ByteBuffer) -> LocalFrame {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(4 + bytes.readableBytes)
        buffer.writeInteger(channel, endianness: .little)
        buffer.writeImmutableBuffer(bytes)
        return LocalFrame(type: .data, payload: buffer)
    }

    public static func u32(_ type: LocalMessageType, _ value: UInt32) -> LocalFrame {
        var buffer = ByteBuffer()
        buffer.writeInteger(value, endianness: .little)
        return LocalFrame(type: type, payload: buffer)
    }

    /// Flow control: the receiving helper consumed `bytes` more of `channel`.
    public static func ack(channel: UInt32, bytes: UInt32) -> LocalFrame {
        var buffer = ByteBuffer()
        buffer.writeInteger(channel, endianness: .little)
        buffer.writeInteger(bytes, endianness: .little)
        return LocalFrame(type: .ack, payload: buffer)
    }

    /// The remote child reads lazy `channel` for `bytes` (or `LocalWire.eagerDemand`: read it ahead).
    public static func demand(channel: UInt32, bytes: UInt32) -> LocalFrame {
        var buffer = ByteBuffer()
        buffer.writeInteger(channel, endianness: .little)
        buffer.writeInteger(bytes, endianness: .little)
        return LocalFrame(type: .demand, payload: buffer)
    }

    public static func event(kind: UInt32, code: Int32) -> LocalFrame {
        var buffer = ByteBuffer()
        buffer.writeInteger(kind, endianness: .little)
        buffer.writeInteger(code, endianness: .little)
        return LocalFrame(type: .event, payload: buffer)
    }

    /// The first little-endian 32-bit word of the payload (channel, signal or event kind).
    public var word: UInt32? { payload.getInteger(at: payload.readerIndex, endianness: .little, as: UInt32.self) }

    /// The second 32-bit word (an event's code).
    public var secondWord: Int32? {
        payload.getInteger(at: payload.readerIndex + 4, endianness: .little, as: Int32.self)
    }

    /// The payload after the first word (a data frame's bytes).
    public var afterWord: ByteBuffer {
        payload.getSlice(at: payload.readerIndex + 4, length: max(0, payload.readableBytes - 4)) ?? ByteBuffer()
    }

    public var text: String { String(buffer: payload) }

    /// A FORK_REPLY's verdict (nil if unknown or missing) and the text after it (a reason or session).
    public var verdict: (Verdict?, String) {
        var rest = payload
        guard let byte: UInt8 = rest.readInteger() else { return (nil, "") }
        return (Verdict(rawValue: byte), String(buffer: rest))
    }
}

public struct LocalWireError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public struct LocalFrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = LocalFrame
    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.parse(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    /// Takes one frame off the front of `buffer`, or nil if it is not complete yet.
    public static func parse(_ buffer: inout ByteBuffer) throws -> LocalFrame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self) else {
            return nil
        }
        guard length >= 1, length <= LocalWire.frameMax else {
            throw LocalWireError("local frame of \(length) bytes is out of range (1...\(LocalWire.frameMax))")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let rawType: UInt8 = buffer.readInteger() ?? 0
        guard let type = LocalMessageType(rawValue: rawType) else {
            throw LocalWireError("unknown local frame type \(rawType)")
        }
        let payload = buffer.readSlice(length: Int(length) - 1) ?? ByteBuffer()
        return LocalFrame(type: type, payload: payload)
    }
}

public struct LocalFrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = LocalFrame
    public init() {}

    public func encode(data: LocalFrame, out: inout ByteBuffer) throws {
        Self.write(data, to: &out)
    }

    public static func write(_ frame: LocalFrame, to out: inout ByteBuffer) {
        out.writeInteger(UInt32(1 + frame.payload.readableBytes), endianness: .little)
        out.writeInteger(frame.type.rawValue)
        out.writeImmutableBuffer(frame.payload)
    }
}

/// A placement request as librfork sends it: text lines "key value", channels as "ch ID KIND CRIU_ID".
public struct LocalForkRequest: Sendable, Equatable {
    public struct Channel: Sendable, Equatable {
        public var id: UInt32
        public var kind: ChannelKindCode
        public var criuID: String
        /// The descriptor number in the child.
        public var fd: Int32
        public init(id: UInt32, kind: ChannelKindCode, criuID: String, fd: Int32 = -1) {
            self.id = id
            self.kind = kind
            self.criuID = criuID
            self.fd = fd
        }
    }

    public var pid: Int32
    public var uid: UInt32
    public var socketInode: UInt64
    public var policy: String?
    public var node: String?
    public var forkStartedNanoseconds: UInt64
    public var channels: [Channel]
    /// "always", "never" or nil (the daemon's threshold decides): whether memory follows the child.
    public var postCopy: String?
    /// The process asks because it was told to move (`rfork migrate`), not because it was just forked.
    public var migrate: Bool = false
    /// The parent's userfaultfd for its shared memory: its descriptor number in the parent, or why the
    /// parent could not make one (an errno). Nil when the parent maps no shared anonymous memory.
    public var parentUserfault: ParentUserfault?

    public enum ParentUserfault: Sendable, Equatable {
        case descriptor(Int32)
        case error(Int32)
    }

    public init(
        pid: Int32, uid: UInt32, socketInode: UInt64, policy: String?, node: String?,
        forkStartedNanoseconds: UInt64, channels: [Channel], postCopy: String? = nil
    ) {
        self.pid = pid
        self.uid = uid
        self.socketInode = socketInode
        self.policy = policy
        self.node = node
        self.forkStartedNanoseconds = forkStartedNanoseconds
        self.channels = channels
        self.postCopy = postCopy
    }

    public init(parsing text: String) throws {
        var fields: [String: String] = [:]
        var channels: [Channel] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { throw LocalWireError("malformed request line '\(line)'") }
            if parts[0] == "ch" {
                let c = parts[1].split(separator: " ", maxSplits: 3)
                guard c.count == 4, let id = UInt32(c[0]), let raw = UInt32(c[1]),
                    let kind = ChannelKindCode(rawValue: raw), let fd = Int32(c[2]), fd >= 0, !c[3].isEmpty
                else { throw LocalWireError("malformed channel line '\(line)'") }
                guard id == channels.count else { throw LocalWireError("channel \(id) out of order") }
                guard channels.count < LocalWire.maxChannels else { throw LocalWireError("too many channels") }
                channels.append(Channel(id: id, kind: kind, criuID: String(c[3]), fd: fd))
            } else {
                fields[String(parts[0])] = String(parts[1])
            }
        }
        guard let pidText = fields["pid"], let pid = Int32(pidText), pid > 0 else {
            throw LocalWireError("request has no valid pid")
        }
        guard let uidText = fields["uid"], let uid = UInt32(uidText) else {
            throw LocalWireError("request has no valid uid")
        }
        guard let sockText = fields["sock"], let sock = UInt64(sockText) else {
            throw LocalWireError("request has no valid socket inode")
        }
        func optional(_ key: String) -> String? {
            guard let v = fields[key], v != "-", !v.isEmpty else { return nil }
            return v
        }
        self.init(
            pid: pid, uid: uid, socketInode: sock, policy: optional("policy"), node: optional("node"),
            forkStartedNanoseconds: UInt64(fields["t0"] ?? "") ?? 0, channels: channels,
            postCopy: optional("postcopy"))
        self.migrate = fields["migrate"] == "1"
        if let v = fields["puffd"] {
            guard let fd = Int32(v), fd >= 0 else { throw LocalWireError("malformed puffd '\(v)'") }
            parentUserfault = .descriptor(fd)
        } else if let v = fields["puffderr"] {
            guard let e = Int32(v), e > 0 else { throw LocalWireError("malformed puffderr '\(v)'") }
            parentUserfault = .error(e)
        }
    }

    public var text: String {
        var s = "pid \(pid)\nuid \(uid)\nsock \(socketInode)\npolicy \(policy ?? "-")\nnode \(node ?? "-")\n"
        s += "t0 \(forkStartedNanoseconds)\npostcopy \(postCopy ?? "-")\n"
        if migrate { s += "migrate 1\n" }
        switch parentUserfault {
        case .descriptor(let fd)?: s += "puffd \(fd)\n"
        case .error(let e)?: s += "puffderr \(e)\n"
        case nil: break
        }
        for c in channels { s += "ch \(c.id) \(c.kind.rawValue) \(c.fd) \(c.criuID)\n" }
        return s
    }
}
