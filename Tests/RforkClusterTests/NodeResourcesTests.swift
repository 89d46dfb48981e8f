import RforkCluster
import Testing

@Suite("Node resources")
struct NodeResourcesTests {
    @Test func nodesGetDistinctCPUsWhileThereAreEnough() {
        let plan = NodeResources.plan(
            nodes: 2, cpusPerNode: 2, memoryPerNode: nil, available: [0, 1, 2, 3], memory: 8 << 30)
        #expect(plan.map(\.cpus) == [[0, 1], [2, 3]])
        #expect(plan.map(\.memoryBytes) == [4 << 30, 4 << 30])
    }

    @Test func beyondThatTheyWrapRoundAndShare() {
        let plan = NodeResources.plan(nodes: 3, cpusPerNode: nil, memoryPerNode: 1 << 30, available: [0, 1], memory: 0)
        #expect(plan.map(\.cpus) == [[0], [1], [0]])
        #expect(plan.allSatisfy { $0.memoryBytes == 1 << 30 })
        // More CPUs asked than there are: each node gets them all.
        #expect(
            NodeResources.plan(nodes: 2, cpusPerNode: 5, memoryPerNode: nil, available: [4, 5], memory: 1 << 30)
                .map(\.cpus) == [[4, 5], [4, 5]])
    }

    @Test func cpuListsAndSizesParse() {
        #expect(NodeResources.parseCPUList("0-3,6,8-9\n") == [0, 1, 2, 3, 6, 8, 9])
        #expect(NodeResources.parseCPUList("") == [])
        #expect(NodeResources(cpus: [0, 2], memoryBytes: 1).cpuList == "0,2")
        #expect(NodeResources.parseSize("512M") == 512 << 20)
        #expect(NodeResources.parseSize("2GiB") == 2 << 30)
        #expect(NodeResources.parseSize("4096") == 4096)
        #expect(NodeResources.parseSize("12X") == nil)
        #expect(NodeResources.parseSize("0") == nil)
        #expect(NodeResources.parseSize("99999999999T") == nil)
    }
}
