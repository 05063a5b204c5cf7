//! Probe flows of both families through plain kernel routers (no dcmesh): a probe to a
//! reachable host arrives with the TTL / hop limit its two routers left, and a probe
//! into a real forwarding loop (two routers whose static routes point at each other)
//! comes back as an ICMP / ICMPv6 time-exceeded error that the source's listeners decode
//! to the right flow, sequence number, send time and router address. Needs root.
//!
//! ```text
//!   src eth0 ── s0 r1 p0 ── p0 r2 d0 ── eth0 dst
//!   10.1.0.2       10.12.0.1    10.12.0.2    10.2.0.2
//!   fd00:1::2      fd00:12::1   fd00:12::2   fd00:2::2
//! ```
//! 10.99.0.0/24 and fd00:99::/64 are routed by r1 to r2 and by r2 back to r1.
mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use dcmesh_testbed::{
    netns,
    probe::{self, Family, FlowRec, FlowSpec, Probes, PROBE_PORT},
    Netns,
};

struct Net {
    src: Netns,
    _r1: Netns,
    _r2: Netns,
    dst: Netns,
}

fn build() -> Net {
    let src = Netns::create("pl-src").unwrap();
    let r1 = Netns::create("pl-r1").unwrap();
    let r2 = Netns::create("pl-r2").unwrap();
    let dst = Netns::create("pl-dst").unwrap();
    for ns in [&src, &r1, &r2, &dst] {
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0").unwrap();
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0").unwrap();
    }
    for r in [&r1, &r2] {
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // Every expiry gets its error: the default limits would drop most.
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv6.icmp.ratelimit", "0"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
        ] {
            r.sysctl(k, v).unwrap();
        }
    }
    netns::veth(&src, "eth0", &r1, "s0").unwrap();
    netns::veth(&r1, "p0", &r2, "p0").unwrap();
    netns::veth(&r2, "d0", &dst, "eth0").unwrap();
    src.ip_batch(&[
        "addr add 10.1.0.2/24 dev eth0".into(),
        "addr add fd00:1::2/64 dev eth0 nodad".into(),
        "route add default via 10.1.0.1".into(),
        "route add default via fd00:1::1".into(),
    ])
    .unwrap();
    dst.ip_batch(&[
        "addr add 10.2.0.2/24 dev eth0".into(),
        "addr add fd00:2::2/64 dev eth0 nodad".into(),
        "route add default via 10.2.0.1".into(),
        "route add default via fd00:2::1".into(),
    ])
    .unwrap();
    r1.ip_batch(&[
        "addr add 10.1.0.1/24 dev s0".into(),
        "addr add fd00:1::1/64 dev s0 nodad".into(),
        "addr add 10.12.0.1/24 dev p0".into(),
        "addr add fd00:12::1/64 dev p0 nodad".into(),
        "route add 10.2.0.0/24 via 10.12.0.2".into(),
        "route add fd00:2::/64 via fd00:12::2".into(),
        "route add 10.99.0.0/24 via 10.12.0.2".into(),
        "route add fd00:99::/64 via fd00:12::2".into(),
    ])
    .unwrap();
    r2.ip_batch(&[
        "addr add 10.12.0.2/24 dev p0".into(),
        "addr add fd00:12::2/64 dev p0 nodad".into(),
        "addr add 10.2.0.1/24 dev d0".into(),
        "addr add fd00:2::1/64 dev d0 nodad".into(),
        "route add 10.1.0.0/24 via 10.12.0.1".into(),
        "route add fd00:1::/64 via fd00:12::1".into(),
        "route add 10.99.0.0/24 via 10.12.0.1".into(),
        "route add fd00:99::/64 via fd00:12::1".into(),
    ])
    .unwrap();
    Net {
        src,
        _r1: r1,
        _r2: r2,
        dst,
    }
}

/// Waits until `done` holds for the running probes (at most 30 s; not a timing
/// assertion, just a bound on a hung test).
fn wait_until(p: &Probes, done: impl Fn(&[FlowRec]) -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if done(&p.records()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hop_counts_and_loop_expiries_of_both_families() {
    common::require_root();
    let net = build();
    let dests: [SocketAddr; 4] = [
        (Ipv4Addr::new(10, 2, 0, 2), PROBE_PORT).into(),
        (Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 2), PROBE_PORT).into(),
        (Ipv4Addr::new(10, 99, 0, 2), PROBE_PORT).into(),
        (Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2), PROBE_PORT).into(),
    ];
    let flows: Vec<FlowSpec> = dests
        .iter()
        .map(|&dst| FlowSpec {
            from: 0,
            to: 1,
            rate: 50,
            dst,
        })
        .collect();
    let senders: Vec<UdpSocket> = flows
        .iter()
        .map(|f| {
            net.src
                .enter(|| probe::sender(f.family()))
                .unwrap()
                .unwrap()
        })
        .collect();
    let receivers: Vec<(usize, UdpSocket)> = dests[..2]
        .iter()
        .map(|&a| (1, net.dst.enter(|| UdpSocket::bind(a)).unwrap().unwrap()))
        .collect();
    let icmp = [Family::V4, Family::V6]
        .into_iter()
        .map(|fam| {
            (
                fam,
                net.src.enter(|| probe::listener(fam)).unwrap().unwrap(),
            )
        })
        .collect();
    let probes = Probes::start(flows, senders, receivers, icmp, Instant::now()).unwrap();
    // Enough of each kind that neighbour discovery's first losses do not matter.
    wait_until(&probes, |r| {
        r[..2].iter().all(|f| f.recv.iter().flatten().count() >= 10)
            && r[2..].iter().all(|f| f.expired.len() >= 10)
    });
    let recs = probes.stop(Duration::from_millis(300));

    for (fam, r) in ["v4", "v6"].iter().zip(&recs[..2]) {
        let got: Vec<_> = r.recv.iter().flatten().collect();
        assert!(got.len() >= 10, "{fam}: only {} delivered", got.len());
        for x in got {
            assert_eq!(x.hops(), Some(2), "{fam}: two routers on the way");
        }
        assert!(r.expired.is_empty(), "{fam}: {:?}", r.expired);
    }
    let routers = [
        IpAddr::V4(Ipv4Addr::new(10, 12, 0, 2)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x12, 0, 0, 0, 0, 0, 2)),
    ];
    for ((fam, r), router) in ["v4", "v6"].iter().zip(&recs[2..]).zip(routers) {
        assert!(
            r.recv.iter().flatten().next().is_none(),
            "{fam}: a looped probe arrived"
        );
        assert!(
            r.expired.len() >= 10,
            "{fam}: {} time-exceeded errors decoded for {} probes sent",
            r.expired.len(),
            r.sent.len()
        );
        let mut seqs = Vec::new();
        for e in &r.expired {
            // Hop limit 64, two routers: r1 sees even values, r2 the odd ones down to 1.
            assert_eq!(e.router, router, "{fam}: error from the wrong router");
            let sent = r.sent.get(e.seq as usize).copied();
            assert_eq!(sent, Some(e.sent_ns), "{fam}: seq {} send time", e.seq);
            assert!(e.at_ns >= e.sent_ns, "{fam}: error before its probe");
            seqs.push(e.seq);
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), r.expired.len(), "{fam}: one error per probe");
    }
}
