import ArgumentParser
import Foundation
import Glibc
import RforkCluster
import RforkDaemon
import RforkPlacement
import RforkSystem

extension Rfork {
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a command whose forked children are placed on other nodes.",
            discussion: """
                Every fork() by COMMAND or any descendant running on this node places the child: on the named \
                node (--node), or by the policy (default: spread, round robin over the other nodes). A child \
                that cannot be placed runs here, as a plain fork would, and one line on stderr says why. \
                Children that run remotely fork locally on their node. A child that shares writable memory with \
                processes that stay (MAP_SHARED, System V or POSIX shared memory, memfds) runs here. \
                'rfork run -- --help' runs a program named --help.
                """)

        @OptionGroup var daemon: DaemonOptions

        @Option(name: .long, help: "Place every child on this node.")
        var node: String?

        @Option(name: .long, help: "spread (default), least-loaded or local.")
        var policy: PlacementPolicy?

        @Flag(
            name: .long,
            help:
                "Keep the job's processes where they start: the balancer never moves them (forks are still placed by --policy or --node)."
        )
        var pin = false

        @Option(
            name: .customLong("post-copy"),
            help:
                "always, never or auto (default: the daemon's postCopyMiB decides): run each child on the target before its memory arrives."
        )
        var postCopy: String?

        @Option(
            name: .customLong("checkpoint-every"),
            help:
                "Save the job every DURATION (30s, 5m, 1h) into --checkpoint-dir, left running; the last good one is kept. Its processes are pinned where they start (on this node, unless --node or --policy say otherwise), so every cut finds them."
        )
        var checkpointEvery: String?

        @Option(name: .customLong("checkpoint-dir"), help: "Where --checkpoint-every keeps the job's checkpoint.")
        var checkpointDir: String?

        @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).")
        var command: [String] = []

        func validate() throws {
            try helpIfAsked(command, Self.self)
            if node != nil && policy != nil { throw ValidationError("give --node or --policy, not both") }
            if let postCopy, !["always", "never", "auto"].contains(postCopy) {
                throw ValidationError("--post-copy takes always, never or auto, not '\(postCopy)'")
            }
            if (checkpointEvery == nil) != (checkpointDir == nil) {
                throw ValidationError("give --checkpoint-every and --checkpoint-dir together")
            }
            if let every = checkpointEvery, Self.seconds(every) == nil {
                throw ValidationError("--checkpoint-every takes a duration like 30s, 5m or 1h, not '\(every)'")
            }
            if command.first == "--" { return }
            if command.isEmpty { throw ValidationError("give the command to run after --") }
        }

        func run() throws {
            let argv = command.first == "--" ? Array(command.dropFirst()) : command
            guard !argv.isEmpty else { throw ValidationError("give the command to run after --") }
            let lib = LocalCluster.installPrefix() + "/lib/librfork.so"
            guard Posix.fileExists(lib) else { throw ValidationError("\(lib) is missing; reinstall rfork") }
            var env = ProcessEnvironment.all()
            let preload = env["LD_PRELOAD"].map { lib + ":" + $0 } ?? lib
            env["LD_PRELOAD"] = preload
            env["RFORK_SOCKET"] = daemon.resolvedSocket
            let saved = checkpointEvery != nil
            env["RFORK_POLICY"] = (policy ?? (saved ? .local : .default)).rawValue
            if let node { env["RFORK_NODE"] = node } else { env["RFORK_NODE"] = nil }
            env["RFORK_PIN"] = pin || saved ? "1" : nil
            if let postCopy, postCopy != "auto" {
                env["RFORK_POST_COPY"] = postCopy
            } else {
                env["RFORK_POST_COPY"] = nil
            }
            if let every = checkpointEvery.flatMap(Self.seconds), let dir = checkpointDir {
                // The job keeps this process's PID: rforkd saves it every so often once it runs.
                guard let absolute = Posix.cleanAbsolutePath(dir, relativeTo: Posix.currentDirectory()) else {
                    throw ValidationError("--checkpoint-dir must be a path without '.' or '..' components")
                }
                let answer = try LocalClient.ask(
                    .schedule, "pid \(getpid())\ndir \(absolute)\nevery \(every)\n", socket: daemon.resolvedSocket)
                let decoded = try? JSONDecoder().decode(ScheduleAnswer.self, from: Data(answer.utf8))
                guard decoded?.ok == true else {
                    throw ValidationError("cannot keep checkpoints: \(decoded?.reason ?? answer)")
                }
            }
            // No daemon is not an error here: each child that cannot be placed says so on stderr.
            ProcessEnvironment.exec(argv, environment: env)
            throw ValidationError("cannot run \(argv[0]): \(Posix.errorText(errno))")
        }
    }
}

extension Rfork.Run {
    /// "30s", "5m", "1h" or plain seconds, in whole seconds (at least 1).
    static func seconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600]
        let (digits, unit) = text.last.flatMap { units[$0] }.map { (text.dropLast(), $0) } ?? (Substring(text), 1)
        guard let n = Int(digits), (1...(86400 * 365 / unit)).contains(n) else { return nil }
        return n * unit
    }
}

extension PlacementPolicy: ExpressibleByArgument {}
