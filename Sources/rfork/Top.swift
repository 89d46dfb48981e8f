import ArgumentParser
import Foundation
import Glibc
import RforkDaemon

extension Rfork {
    /// `rfork top`: a live view of the cluster's load and of the processes this node runs, as MOSIX's
    /// monitor shows it.
    struct Top: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A live view of the nodes' load and of the processes under rfork run on this node.",
            discussion: """
                Each node's runnable tasks, CPUs, CPU wait and memory as this node hears them (every second; a \
                load older than 3 s shows as '-'), then this node's processes: where each came from, its CPU \
                share, memory and moves so far. A user sees only their own processes; root sees all.
                """)
        @OptionGroup var daemon: DaemonOptions
        @Option(name: .long, help: "Seconds between two views.") var interval: Double = 1
        @Flag(name: .long, help: "Print one view and end.") var once = false
        @Flag(name: .long, help: "Print JSON (one view).") var json = false

        func validate() throws {
            guard (0.1...3600).contains(interval) else { throw ValidationError("--interval takes 0.1 to 3600 seconds") }
        }

        func run() throws {
            while true {
                let answer = try LocalClient.query("top", socket: daemon.resolvedSocket)
                if json { return print(answer) }
                let top = try JSONDecoder().decode(TopAnswer.self, from: Data(answer.utf8))
                let clear = !once && isatty(1) != 0 ? "\u{1B}[H\u{1B}[2J" : ""
                // Unbuffered, so each view shows whole even when stdout is a pipe.
                FileHandle.standardOutput.write(Data((clear + Self.render(top)).utf8))
                if once { return }
                usleep(UInt32(interval * 1_000_000))
            }
        }

        static func render(_ top: TopAnswer) -> String {
            var out =
                "rfork top on \(top.node): balancing \(top.balancing ? "on" : "off"), \(top.balancedMoves) moves made here\n\n"
            out += table(
                ["NODE", "STATE", "ADDRESS", "RUNQ", "CPUS", "CPU WAIT", "MEMORY", "HOSTED"], top.nodes.map(Nodes.row))
            out += "\n"
            out += table(
                ["PID", "UID", "FROM", "CPU WANTED", "MEMORY", "SECONDS HERE", "MOVES", "PINNED"],
                top.processes.map { p in
                    [
                        "\(p.pid)", "\(p.uid)", p.home.map { "\($0) (pid \(p.homePID ?? 0))" } ?? "here",
                        String(format: "%.0f%%", p.cpu * 100), "\(p.memoryBytes >> 20) MiB",
                        String(format: "%.0f", p.seconds), "\(p.moves)", p.pinned ? "yes" : "no",
                    ]
                })
            return out
        }
    }
}
