import Glibc
import RforkSystem

/// The bytes CRIU found in the pipes of a dump (`pipes-data.img`), by pipe: CRIU saves what a read end
/// in the dumped tree had not read yet, but does not write it back into a pipe the restore is given
/// (`--inherit-fd`), so rfork does that itself for the parts of a job saved across nodes.
///
/// The file: IMG_COMMON_MAGIC and PIPES_DATA_MAGIC (u32 each), then entries of a u32 size, a
/// `pipe_data_entry` protobuf message of that size (pipe_id = 1, bytes = 2, size = 3), and `bytes` raw bytes.
public enum PipeData {
    public static let fileName = "pipes-data.img"
    static let commonMagic: UInt32 = 0x5456_4319
    static let pipesDataMagic: UInt32 = 0x5645_3709

    /// Pipe id (the pipe's inode, as 32 bits) to the bytes it held; empty when the file is not there.
    public static func read(directory: String) throws(CheckpointError) -> [UInt32: [UInt8]] {
        let path = directory + "/" + fileName
        guard access(path, F_OK) == 0 else { return [:] }
        let bytes: [UInt8]
        do {
            bytes = try Posix.readFile(path)
        } catch {
            throw CheckpointError(.corrupt, "cannot read \(fileName): \(error)")
        }
        return try parse(bytes)
    }

    public static func parse(_ bytes: [UInt8]) throws(CheckpointError) -> [UInt32: [UInt8]] {
        var at = 0
        func u32() throws(CheckpointError) -> UInt32 {
            guard at + 4 <= bytes.count else { throw CheckpointError(.corrupt, "\(fileName) is truncated") }
            defer { at += 4 }
            return UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16
                | UInt32(bytes[at + 3]) << 24
        }
        guard try u32() == commonMagic, try u32() == pipesDataMagic else {
            throw CheckpointError(.corrupt, "\(fileName) is not CRIU's pipe data")
        }
        var out: [UInt32: [UInt8]] = [:]
        while at < bytes.count {
            let size = Int(try u32())
            guard size <= bytes.count - at else { throw CheckpointError(.corrupt, "\(fileName) is truncated") }
            var fields: [UInt64: UInt64] = [:]
            var p = at
            let end = at + size
            while p < end {
                var key: UInt64 = 0
                var value: UInt64 = 0
                guard varint(bytes, &p, end, &key), key & 7 == 0, varint(bytes, &p, end, &value) else {
                    throw CheckpointError(.corrupt, "\(fileName) has an entry that is not CRIU's")
                }
                fields[key >> 3] = value
            }
            at = end
            guard let id = fields[1], let count = fields[2].map(Int.init), count <= bytes.count - at else {
                throw CheckpointError(.corrupt, "\(fileName) has an incomplete entry")
            }
            out[UInt32(truncatingIfNeeded: id)] = Array(bytes[at..<(at + count)])
            at += count
        }
        return out
    }

    /// One protobuf varint at `p` (before `end`); false when it runs past `end` or 10 bytes.
    static func varint(_ bytes: [UInt8], _ p: inout Int, _ end: Int, _ out: inout UInt64) -> Bool {
        var shift: UInt64 = 0
        out = 0
        while p < end && shift < 64 {
            let b = bytes[p]
            p += 1
            out |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return true }
            shift += 7
        }
        return false
    }
}
