import RforkSystem
import Testing

@Suite("Cgroups")
struct CgroupsTests {
    let mountinfo = """
        30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
        31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
        32 30 0:28 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
        33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """
    let cgroup = """
        5:pids:/
        4:memory:/jobs/a
        3:cpuset:/
        1:cpu:/
        0::/
        """

    @Test func findsTheHierarchiesANodeUsesAndThisProcessesCgroupInEach() {
        let found = CgroupHierarchy.discover(mountinfo: mountinfo, cgroup: cgroup)
        #expect(
            found.map(\.mountPoint) == [
                "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified",
            ])
        #expect(found.first { $0.options == "memory" }?.directory == "/sys/fs/cgroup/memory/jobs/a")
        #expect(found.first { $0.type == "cgroup2" }?.directory == "/sys/fs/cgroup/unified")
    }

    @Test func aPureV2MachineHasOneHierarchy() {
        let found = CgroupHierarchy.discover(
            mountinfo: "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate",
            cgroup: "0::/system.slice/rforkd.service\n")
        #expect(
            found == [
                .init(type: "cgroup2", options: "", mountPoint: "/sys/fs/cgroup", path: "/system.slice/rforkd.service")
            ])
    }
}
