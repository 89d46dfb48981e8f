import NIOCore
import RforkWire
import Testing

@Suite("Peer envelopes (proto/peer.proto)")
struct EnvelopeTests {
    @Test func roundTripsAForkRequest() throws {
        var request = Rfork_Wire_V1_ForkRequest()
        request.session = 9
        request.pid = 4242
        request.homeNode = "node1"
        var channel = Rfork_Wire_V1_Channel()
        channel.id = 0
        channel.kind = .output
        channel.criuID = "pipe:[5]w"
        request.channels = [channel]
        var image = Rfork_Wire_V1_ImageFile()
        image.name = "core-4242.img"
        image.data = .init([1, 2, 3])
        request.images = [image]
        var envelope = Rfork_Wire_V1_Envelope()
        envelope.forkRequest = request

        var buffer = ByteBuffer()
        try EnvelopeEncoder.write(envelope, to: &buffer)
        try EnvelopeEncoder.write(envelope, to: &buffer)
        let first = try #require(try EnvelopeDecoder.parse(&buffer))
        let second = try #require(try EnvelopeDecoder.parse(&buffer))
        #expect(first == envelope && second == envelope)
        #expect(buffer.readableBytes == 0)
    }

    @Test func refusesGarbage() {
        var buffer = ByteBuffer(bytes: [0, 0, 0, 3, 0xff, 0xff, 0xff])
        #expect(throws: PeerWireError.self) { try EnvelopeDecoder.parse(&buffer) }
    }

    @Test func waitsForTheWholeEnvelope() throws {
        var buffer = ByteBuffer(bytes: [0, 0, 0, 10, 1, 2])
        #expect(try EnvelopeDecoder.parse(&buffer) == nil)
    }
}
