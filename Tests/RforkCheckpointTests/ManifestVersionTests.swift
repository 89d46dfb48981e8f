import Foundation
import RforkCheckpoint
import Testing

/// The format version a checkpoint is written as follows what it holds, so an rfork that cannot restore
/// all of a job (parts, parts of parts) refuses the directory instead of restarting some of it.
@Suite struct ManifestVersionTests {
    static func part(_ pid: Int32, _ node: String, parts: [CheckpointManifest.Part]? = nil) -> CheckpointManifest.Part {
        CheckpointManifest.Part(
            pid: pid, node: node, prefix: "part-\(pid)-", standInSocketInode: 7, controlSocketInode: 8,
            channels: [.init(id: 0, kind: 2, criuID: "pipe:[9]w", fd: 1)], parts: parts)
    }

    @Test func versionFollowsTheDepthOfTheParts() {
        #expect(CheckpointManifest.version(of: nil) == 1)
        #expect(CheckpointManifest.version(of: []) == 1)
        #expect(CheckpointManifest.version(of: [Self.part(5, "node2")]) == 2)
        #expect(CheckpointManifest.version(of: [Self.part(5, "node2", parts: [])]) == 2)
        #expect(
            CheckpointManifest.version(of: [
                Self.part(5, "node2"), Self.part(6, "node3", parts: [Self.part(2, "node1")]),
            ]) == 3)
        #expect(CheckpointManifest.currentVersion == 3)
    }

    @Test func partsOfPartsSurviveEncoding() throws {
        let nested = [Self.part(5, "node2", parts: [Self.part(3, "node3", parts: [Self.part(2, "node1")])])]
        let data = try JSONEncoder().encode(nested)
        let back = try JSONDecoder().decode([CheckpointManifest.Part].self, from: data)
        #expect(back == nested)
        #expect(back.first?.parts?.first?.parts?.first?.node == "node1")
        // A part without parts of its own is written as before (version 2 readers see no new key).
        let flat = String(decoding: try JSONEncoder().encode(Self.part(5, "node2")), as: UTF8.self)
        #expect(!flat.contains("\"parts\""))
    }
}
