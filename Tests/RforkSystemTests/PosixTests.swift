import Foundation
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

    /// A thread's nice value is its own: set on one thread, the others keep theirs.
    @Test func aThreadsNiceIsItsOwn() async throws {
        let before = Posix.threadNice()
        let seen = await withCheckedContinuation { (done: CheckedContinuation<(Int32?, Int32), Never>) in
            let thread = Thread {
                let e = Posix.setThreadNice(min(before + 3, 19))
                done.resume(returning: (e, Posix.threadNice()))
            }
            thread.start()
        }
        #expect(seen.0 == nil)
        #expect(seen.1 == min(before + 3, 19))
        #expect(Posix.threadNice() == before)
    }

    /// A process started from a thread with a nice of its own starts with the process's.
    @Test func aSpawnedProcessHasTheProcessNiceNotTheThreads() async throws {
        let base = Posix.processNice
        let seen = await withCheckedContinuation { (done: CheckedContinuation<String, Never>) in
            let thread = Thread {
                _ = Posix.setThreadNice(min(base + 5, 19))
                let out = (try? Posix.run(["/bin/sh", "-c", "cut -d' ' -f19 /proc/self/stat"]))?.1 ?? ""
                done.resume(returning: out.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            thread.start()
        }
        #expect(seen == String(base))
    }
}
