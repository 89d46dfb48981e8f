import ArgumentParser
import Logging
import RforkDaemon
import ServiceLifecycle

@main
struct RforkdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rforkd",
        abstract: "The rfork node daemon: places, checkpoints, ships and restores forked children.",
        discussion: "Runs as root on every node. See docs/rforkd.conf.sample.json for the configuration file.")

    @Option(name: .long, help: "The configuration file (JSON).")
    var config: String

    @Option(name: .long, help: "Write READY to this descriptor once listening, then close it.")
    var readyFd: Int32?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func run() async throws {
        let configuration: DaemonConfiguration
        do { configuration = try DaemonConfiguration.load(from: config) } catch {
            throw ValidationError("\(error)")
        }
        var logger = Logger(label: "rforkd.\(configuration.node)")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let daemon = RforkDaemon(configuration: configuration, logger: logger, readyDescriptor: readyFd)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: daemon)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
