import Foundation
import Glibc
import RforkCheckpoint
import RforkSystem
import Testing

/// A checkpoint directory written in place (CRIU's images straight into DIR's staging directory, root's
/// until checked) and read back for a restart, as a user: what is written is the owner's alone, what is
/// restored is a checked copy, and a crash's leftover or a changed byte is dealt with. Needs root (it
/// writes as another user, as rforkd does).
@Suite(.serialized) struct CheckpointDirectoryTests {
    static let user: UInt32 = 65534

    /// A scratch directory the user owns, and a checkpoint key only root can read.
    struct Scratch {
        let base: String
        let key: CheckpointKey

        init() throws {
            try #require(getuid() == 0, "these tests write as another user, as rforkd does: run them as root")
            base = "/tmp/rfork-ckdir-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try #require(mkdir(base, 0o755) == 0)
            try #require(chown(base, CheckpointDirectoryTests.user, CheckpointDirectoryTests.user) == 0)
            let keyPath = base + ".key"
            try Data((0..<32).map { UInt8($0) }).write(to: URL(fileURLWithPath: keyPath))
            chmod(keyPath, 0o600)
            key = try CheckpointKey(file: keyPath)
            unlink(keyPath)
        }

        func remove() { _ = try? Posix.run(["/bin/rm", "-rf", base]) }
    }

    static func manifest(pid: Int32) -> CheckpointManifest {
        CheckpointManifest(
            created: "-", node: "node1", pid: pid, uid: user, controlSocketInode: 1, channels: [], files: [])
    }

    /// What CRIU would write: two images and files that are not images.
    static func dump(into path: String) throws {
        let pages = Data((0..<(1 << 20) + 123).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try pages.write(to: URL(fileURLWithPath: path + "/pages-1.img"))
        try Data("core".utf8).write(to: URL(fileURLWithPath: path + "/core-7.img"))
        try Data("log".utf8).write(to: URL(fileURLWithPath: path + "/dump.log"))
        try Data("stats".utf8).write(to: URL(fileURLWithPath: path + "/stats-dump"))
    }

    static func owner(_ path: String) -> (uid: UInt32, mode: UInt32)? {
        var st = stat()
        return lstat(path, &st) == 0 ? (st.st_uid, st.st_mode & 0o7777) : nil
    }

    @Test func imagesWrittenInPlaceAreTheOwnersAloneAndRestoreAsACheckedCopy() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let dir = scratch.base + "/ck"
        let target = try #require(
            try CheckpointDirectory.beginInPlace(dir: dir, pid: 7, uid: Self.user, gid: Self.user))
        // While CRIU writes, images/ is root's and no one else's.
        #expect(Self.owner(dir + ".rfork-staging-7/images").map { $0.uid == 0 && $0.mode == 0o700 } == true)
        #expect(Self.owner(dir + ".rfork-staging-7")?.uid == Self.user)
        try Self.dump(into: target.criuPath)
        let bytes = try CheckpointDirectory.finishInPlace(
            target, manifest: Self.manifest(pid: 7), key: scratch.key, uid: Self.user, gid: Self.user)
        #expect(bytes == (1 << 20) + 123 + 4)
        #expect(!Posix.exists(dir + ".rfork-staging-7"))
        #expect(Set(Posix.listDirectory(dir + "/images")) == ["pages-1.img", "core-7.img"])
        for path in [dir, dir + "/images", dir + "/manifest.json", dir + "/images/pages-1.img"] {
            #expect(Self.owner(path)?.uid == Self.user, "\(path) is not the owner's")
            #expect(Self.owner(path).map { $0.mode & 0o077 == 0 } == true, "others can reach \(path)")
        }
        let copy = scratch.base + "/restore"
        try #require(mkdir(copy, 0o700) == 0)
        let checked = try CheckpointDirectory.copyVerified(
            dir, into: copy, key: scratch.key, uid: Self.user, gid: Self.user)
        #expect(checked.files.map(\.name).sorted() == ["core-7.img", "pages-1.img"])
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: copy + "/pages-1.img"))
                == Data(contentsOf: URL(fileURLWithPath: dir + "/images/pages-1.img")))
    }

    @Test func aChangedImageIsRefusedAtRestart() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let dir = scratch.base + "/ck"
        let target = try #require(
            try CheckpointDirectory.beginInPlace(dir: dir, pid: 8, uid: Self.user, gid: Self.user))
        try Self.dump(into: target.criuPath)
        _ = try CheckpointDirectory.finishInPlace(
            target, manifest: Self.manifest(pid: 8), key: scratch.key, uid: Self.user, gid: Self.user)
        let fd = open(dir + "/images/pages-1.img", O_WRONLY)
        try #require(fd >= 0)
        var byte: UInt8 = 0xff
        #expect(pwrite(fd, &byte, 1, 4096) == 1)
        close(fd)
        let copy = scratch.base + "/restore"
        try #require(mkdir(copy, 0o700) == 0)
        #expect {
            _ = try CheckpointDirectory.copyVerified(dir, into: copy, key: scratch.key, uid: Self.user, gid: Self.user)
        } throws: { error in
            "\(error)".contains("pages-1.img does not match its checksum")
        }
    }

    /// A crash mid-dump leaves a staging directory whose images/ is root's: the owner could not remove
    /// it, so the next checkpoint clears it first, and none of its files ends up in the checkpoint.
    @Test func aStagingDirectoryACrashLeftIsClearedFirst() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let dir = scratch.base + "/ck"
        let leftover = dir + ".rfork-staging-9"
        try #require(mkdir(leftover, 0o700) == 0 && chown(leftover, Self.user, Self.user) == 0)
        try #require(mkdir(leftover + "/images", 0o700) == 0)
        try Data("stale".utf8).write(to: URL(fileURLWithPath: leftover + "/images/pages-9.img"))
        let target = try #require(
            try CheckpointDirectory.beginInPlace(dir: dir, pid: 9, uid: Self.user, gid: Self.user))
        try Self.dump(into: target.criuPath)
        _ = try CheckpointDirectory.finishInPlace(
            target, manifest: Self.manifest(pid: 9), key: scratch.key, uid: Self.user, gid: Self.user)
        #expect(!Posix.exists(dir + "/images/pages-9.img"))
        #expect(!Posix.exists(leftover))
    }

    /// CRIU failed: what it wrote goes, and DIR (here, a previous checkpoint) stays as it was.
    @Test func aDumpThatFailedLeavesThePreviousCheckpoint() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let dir = scratch.base + "/ck"
        let first = try #require(
            try CheckpointDirectory.beginInPlace(dir: dir, pid: 10, uid: Self.user, gid: Self.user))
        try Self.dump(into: first.criuPath)
        _ = try CheckpointDirectory.finishInPlace(
            first, manifest: Self.manifest(pid: 10), key: scratch.key, uid: Self.user, gid: Self.user)
        let before = Set(Posix.listDirectory(dir + "/images"))
        let second = try #require(
            try CheckpointDirectory.beginInPlace(dir: dir, pid: 10, uid: Self.user, gid: Self.user))
        try Data("half".utf8).write(to: URL(fileURLWithPath: second.criuPath + "/pages-1.img"))
        CheckpointDirectory.discardInPlace(second, uid: Self.user, gid: Self.user)
        #expect(!Posix.exists(dir + ".rfork-staging-10"))
        #expect(Set(Posix.listDirectory(dir + "/images")) == before)
        let copy = scratch.base + "/restore"
        try #require(mkdir(copy, 0o700) == 0)
        _ = try CheckpointDirectory.copyVerified(dir, into: copy, key: scratch.key, uid: Self.user, gid: Self.user)
    }
}
