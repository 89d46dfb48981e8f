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
}
