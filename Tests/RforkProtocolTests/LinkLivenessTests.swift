import RforkProtocol
import Testing

private let s: UInt64 = 1_000_000_000
private let ms: UInt64 = 1_000_000

@Suite("Link liveness: when a link is given up")
struct LinkLivenessTests {
    let rule = LinkLiveness.Configuration(peerTimeout: 10 * s)

    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var role: LinkLiveness.Role
        var heardAgo: UInt64
        var confirmedAgo: UInt64
        var connected: Bool
        var suspendedAgo: UInt64?
        var reconnects: Bool
        var givesUp: Bool
        var description: String { name }
    }

    static let cases: [Case] = [
        .init(
            name: "a working link", role: .home, heardAgo: 100 * ms, confirmedAgo: 300 * ms, connected: true,
            suspendedAgo: nil, reconnects: false, givesUp: false),
        .init(
            name: "silent for half the timeout: a new connection", role: .home, heardAgo: 5100 * ms,
            confirmedAgo: 5300 * ms, connected: true, suspendedAgo: nil, reconnects: true, givesUp: false),
        .init(
            name: "the host still hears its home but has had no round trip for 10.5 s: gives up", role: .host,
            heardAgo: 200 * ms, confirmedAgo: 10_600 * ms, connected: true, suspendedAgo: nil, reconnects: false,
            givesUp: true),
        .init(
            name: "the home at the same point waits (its margin is 1.5 s)", role: .home, heardAgo: 200 * ms,
            confirmedAgo: 10_600 * ms, connected: true, suspendedAgo: nil, reconnects: false, givesUp: false),
        .init(
            name: "the home after 11.5 s without a round trip: gives up", role: .home, heardAgo: 200 * ms,
            confirmedAgo: 11_600 * ms, connected: true, suspendedAgo: nil, reconnects: false, givesUp: true),
        .init(
            name: "a home suspended for 11.5 s gives up", role: .home, heardAgo: 11_600 * ms,
            confirmedAgo: 11_000 * ms, connected: false, suspendedAgo: 11_600 * ms, reconnects: false, givesUp: true),
        .init(
            name: "a host suspended for 9 s waits", role: .host, heardAgo: 9 * s, confirmedAgo: 9200 * ms,
            connected: false, suspendedAgo: 9 * s, reconnects: false, givesUp: false),
        .init(
            name: "given up or closed for want of use: nothing to judge", role: .host, heardAgo: 60 * s,
            confirmedAgo: 60 * s, connected: false, suspendedAgo: nil, reconnects: false, givesUp: false),
    ]

    @Test(arguments: cases)
    func verdicts(_ c: Case) {
        let now: UInt64 = 1000 * s
        var liveness = LinkLiveness(role: c.role, now: now - c.confirmedAgo)
        liveness.pulse(stamp: 7, echo: now - c.confirmedAgo, now: now - c.heardAgo)
        let verdict = liveness.check(
            now: now, connected: c.connected, suspendedSince: c.suspendedAgo.map { now - $0 }, rule)
        #expect((verdict.reconnectFrom != nil) == c.reconnects)
        #expect(verdict.giveUp == c.givesUp)
        if c.reconnects { #expect(verdict.reconnectFrom == now - c.heardAgo) }
    }

    @Test func pulsesEchoAndStampsFromTheFutureCountAsNow() {
        var liveness = LinkLiveness(role: .home, now: 10 * s)
        liveness.pulse(stamp: 42, echo: 0, now: 11 * s)
        #expect(liveness.peerStamp == 42 && liveness.confirmed == 10 * s && liveness.lastHeard == 11 * s)
        liveness.pulse(stamp: 43, echo: 12 * s, now: 11 * s)
        #expect(liveness.confirmed == 11 * s)
        liveness.pulse(stamp: 44, echo: 10 * s, now: 12 * s)  // an older echo changes nothing
        #expect(liveness.confirmed == 11 * s && liveness.peerStamp == 44)
    }

    /// Both ends of one link pulse every 200 ms (at different phases), messages take 1 ms; at 30 s the link
    /// is cut both ways or one way. The way left open delivers on for `stall` (TCP stops delivering once
    /// its acknowledgements are missed; forever stands for a path that would not). A cut that lasts
    /// `duration` then heals, and an end that dropped its connection connects again 500 ms later.
    /// Returns when each end gave the link up (nil: it did not).
    func simulate(
        cutHomeToHost: Bool, cutHostToHome: Bool, stall: UInt64, duration: UInt64, homePhase: UInt64,
        hostPhase: UInt64
    ) -> (home: UInt64?, host: UInt64?) {
        let step = 10 * ms
        let cut = 30 * s
        let heal = cut + duration
        var home = LinkLiveness(role: .home, now: 0)
        var host = LinkLiveness(role: .host, now: 0)
        var homeConnected = true
        var hostConnected = true
        var homeSuspended: UInt64?
        var hostSuspended: UInt64?
        var homeGaveUp: UInt64?
        var hostGaveUp: UInt64?
        var inFlight: [(at: UInt64, toHost: Bool, stamp: UInt64, echo: UInt64)] = []
        func open(toHost: Bool, at t: UInt64) -> Bool {
            guard t >= cut && t < heal else { return true }
            let isCut = toHost ? cutHomeToHost : cutHostToHome
            return !isCut && (t - cut < stall)
        }
        var t: UInt64 = 0
        while t < 60 * s {
            for m in inFlight where m.at <= t {
                if m.toHost {
                    if hostConnected && hostGaveUp == nil { host.pulse(stamp: m.stamp, echo: m.echo, now: t) }
                } else if homeConnected && homeGaveUp == nil {
                    home.pulse(stamp: m.stamp, echo: m.echo, now: t)
                }
            }
            inFlight.removeAll { $0.at <= t }
            if t % LinkLiveness.pulseInterval == homePhase, homeConnected, open(toHost: true, at: t) {
                inFlight.append((t + ms, true, t, home.peerStamp))
            }
            if t % LinkLiveness.pulseInterval == hostPhase, hostConnected, open(toHost: false, at: t) {
                inFlight.append((t + ms, false, t, host.peerStamp))
            }
            if t >= heal + 500 * ms, !homeConnected || !hostConnected, homeGaveUp == nil, hostGaveUp == nil {
                home.started(now: t)
                host.started(now: t)
                (homeConnected, hostConnected, homeSuspended, hostSuspended) = (true, true, nil, nil)
            }
            if t % (100 * ms) == 0 {
                if homeGaveUp == nil {
                    let v = home.check(now: t, connected: homeConnected, suspendedSince: homeSuspended, rule)
                    if let from = v.reconnectFrom { (homeConnected, homeSuspended) = (false, from) }
                    if v.giveUp { homeGaveUp = t }
                }
                if hostGaveUp == nil {
                    let v = host.check(now: t, connected: hostConnected, suspendedSince: hostSuspended, rule)
                    if let from = v.reconnectFrom { (hostConnected, hostSuspended) = (false, from) }
                    if v.giveUp { hostGaveUp = t }
                }
            }
            t += step
        }
        return (homeGaveUp.map { $0 - cut }, hostGaveUp.map { $0 - cut })
    }

    @Test func aLongCutEitherWayEndsTheChildrenBeforeTheirHomeReportsThem() {
        for (toHost, toHome) in [(true, true), (true, false), (false, true)] {
            for stall: UInt64 in [0, 1 * s, 60 * s] {
                for phase in stride(from: UInt64(0), to: 200 * ms, by: Int(50 * ms)) {
                    let (home, host) = simulate(
                        cutHomeToHost: toHost, cutHostToHome: toHome, stall: stall, duration: 25 * s,
                        homePhase: phase, hostPhase: (phase + 130 * ms) % (200 * ms))
                    let what = "cut \(toHost ? "home→host" : "")\(toHome ? " host→home" : ""), stall \(stall / ms) ms"
                    guard let home, let host else {
                        Issue.record(
                            "\(what): home gave up after \(home.map { $0 / ms } ?? 0) ms, host \(host.map { $0 / ms } ?? 0)"
                        )
                        continue
                    }
                    #expect(
                        host < home, "\(what): the host gave up \(host / ms) ms after the cut, the home \(home / ms)")
                    #expect(home <= 12 * s, "\(what): the home reported \(home / ms) ms after the cut")
                    #expect(host >= 10 * s, "\(what): the host gave up \(host / ms) ms after the cut")
                }
            }
        }
    }

    @Test func aCutShorterThanTheTimeoutOnlyDelays() {
        for (toHost, toHome) in [(true, true), (true, false), (false, true)] {
            for stall: UInt64 in [0, 60 * s] {
                let (home, host) = simulate(
                    cutHomeToHost: toHost, cutHostToHome: toHome, stall: stall, duration: 9500 * ms, homePhase: 0,
                    hostPhase: 130 * ms)
                #expect(
                    home == nil && host == nil,
                    "a 9.5 s cut: home \(String(describing: home)), host \(String(describing: host))")
            }
        }
    }
}
