import CRforkSystem
import Foundation
import Glibc

/// The memory calls behind shared memory across nodes: a process's userfaultfd, which rforkd holds and
/// through which it acts on that process's memory, and the memory object every local process maps.
/// Each returns nil on success or the errno, so callers say what failed.
public enum Userfault {
    public static let pageSize: UInt64 = 4096

    /// A copy of descriptor `fd` of the process behind `pidfd` (pidfd_getfd), or -errno.
    public static func take(pidfd: Int32, fd: Int32) -> Int32 { crfork_pidfd_getfd(pidfd, fd) }

    /// Enables missing and write-protect faults on shared memory; nil on success, else the errno.
    public static func handshake(_ uffd: Int32) -> Int32? { code(crfork_uffd_api(uffd)) }

    public static func register(_ uffd: Int32, start: UInt64, length: UInt64) -> Int32? {
        code(crfork_uffd_register(uffd, UInt(start), UInt(length)))
    }

    public static func writeProtect(_ uffd: Int32, start: UInt64, length: UInt64, protect: Bool, wake: Bool)
        -> Int32?
    {
        code(crfork_uffd_writeprotect(uffd, UInt(start), UInt(length), protect ? 1 : 0, wake ? 1 : 0))
    }

    public static func wake(_ uffd: Int32, start: UInt64, length: UInt64) -> Int32? {
        code(crfork_uffd_wake(uffd, UInt(start), UInt(length)))
    }

    public enum Message: Equatable, Sendable {
        case fault(address: UInt64, write: Bool, writeProtected: Bool)
        case other
    }

    /// The next message, nil when none waits, or the errno.
    public static func read(_ uffd: Int32) -> Result<Message?, SystemError> {
        var address: UInt = 0
        var write: Int32 = 0
        var wp: Int32 = 0
        let r = crfork_uffd_read(uffd, &address, &write, &wp)
        switch r {
        case 0: return .success(nil)
        case 1: return .success(.fault(address: UInt64(address), write: write != 0, writeProtected: wp != 0))
        case 2: return .success(.other)
        default: return .failure(SystemError("read userfaultfd", errno: -r))
        }
    }

    /// Punches pages out of a memory object: they read as zero, and every process mapping them faults.
    public static func punch(_ fd: Int32, offset: UInt64, length: UInt64) -> Int32? {
        code(crfork_punch(fd, Int64(offset), Int64(length)))
    }

    /// Allocates pages of a memory object that are holes (zero), leaving present pages as they are.
    public static func allocate(_ fd: Int32, offset: UInt64, length: UInt64) -> Int32? {
        code(crfork_allocate(fd, Int64(offset), Int64(length)))
    }

    /// One page of a memory object (holes read as zeros, and so does what lies past the end of a file
    /// whose size is not a whole number of pages: a semaphore's 32 bytes, say).
    public static func readPage(_ fd: Int32, page: UInt64) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: Int(pageSize))
        let n = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, Int(pageSize), off_t(page * pageSize)) }
        return n >= 0 ? bytes : nil
    }

    /// Writes one page into a memory object of `size` bytes, never past its end (its size stays).
    public static func writePage(_ fd: Int32, page: UInt64, _ bytes: [UInt8], size: UInt64) -> Int32? {
        guard bytes.count == Int(pageSize) else { return EINVAL }
        let start = page * pageSize
        guard start < size else { return nil }
        let count = Int(min(pageSize, size - start))
        do throws(SystemError) {
            try Posix.writeAll(fd, Data(bytes[0..<count]), at: start)
            return nil
        } catch {
            return error.errno
        }
    }

    private static func code(_ r: Int32) -> Int32? { r == 0 ? nil : -r }
}
