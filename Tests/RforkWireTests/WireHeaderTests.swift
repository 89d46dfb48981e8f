import Foundation
import RforkWire
import Testing

/// librfork/wire.h and LocalFrame.swift define the local frames twice (C and Swift): they must agree.
@Suite("wire.h and LocalFrame.swift agree") struct WireHeaderTests {
    static func header() throws -> String {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../librfork/wire.h")
        return try String(contentsOf: url, encoding: .utf8)
    }

    /// NAME = VALUE pairs of wire.h's enums and #defines with a numeric value.
    static func constants() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for line in try header().split(separator: "\n") {
            let words = line.split(whereSeparator: { " ,=\t".contains($0) })
            if words.count >= 2, words[0].hasPrefix("RFORK_MSG_"), let v = Int(words[1]) { out[String(words[0])] = v }
            if words.count >= 3, words[0] == "#define", let v = Int(words[2]) { out[String(words[1])] = v }
        }
        return out
    }

    @Test func everyMessageTypeHasTheSameNumber() throws {
        let c = try Self.constants()
        let swift: [String: LocalMessageType] = [
            "RFORK_MSG_FORK_REQUEST": .forkRequest, "RFORK_MSG_FORK_REPLY": .forkReply, "RFORK_MSG_DATA": .data,
            "RFORK_MSG_EOF": .endOfFile, "RFORK_MSG_SIGNAL": .signal, "RFORK_MSG_EVENT": .event,
            "RFORK_MSG_RESTORED": .restored, "RFORK_MSG_FAILED": .failed, "RFORK_MSG_QUERY": .query,
            "RFORK_MSG_ANSWER": .answer, "RFORK_MSG_ABORT": .abort, "RFORK_MSG_DEMAND": .demand, "RFORK_MSG_ACK": .ack,
            "RFORK_MSG_MIGRATE": .migrate, "RFORK_MSG_CHECKPOINT": .checkpoint, "RFORK_MSG_RESTART": .restart,
            "RFORK_MSG_SCHEDULE": .schedule, "RFORK_MSG_PROGRESS": .progress,
            "RFORK_MSG_SHM_ATTACH": .shmAttach, "RFORK_MSG_UNIX_CONNECT": .unixConnect, "RFORK_MSG_MARK": .mark,
        ]
        let inHeader = c.keys.filter { $0.hasPrefix("RFORK_MSG_") }
        #expect(Set(inHeader) == Set(swift.keys), "message types on one side only")
        for (name, type) in swift { #expect(c[name] == Int(type.rawValue), "\(name)") }
    }

    @Test func limitsAndTheMoveSignalAgree() throws {
        let c = try Self.constants()
        #expect(c["RFORK_MAX_CHANNELS"] == LocalWire.maxChannels)
        #expect(c["RFORK_MIGRATE_SIGNAL"] == Int(LocalWire.migrateSignal))
        #expect(c["RFORK_KICK_SIGNAL"] == Int(LocalWire.kickSignal))
        #expect(c["RFORK_SEAL_SIGNAL"] == Int(LocalWire.sealSignal))
        #expect(c["RFORK_SEAL_RELEASE_UFFD"] == Int(LocalWire.releaseUserfaultValue))
        #expect(c["RFORK_DEMAND_EAGER"] == Int(LocalWire.eagerDemand))
        #expect(c["RFORK_MARK_INPUT"] == Int(LocalWire.markInput))
        #expect(c["RFORK_MARK_OUTPUT"] == Int(LocalWire.markOutput))
        #expect(c["RFORK_MARK_RESUME"] == Int(LocalWire.markResume))
        #expect(c["RFORK_MARK_CLOSED"] == Int(LocalWire.markClosed))
    }

    @Test func theRelayNameAgrees() throws {
        let line = try Self.header().split(separator: "\n").first { $0.hasPrefix("#define RFORK_RELAY_NAME ") }
        #expect(line.map(String.init) == "#define RFORK_RELAY_NAME \"\(LocalWire.relayName)\"")
    }
}
