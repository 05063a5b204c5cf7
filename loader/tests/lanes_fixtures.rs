//! BPF_PROG_TEST_RUN fixtures for the TSN lanes TC program: crafted frames at known times
//! (the program's test clock), checked against what the `dcmesh-tsn` crate computes —
//! verdict, `skb->priority`, departure stamp (`skb->tstamp`) and the one counter that
//! moves — and against hand-written expectations for the lane of each frame.

use std::net::Ipv6Addr;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use dcmesh_loader::lanes::{finish_plan, ActiveMode, EdtQdisc, Lanes, DEFAULT_MAJOR};
use dcmesh_tsn::{classify::PacketKey, config::LanesConfig, decide, Action, Mode, Plan, Verdict};

const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const TC_ACT_SHOT: u32 = 2;

/// `struct __sk_buff` (192 bytes): offsets of the fields the program writes.
const SKB_SIZE: usize = 192;
const SKB_PRIORITY: usize = 32;
const SKB_TSTAMP: usize = 152;

/// Any whole number of 1 ms cycles, far from 0 (0 means "no test clock").
const EPOCH: u64 = 1_000_000_000_000;

fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs and need root; run them as root"
    );
}

const CONFIG: &str = r#"
[lanes]
link_rate_bps = 100_000_000
default_lane = 7

[lanes.schedule]
cycle_ns = 1_000_000
entries = [
  { gates = [0], interval_ns = 200_000 },
  { gates = [0, 1, 2, 3, 4, 5, 6, 7], interval_ns = 600_000 },
  { gates = [0, 7], interval_ns = 200_000 },
]

[[lanes.rules]]
name = "ptp"
lane = 0
proto = "udp"
dst_ports = "319-320"

[[lanes.rules]]
name = "voice"
lane = 1
dscp = [46]

[[lanes.rules]]
name = "control-v6"
lane = 2
src = "2001:db8:1::/48"
proto = "tcp"

[[lanes.rules]]
name = "pcp5"
lane = 3
pcp = [5]

[[lanes.rules]]
name = "bulk"
lane = 6
dst = "10.9.0.0/16"
src_ports = "1000-2000"

[[lanes.lane]]
lane = 3
on_closed = { demote = 7 }
"#;

fn config() -> LanesConfig {
    #[derive(serde::Deserialize)]
    struct File {
        lanes: LanesConfig,
    }
    toml::from_str::<File>(CONFIG)
        .expect("fixture config parses")
        .lanes
}

fn plan(mode: ActiveMode) -> Plan {
    let compiled = config().compile().expect("fixture config is valid");
    finish_plan(&compiled, mode, DEFAULT_MAJOR)
}

/// A program with `plan` in force and the test clock set.
fn lanes_with(plan: &Plan) -> Lanes {
    require_root();
    let mut l = Lanes::load().expect("load the lanes program");
    l.apply(plan).expect("apply plan");
    l
}

#[derive(Clone, Debug)]
enum L3 {
    V4([u8; 4], [u8; 4]),
    V6(Ipv6Addr, Ipv6Addr),
    Arp,
}

/// A frame to build, and what a parser must read from it.
#[derive(Clone, Debug)]
struct Pkt {
    name: &'static str,
    /// 802.1Q/802.1ad tags, outer first: (TPID, TCI).
    tags: Vec<(u16, u16)>,
    l3: L3,
    dscp: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    /// IPv4 fragment offset (8-byte units), or the IPv6 fragment header's.
    frag_offset: u16,
    /// IPv6 extension headers before the upper layer (0, 43, 44, 60).
    ext: Vec<u8>,
    payload: usize,
    /// Cut the frame to this many bytes.
    truncate: Option<usize>,
    /// The lane a reader of the fixture config expects.
    lane: u8,
}

fn pkt(name: &'static str, l3: L3, proto: u8, dport: u16, lane: u8) -> Pkt {
    Pkt {
        name,
        tags: vec![],
        l3,
        dscp: 0,
        proto,
        sport: 40_000,
        dport,
        frag_offset: 0,
        ext: vec![],
        payload: 18,
        truncate: None,
        lane,
    }
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

impl Pkt {
    fn build(&self) -> (Vec<u8>, PacketKey) {
        let mut k = PacketKey::default();
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        for (i, (tpid, tci)) in self.tags.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
            if i == 0 {
                k.tagged = true;
                k.pcp = (tci >> 13) as u8;
            }
        }
        let l4 = |f: &mut Vec<u8>| {
            f.extend_from_slice(&self.sport.to_be_bytes());
            f.extend_from_slice(&self.dport.to_be_bytes());
            f.extend_from_slice(&[0u8; 4]);
            f.extend((0..self.payload).map(|i| i as u8));
        };
        let l4_len = 8 + self.payload;
        match &self.l3 {
            L3::Arp => {
                f.extend_from_slice(&0x0806u16.to_be_bytes());
                f.extend_from_slice(&[0u8; 28]);
            }
            L3::V4(src, dst) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.push(0x45);
                f.push(self.dscp << 2);
                f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 1]);
                f.extend_from_slice(&self.frag_offset.to_be_bytes());
                f.extend_from_slice(&[64, self.proto, 0, 0]);
                f.extend_from_slice(src);
                f.extend_from_slice(dst);
                l4(&mut f);
                k.family = 4;
                k.dscp = self.dscp;
                k.proto = self.proto;
                k.src[..4].copy_from_slice(src);
                k.dst[..4].copy_from_slice(dst);
                if self.frag_offset == 0 && has_ports(self.proto) {
                    (k.has_ports, k.sport, k.dport) = (true, self.sport, self.dport);
                }
            }
            L3::V6(src, dst) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let tc = self.dscp << 2;
                f.extend_from_slice(&[0x60 | (tc >> 4), tc << 4, 0, 0]);
                f.extend_from_slice(&((self.ext.len() * 8 + l4_len) as u16).to_be_bytes());
                f.push(*self.ext.first().unwrap_or(&self.proto));
                f.push(64);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                for (i, kind) in self.ext.iter().enumerate() {
                    let next = *self.ext.get(i + 1).unwrap_or(&self.proto);
                    if *kind == 44 {
                        let off = (self.frag_offset << 3).to_be_bytes();
                        f.extend_from_slice(&[next, 0, off[0], off[1], 0, 0, 0, 7]);
                    } else {
                        f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                    }
                }
                l4(&mut f);
                k.family = 6;
                k.dscp = self.dscp;
                k.proto = self.proto;
                k.src = src.octets();
                k.dst = dst.octets();
                if self.frag_offset == 0 && has_ports(self.proto) {
                    (k.has_ports, k.sport, k.dport) = (true, self.sport, self.dport);
                }
            }
        }
        if let Some(n) = self.truncate {
            // Cut inside the L4 ports: the ports are unreadable, the rest is known.
            assert!(
                n >= f.len() - l4_len && n < f.len() - l4_len + 4,
                "cut the ports only"
            );
            f.truncate(n);
            (k.has_ports, k.sport, k.dport) = (false, 0, 0);
        }
        (f, k)
    }
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn frames() -> Vec<Pkt> {
    let a = [192, 0, 2, 1];
    let b = [10, 9, 1, 1];
    let ua = v6("2001:db8:1::5");
    let ub = v6("2001:db8:2::9");
    let with = |mut p: Pkt, f: &dyn Fn(&mut Pkt)| {
        f(&mut p);
        p
    };
    vec![
        pkt("ptp v4", L3::V4(a, b), 17, 319, 0),
        with(pkt("ptp v4 full size", L3::V4(a, b), 17, 320, 0), &|p| {
            p.payload = 1472
        }),
        with(
            pkt("ptp before voice (first match)", L3::V4(a, b), 17, 319, 0),
            &|p| p.dscp = 46,
        ),
        with(pkt("voice dscp 46", L3::V4(a, b), 17, 5004, 1), &|p| {
            p.dscp = 46
        }),
        with(
            pkt("voice dscp 46 full size", L3::V4(a, b), 17, 5004, 1),
            &|p| {
                p.dscp = 46;
                p.payload = 1472;
            },
        ),
        with(pkt("voice v6", L3::V6(ub, ua), 17, 5004, 1), &|p| {
            p.dscp = 46
        }),
        pkt("control v6 tcp", L3::V6(ua, ub), 6, 22, 2),
        pkt("control v6 udp: wrong proto", L3::V6(ua, ub), 17, 22, 7),
        with(pkt("pcp 5 tagged", L3::V4(a, b), 17, 80, 3), &|p| {
            p.tags = vec![(0x8100, 5 << 13 | 100)];
            p.payload = 1000;
        }),
        with(pkt("qinq: outer pcp 5", L3::V4(a, b), 17, 80, 3), &|p| {
            p.tags = vec![(0x88a8, 5 << 13 | 7), (0x8100, 1 << 13 | 100)];
        }),
        with(pkt("qinq: outer pcp 1", L3::V4(a, b), 17, 80, 7), &|p| {
            p.tags = vec![(0x88a8, 1 << 13 | 7), (0x8100, 5 << 13 | 100)];
        }),
        with(pkt("tagged ptp", L3::V4(a, b), 17, 319, 0), &|p| {
            p.tags = vec![(0x8100, 5 << 13)];
        }),
        with(pkt("bulk", L3::V4(a, b), 6, 80, 6), &|p| {
            p.sport = 1500;
            p.payload = 1400;
        }),
        with(
            pkt("bulk: port out of range", L3::V4(a, b), 6, 80, 7),
            &|p| p.sport = 2001,
        ),
        with(
            pkt("bulk: later fragment has no ports", L3::V4(a, b), 6, 80, 7),
            &|p| {
                p.sport = 1500;
                p.frag_offset = 185;
            },
        ),
        with(
            pkt(
                "ptp v6 behind hop-by-hop and fragment",
                L3::V6(ub, ua),
                17,
                320,
                0,
            ),
            &|p| {
                p.ext = vec![0, 60, 44];
            },
        ),
        with(
            pkt("ptp v6 later fragment", L3::V6(ub, ua), 17, 320, 7),
            &|p| {
                p.ext = vec![44];
                p.frag_offset = 100;
            },
        ),
        pkt("arp", L3::Arp, 0, 0, 7),
        with(
            pkt("ptp cut inside the ports", L3::V4(a, b), 17, 319, 7),
            &|p| p.truncate = Some(36),
        ),
        with(
            pkt("v6 ptp cut inside the ports", L3::V6(ub, ua), 17, 319, 7),
            &|p| p.truncate = Some(56),
        ),
    ]
}

/// Offsets into the 1 ms cycle: lane 0 alone, all open, all open with 10 µs left, lanes
/// 0 and 7 only.
const PHASES: [u64; 5] = [10_000, 300_000, 790_000, 900_000, 999_990];

struct Outcome {
    ret: u32,
    priority: u32,
    tstamp: u64,
}

fn run(prog: &SchedClassifier, frame: &[u8]) -> Outcome {
    let ctx_in = [0u8; SKB_SIZE];
    let mut ctx_out = [0u8; SKB_SIZE];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    let u32_at = |o: usize| u32::from_ne_bytes(ctx_out[o..o + 4].try_into().unwrap());
    Outcome {
        ret: r.return_value,
        priority: u32_at(SKB_PRIORITY),
        tstamp: u64::from_ne_bytes(ctx_out[SKB_TSTAMP..SKB_TSTAMP + 8].try_into().unwrap()),
    }
}

/// Runs every frame at every phase and compares with the tsn crate; returns the verdicts
/// for hand-written checks.
fn check_all(mode: ActiveMode) -> Vec<(&'static str, u64, Verdict)> {
    let plan = plan(mode);
    let mut lanes = lanes_with(&plan);
    let mut seen = Vec::new();
    for p in frames() {
        let (frame, key) = p.build();
        let lane = plan.rules.classify(&key);
        assert_eq!(lane, p.lane, "{}: lane by the rules", p.name);
        for phase in PHASES {
            let now = EPOCH + phase;
            lanes.set_test_clock(now).unwrap();
            let before = lanes.counters().unwrap();
            let out = run(lanes.program().unwrap(), &frame);
            let delta = lanes.counters().unwrap().since(&before);
            let want = decide(&plan, lane, frame.len() as u32, now);
            let at = format!("{} at {phase} ns into the cycle ({mode:?})", p.name);
            if want.action.sends() {
                assert_eq!(out.ret, TC_ACT_UNSPEC, "{at}: verdict");
                assert_eq!(
                    out.priority, plan.lanes[want.lane as usize].priority,
                    "{at}: priority (HTB leaf)"
                );
            } else {
                assert_eq!(out.ret, TC_ACT_SHOT, "{at}: verdict");
                assert_eq!(out.priority, 0, "{at}: priority untouched");
            }
            assert_eq!(
                out.tstamp,
                want.depart_ns.unwrap_or(0),
                "{at}: departure stamp"
            );
            assert_eq!(delta.total(), 1, "{at}: exactly one counter moves");
            assert_eq!(
                delta.get(lane, want.action).packets,
                1,
                "{at}: counter {}",
                want.action.name()
            );
            assert_eq!(
                delta.get(lane, want.action).bytes,
                frame.len() as u64,
                "{at}: bytes"
            );
            seen.push((p.name, phase, want));
        }
    }
    lanes.set_test_clock(0).unwrap();
    seen
}

fn verdict(seen: &[(&str, u64, Verdict)], name: &str, phase: u64) -> Verdict {
    seen.iter()
        .find(|(n, p, _)| *n == name && *p == phase)
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no case {name} at {phase}"))
}

#[test]
fn admission_mode_matches_tsn() {
    let seen = check_all(ActiveMode::Admission);
    let v = |n, p| verdict(&seen, n, p);
    // Hand-checked against the schedule: lane 0 always open; lane 1 closed in its first
    // 200 µs and last 200 µs; lane 3 demotes to 7, which is open from 200 µs to the end.
    assert_eq!(v("ptp v4", 10_000).action, Action::Admitted);
    assert_eq!(v("voice dscp 46", 10_000).action, Action::Dropped);
    assert_eq!(v("voice dscp 46", 300_000).action, Action::Admitted);
    // 10 µs left: a small frame (0.7 µs) fits, a full one (123 µs) does not.
    assert_eq!(v("voice dscp 46", 790_000).action, Action::Admitted);
    assert_eq!(
        v("voice dscp 46 full size", 790_000).action,
        Action::Dropped
    );
    assert_eq!(
        v("pcp 5 tagged", 900_000),
        Verdict {
            action: Action::Demoted,
            lane: 7,
            depart_ns: None
        }
    );
    assert_eq!(
        v("pcp 5 tagged", 10_000).action,
        Action::Dropped,
        "lane 7 is closed too"
    );
    assert_eq!(v("arp", 300_000).action, Action::Admitted);
    assert_eq!(
        v("arp", 999_990).action,
        Action::Dropped,
        "10 ns left in lane 7's window"
    );
}

#[test]
fn edt_monotonic_mode_matches_tsn() {
    // With the test clock both clocks read the same, so the stamp equals the gate time.
    let seen = check_all(ActiveMode::Edt(EdtQdisc::Fq));
    let v = |n, p| verdict(&seen, n, p);
    assert_eq!(
        v("voice dscp 46", 10_000),
        Verdict {
            action: Action::Deferred,
            lane: 1,
            depart_ns: Some(EPOCH + 200_000)
        }
    );
    assert_eq!(
        v("voice dscp 46 full size", 790_000),
        Verdict {
            action: Action::Deferred,
            lane: 1,
            depart_ns: Some(EPOCH + 1_200_000)
        }
    );
    assert_eq!(v("ptp v4", 10_000).depart_ns, Some(EPOCH + 10_000));
}

#[test]
fn edt_tai_mode_matches_tsn() {
    let seen = check_all(ActiveMode::Edt(EdtQdisc::Etf));
    assert!(seen.iter().any(|(_, _, v)| v.action == Action::Deferred));
    assert!(plan(ActiveMode::Edt(EdtQdisc::Etf)).link.mode == Mode::EdtTai as u32);
}

#[test]
fn no_plan_passes_untouched_and_counts() {
    require_root();
    let mut lanes = Lanes::load().expect("load");
    lanes.set_test_clock(EPOCH).unwrap();
    let (frame, _) = frames()[0].build();
    let out = run(lanes.program().unwrap(), &frame);
    assert_eq!((out.ret, out.priority, out.tstamp), (TC_ACT_UNSPEC, 0, 0));
    let c = lanes.counters().unwrap();
    assert_eq!((c.no_plan.packets, c.total()), (1, 1));
}

#[test]
fn plan_switch_lands_on_the_cycle_boundary() {
    let old = plan(ActiveMode::Admission);
    let mut lanes = lanes_with(&old);
    // New plan: everything on lane 5 (default lane, no rules), every gate open.
    let mut cfg = LanesConfig::new(100_000_000);
    cfg.default_lane = 5;
    let new = finish_plan(
        &cfg.compile().unwrap(),
        ActiveMode::Admission,
        DEFAULT_MAJOR,
    );
    let applied = lanes.apply(&new).expect("apply second plan");
    assert_eq!(
        applied.slot, 0,
        "the first plan went to slot 1, the idle one"
    );
    assert_eq!(applied.at_tai_ns % 1_000_000, 0, "switch at a cycle start");
    let (frame, _) = frames()[0].build(); // ptp: lane 0 under the old plan
    let prio_at = |lanes: &mut Lanes, t: u64| {
        lanes.set_test_clock(t).unwrap();
        run(lanes.program().unwrap(), &frame).priority
    };
    assert_eq!(
        prio_at(&mut lanes, applied.at_tai_ns - 2),
        old.lanes[0].priority
    );
    assert_eq!(
        prio_at(&mut lanes, applied.at_tai_ns),
        new.lanes[5].priority
    );
    assert_eq!(
        prio_at(&mut lanes, applied.at_tai_ns + 1),
        new.lanes[5].priority
    );
    lanes.set_test_clock(0).unwrap();
    // The slot just left is rewritten only after the switch has settled, never before.
    let again = lanes.apply(&old).expect("apply third plan");
    assert_eq!(again.slot, 1);
    assert!(again.at_tai_ns > applied.at_tai_ns);
}
