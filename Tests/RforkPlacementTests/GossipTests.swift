import RforkPlacement
import Testing

@Suite("Gossip: which peers hear this node's load") struct GossipTests {
    @Test func everyPeerEveryRoundWhileTheyAreNoMoreThanTheFanout() {
        var g = Gossip(fanout: 16, seed: 1)
        let peers = ["node2", "node3"]
        for _ in 0..<5 { #expect(g.pick(from: peers) == peers) }
        var exact = Gossip(fanout: 2, seed: 1)
        #expect(exact.pick(from: ["b", "a"]) == ["a", "b"])
    }

    @Test func eachRoundTellsFanoutDistinctPeersAndEveryPeerWithinTheBound() {
        for seed: UInt64 in 1...20 {
            var g = Gossip(fanout: 3, seed: seed)
            let peers = (1...10).map { "n\($0)" }
            let bound = Gossip.rounds(peers: peers.count, fanout: 3)
            #expect(bound == 4)
            var lastHeard: [String: Int] = [:]
            for round in 0..<60 {
                let picked = g.pick(from: peers)
                #expect(picked.count == 3)
                #expect(Set(picked).count == 3)
                for p in picked { lastHeard[p] = round }
                if round >= 2 * bound {
                    // Nobody waits more than two passes: the gap between two picks of a peer is bounded.
                    for p in peers { #expect(round - (lastHeard[p] ?? -100) < 2 * bound) }
                }
            }
        }
    }

    @Test func peersThatLeaveAreSkippedAndNewOnesJoin() {
        var g = Gossip(fanout: 2, seed: 9)
        var peers = ["a", "b", "c", "d", "e"]
        _ = g.pick(from: peers)
        peers.removeAll { $0 == "c" || $0 == "d" }
        peers.append("f")
        var seen: Set<String> = []
        for _ in 0..<10 {
            let picked = g.pick(from: peers)
            #expect(picked.allSatisfy { peers.contains($0) })
            seen.formUnion(picked)
        }
        #expect(seen == Set(peers))
        #expect(g.pick(from: []) == [])
    }

    @Test func theConfigurationIsChecked() {
        #expect(Gossip.Configuration().problem() == nil)
        #expect(Gossip.Configuration().resolvedFanout == 16)
        #expect(Gossip.Configuration().resolvedIdleSeconds == 10)
        #expect(Gossip.Configuration(fanout: 0).problem() != nil)
        #expect(Gossip.Configuration(idleSeconds: 0).problem() != nil)
    }
}
