import NIOCore
import SwiftProtobuf

/// The peer protocol's version. A peer that says another major version is refused.
public enum PeerProtocol {
    public static let version: UInt32 = 11
    /// The largest envelope accepted: 16 MiB. What the envelopes carry is far smaller: an `ImageChunk` holds
    /// at most 1 MiB of an image, a `PageStream` at most one 1 MiB read, `Data` one local frame (1 MiB), and a
    /// `ForkRequest` the small image files inline (each at most 256 KiB; the memory pages follow as chunks).
    /// A length above this closes the connection at once (a peer that sends one is broken or hostile), before
    /// the receiver buffers any of it.
    public static let maxEnvelope = 16 << 20
}

public struct PeerWireError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Splits the byte stream into `Rfork_Wire_V1_Envelope`s (4-byte big-endian length, then the message).
public struct EnvelopeDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = Rfork_Wire_V1_Envelope
    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let envelope = try Self.parse(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(envelope))
        return .continue
    }

    public static func parse(_ buffer: inout ByteBuffer) throws -> Rfork_Wire_V1_Envelope? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return nil
        }
        guard length <= PeerProtocol.maxEnvelope else {
            let limit = PeerProtocol.maxEnvelope
            throw PeerWireError("peer envelope of \(length) bytes is over the limit of \(limit) bytes")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        guard let bytes = buffer.readBytes(length: Int(length)) else { return nil }
        do {
            return try Rfork_Wire_V1_Envelope(serializedBytes: bytes)
        } catch {
            throw PeerWireError("malformed peer envelope: \(error)")
        }
    }
}

public struct EnvelopeEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Rfork_Wire_V1_Envelope
    public init() {}

    public func encode(data: Rfork_Wire_V1_Envelope, out: inout ByteBuffer) throws {
        try Self.write(data, to: &out)
    }

    public static func write(_ envelope: Rfork_Wire_V1_Envelope, to out: inout ByteBuffer) throws {
        let bytes: [UInt8] = try envelope.serializedBytes()
        out.writeInteger(UInt32(bytes.count), endianness: .big)
        out.writeBytes(bytes)
    }
}
