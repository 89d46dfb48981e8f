import RforkPlacement
import Testing

@Suite("Placement")
struct PlacementTests {
    let peers = [
        PeerView(name: "node2", isUp: true, runQueue: 0.5, cpus: 2),
        PeerView(name: "node3", isUp: true, runQueue: 3.0, cpus: 2),
        PeerView(name: "node4", isUp: false),
    ]

    @Test func spreadRoundRobinsOverTheNodesThatAreUp() {
        var p = Placement(selfName: "node1")
        let chosen = (0..<4).map { _ in p.choose(policy: .spread, node: nil, peers: peers) }
        #expect(
            chosen == [.remote(node: "node2"), .remote(node: "node3"), .remote(node: "node2"), .remote(node: "node3")])
    }

    @Test func spreadIsTheDefault() {
        var p = Placement(selfName: "node1")
        #expect(p.choose(policy: nil, node: nil, peers: peers) == .remote(node: "node2"))
    }

    @Test func leastLoadedCountsChildrenSentSinceTheLastReport() {
        var p = Placement(selfName: "node1")
        #expect(p.choose(policy: .leastLoaded, node: nil, peers: peers) == .remote(node: "node2"))
        var busy = peers
        busy[0].placedSinceReport = 10
        #expect(p.choose(policy: .leastLoaded, node: nil, peers: busy) == .remote(node: "node3"))
    }

    @Test func localNeverLeaves() {
        var p = Placement(selfName: "node1")
        #expect(p.choose(policy: .local, node: nil, peers: peers) == .local(reason: nil))
    }

    @Test func aNamedNodeWinsAndIsChecked() {
        var p = Placement(selfName: "node1")
        #expect(p.choose(policy: .local, node: "node3", peers: peers) == .remote(node: "node3"))
        #expect(p.choose(policy: nil, node: "node1", peers: peers) == .local(reason: nil))
        #expect(
            p.choose(policy: nil, node: "node9", peers: peers)
                == .local(reason: "unknown node 'node9' (see 'rfork nodes')"))
        #expect(p.choose(policy: nil, node: "node4", peers: peers) == .local(reason: "node 'node4' is not reachable"))
    }

    @Test func noPeerMeansLocalWithAReason() {
        var p = Placement(selfName: "node1")
        #expect(p.choose(policy: .spread, node: nil, peers: []) == .local(reason: "no peer nodes are configured"))
        #expect(
            p.choose(policy: .leastLoaded, node: nil, peers: [PeerView(name: "node2", isUp: false)])
                == .local(reason: "no peer node is reachable"))
    }
}

@Suite("Run queue average")
struct RunQueueAverageTests {
    @Test func startsAtTheFirstSampleAndMovesTowardLaterOnes() {
        var a = RunQueueAverage(seconds: 2)
        a.add(4, elapsed: 0)
        #expect(a.value == 4)
        a.add(0, elapsed: 2)  // one time constant: 1/e of the old value is left
        #expect(abs(a.value - 4 * 0.36788) < 0.001)
        for _ in 0..<100 { a.add(1, elapsed: 0.1) }
        #expect(abs(a.value - 1) < 0.01)
    }

    @Test func loadPerCPUAndMemoryShare() {
        let load = NodeLoad(runQueue: 3, cpus: 2, memoryUsed: 1, memoryLimit: 4)
        #expect(load.perCPU == 1.5)
        #expect(load.memoryShare == 0.25)
        #expect(NodeLoad(runQueue: 1, cpus: 0).perCPU == 1)
    }
}
