import Glibc
import NIOCore
import RforkWire

/// A blocking client of the local socket, for the CLI's queries.
public enum LocalClient {
    public static func query(_ query: String, socket path: String) throws(DaemonError) -> String {
        try ask(.query, query, socket: path)
    }

    /// Sends one frame of `type` with `text` and waits for the daemon's ANSWER (which may take a while:
    /// a migration answers when the process has moved).
    /// PROGRESS lines that come before it go to `progress`.
    public static func ask(
        _ type: LocalMessageType, _ text: String, socket path: String, timeoutSeconds: Int = 900,
        progress: ((String) -> Void)? = nil
    ) throws(DaemonError) -> String {
        let fd = try open(socket: path)
        defer { close(fd) }
        try send(LocalFrame.text(type, text), to: fd)
        // A daemon that never answers must not hold the command for good.
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var input = ByteBuffer()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let frame = try? LocalFrameDecoder.parse(&input) {
                if frame.type == .answer { return frame.text }
                if frame.type == .progress { progress?(frame.text) }
                continue
            }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw DaemonError("rforkd did not answer within \(timeoutSeconds) s")
            }
            guard n > 0 else { throw DaemonError("rforkd closed the connection without answering") }
            input.writeBytes(chunk[0..<n])
        }
    }

    /// A connection to the daemon's socket, for a command that keeps it (`rfork restart` becomes a stand-in).
    public static func open(socket path: String) throws(DaemonError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DaemonError("socket: errno \(errno)") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw DaemonError("socket path too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard ok == 0 else {
            close(fd)
            throw DaemonError("no rforkd answers at \(path): start one ('rfork cluster up', or rforkd --config FILE)")
        }
        return fd
    }

    public static func send(_ frame: LocalFrame, to fd: Int32) throws(DaemonError) {
        var out = ByteBuffer()
        LocalFrameEncoder.write(frame, to: &out)
        let sent = out.withUnsafeReadableBytes { write(fd, $0.baseAddress, $0.count) }
        guard sent == out.readableBytes else { throw DaemonError("cannot send the request to rforkd") }
    }

    /// Reads exactly one frame (nothing past it, so the descriptor can be handed on).
    public static func receive(from fd: Int32) throws(DaemonError) -> LocalFrame {
        func exactly(_ n: Int) throws(DaemonError) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: n)
            var got = 0
            while got < n {
                let r = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, n - got) }
                if r < 0 && errno == EINTR { continue }
                guard r > 0 else { throw DaemonError("rforkd closed the connection without answering") }
                got += r
            }
            return bytes
        }
        let header = try exactly(4)
        let length = Int(UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24)
        guard length >= 1, length <= LocalWire.frameMax else { throw DaemonError("rforkd sent a malformed frame") }
        var buffer = ByteBuffer(bytes: header + (try exactly(length)))
        guard let frame = try? LocalFrameDecoder.parse(&buffer) else {
            throw DaemonError("rforkd sent a malformed frame")
        }
        return frame
    }
}
