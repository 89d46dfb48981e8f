import ArgumentParser
import Glibc
import RforkSystem

enum ProcessEnvironment {
    static func value(_ name: String) -> String? {
        guard let p = getenv(name) else { return nil }
        return Posix.string(fromC: p)
    }

    static func all() -> [String: String] {
        var out: [String: String] = [:]
        for entry in Posix.currentEnvironment() {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            out[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        return out
    }

    /// Replaces this process with argv (searched on PATH). Returns only on failure.
    /// Like `exec(_:environment:)`, running the program at `path` (argv[0] is only its name).
    static func exec(_ argv: [String], path: String, environment: [String: String]) {
        exec(argv, environment: environment, path: path)
    }

    static func exec(_ argv: [String], environment: [String: String], path: String? = nil) {
        for (k, _) in all() where environment[k] == nil { unsetenv(k) }
        for (k, v) in environment { setenv(k, v, 1) }
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cargs.append(nil)
        // The Swift runtime blocks signals and ignores SIGPIPE; the command gets what a shell would give it.
        var none = sigset_t()
        sigemptyset(&none)
        sigprocmask(SIG_SETMASK, &none, nil)
        signal(SIGPIPE, SIG_DFL)
        if let path { execv(path, cargs) } else { execvp(argv[0], cargs) }
    }
}

enum FileHandleStderr {
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = Glibc.write(2, &bytes, bytes.count)
    }
}

/// A plain text table with aligned columns.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count)
        }.joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
}

/// A command that passes the rest of its arguments to a program still answers `--help` and `-h` given
/// before any `--` (after `--` they belong to the program).
func helpIfAsked(_ captured: [String], _ command: any ParsableCommand.Type) throws {
    if let first = captured.first, first == "--help" || first == "-h" {
        throw CleanExit.helpRequest(command)
    }
}

/// One line on standard error.
func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
