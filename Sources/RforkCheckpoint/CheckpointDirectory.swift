import Crypto
import Foundation
import Glibc
import RforkSystem

/// A checkpoint on disk: `manifest.json` and CRIU's images in `images/`. Self-contained: the manifest
/// says what the job is (its PID, owner, home node), which of its descriptors lead outside it (its
/// stdio, replaced at restart), the size and SHA-256 of every image file, and an HMAC-SHA256 of all
/// that with the cluster's checkpoint key, which only the daemons hold: the owner can read and delete
/// their checkpoint, but an image they change (credentials, say) is refused at restart.
///
/// A directory is written under a temporary name beside its final one and swapped in whole (renameat2
/// RENAME_EXCHANGE when a previous checkpoint is there), so a crash leaves either the previous checkpoint
/// or the new one, never a half-written one. All of it is written and read with the owner's file system
/// identity, never following a symbolic link at the last step.
public struct CheckpointManifest: Codable, Sendable, Equatable {
    public static let formatName = "rfork-checkpoint"
    /// 3 with parts of parts, 2 with `parts` only, else 1 (what an rfork without parts writes and reads):
    /// an rfork that does not know a version refuses the directory rather than restart part of the job.
    public static let currentVersion = 3

    /// The format version a manifest with these parts is written as.
    public static func version(of parts: [Part]?) -> Int {
        guard let parts, !parts.isEmpty else { return 1 }
        return parts.contains { !($0.parts ?? []).isEmpty } ? 3 : 2
    }

    public struct Channel: Codable, Sendable, Equatable {
        /// The channel's number, as in a placement request.
        public var id: UInt32
        /// ChannelKindCode: 1 input, 2 output, 3 terminal, 4 file, 5 input also written by the job.
        public var kind: UInt32
        /// CRIU's name of the object at dump ("pipe:[123]w", "tty[...]", "file[...]").
        public var criuID: String
        /// The descriptor in the job's top process.
        public var fd: Int32
        /// A part's channel only: rfork's own end had been closed at the cut (its input had ended, or its
        /// output's reader was gone); a restart closes it again.
        public var ended: Bool?

        public init(id: UInt32, kind: UInt32, criuID: String, fd: Int32, ended: Bool? = nil) {
            self.id = id
            self.kind = kind
            self.criuID = criuID
            self.fd = fd
            self.ended = ended
        }
    }

    public struct Part: Codable, Sendable, Equatable {
        /// Its PID in the job (its stand-in's in the top part's images, its own in its images).
        public var pid: Int32
        /// The node it ran on.
        public var node: String
        /// Its image files are named this and CRIU's name ("part-4711-core-4711.img").
        public var prefix: String
        /// Its stand-in's socket to rforkd, in the top part's images.
        public var standInSocketInode: UInt64
        /// Its own socket to rforkd, on which it waited when it was saved, in its images.
        public var controlSocketInode: UInt64
        /// What its stand-in relays: every channel the stand-in numbers (`id`), with the object the part
        /// held for it (`criuID`, "pipe:[0]r" when it held none any more).
        public var channels: [Channel]
        /// Its own descendants on yet other nodes (format version 3), saved at the same cut, as the
        /// job's parts are: their images are among its own (named with its prefix, then theirs), and its
        /// images hold their stand-ins.
        public var parts: [Part]?

        public init(
            pid: Int32, node: String, prefix: String, standInSocketInode: UInt64, controlSocketInode: UInt64,
            channels: [Channel], parts: [Part]? = nil
        ) {
            self.pid = pid
            self.node = node
            self.prefix = prefix
            self.standInSocketInode = standInSocketInode
            self.controlSocketInode = controlSocketInode
            self.channels = channels
            self.parts = parts
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
    /// A job with processes on other nodes (format version 2): each such part's top process, saved at
    /// the same cut, with its own images among `files` (their names begin with its `prefix`). The top
    /// part's images hold, in its place, its stand-in: the process that kept its PID and relayed its
    /// descriptors, which a restart reconnects to the part restored again.
    public var parts: [Part]?
    /// HMAC-SHA256 (hex) of this manifest without its signature (JSON, sorted keys), with the cluster's
    /// checkpoint key.
    public var signature: String?

    public init(
        created: String, node: String, pid: Int32, uid: UInt32, controlSocketInode: UInt64, channels: [Channel],
        files: [File]
    ) {
        self.format = Self.formatName
        self.version = 1
        self.created = created
        self.node = node
        self.pid = pid
        self.uid = uid
        self.controlSocketInode = controlSocketInode
        self.channels = channels
        self.files = files
    }
}

/// The cluster's checkpoint key (every node the same; only the daemons read it): it signs manifests.
public struct CheckpointKey: Sendable {
    let bytes: [UInt8]
    public init(file path: String) throws(CheckpointError) {
        // Whoever can read or replace the key can forge any checkpoint, credentials included.
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == 0, st.st_mode & 0o077 == 0 else {
            throw CheckpointError(
                .saveFailed, "the checkpoint key \(path) must be a file of root's that only root can read")
        }
        guard let bytes = try? Posix.readFile(path), bytes.count >= 32 else {
            throw CheckpointError(.saveFailed, "cannot read the checkpoint key \(path) (at least 32 bytes)")
        }
        self.bytes = bytes
    }
    var symmetric: SymmetricKey { SymmetricKey(data: bytes) }
}

public enum CheckpointDirectory {
    public static let manifestName = "manifest.json"
    public static let imagesName = "images"
    static let manifestLimit = 1 << 20

    /// The bytes the signature covers: the manifest without its signature, as sorted-key JSON.
    static func signedBytes(_ manifest: CheckpointManifest) throws(CheckpointError) -> Data {
        var unsigned = manifest
        unsigned.signature = nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let bytes = try? encoder.encode(unsigned) else {
            throw CheckpointError(.saveFailed, "cannot encode the checkpoint's manifest")
        }
        return bytes
    }

    static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(byte)
        }
        return out
    }

    /// Creates a key file of 32 random bytes, in hex, readable by root only (unless it exists).
    public static func createKey(_ path: String) throws(CheckpointError) {
        if Posix.fileExists(path) { return }
        let random = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        do {
            let fd = try Posix.createFile(path, shown: path)
            defer { Posix.close(fd) }
            try Posix.writeAll(fd, Data(hex(random).utf8), shown: path)
        } catch { throw CheckpointError(.saveFailed, "cannot write \(path): \(error)") }
    }

    /// The manifest alone (format and version checked), read as the caller (the CLI runs as its user).
    public static func readManifest(_ dir: String) throws(CheckpointError) -> CheckpointManifest {
        let dirFD: Int32
        do { dirFD = try Posix.openDirectory(dir, shown: dir) } catch {
            throw CheckpointError(.corrupt, "\(dir) is not a directory (\(error))")
        }
        defer { Posix.close(dirFD) }
        return try readManifest(at: dirFD, shown: dir)
    }

    static func readManifest(at dirFD: Int32, shown dir: String) throws(CheckpointError) -> CheckpointManifest {
        let bytes: [UInt8]
        do {
            let fd = try Posix.openRegularFile(at: dirFD, manifestName, shown: dir + "/" + manifestName)
            defer { Posix.close(fd) }
            bytes = try Posix.readAll(fd, limit: manifestLimit, shown: dir + "/" + manifestName)
        } catch {
            if error.errno == ENOENT {
                throw CheckpointError(.corrupt, "\(dir) is not an rfork checkpoint (no \(manifestName))")
            }
            throw CheckpointError(.corrupt, "cannot read the checkpoint \(dir): \(error)")
        }
        struct Header: Decodable {
            var format: String?
            var version: Int?
        }
        guard let header = try? JSONDecoder().decode(Header.self, from: Data(bytes)),
            header.format == CheckpointManifest.formatName
        else { throw CheckpointError(.corrupt, "\(dir) is not an rfork checkpoint (its \(manifestName) is foreign)") }
        guard let version = header.version, (1...CheckpointManifest.currentVersion).contains(version) else {
            throw CheckpointError(
                .corrupt,
                "\(dir) is an rfork checkpoint of format version \(header.version ?? 0); this rfork reads versions 1 to \(CheckpointManifest.currentVersion)"
            )
        }
        let manifest: CheckpointManifest
        do { manifest = try JSONDecoder().decode(CheckpointManifest.self, from: Data(bytes)) } catch {
            throw CheckpointError(.corrupt, "\(dir) is damaged: its \(manifestName) is incomplete")
        }
        guard CheckpointManifest.version(of: manifest.parts) == version else {
            throw CheckpointError(.corrupt, "\(dir) is damaged: its parts do not match its format version")
        }
        return manifest
    }

    /// Copies a checkpoint into `privateDirectory` (root's, on tmpfs) and checks the copy: the manifest's
    /// signature with `key`, and every image file (regular, listed, same size and SHA-256, none unlisted).
    /// DIR is opened and read with the file system identity of uid:gid, so a user can restart only what
    /// they can read, and nothing is read through a link. One line says what is wrong.
    public static func copyVerified(
        _ dir: String, into privateDirectory: String, key: CheckpointKey, uid: UInt32, gid: UInt32
    ) throws(CheckpointError) -> CheckpointManifest {
        // As the user: pin DIR and its images directory, read the manifest, open every listed file.
        let opened: (CheckpointManifest, [(CheckpointManifest.File, Int32)])
        do {
            opened = try Posix.asFilesystemUser(
                uid: uid, gid: gid,
                unavailable: CheckpointError(.saveFailed, "cannot take the file system identity of uid \(uid)")
            ) {
                () throws(CheckpointError) -> (CheckpointManifest, [(CheckpointManifest.File, Int32)]) in
                let dirFD: Int32
                do { dirFD = try Posix.openDirectory(dir, shown: dir) } catch {
                    throw CheckpointError(.corrupt, "\(dir) is not a directory (\(error))")
                }
                defer { Posix.close(dirFD) }
                let manifest = try readManifest(at: dirFD, shown: dir)
                let imagesFD: Int32
                do { imagesFD = try Posix.openDirectory(at: dirFD, imagesName, shown: dir + "/" + imagesName) } catch {
                    throw CheckpointError(.corrupt, "\(dir) is damaged: \(error)")
                }
                defer { Posix.close(imagesFD) }
                let listed = Set(manifest.files.map(\.name))
                if let extra = Posix.listDirectory(fd: imagesFD).first(where: { !listed.contains($0) }) {
                    throw CheckpointError(.corrupt, "\(dir) is damaged: image file \(extra) is not in its manifest")
                }
                var files: [(CheckpointManifest.File, Int32)] = []
                do throws(CheckpointError) {
                    for file in manifest.files {
                        guard !file.name.isEmpty, !file.name.contains("/"), file.name != ".", file.name != ".." else {
                            throw CheckpointError(
                                .corrupt, "\(dir) is damaged: its manifest names a file '\(file.name)'")
                        }
                        let fd: Int32
                        do throws(SystemError) {
                            fd = try Posix.openRegularFile(at: imagesFD, file.name, shown: file.name)
                        } catch {
                            let why = error.errno == ENOENT ? "image file \(file.name) is missing" : "\(error)"
                            throw CheckpointError(.corrupt, "\(dir) is damaged: \(why)")
                        }
                        files.append((file, fd))
                    }
                } catch {
                    for (_, fd) in files { Posix.close(fd) }
                    throw error
                }
                return (manifest, files)
            }
        }
        let (manifest, files) = opened
        defer { for (_, fd) in files { Posix.close(fd) } }
        // As root: the signature, then a copy of each file checked as it is written.
        guard let signature = manifest.signature.flatMap(Self.bytes(hex:)),
            HMAC<SHA256>.isValidAuthenticationCode(
                signature, authenticating: try signedBytes(manifest), using: key.symmetric)
        else {
            throw CheckpointError(
                .corrupt,
                "\(dir) was changed since it was saved, or saved by another cluster (its signature does not match)")
        }
        for (file, fd) in files {
            let path = privateDirectory + "/" + file.name
            var st = stat()
            guard fstat(fd, &st) == 0, Int(st.st_size) == file.size else {
                throw CheckpointError(
                    .corrupt, "\(dir) is damaged: \(file.name) has \(st.st_size) bytes, not \(file.size)")
            }
            let size: Int
            let sha256: String
            do {
                let out = try Posix.createFile(path, shown: path)
                defer { Posix.close(out) }
                // A file that grows while it is copied is not the one that was checked: stop there.
                (size, sha256) = try copyHashing(fd, to: out, shown: file.name, limit: file.size)
            } catch { throw CheckpointError(.corrupt, "cannot copy \(dir)/images/\(file.name): \(error)") }
            guard size == file.size else {
                throw CheckpointError(.corrupt, "\(dir) is damaged: \(file.name) has \(size) bytes, not \(file.size)")
            }
            guard sha256 == file.sha256 else {
                throw CheckpointError(.corrupt, "\(dir) is damaged: \(file.name) does not match its checksum")
            }
        }
        return manifest
    }

    /// Writes a checkpoint from the image files in `source` (root's private dump directory): as user
    /// uid:gid, into `DIR.rfork-staging-PID` beside `dir` (made new: never an existing path or a link),
    /// with checksums and the signed manifest, flushed, then swapped in at `dir`; a previous checkpoint
    /// there is removed afterwards. A `dir` that exists and is not a checkpoint is left alone.
    /// Returns the bytes of image data written.
    public static func write(
        from source: String, to dir: String, manifest partial: CheckpointManifest, key: CheckpointKey, uid: UInt32,
        gid: UInt32
    ) throws(CheckpointError) -> Int {
        // As root: open the dump's files.
        var sources: [(String, Int32)] = []
        defer { for (_, fd) in sources { Posix.close(fd) } }
        for name in Posix.listDirectory(source) where name.hasSuffix(".img") {
            do { sources.append((name, try Posix.openRegularFile(source + "/" + name, shown: name))) } catch {
                throw CheckpointError(.saveFailed, "cannot read the dump: \(error)")
            }
        }
        let staging = dir + ".rfork-staging-\(partial.pid)"
        clearLeftover(staging, uid: uid, gid: gid)
        return try Posix.asFilesystemUser(
            uid: uid, gid: gid,
            unavailable: CheckpointError(.saveFailed, "cannot take the file system identity of uid \(uid)")
        ) {
            () throws(CheckpointError) -> Int in
            try makeStaging(staging, for: dir)
            var manifest = partial
            var total = 0
            do {
                let stagingFD = try Posix.openDirectory(staging, shown: staging)
                defer { Posix.close(stagingFD) }
                guard mkdirat(stagingFD, imagesName, 0o700) == 0 else {
                    throw SystemError("mkdir \(staging)/\(imagesName)", errno: errno)
                }
                let imagesFD = try Posix.openDirectory(at: stagingFD, imagesName, shown: imagesName)
                defer { Posix.close(imagesFD) }
                for (name, fd) in sources {
                    let out = try Posix.createFile(at: imagesFD, name, shown: name)
                    defer { Posix.close(out) }
                    let (size, sha256) = try copyHashing(fd, to: out, shown: name, limit: nil)
                    _ = fsync(out)
                    total += size
                    manifest.files.append(.init(name: name, size: size, sha256: sha256))
                }
                try writeManifest(manifest, key: key, stagingFD: stagingFD, imagesFD: imagesFD)
            } catch {
                remove(staging)
                throw CheckpointError(.saveFailed, "cannot write the checkpoint: \(error)")
            }
            try swapIn(staging, at: dir)
            return total
        }
    }

    /// A checkpoint CRIU writes in place: `DIR.rfork-staging-PID` (the owner's, as in `write`) with its
    /// `images/` made by root, mode 0700, so that no one else can put a file or a link there while CRIU
    /// (root) writes into it; CRIU is given this process's descriptor of it (`criuPath`), never a path
    /// the owner could redirect. Then `finishInPlace` checksums the images where they are, gives them to
    /// the owner and swaps the directory in: the images are written once, straight into DIR's file
    /// system, instead of into root's private directory and then copied.
    public struct InPlace: Sendable {
        public let directory: String
        public let staging: String
        let stagingFD: Int32
        let imagesFD: Int32
        /// The images directory as CRIU must be told it: through this process's descriptor.
        public var criuPath: String { "/proc/\(getpid())/fd/\(imagesFD)" }
    }

    /// Makes the staging directory of a checkpoint written in place (see `InPlace`); nil when root cannot
    /// make its own directory there (a network file system that maps root to nobody, say): the caller
    /// then writes through its private directory as before.
    public static func beginInPlace(dir: String, pid: Int32, uid: UInt32, gid: UInt32) throws(CheckpointError)
        -> InPlace?
    {
        let staging = dir + ".rfork-staging-\(pid)"
        clearLeftover(staging, uid: uid, gid: gid)
        let stagingFD = try Posix.asFilesystemUser(
            uid: uid, gid: gid,
            unavailable: CheckpointError(.saveFailed, "cannot take the file system identity of uid \(uid)")
        ) { () throws(CheckpointError) -> Int32 in
            try makeStaging(staging, for: dir)
            do { return try Posix.openDirectory(staging, shown: staging) } catch {
                remove(staging)
                throw CheckpointError(.saveFailed, "cannot write the checkpoint: \(error)")
            }
        }
        // As root: images/ is root's until the images are checked.
        var st = stat()
        let imagesFD =
            mkdirat(stagingFD, imagesName, 0o700) == 0
            ? openat(
                stagingFD, imagesName, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_DIRECTORY) : -1
        guard imagesFD >= 0, fstat(imagesFD, &st) == 0, st.st_uid == 0 else {
            if imagesFD >= 0 { Posix.close(imagesFD) }
            unlinkat(stagingFD, imagesName, AT_REMOVEDIR)
            Posix.close(stagingFD)
            _ = try? Posix.asFilesystemUser(uid: uid, gid: gid, unavailable: CheckpointError(.saveFailed, "")) {
                () throws(CheckpointError) in remove(staging)
            }
            return nil
        }
        return InPlace(directory: dir, staging: staging, stagingFD: stagingFD, imagesFD: imagesFD)
    }

    /// Checksums the images CRIU wrote in place (what is not an image goes), gives them to the owner,
    /// writes the signed manifest and swaps the directory in at DIR. Returns the bytes of image data.
    /// Whatever happens, the descriptors are closed, and on failure the staging directory is removed.
    public static func finishInPlace(
        _ target: InPlace, manifest partial: CheckpointManifest, key: CheckpointKey, uid: UInt32, gid: UInt32
    ) throws(CheckpointError) -> Int {
        var manifest = partial
        var total = 0
        do {
            for name in Posix.listDirectory(fd: target.imagesFD).sorted() {
                guard name.hasSuffix(".img") else {
                    unlinkat(target.imagesFD, name, 0)
                    continue
                }
                let fd = try Posix.openRegularFile(at: target.imagesFD, name, shown: name)
                defer { Posix.close(fd) }
                var st = stat()
                guard fstat(fd, &st) == 0 else { throw SystemError("stat \(name)", errno: errno) }
                let size = Int(st.st_size)
                let sha256 = try hashMapped(fd, size: size, shown: name)
                _ = fsync(fd)
                guard fchown(fd, uid, gid) == 0, fchmod(fd, 0o600) == 0 else {
                    throw SystemError("chown \(name)", errno: errno)
                }
                total += size
                manifest.files.append(.init(name: name, size: size, sha256: sha256))
            }
            guard fchown(target.imagesFD, uid, gid) == 0 else { throw SystemError("chown images", errno: errno) }
        } catch {
            discardInPlace(target, uid: uid, gid: gid)
            throw CheckpointError(.saveFailed, "cannot write the checkpoint: \(error)")
        }
        defer {
            Posix.close(target.imagesFD)
            Posix.close(target.stagingFD)
        }
        return try Posix.asFilesystemUser(
            uid: uid, gid: gid,
            unavailable: CheckpointError(.saveFailed, "cannot take the file system identity of uid \(uid)")
        ) { () throws(CheckpointError) -> Int in
            do {
                try writeManifest(manifest, key: key, stagingFD: target.stagingFD, imagesFD: target.imagesFD)
            } catch {
                remove(target.staging)
                throw CheckpointError(.saveFailed, "cannot write the checkpoint: \(error)")
            }
            try swapIn(target.staging, at: target.directory)
            return total
        }
    }

    /// Removes a checkpoint begun in place that will not be finished (CRIU failed): its images as root
    /// (the directory is root's), then the staging directory as the owner; closes its descriptors.
    public static func discardInPlace(_ target: InPlace, uid: UInt32, gid: UInt32) {
        for name in Posix.listDirectory(fd: target.imagesFD) { unlinkat(target.imagesFD, name, 0) }
        unlinkat(target.stagingFD, imagesName, AT_REMOVEDIR)
        Posix.close(target.imagesFD)
        Posix.close(target.stagingFD)
        _ = try? Posix.asFilesystemUser(uid: uid, gid: gid, unavailable: CheckpointError(.saveFailed, "")) {
            () throws(CheckpointError) in remove(target.staging)
        }
    }

    /// As the owner: checks that DIR is absent or a checkpoint, removes a staging directory a crash left
    /// (see `clearLeftover` for one begun in place), and makes it anew.
    private static func makeStaging(_ staging: String, for dir: String) throws(CheckpointError) {
        if Posix.exists(dir) {
            guard Posix.isPlainDirectory(dir), (try? readManifest(dir)) != nil else {
                throw CheckpointError(.saveFailed, "\(dir) exists and is not an rfork checkpoint; it is left alone")
            }
        }
        if Posix.isPlainDirectory(staging) { remove(staging) }  // left by a crash
        guard mkdir(staging, 0o700) == 0 else {
            throw CheckpointError(.saveFailed, "cannot create \(staging): \(Posix.errorText(errno))")
        }
    }

    /// Empties the root-owned images/ of a staging directory a crash left mid-dump, which its owner
    /// cannot: the staging directory is opened as the owner (so only one they can reach), and only a
    /// root-owned images/ in it is emptied and removed, as root, through descriptors.
    private static func clearLeftover(_ staging: String, uid: UInt32, gid: UInt32) {
        guard
            let stagingFD = try? Posix.asFilesystemUser(
                uid: uid, gid: gid, unavailable: SystemError("take uid \(uid)", errno: EPERM),
                { () throws(SystemError) -> Int32 in try Posix.openDirectory(staging, shown: staging) })
        else { return }
        defer { Posix.close(stagingFD) }
        guard let imagesFD = try? Posix.openDirectory(at: stagingFD, imagesName, shown: imagesName) else { return }
        defer { Posix.close(imagesFD) }
        var st = stat()
        guard fstat(imagesFD, &st) == 0, st.st_uid == 0 else { return }
        for name in Posix.listDirectory(fd: imagesFD) { unlinkat(imagesFD, name, 0) }
        unlinkat(stagingFD, imagesName, AT_REMOVEDIR)
    }

    /// Signs the manifest and writes it into the staging directory, then flushes the directories.
    private static func writeManifest(
        _ partial: CheckpointManifest, key: CheckpointKey, stagingFD: Int32, imagesFD: Int32
    )
        throws
    {
        var manifest = partial
        manifest.version = CheckpointManifest.version(of: manifest.parts)
        manifest.signature = hex(HMAC<SHA256>.authenticationCode(for: try signedBytes(manifest), using: key.symmetric))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let out = try Posix.createFile(at: stagingFD, manifestName, shown: manifestName)
        defer { Posix.close(out) }
        try Posix.writeAll(out, (try? encoder.encode(manifest)) ?? Data(), shown: manifestName)
        _ = fsync(out)
        _ = fsync(imagesFD)
        _ = fsync(stagingFD)
    }

    /// As the owner: puts the staging directory at DIR (exchanged with a previous checkpoint, which then
    /// goes), and flushes DIR's parent.
    private static func swapIn(_ staging: String, at dir: String) throws(CheckpointError) {
        let replacing = Posix.isPlainDirectory(dir)
        guard replacing ? Posix.exchange(staging, dir) : rename(staging, dir) == 0 else {
            let why = Posix.errorText(errno)
            remove(staging)
            throw CheckpointError(.saveFailed, "cannot put the checkpoint at \(dir): \(why)")
        }
        let parent = "/" + dir.split(separator: "/").dropLast().joined(separator: "/")
        Posix.sync(parent)
        if replacing { remove(staging) }  // now the previous checkpoint
    }

    /// SHA-256 (hex) of a file's `size` bytes, read through a mapping of it (no copy).
    static func hashMapped(_ fd: Int32, size: Int, shown: String) throws(SystemError) -> String {
        var hasher = SHA256()
        if size > 0 {
            guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
                throw SystemError("map \(shown)", errno: errno)
            }
            defer { munmap(p, size) }
            _ = madvise(p, size, MADV_SEQUENTIAL)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: p, count: size))
        }
        return hex(hasher.finalize())
    }

    /// Copies a descriptor from its start to `out` in 1 MiB pieces; its size and SHA-256 (hex). With a
    /// `limit`, a source longer than that is an error.
    static func copyHashing(_ fd: Int32, to out: Int32, shown: String, limit: Int?) throws(SystemError) -> (Int, String)
    {
        var hasher = SHA256()
        var size = 0
        try Posix.eachChunk(of: fd, size: 1 << 20, shown: shown) { (data: Data) throws(SystemError) in
            if let limit, size + data.count > limit { throw SystemError("\(shown) grew", errno: EFBIG) }
            hasher.update(data: data)
            size += data.count
            try Posix.writeAll(out, data, shown: shown)
        }
        return (size, hex(hasher.finalize()))
    }

    /// Removes a checkpoint directory (or a staging one) and what is in it; nothing through a link.
    public static func remove(_ dir: String) {
        let images = dir + "/" + imagesName
        if Posix.isPlainDirectory(images) { Posix.removeFlatDirectory(images) }
        unlink(dir + "/" + manifestName)
        rmdir(dir)
    }
}
