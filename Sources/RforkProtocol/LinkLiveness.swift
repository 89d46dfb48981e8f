/// When one end of a peer link gives the link up, and when it replaces its connection: the failure rule
/// both ends follow, pure (the daemon tells it what arrived and asks it every 100 ms; it says what to do).
///
/// Two clocks per link end. `lastHeard`: the last time anything arrived on the connection that carries
/// the link. `confirmed`: since when both ways of the link are known to work. Every 200 ms each end sends
/// a pulse with its own clock (`stamp`) and the newest stamp it has had from the other end (`echo`), and
/// an end that gets one of its own stamps back has had a round trip that began then.
///
/// - A connection silent for half of `peerTimeout` is replaced (the link is suspended from the moment it
///   went silent, and a new connection may resume it).
/// - The end that hosts children for the other (`host`) gives the link up, and ends those children, when
///   it had no round trip for `peerTimeout` + `confirmSlack`.
/// - Their home (`home`) gives it up, and tells their parents they were killed, when it had no round trip
///   for `peerTimeout` + `fenceMargin`, or was suspended for as long.
///
/// A round trip needs both ways, so a cut of either way, or both, stops both ends' confirmations at the
/// same moment (at most two pulses apart): the host always ends the children before the home reports
/// them. Words heard would not do: with packets lost one way only, one end goes on hearing the other
/// until TCP stalls for want of acknowledgements (about a second, measured), which is how the home once
/// reported a child that its host still ran.
public struct LinkLiveness: Sendable, Equatable {
    public enum Role: Sendable, Equatable {
        /// This node opened the link: it is home of the children the link carries.
        case home
        /// The peer opened it: this node hosts children for it.
        case host
    }

    public struct Configuration: Sendable, Equatable {
        /// `peerTimeoutSeconds`, in nanoseconds.
        public var peerTimeout: UInt64
        /// How much later than `peerTimeout` the home gives a link up: the parent is told within
        /// `peerTimeout` + 2 s of a cut.
        public var fenceMargin: UInt64
        /// How much later than `peerTimeout` the host gives a link up: the newest confirmation is up to two
        /// pulses old while the link works, so a link down for less than `peerTimeout` is not given up.
        public var confirmSlack: UInt64

        public init(
            peerTimeout: UInt64, fenceMargin: UInt64 = 1_500_000_000, confirmSlack: UInt64 = 500_000_000
        ) {
            self.peerTimeout = peerTimeout
            self.fenceMargin = fenceMargin
            self.confirmSlack = confirmSlack
        }
    }

    /// How often each end pulses.
    public static let pulseInterval: UInt64 = 200_000_000

    public let role: Role
    public private(set) var lastHeard: UInt64
    public private(set) var confirmed: UInt64
    /// The newest stamp the other end sent: echoed in this end's next pulse.
    public private(set) var peerStamp: UInt64 = 0

    public init(role: Role, now: UInt64) {
        self.role = role
        lastHeard = now
        confirmed = now
    }

    /// Something arrived on the connection that carries the link.
    public mutating func heard(now: UInt64) { lastHeard = max(lastHeard, now) }

    /// A pulse arrived: the other end's `stamp`, and `echo`, one of this end's own stamps (0: none yet). A
    /// stamp from the future, which no peer can rightly send, counts as now.
    public mutating func pulse(stamp: UInt64, echo: UInt64, now: UInt64) {
        heard(now: now)
        if stamp != 0 { peerStamp = stamp }
        if echo != 0 { confirmed = max(confirmed, min(echo, now)) }
    }

    /// A connection was greeted (new or resumed), or a link closed for want of use is connecting again:
    /// both clocks start now.
    public mutating func started(now: UInt64) {
        lastHeard = now
        confirmed = now
    }

    public struct Verdict: Sendable, Equatable {
        /// Close the connection and suspend the link from this time (a new connection may resume it).
        public var reconnectFrom: UInt64?
        /// Give the link up.
        public var giveUp: Bool

        public init(reconnectFrom: UInt64? = nil, giveUp: Bool = false) {
            self.reconnectFrom = reconnectFrom
            self.giveUp = giveUp
        }
    }

    /// What to do now. `connected`: a connection carries the link; `suspendedSince`: it waits for one to
    /// resume since then (neither: given up, or closed for want of use, and nothing to judge).
    public func check(now: UInt64, connected: Bool, suspendedSince: UInt64?, _ configuration: Configuration)
        -> Verdict
    {
        let timeout = configuration.peerTimeout
        var verdict = Verdict()
        var suspended = suspendedSince
        if connected, now - min(now, lastHeard) > timeout / 2 {
            verdict.reconnectFrom = lastHeard
            suspended = lastHeard
        }
        guard connected || suspended != nil else { return verdict }
        switch role {
        case .host:
            verdict.giveUp = now - min(now, confirmed) > timeout + configuration.confirmSlack
        case .home:
            let bound = timeout + configuration.fenceMargin
            verdict.giveUp =
                now - min(now, confirmed) > bound || suspended.map { now - min(now, $0) > bound } ?? false
        }
        return verdict
    }
}
