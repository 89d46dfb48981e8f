import ArgumentParser
import Foundation
import RforkDaemon
import RforkProtocol
import RforkWire

extension Rfork {
    /// `rfork migrate PID NODE`: moves a running process to another node.
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a running process started under 'rfork run' to another node.",
            discussion: """
                PID is the process's PID on this node (its home), as its parent sees it. It keeps its PID \
                for its parent, its pipes, stdio, files and terminal, signals and its exit status; only where \
                it runs changes. A process that has moved can be moved again, to any node, this one \
                included: the node running it moves it on. Ends by printing how long the process was \
                frozen. Its descendants on the same node move with it. A process that cannot move (it shares \
                memory, holds a socket, belongs to another user, a child of it runs elsewhere or holds the \
                other end of one of its pipes) keeps running where it is, and the reason is printed; the \
                exit status is then 1.

                rfork migrate --all --from NODE [--to TARGET], run as root, moves every process NODE runs for \
                other nodes off it (maintenance), two moves under way at a time: to TARGET, or spread over \
                the others.
                """)

        @OptionGroup var daemon: DaemonOptions
        @Argument(help: "The process, by its PID on this node.") var pid: Int32?
        @Argument(help: "The node to move it to.") var node: String?
        @Flag(
            name: .long,
            help: ArgumentHelp(
                "Move every process the node named by --from runs for other nodes off it.",
                discussion: "As root, on any node. Each process is moved as 'rfork migrate' would.")
        ) var all = false
        @Option(name: .long, help: "With --all: the node to empty.") var from: String?
        @Option(name: .long, help: "With --all: where they go (default: spread over the other nodes that are up).")
        var to: String?
        @Flag(name: .long, help: "Print JSON.") var json = false

        func validate() throws {
            if all {
                guard pid == nil, node == nil else { throw ValidationError("--all takes no PID or NODE; use --to") }
                guard from != nil else { throw ValidationError("--all needs --from NODE") }
            } else {
                guard pid != nil, node != nil else { throw ValidationError("give PID and NODE, or --all --from NODE") }
                guard from == nil, to == nil else { throw ValidationError("--from and --to go with --all") }
            }
        }

        func run() throws {
            if all { return try drain() }
            let pid = self.pid ?? 0
            let node = self.node ?? ""
            // On a terminal, the phases of the move as they come (one line, rewritten), unless --json.
            let live = !json && isatty(2) == 1
            var shown = false
            let answer = try LocalClient.ask(.migrate, "pid \(pid)\nnode \(node)\n", socket: daemon.resolvedSocket) {
                guard live else { return }
                FileHandleStderr.write("\r\u{1B}[Krfork: moving \(pid) to \(node): \($0)")
                shown = true
            }
            if shown { FileHandleStderr.write("\r\u{1B}[K") }
            let outcome: Migration.Outcome
            do { outcome = try JSONDecoder().decode(Migration.Outcome.self, from: Data(answer.utf8)) } catch {
                throw ValidationError("rforkd gave an answer this rfork does not understand: \(answer)")
            }
            if json {
                print(answer)
            } else if outcome.moved {
                print(Self.line(outcome))
            }
            if !outcome.moved {
                if !json { printError("rfork: \(outcome.reason ?? "the move failed")") }
                throw ExitCode(1)
            }
        }

        func drain() throws {
            let request = "all 1\nfrom \(from ?? "")\n" + (to.map { "to \($0)\n" } ?? "")
            let answer = try LocalClient.ask(.migrate, request, socket: daemon.resolvedSocket)
            let outcome: Drain.Outcome
            do { outcome = try JSONDecoder().decode(Drain.Outcome.self, from: Data(answer.utf8)) } catch {
                throw ValidationError("rforkd gave an answer this rfork does not understand: \(answer)")
            }
            if json {
                print(answer)
            } else {
                for move in outcome.moves {
                    if move.moved {
                        print(Self.line(move))
                    } else if move.pid == 0 {
                        printError("rfork: \(move.reason ?? "nothing was moved")")
                    } else {
                        printError(
                            "rfork: process \(move.pid)\(move.home.map { " (home \($0))" } ?? ""): \(move.reason ?? "")"
                        )
                    }
                }
                if outcome.moves.isEmpty { print("\(outcome.from) runs no process for other nodes") }
                let median = outcome.medianFrozenMs.map { String(format: "; median freeze %.1f ms", $0) } ?? ""
                if !outcome.moves.isEmpty && outcome.moves.first?.pid != 0 {
                    print("moved \(outcome.moved) of \(outcome.moves.count) processes off \(outcome.from)\(median)")
                }
            }
            if outcome.moved != outcome.moves.count { throw ExitCode(1) }
        }

        static func line(_ outcome: Migration.Outcome) -> String {
            let frozen = outcome.frozenMs.map { String(format: "%.1f", $0) } ?? "?"
            let postCopy = outcome.postCopy == true ? " (memory follows post-copy)" : ""
            let home = outcome.home.map { " (home \($0))" } ?? ""
            return "process \(outcome.pid)\(home) runs on \(outcome.node); frozen \(frozen) ms\(postCopy)"
        }
    }
}
