import ArgumentParser
import Foundation
import Glibc
import RforkCluster
import RforkDaemon
import RforkProtocol
import RforkSystem

extension Rfork {
    /// `rfork bench`: remote fork against plain fork and the seed's CRIU pipeline, in one run.
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure remote fork against plain fork and the seed's CRIU pipeline; write a report.",
            discussion: """
                Starts a 3-node local cluster (or uses the running one) and measures, for each child size: \
                how long fork() blocks the parent, the time until the child runs on the other node, and until \
                it has read all its memory, with the phases of each remote fork; the seed's pipeline (criu dump \
                to tmpfs or disk, copy, criu restore in a new PID namespace); raw TCP between the nodes; pipe \
                throughput and round trips; forks per second; memory per remote child. Medians over the trials.
                """)

        @Option(name: .long, parsing: .upToNextOption, help: "Child sizes in MiB of touched memory.")
        var sizes: [Int] = [1, 64, 1024]

        @Option(name: .long, help: "Trials per size (1 GiB uses at most 3).")
        var trials: Int = 7

        @Option(name: .long, help: "Where the report goes (latest.md, latest.json, latest.svg).")
        var out: String = "bench/results"

        @Flag(name: .long, help: "Print the JSON report on stdout.")
        var json = false

        func validate() throws {
            guard !sizes.isEmpty, sizes.allSatisfy({ (1...4096).contains($0) }) else {
                throw ValidationError("--sizes takes MiB between 1 and 4096")
            }
            guard (1...100).contains(trials) else { throw ValidationError("--trials must be 1...100") }
        }

        func run() throws {
            guard geteuid() == 0 else { throw ValidationError("rfork bench needs root (it runs a local cluster)") }
            let cluster = LocalCluster()
            var state: LocalCluster.State
            var started = false
            // The nodes' /dev/shm are their own; the bench's scratch directory on tmpfs is shared by all
            // (the seed's pipeline stands for an NFS export on tmpfs) and by this process.
            try? Posix.makeDirectory(BenchRunner.scratch, mode: 0o755)
            defer { _ = try? Posix.run(["/bin/rm", "-rf", BenchRunner.scratch]) }
            if let existing = try? cluster.load() {
                state = existing
                // Each node's /dev/shm is its own: the scratch directory must have been shared at `up`.
                let probe = BenchRunner.scratch + "/.visible"
                try Posix.writeFile(probe, Array("x".utf8), mode: 0o644)
                defer { unlink(probe) }
                guard let home = existing.nodes.first,
                    (try? Posix.run([
                        "/usr/bin/nsenter", "-t", String(home.daemonPID), "-m", "--", "/usr/bin/test", "-e", probe,
                    ]))?.0 == .exited(0)
                else {
                    throw ValidationError(
                        "the running cluster does not see \(BenchRunner.scratch): take it down ('rfork cluster down') and let bench start its own, or start it with --share \(BenchRunner.scratch)"
                    )
                }
            } else {
                let sharing = LocalCluster(configuration: .init(sharedPaths: [BenchRunner.scratch]))
                do { state = try sharing.up(nodes: 3) } catch { throw ValidationError("\(error)") }
                started = true
            }
            defer { if started { cluster.down() } }
            guard state.nodes.count >= 2 else { throw ValidationError("the cluster needs at least 2 nodes") }
            let runner = BenchRunner(
                state: state, prefix: LocalCluster.installPrefix(), sizes: sizes, trials: trials, log: !json)
            var report = try runner.measureAll()
            if started {
                // Balancing and failure detection want nodes with a CPU each: a cluster of their own.
                cluster.down()
                let pair = LocalCluster(configuration: .init(sharedPaths: [BenchRunner.scratch], cpusPerNode: 1))
                do { state = try pair.up(nodes: 2) } catch { throw ValidationError("\(error)") }
                let two = BenchRunner(
                    state: state, prefix: LocalCluster.installPrefix(), sizes: sizes, trials: trials, log: !json)
                two.say("balancing: 4 CPU-bound workers on node1 of two 1-CPU nodes, pinned and balanced, 3 runs each")
                report.balance = two.balancing(trials: 3, seconds: 4)
                two.say("failure detection: node2 cut off (3 trials), then its rforkd killed")
                report.detection = two.detection(
                    trials: 3, peerTimeout: DaemonConfiguration.defaultPeerTimeoutSeconds)
            } else {
                FileHandleStderr.write(
                    "bench: balancing and failure detection need a cluster of their own; take this one down to measure them\n"
                )
            }
            try Posix.makeDirectory(out, mode: 0o755)
            try Posix.writeFile(out + "/latest.json", Array(report.json.utf8), mode: 0o644)
            try Posix.writeFile(out + "/latest.md", Array(report.markdown.utf8), mode: 0o644)
            try Posix.writeFile(out + "/latest.svg", Array(report.svg.utf8), mode: 0o644)
            try Posix.writeFile(out + "/latency.svg", Array(report.latencySVG.utf8), mode: 0o644)
            if json { print(report.json) } else { print(report.markdown) }
            FileHandleStderr.write("report written to \(out)/latest.md, latest.json, latest.svg, latency.svg\n")
        }
    }
}

/// Medians, in milliseconds unless named otherwise.
struct SizeResult: Codable {
    var mib: Int
    var localBlocked, localRunning, localMemory: Double
    var remoteBlocked, remoteRunning, remoteMemory: Double
    var phases: [String: Double]  // request, dump, prepare, transfer, restore, total
    var seedTmpfs: [String: Double]  // dump, copy, restore, total
    var postCopyPhases: [String: Double]?  // the same for post-copy (dump: until all but the pages are written)
    var seedDisk: [String: Double]
    var pageServer: [String: Double]  // CRIU's page server (pre-copy): dump incl. pages, copy, restore
    var criuStats: [String: Double]  // criu --display-stats of the seed's pipeline on tmpfs
    var postCopyRunning, postCopyMemory: Double  // rfork --post-copy always: memory follows the child
    var postCopyFailures: Int
    var failures: Int
}

/// `rfork migrate` of a process that keeps writing its memory, against the seed's pipeline downtime
/// (criu dump to tmpfs, copy, restore) of the same size. Medians in ms.
struct MigrationResult: Codable {
    var mib: Int
    var frozenMs: Double
    var postCopy: Bool
    var seedDowntimeMs: Double
    var trials: Int
    var moved: Int
}

/// Many processes moved by one `rfork migrate --all` against the same processes moved one at a time
/// (`rfork migrate`), in the same run. Medians in ms.
struct DrainResult: Codable {
    var processes: Int
    var mib: Int
    /// Each moved home -> target on its own.
    var singleFrozenMs: Double
    /// All moved target -> home by one `rfork migrate --all`.
    var drainFrozenMs: Double
    var drainWallMs: Double
    var moved: Int
}

/// Automatic balancing on two nodes of one CPU each: `forkbench workers 4 SECONDS` (four CPU-bound
/// children started on node1 with `--policy local`) with `--pin` and without; medians of wall times in ms.
struct BalanceResult: Codable {
    var workers: Int
    var cpuSeconds: Double
    var pinnedMs: Double
    var balancedMs: Double
    /// Workers that ended on node2, median over the balanced runs.
    var moved: Double
    var trials: Int
}

/// How long a parent waits to hear that its remote child's node is gone, in ms from the moment the link
/// is cut (`ip link set down`: no reset, nothing said) or the node's rforkd is killed.
struct DetectionResult: Codable {
    var peerTimeoutSeconds: Int
    var cutMs: Double
    var killedMs: Double
    var trials: Int
}

/// `rfork checkpoint` (left running) and `rfork restart` of a job holding `mib` MiB, against `criu dump`
/// to tmpfs and `criu restore` of the same process (the seed pipeline's phases). Medians in ms.
struct CheckpointResult: Codable {
    var mib: Int
    /// The command, from its start to its answer (the job is frozen for `frozenMs` of it).
    var checkpointMs: Double
    var frozenMs: Double
    var criuDumpMs: Double
    /// From `rfork restart DIR --node target` until the target runs the job.
    var restartMs: Double
    var criuRestoreMs: Double
    var trials: Int
    var saved: Int
    var restarted: Int
}

/// Shared anonymous memory between a parent on the home node and children on the target (`forkbench
/// shm-*`), against the same programs with no rfork and raw TCP between the two nodes. Medians.
struct SharedMemoryResult: Codable {
    /// One turn handed over through one shared word (`shm-pingpong`), µs.
    var localTurnUs, remoteTurnUs: Double
    /// One-byte TCP round trip between the two nodes (Python, TCP_NODELAY), µs.
    var tcpRttUs: Double
    /// Two writers on one page (`shm-false 2`): adds per second of each.
    var falseParentPerS, falseChildPerS: Double
    var localFalseParentPerS, localFalseChildPerS: Double
    /// Four children on the target reading a 256-page table ten times (`shm-readers 4 256`): ms for all,
    /// and the pages the target's rforkd received meanwhile (once per node: 256, plus a few).
    var readersMs, localReadersMs, readersPagesReceived: Double
    /// A child writing 64 MiB of shared memory, then its parent reading it all (`shm-bulk 64`), MiB/s.
    var bulkWriteMiBps, bulkReadMiBps, localBulkWriteMiBps: Double
    var trials: Int
}

/// The same remote fork with both nodes' links limited to 1 Gbit/s (tc tbf). Medians in ms.
struct LimitedResult: Codable {
    var mib: Int
    var remoteRunning, remoteMemory: Double
    var pageServer: Double
    var failures: Int
}

/// One row of a system-wide CPU profile: share of busy (non-idle) CPU time.
struct ProfileRow: Codable {
    var command: String
    var object: String
    var percent: Double
}

/// A figure in the report: two decimals below 10, one above, "n/a" for a missing one.
private func f(_ v: Double) -> String { v.isNaN ? "n/a" : String(format: v < 10 ? "%.2f" : "%.1f", v) }

struct BenchReport: Codable {
    var date: String
    var machine: String
    var sizes: [SizeResult]
    var tcpMiBps: Double
    var pipeLocalMiBps, pipeRemoteMiBps, rttLocalUs, rttRemoteUs: Double
    var forksPerSecondLocal, forksPerSecondRemote, forksPerSecondRemote100: Double
    var homeKiBPerChild, targetKiBPerChild: Double
    var limited: [LimitedResult]
    var tcpLimitedMiBps: Double
    /// Writing 1 GiB into fresh memory on the target, no rfork involved, then into the same memory again.
    var freshFillMs, againFillMs: Double
    var profiles: [String: [ProfileRow]]  // what ran ("remote-forking 1 MiB children") -> perf record -a
    var migrations: [MigrationResult] = []
    var drain: DrainResult?
    var checkpoints: [CheckpointResult] = []
    var balance: BalanceResult?
    var detection: DetectionResult?
    var sharedMemory: SharedMemoryResult?

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    var markdown: String {
        var s = "# rfork benchmark\n\n\(date), \(machine).\nMedians; times in ms from the parent's fork() call.\n\n"
        s += goals
        s += "## Remote fork against plain fork, the seed's pipeline and CRIU's page server\n\n"
        s += "| child memory | parent blocked: fork / rfork | running: fork / rfork / rfork post-copy "
        s += "| all memory read: fork / rfork / rfork post-copy "
        s += "| seed pipeline tmpfs | seed pipeline disk | CRIU page server | rfork vs seed tmpfs "
        s += "| trials that did not move: rfork / post-copy |\n"
        s += "|---|---|---|---|---|---|---|---|---|\n"
        for r in sizes {
            let ratio = r.remoteRunning / (r.seedTmpfs["total"] ?? .nan)
            s +=
                "| \(r.mib) MiB | \(f(r.localBlocked)) / \(f(r.remoteBlocked)) | \(f(r.localRunning)) / \(f(r.remoteRunning)) "
            s += "/ \(f(r.postCopyRunning)) | \(f(r.localMemory)) / \(f(r.remoteMemory)) / \(f(r.postCopyMemory)) "
            s += "| \(f(r.seedTmpfs["total"] ?? .nan)) "
            s += "| \(f(r.seedDisk["total"] ?? .nan)) | \(f(r.pageServer["total"] ?? .nan)) | \(f(ratio))× "
            s += "| \(r.failures) / \(r.postCopyFailures) |\n"
        }
        s += "\n\"rfork\" moves the whole image before the child runs (`--post-copy never`); \"rfork post-copy\" "
        s += "(`--post-copy always`, CRIU lazy pages) runs the child first and its pages follow on demand and in "
        s += "the background; its \"all memory read\" includes fetching every page. By default rforkd uses "
        s += "post-copy from `postCopyMiB` of anonymous memory.\n"
        s += "\n## Phases of one remote fork (rfork) and of the CRIU baselines\n\n"
        s += "| child memory | configuration | request | dump | prepare / copy | transfer | restore | total |\n"
        s += "|---|---|---|---|---|---|---|---|\n"
        // One row: the named phases of a configuration, blank where it has no such phase.
        func row(_ mib: Int, _ name: String, _ phases: [String: Double], _ columns: [String?]) -> String {
            "| \(mib) MiB | \(name) | "
                + columns.map { $0.map { f(phases[$0] ?? .nan) } ?? "" }.joined(separator: " | ") + " |\n"
        }
        let rforkColumns = ["request", "dump", "prepare", "transfer", "restore", "total"]
        let baselineColumns = [nil, "dump", "copy", nil, "restore", "total"]
        for r in sizes {
            s += row(r.mib, "rfork", r.phases, rforkColumns)
            if let q = r.postCopyPhases { s += row(r.mib, "rfork post-copy (dump without the pages)", q, rforkColumns) }
            for (name, seed) in [
                ("seed, tmpfs", r.seedTmpfs), ("seed, disk", r.seedDisk),
                ("page server (dump sends pages)", r.pageServer),
            ] {
                s += row(r.mib, name, seed, baselineColumns)
            }
        }
        if !migrations.isEmpty {
            s += "\n## Migration: freeze time of a running process\n\n"
            s += "`rfork migrate PID NODE` of `forkbench dirty MIB` (started with `rfork run --policy local`, it "
            s += "keeps writing one byte a page of its memory), against the seed's pipeline downtime for the "
            s += "same size (criu dump to tmpfs, copy, restore in a new PID namespace). Frozen: from the "
            s += "process's stop (its signal handler) until its copy runs on the target.\n\n"
            s += "| memory | rfork migrate frozen | memory moved | seed pipeline downtime | ratio | moved |\n"
            s += "|---|---|---|---|---|---|\n"
            for m in migrations {
                s += "| \(m.mib) MiB | \(f(m.frozenMs)) | \(m.postCopy ? "post-copy" : "whole image") "
                s += "| \(f(m.seedDowntimeMs)) | \(f(m.frozenMs / m.seedDowntimeMs))× | \(m.moved) of \(m.trials) |\n"
            }
        }
        if let d = drain {
            s += "\n## Moving many processes at once\n\n"
            s += "\(d.processes) processes of \(d.mib) MiB (`forkbench hold`, started with `rfork run --policy local`) "
            s += "are moved home → target one at a time with `rfork migrate`, then back off the target with one "
            s +=
                "`rfork migrate --all --from target --to home` (one move under way per CPU of the target, at most two). Frozen: as "
            s += "above, medians.\n\n"
            s += "| moved one at a time | moved by --all | ratio | whole drain (wall) | moved by --all |\n"
            s += "|---|---|---|---|---|\n"
            s += "| \(f(d.singleFrozenMs)) ms | \(f(d.drainFrozenMs)) ms | \(f(d.drainFrozenMs / d.singleFrozenMs))× "
            s += "| \(f(d.drainWallMs)) ms | \(d.moved) of \(d.processes) |\n"
        }
        if let b = balance {
            s += "\n## Automatic balancing\n\n"
            s += "A fresh cluster of two nodes of one CPU each. `forkbench workers \(b.workers) \(f(b.cpuSeconds))`: "
            s += "\(b.workers) CPU-bound children of \(f(b.cpuSeconds)) s of CPU each, all started on node1 "
            s += "(`rfork run --policy local`), with `--pin` (they stay) and without (the balancers move them); "
            s += "medians of \(b.trials) runs each, taking turns.\n\n"
            s += "| pinned | balanced | ratio | workers that ended on node2 |\n|---|---|---|---|\n"
            s += "| \(f(b.pinnedMs / 1000)) s | \(f(b.balancedMs / 1000)) s | \(f(b.balancedMs / b.pinnedMs))× "
            s += "| \(f(b.moved)) of \(b.workers) |\n"
        }
        if let d = detection {
            s += "\n## Failure detection\n\n"
            s += "A remote child on node2 of a parent on node1; then node2's link is cut (`ip link set down`, "
            s += "nothing said) or node2's rforkd is killed. Time until the parent's `wait()` returns "
            s += "(SIGKILL), medians of \(d.trials) trials; `peerTimeoutSeconds` \(d.peerTimeoutSeconds).\n\n"
            s += "| link cut | rforkd killed |\n|---|---|\n"
            s += "| \(f(d.cutMs)) ms | \(f(d.killedMs)) ms |\n"
        }
        if !checkpoints.isEmpty {
            s += "\n## Checkpoint and restart\n\n"
            s += "`rfork checkpoint PID DIR --leave-running` of `forkbench hold MIB` (DIR on tmpfs; CRIU writes the "
            s +=
                "images there, each then checksummed with SHA-256, signed, flushed and swapped in) and `rfork restart DIR --node "
            s += "target` (until the target runs it; the copy is checked before it is restored), against `criu "
            s += "dump` to tmpfs and `criu restore` of the same process (the seed pipeline's phases above). "
            s += "Throughput = memory ÷ time.\n\n"
            s +=
                "| memory | rfork checkpoint | (frozen) | criu dump | rfork restart | criu restore | saved / restarted |\n"
            s += "|---|---|---|---|---|---|---|\n"
            for c in checkpoints {
                func rate(_ ms: Double) -> String { f(Double(c.mib) / (ms / 1000)) + " MiB/s" }
                s += "| \(c.mib) MiB | \(f(c.checkpointMs)) ms (\(rate(c.checkpointMs))) | \(f(c.frozenMs)) ms "
                s += "| \(f(c.criuDumpMs)) ms (\(rate(c.criuDumpMs))) | \(f(c.restartMs)) ms (\(rate(c.restartMs))) "
                s +=
                    "| \(f(c.criuRestoreMs)) ms (\(rate(c.criuRestoreMs))) | \(c.saved) / \(c.restarted) of \(c.trials) |\n"
            }
        }
        if let m = sharedMemory {
            s += "\n## Shared memory across nodes\n\n"
            s += "`MAP_SHARED|MAP_ANONYMOUS` memory of a parent on node1 and its children on node2 (`forkbench shm-*`, "
            s += "`rfork run --node node2`), against the same program with no rfork; medians of \(m.trials) runs.\n\n"
            s += "| metric | plain (one node) | rfork (child on node2) | baseline |\n|---|---|---|---|\n"
            s += "| one word handed back and forth: µs per turn | \(f(m.localTurnUs)) | \(f(m.remoteTurnUs)) "
            s += "| TCP round trip node1 ↔ node2: \(f(m.tcpRttUs)) µs |\n"
            s += "| two writers on one page (false sharing): adds/s parent, child | \(f(m.localFalseParentPerS)), "
            s += "\(f(m.localFalseChildPerS)) | \(f(m.falseParentPerS)), \(f(m.falseChildPerS)) | |\n"
            s += "| 4 children read a 256-page table 10 times: ms (pages node2 received) | \(f(m.localReadersMs)) "
            s += "| \(f(m.readersMs)) (\(f(m.readersPagesReceived))) | once per node: 256 |\n"
            s += "| child writes 64 MiB, then the parent reads it: MiB/s write, read | \(f(m.localBulkWriteMiBps)) "
            s += "| \(f(m.bulkWriteMiBps)), \(f(m.bulkReadMiBps)) | raw TCP: \(f(tcpMiBps)) MiB/s |\n"
        }
        s += "\n## Links, rates and memory\n\n| metric | plain / local | rfork (remote child) |\n|---|---|---|\n"
        s += "| pipe throughput parent → child (MiB/s) | \(f(pipeLocalMiBps)) | \(f(pipeRemoteMiBps)) |\n"
        s += "| pipe round trip (µs) | \(f(rttLocalUs)) | \(f(rttRemoteUs)) |\n"
        s += "| forks per second, one at a time | \(f(forksPerSecondLocal)) | \(f(forksPerSecondRemote)) |\n"
        s += "| forks per second, 100 in flight | | \(f(forksPerSecondRemote100)) |\n"
        s += "| raw TCP node1 → node2 (MiB/s) | \(f(tcpMiBps)) | |\n"
        s += "| writing 1 GiB into fresh memory on the target, no fork (ms) | \(f(freshFillMs)) "
        s += "(the same memory again: \(f(againFillMs))) | |\n"
        s +=
            "| memory rfork adds per remote child, home / target (KiB, PSS) | | \(f(homeKiBPerChild)) / \(f(targetKiBPerChild)) |\n"
        if !limited.isEmpty {
            s += "\n## With both nodes' links limited to 1 Gbit/s (tc tbf)\n\n"
            s += "Raw TCP node1 → node2: \(f(tcpLimitedMiBps)) MiB/s. The seed's pipeline is left out here: its copy "
            s += "is a local `cp` on this one machine and never crosses the link.\n\n"
            s += "| child memory | rfork running | rfork all memory read | CRIU page server total "
            s += "| size ÷ raw TCP | rfork trials that did not move |\n|---|---|---|---|---|---|\n"
            for r in limited {
                s += "| \(r.mib) MiB | \(f(r.remoteRunning)) | \(f(r.remoteMemory)) | \(f(r.pageServer)) "
                s += "| \(f(Double(r.mib) / tcpLimitedMiBps * 1000)) | \(r.failures) |\n"
            }
        }
        s += whereTimeGoes
        s += "\nCharts: latest.svg (stacked phases per configuration and size), latency.svg (time to running "
        s += "and to all memory read against child size, log scales).\n"
        return s
    }

    /// The issue's goals, each with its measured value, from this run.
    var goals: String {
        func mark(_ ok: Bool) -> String { ok ? "met" : "**not met**" }
        var s = "## Goals\n\n| metric | goal | measured | |\n|---|---|---|---|\n"
        if let small = sizes.first(where: { $0.mib == 1 }) {
            let blockedGoal = small.localBlocked + 0.2
            s +=
                "| parent blocked, 1 MiB | ≤ local fork + 0.2 ms = \(f(blockedGoal)) ms | \(f(small.remoteBlocked)) ms "
            s += "| \(mark(small.remoteBlocked <= blockedGoal)) |\n"
            let seed = small.seedTmpfs["total"] ?? .nan
            s += "| time to remote running, 1 MiB | ≤ 8 ms and ≤ 0.9× seed tmpfs (\(f(0.9 * seed)) ms) "
            s += "| \(f(small.remoteRunning)) ms (\(f(small.remoteRunning / seed))×) "
            s += "| \(mark(small.remoteRunning <= 8 && small.remoteRunning <= 0.9 * seed)) |\n"
        }
        if let big = sizes.first(where: { $0.mib == 1024 }) {
            s += "| time to remote running, 1 GiB | ≤ 30 ms | post-copy \(f(big.postCopyRunning)) ms "
            s += "(whole image \(f(big.remoteRunning)) ms) | \(mark(big.postCopyRunning <= 30)) |\n"
            let bound = 1.5 * 1024 / tcpMiBps * 1000
            let best = min(big.remoteMemory, big.postCopyMemory.isNaN ? .infinity : big.postCopyMemory)
            s += "| all memory present, 1 GiB | ≤ 1.5 × size ÷ raw TCP = \(f(bound)) ms | whole image "
            s += "\(f(big.remoteMemory)) ms, post-copy \(f(big.postCopyMemory)) ms | \(mark(best <= bound)) |\n"
        }
        let pipeRatio = pipeRemoteMiBps / pipeLocalMiBps
        s += "| pipe throughput parent → remote child | ≥ 0.8× local (\(f(0.8 * pipeLocalMiBps)) MiB/s) "
        s += "| \(f(pipeRemoteMiBps)) MiB/s (\(f(pipeRatio))×) | \(mark(pipeRatio >= 0.8)) |\n"
        let rate = max(forksPerSecondRemote, forksPerSecondRemote100)
        s += "| remote forks per second, one parent | ≥ 200 | \(f(forksPerSecondRemote)) one at a time, "
        s += "\(f(forksPerSecondRemote100)) with 100 in flight | \(mark(rate >= 200)) |\n"
        for (mib, goal) in [(64, 0.5), (1024, 0.1)] {
            guard let m = migrations.first(where: { $0.mib == mib }) else { continue }
            let ratio = m.frozenMs / m.seedDowntimeMs
            s += "| freeze of a migrated \(mib) MiB process that keeps writing | ≤ \(goal)× seed downtime "
            s += "(\(f(goal * m.seedDowntimeMs)) ms) | \(f(m.frozenMs)) ms (\(f(ratio))×) | \(mark(ratio <= goal)) |\n"
        }
        if let d = drain {
            let ratio = d.drainFrozenMs / d.singleFrozenMs
            s += "| \(d.processes) processes drained from one node at once | median freeze ≤ 2× a single move's "
            s += "(\(f(2 * d.singleFrozenMs)) ms) | \(f(d.drainFrozenMs)) ms (\(f(ratio))×) | \(mark(ratio <= 2)) |\n"
        }
        if let b = balance {
            let ratio = b.balancedMs / b.pinnedMs
            s += "| \(b.workers) CPU-bound workers on one of two 1-CPU nodes, balanced vs pinned | ≤ 0.75× "
            s += "| \(f(ratio))× | \(mark(ratio <= 0.75)) |\n"
        }
        if let m = sharedMemory {
            s += "| a shared word handed between a parent and its remote child | ≤ 2× TCP round trip "
            s +=
                "(\(f(2 * m.tcpRttUs)) µs) per turn | \(f(m.remoteTurnUs)) µs | \(mark(m.remoteTurnUs <= 2 * m.tcpRttUs)) |\n"
            s += "| a read-mostly table read by 4 remote children | fetched once per node (256 pages) "
            s += "| \(f(m.readersPagesReceived)) pages | \(mark(m.readersPagesReceived <= 256 + 16)) |\n"
            s += "| two writers falsely sharing one page | both make progress | \(f(m.falseParentPerS)) and "
            s += "\(f(m.falseChildPerS)) adds/s | \(mark(m.falseParentPerS > 0 && m.falseChildPerS > 0)) |\n"
        }
        if let d = detection {
            let limit = Double(d.peerTimeoutSeconds + 2) * 1000
            s += "| parent told after its child's node is cut off | ≤ peerTimeout + 2 s (\(f(limit / 1000)) s) "
            s += "| \(f(d.cutMs / 1000)) s | \(mark(d.cutMs <= limit)) |\n"
        }
        s += "| memory rfork adds per remote child | ≤ 512 KiB home, ≤ 512 KiB target "
        s += "| \(f(homeKiBPerChild)) / \(f(targetKiBPerChild)) KiB "
        s += "| \(mark(homeKiBPerChild <= 512 && targetKiBPerChild <= 512)) |\n\n"
        return s
    }

    /// CRIU's own statistics and a system-wide CPU profile of remote forks.
    var whereTimeGoes: String {
        var s = "\n## Where the time goes\n\n"
        s += "CRIU's own statistics (`--display-stats`) for the seed's pipeline on tmpfs, the same CRIU work "
        s += "rfork's dump and restore phases do (ms; pages of 4 KiB):\n\n"
        let keys = [
            "dump/Frozen time", "dump/Memory dump time", "dump/Memory write time", "dump/Memory pages written",
            "restore/Forking time", "restore/Restore time", "restore/Pages restored",
        ]
        s += "| child memory | " + keys.joined(separator: " | ") + " |\n|---|"
        s += String(repeating: "---|", count: keys.count) + "\n"
        for r in sizes {
            s += "| \(r.mib) MiB | " + keys.map { f(r.criuStats[$0] ?? .nan) }.joined(separator: " | ") + " |\n"
        }
        for (name, rows) in profiles.sorted(by: { $0.key < $1.key }) where !rows.isEmpty {
            s += "\nCPU profile while \(name) (`perf record -a`, share of busy CPU time "
            s += "by command and object; rforkd's threads are NIO-ELT-* (event loop: TLS, framing, relays) and "
            s += "TP-#* (its thread pool: CRIU runs, image files); \"oot.default-qos\" is a Swift runtime thread):\n\n"
            s += "| command | object | busy CPU |\n|---|---|---|\n"
            for row in rows { s += "| \(row.command) | \(row.object) | \(f(row.percent)) % |\n" }
        }
        return s + whyNotMet
    }

    /// The share of busy CPU that rforkd's threads (event loop and thread pool) took in one profile.
    func daemonShare(_ profile: String) -> Double {
        (profiles[profile] ?? []).filter { $0.command.hasPrefix("NIO-ELT") || $0.command.hasPrefix("TP-#") }
            .reduce(0) { $0 + $1.percent }
    }

    /// Why each goal this run did not meet is out of reach here, from this run's own figures.
    var whyNotMet: String {
        var lines: [String] = []
        if let small = sizes.first(where: { $0.mib == 1 }), small.remoteRunning > 8 {
            let dump = small.phases["dump"] ?? .nan
            let restore = small.phases["restore"] ?? .nan
            lines.append(
                "Remote running at 1 MiB (\(f(small.remoteRunning)) ms): the dump phase alone takes \(f(dump)) ms "
                    + "and the restore \(f(restore)) ms, together \(f(dump + restore)) ms against a goal of 8; "
                    + "CRIU's own timers count \(f(small.criuStats["dump/Frozen time"] ?? .nan)) ms frozen and "
                    + "\(f(small.criuStats["restore/Restore time"] ?? .nan)) ms restoring, the rest is starting "
                    + "criu twice (the profile shows its dynamic loader) and the child's PID and mount namespace.")
        }
        if let big = sizes.first(where: { $0.mib == 1024 }) {
            if big.postCopyRunning > 30 {
                lines.append(
                    "Remote running at 1 GiB post-copy (\(f(big.postCopyRunning)) ms): CRIU's lazy dump takes "
                        + "\(f(big.postCopyPhases?["dump"] ?? .nan)) ms with the child frozen, because it still "
                        + "walks the page map and splices every one of the 262144 pages into its page pipes "
                        + "before it says it is ready; the restore takes "
                        + "\(f(big.postCopyPhases?["restore"] ?? .nan)) ms. A plain local fork of the same "
                        + "parent already takes \(f(big.localRunning)) ms to its child's first instruction (copying "
                        + "the page tables of 1 GiB), leaving \(f(30 - big.localRunning)) ms for everything else.")
            }
            let bound = 1.5 * 1024 / tcpMiBps * 1000
            if min(big.remoteMemory, big.postCopyMemory) > bound {
                let fetch = 1024 / ((big.postCopyMemory - big.postCopyRunning) / 1000)
                lines.append(
                    "All memory at 1 GiB (goal \(f(bound)) ms): moving the whole image, CRIU's dump "
                        + "(\(f(big.phases["dump"] ?? .nan)) ms) and restore (\(f(big.phases["restore"] ?? .nan)) "
                        + "ms) together already exceed it, before the transfer (\(f(big.phases["transfer"] ?? .nan)) "
                        + "ms: each page is read, framed, encrypted, decrypted and written to tmpfs by one event loop); "
                        + "post-copy fetches pages at \(f(fetch)) MiB/s through CRIU's lazy-pages daemon and the "
                        + "relays, against \(f(tcpMiBps)) MiB/s of raw TCP. Underneath both: a restored child's "
                        + "memory is new memory on the target, and on this machine (a VM whose memory the host "
                        + "backs on first touch) writing 1 GiB into fresh pages takes \(f(freshFillMs)) ms with "
                        + "no rfork involved (\(f(againFillMs)) ms into the same pages again); the whole-image path "
                        + "pays it twice, for the image on tmpfs and for the child.")
            }
        }
        if pipeRemoteMiBps < 0.8 * pipeLocalMiBps {
            let share = daemonShare("piping 512 MiB from a parent to its remote child")
            lines.append(
                "Pipe throughput (\(f(pipeRemoteMiBps)) against \(f(pipeLocalMiBps)) MiB/s): every byte crosses the "
                    + "stand-in, the home daemon (TLS encryption), the target daemon (decryption) and nsinit, about "
                    + "ten copies and four extra processes on two CPUs; in the pipe profile the two daemons' threads "
                    + "take \(f(share)) % of the busy CPU.")
        }
        let rate = max(forksPerSecondRemote, forksPerSecondRemote100)
        if rate < 200, let small = sizes.first(where: { $0.mib == 1 }) {
            let share = daemonShare("remote-forking 200 children, 100 in flight")
            lines.append(
                "Remote forks per second (\(f(rate))): 200 a second leaves 5 ms a fork (10 ms of CPU on two CPUs), "
                    + "and one remote fork spends \(f((small.phases["dump"] ?? .nan) + (small.phases["restore"] ?? .nan))) "
                    + "ms in CRIU's dump and restore alone; in the profile of 100 in flight the daemons take "
                    + "\(f(share)) % of the busy CPU, CRIU and the kernel most of the rest.")
        }
        guard !lines.isEmpty else { return "" }
        return "\n### Why the goals not met are out of reach here\n\n" + lines.map { "- " + $0 }.joined(separator: "\n")
            + "\n"
    }

    /// One stacked bar per configuration and size, like the seed's figures.
    var svg: String {
        let rows: [(String, [(String, Double)])] = sizes.flatMap { r -> [(String, [(String, Double)])] in
            [
                (
                    "rfork \(r.mib) MiB",
                    ["request", "dump", "prepare", "transfer", "restore"].map { ($0, r.phases[$0] ?? 0) }
                ),
                ("seed tmpfs \(r.mib) MiB", ["dump", "copy", "restore"].map { ($0, r.seedTmpfs[$0] ?? 0) }),
                ("seed disk \(r.mib) MiB", ["dump", "copy", "restore"].map { ($0, r.seedDisk[$0] ?? 0) }),
            ]
        }
        let colors = [
            "request": "#999999", "dump": "#4e79a7", "prepare": "#f28e2b", "copy": "#f28e2b", "transfer": "#e15759",
            "restore": "#59a14f",
        ]
        let maxTotal = max(1, rows.map { $0.1.reduce(0) { $0 + ($1.1.isNaN ? 0 : $1.1) } }.max() ?? 1)
        let width = 900.0
        let left = 170.0
        let bar = 22.0
        let gap = 10.0
        var s =
            "<svg xmlns='http://www.w3.org/2000/svg' width='\(Int(width))' height='\(Int(Double(rows.count) * (bar + gap) + 70))'"
        s +=
            " font-family='sans-serif' font-size='12'>\n<text x='10' y='18' font-size='14'>Phases of a remote fork (ms, log-free linear scale; max \(Int(maxTotal)) ms)</text>\n"
        for (i, row) in rows.enumerated() {
            let y = 30 + Double(i) * (bar + gap)
            s += "<text x='10' y='\(y + 15)'>\(row.0)</text>\n"
            var x = left
            for (name, v) in row.1 where !v.isNaN && v > 0 {
                let w = v / maxTotal * (width - left - 80)
                s +=
                    "<rect x='\(x)' y='\(y)' width='\(w)' height='\(bar)' fill='\(colors[name] ?? "#000")'><title>\(name) \(String(format: "%.2f", v)) ms</title></rect>\n"
                x += w
            }
            s +=
                "<text x='\(x + 4)' y='\(y + 15)'>\(String(format: "%.1f", row.1.reduce(0) { $0 + ($1.1.isNaN ? 0 : $1.1) }))</text>\n"
        }
        var lx = left
        let ly = 40 + Double(rows.count) * (bar + gap)
        for name in ["request", "dump", "prepare", "transfer", "restore"] {
            s += "<rect x='\(lx)' y='\(ly - 10)' width='10' height='10' fill='\(colors[name] ?? "#000")'/>"
            s += "<text x='\(lx + 14)' y='\(ly)'>\(name == "prepare" ? "prepare / copy" : name)</text>\n"
            lx += 120
        }
        return s + "</svg>\n"
    }
}

extension BenchReport {
    /// Time to running and to all memory read against child size, both axes logarithmic.
    var latencySVG: String {
        let series: [(String, String, [Double])] = [
            ("plain fork: running", "#999999", sizes.map(\.localRunning)),
            ("rfork: running", "#e15759", sizes.map(\.remoteRunning)),
            ("rfork: all memory read", "#f28e2b", sizes.map(\.remoteMemory)),
            ("rfork post-copy: running", "#ff9da7", sizes.map(\.postCopyRunning)),
            ("rfork post-copy: all memory", "#9c755f", sizes.map(\.postCopyMemory)),
            ("seed pipeline, tmpfs", "#4e79a7", sizes.map { $0.seedTmpfs["total"] ?? .nan }),
            ("seed pipeline, disk", "#76b7b2", sizes.map { $0.seedDisk["total"] ?? .nan }),
            ("CRIU page server", "#59a14f", sizes.map { $0.pageServer["total"] ?? .nan }),
            (
                "rfork at 1 Gbit/s: running", "#b07aa1",
                sizes.map { r in limited.first { $0.mib == r.mib }?.remoteRunning ?? .nan }
            ),
        ]
        let values = series.flatMap(\.2).filter { $0.isFinite && $0 > 0 }
        let lo = pow(10, floor(log10(values.min() ?? 0.01)))
        let hi = pow(10, ceil(log10(values.max() ?? 10_000)))
        let (left, top, width, height) = (70.0, 30.0, 560.0, 340.0)
        let mibs = sizes.map { Double($0.mib) }
        let xlo = log2(mibs.min() ?? 1)
        let xhi = max(xlo + 1, log2(mibs.max() ?? 1024))
        func x(_ mib: Double) -> Double { left + (log2(mib) - xlo) / (xhi - xlo) * width }
        func y(_ ms: Double) -> Double { top + height - (log10(ms) - log10(lo)) / (log10(hi) - log10(lo)) * height }
        var s = "<svg xmlns='http://www.w3.org/2000/svg' width='900' height='\(Int(top + height + 60))' "
        s += "font-family='sans-serif' font-size='12'>\n"
        s += "<text x='10' y='18' font-size='14'>Time from fork() (ms, log scale) against child memory "
        s += "(MiB, log scale)</text>\n"
        s += "<rect x='\(left)' y='\(top)' width='\(width)' height='\(height)' fill='none' stroke='#ccc'/>\n"
        var decade = lo
        while decade <= hi * 1.001 {
            s += "<line x1='\(left)' x2='\(left + width)' y1='\(y(decade))' y2='\(y(decade))' stroke='#eee'/>"
            s += "<text x='\(left - 6)' y='\(y(decade) + 4)' text-anchor='end'>\(String(format: "%g", decade))</text>\n"
            decade *= 10
        }
        for mib in mibs {
            s += "<text x='\(x(mib))' y='\(top + height + 18)' text-anchor='middle'>\(Int(mib)) MiB</text>\n"
        }
        for (i, (name, color, points)) in series.enumerated() {
            let drawn = zip(mibs, points).filter { $0.1.isFinite && $0.1 > 0 }
            if drawn.count > 1 {
                let coords = drawn.map { "\(x($0.0)),\(y($0.1))" }.joined(separator: " ")
                s += "<polyline points='\(coords)' fill='none' stroke='\(color)' stroke-width='2'/>\n"
            }
            for (mib, ms) in drawn {
                s += "<circle cx='\(x(mib))' cy='\(y(ms))' r='3' fill='\(color)'>"
                s += "<title>\(name), \(Int(mib)) MiB: \(String(format: "%.2f", ms)) ms</title></circle>\n"
            }
            let ly = top + 10 + Double(i) * 20
            s += "<rect x='\(left + width + 20)' y='\(ly - 9)' width='12' height='12' fill='\(color)'/>"
            s += "<text x='\(left + width + 38)' y='\(ly + 1)'>\(name)</text>\n"
        }
        return s + "</svg>\n"
    }
}

/// Runs the measurements. Every command runs inside a node's namespaces.
struct BenchRunner {
    let state: LocalCluster.State
    let prefix: String
    let sizes: [Int]
    let trials: Int
    let log: Bool

    /// A directory on tmpfs that the host and every node of a cluster the bench started see alike.
    static let scratch = "/dev/shm/rfork-bench"
    var home: LocalCluster.NodeState { state.nodes[0] }
    var target: LocalCluster.NodeState { state.nodes[1] }
    var rfork: String { Posix.executablePath() }
    var forkbench: String { prefix + "/libexec/rfork/rfork-forkbench" }

    func say(_ text: String) { if log { FileHandleStderr.write("bench: \(text)\n") } }

    /// Runs argv on a node; stdin is /dev/null opened inside the node (a descriptor opened outside would
    /// name a mount the node cannot see, and the child could not move), stderr joins stdout.
    func on(_ node: LocalCluster.NodeState, _ argv: [String], anyStatus: Bool = false) throws -> String {
        let (status, out) = try Posix.run(
            entering(node) + ["/bin/sh", "-c", "exec \"$@\" </dev/null 2>&1", "sh"] + argv)
        guard status == .exited(0) || anyStatus else {
            throw ValidationError(
                "\(argv.prefix(6).joined(separator: " ")) on \(node.name) failed (\(status)): \(out.split(separator: "\n").last ?? "")"
            )
        }
        return out
    }

    /// The start of a command line that runs the rest on `node`: in its namespaces and, as `rfork cluster
    /// exec` does, in its cgroups (its CPUs and memory). Begins with "/bin/sh" (a path for `Posix.spawn`).
    func entering(_ node: LocalCluster.NodeState) -> [String] {
        let join = (node.cgroups ?? []).map { "echo $$ > \($0)/cgroup.procs; " }.joined()
        return [
            "/bin/sh", "-c", join + "exec \"$@\"", "sh", "/usr/bin/nsenter", "-t", String(node.daemonPID), "-n", "-m",
            "-u", "-i", "-C", "--",
        ]
    }

    func remote(_ args: [String], postCopy: String = "never") throws -> String {
        try on(home, [rfork, "run", "--node", target.name, "--post-copy", postCopy, "--", forkbench] + args)
    }

    func objects(_ text: String) -> [[String: Double]] {
        text.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Double]
        }
    }

    func phaseMedians(_ records: [PlacementRecord]) -> [String: Double] {
        [
            "request": median(records.map(\.requestMs)), "dump": median(records.map(\.dumpMs)),
            "prepare": median(records.map(\.prepareMs)), "transfer": median(records.map(\.transferMs)),
            "restore": median(records.map(\.restoreMs)), "total": median(records.map(\.totalMs)),
        ]
    }

    func median(_ values: [Double]) -> Double {
        let v = values.filter { !$0.isNaN }.sorted()
        guard !v.isEmpty else { return .nan }
        return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
    }

    func measureAll() throws -> BenchReport {
        var results: [SizeResult] = []
        var migrations: [MigrationResult] = []
        var checkpoints: [CheckpointResult] = []
        for mib in sizes {
            let n = mib >= 1024 ? min(trials, 3) : trials
            say("\(mib) MiB: plain fork, \(n) trials")
            let local = objects(try on(home, [forkbench, "latency", String(mib), String(n)]))
            say("\(mib) MiB: remote fork, \(n) trials")
            let remoteText = (try? remote(["latency", String(mib), String(n)])) ?? ""
            let remoteOut = objects(remoteText)
            for line in remoteText.split(separator: "\n") where line.hasPrefix("rfork:") { say("fallback: \(line)") }
            let recent = try on(home, [rfork, "ps", "--recent", "--json"])
            let records = (try? JSONDecoder().decode([PlacementRecord].self, from: Data(recent.utf8))) ?? []
            let mine = records.suffix(n)
            let phases = phaseMedians(Array(mine))
            let lazyTrials = mib >= 1024 ? min(n, 2) : n
            say("\(mib) MiB: remote fork, post-copy, \(lazyTrials) trials")
            let lazyOut = objects(
                (try? remote(["latency", String(mib), String(lazyTrials)], postCopy: "always")) ?? "")
            let lazyGood = lazyOut.filter { $0["running_ms"] != nil && $0["moved"] == 1 }
            let lazyRecent = try on(home, [rfork, "ps", "--recent", "--json"])
            let lazyRecords =
                ((try? JSONDecoder().decode([PlacementRecord].self, from: Data(lazyRecent.utf8))) ?? []).suffix(
                    lazyTrials)
            say("\(mib) MiB: the seed's pipeline on tmpfs and on disk, CRIU's page server")
            var stats: [String: Double] = [:]
            var unused: [String: Double] = [:]
            let tmpfs = baseline(
                mib: mib, transport: .directory(Self.scratch + "/seed"), trials: min(n, 3), stats: &stats)
            let disk = baseline(
                mib: mib, transport: .directory("/var/tmp/rfork-bench"), trials: min(n, 3), stats: &unused)
            let pageServer = baseline(mib: mib, transport: .pageServer, trials: min(n, 3), stats: &unused)
            let good = remoteOut.filter { $0["running_ms"] != nil && $0["moved"] == 1 }
            say("\(mib) MiB: rfork migrate of a process that keeps writing its memory, \(min(n, 3)) trials")
            migrations.append(migrate(mib: mib, trials: min(n, 3), seedDowntime: tmpfs["total"] ?? .nan))
            if mib >= 1024 {
                say("\(mib) MiB: rfork checkpoint and rfork restart, 2 trials")
                checkpoints.append(
                    checkpointRestart(
                        mib: mib, trials: 2, criuDump: tmpfs["dump"] ?? .nan, criuRestore: tmpfs["restore"] ?? .nan))
            }
            results.append(
                SizeResult(
                    mib: mib, localBlocked: median(local.compactMap { $0["blocked_ms"] }),
                    localRunning: median(local.compactMap { $0["running_ms"] }),
                    localMemory: median(local.compactMap { $0["memory_ms"] }),
                    remoteBlocked: median(good.compactMap { $0["blocked_ms"] }),
                    remoteRunning: median(good.compactMap { $0["running_ms"] }),
                    remoteMemory: median(good.compactMap { $0["memory_ms"] }), phases: phases, seedTmpfs: tmpfs,
                    postCopyPhases: phaseMedians(Array(lazyRecords)), seedDisk: disk, pageServer: pageServer,
                    criuStats: stats,
                    postCopyRunning: median(lazyGood.compactMap { $0["running_ms"] }),
                    postCopyMemory: median(lazyGood.compactMap { $0["memory_ms"] }),
                    postCopyFailures: lazyTrials - lazyGood.count, failures: n - good.count))
        }
        say("pipes, rates, TCP and memory")
        // Medians of repeated runs, local and remote taking turns so that both see the same machine.
        var pipeRuns: [String: [[String: Double]]] = [:]
        for _ in 0..<5 {
            pipeRuns["local", default: []] += objects((try? on(home, [forkbench, "pipe", "256"])) ?? "").prefix(1)
            pipeRuns["remote", default: []] += objects((try? remote(["pipe", "256"])) ?? "").prefix(1)
        }
        var rateRuns: [String: [[String: Double]]] = [:]
        for _ in 0..<3 {
            rateRuns["local", default: []] += objects((try? on(home, [forkbench, "rate", "100", "1"])) ?? "").prefix(1)
            rateRuns["remote", default: []] += objects((try? remote(["rate", "100", "1"])) ?? "").prefix(1)
            rateRuns["remote100", default: []] += objects((try? remote(["rate", "100", "100"])) ?? "").prefix(1)
        }
        func medians(_ runs: [[String: Double]]?) -> [String: Double] {
            let rows = runs ?? []
            let keys = Set(rows.flatMap { $0.keys })
            return Dictionary(uniqueKeysWithValues: keys.map { key in (key, median(rows.compactMap { $0[key] })) })
        }
        let pipeLocal = medians(pipeRuns["local"])
        let pipeRemote = medians(pipeRuns["remote"])
        let rateLocal = medians(rateRuns["local"])
        let rateRemote = medians(rateRuns["remote"])
        let rate100 = medians(rateRuns["remote100"])
        let (homeKiB, targetKiB) = memoryPerChild()
        let tcpMiBps = tcp()
        let fills = (0..<3).compactMap { _ in objects((try? on(target, [forkbench, "fill", "1024"])) ?? "").first }
        say("profiles (perf record -a)")
        var profiles: [String: [ProfileRow]] = [:]
        for mib in Set([sizes.min() ?? 1, sizes.max() ?? 1]) {
            profiles["remote-forking \(mib) MiB children"] = profile([
                "latency", String(mib), String(mib >= 1024 ? 1 : max(trials, 20)),
            ])
        }
        profiles["piping 512 MiB from a parent to its remote child"] = profile(["pipe", "512"])
        profiles["remote-forking 200 children, 100 in flight"] = profile(["rate", "200", "100"])
        say("links limited to 1 Gbit/s")
        var limited: [LimitedResult] = []
        var tcpLimited = Double.nan
        if limitLinks(true) {
            defer { _ = limitLinks(false) }
            tcpLimited = tcp()
            for mib in sizes {
                let n = mib >= 1024 ? 1 : min(trials, 3)
                let out = objects((try? remote(["latency", String(mib), String(n)])) ?? "")
                let good = out.filter { $0["running_ms"] != nil && $0["moved"] == 1 }
                var unused: [String: Double] = [:]
                let pageServer = baseline(mib: mib, transport: .pageServer, trials: 1, stats: &unused)
                limited.append(
                    LimitedResult(
                        mib: mib, remoteRunning: median(good.compactMap { $0["running_ms"] }),
                        remoteMemory: median(good.compactMap { $0["memory_ms"] }),
                        pageServer: pageServer["total"] ?? .nan, failures: n - good.count))
            }
        } else {
            say("could not limit the links with tc; the 1 Gbit/s section is left out")
        }
        rmdir(Self.scratch + "/seed")
        rmdir("/var/tmp/rfork-bench")
        var report = BenchReport(
            date: ISO8601DateFormatter().string(from: Date()), machine: machine(), sizes: results, tcpMiBps: tcpMiBps,
            pipeLocalMiBps: pipeLocal["throughput_mib_s"] ?? .nan,
            pipeRemoteMiBps: pipeRemote["throughput_mib_s"] ?? .nan,
            rttLocalUs: pipeLocal["rtt_us"] ?? .nan, rttRemoteUs: pipeRemote["rtt_us"] ?? .nan,
            forksPerSecondLocal: rateLocal["forks_per_s"] ?? .nan,
            forksPerSecondRemote: rateRemote["forks_per_s"] ?? .nan,
            forksPerSecondRemote100: rate100["forks_per_s"] ?? .nan, homeKiBPerChild: homeKiB,
            targetKiBPerChild: targetKiB, limited: limited, tcpLimitedMiBps: tcpLimited,
            freshFillMs: median(fills.compactMap { $0["fresh_ms"] }),
            againFillMs: median(fills.compactMap { $0["again_ms"] }), profiles: profiles)
        report.migrations = migrations
        report.checkpoints = checkpoints
        say("20 processes moved one at a time, then by one rfork migrate --all")
        report.drain = drain(count: 20, mib: 16)
        say("shared memory across nodes")
        report.sharedMemory = sharedMemory(trials: 3)
        return report
    }

    /// `forkbench shm-*` with no rfork on the home node and with its children on the target.
    func sharedMemory(trials: Int) -> SharedMemoryResult {
        func runs(_ args: [String], remote: Bool) -> [String: Double] {
            var rows: [[String: Double]] = []
            for _ in 0..<trials {
                let argv = remote ? [rfork, "run", "--node", target.name, "--", forkbench] + args : [forkbench] + args
                if let row = objects((try? on(home, argv)) ?? "").first { rows.append(row) }
            }
            let keys = Set(rows.flatMap { $0.keys })
            return Dictionary(uniqueKeysWithValues: keys.map { k in (k, median(rows.compactMap { $0[k] })) })
        }
        let localTurn = runs(["shm-pingpong", "2000"], remote: false)
        let remoteTurn = runs(["shm-pingpong", "2000"], remote: true)
        let localFalse = runs(["shm-false", "2"], remote: false)
        let remoteFalse = runs(["shm-false", "2"], remote: true)
        let localReaders = runs(["shm-readers", "4", "256"], remote: false)
        let before = pagesReceived(target)
        let remoteReaders = runs(["shm-readers", "4", "256"], remote: true)
        let received = (pagesReceived(target) - before) / Double(trials)
        let localBulk = runs(["shm-bulk", "64"], remote: false)
        let remoteBulk = runs(["shm-bulk", "64"], remote: true)
        return SharedMemoryResult(
            localTurnUs: localTurn["turn_us"] ?? .nan, remoteTurnUs: remoteTurn["turn_us"] ?? .nan,
            tcpRttUs: tcpRoundTrip(), falseParentPerS: remoteFalse["parent_per_s"] ?? .nan,
            falseChildPerS: remoteFalse["child_per_s"] ?? .nan,
            localFalseParentPerS: localFalse["parent_per_s"] ?? .nan,
            localFalseChildPerS: localFalse["child_per_s"] ?? .nan, readersMs: remoteReaders["ms"] ?? .nan,
            localReadersMs: localReaders["ms"] ?? .nan, readersPagesReceived: received,
            bulkWriteMiBps: remoteBulk["child_write_mib_s"] ?? .nan,
            bulkReadMiBps: remoteBulk["parent_read_mib_s"] ?? .nan,
            localBulkWriteMiBps: localBulk["child_write_mib_s"] ?? .nan, trials: trials)
    }

    /// The shared-memory pages a node's rforkd has received from peers (its Prometheus counter).
    func pagesReceived(_ node: LocalCluster.NodeState) -> Double {
        let script = """
            import urllib.request
            text = urllib.request.urlopen("http://127.0.0.1:9420/metrics").read().decode()
            print(sum(float(l.split()[-1]) for l in text.splitlines()
                      if l.startswith("rfork_shared_memory_pages_received_total")))
            """
        let out = (try? on(node, ["python3", "-c", script])) ?? ""
        return Double(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .nan
    }

    /// One-byte TCP round trips from the home node to the target (TCP_NODELAY), median in µs.
    func tcpRoundTrip() -> Double {
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { Posix.close(devnull) }
        let script = """
            import socket, sys, time
            if sys.argv[1] == "echo":
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((sys.argv[2], 7498)); s.listen(1)
                c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    b = c.recv(1)
                    if not b: break
                    c.sendall(b)
            else:
                c = socket.create_connection((sys.argv[2], 7498))
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                times = []
                for _ in range(2000):
                    t = time.monotonic(); c.sendall(b"x"); c.recv(1); times.append(time.monotonic() - t)
                times.sort(); print(times[len(times) // 2] * 1e6)
            """
        guard
            let echo = try? Posix.spawn(
                "/bin/sh", entering(target) + ["python3", "-c", script, "echo", target.address],
                descriptors: [devnull, devnull, devnull])
        else { return .nan }
        defer {
            Posix.kill(echo, SIGKILL)
            _ = try? Posix.wait(echo)
        }
        usleep(300_000)
        let out = (try? on(home, ["python3", "-c", script, "ping", target.address])) ?? ""
        return Double(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .nan
    }

    /// Four CPU-bound workers on the home node, pinned and balanced, `trials` runs each, taking turns
    /// (needs a cluster of two one-CPU nodes).
    func balancing(trials: Int, seconds: Double) -> BalanceResult {
        var pinned: [Double] = []
        var balanced: [Double] = []
        var moved: [Double] = []
        for _ in 0..<trials {
            for pin in [true, false] {
                let args =
                    [rfork, "run", "--policy", "local"] + (pin ? ["--pin"] : []) + [
                        "--", forkbench, "workers", "4", String(seconds),
                    ]
                guard let row = objects((try? on(home, args)) ?? "").first, let wall = row["wall_ms"] else {
                    say("balancing: a run did not finish")
                    continue
                }
                if pin { pinned.append(wall) } else { balanced.append(wall) }
                if !pin { moved.append(row["moved"] ?? 0) }
            }
        }
        return BalanceResult(
            workers: 4, cpuSeconds: seconds, pinnedMs: median(pinned), balancedMs: median(balanced),
            moved: median(moved), trials: trials)
    }

    /// A child of `forkbench hold 1` on the target; the target cut off (its link down in the hub) or its
    /// rforkd killed; the time until its parent sees it end. The cluster is not usable afterwards.
    func detection(trials: Int, peerTimeout: Int) -> DetectionResult {
        func once(kill: Bool) -> Double? {
            let ready = "\(Self.scratch)/detect"
            unlink(ready)
            defer { unlink(ready) }
            // rfork run --node target forks the holder there; bash waits for it.
            guard
                let pid = try? startOnHome(
                    [
                        rfork, "run", "--node", target.name, "--", "/bin/bash", "-c", "(exec \"$0\" hold 1); exit 0",
                        forkbench,
                    ], readyFile: ready)
            else { return nil }
            let veth = "rfk\(target.name.dropFirst(4))"
            let t0 = Posix.monotonicNanoseconds()
            if kill {
                Posix.kill(target.daemonPID, SIGKILL)
            } else {
                _ = try? Posix.run(["/usr/sbin/ip", "-n", state.hub, "link", "set", veth, "down"])
            }
            _ = try? Posix.wait(pid)
            let ms = Double(Posix.monotonicNanoseconds() - t0) / 1e6
            if !kill { _ = try? Posix.run(["/usr/sbin/ip", "-n", state.hub, "link", "set", veth, "up"]) }
            return ms
        }
        var cut: [Double] = []
        for _ in 0..<trials {
            if let ms = once(kill: false) { cut.append(ms) }
            usleep(3_000_000)  // the link resumes (a new one, the old one given up)
        }
        let killed = once(kill: true).map { [$0] } ?? []
        return DetectionResult(
            peerTimeoutSeconds: peerTimeout, cutMs: median(cut), killedMs: median(killed), trials: trials)
    }

    /// `count` holders of `mib` MiB moved home -> target one by one (`rfork migrate`), then back by one
    /// `rfork migrate --all --from target --to home` (run on the target); ended afterwards.
    func drain(count: Int, mib: Int) -> DrainResult {
        var pids: [pid_t] = []
        var single: [Double] = []
        defer {
            for pid in pids {
                Posix.kill(pid, SIGKILL)  // the stand-in's end takes the moved copy with it
                _ = try? Posix.wait(pid)
            }
        }
        for i in 0..<count {
            let ready = "\(Self.scratch)/drain-\(i)"
            unlink(ready)
            defer { unlink(ready) }
            guard
                let pid = try? startOnHome(
                    [rfork, "run", "--policy", "local", "--", forkbench, "hold", String(mib)], readyFile: ready)
            else { continue }
            pids.append(pid)
            if let out = try? on(home, [rfork, "migrate", String(pid), target.name, "--json"]),
                let outcome = try? JSONDecoder().decode(Migration.Outcome.self, from: Data(out.utf8)),
                outcome.moved, let ms = outcome.frozenMs
            {
                single.append(ms)
            }
        }
        let t0 = Posix.monotonicNanoseconds()
        // It exits 1 when some did not move; the JSON says which.
        let out = try? on(
            target, [rfork, "migrate", "--all", "--from", target.name, "--to", home.name, "--json"], anyStatus: true)
        let wall = Double(Posix.monotonicNanoseconds() - t0) / 1e6
        let outcome = out.flatMap { try? JSONDecoder().decode(Drain.Outcome.self, from: Data($0.utf8)) }
        if outcome == nil { say("rfork migrate --all did not answer: \(out ?? "nothing")") }
        return DrainResult(
            processes: count, mib: mib, singleFrozenMs: median(single), drainFrozenMs: outcome?.medianFrozenMs ?? .nan,
            drainWallMs: wall, moved: outcome?.moved ?? 0)
    }

    /// Starts `forkbench dirty MIB` under `rfork run --policy local` on the home node, moves it to the
    /// target with `rfork migrate --json` and ends it; medians of the frozen times of `trials` moves.
    func migrate(mib: Int, trials: Int, seedDowntime: Double) -> MigrationResult {
        var frozen: [Double] = []
        var postCopy = false
        for trial in 0..<trials {
            let ready = "\(Self.scratch)/dirty-\(trial)"
            unlink(ready)
            // rfork run execs forkbench: the process started is the one to move, same PID.
            let pid = try? startOnHome(
                [rfork, "run", "--policy", "local", "--", forkbench, "dirty", String(mib)], readyFile: ready)
            if let pid, let out = try? on(home, [rfork, "migrate", String(pid), target.name, "--json"]),
                let outcome = try? JSONDecoder().decode(Migration.Outcome.self, from: Data(out.utf8)),
                outcome.moved, let ms = outcome.frozenMs
            {
                frozen.append(ms)
                postCopy = outcome.postCopy ?? false
            } else {
                say("\(mib) MiB: the migration did not happen")
            }
            if let pid {
                Posix.kill(pid, SIGKILL)  // the stand-in's end takes the moved copy with it
                _ = try? Posix.wait(pid)
            }
            unlink(ready)
        }
        return MigrationResult(
            mib: mib, frozenMs: median(frozen), postCopy: postCopy, seedDowntimeMs: seedDowntime, trials: trials,
            moved: frozen.count)
    }

    /// `trials` jobs of `mib` MiB (`forkbench hold` under `rfork run --policy local` on the home node): each
    /// saved with `rfork checkpoint --leave-running` into the scratch tmpfs, ended, and restarted on the
    /// target with `rfork restart --node`, timed until the target's `rfork ps` shows it running.
    func checkpointRestart(mib: Int, trials: Int, criuDump: Double, criuRestore: Double) -> CheckpointResult {
        var saves: [Double] = []
        var frozen: [Double] = []
        var restarts: [Double] = []
        for trial in 0..<trials {
            let ready = "\(Self.scratch)/ck-ready-\(trial)"
            let dir = "\(Self.scratch)/ck-\(trial)"
            unlink(ready)
            _ = try? Posix.run(["/bin/rm", "-rf", dir])
            defer {
                unlink(ready)
                _ = try? Posix.run(["/bin/rm", "-rf", dir])
            }
            guard
                let pid = try? startOnHome(
                    [rfork, "run", "--policy", "local", "--", forkbench, "hold", String(mib)], readyFile: ready)
            else { continue }
            let t0 = Posix.monotonicNanoseconds()
            let out = try? on(home, [rfork, "checkpoint", String(pid), dir, "--leave-running", "--json"])
            let t1 = Posix.monotonicNanoseconds()
            Posix.kill(pid, SIGKILL)
            _ = try? Posix.wait(pid)
            guard let out, let outcome = try? JSONDecoder().decode(Checkpoint.Outcome.self, from: Data(out.utf8)),
                outcome.saved
            else {
                say("\(mib) MiB: the checkpoint failed: \(out ?? "no answer")")
                continue
            }
            saves.append(Double(t1 - t0) / 1e6)
            if let ms = outcome.frozenMs { frozen.append(ms) }
            guard
                let restarter = try? Posix.spawn(
                    "/bin/sh",
                    entering(home) + [
                        "/bin/sh", "-c", "exec \"$@\" >/dev/null 2>&1 </dev/null", "sh", rfork, "restart", dir,
                        "--node",
                        target.name,
                    ], newSession: true)
            else { continue }
            let t2 = Posix.monotonicNanoseconds()
            var running = false
            for _ in 0..<1200 {
                if let ps = try? on(target, [rfork, "ps", "--json"]),
                    let rows = try? JSONDecoder().decode([ProcessRow].self, from: Data(ps.utf8)),
                    rows.contains(where: { $0.role == "hosted" && $0.state == "running" })
                {
                    running = true
                    break
                }
                if Posix.poll(restarter) != nil { break }  // it ended: the restart failed
                usleep(5000)
            }
            let t3 = Posix.monotonicNanoseconds()
            if running { restarts.append(Double(t3 - t2) / 1e6) } else { say("\(mib) MiB: the restart failed") }
            Posix.kill(restarter, SIGKILL)  // the command is the job's stand-in: the job goes with it
            _ = try? Posix.wait(restarter)
            for _ in 0..<200 {
                guard let ps = try? on(target, [rfork, "ps", "--json"]), ps.contains("\"hosted\"") else { break }
                usleep(10_000)
            }
        }
        return CheckpointResult(
            mib: mib, checkpointMs: median(saves), frozenMs: median(frozen), criuDumpMs: criuDump,
            restartMs: median(restarts), criuRestoreMs: criuRestore, trials: trials, saved: saves.count,
            restarted: restarts.count)
    }

    /// How the images reach the target in a CRIU baseline.
    enum Transport {
        /// The seed's pipeline: dump into a directory under this root, copy it, restore from the copy.
        case directory(String)
        /// CRIU's page server (pre-copy): pages go straight over TCP into the target's directory while
        /// dumping; the other images are copied after.
        case pageServer
    }

    var criu: String { ["/usr/local/sbin/criu", "/usr/sbin/criu"].first(where: Posix.fileExists) ?? "criu" }

    /// One CRIU baseline: criu dump, the copy to the target's directory, criu restore there inside a new
    /// PID namespace. Phases in ms (medians), NaN when it failed; CRIU's own statistics (--display-stats)
    /// of the last good trial go to `stats` as "dump/<name>" and "restore/<name>" in ms or pages.
    func baseline(mib: Int, transport: Transport, trials: Int, stats: inout [String: Double]) -> [String: Double] {
        var dumps: [Double] = []
        var copies: [Double] = []
        var restores: [Double] = []
        let root: String
        switch transport {
        case .directory(let r): root = r
        case .pageServer: root = Self.scratch + "/seed"
        }
        for trial in 0..<trials {
            let dir = "\(root)/\(mib)-\(trial)"
            _ = try? Posix.run(["/bin/rm", "-rf", dir])
            guard (try? Posix.makeDirectory(dir + "/src")) != nil, (try? Posix.makeDirectory(dir + "/dst")) != nil,
                let holder = try? startHolder(mib: mib, readyFile: dir + "/ready")
            else { continue }
            var server: pid_t?
            defer {
                Posix.kill(holder, SIGKILL)
                _ = Posix.poll(holder)
                if let server {
                    Posix.kill(server, SIGKILL)
                    _ = try? Posix.wait(server)
                }
                _ = try? Posix.run(["/bin/rm", "-rf", dir])
            }
            var dumpArgs = [
                criu, "dump", "-t", String(holder), "-D", dir + "/src", "-o", "dump.log", "--shell-job",
                "--leave-running", "--display-stats",
            ]
            if case .pageServer = transport {
                guard let started = startPageServer(directory: dir + "/dst") else {
                    say("\(mib) MiB: criu page-server did not start on \(target.name)")
                    continue
                }
                server = started
                dumpArgs += ["--page-server", "--address", target.address, "--port", String(Self.pageServerPort)]
            }
            let t0 = Posix.monotonicNanoseconds()
            let dumpOut: String
            do { dumpOut = try on(home, dumpArgs) } catch {
                say("\(mib) MiB: criu dump failed: \(error)")
                continue
            }
            if let server {
                _ = try? Posix.wait(server)  // it ends when the dump closes its connection
            }
            server = nil
            let t1 = Posix.monotonicNanoseconds()
            guard (try? on(home, ["/bin/sh", "-c", "cp -r \(dir)/src/. \(dir)/dst/ && sync -f \(dir)/dst"])) != nil
            else {
                continue
            }
            let t2 = Posix.monotonicNanoseconds()
            Posix.kill(holder, SIGKILL)  // the copy takes over its PID inside the new namespace anyway
            guard
                let restoreOut = try? on(
                    target,
                    [
                        "/usr/bin/unshare", "--pid", "--fork", "--mount-proc", criu, "restore", "-D", dir + "/dst",
                        "-o", "restore.log", "--shell-job", "--restore-detached", "--display-stats",
                    ])
            else { continue }
            let t3 = Posix.monotonicNanoseconds()
            dumps.append(Double(t1 - t0) / 1e6)
            copies.append(Double(t2 - t1) / 1e6)
            restores.append(Double(t3 - t2) / 1e6)
            stats = criuStats(dumpOut, prefix: "dump").merging(criuStats(restoreOut, prefix: "restore")) { $1 }
        }
        let d = median(dumps)
        let c = median(copies)
        let r = median(restores)
        return ["dump": d, "copy": c, "restore": r, "total": d + c + r]
    }

    static let pageServerPort = 7600

    /// Limits (or frees) both nodes' links to 1 Gbit/s with a token bucket; false when tc failed.
    func limitLinks(_ limit: Bool) -> Bool {
        let tc = ["/usr/sbin/tc", "/sbin/tc"].first(where: Posix.fileExists) ?? "tc"
        var ok = true
        for node in [home, target] {
            let args =
                limit
                ? [
                    tc, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1gbit", "burst", "256kb", "latency",
                    "50ms",
                ]
                : [tc, "qdisc", "del", "dev", "eth0", "root"]
            ok = ((try? on(node, args)) != nil) && ok
        }
        return ok
    }

    /// Runs the workload under rfork while `perf record -a` samples every CPU; the busiest commands and
    /// objects, as shares of non-idle samples. Empty when perf is missing or fails.
    func profile(_ args: [String]) -> [ProfileRow] {
        guard let perf = ["/usr/bin/perf", "/usr/local/bin/perf"].first(where: Posix.fileExists) else { return [] }
        let data = BenchRunner.scratch + "/perf.data"
        defer { unlink(data) }
        let command =
            entering(home) + [
                "/bin/sh", "-c", "exec \"$@\" </dev/null 2>&1", "sh", rfork, "run", "--node", target.name, "--",
                forkbench,
            ]
        guard
            let (status, _) = try? Posix.run(
                [perf, "record", "-q", "-a", "-F", "999", "-o", data, "--"] + command + args),
            status == .exited(0),
            let (_, report) = try? Posix.run([
                perf, "report", "-i", data, "--stdio", "-q", "--sort", "comm,dso", "--percent-limit", "0.5",
            ])
        else { return [] }
        var rows: [ProfileRow] = []
        for line in report.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, fields[0].hasSuffix("%"), let pct = Double(fields[0].dropLast()) else { continue }
            rows.append(
                ProfileRow(command: String(fields[1]), object: fields[2...].joined(separator: " "), percent: pct))
        }
        let busy = rows.filter { !$0.command.hasPrefix("swapper") }
        let total = 100 - rows.filter { $0.command.hasPrefix("swapper") }.reduce(0) { $0 + $1.percent }
        guard total > 0 else { return [] }
        return busy.map { ProfileRow(command: $0.command, object: $0.object, percent: $0.percent / total * 100) }
            .sorted { $0.percent > $1.percent }.prefix(12).map { $0 }
    }

    /// Starts `criu page-server` on the target, writing into `directory`; returns once it listens.
    func startPageServer(directory: String) -> pid_t? {
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { Posix.close(devnull) }
        guard
            let pid = try? Posix.spawn(
                "/bin/sh",
                entering(target) + [
                    criu, "page-server", "-D", directory, "--address", target.address, "--port",
                    String(Self.pageServerPort),
                ], descriptors: [devnull, devnull, devnull])
        else { return nil }
        let port = String(format: ":%04X ", Self.pageServerPort)
        for _ in 0..<500 {
            let table = (try? Posix.readFile("/proc/\(pid)/net/tcp")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            if table.split(separator: "\n").contains(where: { $0.contains(port) && $0.contains(" 0A ") }) {
                return pid
            }
            usleep(2000)
        }
        Posix.kill(pid, SIGKILL)
        _ = try? Posix.wait(pid)
        return nil
    }

    /// Lines like "Frozen time: 12345 us" or "Pages written: 256" from `criu --display-stats`.
    func criuStats(_ text: String, prefix: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let words = parts[1].split(separator: " ")
            guard let value = words.first.flatMap({ Double($0) }) else { continue }
            let name = parts[0].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, name.count < 40, !name.contains("(") || name.contains("parent") else { continue }
            out["\(prefix)/\(name)"] = words.dropFirst().first == "us" ? value / 1000 : value
        }
        return out
    }

    /// Starts `forkbench hold MIB` on the home node, in its own session, output to a file; waits for READY.
    func startHolder(mib: Int, readyFile: String) throws -> pid_t {
        try startOnHome([forkbench, "hold", String(mib)], readyFile: readyFile)
    }

    /// Starts `argv` on the home node in its own session (it execs, so its PID is the process's), output
    /// to `readyFile`; returns once the output says READY.
    func startOnHome(_ argv: [String], readyFile: String) throws -> pid_t {
        let pid = try Posix.spawn(
            "/bin/sh", entering(home) + ["/bin/sh", "-c", "exec \"$@\" >\"$0\" 2>&1 </dev/null", readyFile] + argv,
            newSession: true)
        for _ in 0..<3000 {
            if let bytes = try? Posix.readFile(readyFile), String(decoding: bytes, as: UTF8.self).contains("READY") {
                return pid
            }
            usleep(10_000)
        }
        Posix.kill(pid, SIGKILL)
        _ = try? Posix.wait(pid)
        throw ValidationError("\(argv.dropFirst().joined(separator: " ")) did not start on \(home.name)")
    }

    /// Raw TCP from the home node to the target: 512 MiB through one connection.
    func tcp() -> Double {
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { Posix.close(devnull) }
        let script = """
            import socket, sys, time
            if sys.argv[1] == "recv":
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((sys.argv[2], 7499)); s.listen(1); print("READY", flush=True)
                c, _ = s.accept(); n = 0
                while True:
                    b = c.recv(1 << 20)
                    if not b: break
                    n += len(b)
                c.sendall(b"done")
            else:
                c = socket.create_connection((sys.argv[2], 7499)); buf = b"x" * (1 << 20)
                t = time.monotonic()
                for _ in range(512): c.sendall(buf)
                c.shutdown(socket.SHUT_WR); c.recv(4)
                print(512 / (time.monotonic() - t))
            """
        guard
            let receiver = try? Posix.spawn(
                "/bin/sh", entering(target) + ["python3", "-c", script, "recv", target.address],
                descriptors: [devnull, devnull, devnull])
        else { return .nan }
        defer { _ = Posix.poll(receiver) }
        usleep(300_000)
        let out = (try? on(home, ["python3", "-c", script, "send", target.address])) ?? ""
        _ = try? Posix.wait(receiver)
        return Double(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .nan
    }

    /// PSS of the stand-ins (home) and namespace inits (target) of 10 sleeping remote children.
    func memoryPerChild() -> (Double, Double) {
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        let outFile = BenchRunner.scratch + "/children.txt"
        unlink(outFile)
        guard
            let pid = try? Posix.spawn(
                "/bin/sh",
                entering(home) + [
                    "/bin/sh", "-c", "exec \"$0\" run --node \"$1\" -- \"$2\" children 10 >\"$3\" 2>/dev/null", rfork,
                    target.name, forkbench, outFile,
                ],
                descriptors: [fds[0], 1, 2])
        else { return (.nan, .nan) }
        Posix.close(fds[0])
        defer {
            Posix.close(fds[1])
            _ = try? Posix.wait(pid)
            unlink(outFile)
        }
        var pids: [Int32] = []
        for _ in 0..<3000 {
            let text = (try? Posix.readFile(outFile)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            pids = text.split(separator: "\n").compactMap { Int32($0) }
            if pids.count == 10 { break }
            usleep(10_000)
        }
        guard pids.count == 10 else { return (.nan, .nan) }
        let homeKiB = pids.map(pss).reduce(0, +) / 10
        let inits = Posix.listDirectory("/proc").compactMap(Int32.init).filter { p in
            (try? Posix.readFile("/proc/\(p)/comm")).map {
                String(decoding: $0, as: UTF8.self).hasPrefix("rfork-nsinit")
            }
                ?? false
        }
        let targetKiB = inits.map(pss).reduce(0, +) / 10
        return (homeKiB, targetKiB)
    }

    func pss(_ pid: Int32) -> Double {
        guard let bytes = try? Posix.readFile("/proc/\(pid)/smaps_rollup") else { return 0 }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Pss:") {
            return Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    func machine() -> String {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let mem =
            (try? Posix.readFile("/proc/meminfo")).map { String(decoding: $0, as: UTF8.self) }?
            .split(separator: "\n").first { $0.hasPrefix("MemTotal") }?.split(separator: " ").dropFirst().first
            .flatMap { Double($0) }.map { String(format: "%.0f GiB", $0 / 1024 / 1024) } ?? "?"
        return "\(Posix.cpuCount()) CPUs, \(mem), Linux \(release), nodes on one machine over veth"
    }
}
