import Glibc
import RforkSystem
import Testing

@Suite struct PosixTests {
    /// /proc files report size 0; reading one must still return its contents.
    @Test func readsProcFilesToTheirEnd() throws {
        let status = String(decoding: try Posix.readFile("/proc/self/status"), as: UTF8.self)
        #expect(status.contains("Pid:"))
        let meminfo = String(decoding: try Posix.readFile("/proc/meminfo"), as: UTF8.self)
        #expect(meminfo.hasPrefix("MemTotal:"))
    }

    @Test func aMissingFileIsAnErrorThatNamesIt() {
        #expect {
            _ = try Posix.readFile("/nonexistent/rfork-test")
        } throws: { error in
            "\(error)".contains("/nonexistent/rfork-test")
        }
    }

    /// A pidfd names its process: the PID behind it, from fdinfo.
    @Test func aPidfdNamesItsProcess() throws {
        let pidfd = try #require(Posix.openProcess(getpid()))
        defer { Posix.close(pidfd) }
        #expect(Posix.pid(ofPidfd: pidfd) == getpid())
        #expect(Posix.pid(ofPidfd: -1) == nil)
    }
}
