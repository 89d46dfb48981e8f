import Crypto
import Foundation
import Glibc
import RforkSystem

/// A checkpoint on disk: `manifest.json` and CRIU's images in `images/`. Self-contained: the manifest
/// says what the job is (its PID, owner, home node), which of its descriptors lead outside it (its
/// stdio, replaced at restart) and the size and SHA-256 of every image file.
///
/// A directory is written under a temporary name beside its final one and swapped in whole (renameat2
/// RENAME_EXCHANGE when a previous checkpoint is there), so a crash leaves either the previous checkpoint
/// or the new one, never a half-written one.
public struct CheckpointManifest: Codable, Sendable, Equatable {
    public static let formatName = "rfork-checkpoint"
    public static let currentVersion = 1

    public struct Channel: Codable, Sendable, Equatable {
        /// The channel's number, as in a placement request.
        public var id: UInt32
        /// ChannelKindCode: 1 input, 2 output, 3 terminal, 4 file, 5 input also written by the job.
        public var kind: UInt32
        /// CRIU's name of the object at dump ("pipe:[123]w", "tty[...]", "file[...]").
        public var criuID: String
        /// The descriptor in the job's top process.
        public var fd: Int32

        public init(id: UInt32, kind: UInt32, criuID: String, fd: Int32) {
            self.id = id
            self.kind = kind
            self.criuID = criuID
            self.fd = fd
        }
    }

    public struct File: Codable, Sendable, Equatable {
        public var name: String
        public var size: Int
        public var sha256: String

        public init(name: String, size: Int, sha256: String) {
            self.name = name
            self.size = size
            self.sha256 = sha256
        }
    }

    public var format: String
    public var version: Int
    /// ISO 8601, UTC.
    public var created: String
    public var node: String
    public var pid: Int32
    public var uid: UInt32
    /// The job's top process was blocked on this socket (to its home rforkd) when it was saved.
    public var controlSocketInode: UInt64
    public var channels: [Channel]
    public var files: [File]

    public init(
        created: String, node: String, pid: Int32, uid: UInt32, controlSocketInode: UInt64, channels: [Channel],
        files: [File]
    ) {
        self.format = Self.formatName
        self.version = Self.currentVersion
        self.created = created
        self.node = node
        self.pid = pid
        self.uid = uid
        self.controlSocketInode = controlSocketInode
        self.channels = channels
        self.files = files
    }
}

public enum CheckpointDirectory {
    public static let manifestName = "manifest.json"
    public static let imagesName = "images"

    /// The SHA-256 of a file, in hex; reads it in 1 MiB pieces.
    public static func sha256(of path: String) throws(SystemError) -> String {
        var hasher = SHA256()
        try Posix.readChunks(path, size: 1 << 20) { _, data, _ in hasher.update(data: data) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Reads and checks a checkpoint: its manifest (format, version), and every image file it lists
    /// (present, same size, same SHA-256), with no image file it does not list. The error says what is
    /// wrong in one line.
    public static func load(_ dir: String) throws(CheckpointError) -> CheckpointManifest {
        let manifest = try readManifest(dir)
        let images = dir + "/" + imagesName
        let present = Set(Posix.listDirectory(images))
        for file in manifest.files {
            let path = images + "/" + file.name
            guard !file.name.contains("/"), present.contains(file.name) else {
                throw CheckpointError(.corrupt, "\(dir) is damaged: image file \(file.name) is missing")
            }
            guard Posix.fileSize(path) == file.size else {
                throw CheckpointError(
                    .corrupt, "\(dir) is damaged: \(file.name) has \(Posix.fileSize(path)) bytes, not \(file.size)")
            }
            let sum: String
            do { sum = try sha256(of: path) } catch {
                throw CheckpointError(.corrupt, "\(dir) is damaged: cannot read \(file.name): \(error)")
            }
            guard sum == file.sha256 else {
                throw CheckpointError(.corrupt, "\(dir) is damaged: \(file.name) does not match its checksum")
            }
        }
        let extra = present.subtracting(manifest.files.map(\.name)).sorted()
        if let first = extra.first {
            throw CheckpointError(.corrupt, "\(dir) is damaged: image file \(first) is not in its manifest")
        }
        return manifest
    }

    /// The manifest alone (format and version checked), for a quick look.
    public static func readManifest(_ dir: String) throws(CheckpointError) -> CheckpointManifest {
        guard Posix.isDirectory(dir) else { throw CheckpointError(.corrupt, "\(dir) is not a directory") }
        guard Posix.fileExists(dir + "/" + manifestName) else {
            throw CheckpointError(.corrupt, "\(dir) is not an rfork checkpoint (no \(manifestName))")
        }
        let bytes: [UInt8]
        do { bytes = try Posix.readFile(dir + "/" + manifestName) } catch {
            throw CheckpointError(.corrupt, "cannot read the checkpoint \(dir): \(error)")
        }
        struct Header: Decodable {
            var format: String?
            var version: Int?
        }
        guard let header = try? JSONDecoder().decode(Header.self, from: Data(bytes)),
            header.format == CheckpointManifest.formatName
        else { throw CheckpointError(.corrupt, "\(dir) is not an rfork checkpoint (its \(manifestName) is foreign)") }
        guard header.version == CheckpointManifest.currentVersion else {
            throw CheckpointError(
                .corrupt,
                "\(dir) is an rfork checkpoint of format version \(header.version ?? 0); this rfork reads version \(CheckpointManifest.currentVersion)"
            )
        }
        do { return try JSONDecoder().decode(CheckpointManifest.self, from: Data(bytes)) } catch {
            throw CheckpointError(.corrupt, "\(dir) is damaged: its \(manifestName) is incomplete")
        }
    }

    /// Completes a checkpoint written into `staging` (images already in `staging/images`): checksums,
    /// manifest, flushed to disk, owned by `uid`, then swapped in at `dir` in one step. The previous
    /// checkpoint at `dir`, if any, is removed afterwards.
    public static func commit(
        staging: String, to dir: String, manifest partial: CheckpointManifest, uid: UInt32, gid: UInt32
    ) throws(CheckpointError) {
        var manifest = partial
        let images = staging + "/" + imagesName
        do {
            manifest.files = try Posix.listDirectory(images).map { (name: String) throws(SystemError) in
                CheckpointManifest.File(
                    name: name, size: Posix.fileSize(images + "/" + name), sha256: try sha256(of: images + "/" + name))
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let json = (try? encoder.encode(manifest)) ?? Data()
            try Posix.writeFile(staging + "/" + manifestName, json, mode: 0o600)
        } catch { throw CheckpointError(.saveFailed, "cannot write the checkpoint: \(error)") }
        for name in Posix.listDirectory(images) { Posix.syncAndOwn(images + "/" + name, uid: uid, gid: gid) }
        Posix.syncAndOwn(images, uid: uid, gid: gid)
        Posix.syncAndOwn(staging + "/" + manifestName, uid: uid, gid: gid)
        Posix.syncAndOwn(staging, uid: uid, gid: gid)
        if Posix.fileExists(dir) {
            guard Posix.exchange(staging, dir) else {
                throw CheckpointError(.saveFailed, "cannot replace \(dir): \(Posix.errorText(errno))")
            }
            remove(staging)  // now the previous checkpoint
        } else {
            guard rename(staging, dir) == 0 else {
                throw CheckpointError(.saveFailed, "cannot create \(dir): \(Posix.errorText(errno))")
            }
        }
        let parent = dir.split(separator: "/").dropLast().joined(separator: "/")
        Posix.syncAndOwn("/" + parent, uid: nil, gid: nil)
    }

    /// Removes a checkpoint directory (or a staging one) and what is in it.
    public static func remove(_ dir: String) {
        Posix.removeFlatDirectory(dir + "/" + imagesName)
        unlink(dir + "/" + manifestName)
        rmdir(dir)
    }
}
