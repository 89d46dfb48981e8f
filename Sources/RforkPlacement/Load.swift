import Foundation

/// A node's load, as it measures it in its own cgroup and tells its peers.
public struct NodeLoad: Sendable, Equatable, Codable {
    /// Tasks runnable in the node's cgroup, averaged over about `RunQueueAverage.defaultSeconds`.
    public var runQueue: Double
    /// CPUs the node runs on (its cpuset).
    public var cpus: Int
    /// Share of the last 10 s in which some task of the node waited for a CPU, in percent (its cgroup's
    /// `cpu.pressure`); 0 where the kernel does not say.
    public var cpuPressure: Double
    /// Memory the node's cgroup uses, and its limit, in bytes.
    public var memoryUsed: UInt64
    public var memoryLimit: UInt64
    /// Processes it runs for other nodes.
    public var hosted: Int

    public init(
        runQueue: Double, cpus: Int, cpuPressure: Double = 0, memoryUsed: UInt64 = 0, memoryLimit: UInt64 = 0,
        hosted: Int = 0
    ) {
        self.runQueue = runQueue
        self.cpus = cpus
        self.cpuPressure = cpuPressure
        self.memoryUsed = memoryUsed
        self.memoryLimit = memoryLimit
        self.hosted = hosted
    }

    /// Runnable tasks per CPU.
    public var perCPU: Double { runQueue / Double(max(1, cpus)) }

    /// Used memory over the limit (0 when unknown).
    public var memoryShare: Double { memoryLimit > 0 ? Double(memoryUsed) / Double(memoryLimit) : 0 }
}

/// An exponentially weighted average of samples taken at irregular intervals (the kernel's load average,
/// with a time constant of seconds rather than minutes, so balancing reacts within a few seconds).
public struct RunQueueAverage: Sendable, Equatable {
    public static let defaultSeconds = 2.0
    public private(set) var value: Double
    public let seconds: Double
    private var started = false

    public init(seconds: Double = RunQueueAverage.defaultSeconds) {
        self.seconds = seconds
        self.value = 0
    }

    /// Adds `sample`, taken `elapsed` seconds after the previous one. The first sample is taken as is.
    public mutating func add(_ sample: Double, elapsed: Double) {
        guard started else {
            value = sample
            started = true
            return
        }
        let keep = exp(-max(0, elapsed) / seconds)
        value = value * keep + sample * (1 - keep)
    }
}
