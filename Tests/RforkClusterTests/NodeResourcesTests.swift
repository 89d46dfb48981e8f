import Foundation
import RforkSystem
import Testing

@testable import RforkCluster

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

/// Where cpuset and memory are cgroup v2 controllers (a machine with v2 alone), a node's cgroup gets them
/// through the v2 files. This machine mounts them as v1 controllers, and its v1 hierarchies outlive an
/// unmount (they are held outside this system's mount namespace), so the kernel's v2 side cannot be run
/// here: these tests check what rfork writes, in a directory laid out as a v2 mount with the node's
/// cgroup already made (a real cgroupfs makes its files with the directory).
@Suite("Node cgroups on cgroup v2")
struct NodeCgroupsV2Tests {
    func v2Mount(controllers: String) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(
            "rfork-v2-\(UInt32.random(in: 0...UInt32.max))"
        ).path
        try FileManager.default.createDirectory(atPath: root + "/rfork-node1", withIntermediateDirectories: true)
        for (file, text) in [
            "cgroup.controllers": controllers, "cgroup.subtree_control": "", "cpuset.cpus.effective": "0-3\n",
            "rfork-node1/cpuset.cpus": "", "rfork-node1/memory.max": "max\n",
        ] {
            try text.write(toFile: root + "/" + file, atomically: false, encoding: .utf8)
        }
        return root
    }

    @Test func aNodeGetsItsCPUsAndMemoryThroughTheV2Files() throws {
        let root = try v2Mount(controllers: "cpuset cpu io memory pids\n")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let v2 = CgroupHierarchy(type: "cgroup2", options: "", mountPoint: root, path: "/")
        #expect(LocalCluster.availableCPUs([v2]) == [0, 1, 2, 3])
        let made = try LocalCluster().makeCgroups(
            for: "node1", NodeResources(cpus: [2], memoryBytes: 512 << 20), hierarchies: [v2])
        #expect(made == [root + "/rfork-node1"])
        let read = { (file: String) in try String(contentsOfFile: root + "/" + file, encoding: .utf8) }
        #expect(try read("rfork-node1/cpuset.cpus") == "2")
        #expect(try read("rfork-node1/memory.max") == "\(512 << 20)")
        // The parent hands both controllers down (a real cgroupfs keeps each; this file keeps the last).
        #expect(try read("cgroup.subtree_control") == "+memory")
    }

    @Test func controllersV1HoldsAreLeftToV1() throws {
        let root = try v2Mount(controllers: "cpuset memory\n")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let v2 = CgroupHierarchy(type: "cgroup2", options: "", mountPoint: root, path: "/")
        let v1 = CgroupHierarchy(type: "cgroup", options: "memory", mountPoint: root + "/v1-memory", path: "/")
        try FileManager.default.createDirectory(
            atPath: root + "/v1-memory/rfork-node1", withIntermediateDirectories: true)
        try "".write(toFile: root + "/v1-memory/rfork-node1/memory.limit_in_bytes", atomically: false, encoding: .utf8)
        _ = try LocalCluster().makeCgroups(
            for: "node1", NodeResources(cpus: [1], memoryBytes: 1 << 30), hierarchies: [v1, v2])
        let read = { (file: String) in try String(contentsOfFile: root + "/" + file, encoding: .utf8) }
        #expect(try read("v1-memory/rfork-node1/memory.limit_in_bytes") == "\(1 << 30)")
        #expect(try read("rfork-node1/memory.max") == "max\n")
        #expect(try read("rfork-node1/cpuset.cpus") == "1")
        #expect(try read("cgroup.subtree_control") == "+cpuset")
    }

    @Test func aParentThatCannotHandControllersDownSaysWhatToDo() throws {
        let root = try v2Mount(controllers: "cpuset\n")
        defer { try? FileManager.default.removeItem(atPath: root) }
        // Not writable as a file: stands for the kernel's EBUSY of a cgroup that holds processes.
        try FileManager.default.removeItem(atPath: root + "/cgroup.subtree_control")
        try FileManager.default.createDirectory(
            atPath: root + "/cgroup.subtree_control", withIntermediateDirectories: false)
        let v2 = CgroupHierarchy(type: "cgroup2", options: "", mountPoint: root, path: "/")
        do {
            _ = try LocalCluster().makeCgroups(
                for: "node1", NodeResources(cpus: [0], memoryBytes: 1 << 30), hierarchies: [v2])
            Issue.record("made the node's cgroup without its cpuset")
        } catch {
            #expect(error.description.contains("start 'rfork cluster up' from the root cgroup"))
        }
    }
}
