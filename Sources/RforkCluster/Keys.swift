import Glibc
import RforkSystem

/// Cluster keys: one certificate authority per cluster, one certificate per node, made with openssl.
/// A daemon accepts a peer only if it presents a certificate this CA signed (mutual TLS).
public enum ClusterKeys {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Creates `dir/ca.pem` and `dir/ca.key` unless they exist.
    public static func createAuthority(in dir: String, name: String = "rfork cluster") throws(Error) {
        try make(dir)
        if Posix.fileExists(dir + "/ca.pem") { return }
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
            "-subj", "/CN=\(name)", "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem",
        ])
    }

    /// Creates `out/NODE.pem` and `out/NODE.key`, signed by the CA in `caDir`.
    public static func issue(node: String, caDir: String, out: String) throws(Error) {
        try make(out)
        let key = out + "/\(node).key"
        let csr = out + "/\(node).csr"
        let cert = out + "/\(node).pem"
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=\(node)",
            "-keyout", key, "-out", csr,
        ])
        try openssl([
            "x509", "-req", "-in", csr, "-CA", caDir + "/ca.pem", "-CAkey", caDir + "/ca.key", "-CAcreateserial",
            "-days", "3650", "-out", cert,
        ])
        unlink(csr)
    }

    private static func make(_ dir: String) throws(Error) {
        do { try Posix.makeDirectory(dir) } catch { throw Error(description: "\(error)") }
    }

    private static func openssl(_ args: [String]) throws(Error) {
        let path = ["/usr/bin/openssl", "/usr/local/bin/openssl"].first(where: Posix.fileExists) ?? "openssl"
        do {
            let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
            defer { Posix.close(devnull) }
            let pid = try Posix.spawn(path, ["openssl"] + args, descriptors: [devnull, devnull, devnull])
            let status = try Posix.wait(pid)
            guard status == .exited(0) else {
                throw Error(description: "openssl \(args.first ?? "") failed (\(status)); is openssl installed?")
            }
        } catch let error as Error {
            throw error
        } catch {
            throw Error(description: "cannot run openssl: \(error); install it with 'apt-get install openssl'")
        }
    }
}
