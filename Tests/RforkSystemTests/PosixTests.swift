import Foundation
import Glibc
import RforkSystem
import Testing

@Suite(.serialized) struct PosixTests {  // one test spawns a process, another counts a pipe's holders
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

    /// A pipe's readers are its read ends, wherever they are held; its write end is not one.
    @Test func aPipesReadersAreItsReadEnds() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }  // a process another test spawns must not hold it
        defer { for fd in ends { Glibc.close(fd) } }
        var st = stat()
        #expect(fstat(ends[0], &st) == 0)
        let me = getpid()
        #expect(Posix.pipeReaders(inode: UInt64(st.st_ino)).map(\.pid) == [me])
        #expect(Posix.pipeReaders(inode: UInt64(st.st_ino)).map(\.fd) == ["\(ends[0])"])
        let second = fcntl(ends[0], F_DUPFD_CLOEXEC, 0)
        defer { Glibc.close(second) }
        #expect(Posix.pipeReaders(inode: UInt64(st.st_ino)).count == 2)
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
