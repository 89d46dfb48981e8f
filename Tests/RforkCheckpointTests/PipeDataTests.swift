import RforkCheckpoint
import Testing

/// CRIU's pipes-data.img, read back: the bytes a pipe held at a dump, by pipe.
@Suite struct PipeDataTests {
    static func u32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// One entry: pipe_id (field 1), bytes (field 2), size (field 3, optional), then the bytes.
    static func entry(pipe: UInt32, data: [UInt8], size: UInt32? = nil) -> [UInt8] {
        func varint(_ v: UInt32) -> [UInt8] {
            var v = v
            var out: [UInt8] = []
            repeat {
                out.append(UInt8(v & 0x7f) | (v > 0x7f ? 0x80 : 0))
                v >>= 7
            } while v > 0
            return out
        }
        var message = [0x08] + varint(pipe) + [0x10] + varint(UInt32(data.count))
        if let size { message += [0x18] + varint(size) }
        return u32(UInt32(message.count)) + message + data
    }

    static let header = u32(0x5456_4319) + u32(0x5645_3709)

    @Test func readsEveryPipesBytes() throws {
        let image =
            Self.header + Self.entry(pipe: 29_133_161, data: Array("hello".utf8), size: 65536)
            + Self.entry(pipe: 7, data: [])
        let pipes = try PipeData.parse(image)
        #expect(pipes[29_133_161] == Array("hello".utf8))
        #expect(pipes[7] == [])
        #expect(pipes.count == 2)
        #expect(try PipeData.parse(Self.header).isEmpty)
    }

    @Test func refusesWhatIsNotCRIUsPipeData() {
        #expect(throws: CheckpointError.self) { try PipeData.parse(Self.u32(1) + Self.u32(2)) }
        #expect(throws: CheckpointError.self) { try PipeData.parse(Array(Self.header.prefix(6))) }
        // An entry whose bytes run past the end of the file.
        let cut = Self.header + Self.entry(pipe: 3, data: Array("abcdef".utf8))
        #expect(throws: CheckpointError.self) { try PipeData.parse(Array(cut.dropLast(2))) }
        // A size past the end.
        #expect(throws: CheckpointError.self) { try PipeData.parse(Self.header + Self.u32(1000) + [0x08, 0x01]) }
    }
}
