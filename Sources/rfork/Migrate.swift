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
                frozen. A process that cannot move (it shares memory, holds a socket, has children, belongs \
                to another user) keeps running where it is, and the reason is printed; the exit status is \
                then 1. Moving its descendants with it comes later.
                """)

        @OptionGroup var daemon: DaemonOptions
        @Argument(help: "The process, by its PID on this node.") var pid: Int32
        @Argument(help: "The node to move it to.") var node: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() throws {
            let answer = try LocalClient.ask(.migrate, "pid \(pid)\nnode \(node)\n", socket: daemon.resolvedSocket)
            let outcome: Migration.Outcome
            do { outcome = try JSONDecoder().decode(Migration.Outcome.self, from: Data(answer.utf8)) } catch {
                throw ValidationError("rforkd gave an answer this rfork does not understand: \(answer)")
            }
            if json {
                print(answer)
            } else if outcome.moved {
                let frozen = outcome.frozenMs.map { String(format: "%.1f", $0) } ?? "?"
                let postCopy = outcome.postCopy == true ? " (memory follows post-copy)" : ""
                print("process \(outcome.pid) runs on \(outcome.node); frozen \(frozen) ms\(postCopy)")
            }
            if !outcome.moved {
                if !json { printError("rfork: \(outcome.reason ?? "the move failed")") }
                throw ExitCode(1)
            }
        }
    }
}
