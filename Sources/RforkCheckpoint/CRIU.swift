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
        public init(path: String = CRIU.defaultPath()) { self.path = path }
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
    public static let requiredMark = "rfork-6"

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
    public func dumpArguments(
        pid: Int32, imageDirectory: String, externalSocketInode: UInt64, externalFiles: [String] = []
    ) -> [String] {
        var args = [
            configuration.path, "dump", "-t", String(pid), "-D", imageDirectory, "-o", "dump.log",
            "--leave-running", "--shell-job", "--external", "unix[\(externalSocketInode)]",
        ]
        for key in externalFiles { args += ["--external", key] }
        return args
    }

    /// Dumps `pid` into `imageDirectory` (on tmpfs). Blocking: call it off the event loop.
    public func dump(
        pid: Int32, imageDirectory: String, externalSocketInode: UInt64, externalFiles: [String] = []
    ) throws(CheckpointError) {
        let args = dumpArguments(
            pid: pid, imageDirectory: imageDirectory, externalSocketInode: externalSocketInode,
            externalFiles: externalFiles)
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devnull >= 0 { Posix.close(devnull) } }
        let status: ExitStatus
        do {
            let child = try Posix.spawn(configuration.path, args, descriptors: [devnull, devnull, devnull])
            status = try Posix.wait(child)
        } catch {
            throw CheckpointError(.engineMissing, "cannot run \(configuration.path): \(error); run 'make setup'")
        }
        guard status == .exited(0) else {
            let why = Self.lastError(inLog: imageDirectory + "/dump.log") ?? "criu \(status)"
            throw CheckpointError(.dumpFailed, "criu dump failed: \(why)")
        }
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
