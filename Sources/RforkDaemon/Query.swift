import Foundation
import RforkPlacement
import RforkSystem

/// Answers to the CLI's questions, as JSON.
public struct NodeRow: Codable, Sendable {
    public var name: String
    public var state: String  // "self", "up", "down"
    public var address: String
    /// Its load as last measured (its own) or said (a peer's); nil when not known or too old.
    public var load: NodeLoad?
    /// Seconds since a peer last said its load.
    public var loadAge: Double?
}

public struct ProcessRow: Codable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    public var role: String  // "home": parent here, child on `node`; "hosted": child here, parent on `node`
    public var node: String
    public var state: String
    public var seconds: Double
    /// Home: the node its bytes go through first, when it was moved on from there (`node` runs it).
    /// Hosted: the node it was moved on to, when it only passes through this one.
    public var via: String?
}

/// `rfork top`: the nodes as this node sees them, and the processes under `rfork run` it runs.
public struct TopAnswer: Codable, Sendable {
    public var node: String
    public var nodes: [NodeRow]
    public var processes: [TopRow]
    /// Moves this node's balancer made since rforkd started.
    public var balancedMoves: Int
    public var balancing: Bool
}

public struct TopRow: Codable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    /// The node it came from (its home), when this node runs it for another.
    public var home: String?
    /// Its PID on its home node.
    public var homePID: Int32?
    /// How much of one CPU it wanted over the last round (ran or waited to run).
    public var cpu: Double
    public var memoryBytes: UInt64
    /// Seconds on this node.
    public var seconds: Double
    public var moves: Int
    public var pinned: Bool
}

/// The phases of one remote fork, in milliseconds. `total` runs from the parent's fork() call until the
/// home node knows the child runs remotely; the child itself started about half a round trip earlier.
public struct PlacementRecord: Codable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    public var node: String
    public var requestMs: Double  // fork() until the daemon has the child's request
    public var dumpMs: Double  // criu dump (to tmpfs)
    public var prepareMs: Double  // reading the images into the request
    public var transferMs: Double  // to the target, writing images, starting its init, and the answer back
    public var restoreMs: Double  // criu restore in the new PID namespace
    public var totalMs: Double
    public var imageBytes: Int
    public var postCopy: Bool?  // memory followed the running child on demand (CRIU lazy pages)
}

extension Node {
    func answer(query: String, uid: UInt32) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let now = Posix.monotonicNanoseconds()
        switch query {
        case "nodes":
            return String(decoding: (try? encoder.encode(nodeRows(now: now))) ?? Data("[]".utf8), as: UTF8.self)
        case "ps":
            var rows: [ProcessRow] = []
            for s in sessions.home.values where uid == 0 || s.uid == uid {
                rows.append(
                    ProcessRow(
                        pid: s.pid, uid: s.uid, role: "home", node: s.runsOn, state: "\(s.state)",
                        seconds: Double(now - s.started) / 1e9, via: s.runsOn == s.target ? nil : s.target))
            }
            for s in sessions.hosted.values where uid == 0 || s.uid == uid {
                // A process moved on from here leaves its stand-in: this node only passes its bytes on.
                let onward =
                    s.restored ? hostedProcess(s).flatMap { p in sessions.home.values.first { $0.localPID == p } } : nil
                rows.append(
                    ProcessRow(
                        pid: s.pid, uid: s.uid, role: "hosted", node: s.home,
                        state: onward != nil ? "passing" : s.restored ? "running" : "restoring",
                        seconds: Double(now - s.started) / 1e9, via: onward?.runsOn))
            }
            rows.sort { $0.pid < $1.pid }
            return String(decoding: (try? encoder.encode(rows)) ?? Data("[]".utf8), as: UTF8.self)
        case "top":
            let nodes = nodeRows(now: now)
            let rows = balance.lastTop.filter { uid == 0 || $0.uid == uid }.sorted {
                ($0.cpu, $1.pid) > ($1.cpu, $0.pid)
            }
            let top = TopAnswer(
                node: config.node, nodes: nodes, processes: rows, balancedMoves: balance.balancedMoves,
                balancing: (config.balance ?? .init()).isEnabled)
            return String(decoding: (try? encoder.encode(top)) ?? Data("{}".utf8), as: UTF8.self)
        case "recent":
            let rows = sessions.recent.filter { uid == 0 || $0.uid == uid }
            return String(decoding: (try? encoder.encode(rows)) ?? Data("[]".utf8), as: UTF8.self)
        default:
            return "{\"error\":\"unknown query '\(query)'\"}"
        }
    }

    /// This node and each peer, with its load as last measured or said.
    func nodeRows(now: UInt64) -> [NodeRow] {
        var rows = [
            NodeRow(
                name: config.node, state: "self", address: "\(config.listen ?? "0.0.0.0"):\(config.resolvedPort)",
                load: probe.load(hosted: sessions.hosted.count), loadAge: 0)
        ]
        for peer in net.peers {
            let link = net.links[peer.name]
            let said = balance.peerLoads[peer.name]
            let fresh = said.flatMap { $0.isFresh(now: now, maxAge: loadMaxAge) ? $0 : nil }
            // "idle": its link was closed for want of use and opens again when needed.
            let state = link.map { $0.isUp ? "up" : ($0.dormant || $0.waking) ? "idle" : "down" } ?? "down"
            rows.append(
                NodeRow(
                    name: peer.name, state: state,
                    address: "\(peer.host):\(peer.port ?? DaemonConfiguration.defaultPort)",
                    load: fresh?.load, loadAge: said.map { Double(now - min(now, $0.at)) / 1e9 }))
        }
        return rows
    }
}
