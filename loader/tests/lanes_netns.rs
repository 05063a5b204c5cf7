//! Lanes on a real, rate-limited veth inside namespaces this test creates: a best-effort
//! flood far above the link rate and a light lane-0 flow share the link; lane counters, HTB
//! class statistics and the receiver all show strict priority (lane 0 loses nothing while
//! lane 7 overflows). Counts only, no timing assertions.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use dcmesh_loader::lanes::{self, ActiveMode, LanesError};
use dcmesh_testbed::{netns::veth, Netns};
use dcmesh_tsn::{
    config::{LaneConfig, LanesConfig, OnClosed, PortRange, Proto, RuleConfig},
    Action,
};

const RATE_BPS: u64 = 10_000_000;
const A_IP: &str = "10.77.0.1";
const B_IP: &str = "10.77.0.2";
const LANE0_PORT: u16 = 7000;
const BULK_PORT: u16 = 9000;
const LANE0_PACKETS: u32 = 300;
/// Flood rate: 1442-byte frames at about three times the link rate.
const FLOOD_PPS: f64 = 2_600.0;
/// Upper bound of the flood, whatever happens.
const FLOOD_MAX_PACKETS: u32 = 10_000;
const FLOOD_MAX_TIME: Duration = Duration::from_secs(3);

fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test builds namespaces, qdiscs and eBPF programs and needs root; run it as root"
    );
}

fn config() -> LanesConfig {
    let mut cfg = LanesConfig::new(RATE_BPS);
    cfg.rules.push(RuleConfig {
        name: Some("control".into()),
        lane: 0,
        proto: Some(Proto::Name("udp".into())),
        dst_ports: Some(PortRange::One(LANE0_PORT)),
        ..RuleConfig::default()
    });
    // A short best-effort queue, so the flood overflows the qdisc instead of blocking in
    // the sender's socket buffer.
    cfg.lanes.push(LaneConfig {
        lane: 7,
        on_closed: OnClosed::Drop,
        queue_limit: Some(30),
    });
    cfg
}

fn mac_of(ns: &Netns, iface: &str) -> String {
    ns.enter(|| dcmesh_loader::interface_info(iface).map(|i| dcmesh_loader::format_mac(&i.mac)))
        .unwrap()
        .unwrap()
}

/// a (sender, lanes on `la`) — b (receiver), static neighbours so no ARP competes.
fn topology() -> (Netns, Netns) {
    let a = Netns::create("lna").unwrap();
    let b = Netns::create("lnb").unwrap();
    veth(&a, "la", &b, "lb").unwrap();
    a.ip(&["addr", "add", &format!("{A_IP}/24"), "dev", "la"])
        .unwrap();
    b.ip(&["addr", "add", &format!("{B_IP}/24"), "dev", "lb"])
        .unwrap();
    for (ns, dev) in [(&a, "la"), (&b, "lb")] {
        ns.exec(
            "ethtool",
            &["-K", dev, "gso", "off", "tso", "off", "gro", "off"],
        )
        .unwrap();
    }
    let (ma, mb) = (mac_of(&a, "la"), mac_of(&b, "lb"));
    a.ip(&[
        "neigh",
        "replace",
        B_IP,
        "lladdr",
        &mb,
        "dev",
        "la",
        "nud",
        "permanent",
    ])
    .unwrap();
    b.ip(&[
        "neigh",
        "replace",
        A_IP,
        "lladdr",
        &ma,
        "dev",
        "lb",
        "nud",
        "permanent",
    ])
    .unwrap();
    (a, b)
}

/// Receives until the link has been quiet for a while; datagrams per destination port.
fn receive(sock: UdpSocket, stop_after: Instant) -> HashMap<u16, u32> {
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = HashMap::new();
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) if n >= 2 => *got.entry(u16::from_be_bytes([buf[0], buf[1]])).or_insert(0) += 1,
            Ok(_) => {}
            Err(_) if Instant::now() > stop_after => return got,
            Err(_) => {}
        }
    }
}

#[test]
fn strict_priority_on_a_rate_limited_veth() {
    require_root();
    let (a, b) = topology();
    let setup = a
        .enter(|| lanes::setup("la", &config()))
        .unwrap()
        .expect("lanes set-up");
    // This kernel has neither fq nor etf; a router kernel would. Either way the leaves
    // must carry the qdisc the reported mode needs.
    let qdiscs = String::from_utf8(
        a.exec("tc", &["qdisc", "show", "dev", "la"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    let leaf_kind = match setup.mode {
        ActiveMode::Admission => "pfifo",
        ActiveMode::Edt(lanes::EdtQdisc::Fq) => "fq",
        ActiveMode::Edt(lanes::EdtQdisc::Etf) => "etf",
    };
    assert_eq!(
        qdiscs.matches(&format!("qdisc {leaf_kind} ")).count(),
        8,
        "{qdiscs}"
    );
    let before = setup.lanes.counters().unwrap();

    let rx = b.enter(|| UdpSocket::bind((B_IP, 0))).unwrap().unwrap();
    let rx_port = rx.local_addr().unwrap().port();
    // Both flows go to one receiver socket; the first two payload bytes say which flow.
    let dst: SocketAddr = format!("{B_IP}:{rx_port}").parse().unwrap();
    let (bulk, ctl) = a
        .enter(|| {
            let bulk = UdpSocket::bind((A_IP, BULK_PORT)).unwrap();
            let ctl = UdpSocket::bind((A_IP, LANE0_PORT)).unwrap();
            (bulk, ctl)
        })
        .unwrap();
    bulk.set_nonblocking(true).unwrap();
    // The lane-0 rule matches destination port 7000: send to a port that is 7000.
    let ctl_dst: SocketAddr = format!("{B_IP}:{LANE0_PORT}").parse().unwrap();
    let rx0 = b
        .enter(|| UdpSocket::bind((B_IP, LANE0_PORT)))
        .unwrap()
        .unwrap();

    let done = std::sync::atomic::AtomicBool::new(false);
    let (flood_sent, lane0_sent, got_bulk, got_lane0) = std::thread::scope(|s| {
        let quiet_after = Instant::now() + FLOOD_MAX_TIME + Duration::from_millis(500);
        let r_bulk = s.spawn(move || receive(rx, quiet_after));
        let r_lane0 = s.spawn(move || receive(rx0, quiet_after));
        let flood = s.spawn(|| {
            let mut payload = vec![0u8; 1400];
            payload[..2].copy_from_slice(&BULK_PORT.to_be_bytes());
            let start = Instant::now();
            let (mut attempts, mut sent) = (0u32, 0u32);
            while attempts < FLOOD_MAX_PACKETS
                && start.elapsed() < FLOOD_MAX_TIME
                && !done.load(std::sync::atomic::Ordering::Relaxed)
            {
                if f64::from(attempts) > start.elapsed().as_secs_f64() * FLOOD_PPS {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                attempts += 1;
                // A full queue makes the qdisc drop the datagram and say so.
                if bulk.send_to(&payload, dst).is_ok() {
                    sent += 1;
                }
            }
            sent
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut payload = vec![0u8; 200];
        payload[..2].copy_from_slice(&LANE0_PORT.to_be_bytes());
        let mut lane0 = 0u32;
        for _ in 0..LANE0_PACKETS {
            if ctl.send_to(&payload, ctl_dst).is_ok() {
                lane0 += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(200));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let flood_sent = flood.join().unwrap();
        (
            flood_sent,
            lane0,
            r_bulk.join().unwrap(),
            r_lane0.join().unwrap(),
        )
    });

    let c = setup.lanes.counters().unwrap().since(&before);
    let stats = a.enter(|| lanes::class_stats("la")).unwrap().unwrap();
    let class = |lane: u8| {
        stats
            .iter()
            .find(|s| s.lane == Some(lane))
            .cloned()
            .unwrap()
    };
    let report = format!(
        "flood sent {flood_sent}, received {:?}; lane 0 sent {lane0_sent}, received {:?}; \
         counters {c:?}; classes {stats:?}",
        got_bulk.get(&BULK_PORT),
        got_lane0.get(&LANE0_PORT)
    );
    eprintln!("{report}");
    assert_eq!(lane0_sent, LANE0_PACKETS, "{report}");
    // The program put every lane-0 datagram on lane 0, and the flood on lane 7.
    assert_eq!(
        c.get(0, Action::Admitted).packets,
        u64::from(lane0_sent),
        "{report}"
    );
    assert!(
        c.get(7, Action::Admitted).packets >= u64::from(flood_sent),
        "{report}"
    );
    for l in 1..7 {
        assert_eq!(c.get(l, Action::Admitted).packets, 0, "lane {l}: {report}");
    }
    // HTB served lane 0 first: its leaf dropped nothing and sent every datagram, while the
    // best-effort leaf overflowed.
    assert_eq!(class(0).drops, 0, "{report}");
    assert_eq!(class(0).packets, u64::from(lane0_sent), "{report}");
    assert!(
        class(7).drops > 0,
        "the flood must overload the link: {report}"
    );
    assert_eq!(
        got_lane0.get(&LANE0_PORT).copied().unwrap_or(0),
        lane0_sent,
        "{report}"
    );
    assert!(
        got_bulk.get(&BULK_PORT).copied().unwrap_or(0) < flood_sent,
        "{report}"
    );
    drop(setup);
}

#[test]
fn invalid_configuration_touches_nothing() {
    require_root();
    let a = Netns::create("lnx").unwrap();
    a.ip(&["link", "add", "lx", "type", "veth", "peer", "name", "ly"])
        .unwrap();
    let mut cfg = config();
    cfg.default_lane = 9;
    let err = a
        .enter(|| lanes::setup("lx", &cfg))
        .unwrap()
        .err()
        .expect("must fail");
    assert!(matches!(err, LanesError::Config(_)), "{err}");
    assert!(
        err.to_string()
            .contains("lanes.default_lane: lane 9 does not exist"),
        "{err}"
    );
    let q = String::from_utf8(
        a.exec("tc", &["qdisc", "show", "dev", "lx"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !q.contains("htb"),
        "no queues may be built for a bad configuration: {q}"
    );
}
