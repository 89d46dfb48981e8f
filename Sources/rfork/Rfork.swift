import ArgumentParser

@main
struct Rfork: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rfork",
        abstract: "Transparent remote fork(): forked children run on other nodes, parents see ordinary children.",
        subcommands: [
            Run.self, Migrate.self, CheckpointCommand.self, Restart.self, Nodes.self, PS.self, Top.self, Cluster.self,
            Keys.self,
            Bench.self, Query.self,
        ])
}

/// Options every command that talks to the local daemon shares.
struct DaemonOptions: ParsableArguments {
    @Option(name: .long, help: "The local rforkd socket. Default: $RFORK_SOCKET, else /run/rfork/rforkd.sock.")
    var socket: String?

    var resolvedSocket: String {
        socket ?? ProcessEnvironment.value("RFORK_SOCKET") ?? "/run/rfork/rforkd.sock"
    }
}
