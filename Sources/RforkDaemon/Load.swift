import Foundation
import Glibc
import RforkPlacement
import RforkSystem

/// Measures this node's load in its own cgroup: on a machine, the cgroup rforkd was started in (its
/// systemd service); in a local cluster, the node's. Everything rforkd runs or restores stays in it.
final class LoadProbe: @unchecked Sendable {  // confined to Node.loop
    /// Every task of the node, one TID a line (v1 `tasks`, v2 `cgroup.threads`); nil: the machine's.
    let tasksFile: String?
    /// Every process of the node (`cgroup.procs`).
    let processesFile: String?
    let pressureFile: String?
    let memoryUsedFile: String?
    let memoryLimitFile: String?
    private(set) var average = RunQueueAverage()
    private var lastSample: UInt64 = 0
    private var pressure: Double = 0
    private var memoryUsed: UInt64 = 0
    private var memoryLimit: UInt64 = 0

    init() {
        let hierarchies = CgroupHierarchy.discoverHere()
        let v2 = hierarchies.first { $0.type == "cgroup2" }
        let cpuset = hierarchies.first { $0.controllers.contains("cpuset") }
        let memory = hierarchies.first { $0.controllers.contains("memory") }
        tasksFile = cpuset.map { $0.directory + "/tasks" } ?? v2.map { $0.directory + "/cgroup.threads" }
        processesFile = (cpuset ?? v2).map { $0.directory + "/cgroup.procs" }
        pressureFile = v2.map { $0.directory + "/cpu.pressure" }.flatMap { Posix.fileExists($0) ? $0 : nil }
        if let memory {
            memoryUsedFile = memory.directory + "/memory.usage_in_bytes"
            memoryLimitFile = memory.directory + "/memory.limit_in_bytes"
        } else if let v2, Posix.fileExists(v2.directory + "/memory.current") {
            memoryUsedFile = v2.directory + "/memory.current"
            memoryLimitFile = v2.directory + "/memory.max"
        } else {
            memoryUsedFile = nil
            memoryLimitFile = nil
        }
    }

    /// Where the figures come from, for the log.
    var source: String { tasksFile.map { "cgroup (\($0))" } ?? "the whole machine (no cgroup found)" }

    /// Counts the node's runnable tasks now (rforkd's own threads aside) and adds them to the average;
    /// every `slowEvery`-th call also reads pressure and memory.
    func sample(now: UInt64, slow: Bool) {
        let own = Set(Posix.listDirectory("/proc/self/task").compactMap { Int32($0) })
        var runnable = 0
        let tids: [Int32]
        if let tasksFile, let bytes = try? Posix.readFile(tasksFile) {
            tids = String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) }
        } else {
            tids = Posix.listDirectory("/proc").compactMap { Int32($0) }
        }
        for tid in tids where !own.contains(tid) && Posix.processState(tid) == "R" { runnable += 1 }
        let elapsed = lastSample == 0 ? 0 : Double(now - lastSample) / 1e9
        lastSample = now
        average.add(Double(runnable), elapsed: elapsed)
        guard slow else { return }
        pressure = pressureFile.flatMap(Self.readPressure) ?? 0
        memoryUsed = memoryUsedFile.flatMap(Self.readNumber) ?? 0
        let limit = memoryLimitFile.flatMap(Self.readNumber) ?? 0
        memoryLimit = limit == 0 ? Posix.memoryTotal() : min(limit, Posix.memoryTotal())
    }

    /// The processes of the node (PIDs as rforkd sees them).
    func processes() -> [Int32] {
        if let processesFile, let bytes = try? Posix.readFile(processesFile) {
            return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) }
        }
        return Posix.listDirectory("/proc").compactMap { Int32($0) }
    }

    func load(hosted: Int) -> NodeLoad {
        NodeLoad(
            runQueue: average.value, cpus: Posix.allowedCPUs(), cpuPressure: pressure, memoryUsed: memoryUsed,
            memoryLimit: memoryLimit, hosted: hosted)
    }

    static func readNumber(_ path: String) -> UInt64? {
        guard let bytes = try? Posix.readFile(path) else { return nil }
        return UInt64(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// "some avg10=12.50 ..." → 12.5.
    static func readPressure(_ path: String) -> Double? {
        guard let bytes = try? Posix.readFile(path) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("some ") {
            for field in line.split(separator: " ") where field.hasPrefix("avg10=") {
                return Double(field.dropFirst(6))
            }
        }
        return nil
    }
}
