import CRforkSystem
import Foundation
import Glibc

/// File operations for paths a user chose, done by root on that user's behalf: they never follow a
/// symbolic link at the last step, never block on a FIFO or device, and can run with the user's file
/// system identity (so the kernel checks the user's permissions, and what they create is theirs).
extension Posix {
    /// Runs `body` on this thread with the file system identity of uid:gid (setfsuid/setfsgid: this thread
    /// only, and without root's file capabilities), then returns to root's.
    /// Fails closed: if the identity cannot be taken (setfsuid reports nothing back), `body` does not run.
    /// Root's supplementary groups and non-file capabilities stay (documented in docs/CHECKPOINT.md).
    public static func asFilesystemUser<T, E: Error>(
        uid: UInt32, gid: UInt32, unavailable: E, _ body: () throws(E) -> T
    ) throws(E) -> T {
        if uid == 0 { return try body() }
        _ = crfork_setfsgid(gid)
        _ = crfork_setfsuid(uid)
        defer {
            _ = crfork_setfsuid(0)
            _ = crfork_setfsgid(0)
        }
        // setfsuid returns the previous identity: asked again, it must say the user's.
        guard crfork_setfsuid(uid) == Int32(bitPattern: uid), crfork_setfsgid(gid) == Int32(bitPattern: gid) else {
            throw unavailable
        }
        return try body()
    }

    /// Opens a regular file for reading, relative to directory descriptor `dir` (or AT_FDCWD): no symbolic
    /// link, no FIFO or device. The descriptor, or an error naming `shown`.
    public static func openRegularFile(at dir: Int32 = AT_FDCWD, _ name: String, shown: String) throws(SystemError)
        -> Int32
    {
        let fd = openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        if fd < 0 { throw SystemError("open \(shown)", errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            _ = Glibc.close(fd)
            throw SystemError("\(shown) is not a regular file", errno: EINVAL)
        }
        return fd
    }

    /// Opens a directory (no symbolic link at the last step), for openat() below it.
    public static func openDirectory(at dir: Int32 = AT_FDCWD, _ name: String, shown: String) throws(SystemError)
        -> Int32
    {
        let fd = openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_DIRECTORY)
        if fd < 0 { throw SystemError("open \(shown)", errno: errno) }
        return fd
    }

    /// Reads a whole descriptor from its start, at most `limit` bytes (more is an error).
    public static func readAll(_ fd: Int32, limit: Int, shown: String) throws(SystemError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var offset: off_t = 0
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw SystemError("read \(shown)", errno: errno) }
            if n == 0 { return out }
            out += chunk[0..<n]
            offset += off_t(n)
            if out.count > limit { throw SystemError("\(shown) is larger than \(limit) bytes", errno: EFBIG) }
        }
    }

    /// Streams a descriptor from its start in pieces of `size` bytes.
    public static func eachChunk(of fd: Int32, size: Int, shown: String, _ body: (Data) throws(SystemError) -> Void)
        throws(SystemError)
    {
        var offset: off_t = 0
        var buffer = [UInt8](repeating: 0, count: size)
        while true {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw SystemError("read \(shown)", errno: errno) }
            if n == 0 { return }
            try body(Data(buffer[0..<n]))
            offset += off_t(n)
        }
    }

    /// Creates a new file (never an existing one, never through a link) below `dir`, for writing.
    public static func createFile(at dir: Int32 = AT_FDCWD, _ name: String, shown: String) throws(SystemError) -> Int32
    {
        let fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 { throw SystemError("create \(shown)", errno: errno) }
        return fd
    }

    /// Writes all of `data` at the descriptor's position.
    public static func writeAll(_ fd: Int32, _ data: Data, shown: String) throws(SystemError) {
        var failure: Int32 = 0
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    failure = n < 0 ? errno : EIO
                    return
                }
                done += n
            }
        }
        if failure != 0 { throw SystemError("write \(shown)", errno: failure) }
    }

    /// The names in a directory descriptor (without . and ..); the descriptor stays open.
    public static func listDirectory(fd: Int32) -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = direntName(entry)
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }

    /// Whether anything is at `path` (lstat, checked with the caller's file system identity; unlike access(2),
    /// which asks with the real uid).
    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Whether `path` is a real directory (lstat: a symbolic link to one is not).
    public static func isPlainDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// A path made canonical for use as a directory argument: absolute, no trailing "/", no empty, "." or
    /// ".." components. nil when it cannot be (those components).
    public static func cleanAbsolutePath(_ path: String, relativeTo cwd: String) -> String? {
        let full = path.hasPrefix("/") ? path : cwd + "/" + path
        let parts = full.split(separator: "/", omittingEmptySubsequences: true)
        guard !parts.isEmpty, !parts.contains(where: { $0 == "." || $0 == ".." }),
            !full.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f })
        else { return nil }
        return "/" + parts.joined(separator: "/")
    }
}
