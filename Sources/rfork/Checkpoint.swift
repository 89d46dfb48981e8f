import ArgumentParser
import Foundation
import Glibc
import RforkCheckpoint
import RforkCluster
import RforkDaemon
import RforkProtocol
import RforkSystem
import RforkWire

extension Rfork {
    /// `rfork checkpoint PID DIR`: saves a running job.
    struct CheckpointCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "checkpoint",
            abstract:
                "Save a running job started under 'rfork run' (a process and its descendants, on any node) to DIR.",
            discussion: """
                All of the job's processes are frozen at the same moment and saved with CRIU: their memory, \
                the pipes between them with the bytes in them, and which of their descriptors lead outside the \
                job (its stdio), so that 'rfork restart DIR' can bring it back. DIR is written beside its final \
                name and swapped in whole: a previous checkpoint at DIR stays usable until the new one is \
                complete. Without --leave-running the job ends once it is saved (its parent sees SIGKILL). \
                Its processes on other nodes are saved at the same cut. A job holding sockets, System V \
                memory, or memory kept coherent with processes on other nodes cannot be saved yet (one line \
                says why, and the job runs on).
                """)

        @OptionGroup var daemon: DaemonOptions
        @Argument(help: "The job's top process, by its PID on this node.") var pid: Int32
        @Argument(help: "The directory to save it to (created, or a previous checkpoint replaced).") var dir: String
        @Flag(name: .long, help: "Let the job run on once it is saved.") var leaveRunning = false
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() throws {
            guard let absolute = Posix.cleanAbsolutePath(dir, relativeTo: Posix.currentDirectory()) else {
                throw ValidationError("DIR must be a path without '.' or '..' components")
            }
            let answer = try LocalClient.ask(
                .checkpoint, "pid \(pid)\ndir \(absolute)\nleave \(leaveRunning ? 1 : 0)\n",
                socket: daemon.resolvedSocket)
            let outcome: Checkpoint.Outcome
            do { outcome = try JSONDecoder().decode(Checkpoint.Outcome.self, from: Data(answer.utf8)) } catch {
                throw ValidationError("rforkd gave an answer this rfork does not understand: \(answer)")
            }
            if json {
                print(answer)
            } else if outcome.saved {
                let mib = Double(outcome.bytes ?? 0) / 1_048_576
                let frozen = outcome.frozenMs.map { String(format: "%.1f", $0) } ?? "?"
                print(
                    "saved the job of process \(outcome.pid) to \(outcome.directory) (\(String(format: "%.1f", mib)) MiB); frozen \(frozen) ms; \(outcome.leftRunning == true ? "it runs on" : "it has ended")"
                )
            }
            if !outcome.saved {
                if !json { printError("rfork: \(outcome.reason ?? "the checkpoint failed")") }
                throw ExitCode(1)
            }
        }
    }

    /// `rfork restart DIR`: brings a saved job back as this command's own child, in effect.
    struct Restart: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restart a job saved by 'rfork checkpoint'; its stdio becomes this command's.",
            discussion: """
                The job runs on NODE (default: by the spread policy, another node than this one); this command \
                stays here as its stand-in: its standard input, output and error are the job's, signals sent \
                to it reach the job, and it ends with the job's exit status. A directory can be restarted \
                more than once. A damaged, truncated or foreign directory gets one line and starts nothing.
                """)

        @OptionGroup var daemon: DaemonOptions
        @Argument(help: "A directory written by 'rfork checkpoint'.") var dir: String
        @Option(name: .long, help: "The node to run the job on.") var node: String?

        func run() throws {
            guard let absolute = Posix.cleanAbsolutePath(dir, relativeTo: Posix.currentDirectory()) else {
                throw ValidationError("DIR must be a path without '.' or '..' components")
            }
            // The channels come from the manifest; rforkd checks the whole directory again.
            let manifest: CheckpointManifest
            do { manifest = try CheckpointDirectory.readManifest(absolute) } catch {
                printError("rfork: \(error)")
                throw ExitCode(1)
            }
            let fd: Int32
            let reply: LocalFrame
            do {
                fd = try LocalClient.open(socket: daemon.resolvedSocket)
                try LocalClient.send(LocalFrame.text(.restart, "dir \(absolute)\nnode \(node ?? "-")\n"), to: fd)
                reply = try LocalClient.receive(from: fd)
            } catch {
                printError("rfork: \(error)")
                throw ExitCode(1)
            }
            let (verdict, rest) = reply.verdict
            guard reply.type == .forkReply, verdict == .standIn else {
                printError(
                    "rfork: cannot restart \(absolute): \(rest.isEmpty ? "rforkd gave an unexpected answer" : rest)")
                throw ExitCode(1)
            }
            // This process becomes the job's stand-in: the job's stdio channels are ours, the rest /dev/null.
            var args = ["rfork-standin", String(fd), rest]
            for c in manifest.channels {
                var mine = c.fd
                if !(0...2).contains(c.fd) {
                    mine = open("/dev/null", c.kind == 1 || c.kind == 5 ? O_RDONLY : O_WRONLY)
                }
                args.append("\(c.id):\(mine):\(c.kind)")
            }
            _ = fcntl(fd, F_SETFD, 0)
            let standIn = LocalCluster.installPrefix() + "/libexec/rfork/rfork-standin"
            ProcessEnvironment.exec(args, path: standIn, environment: ProcessEnvironment.all())
            printError("rfork: cannot start \(standIn): \(Posix.errorText(errno)); the job on the other node is ended")
            throw ExitCode(127)
        }
    }
}
