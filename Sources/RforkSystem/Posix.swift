import CRforkSystem
import Foundation
import Glibc

/// An error from a system call, with the call's name and errno's text.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var errno: Int32
    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }
    public var description: String { "\(call): \(Posix.errorText(errno))" }
}

/// How a process ended, as wait() reports it.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public init(raw: Int32) {
        if crfork_wifexited(raw) != 0 {
            self = .exited(crfork_wexitstatus(raw))
        } else {
            self = .signaled(crfork_wtermsig(raw))
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exit \(code)"
        case .signaled(let sig): return "signal \(sig)"
        }
    }
}

/// Thin throwing wrappers over the libc calls rfork makes. All libc use goes through here.
public enum Posix {
    /// Starts `path` with `arguments` (argv[0] included); `descriptors[i]` becomes descriptor i.
    public static func spawn(
        _ path: String, _ arguments: [String], environment: [String]? = nil, descriptors: [Int32] = [0, 1, 2],
        newSession: Bool = false
    ) throws(SystemError) -> pid_t {
        let env = environment ?? currentEnvironment()
        // A process started from a thread with a nice of its own (rforkd's event loop) starts with the
        // process's instead: the child inherits the calling thread's.
        let own = crfork_thread_nice()
        let base = processNice
        if own != base { _ = crfork_set_thread_nice(base) }
        defer { if own != base { _ = crfork_set_thread_nice(own) } }
        let pid = withCStrings(arguments) { argv in
            withCStrings(env) { envp in
                descriptors.withUnsafeBufferPointer { fds in
                    crfork_spawn(path, argv, envp, fds.baseAddress, Int32(fds.count), newSession ? 1 : 0)
                }
            }
        }
        if pid < 0 { throw SystemError("spawn \(path)", errno: -pid) }
        return pid
    }

    /// Waits for `pid` to end (blocking).
    public static func wait(_ pid: pid_t) throws(SystemError) -> ExitStatus {
        var status: Int32 = 0
        let r = crfork_wait(pid, &status, 0)
        if r < 0 { throw SystemError("waitpid \(pid)", errno: -r) }
        return ExitStatus(raw: status)
    }

    /// Reaps `pid` if it has ended; nil while it runs.
    public static func poll(_ pid: pid_t) -> ExitStatus? {
        var status: Int32 = 0
        let r = crfork_wait(pid, &status, WNOHANG)
        return r > 0 ? ExitStatus(raw: status) : nil
    }

    public static func socketPair() throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let r = crfork_socketpair(&fds)
        if r < 0 { throw SystemError("socketpair", errno: -r) }
        return (fds[0], fds[1])
    }

    /// A nonblocking AF_UNIX stream socket bound to the abstract name `name` (what the other end's
    /// `getpeername()` shows) and connected to the socket at `path`.
    public static func connectUnix(path: String, boundTo name: String) throws(SystemError) -> Int32 {
        let fd = crfork_unix_connect(path, name)
        if fd < 0 { throw SystemError("connect \(path)", errno: errno) }
        return fd
    }

    /// A pipe whose two ends (read, write) close on exec.
    public static func makePipe() throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw SystemError("pipe", errno: errno) }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        return (fds[0], fds[1])
    }

    /// Runs argv[0] (a path) to completion and returns its exit status and standard output.
    public static func run(_ argv: [String]) throws(SystemError) -> (ExitStatus, String) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SystemError("pipe", errno: errno) }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { Glibc.close(devnull) }
        let pid: pid_t
        do { pid = try spawn(argv[0], argv, descriptors: [devnull, fds[1], devnull]) } catch {
            Glibc.close(fds[0])
            Glibc.close(fds[1])
            throw error
        }
        Glibc.close(fds[1])
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fds[0], &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        Glibc.close(fds[0])
        return (try wait(pid), String(decoding: out, as: UTF8.self))
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Ends the writing side of a socket for every descriptor of it: the peer reads end of stream.
    public static func shutdownWrite(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    public static func kill(_ pid: pid_t, _ signal: Int32) { _ = Glibc.kill(pid, signal) }

    /// Sends a signal to one thread (tgkill); false when it is gone.
    public static func signalThread(pid: pid_t, tid: pid_t, _ signal: Int32) -> Bool {
        crfork_tgkill(pid, tid, signal) == 0
    }

    /// Whether thread `tid` of `pid` blocks `signal` (its `SigBlk` in /proc/PID/task/TID/status); false
    /// when it cannot be read (the thread is gone).
    public static func threadBlocks(pid: pid_t, tid: pid_t, _ signal: Int32) -> Bool {
        guard signal >= 1, signal <= 64, let bytes = try? readFile("/proc/\(pid)/task/\(tid)/status") else {
            return false
        }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("SigBlk:") {
            let mask = UInt64(line.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
            return mask & (UInt64(1) << UInt64(signal - 1)) != 0
        }
        return false
    }

    /// futex(FUTEX_WAKE) of every waiter, in any process, on the shared futex word at `address` (in a
    /// `MAP_SHARED` mapping: the kernel keys such a word by object and offset); how many it woke, or nil.
    public static func futexWakeShared(_ address: UnsafeRawPointer) -> Int? {
        let n = crfork_futex_wake_shared(address)
        return n < 0 ? nil : Int(n)
    }

    /// futex(FUTEX_WAIT) on the shared word at `address` while it holds `expected`, at most `timeoutMilliseconds`:
    /// nil when woken, else the errno (`EAGAIN`: the word differed; `ETIMEDOUT`; `EINTR`).
    public static func futexWaitShared(_ address: UnsafeRawPointer, expected: UInt32, timeoutMilliseconds: Int)
        -> Int32?
    {
        crfork_futex_wait_shared(address, expected, timeoutMilliseconds) == 0 ? nil : errno
    }

    /// The calling thread's id.
    public static var threadID: pid_t { crfork_gettid() }

    public static func isAlive(_ pid: pid_t) -> Bool { Glibc.kill(pid, 0) == 0 || errno == EPERM }

    /// The state letter of /proc/PID/stat ("T" when stopped), or nil when the process is gone.
    public static func processState(_ pid: pid_t) -> Character? {
        let c = crfork_proc_state(pid)
        return c == 0 ? nil : Character(Unicode.Scalar(UInt8(bitPattern: c)))
    }

    public static func monotonicNanoseconds() -> UInt64 { UInt64(crfork_monotonic_ns()) }

    public static func currentEnvironment() -> [String] {
        var out: [String] = []
        var p = environ
        while let entry = p.pointee {
            out.append(String(cString: entry))
            p += 1
        }
        return out
    }

    /// The anonymous memory of a process in bytes (the "Anonymous:" line of /proc/PID/smaps_rollup);
    /// 0 when it cannot be read.
    public static func anonymousBytes(_ pid: Int32) -> UInt64 {
        guard let bytes = try? readFile("/proc/\(pid)/smaps_rollup") else { return 0 }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Anonymous:") {
            return (line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0) * 1024
        }
        return 0
    }

    /// Reads a file to its end; unlike `readData` it does not trust the size `stat` reports, so it also
    /// reads /proc files (which report 0).
    public static func readFile(_ path: String) throws(SystemError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open \(path)", errno: errno) }
        defer { _ = Glibc.close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw SystemError("read \(path)", errno: errno) }
            if n == 0 { return result }
            result += chunk[0..<n]
        }
    }

    public static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    /// Reads a whole file into Data with one copy.
    public static func readData(_ path: String) throws(SystemError) -> Data {
        var result: Data?
        try readChunks(path, size: Int.max) { _, data, _ in result = data }
        return result ?? Data()
    }

    /// Calls body(offset, bytes, isLast) for each piece of at most `size` bytes (once for an empty file).
    public static func readChunks(
        _ path: String, size: Int, _ body: (UInt64, Data, Bool) throws -> Void
    ) throws(SystemError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open \(path)", errno: errno) }
        defer { _ = Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError("stat \(path)", errno: errno) }
        let total = Int(st.st_size)
        var offset = 0
        repeat {
            let count = min(size, total - offset)
            var data = Data(count: count)
            var got = 0
            var failure: Int32 = 0
            data.withUnsafeMutableBytes { raw in
                while got < count {
                    let n = pread(fd, raw.baseAddress! + got, count - got, off_t(offset + got))
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 {
                        failure = n < 0 ? errno : EIO
                        return
                    }
                    got += n
                }
            }
            if failure != 0 { throw SystemError("read \(path)", errno: failure) }
            do { try body(UInt64(offset), data, offset + count >= total) } catch {
                throw SystemError("send \(path)", errno: EPIPE)
            }
            offset += count
        } while offset < total
    }

    /// Writes bytes at an offset of an open descriptor.
    public static func writeAll(_ fd: Int32, _ data: Data, at offset: UInt64) throws(SystemError) {
        var failure: Int32 = 0
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    failure = n < 0 ? errno : EIO
                    return
                }
                done += n
            }
        }
        if failure != 0 { throw SystemError("write", errno: failure) }
    }

    public static func writeFile(_ path: String, _ bytes: some Collection<UInt8>, mode: mode_t = 0o600)
        throws(SystemError)
    {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        if fd < 0 { throw SystemError("open \(path)", errno: errno) }
        defer { _ = Glibc.close(fd) }
        try writeAll(fd, Data(bytes), at: 0)
    }

    /// Writes `bytes` to an existing file in one write (kernel interface files: cgroups, /proc).
    public static func overwrite(_ path: String, _ bytes: [UInt8]) throws(SystemError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open \(path)", errno: errno) }
        defer { _ = Glibc.close(fd) }
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 { throw SystemError("write \(path)", errno: errno) }
    }

    /// The machine's memory in bytes (MemTotal).
    public static func memoryTotal() -> UInt64 {
        let text = (try? readFile("/proc/meminfo")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            if let kib = line.split(separator: " ").dropFirst().first.flatMap({ UInt64($0) }) { return kib * 1024 }
        }
        return UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// How many CPUs this thread may run on (its affinity, which a cpuset limits).
    public static func allowedCPUs() -> Int {
        let n = Int(crfork_allowed_cpus())
        return n > 0 ? n : cpuCount()
    }

    public static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(SystemError) {
        var partial = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            partial += "/" + part
            if mkdir(partial, mode) != 0 && errno != EEXIST { throw SystemError("mkdir \(partial)", errno: errno) }
        }
    }

    /// Removes a directory and the plain files in it (image directories are flat).
    public static func removeFlatDirectory(_ path: String) {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = direntName(entry)
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(path)
    }

    public static func listDirectory(_ path: String) -> [String] {
        var out: [String] = []
        guard let dir = opendir(path) else { return out }
        while let entry = readdir(dir) {
            let name = direntName(entry)
            if name != "." && name != ".." { out.append(name) }
        }
        closedir(dir)
        return out.sorted()
    }

    /// Every descriptor, in every process this one can see, that reads pipe `inode` (its read end, or a
    /// FIFO opened for reading and writing): (PID, descriptor). A process whose descriptors cannot be
    /// listed is not seen: run as root to see them all.
    public static func pipeReaders(inode: UInt64) -> [(pid: Int32, fd: String)] {
        let name = "pipe:[\(inode)]"
        var out: [(pid: Int32, fd: String)] = []
        for entry in listDirectory("/proc") {
            guard let pid = Int32(entry) else { continue }
            for fd in listDirectory("/proc/\(pid)/fd") where readLink("/proc/\(pid)/fd/\(fd)") == name {
                if accessMode(pid: pid, fd: fd) != O_WRONLY { out.append((pid, fd)) }
            }
        }
        return out
    }

    /// The target of a symbolic link (also /proc's descriptor and namespace links), or nil.
    public static func readLink(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4097)
        let n = readlink(path, &buf, 4096)
        guard n >= 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A process's PID in each PID namespace from this one's down to its own (the `NSpid` line of
    /// /proc/PID/status): one entry for a process in this PID namespace; empty if it is gone.
    public static func namespacePIDs(_ pid: Int32) -> [Int32] {
        guard let bytes = try? readFile("/proc/\(pid)/status") else { return [] }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("NSpid:") {
            return line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int32($0) }
        }
        return []
    }

    public static func currentDirectory() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        return getcwd(&buf, buf.count) != nil ? string(buf) : "/"
    }

    public static func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Swaps two paths in one step (both must exist). False with errno set when it failed.
    public static func exchange(_ a: String, _ b: String) -> Bool { crfork_rename_exchange(a, b) == 0 }

    /// Flushes a file or directory to its disk (no link followed, never blocking on open). Best effort.
    public static func sync(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        _ = Glibc.close(fd)
    }

    /// How far the CLOCK_MONOTONIC of `pid`'s time namespace is ahead of ours, in ns (0 when it has none
    /// of its own): a restored process's clock readings minus this are this daemon's.
    public static func monotonicOffset(_ pid: Int32) -> Int64 {
        guard let bytes = try? readFile("/proc/\(pid)/timens_offsets") else { return 0 }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count == 3, f[0] == "monotonic" || f[0] == "1", let sec = Int64(f[1]), let nsec = Int64(f[2])
            else { continue }
            return sec &* 1_000_000_000 &+ nsec
        }
        return 0
    }

    /// The children of every thread of a process (/proc/PID/task/TID/children).
    public static func children(of pid: Int32) -> [Int32] {
        listDirectory("/proc/\(pid)/task").flatMap { tid in
            let bytes = (try? readFile("/proc/\(pid)/task/\(tid)/children")) ?? []
            return String(decoding: bytes, as: UTF8.self).split(separator: " ").compactMap { Int32($0) }
        }
    }

    public static func hasChildren(_ pid: Int32) -> Bool { !children(of: pid).isEmpty }

    /// A process's status fields from /proc/PID/status ("Uid", "SigCgt", ...), or nil if it is gone.
    public static func processStatus(_ pid: Int32) -> [String: String]? {
        guard let bytes = try? readFile("/proc/\(pid)/status") else { return nil }
        var fields: [String: String] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    /// What /proc/PID/stat says of a process's CPU use, start and memory.
    public struct ProcessStat: Sendable, Equatable {
        /// utime + stime, in clock ticks.
        public var cpuTicks: UInt64
        /// When it started, in clock ticks since boot.
        public var startTicks: UInt64
        /// Its resident memory in bytes.
        public var residentBytes: UInt64
    }

    public static func processStat(_ pid: Int32) -> ProcessStat? {
        guard let bytes = try? readFile("/proc/\(pid)/stat") else { return nil }
        return parseStat(String(decoding: bytes, as: UTF8.self))
    }

    /// Parses a /proc/PID/stat line (the command, in parentheses, may hold spaces and parentheses).
    public static func parseStat(_ text: String) -> ProcessStat? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        // Fields from 3 (state) on; field N is at index N - 3.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 21, let utime = UInt64(fields[11]), let stime = UInt64(fields[12]),
            let start = UInt64(fields[19]), let rss = Int64(fields[21])
        else { return nil }
        return ProcessStat(
            cpuTicks: utime + stime, startTicks: start,
            residentBytes: UInt64(max(0, rss)) * UInt64(sysconf(Int32(_SC_PAGESIZE))))
    }

    /// Nanoseconds the threads of a process have run plus waited runnable for a CPU
    /// (/proc/PID/task/TID/schedstat), or nil when it is gone.
    public static func cpuDemandNanoseconds(_ pid: Int32) -> UInt64? {
        var total: UInt64 = 0
        var any = false
        for tid in listDirectory("/proc/\(pid)/task") {
            guard let bytes = try? readFile("/proc/\(pid)/task/\(tid)/schedstat") else { continue }
            let fields = String(decoding: bytes, as: UTF8.self).split(separator: " ").prefix(2).compactMap {
                UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            total += fields.reduce(0, +)
            any = true
        }
        return any ? total : nil
    }

    /// Seconds since boot (/proc/uptime).
    public static func uptimeSeconds() -> Double {
        guard let bytes = try? readFile("/proc/uptime") else { return 0 }
        return String(decoding: bytes, as: UTF8.self).split(separator: " ").first.flatMap { Double($0) } ?? 0
    }

    /// The environment a process was started with (/proc/PID/environ; root reads any).
    public static func environment(of pid: Int32) -> [String: String] {
        guard let bytes = try? readFile("/proc/\(pid)/environ") else { return [:] }
        var out: [String: String] = [:]
        for entry in bytes.split(separator: 0) {
            guard let eq = entry.firstIndex(of: UInt8(ascii: "=")) else { continue }
            out[String(decoding: entry[entry.startIndex..<eq], as: UTF8.self)] = String(
                decoding: entry[(eq + 1)...], as: UTF8.self)
        }
        return out
    }

    /// Whether a process maps a file whose path ends with `suffix` (a library it loaded).
    public static func mapsLibrary(_ pid: Int32, named suffix: String) -> Bool {
        guard let bytes = try? readFile("/proc/\(pid)/maps") else { return false }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").contains { $0.hasSuffix(suffix) }
    }

    /// A descriptor that names one process for good (pidfd_open), or nil when it is gone.
    public static func openProcess(_ pid: Int32) -> Int32? {
        let fd = crfork_pidfd_open(pid)
        return fd >= 0 ? fd : nil
    }

    /// Whether the process behind a pidfd still runs (a pidfd becomes readable when it ends).
    public static func processAlive(pidfd: Int32) -> Bool {
        var pfd = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        return Glibc.poll(&pfd, 1, 0) == 0
    }

    /// Sends a signal through a pidfd: it reaches that process or nobody, never a later one with its PID.
    public static func signal(process pidfd: Int32, _ signal: Int32) -> Bool {
        crfork_pidfd_send_signal(pidfd, signal) == 0
    }

    /// Sends `signal` with a value, as sigqueue(3) does, to the process behind a pidfd.
    public static func signal(process pidfd: Int32, _ signal: Int32, value: UInt64) -> Bool {
        crfork_pidfd_sigqueue(pidfd, signal, value) == 0
    }

    /// The access mode (O_RDONLY, O_WRONLY, O_RDWR) of a process's descriptor, from /proc/PID/fdinfo.
    public static func accessMode(pid: Int32, fd: String) -> Int32? {
        descriptorFlags(pid: pid, fd: fd).map { $0 & O_ACCMODE }
    }

    /// O_PATH on Linux (Glibc does not export it to Swift): a descriptor that names a file and can be
    /// neither read, written nor mapped.
    public static let openPathFlag: Int32 = 0o10_000_000

    /// The open flags of a process's descriptor (O_PATH among them), from /proc/PID/fdinfo.
    public static func descriptorFlags(pid: Int32, fd: String) -> Int32? {
        guard let bytes = try? readFile("/proc/\(pid)/fdinfo/\(fd)") else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("flags:") {
            let octal = line.dropFirst(6).trimmingCharacters(in: .whitespaces)
            return Int32(octal, radix: 8)
        }
        return nil
    }

    /// Sets the calling thread's nice value (Linux keeps one per thread); nil, or the errno.
    public static func setThreadNice(_ nice: Int32) -> Int32? {
        let e = crfork_set_thread_nice(nice)
        return e == 0 ? nil : e
    }

    /// The calling thread's nice value.
    public static func threadNice() -> Int32 { crfork_thread_nice() }

    /// The process's nice value: its main thread's, which rforkd leaves as it was started.
    public static let processNice: Int32 = {
        errno = 0
        return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(getpid()))
    }()

    /// The PID of the process behind one of this process's pidfds (`Pid:` in its fdinfo), nil once it ended.
    public static func pid(ofPidfd pidfd: Int32) -> Int32? {
        guard let bytes = try? readFile("/proc/self/fdinfo/\(pidfd)") else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Pid:") {
            return Int32(line.dropFirst(4).trimmingCharacters(in: .whitespaces)).flatMap { $0 > 0 ? $0 : nil }
        }
        return nil
    }

    /// The canonical absolute path (symbolic links resolved), or nil if it does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        return string(buf)
    }

    public static func loadAverage() -> Double {
        var loads = [Double](repeating: 0, count: 3)
        return getloadavg(&loads, 3) > 0 ? loads[0] : 0
    }

    /// Keeps freed heap memory in the process instead of returning it to the kernel at once. Without
    /// this, glibc serves each large buffer (a relayed chunk, a TLS record batch) with fresh pages that
    /// the kernel must fault in and zero: measured as a third of rforkd's CPU while relaying a pipe.
    /// Memory is still returned once more than `trimMiB` is free at the top of a heap.
    public static func keepFreedMemory(trimMiB: Int32 = 64) {
        _ = crfork_malloc_thresholds(32 << 20, trimMiB << 20)
    }

    public static func cpuCount() -> Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// The real path of the running executable.
    public static func executablePath() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? string(buf) : CommandLine.arguments[0]
    }

    public static func errorText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        var bytes: [UInt8] = []
        var p = text
        while p.pointee != 0 {
            bytes.append(UInt8(bitPattern: p.pointee))
            p += 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func string(fromC p: UnsafePointer<CChar>) -> String {
        var bytes: [UInt8] = []
        var q = p
        while q.pointee != 0 {
            bytes.append(UInt8(bitPattern: q.pointee))
            q += 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func string(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func direntName(_ entry: UnsafeMutablePointer<dirent>) -> String {
        withUnsafeBytes(of: entry.pointee.d_name) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return body(pointers)
    }
}
