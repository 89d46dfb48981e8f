import ArgumentParser
import Foundation
import RforkDaemon
import RforkPlacement

extension Rfork {
    /// `rfork nodes`: the nodes this node knows and their state.
    struct Nodes: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the nodes of the cluster, as this node sees them.")
        @OptionGroup var daemon: DaemonOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() throws {
            let answer = try LocalClient.query("nodes", socket: daemon.resolvedSocket)
            if json { return print(answer) }
            let rows = try JSONDecoder().decode([NodeRow].self, from: Data(answer.utf8))
            print(
                table(
                    ["NODE", "STATE", "ADDRESS", "RUNQ", "CPUS", "CPU WAIT", "MEMORY", "HOSTED"], rows.map(Self.row)),
                terminator: "")
        }

        /// One node's line; a load not known (or older than 3 s) shows as "-".
        static func row(_ r: NodeRow) -> [String] {
            guard let load = r.load else { return [r.name, r.state, r.address, "-", "-", "-", "-", "-"] }
            let memory =
                load.memoryLimit > 0
                ? "\(load.memoryUsed >> 20)/\(load.memoryLimit >> 20) MiB" : "-"
            return [
                r.name, r.state, r.address, String(format: "%.2f", load.runQueue), "\(load.cpus)",
                String(format: "%.0f%%", load.cpuPressure), memory, "\(load.hosted)",
            ]
        }
    }

    /// `rfork ps`: the remote children this node takes part in.
    struct PS: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ps",
            abstract: "Show remote children whose parent runs here (home) or that run here (hosted).",
            discussion: "A user sees only their own processes; root sees all.")
        @OptionGroup var daemon: DaemonOptions
        @Flag(name: .long, help: "Print JSON.") var json = false
        @Flag(name: .long, help: "Show the phases of this node's recent remote forks instead.") var recent = false

        func run() throws {
            if recent {
                let answer = try LocalClient.query("recent", socket: daemon.resolvedSocket)
                if json { return print(answer) }
                let rows = try JSONDecoder().decode([PlacementRecord].self, from: Data(answer.utf8))
                func f(_ v: Double) -> String { String(format: "%.2f", v) }
                print(
                    table(
                        ["PID", "NODE", "IMAGE", "REQUEST", "DUMP", "PREPARE", "TRANSFER", "RESTORE", "TOTAL (ms)"],
                        rows.map {
                            [
                                "\($0.pid)", $0.node, "\($0.imageBytes / 1024) KiB", f($0.requestMs), f($0.dumpMs),
                                f($0.prepareMs),
                                f($0.transferMs), f($0.restoreMs), f($0.totalMs),
                            ]
                        }), terminator: "")
                return
            }
            let answer = try LocalClient.query("ps", socket: daemon.resolvedSocket)
            // (NODE: where a home row's process runs, or a hosted row's home; "via" names the hops.)
            if json { return print(answer) }
            let rows = try JSONDecoder().decode([ProcessRow].self, from: Data(answer.utf8))
            print(
                table(
                    ["PID", "UID", "ROLE", "NODE", "STATE", "SECONDS"],
                    rows.map {
                        [
                            "\($0.pid)", "\($0.uid)", $0.role, Self.place($0), $0.state,
                            String(format: "%.1f", $0.seconds),
                        ]
                    }),
                terminator: "")
        }

        /// The NODE column: a moved-on process's route shows.
        static func place(_ row: ProcessRow) -> String {
            guard let via = row.via, !via.isEmpty else { return row.node }
            return row.role == "home" ? "\(row.node) (via \(via))" : "\(row.node) (moved on to \(via))"
        }
    }

    /// Raw query, used by `rfork cluster` from inside a node.
    struct Query: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send a raw query to the local rforkd.", shouldDisplay: false)
        @OptionGroup var daemon: DaemonOptions
        @Argument var query: String
        func run() throws { print(try LocalClient.query(query, socket: daemon.resolvedSocket)) }
    }
}
