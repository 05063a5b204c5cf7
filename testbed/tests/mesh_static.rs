//! A diamond built from its topology file with the static controller: traffic crosses
//! the XDP datapath end to end, a carrier loss on the active path switches to the
//! loop-free alternate without a route recomputation, and every trace is gone after
//! drop. Needs root.
use std::time::{Duration, Instant};

use dcmesh_testbed::{
    converge::Outcome,
    mesh::{Controller, Mesh},
    topology::Action,
    Topology,
};

fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test builds namespaces and loads eBPF; run it as root (`cargo xtask test`)"
    );
}

fn diamond() -> Topology {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/diamond.toml");
    let mut t = Topology::load(&path).unwrap();
    t.faults.clear();
    t
}

fn ping(m: &Mesh, from: usize, to: &str) -> bool {
    m.clients[from]
        .ns
        .exec("ping", &["-c", "3", "-i", "0.1", "-W", "1", to])
        .is_ok()
}

/// Sends `n` datagrams from client `a` to client `b`; returns how many arrived.
fn udp(m: &Mesh, a: usize, b: usize, n: usize) -> usize {
    let dst = std::net::SocketAddr::from((m.clients[b].addr4, 9999));
    let rx = m.clients[b]
        .ns
        .enter(|| std::net::UdpSocket::bind(dst).unwrap())
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let tx = m.clients[a]
        .ns
        .enter(|| std::net::UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    for i in 0..n {
        tx.send_to(&[i as u8], dst).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut got = 0;
    let mut buf = [0u8; 8];
    while rx.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn ours() -> Vec<String> {
    let pid = std::process::id().to_string();
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&ns.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| dcmesh_testbed::netns::owner_pid(n).map(|p| p.to_string()) == Some(pid.clone()))
        .map(String::from)
        .collect();
    for e in std::fs::read_dir("/run").unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("dcm-tb-")
            && dcmesh_testbed::netns::owner_pid(&n).map(|p| p.to_string()) == Some(pid.clone())
        {
            v.push(n);
        }
    }
    v
}

#[test]
fn diamond_forwards_fails_over_and_cleans_up() {
    require_root();
    {
        let mut m = Mesh::build(diamond(), Controller::Static).unwrap();
        let (snap, c) = m.check();
        assert!(c.converged(), "static routes not converged: {c:?}");
        let c2 = m.dests().into_iter().find(|d| d.client == Some(1)).unwrap();
        // n1 → n2 → n4 (the higher-SNR side).
        assert_eq!(
            dcmesh_testbed::converge::walk(&snap, &m.truth(), 0, c2),
            Outcome::Delivered {
                path: vec![0, 1, 3]
            }
        );
        let (v4, v6) = (
            m.clients[1].addr4.to_string(),
            m.clients[1].addr6.to_string(),
        );
        assert!(ping(&m, 0, &v4), "IPv4 c1 → c2");
        assert!(ping(&m, 0, &v6), "IPv6 c1 → c2");
        let fwd = m
            .counters(1)
            .unwrap()
            .get(dcmesh_schema::Counter::FwdV4)
            .packets;
        assert!(fwd >= 6, "n2 forwarded {fwd} IPv4 packets in XDP");

        // Carrier loss on n1–n2: the watcher marks the next hop down, the datapath uses
        // the alternate via n3 — before any recomputation.
        let l = m.topo.link_index("n1-n2").unwrap();
        m.apply(&Action::LinkDown(l)).unwrap();
        wait_for("n1 to mark its next hop to n2 down", || {
            let snap = m.snapshot();
            matches!(
                dcmesh_testbed::converge::walk(&snap, &m.truth(), 0, c2),
                Outcome::Delivered { ref path } if path == &vec![0, 2, 3]
            )
        });
        assert!(m.carrier_reactions().iter().any(|r| r.node == 0 && !r.up));
        // One way only: n2 has no loop-free alternate back to n1, so replies wait for
        // the recomputation.
        assert_eq!(udp(&m, 0, 1, 20), 20, "c1 → c2 over the alternate");
        // The oracle recomputes; still delivered, now as primary.
        m.static_recompute().unwrap();
        assert!(m.check().1.converged());
        // Carrier back, recompute: back on n2.
        m.apply(&Action::LinkUp(l)).unwrap();
        m.static_recompute().unwrap();
        wait_for("traffic back on n2", || {
            let snap = m.snapshot();
            matches!(
                dcmesh_testbed::converge::walk(&snap, &m.truth(), 0, c2),
                Outcome::Delivered { ref path } if path == &vec![0, 1, 3]
            )
        });
        assert!(ping(&m, 0, &v4));
        assert!(!ours().is_empty());
    }
    assert_eq!(ours(), Vec::<String>::new(), "leftovers after drop");
}

/// TBF parameters of a wire interface, as `tc` prints them.
fn qdisc(m: &Mesh, dev: &str) -> String {
    let out = m
        .wire
        .exec("tc", &["-s", "qdisc", "show", "dev", dev])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn link_rates_are_shaped_per_direction_and_changed_at_run_time() {
    require_root();
    let topo = Topology::parse(
        r#"
        name = "rated"
        [[node]]
        name = "a"
        [[node]]
        name = "b"
        [[link]]
        nodes = ["a", "b"]
        rate = "2mbit"
        [[client]]
        name = "ca"
        node = "a"
        [[client]]
        name = "cb"
        node = "b"
        "#,
    )
    .unwrap();
    let mut m = Mesh::build(topo, Controller::Static).unwrap();
    let (wa, wb) = (m.links[0].wire_a.0.clone(), m.links[0].wire_b.0.clone());
    for dev in [&wa, &wb] {
        assert!(qdisc(&m, dev).contains("rate 2Mbit"), "{}", qdisc(&m, dev));
    }
    // 300 datagrams of 1400 bytes at once: far above 2 Mbit/s, so the shaper drops.
    let dst = std::net::SocketAddr::from((m.clients[1].addr4, 9999));
    let rx = m.clients[1]
        .ns
        .enter(|| std::net::UdpSocket::bind(dst).unwrap())
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let tx = m.clients[0]
        .ns
        .enter(|| std::net::UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    for _ in 0..300 {
        let _ = tx.send_to(&[0u8; 1400], dst);
    }
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while rx.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert!(got > 0, "nothing crossed the shaped link");
    assert!(
        got < 300,
        "a 2 Mbit/s link carried a 3.4 Mbit burst without loss"
    );
    let s = qdisc(&m, &wb);
    assert!(
        !s.contains("dropped 0,"),
        "the a→b shaper dropped nothing:\n{s}"
    );
    // A new rate applies to both directions.
    m.apply(&Action::SetLink {
        link: 0,
        loss: None,
        snr_db: None,
        rate: Some("5mbit".parse().unwrap()),
    })
    .unwrap();
    for dev in [&wa, &wb] {
        assert!(qdisc(&m, dev).contains("rate 5Mbit"), "{}", qdisc(&m, dev));
    }
}
