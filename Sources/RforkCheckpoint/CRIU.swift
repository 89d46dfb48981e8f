import Glibc
import RforkSystem

/// The checkpoint engine adapter: how rfork asks CRIU to dump a child, and what CRIU said when it failed.
///
/// Restores run inside `rfork-nsinit` (it must be the PID namespace's init while CRIU restores), so this
/// type only builds their arguments; dumps run here.
public struct CRIU: Sendable {
    public struct Configuration: Sendable {
        /// The `criu` binary. Default: found on PATH at /usr/local/sbin or /usr/sbin.
        public var path: String
        /// `nsenter` (util-linux): runs CRIU inside the namespaces of a task that lives in a PID namespace
        /// below this daemon's, which CRIU can dump only from inside. Default: /usr/bin/nsenter.
        public var nsenter: String
        public init(path: String = CRIU.defaultPath(), nsenter: String = "/usr/bin/nsenter") {
            self.path = path
            self.nsenter = nsenter
        }
    }

    public let configuration: Configuration
    public init(configuration: Configuration = .init()) { self.configuration = configuration }

    public static func defaultPath() -> String {
        for candidate in ["/usr/local/sbin/criu", "/usr/sbin/criu", "/usr/local/bin/criu", "/usr/bin/criu"]
        where Posix.fileExists(candidate) {
            return candidate
        }
        return "criu"
    }

    /// The mark `make setup` gives the CRIU it builds with scripts/criu-rfork.patch.
    public static let requiredMark = "rfork-18"

    /// Checks that the configured CRIU runs and carries rfork's patch.
    public func check() throws(CheckpointError) {
        let output: String
        do {
            let (status, out) = try Posix.run([configuration.path, "--version"])
            guard status == .exited(0) else { throw CheckpointError(.engineMissing, "") }
            output = out
        } catch {
            throw CheckpointError(.engineMissing, "cannot run \(configuration.path); run 'make setup' to build CRIU")
        }
        guard output.contains("GitID: \(Self.requiredMark)") else {
            throw CheckpointError(
                .engineMissing,
                "\(configuration.path) lacks rfork's pipe patch (criu --version shows no 'GitID: \(Self.requiredMark)'); run 'make setup'"
            )
        }
    }

    /// The arguments of a dump that leaves the child running, with its socket to the daemon external.
    /// `externalFiles` are CRIU file keys ("file[MNT:INO]") the restore will supply by --inherit-fd.
    /// `leaveStopped`: the dumped tree is left stopped (SIGSTOP) instead of running, for a caller that
    /// ends it (or continues it) afterwards. `insideNamespacesOf`: an rfork-nsinit this daemon started
    /// (its child, so its PID cannot be reused meanwhile): CRIU then runs in the PID namespace it made
    /// for its children and in its mount namespace (through nsenter), where `pid` is the task's PID.
    /// Never a namespace of the task itself, which its owner could have made. The first argument is the
    /// program to run.
    public func dumpArguments(
        pid: Int32, imageDirectory: String, externalSocketInode: UInt64, externalFiles: [String] = [],
        leaveStopped: Bool = false, insideNamespacesOf helper: Int32? = nil
    ) -> [String] {
        var args =
            helper.map {
                [
                    configuration.nsenter, "--pid=/proc/\($0)/ns/pid_for_children", "--mount=/proc/\($0)/ns/mnt",
                    "--",
                ]
            } ?? []
        args += [
            configuration.path, "dump", "-t", String(pid), "-D", imageDirectory, "-o", "dump.log",
            leaveStopped ? "--leave-stopped" : "--leave-running", "--shell-job", "--manage-cgroups=ignore",
            "--external", "unix[\(externalSocketInode)]",
        ]
        for key in externalFiles { args += ["--external", key] }
        return args
    }

    /// Dumps `pid` into `imageDirectory` (on tmpfs). Blocking: call it off the event loop.
    public func dump(
        pid: Int32, imageDirectory: String, externalSocketInode: UInt64, externalFiles: [String] = [],
        leaveStopped: Bool = false, insideNamespacesOf helper: Int32? = nil
    ) throws(CheckpointError) {
        let args = dumpArguments(
            pid: pid, imageDirectory: imageDirectory, externalSocketInode: externalSocketInode,
            externalFiles: externalFiles, leaveStopped: leaveStopped, insideNamespacesOf: helper)
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devnull >= 0 { Posix.close(devnull) } }
        let status: ExitStatus
        do {
            let child = try Posix.spawn(args[0], args, descriptors: [devnull, devnull, devnull])
            status = try Posix.wait(child)
        } catch {
            throw CheckpointError(.engineMissing, "cannot run \(configuration.path): \(error); run 'make setup'")
        }
        guard status == .exited(0) else {
            let why = Self.lastError(inLog: imageDirectory + "/dump.log") ?? "criu \(status)"
            throw CheckpointError(.dumpFailed, "criu dump failed: \(why)")
        }
    }

    /// A post-copy dump in progress: CRIU has written every image but the child's anonymous memory, and
    /// its page server now sends those pages through `pageSocket` as the target's `criu lazy-pages` asks
    /// for them. The child stays frozen until `process` ends (all pages sent, or failure), then runs on.
    public struct LazyDump: Sendable {
        public var process: pid_t
        public var pageSocket: Int32
    }

    /// Starts a post-copy dump of `pid` and returns once every image but the memory pages is written.
    /// Blocking: call it off the event loop. The caller owns `pageSocket` and must reap `process`.
    public func lazyDump(
        pid: Int32, imageDirectory: String, externalSocketInode: UInt64, externalFiles: [String] = [],
        insideNamespacesOf helper: Int32? = nil
    ) throws(CheckpointError) -> LazyDump {
        let args =
            dumpArguments(
                pid: pid, imageDirectory: imageDirectory, externalSocketInode: externalSocketInode,
                externalFiles: externalFiles, insideNamespacesOf: helper) + [
                "--lazy-pages", "--ps-socket", "3", "--status-fd", "4",
            ]
        let (process, pageSocket) = try startReporting(
            args, failure: .dumpFailed, log: imageDirectory + "/dump.log", stdout: nil)
        return LazyDump(process: process, pageSocket: pageSocket)
    }

    /// The target's half of post-copy: `criu lazy-pages` serving the restore in `imageDirectory`,
    /// fetching pages through `pageSocket`. With rfork's patch it does not exit when a transfer fails:
    /// it writes "F" to `failure` and keeps the restored tasks' userfaultfds (closing them would let a
    /// task read zeros where its memory should be) until it is killed, after the tasks.
    public struct LazyPages: Sendable {
        public var process: pid_t
        public var pageSocket: Int32
        public var failure: Int32
    }

    /// Starts `criu lazy-pages` and returns once it listens for the restore. Blocking.
    public func startLazyPages(imageDirectory: String) throws(CheckpointError) -> LazyPages {
        let fds: (Int32, Int32)
        do { fds = try Posix.makePipe() } catch { throw CheckpointError(.restoreFailed, "\(error)") }
        let args = [
            configuration.path, "lazy-pages", "-D", imageDirectory, "-o", "lazy-pages.log", "--page-server",
            "--ps-socket", "3", "--status-fd", "4",
        ]
        do {
            let (process, pageSocket) = try startReporting(
                args, failure: .restoreFailed, log: imageDirectory + "/lazy-pages.log", stdout: fds.1)
            Posix.close(fds.1)
            return LazyPages(process: process, pageSocket: pageSocket, failure: fds.0)
        } catch {
            Posix.close(fds.0)
            Posix.close(fds.1)
            throw error
        }
    }

    /// The environment variable that makes a restore add the realtime elapsed since the dump to the
    /// dumped CLOCK_MONOTONIC and CLOCK_BOOTTIME (rfork's CRIU patch): a moved task's clocks agree with
    /// those of the node it left, as long as the nodes' realtime clocks agree.
    public static let clockSync = "CRIU_RFORK_CLOCK_SYNC=1"

    /// The environment variable that turns on lazy-pages' hold-on-failure (rfork's CRIU patch).
    public static let holdOnFailure = "CRIU_RFORK_LAZY_HOLD=1"

    /// Spawns a CRIU that gets one end of a fresh socket pair as fd 3 and a status pipe as fd 4; waits
    /// for its ready byte. Returns the process and the other end of the socket pair. When CRIU ends
    /// before it is ready, the error has `failure`'s code and the last error line of `log`.
    private func startReporting(
        _ args: [String], failure code: CheckpointError.Code, log: String, stdout: Int32?
    ) throws(CheckpointError) -> (pid_t, Int32) {
        let ours: Int32
        let theirs: Int32
        do { (ours, theirs) = try Posix.socketPair() } catch {
            throw CheckpointError(code, "socketpair: \(error)")
        }
        let status: [Int32]
        do {
            let (r, w) = try Posix.makePipe()
            status = [r, w]
        } catch {
            Posix.close(ours)
            Posix.close(theirs)
            throw CheckpointError(code, "\(error)")
        }
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devnull >= 0 { Posix.close(devnull) } }
        let process: pid_t
        do {
            process = try Posix.spawn(
                args[0], args, environment: Posix.currentEnvironment() + [Self.holdOnFailure],
                descriptors: [devnull, stdout ?? devnull, devnull, theirs, status[1]])
        } catch {
            for fd in [ours, theirs, status[0], status[1]] { Posix.close(fd) }
            throw CheckpointError(.engineMissing, "cannot run \(configuration.path): \(error); run 'make setup'")
        }
        Posix.close(theirs)
        Posix.close(status[1])
        var byte: UInt8 = 1
        var got = 0
        repeat { got = read(status[0], &byte, 1) } while got < 0 && errno == EINTR
        Posix.close(status[0])
        if got == 1 { return (process, ours) }
        Posix.close(ours)
        let exit = (try? Posix.wait(process)).map { "\($0)" } ?? "?"
        let why = Self.lastError(inLog: log) ?? "criu \(exit)"
        let verb = args.firstIndex(of: configuration.path).map { args[min($0 + 1, args.count - 1)] } ?? "?"
        throw CheckpointError(code, "criu \(verb) failed: \(why)")
    }

    /// The last meaningful error line of a CRIU log, without the harmless RLIMIT_NOFILE complaint.
    public static func lastError(inLog path: String) -> String? {
        guard let bytes = try? Posix.readFile(path) else { return nil }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        let errors = lines.filter {
            $0.contains("Error") && !$0.contains("RLIMIT_NOFILE") && !$0.contains("Dumping FAILED")
                && !$0.contains("Restoring FAILED")
        }
        return (errors.first ?? lines.last).map { $0.trimmingCharacters(in: " \t") }
    }
}

public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable, Equatable {
        case engineMissing
        case dumpFailed
        case restoreFailed
        /// The process holds something that cannot follow it to another node (shared memory).
        case unmovable
        /// A checkpoint directory is not one, or its files do not match its manifest.
        case corrupt
        /// A checkpoint could not be written.
        case saveFailed
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = self
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
