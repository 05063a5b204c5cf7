//! Table-driven BPF_PROG_TEST_RUN fixtures for the XDP forwarding program: each case an input
//! frame, the verdict, the exact output frame, and the one counter that must move.

mod common;

use std::net::Ipv6Addr;

use common::*;
use dcmesh_loader::{Datapath, IpNet, NextHopSpec, RouteTarget, Tables};
use dcmesh_schema::Counter;

const NH_MAC: [[u8; 6]; 6] = [
    [0; 6],
    [0x02, 0x11, 0, 0, 0, 1],
    [0x02, 0x11, 0, 0, 0, 2],
    [0x02, 0x11, 0, 0, 0, 3],
    [0x02, 0x11, 0, 0, 0, 4],
    [0x02, 0x11, 0, 0, 0, 5],
];
const EGRESS_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// A datapath with next hops 1..=5 (egress `lo`, distinct neighbour MACs) and a route table
/// exercising longest-prefix choice in both families.
fn datapath() -> Datapath {
    require_root();
    let mut dp = Datapath::load(None).expect("load forwarding program");
    let t = dp.tables();
    for id in 1..=5u32 {
        t.set_nexthop(
            id,
            NextHopSpec {
                ifindex: 1,
                src_mac: EGRESS_MAC,
                dst_mac: NH_MAC[id as usize],
                mtu: if id == 5 { 100 } else { 1500 },
            },
        )
        .unwrap();
    }
    let via = |id| RouteTarget::Via { id, alt: None };
    for (p, tgt) in [
        ("10.0.0.0/8", via(1)),
        ("10.1.0.0/16", via(2)),
        ("10.1.2.0/24", via(3)),
        ("10.1.2.3/32", via(4)),
        ("10.5.0.0/16", via(5)),
        ("10.200.0.1/32", RouteTarget::Local),
        ("10.201.0.0/16", RouteTarget::Kernel),
        ("10.202.0.0/16", RouteTarget::Blackhole),
        ("2001:db8::/32", via(1)),
        ("2001:db8:1::/48", via(2)),
        ("2001:db8:1:2::/64", via(3)),
        ("2001:db8:1:2::3/128", via(4)),
        ("2001:db8:5::/48", via(5)),
        ("2001:db8:200::1/128", RouteTarget::Local),
    ] {
        t.set_route(net(p), tgt).unwrap();
    }
    dp
}

#[derive(Debug)]
enum Expect {
    /// Redirected with next hop `n`'s MACs, TTL lowered, checksum recomputed.
    Forward(usize),
    /// Passed to the kernel untouched.
    Pass,
    /// Dropped untouched.
    Drop,
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: Expect,
    counter: Counter,
}

fn case(name: &'static str, frame: Vec<u8>, expect: Expect, counter: Counter) -> Case {
    Case {
        name,
        frame,
        expect,
        counter,
    }
}

/// Runs every case and checks verdict, output frame and counters.
fn check(dp: &mut Datapath, cases: Vec<Case>) {
    for c in cases {
        let before = dp.tables().counters().unwrap();
        let (verdict, out) = run(dp.program().unwrap(), &c.frame);
        let after = dp.tables().counters().unwrap();
        let (want_verdict, want_frame) = match c.expect {
            Expect::Forward(nh) => (XDP_REDIRECT, forwarded(&c.frame, EGRESS_MAC, NH_MAC[nh])),
            Expect::Pass => (XDP_PASS, c.frame.clone()),
            Expect::Drop => (XDP_DROP, c.frame.clone()),
        };
        assert_eq!(verdict, want_verdict, "{}: verdict", c.name);
        assert_eq!(out, want_frame, "{}: output frame", c.name);
        let delta = after.since(&before);
        assert_eq!(delta.total(), 1, "{}: exactly one counter moves", c.name);
        assert_eq!(
            delta.get(c.counter).packets,
            1,
            "{}: counter {} must move",
            c.name,
            c.counter.name()
        );
        assert_eq!(
            delta.get(c.counter).bytes,
            c.frame.len() as u64,
            "{}: bytes",
            c.name
        );
    }
}

#[test]
fn ipv4_cases() {
    let mut dp = datapath();
    let to = |d: [u8; 4]| V4::to(d);
    let with = |d: [u8; 4], f: &dyn Fn(&mut V4)| {
        let mut v = V4::to(d);
        f(&mut v);
        v.build()
    };
    use Counter::*;
    use Expect::*;
    check(
        &mut dp,
        vec![
            case("hit /8", to([10, 9, 9, 9]).build(), Forward(1), FwdV4),
            case("lpm /16", to([10, 1, 9, 9]).build(), Forward(2), FwdV4),
            case("lpm /24", to([10, 1, 2, 4]).build(), Forward(3), FwdV4),
            case("lpm /32", to([10, 1, 2, 3]).build(), Forward(4), FwdV4),
            case("miss", to([192, 0, 2, 99]).build(), Pass, PassMiss),
            case("ttl 0", with([10, 1, 2, 3], &|v| v.ttl = 0), Pass, PassTtl),
            case("ttl 1", with([10, 1, 2, 3], &|v| v.ttl = 1), Pass, PassTtl),
            case(
                "ttl 2",
                with([10, 1, 2, 3], &|v| v.ttl = 2),
                Forward(4),
                FwdV4,
            ),
            case(
                "ttl 255",
                with([10, 1, 2, 3], &|v| v.ttl = 255),
                Forward(4),
                FwdV4,
            ),
            case(
                "options: router alert",
                with([10, 1, 2, 3], &|v| v.options = vec![0x94, 4, 0, 0]),
                Forward(4),
                FwdV4,
            ),
            case(
                "options: 40 bytes (IHL 15)",
                with([10, 9, 0, 1], &|v| v.options = vec![1; 40]),
                Forward(1),
                FwdV4,
            ),
            case(
                "options: IHL 15, odd ttl",
                with([10, 9, 0, 1], &|v| {
                    v.options = vec![0x44, 40, 5, 0];
                    v.options.resize(40, 0xab);
                    v.ttl = 3;
                }),
                Forward(1),
                FwdV4,
            ),
            case(
                "first fragment",
                with([10, 1, 2, 3], &|v| v.frag = 0x2000),
                Forward(4),
                FwdV4,
            ),
            case(
                "later fragment",
                with([10, 1, 2, 3], &|v| v.frag = 0x00b9),
                Forward(4),
                FwdV4,
            ),
            case(
                "broadcast MAC",
                with([10, 1, 2, 3], &|v| v.dst_mac = [0xff; 6]),
                Pass,
                PassMulticast,
            ),
            case(
                "limited broadcast",
                to([255, 255, 255, 255]).build(),
                Pass,
                PassMulticast,
            ),
            case("multicast", to([224, 0, 0, 5]).build(), Pass, PassMulticast),
            case(
                "multicast 239/8",
                to([239, 1, 1, 1]).build(),
                Pass,
                PassMulticast,
            ),
            case(
                "link-local dst",
                to([169, 254, 1, 1]).build(),
                Pass,
                PassLinkLocal,
            ),
            case(
                "link-local src",
                with([10, 1, 2, 3], &|v| v.src = [169, 254, 0, 9].into()),
                Pass,
                PassLinkLocal,
            ),
            case("local", to([10, 200, 0, 1]).build(), Pass, PassLocal),
            case(
                "local, ttl 1",
                with([10, 200, 0, 1], &|v| v.ttl = 1),
                Pass,
                PassLocal,
            ),
            case(
                "kernel route",
                to([10, 201, 3, 3]).build(),
                Pass,
                PassKernelRoute,
            ),
            case(
                "blackhole",
                to([10, 202, 3, 3]).build(),
                Drop,
                DropBlackhole,
            ),
            case(
                "over MTU",
                with([10, 5, 0, 1], &|v| v.payload = 200),
                Pass,
                PassMtu,
            ),
            case(
                "at MTU",
                with([10, 5, 0, 1], &|v| v.payload = 100 - 28),
                Forward(5),
                FwdV4,
            ),
        ],
    );
}

#[test]
fn ipv4_malformed_and_non_ip() {
    let mut dp = datapath();
    let good = V4::to([10, 1, 2, 3]).build();
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let fix_csum = |v: &mut Vec<u8>| {
        let ihl = usize::from(v[14] & 0x0f) * 4;
        let c = ipv4_checksum(&v[14..14 + ihl.max(20).min(v.len() - 14)]);
        v[24..26].copy_from_slice(&c.to_be_bytes());
    };
    use Counter::*;
    use Expect::*;
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    check(
        &mut dp,
        vec![
            case("arp", arp, Pass, PassNonIp),
            case("vlan tagged", vlan, Pass, PassNonIp),
            case(
                "bad checksum",
                edit(&|v| v[24] ^= 0x40),
                Drop,
                DropBadChecksum,
            ),
            case(
                "version 5",
                edit(&|v| {
                    v[14] = 0x55;
                    fix_csum(v)
                }),
                Drop,
                DropMalformed,
            ),
            case(
                "IHL 4",
                edit(&|v| {
                    v[14] = 0x44;
                    fix_csum(v)
                }),
                Drop,
                DropMalformed,
            ),
            case(
                "total length beyond frame",
                edit(&|v| {
                    v[16..18].copy_from_slice(&1000u16.to_be_bytes());
                    fix_csum(v)
                }),
                Drop,
                DropMalformed,
            ),
            case(
                "total length below IHL",
                edit(&|v| {
                    v[16..18].copy_from_slice(&19u16.to_be_bytes());
                    fix_csum(v)
                }),
                Drop,
                DropMalformed,
            ),
            case(
                "trailing Ethernet padding is fine",
                edit(&|v| v.extend_from_slice(&[0; 10])),
                Forward(4),
                FwdV4,
            ),
        ],
    );
}

/// Every truncation of a frame below its IP total length is malformed; the kernel's test
/// runner needs at least an Ethernet header, so lengths start at 14.
#[test]
fn truncated_at_every_boundary() {
    let mut dp = datapath();
    let mut with_opts = V4::to([10, 1, 2, 3]);
    with_opts.options = vec![0x94, 4, 0, 0, 1, 1, 1, 0];
    let frames = [
        V4::to([10, 1, 2, 3]).build(),
        with_opts.build(),
        V6::to(v6("2001:db8:1:2::3")).build(),
    ];
    for f in frames {
        let cases = (14..f.len())
            .map(|len| {
                case(
                    "truncated",
                    f[..len].to_vec(),
                    Expect::Drop,
                    Counter::DropMalformed,
                )
            })
            .collect();
        check(&mut dp, cases);
    }
}

#[test]
fn ipv6_cases() {
    let mut dp = datapath();
    let to = |d: &str| V6::to(v6(d)).build();
    let with = |d: &str, f: &dyn Fn(&mut V6)| {
        let mut v = V6::to(v6(d));
        f(&mut v);
        v.build()
    };
    use Counter::*;
    use Expect::*;
    let mut bad_version = to("2001:db8:1:2::3");
    bad_version[14] = 0x40;
    let mut long_payload = to("2001:db8:1:2::3");
    long_payload[18..20].copy_from_slice(&500u16.to_be_bytes());
    check(
        &mut dp,
        vec![
            case("hit /32", to("2001:db8:9::1"), Forward(1), FwdV6),
            case("lpm /48", to("2001:db8:1:9::1"), Forward(2), FwdV6),
            case("lpm /64", to("2001:db8:1:2::4"), Forward(3), FwdV6),
            case("lpm /128", to("2001:db8:1:2::3"), Forward(4), FwdV6),
            case("miss", to("2001:db9::1"), Pass, PassMiss),
            case(
                "hop 0",
                with("2001:db8:1:2::3", &|v| v.hop_limit = 0),
                Pass,
                PassTtl,
            ),
            case(
                "hop 1",
                with("2001:db8:1:2::3", &|v| v.hop_limit = 1),
                Pass,
                PassTtl,
            ),
            case(
                "hop 2",
                with("2001:db8:1:2::3", &|v| v.hop_limit = 2),
                Forward(4),
                FwdV6,
            ),
            case("multicast", to("ff02::1"), Pass, PassMulticast),
            case("multicast global", to("ff0e::1"), Pass, PassMulticast),
            case(
                "multicast MAC",
                with("2001:db8:1:2::3", &|v| v.dst_mac = [0x33, 0x33, 0, 0, 0, 1]),
                Pass,
                PassMulticast,
            ),
            case("link-local dst", to("fe80::1"), Pass, PassLinkLocal),
            case(
                "link-local src",
                with("2001:db8:1:2::3", &|v| v.src = v6("fe80::9")),
                Pass,
                PassLinkLocal,
            ),
            case(
                "hop-by-hop",
                with("2001:db8:1:2::3", &|v| v.next_hdr = 0),
                Pass,
                PassHopByHop,
            ),
            case(
                "fragment header is forwarded",
                with("2001:db8:1:2::3", &|v| v.next_hdr = 44),
                Forward(4),
                FwdV6,
            ),
            case("local", to("2001:db8:200::1"), Pass, PassLocal),
            case(
                "over MTU",
                with("2001:db8:5::1", &|v| v.payload = 200),
                Pass,
                PassMtu,
            ),
            case("version 4 in v6 frame", bad_version, Drop, DropMalformed),
            case("payload beyond frame", long_payload, Drop, DropMalformed),
        ],
    );
}

#[test]
fn miss_policy_drop() {
    let mut dp = datapath();
    dp.tables().set_miss_drop(true).unwrap();
    assert!(dp.tables().miss_drop());
    check(
        &mut dp,
        vec![
            case(
                "v4 miss",
                V4::to([192, 0, 2, 99]).build(),
                Expect::Drop,
                Counter::DropMiss,
            ),
            case(
                "v6 miss",
                V6::to(v6("2001:db9::1")).build(),
                Expect::Drop,
                Counter::DropMiss,
            ),
            case(
                "v4 hit",
                V4::to([10, 1, 2, 3]).build(),
                Expect::Forward(4),
                Counter::FwdV4,
            ),
        ],
    );
}

/// A route via next hop `id` with loop-free alternate `alt`.
fn via_alt(id: u32, alt: u32) -> RouteTarget {
    RouteTarget::Via { id, alt: Some(alt) }
}

#[test]
fn nexthop_down_uses_alternate() {
    let mut dp = datapath();
    let t: &mut Tables = dp.tables();
    t.set_route(net("10.77.0.0/16"), via_alt(2, 3)).unwrap();
    t.set_route(net("10.78.0.0/16"), RouteTarget::Via { id: 2, alt: None })
        .unwrap();
    let a = V4::to([10, 77, 0, 1]).build();
    let b = V4::to([10, 78, 0, 1]).build();
    check(
        &mut dp,
        vec![
            case("primary up", a.clone(), Expect::Forward(2), Counter::FwdV4),
            case("no alt, up", b.clone(), Expect::Forward(2), Counter::FwdV4),
        ],
    );
    dp.tables().set_nexthop_down(2, true).unwrap();
    check(
        &mut dp,
        vec![
            case(
                "primary down -> alt",
                a.clone(),
                Expect::Forward(3),
                Counter::FwdV4,
            ),
            case("down, no alt", b, Expect::Drop, Counter::DropNextHopDown),
        ],
    );
    dp.tables().set_nexthop_down(3, true).unwrap();
    check(
        &mut dp,
        vec![case("both down", a, Expect::Drop, Counter::DropNextHopDown)],
    );
}

/// `frame` as sent by the neighbour of next hop `n` (its MAC as the Ethernet source). The
/// fixtures' next hops all leave through `lo`, which is also the ingress of a test run.
fn from_neighbour(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    frame[6..12].copy_from_slice(&NH_MAC[n]);
    frame
}

/// A packet whose route leads straight back to the neighbour it came from is dropped and
/// counted as a U-turn, never bounced back nor sent on the alternate; a primary that is
/// down takes the alternate unless that is the sender.
#[test]
fn uturn_drops_and_a_down_primary_takes_the_alternate() {
    let mut dp = datapath();
    let t: &mut Tables = dp.tables();
    t.set_route(net("10.77.0.0/16"), via_alt(2, 3)).unwrap();
    t.set_route(net("10.79.0.0/16"), via_alt(2, 2)).unwrap();
    let a = V4::to([10, 77, 0, 1]).build();
    let a6 = V6::to(v6("2001:db8:1:2::3")).build();
    let c = V4::to([10, 79, 0, 1]).build();
    check(
        &mut dp,
        vec![
            case(
                "from another neighbour",
                from_neighbour(a.clone(), 4),
                Expect::Forward(2),
                Counter::FwdV4,
            ),
            case(
                "back to the sender: dropped, not sent on the alternate",
                from_neighbour(a.clone(), 2),
                Expect::Drop,
                Counter::DropUturn,
            ),
            case(
                "from the alternate's neighbour: primary",
                from_neighbour(a.clone(), 3),
                Expect::Forward(2),
                Counter::FwdV4,
            ),
            case(
                "IPv6 back to the sender, no alternate",
                from_neighbour(a6.clone(), 4),
                Expect::Drop,
                Counter::DropUturn,
            ),
            case(
                "IPv6 from elsewhere",
                from_neighbour(a6, 3),
                Expect::Forward(4),
                Counter::FwdV6,
            ),
            case(
                "alternate is the sender too",
                from_neighbour(c, 2),
                Expect::Drop,
                Counter::DropUturn,
            ),
        ],
    );
    dp.tables().set_nexthop_down(2, true).unwrap();
    check(
        &mut dp,
        vec![
            case(
                "primary down, alternate is the sender",
                from_neighbour(a.clone(), 3),
                Expect::Drop,
                Counter::DropNextHopDown,
            ),
            case(
                "primary down -> alternate",
                from_neighbour(a, 4),
                Expect::Forward(3),
                Counter::FwdV4,
            ),
        ],
    );
}

#[test]
fn deleted_nexthop_drops_and_route_needs_nexthop() {
    let mut dp = datapath();
    let t = dp.tables();
    assert_eq!(
        t.routes_using(4).unwrap(),
        vec![net("10.1.2.3/32"), net("2001:db8:1:2::3/128")]
    );
    t.delete_nexthop(4).unwrap();
    let err = t
        .set_route(net("10.99.0.0/16"), RouteTarget::Via { id: 4, alt: None })
        .unwrap_err();
    assert!(
        err.to_string().contains("next hop 4 does not exist"),
        "{err}"
    );
    assert!(t
        .set_route(net("10.99.0.0/16"), RouteTarget::Via { id: 0, alt: None })
        .is_err());
    check(
        &mut dp,
        vec![case(
            "route to deleted next hop",
            V4::to([10, 1, 2, 3]).build(),
            Expect::Drop,
            Counter::DropNoNextHop,
        )],
    );
}

#[test]
fn routes_round_trip() {
    let mut dp = datapath();
    let t = dp.tables();
    let routes = t.routes().unwrap();
    assert_eq!(routes.len(), 14);
    assert!(routes.contains(&(net("10.1.2.0/24"), RouteTarget::Via { id: 3, alt: None })));
    // Host bits are cleared on insert.
    t.set_route(net("10.50.1.7/16"), RouteTarget::Blackhole)
        .unwrap();
    assert_eq!(
        t.lookup("10.50.200.1".parse().unwrap()),
        Some(RouteTarget::Blackhole)
    );
    t.delete_route(net("10.50.0.0/16")).unwrap();
    assert!(t.delete_route(net("10.50.0.0/16")).is_err());
    assert_eq!(
        t.lookup("10.50.200.1".parse().unwrap()),
        Some(RouteTarget::Via { id: 1, alt: None })
    );
}

/// Route changes (add, replace, delete, a miss becoming a hit) take effect for the very next
/// packet: the per-CPU route cache must never serve a stale answer, on a small table and on
/// a larger one.
#[test]
fn route_changes_take_effect_at_once() {
    route_changes(0);
}

#[test]
fn route_changes_take_effect_at_once_on_a_larger_table() {
    route_changes(300);
}

fn route_changes(extra_routes: u32) {
    let mut dp = datapath();
    for i in 0..extra_routes {
        let p = format!("172.16.{}.{}/32", i / 256, i % 256);
        let q = format!("2001:db8:ff::{i:x}/128");
        dp.tables()
            .set_route(net(&p), RouteTarget::Blackhole)
            .unwrap();
        dp.tables()
            .set_route(net(&q), RouteTarget::Blackhole)
            .unwrap();
    }
    let f4 = V4::to([10, 1, 2, 99]).build();
    let f6 = V6::to(v6("2001:db8:1:2::99")).build();
    let miss4 = V4::to([192, 0, 2, 77]).build();
    let fwd = |f: &Vec<u8>, nh, c| case("cached", f.clone(), Expect::Forward(nh), c);
    // Twice each, so the second packet is served from the cache.
    for _ in 0..2 {
        check(
            &mut dp,
            vec![
                fwd(&f4, 3, Counter::FwdV4),
                fwd(&f6, 3, Counter::FwdV6),
                case("miss", miss4.clone(), Expect::Pass, Counter::PassMiss),
            ],
        );
    }
    let t = dp.tables();
    let via5 = RouteTarget::Via { id: 5, alt: None };
    t.set_route(net("10.1.2.99/32"), via5).unwrap();
    t.set_route(net("2001:db8:1:2::99/128"), via5).unwrap();
    t.set_route(net("192.0.2.0/24"), RouteTarget::Via { id: 2, alt: None })
        .unwrap();
    check(
        &mut dp,
        vec![
            fwd(&f4, 5, Counter::FwdV4),
            fwd(&f6, 5, Counter::FwdV6),
            fwd(&miss4, 2, Counter::FwdV4),
        ],
    );
    let t = dp.tables();
    t.set_route(net("10.1.2.99/32"), RouteTarget::Blackhole)
        .unwrap();
    t.delete_route(net("2001:db8:1:2::99/128")).unwrap();
    t.delete_route(net("192.0.2.0/24")).unwrap();
    check(
        &mut dp,
        vec![
            case("now blackholed", f4, Expect::Drop, Counter::DropBlackhole),
            fwd(&f6, 3, Counter::FwdV6),
            case("miss again", miss4, Expect::Pass, Counter::PassMiss),
        ],
    );
}
