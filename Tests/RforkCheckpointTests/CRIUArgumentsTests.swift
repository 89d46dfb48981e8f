import RforkCheckpoint
import Testing

@Suite struct CRIUArgumentsTests {
    let criu = CRIU(configuration: .init(path: "/usr/local/sbin/criu", nsenter: "/usr/bin/nsenter"))

    @Test func aDumpHereRunsCRIUItself() {
        let args = criu.dumpArguments(
            pid: 42, imageDirectory: "/run/rfork/images/h1", externalSocketInode: 7, externalFiles: ["file[1b:2c]"])
        #expect(
            args == [
                "/usr/local/sbin/criu", "dump", "-t", "42", "-D", "/run/rfork/images/h1", "-o", "dump.log",
                "--leave-running", "--shell-job", "--manage-cgroups=ignore", "--external", "unix[7]", "--external",
                "file[1b:2c]",
            ])
    }

    @Test func aTaskBelowOurPIDNamespaceIsDumpedFromTheNamespacesOfItsInitByItsPIDThere() {
        let args = criu.dumpArguments(
            pid: 13, imageDirectory: "/run/rfork/images/h2", externalSocketInode: 9, leaveStopped: true,
            insideNamespacesOf: 16472)
        // The namespaces rfork-nsinit (root's, the daemon's child) made, never those of the task itself.
        #expect(
            Array(args.prefix(5)) == [
                "/usr/bin/nsenter", "--pid=/proc/16472/ns/pid_for_children", "--mount=/proc/16472/ns/mnt", "--",
                "/usr/local/sbin/criu",
            ])
        #expect(Array(args.dropFirst(4).prefix(4)) == ["/usr/local/sbin/criu", "dump", "-t", "13"])
        #expect(args.contains("--leave-stopped") && !args.contains("--leave-running"))
    }
}
