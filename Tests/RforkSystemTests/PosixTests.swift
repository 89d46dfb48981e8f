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

/// What rforkd relies on to wake a futex waiter that blocks signal 61 (`Node.wakeBlockedSleeper`): the
/// kernel keys a word of a shared mapping by object and offset, so a wake through another mapping of the
/// same object (rforkd's own) wakes a waiter that no signal can interrupt.
@Suite struct FutexWakeTests {
    @Test func aWakeThroughAnotherMappingOfTheObjectReachesAWaiterThatBlocksEverySignal() throws {
        let path = "/dev/shm/rfork-futex-test-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        unlink(path)
        defer { Posix.close(fd) }
        try #require(ftruncate(fd, 4096) == 0)
        let a = try #require(mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        let b = try #require(mmap(nil, 4096, PROT_READ, MAP_SHARED, fd, 0))
        try #require(a != MAP_FAILED && b != MAP_FAILED && a != b)
        defer {
            munmap(a, 4096)
            munmap(b, 4096)
        }
        let word = UInt(bitPattern: a) + 64  // the waiter's word, through mapping a
        let other = UInt(bitPattern: b) + 64  // the same word, through mapping b
        let tid = IntBox()
        let outcome = IntBox()
        let finished = DispatchSemaphore(value: 0)
        Thread {
            var all = sigset_t()
            sigfillset(&all)
            pthread_sigmask(SIG_SETMASK, &all, nil)
            tid.set(Posix.threadID)
            if let address = UnsafeRawPointer(bitPattern: word) {
                outcome.set(Posix.futexWaitShared(address, expected: 0, timeoutMilliseconds: 5000) ?? 0)
            }
            finished.signal()
        }.start()
        // Once it sleeps in futex(2), blocking 61, the word changes and the wake goes through mapping b.
        var asleep = false
        for _ in 0..<4000 where !asleep {
            let t = tid.get()
            if t > 0, let call = try? Posix.readFile("/proc/self/task/\(t)/syscall") {
                asleep = String(decoding: call, as: UTF8.self).hasPrefix("202 ")
            }
            if !asleep { usleep(1000) }
        }
        try #require(asleep)
        #expect(Posix.threadBlocks(pid: getpid(), tid: tid.get(), 61))
        #expect(!Posix.threadBlocks(pid: getpid(), tid: 0, 61))  // no such thread
        UnsafeMutableRawPointer(bitPattern: word)?.storeBytes(of: UInt32(1), as: UInt32.self)
        let wakeAt = try #require(UnsafeRawPointer(bitPattern: other))
        #expect(Posix.futexWakeShared(wakeAt) == 1)
        #expect(finished.wait(timeout: .now() + 6) == .success)
        #expect(outcome.get() == 0, "the waiter was not woken: \(Posix.errorText(outcome.get()))")
    }
}

/// A value handed from one thread to another in a test.
private final class IntBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int32 = 0
    func set(_ v: Int32) { lock.withLock { value = v } }
    func get() -> Int32 { lock.withLock { value } }
}
