import NIOCore
import RforkWire
import Testing

@Suite("Local frames (librfork/wire.h)")
struct LocalFrameTests {
    @Test func roundTripsEveryKindOfFrame() throws {
        let frames: [LocalFrame] = [
            .reply(.standIn, "42"), .data(channel: 3, ByteBuffer(string: "bytes")), .u32(.endOfFile, 7),
            .u32(.signal, 15), .event(kind: EventKindCode.killed.rawValue, code: 9), .text(.query, "nodes"),
            .ack(channel: 2, bytes: 1 << 20),
        ]
        var buffer = ByteBuffer()
        for frame in frames { LocalFrameEncoder.write(frame, to: &buffer) }
        var decoded: [LocalFrame] = []
        while let frame = try LocalFrameDecoder.parse(&buffer) { decoded.append(frame) }
        #expect(decoded == frames)
        #expect(decoded[1].word == 3)
        #expect(String(buffer: decoded[1].afterWord) == "bytes")
        #expect(decoded[4].secondWord == 9)
        #expect(decoded[6].word == 2 && decoded[6].secondWord == 1 << 20)
    }

    @Test func matchesTheCLayout() throws {
        // A DATA frame as rfork_send() writes it: u32 length (LE) = 1 + 4 + 2, type 3, channel 1 (LE), "hi".
        var buffer = ByteBuffer(bytes: [7, 0, 0, 0, 3, 1, 0, 0, 0, 0x68, 0x69])
        let frame = try #require(try LocalFrameDecoder.parse(&buffer))
        #expect(frame.type == .data)
        #expect(frame.word == 1)
        #expect(String(buffer: frame.afterWord) == "hi")
    }

    @Test func readsTheCAcknowledgement() throws {
        // An ACK frame as rfork_flow_consumed() writes it: length 9, type 13, channel 4, 1 MiB (all LE).
        var buffer = ByteBuffer(bytes: [9, 0, 0, 0, 13, 4, 0, 0, 0, 0, 0, 0x10, 0])
        let frame = try #require(try LocalFrameDecoder.parse(&buffer))
        #expect(frame == .ack(channel: 4, bytes: 1 << 20))
    }

    @Test func waitsForAPartialFrame() throws {
        var buffer = ByteBuffer(bytes: [7, 0, 0, 0, 3, 1])
        #expect(try LocalFrameDecoder.parse(&buffer) == nil)
        #expect(buffer.readableBytes == 6)
    }

    @Test func refusesMalformedFrames() {
        var zero = ByteBuffer(bytes: [0, 0, 0, 0])
        #expect(throws: LocalWireError.self) { try LocalFrameDecoder.parse(&zero) }
        var huge = ByteBuffer(bytes: [0xff, 0xff, 0xff, 0x7f, 1])
        #expect(throws: LocalWireError.self) { try LocalFrameDecoder.parse(&huge) }
        var unknown = ByteBuffer(bytes: [1, 0, 0, 0, 200])
        #expect(throws: LocalWireError.self) { try LocalFrameDecoder.parse(&unknown) }
    }

    @Test func parsesAPlacementRequest() throws {
        let text =
            "pid 123\nuid 1000\nsock 456\npolicy spread\nnode -\nt0 99\nch 0 2 4 pipe:[77]w\nch 1 4 1 file[1b:f0]\n"
        let request = try LocalForkRequest(parsing: text)
        #expect(request.pid == 123 && request.uid == 1000 && request.socketInode == 456)
        #expect(request.policy == "spread" && request.node == nil && request.forkStartedNanoseconds == 99)
        #expect(
            request.channels == [
                .init(id: 0, kind: .output, criuID: "pipe:[77]w", fd: 4),
                .init(id: 1, kind: .file, criuID: "file[1b:f0]", fd: 1),
            ])
        #expect(try LocalForkRequest(parsing: request.text) == request)
    }

    @Test func aPlacementRequestNamesTheParentsUserfaultfd() throws {
        let base = "pid 5\nuid 0\nsock 1\n"
        #expect(try LocalForkRequest(parsing: base).parentUserfault == nil)
        let fd = try LocalForkRequest(parsing: base + "puffd 7\n")
        #expect(fd.parentUserfault == .descriptor(7))
        #expect(try LocalForkRequest(parsing: fd.text) == fd)
        #expect(try LocalForkRequest(parsing: base + "puffderr 1\n").parentUserfault == .error(1))
        #expect(throws: LocalWireError.self) { try LocalForkRequest(parsing: base + "puffd -3\n") }
        #expect(throws: LocalWireError.self) { try LocalForkRequest(parsing: base + "puffderr x\n") }
    }

    @Test(arguments: [
        "uid 0\nsock 1\n",  // no pid
        "pid -4\nuid 0\nsock 1\n",  // bad pid
        "pid 5\nuid 0\n",  // no socket
        "pid 5\nuid 0\nsock 1\nch 1 2 3 pipe:[1]w\n",  // channels out of order
        "pid 5\nuid 0\nsock 1\nch 0 9 3 pipe:[1]w\n",  // unknown kind
        "pid 5\nuid 0\nsock 1\nch 0 2 -1 pipe:[1]w\n",  // bad descriptor
        "pid 5\nuid 0\nsock 1\ngarbage\n",  // not key value
    ])
    func refusesMalformedRequests(text: String) {
        #expect(throws: LocalWireError.self) { try LocalForkRequest(parsing: text) }
    }
}
