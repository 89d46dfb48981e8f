import CRforkSystem
import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import RforkCheckpoint
import RforkProtocol
import RforkSystem
import RforkWire

/// Shared anonymous memory kept coherent across nodes: the daemon's side of `Coherence`.
///
/// Every local process that maps such memory has given this daemon a userfaultfd (a parent through its
/// child's placement request, a child once placed: `SHM_ATTACH`). Once a child that maps it runs on
/// another node, the memory is a *region*: on each node one memory object (the shmem object behind the
/// mappings, opened through /proc/PID/map_files) is a *participant*, named "node/inode@major:minor", and the home's
/// participant manages the region's directory. Every local process mapping the object is registered for
/// missing and write-protect faults; a fault becomes a `CoherenceNode` event, and its actions become
/// write-protection, hole punching and page writes on the object, and `Coherence` envelopes to peers.
final class ShmMapper: @unchecked Sendable {  // confined to Node.loop
    let pid: Int32
    let pidfd: Int32
    let uffd: Int32
    let uid: UInt32
    /// Ranges registered, by participant: where page `firstPage` of the object sits in this process.
    var ranges: [String: [(start: UInt64, end: UInt64, firstPage: UInt64)]] = [:]

    init(pid: Int32, pidfd: Int32, uffd: Int32, uid: UInt32) {
        self.pid = pid
        self.pidfd = pidfd
        self.uffd = uffd
        self.uid = uid
    }

    /// Which page of which participant's object is at `address` in this process (the inverse of
    /// `addresses(of:in:)`), for each object it maps there.
    func pages(at address: UInt64) -> [(participant: String, page: UInt64)] {
        ranges.compactMap { participant, ranges in
            guard let r = ranges.first(where: { $0.start <= address && address < $0.end }) else { return nil }
            return (participant, r.firstPage + (address - r.start) / Userfault.pageSize)
        }
    }

    /// Where `page` of the participant's object is in this process: every address, since a process may
    /// map one object more than once (a System V segment attached twice), and each mapping must be
    /// protected and woken.
    func addresses(of page: UInt64, in participant: String) -> [UInt64] {
        (ranges[participant] ?? []).compactMap { r in
            let a = r.start &+ (page &- r.firstPage) &* Userfault.pageSize
            return page >= r.firstPage && a < r.end ? a : nil
        }
    }
}

final class SharedRegion: @unchecked Sendable {  // confined to Node.loop
    let participant: String
    let manager: String
    let object: SharedMemory.Object
    let objectFD: Int32
    let pages: UInt64
    /// The object's size in bytes: a page is never written past it (a file need not be whole pages).
    let size: UInt64
    let uid: UInt32
    var node: CoherenceNode
    var directory: CoherenceDirectory?
    var mappers: [ShmMapper] = []
    /// Home sessions of children that map it (on the manager): the region lasts while any runs.
    var sessions: Set<UInt64> = []
    /// Participants heard from (on the manager): told when the region ends.
    var participants: Set<String> = []
    var ended = false
    /// Counts, per page, how often the page was dropped or installed here: a futex waiter that slept on
    /// an older generation may have missed a wake from another node.
    var generation: [Int: UInt64] = [:]
    /// rforkd's own read-only mapping of the object, made when first needed: a futex wake through it
    /// reaches waiters that block signal 61 (see `wakeBlockedSleeper`). Touched only at pages this node
    /// holds, so it never faults a page in that another node owns.
    var wakeMapping: UnsafeMutableRawPointer?
    /// Byte offsets of futex words to wake through `wakeMapping` once their page is here again.
    var wakeOnInstall: [Int: Set<UInt64>] = [:]

    init(
        participant: String, manager: String, object: SharedMemory.Object, objectFD: Int32, pages: UInt64, uid: UInt32,
        hold: Double
    ) {
        self.participant = participant
        self.manager = manager
        self.object = object
        self.objectFD = objectFD
        self.pages = pages
        var st = stat()
        size = fstat(objectFD, &st) == 0 ? UInt64(st.st_size) : pages * Userfault.pageSize
        self.uid = uid
        node = CoherenceNode(
            name: participant, manager: manager,
            configuration: CoherenceNode.Configuration(minimumHold: hold, pageCount: Int(clamping: pages)))
        if participant == manager { directory = CoherenceDirectory(manager: manager) }
    }
}

/// Reads the faults of every userfaultfd the daemon holds on one thread of its own, and hands them to
/// the event loop. A userfaultfd given up is closed by this thread, never while it may poll it.
final class FaultReader: @unchecked Sendable {
    private let lock = NIOLock()
    private var fds: Set<Int32> = []
    private var retired: [Int32] = []
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let deliver: @Sendable ([(Int32, Userfault.Message)]) -> Void

    /// `nice`: the thread's nice value (see `DaemonConfiguration.eventLoopNice`).
    init?(nice: Int32, deliver: @escaping @Sendable ([(Int32, Userfault.Message)]) -> Void) {
        guard let (r, w) = try? Posix.makePipe() else { return nil }
        _ = fcntl(r, F_SETFL, O_NONBLOCK)
        wakeRead = r
        wakeWrite = w
        self.deliver = deliver
        let thread = Thread { [self] in
            _ = Posix.setThreadNice(nice)
            self.run()
        }
        thread.name = "rforkd-faults"
        thread.start()
    }

    func add(_ fd: Int32) {
        lock.withLock { _ = fds.insert(fd) }
        poke()
    }

    /// Stops reading `fd` and closes it.
    func retire(_ fd: Int32) {
        lock.withLock {
            fds.remove(fd)
            retired.append(fd)
        }
        poke()
    }

    private func poke() {
        var b: UInt8 = 1
        _ = Glibc.write(wakeWrite, &b, 1)
    }

    private func run() {
        while true {
            let (watch, closing) = lock.withLock { () -> ([Int32], [Int32]) in
                let c = retired
                retired = []
                return (Array(fds), c)
            }
            for fd in closing { Posix.close(fd) }
            var polls = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            polls += watch.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let n = Glibc.poll(&polls, nfds_t(polls.count), 1000)
            guard n > 0 else { continue }
            if polls[0].revents != 0 {
                var buf = [UInt8](repeating: 0, count: 64)
                _ = Glibc.read(wakeRead, &buf, 64)
            }
            var batch: [(Int32, Userfault.Message)] = []
            for p in polls.dropFirst() where p.revents & Int16(POLLIN) != 0 {
                // The descriptor is shared with its process, which could clear O_NONBLOCK: set it again, and
                // read at most a few messages per wake-up.
                _ = fcntl(p.fd, F_SETFL, O_NONBLOCK)
                for _ in 0..<16 {
                    guard case .success(let m?) = Userfault.read(p.fd) else { break }
                    batch.append((p.fd, m))
                }
            }
            if !batch.isEmpty { deliver(batch) }
        }
    }
}

struct SharedMemoryState {
    var regions: [String: SharedRegion] = [:]  // by local participant
    var mappers: [Int32: ShmMapper] = [:]  // by PID
    var mappersByUffd: [Int32: ShmMapper] = [:]
    var reader: FaultReader?
    var sweeping: RepeatedTask?
    var kicking: RepeatedTask?
    /// Processes that map a shared memory object (by device and inode) but could not give rforkd a userfaultfd:
    /// while one lives, that memory does not become a region (no child sharing it moves). Their pidfds.
    var uncovered: [SharedMemory.Object: [Int32]] = [:]
    /// Futex waiters seen asleep on a region's page, with the page's generation then ("pid/tid/address").
    var futexWaiters: [String: FutexSleeper] = [:]
}

/// A thread seen asleep in futex(2) on a word of a region's page.
struct FutexSleeper {
    var generation: UInt64
    let participant: String
    let page: UInt64
    let pid: Int32
    let tid: Int32
    let address: UInt64
}

extension Node {
    var nowSeconds: Double { Double(Posix.monotonicNanoseconds()) / 1e9 }

    /// What a user whose processes cannot make a userfaultfd is told to get (librfork tries both).
    static let userfaultfdAdvice =
        "unprivileged users need read and write access to /dev/userfaultfd, or vm.unprivileged_userfaultfd=1"

    func participantName(_ o: SharedMemory.Object) -> String {
        "\(config.node)/\(o.inode)@\(o.device.major):\(o.device.minor)"
    }

    private func faultReader() -> FaultReader? {
        if let r = shared.reader { return r }
        let loop = self.loop
        let reader = FaultReader(nice: config.resolvedEventLoopNice) { [weak self] batch in
            guard let node = self else { return }
            loop.execute { node.sharedFaults(batch) }
        }
        shared.reader = reader
        shared.sweeping = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [weak self] _ in
            self?.sweepSharedMemory()
        }
        shared.kicking = loop.scheduleRepeatedTask(
            initialDelay: Self.futexScanInterval, delay: Self.futexScanInterval
        ) { [weak self] _ in
            self?.kickFutexWaiters()
        }
        return reader
    }

    /// Takes descriptor `fd` of process `pid` as its userfaultfd (checked to be one, of a process of `uid`).
    func takeUserfault(pid: Int32, fd: Int32, uid: UInt32) -> Result<ShmMapper, CheckpointError> {
        if let m = shared.mappers[pid], Posix.processAlive(pidfd: m.pidfd) { return .success(m) }
        guard let status = Posix.processStatus(pid), let uids = status["Uid"],
            uids.split(whereSeparator: { $0 == "\t" || $0 == " " }).allSatisfy({ UInt32($0) == uid })
        else { return .failure(CheckpointError(.unmovable, "process \(pid) is not the user's")) }
        guard Posix.readLink("/proc/\(pid)/fd/\(fd)") == "anon_inode:[userfaultfd]" else {
            return .failure(CheckpointError(.unmovable, "descriptor \(fd) of process \(pid) is not a userfaultfd"))
        }
        guard let pidfd = Posix.openProcess(pid) else {
            return .failure(CheckpointError(.unmovable, "process \(pid) ended"))
        }
        let uffd = Userfault.take(pidfd: pidfd, fd: fd)
        guard uffd >= 0 else {
            Posix.close(pidfd)
            return .failure(
                CheckpointError(.unmovable, "cannot take the userfaultfd of process \(pid): \(Posix.errorText(-uffd))"))
        }
        _ = fcntl(uffd, F_SETFD, FD_CLOEXEC)
        // A descriptor already handed over (by an earlier fork) has had its handshake: EINVAL then.
        if let e = Userfault.handshake(uffd), e != EINVAL {
            Posix.close(uffd)
            Posix.close(pidfd)
            return .failure(CheckpointError(.unmovable, "userfaultfd handshake failed: \(Posix.errorText(e))"))
        }
        if let old = shared.mappers[pid] { dropMapper(old) }
        let mapper = ShmMapper(pid: pid, pidfd: pidfd, uffd: uffd, uid: uid)
        shared.mappers[pid] = mapper
        shared.mappersByUffd[uffd] = mapper
        faultReader()?.add(uffd)
        return .success(mapper)
    }

    /// Any fork of a process that maps shared memory: its parent's userfaultfd is taken now, whatever the
    /// placement, so the parent is watched should the memory become a region later.
    func takeParentUserfault(_ parentUserfault: LocalForkRequest.ParentUserfault?, childPID: Int32, uid: UInt32) {
        guard let parentPID = parentPID(of: childPID) else { return }
        switch parentUserfault {
        case .descriptor(let fd)?:
            if case .success(let mapper) = takeUserfault(pid: parentPID, fd: fd, uid: uid),
                let why = adopt(mapper)
            {
                logger.warning("shared memory: process \(parentPID): \(why)")
            }
        case .error?:
            markUncovered(parentPID)
        case nil:
            break
        }
    }

    /// The parent of a process (`PPid`), nil for none or init.
    func parentPID(of pid: Int32) -> Int32? {
        guard let parent = Posix.processStatus(pid)?["PPid"].flatMap({ Int32($0) }), parent > 1 else { return nil }
        return parent
    }

    /// A process that maps shared memory rforkd cannot watch: its memory must not become a region.
    func markUncovered(_ pid: Int32) {
        guard let maps = coherentMappings(pid), !maps.isEmpty, let pidfd = Posix.openProcess(pid) else { return }
        for object in Set(maps.map(\.object)) { shared.uncovered[object, default: []].append(pidfd) }
    }

    /// A job restored here from a checkpoint: its processes but the top one closed their userfaultfds
    /// before the cut (CRIU cannot save one), so rforkd does not watch them until each gives a new one (at
    /// its next fork). Until then their memory must not become a region: they count as uncovered.
    func markRestoredMappers(_ s: HostedSession) {
        guard let helper = s.helperPID else { return }
        for top in Posix.children(of: helper) {
            for p in Self.descendants(of: top) where shared.mappers[p] == nil { markUncovered(p) }
        }
    }

    /// Registers a process newly known to map shared memory in every region of this node it maps.
    func adopt(_ mapper: ShmMapper) -> String? {
        guard let maps = coherentMappings(mapper.pid) else { return nil }
        for object in Set(maps.map(\.object)) {
            guard let region = shared.regions[participantName(object)], !region.ended,
                mapper.ranges[region.participant] == nil
            else { continue }
            guard region.uid == mapper.uid else { return "the shared memory is another user's" }
            if let why = register(mapper, in: region) { return why }
        }
        return nil
    }

    /// The mappings of a process that rforkd keeps coherent across nodes (`Mapping.isCoherentAcrossNodes`).
    func coherentMappings(_ pid: Int32) -> [SharedMemory.Mapping]? {
        guard let bytes = try? Posix.readFile("/proc/\(pid)/maps") else { return nil }
        return SharedMemory.parseMaps(String(decoding: bytes, as: UTF8.self)).filter {
            $0.isCoherentAcrossNodes
        }
    }

    /// The descriptors of `object` that process `pid` holds open for reading or writing (not O_PATH).
    func openDescriptors(pid: Int32, of object: SharedMemory.Object) -> [Int32] {
        SharedMemory.openDescriptors(pid: pid).filter { $0.object == object }.map(\.fd)
    }

    /// Memory shared across nodes is kept coherent through its mappings; read(2) and write(2) through a
    /// descriptor would see this node's copy only. Each local process in `pids` that holds a descriptor
    /// of `object` is asked (`LocalWire.sealSignal`, the inode as its value) to reduce it to O_PATH, and
    /// waited for up to 200 ms. The reason when one did not: the memory must then not be shared.
    func sealDescriptors(of object: SharedMemory.Object, in pids: [Int32]) -> String? {
        var waiting: [Int32] = []
        for pid in pids where !openDescriptors(pid: pid, of: object).isEmpty {
            guard let pidfd = Posix.openProcess(pid) else { continue }
            _ = Posix.signal(process: pidfd, LocalWire.sealSignal, value: object.inode)
            Posix.close(pidfd)
            waiting.append(pid)
        }
        let deadline = Posix.monotonicNanoseconds() + 200_000_000
        while !waiting.isEmpty {
            waiting.removeAll { openDescriptors(pid: $0, of: object).isEmpty }
            if waiting.isEmpty { break }
            if Posix.monotonicNanoseconds() > deadline {
                let fds = openDescriptors(pid: waiting[0], of: object).map(String.init).joined(separator: ", ")
                return
                    "process \(waiting[0]) keeps descriptor \(fds) of the shared memory open for reading or writing, which would not see the other nodes' writes (librfork did not reduce it to O_PATH)"
            }
            usleep(1000)
        }
        return nil
    }

    /// Registers every mapping of the region's object in the process, and protects what must be.
    func register(_ mapper: ShmMapper, in region: SharedRegion) -> String? {
        guard let maps = coherentMappings(mapper.pid) else { return "process \(mapper.pid) ended" }
        var ranges: [(start: UInt64, end: UInt64, firstPage: UInt64)] = []
        for m in maps where m.object == region.object {
            if let e = Userfault.register(mapper.uffd, start: m.start, length: m.end - m.start) {
                return "cannot watch the shared memory of process \(mapper.pid): \(Posix.errorText(e))"
            }
            ranges.append((m.start, m.end, m.offset / Userfault.pageSize))
        }
        guard !ranges.isEmpty else { return nil }
        mapper.ranges[region.participant] = ranges
        if !region.mappers.contains(where: { $0 === mapper }) { region.mappers.append(mapper) }
        // Pages local processes may only read: those held for reading, and those held for writing that no
        // local process has written yet (their first write must fault).
        for (page, access) in region.node.access where access == .read || region.node.clean.contains(page) {
            for a in mapper.addresses(of: UInt64(page), in: region.participant) {
                _ = Userfault.writeProtect(
                    mapper.uffd, start: a, length: Userfault.pageSize, protect: true, wake: false)
            }
        }
        return nil
    }

    /// Home side of a fork: the child maps memory rforkd can keep coherent (shared anonymous memory, memfds, unlinked /dev/shm files). Makes each of its objects a region
    /// (registering every local process known to map it, the parent first), and says what the target
    /// must know; a reason instead when the memory cannot be kept coherent.
    func prepareSharedRegions(_ request: LocalForkRequest, localPID: Int32, uid: UInt32)
        -> Result<[Rfork_Wire_V1_SharedRegion], CheckpointError>
    {
        guard let maps = coherentMappings(localPID) else {
            return .failure(CheckpointError(.unmovable, "cannot read the memory map of process \(localPID)"))
        }
        if maps.isEmpty { return .success([]) }
        if request.migrate {
            // A running process moves with its shared memory: it gave its userfaultfd before asking (librfork
            // keeps none across CRIU), and makes a new one where it lands. Its own children would each hold
            // one CRIU cannot save.
            guard shared.mappers[localPID] != nil else {
                return .failure(
                    CheckpointError(
                        .unmovable,
                        "process \(request.pid) shares memory that rforkd does not watch (it gave no userfaultfd)"))
            }
            if Posix.hasChildren(localPID) {
                return .failure(
                    CheckpointError(
                        .unmovable,
                        "process \(request.pid) shares memory and has children; such a tree cannot move yet"))
            }
        } else {
            let parentPID = parentPID(of: localPID) ?? 0
            switch request.parentUserfault {
            case nil:
                return .failure(
                    CheckpointError(
                        .unmovable,
                        "the child shares memory with a parent whose memory rfork does not watch (no userfaultfd)"
                    ))
            case .error(let e)?:
                return .failure(
                    CheckpointError(
                        .unmovable,
                        "the child shares memory with a parent that could not make a userfaultfd (\(Posix.errorText(e))); \(Self.userfaultfdAdvice)"
                    ))
            case .descriptor(let fd)?:
                if case .failure(let e) = takeUserfault(pid: parentPID, fd: fd, uid: uid) { return .failure(e) }
            }
        }
        let parentPID = request.migrate ? 0 : parentPID(of: localPID) ?? 0
        var infos: [Rfork_Wire_V1_SharedRegion] = []
        for object in Set(maps.map(\.object)).sorted(by: { $0.inode < $1.inode }) {
            // (A process restored from a checkpoint that has given a userfaultfd since is watched.)
            // (The child asking is not one: it gives its userfaultfd once placed, here or where it goes. A
            // restored child fast enough to fork before rforkd heard it was restored was counted.)
            let unwatched = (shared.uncovered[object] ?? []).filter {
                Posix.processAlive(pidfd: $0)
                    && Posix.pid(ofPidfd: $0).map { $0 != localPID && shared.mappers[$0] == nil } ?? false
            }
            if !unwatched.isEmpty && shared.regions[participantName(object)] == nil {
                return .failure(
                    CheckpointError(
                        .unmovable,
                        "the child shares memory with a process that could not give rforkd a userfaultfd"
                    ))
            }
            guard let first = maps.first(where: { $0.object == object }) else { continue }
            let name = participantName(object)
            let region: SharedRegion
            if let existing = shared.regions[name], !existing.ended {
                region = existing
            } else {
                if let container = hostedSession(containing: localPID),
                    maps.contains(where: { m in
                        m.object == object && container.sharedRegions.contains { $0.start < m.end && m.start < $0.end }
                    })
                {
                    // Memory a child this node hosts brought from its home was made a participant when it
                    // attached: not one means it is not watched. Memory it mapped since it came is new, and
                    // this node manages it like a home (its children go on to other nodes with it).
                    return .failure(CheckpointError(.unmovable, "its shared memory is not watched on \(config.node)"))
                }
                let path =
                    "/proc/\(localPID)/map_files/\(String(first.start, radix: 16))-\(String(first.end, radix: 16))"
                let fd = open(path, O_RDWR | O_CLOEXEC)
                guard fd >= 0 else {
                    return .failure(
                        CheckpointError(.unmovable, "cannot open its shared memory: \(Posix.errorText(errno))"))
                }
                // Descriptors of it would read and write this node's copy only: reduced to O_PATH first.
                let holders = shared.mappers.values.filter { $0.uid == uid && $0.pid != localPID }.map(\.pid)
                if let why = sealDescriptors(of: object, in: holders) {
                    Posix.close(fd)
                    return .failure(CheckpointError(.unmovable, why))
                }
                var st = stat()
                fstat(fd, &st)
                region = SharedRegion(
                    participant: name, manager: name, object: object, objectFD: fd,
                    pages: (UInt64(st.st_size) + Userfault.pageSize - 1) / Userfault.pageSize, uid: uid,
                    hold: config.resolvedSharedMemoryHold)
                shared.regions[name] = region
                // Every local process known to map it, now watched: the parent and earlier children.
                for mapper in shared.mappers.values where mapper.uid == uid && mapper.pid != localPID {
                    if let why = register(mapper, in: region) {
                        logger.warning("shared memory: \(why)")
                    }
                }
                logger.info("shared memory \(name) (\(region.pages) pages) is now kept coherent across nodes")
            }
            if let parent = shared.mappers[parentPID], parent.ranges[region.participant] == nil {
                if let why = register(parent, in: region) { return .failure(CheckpointError(.unmovable, why)) }
            }
            for m in maps where m.object == object {
                var info = Rfork_Wire_V1_SharedRegion()
                info.manager = region.manager
                info.start = m.start
                info.end = m.end
                info.pageOffset = m.offset / Userfault.pageSize
                info.pages = region.pages
                infos.append(info)
            }
        }
        return .success(infos)
    }

    /// SHM_ATTACH: a process placed here (or restored here) gives its userfaultfd.
    func handleShmAttach(_ text: String, peerUID: UInt32?, peerPID: Int32?, from channel: Channel) {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        func answer(_ verdict: Verdict, _ why: String) {
            channel.writeAndFlush(LocalFrame.reply(verdict, why), promise: nil)
        }
        guard let pid = peerPID, let uid = peerUID else { return answer(.refused, "the caller cannot be identified") }
        // The caller's parent's userfaultfd, when the caller names it (a child kept here may be the only
        // one to: its parent forked no child placed elsewhere).
        if let fd = fields["puffd"].flatMap({ Int32($0) }), fd >= 0 {
            takeParentUserfault(.descriptor(fd), childPID: pid, uid: uid)
        } else if let e = fields["puffderr"].flatMap({ Int32($0) }) {
            takeParentUserfault(.error(e), childPID: pid, uid: uid)
        }
        let container = hostedSession(containing: pid)
        let restoredHere = container.map { !$0.sharedRegions.isEmpty } ?? false
        // A process rforkd cannot watch must not map memory that is already shared across nodes; for
        // memory that is not yet, it keeps that memory from ever being (see `uncovered`).
        func uncovered(_ why: String) {
            let maps = coherentMappings(pid) ?? []
            if maps.contains(where: { shared.regions[participantName($0.object)] != nil }) && !restoredHere {
                logger.error("shared memory: process \(pid) maps memory shared across nodes but \(why); ending it")
                if let pidfd = Posix.openProcess(pid) {
                    _ = Posix.signal(process: pidfd, SIGKILL)
                    Posix.close(pidfd)
                }
            } else {
                markUncovered(pid)
            }
            answer(.refused, why)
        }
        guard let fdText = fields["uffd"], let fd = Int32(fdText) else {
            let e = Int32(fields["uffderr"] ?? "") ?? 0
            let why = "no userfaultfd (\(Posix.errorText(e))); \(Self.userfaultfdAdvice)"
            if restoredHere { logger.warning("shared memory: process \(pid): \(why)") }
            return uncovered(why)
        }
        let mapper: ShmMapper
        switch takeUserfault(pid: pid, fd: fd, uid: uid) {
        case .success(let m): mapper = m
        case .failure(let e): return uncovered(e.message)
        }
        guard let maps = coherentMappings(pid) else { return answer(.refused, "process \(pid) ended") }
        // The objects it maps that are shared across nodes: librfork reduces its descriptors of them to
        // O_PATH before it goes on (see `sealDescriptors`).
        var seal: [UInt64] = []
        for object in Set(maps.map(\.object)).sorted(by: { $0.inode < $1.inode }) {
            let name = participantName(object)
            if let region = shared.regions[name], !region.ended {
                // Another user's memory cannot be mapped by this one without privilege; checked all the same.
                guard region.uid == uid else { return uncovered("the shared memory is another user's") }
                if let why = register(mapper, in: region) { return uncovered(why) }
                seal.append(object.inode)
                continue
            }
            // The restored child: its object becomes this node's participant of its home's region, empty
            // until pages come (the copy CRIU restored is from the time of the fork: stale).
            guard let container, let first = maps.first(where: { $0.object == object }),
                let info = container.sharedRegions.first(where: { $0.start <= first.start && first.start < $0.end })
            else { continue }
            let path = "/proc/\(pid)/map_files/\(String(first.start, radix: 16))-\(String(first.end, radix: 16))"
            let ofd = open(path, O_RDWR | O_CLOEXEC)
            guard ofd >= 0 else {
                return answer(.refused, "cannot open the shared memory here: \(Posix.errorText(errno))")
            }
            let region = SharedRegion(
                participant: name, manager: info.manager, object: object, objectFD: ofd, pages: info.pages, uid: uid,
                hold: config.resolvedSharedMemoryHold)
            if let e = Userfault.punch(ofd, offset: 0, length: info.pages * Userfault.pageSize) {
                Posix.close(ofd)
                return answer(.refused, "cannot empty the shared memory here: \(Posix.errorText(e))")
            }
            shared.regions[name] = region
            if let why = register(mapper, in: region) { return answer(.refused, why) }
            logger.info("shared memory \(name) joins \(info.manager) (\(info.pages) pages)")
            seal.append(object.inode)
        }
        answer(.attached, seal.isEmpty ? "" : "seal " + seal.map(String.init).joined(separator: " "))
    }

    // MARK: faults and messages

    func sharedFaults(_ batch: [(Int32, Userfault.Message)]) {
        for (uffd, message) in batch {
            guard case .fault(let address, let write, let wp) = message, let mapper = shared.mappersByUffd[uffd]
            else { continue }
            var found = false
            for (participant, page) in mapper.pages(at: address) {
                guard let region = shared.regions[participant] else { continue }
                found = true
                RforkMetrics.sharedFaults.increment()
                let actions = region.node.handle(.fault(page: Int(page), write: write || wp, now: nowSeconds))
                perform(actions, in: region, data: nil)
            }
            if !found {
                _ = Userfault.wake(uffd, start: address & ~(Userfault.pageSize - 1), length: Userfault.pageSize)
            }
        }
    }

    /// Carries out a coherence node's actions on the region's memory.
    func perform(_ actions: [CoherenceNode.Action], in region: SharedRegion, data: [UInt8]?) {
        let size = Userfault.pageSize
        for action in actions {
            switch action {
            case .send(let m):
                var bytes: [UInt8]? = nil
                if case .page(_, true) = m.body {
                    bytes = Userfault.readPage(region.objectFD, page: UInt64(m.page))
                    guard bytes != nil else {
                        // Never an empty page: the requester hears the page is lost (its processes end).
                        logger.error("shared memory \(region.participant): cannot read page \(m.page); it is lost")
                        sendCoherence(
                            Coherence.Message(page: m.page, from: m.from, to: m.to, body: .lost), region: region,
                            data: nil)
                        killMappers(region)
                        continue
                    }
                }
                sendCoherence(m, region: region, data: bytes)
            case .protect(let page):
                for mapper in region.mappers {
                    for a in mapper.addresses(of: UInt64(page), in: region.participant) {
                        _ = Userfault.writeProtect(mapper.uffd, start: a, length: size, protect: true, wake: false)
                    }
                }
            case .drop(let page):
                region.generation[page, default: 0] &+= 1
                if let e = Userfault.punch(region.objectFD, offset: UInt64(page) * size, length: size) {
                    logger.error("shared memory \(region.participant): cannot drop page \(page): \(Posix.errorText(e))")
                }
                // Another node is about to write the page: sleepers here wake now (not at the next scan).
                // After the punch, so that the word they read again is the next copy's, never this one.
                kickSleepers(region, page: UInt64(page))
            case .install(let page, let access, let withData):
                region.generation[page, default: 0] &+= 1
                let p = UInt64(page)
                // Protection first (markers on pages not yet mapped), then the bytes, then the waiters.
                for mapper in region.mappers {
                    for a in mapper.addresses(of: p, in: region.participant) {
                        _ = Userfault.writeProtect(
                            mapper.uffd, start: a, length: size, protect: access == .read, wake: false)
                    }
                }
                if withData {
                    if let data, let e = Userfault.writePage(region.objectFD, page: p, data, size: region.size) {
                        logger.error(
                            "shared memory \(region.participant): cannot install page \(page): \(Posix.errorText(e))")
                    }
                } else {
                    _ = Userfault.allocate(region.objectFD, offset: p * size, length: size)
                }
                wakeAll(region, page: p)
                wakeBlockedSleepers(region, page: page)
            case .wake(let page):
                let p = UInt64(page)
                // A hole on a node that holds the page is a page never written: zeros.
                _ = Userfault.allocate(region.objectFD, offset: p * size, length: size)
                if region.node.access(page) == .write && !region.node.clean.contains(page) {
                    for mapper in region.mappers {
                        for a in mapper.addresses(of: p, in: region.participant) {
                            _ = Userfault.writeProtect(mapper.uffd, start: a, length: size, protect: false, wake: false)
                        }
                    }
                }
                wakeAll(region, page: p)
                wakeBlockedSleepers(region, page: page)
            case .kill(let page, let reason):
                logger.error("shared memory \(region.participant): page \(page): \(reason); ending its processes")
                killMappers(region)
            case .killAll(let reason):
                logger.error("shared memory \(region.participant): \(reason); ending its processes")
                killMappers(region)
            case .timer(let at):
                let delay = max(0, at - nowSeconds)
                loop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9) + 1000)) { [weak self, weak region] in
                    guard let self, let region, !region.ended else { return }
                    self.perform(region.node.handle(.tick(now: self.nowSeconds)), in: region, data: nil)
                }
            }
        }
    }

    private func wakeAll(_ region: SharedRegion, page: UInt64) {
        for mapper in region.mappers {
            for a in mapper.addresses(of: page, in: region.participant) {
                _ = Userfault.wake(mapper.uffd, start: a, length: Userfault.pageSize)
            }
        }
    }

    private func killMappers(_ region: SharedRegion) {
        for mapper in region.mappers { _ = Posix.signal(process: mapper.pidfd, SIGKILL) }
    }

    func sendCoherence(_ m: Coherence.Message, region: SharedRegion, data: [UInt8]?) {
        if case .sent = m.body {
            // The manager's own copy went out: its directory hears it now, before any later request of
            // the node it went to can reach it.
            deliverCoherence(m, manager: region.manager, data: nil)
            return
        }
        let toNode = String(m.to.split(separator: "/").first ?? "")
        if toNode == config.node {
            loop.execute { [weak self] in self?.deliverCoherence(m, manager: region.manager, data: data) }
            return
        }
        var c = Rfork_Wire_V1_CoherenceMessage()
        c.manager = region.manager
        c.page = UInt64(m.page)
        c.from = m.from
        c.to = m.to
        switch m.body {
        case .request(let write):
            c.kind = .request
            c.write = write
        case .fetch(let requester, let write):
            c.kind = .fetch
            c.requester = requester
            c.write = write
        case .invalidate: c.kind = .invalidate
        case .invalidated: c.kind = .invalidated
        case .page(let write, let withData):
            c.kind = .page
            c.write = write
            c.withData = withData
            if let data { c.data = Data(data) }
        case .done(let write):
            c.kind = .done
            c.write = write
        case .lost: c.kind = .lost
        case .sent: return  // delivered above
        }
        var envelope = Envelope()
        envelope.body = .coherence(c)
        guard let port = wire(to: toNode) else {
            logger.warning("shared memory: no link to \(toNode) for \(m)")
            return
        }
        port.writeAndFlush(envelope, promise: nil)
    }

    /// A coherence message from a peer.
    func receivedCoherence(_ c: Rfork_Wire_V1_CoherenceMessage) {
        let body: Coherence.Message.Body
        switch c.kind {
        case .request: body = .request(write: c.write)
        case .fetch: body = .fetch(requester: c.requester, write: c.write)
        case .invalidate: body = .invalidate
        case .invalidated: body = .invalidated
        case .page: body = .page(write: c.write, withData: c.withData)
        case .done: body = .done(write: c.write)
        case .lost: body = .lost
        default: return
        }
        guard c.page < UInt64(Int.max) else { return }
        let m = Coherence.Message(page: Int(c.page), from: c.from, to: c.to, body: body)
        let data = c.withData ? [UInt8](c.data) : nil
        if c.withData && data?.count != Int(Userfault.pageSize) { return }
        if c.withData { RforkMetrics.sharedPagesIn.increment() }
        deliverCoherence(m, manager: c.manager, data: data)
    }

    func deliverCoherence(_ m: Coherence.Message, manager: String, data: [UInt8]?) {
        guard let region = shared.regions[m.to], !region.ended, region.manager == manager,
            UInt64(m.page) < region.pages
        else { return }
        if m.forManager {
            guard region.directory != nil else { return }
            region.participants.insert(m.from)
            let actions = region.directory?.handle(.received(m)) ?? []
            for case .send(let out) in actions { sendCoherence(out, region: region, data: nil) }
        } else {
            perform(region.node.handle(.received(m, now: nowSeconds)), in: region, data: data)
        }
    }

    /// A peer is given up: its participants' pages are lost where they held the only copy; regions it
    /// managed are gone, and so are the processes that map them here.
    func sharedMemoryNodeLost(_ peer: String) {
        for region in shared.regions.values where !region.ended {
            if region.manager.hasPrefix(peer + "/") {
                perform(region.node.handle(.managerLost), in: region, data: nil)
            } else if region.directory != nil {
                for p in region.participants where p.hasPrefix(peer + "/") {
                    let actions = region.directory?.handle(.nodeLost(p)) ?? []
                    for case .send(let out) in actions { sendCoherence(out, region: region, data: nil) }
                }
            }
        }
    }

    func receivedRegionEnd(_ end: Rfork_Wire_V1_RegionEnd) {
        guard let region = shared.regions[end.participant], region.manager == end.manager else { return }
        let alive = region.mappers.filter { Posix.processAlive(pidfd: $0.pidfd) }
        if !alive.isEmpty {
            // Their home let the memory go while they still map it: they must not run on unwatched.
            logger.error(
                "shared memory \(region.participant): its home \(region.manager) ended it while \(alive.count) process(es) here still map it; ending them"
            )
            killMappers(region)
        }
        endRegion(region)
    }

    private func endRegion(_ region: SharedRegion) {
        guard !region.ended else { return }
        region.ended = true
        shared.regions[region.participant] = nil
        for mapper in region.mappers { mapper.ranges[region.participant] = nil }
        if let mapping = region.wakeMapping {
            munmap(mapping, Int(region.pages * Userfault.pageSize))
            region.wakeMapping = nil
        }
        region.wakeOnInstall = [:]
        Posix.close(region.objectFD)
        if region.directory != nil {
            for p in region.participants where p != region.participant {
                var e = Rfork_Wire_V1_RegionEnd()
                e.manager = region.manager
                e.participant = p
                var envelope = Envelope()
                envelope.body = .regionEnd(e)
                wire(to: String(p.split(separator: "/").first ?? ""))?.writeAndFlush(envelope, promise: nil)
            }
        }
        logger.info("shared memory \(region.participant) is no longer shared")
    }

    private func dropMapper(_ mapper: ShmMapper) {
        shared.mappers[mapper.pid] = nil
        shared.mappersByUffd[mapper.uffd] = nil
        for region in shared.regions.values { region.mappers.removeAll { $0 === mapper } }
        shared.reader?.retire(mapper.uffd)
        Posix.close(mapper.pidfd)
    }

    /// Once a second: processes that ended let go of their userfaultfds; a region no process maps any
    /// more on its home, with no child of it running elsewhere, ends everywhere.
    func sweepSharedMemory() {
        for mapper in shared.mappers.values where !Posix.processAlive(pidfd: mapper.pidfd) { dropMapper(mapper) }
        for (object, pidfds) in shared.uncovered {
            var alive: [Int32] = []
            for fd in pidfds {
                if Posix.processAlive(pidfd: fd) { alive.append(fd) } else { Posix.close(fd) }
            }
            shared.uncovered[object] = alive.isEmpty ? nil : alive
        }
        for region in shared.regions.values {
            if region.directory != nil {
                region.sessions = region.sessions.filter { sessions.home[$0] != nil }
                if region.mappers.isEmpty && region.sessions.isEmpty { endRegion(region) }
            } else if region.mappers.isEmpty && region.node.pending.isEmpty
                && region.node.access.values.allSatisfy({ $0 == .none })
            {
                // A participant whose processes ended holding no page: nobody will ask it for anything.
                endRegion(region)
            }
        }
    }

    /// How often processes asleep on a futex in shared memory are checked (see `kickFutexWaiters`).
    static let futexScanInterval = TimeAmount.milliseconds(20)

    /// Futexes across nodes. A futex wake reaches only the waker's node, so a process asleep on a futex
    /// word in shared memory would miss a wake from another node. But a value written on another node
    /// reaches this node only by way of this node's copy of its page being dropped (and perhaps fetched
    /// again): so every sleeper whose page changed generation since it was seen asleep is interrupted
    /// (librfork's no-op handler of `LocalWire.kickSignal`, with SA_RESTART); the kernel then restarts its
    /// wait, which reads the word again and returns if it changed. A sleeper first seen is interrupted
    /// once, as its wake may already have been missed. Spurious wake-ups are allowed by the futex
    /// contract; lost ones never happen, at the cost of up to `futexScanInterval` of latency.
    /// The word and operation of a thread asleep in futex(2), from `/proc/PID/task/TID/syscall`
    /// ("202 0xUADDR 0xOP ..."), or nil if it is not (running, or in another call).
    static func futexWait(pid: Int32, tid: Int32) -> (address: UInt64, op: UInt64)? {
        guard let bytes = try? Posix.readFile("/proc/\(pid)/task/\(tid)/syscall") else { return nil }
        let fields = String(decoding: bytes, as: UTF8.self).split(separator: " ")
        guard fields.count >= 3, fields[0] == "202", let address = UInt64(fields[1].dropFirst(2), radix: 16),
            let op = UInt64(fields[2].dropFirst(2), radix: 16)
        else { return nil }
        return (address, op)
    }

    func kickFutexWaiters() {
        guard !shared.regions.isEmpty else {
            shared.futexWaiters = [:]
            return
        }
        var seen: [String: FutexSleeper] = [:]
        for mapper in shared.mappers.values where !mapper.ranges.isEmpty {
            for task in Posix.listDirectory("/proc/\(mapper.pid)/task") {
                guard Posix.processAlive(pidfd: mapper.pidfd), let tid = Int32(task),
                    let (address, op) = Self.futexWait(pid: mapper.pid, tid: tid)
                else { continue }
                // Shared (not private) waits: FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_LOCK_PI, FUTEX_WAIT_REQUEUE_PI.
                guard op & 128 == 0, [0, 6, 9, 11].contains(op & 127) else { continue }
                for (participant, page) in mapper.pages(at: address) {
                    guard let region = shared.regions[participant] else { continue }
                    let generation = region.generation[Int(page), default: 0]
                    let key = "\(mapper.pid)/\(tid)/\(address)"
                    if shared.futexWaiters[key]?.generation != generation {
                        if Posix.threadBlocks(pid: mapper.pid, tid: tid, LocalWire.kickSignal) {
                            wakeBlockedSleeper(region, page: page, address: address)
                        } else if Posix.signalThread(pid: mapper.pid, tid: tid, LocalWire.kickSignal) {
                            RforkMetrics.futexKicks.increment()
                        }
                    }
                    seen[key] = FutexSleeper(
                        generation: generation, participant: participant, page: page, pid: mapper.pid, tid: tid,
                        address: address)
                }
            }
        }
        shared.futexWaiters = seen
    }

    /// The sleepers last seen on `page` of `region`, still asleep in futex(2) on the same word, are
    /// interrupted now: this node's copy of the page is being dropped because another node writes it
    /// (a `sem_post`, an unlock), so their wait restarts, faults the page back in and reads the new value.
    /// Each counts as kicked at the page's new generation (the next scan does not kick it again): a sleeper
    /// that reads the old value once more holds a copy again, which the writer's write must drop again,
    /// which kicks it again, so no wake is lost.
    func kickSleepers(_ region: SharedRegion, page: UInt64) {
        let generation = region.generation[Int(page), default: 0]
        for (key, sleeper) in shared.futexWaiters
        where sleeper.participant == region.participant && sleeper.page == page {
            guard Self.futexWait(pid: sleeper.pid, tid: sleeper.tid)?.address == sleeper.address else { continue }
            if Posix.threadBlocks(pid: sleeper.pid, tid: sleeper.tid, LocalWire.kickSignal) {
                wakeBlockedSleeper(region, page: page, address: sleeper.address)
            } else if Posix.signalThread(pid: sleeper.pid, tid: sleeper.tid, LocalWire.kickSignal) {
                RforkMetrics.futexKicks.increment()
            }
            shared.futexWaiters[key]?.generation = generation
        }
    }

    /// A sleeper that blocks signal 61 (a thread that blocks every signal, to `sigwait`) cannot be
    /// interrupted: it is woken by a futex wake through rforkd's own mapping of the object instead. The
    /// kernel keys a shared futex word by object and offset, so that wake reaches every local waiter on
    /// the word, in any process. But the mapping must never touch a page this node does not hold (the
    /// kernel would fill the hole with zeros, under every local process, unwatched): a page held here is
    /// woken at once; a page dropped (another node writes it) is first asked for again, for reading, as
    /// the sleeper's own wait would once interrupted, and woken when it is installed. Its wait then reads
    /// the new copy; if that is still the old value, the writer's write drops this copy again, which wakes
    /// it again: no wake is lost (spurious ones are allowed by the futex contract).
    func wakeBlockedSleeper(_ region: SharedRegion, page: UInt64, address: UInt64) {
        let offset = page * Userfault.pageSize + address % Userfault.pageSize
        let p = Int(page)
        if region.node.access(p) > .none && region.node.pending[p] == nil {
            wakeThroughObject(region, offsets: [offset])
            return
        }
        let asked = region.wakeOnInstall[p] != nil
        region.wakeOnInstall[p, default: []].insert(offset)
        guard !asked else { return }
        // After the actions under way (the drop's acknowledgement goes first).
        loop.execute { [weak self, weak region] in
            guard let self, let region, !region.ended else { return }
            if region.node.access(p) > .none && region.node.pending[p] == nil {
                self.wakeBlockedSleepers(region, page: p)
            } else {
                self.perform(
                    region.node.handle(.fault(page: p, write: false, now: self.nowSeconds)), in: region, data: nil)
            }
        }
    }

    /// The page is here again: the blocked sleepers waiting for it are woken.
    func wakeBlockedSleepers(_ region: SharedRegion, page: Int) {
        guard let offsets = region.wakeOnInstall.removeValue(forKey: page) else { return }
        wakeThroughObject(region, offsets: offsets)
    }

    private func wakeThroughObject(_ region: SharedRegion, offsets: Set<UInt64>) {
        if region.wakeMapping == nil, region.pages > 0 {
            let m = mmap(nil, Int(region.pages * Userfault.pageSize), PROT_READ, MAP_SHARED, region.objectFD, 0)
            if m == MAP_FAILED || m == nil {
                logger.error(
                    "shared memory \(region.participant): cannot map it to wake a waiter: \(Posix.errorText(errno))")
                return
            }
            region.wakeMapping = m
        }
        guard let base = region.wakeMapping else { return }
        for offset in offsets where offset + 4 <= region.size {
            if Posix.futexWakeShared(UnsafeRawPointer(base + Int(offset))) != nil {
                RforkMetrics.futexKicks.increment()
            }
        }
    }
}
