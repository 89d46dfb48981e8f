import NIOCore
import RforkWire
import Testing

@Suite("Peer framing: the envelope size limit")
struct PeerFramingTests {
    /// A 4-byte big-endian length header and nothing else.
    private func header(_ length: UInt32) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(length, endianness: .big)
        return buffer
    }

    @Test func theLimitIs16MiB() {
        #expect(PeerProtocol.maxEnvelope == 16 * 1024 * 1024)
    }

    @Test func refusesAnOversizedLengthBeforeItsBodyArrives() {
        let lengths: [UInt32] = [UInt32(PeerProtocol.maxEnvelope) + 1, 1 << 31 - 1, .max]
        for length in lengths {
            var buffer = header(length)
            let error = #expect(throws: PeerWireError.self) { try EnvelopeDecoder.parse(&buffer) }
            let said = error?.description ?? ""
            #expect(said.contains("\(length) bytes is over the limit of \(PeerProtocol.maxEnvelope)"))
        }
    }

    @Test func waitsForABodyOfTheLargestLength() throws {
        var buffer = header(UInt32(PeerProtocol.maxEnvelope))
        buffer.writeRepeatingByte(0, count: 1024)
        #expect(try EnvelopeDecoder.parse(&buffer) == nil)
        #expect(buffer.readableBytes == 4 + 1024)  // nothing consumed until the whole envelope is there
    }

    @Test func acceptsAnEnvelopeOfExactlyTheLimit() throws {
        // An ImageChunk whose data makes the envelope exactly maxEnvelope bytes long.
        func envelope(dataBytes: Int) -> Rfork_Wire_V1_Envelope {
            var chunk = Rfork_Wire_V1_ImageChunk()
            chunk.session = 1
            chunk.name = "pages-1.img"
            chunk.data = .init(repeating: 7, count: dataBytes)
            var envelope = Rfork_Wire_V1_Envelope()
            envelope.imageChunk = chunk
            return envelope
        }
        let probe: [UInt8] = try envelope(dataBytes: PeerProtocol.maxEnvelope - 64).serializedBytes()
        let overhead = probe.count - (PeerProtocol.maxEnvelope - 64)
        let exact = envelope(dataBytes: PeerProtocol.maxEnvelope - overhead)
        var buffer = ByteBuffer()
        try EnvelopeEncoder.write(exact, to: &buffer)
        #expect(buffer.readableBytes == 4 + PeerProtocol.maxEnvelope)
        #expect(try EnvelopeDecoder.parse(&buffer) == exact)

        var over = ByteBuffer()
        try EnvelopeEncoder.write(envelope(dataBytes: PeerProtocol.maxEnvelope - overhead + 1), to: &over)
        #expect(throws: PeerWireError.self) { try EnvelopeDecoder.parse(&over) }
    }

    @Test func fitsWhatTheDaemonsSend() throws {
        // The largest ImageChunk (1 MiB of data) and a ForkRequest with 32 inline images of 256 KiB.
        var chunk = Rfork_Wire_V1_ImageChunk()
        chunk.session = .max
        chunk.name = "pages-1.img"
        chunk.offset = .max
        chunk.data = .init(repeating: 1, count: 1 << 20)
        var request = Rfork_Wire_V1_ForkRequest()
        request.session = .max
        for i in 0..<32 {
            var image = Rfork_Wire_V1_ImageFile()
            image.name = "image-\(i).img"
            image.data = .init(repeating: 2, count: 256 * 1024)
            request.images.append(image)
        }
        var first = Rfork_Wire_V1_Envelope()
        first.imageChunk = chunk
        var second = Rfork_Wire_V1_Envelope()
        second.forkRequest = request
        var buffer = ByteBuffer()
        try EnvelopeEncoder.write(first, to: &buffer)
        try EnvelopeEncoder.write(second, to: &buffer)
        #expect(try EnvelopeDecoder.parse(&buffer) == first)
        #expect(try EnvelopeDecoder.parse(&buffer) == second)
    }
}
