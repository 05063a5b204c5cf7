//! End to end through real namespaces: hosts A and B, router R with kernel forwarding off,
//! routes written only through `dcmesh-loader`. Ping and UDP in both families cross R, B sees
//! the TTL lowered by one, R's counters account for every packet, and a loader restart
//! keeps forwarding without loss.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{require_root, udp, Bpffs};
use dcmesh_loader::Tables;
use dcmesh_schema::{Counter, Verdict};
use dcmesh_testbed::{netns::veth, Netns};

const LOADER: &str = env!("CARGO_BIN_EXE_dcmesh-loader");

struct Mesh {
    a: Netns,
    r: Netns,
    b: Netns,
    pin: PathBuf,
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-br", "link", "show", dev]).unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(2)
        .expect("mac in `ip -br link`")
        .to_string()
}

impl Mesh {
    fn new(pin_root: &Path) -> Self {
        let (a, r, b) = (
            Netns::create("fwd-a").unwrap(),
            Netns::create("fwd-r").unwrap(),
            Netns::create("fwd-b").unwrap(),
        );
        veth(&a, "a0", &r, "r0").unwrap();
        veth(&r, "r1", &b, "b0").unwrap();
        for (ns, dev, v4, v6) in [
            (&a, "a0", "10.0.1.2/24", "2001:db8:1::2/64"),
            (&r, "r0", "10.0.1.1/24", "2001:db8:1::1/64"),
            (&r, "r1", "10.0.2.1/24", "2001:db8:2::1/64"),
            (&b, "b0", "10.0.2.2/24", "2001:db8:2::2/64"),
        ] {
            ns.ip(&["addr", "add", v4, "dev", dev]).unwrap();
            ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])
                .unwrap();
        }
        a.ip(&["route", "add", "default", "via", "10.0.1.1"])
            .unwrap();
        a.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"])
            .unwrap();
        b.ip(&["route", "add", "default", "via", "10.0.2.1"])
            .unwrap();
        b.ip(&["-6", "route", "add", "default", "via", "2001:db8:2::1"])
            .unwrap();
        // R must not forward by itself: every forwarded packet is XDP's doing.
        r.sysctl("net.ipv4.ip_forward", "0").unwrap();
        r.sysctl("net.ipv6.conf.all.forwarding", "0").unwrap();
        // Hosts receive XDP-redirected frames on their veth only with GRO (or XDP) on.
        a.exec("ethtool", &["-K", "a0", "gro", "on"]).unwrap();
        b.exec("ethtool", &["-K", "b0", "gro", "on"]).unwrap();
        let pin = pin_root.join(r.name());
        Mesh { a, r, b, pin }
    }

    fn loader(&self, args: &[&str]) -> String {
        let pin = self.pin.to_str().unwrap();
        let mut full = vec![LOADER, "--pin-dir", pin];
        full.extend_from_slice(args);
        let out = self.r.exec(full[0], &full[1..]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn tables(&self) -> Tables {
        Tables::open_pinned(&self.pin).unwrap()
    }

    /// Sends `n` datagrams A→B to `to` and returns what B received.
    fn udp(
        &self,
        to: SocketAddr,
        first: u64,
        n: u64,
        pps: u64,
        during: impl FnOnce(),
    ) -> Vec<(u64, u8)> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let recv = s.spawn(|| {
                self.b
                    .enter(|| {
                        let bind = if to.is_ipv6() {
                            "[::]:5000"
                        } else {
                            "0.0.0.0:5000"
                        };
                        let r = udp::Receiver::bind(bind.parse().unwrap());
                        tx.send(()).unwrap();
                        r.collect(Duration::from_millis(1000))
                    })
                    .unwrap()
            });
            rx.recv().unwrap();
            let send = s.spawn(|| self.a.enter(|| udp::send(to, first, n, pps)).unwrap());
            during();
            send.join().unwrap();
            recv.join().unwrap()
        })
    }
}

fn assert_all_arrived(got: &[(u64, u8)], first: u64, n: u64, ttl: u8, what: &str) {
    let mut seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let missing = n - seqs
        .iter()
        .filter(|s| (first..first + n).contains(s))
        .count() as u64;
    assert_eq!(missing, 0, "{what}: {missing} of {n} datagrams lost");
    assert!(
        got.iter().all(|g| g.1 == ttl),
        "{what}: B must see TTL/hop limit {ttl}, saw {:?}",
        got.iter()
            .map(|g| g.1)
            .collect::<std::collections::BTreeSet<_>>()
    );
}

#[test]
fn forwards_through_namespaces_and_survives_restart() {
    require_root();
    let bpffs = Bpffs::mount("fwd");
    let m = Mesh::new(&bpffs.0);
    let v4: SocketAddr = "10.0.2.2:5000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8:2::2]:5000".parse().unwrap();

    // Without dcmesh nothing crosses R (kernel forwarding is off).
    m.a.exec("ping", &["-c", "1", "-W", "1", "10.0.1.1"])
        .expect("A reaches R");
    let got = m.udp(v4, 0, 20, 1000, || {});
    assert!(
        got.is_empty(),
        "R forwarded without dcmesh: {} datagrams",
        got.len()
    );

    // Attach and write routes through the loader CLI only.
    let out = m.loader(&["attach", "r0", "r1"]);
    assert!(out.contains("r0: attached (native XDP)"), "{out}");
    let mac_a = mac_of(&m.a, "a0");
    let mac_b = mac_of(&m.b, "b0");
    m.loader(&["nexthop", "add", "1", "--dev", "r1", "--lladdr", &mac_b]);
    m.loader(&["nexthop", "add", "2", "--dev", "r0", "--lladdr", &mac_a]);
    for (p, how) in [
        ("10.0.2.0/24", "via 1"),
        ("10.0.1.0/24", "via 2"),
        ("2001:db8:2::/64", "via 1"),
        ("2001:db8:1::/64", "via 2"),
        ("10.0.1.1/32", "local"),
        ("10.0.2.1/32", "local"),
        ("2001:db8:1::1/128", "local"),
        ("2001:db8:2::1/128", "local"),
    ] {
        let mut args = vec!["route", "add", p];
        args.extend(how.split(' '));
        m.loader(&args);
    }
    let listed = m.loader(&["route", "list"]);
    assert_eq!(listed.lines().count(), 8, "{listed}");

    // Ping both ways in both families: replies come back with TTL 64 - 1.
    for dst in ["10.0.2.2", "2001:db8:2::2"] {
        let out =
            m.a.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", dst])
                .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("3 received"), "ping {dst}: {text}");
        assert!(
            text.contains("ttl=63"),
            "ping {dst}: reply TTL must be 63: {text}"
        );
    }

    // UDP in each family: every datagram arrives with TTL 63 and R counts each one.
    let mut seq = 0;
    for (to, counter) in [(v4, Counter::FwdV4), (v6, Counter::FwdV6)] {
        let before = m.tables().counters().unwrap();
        let got = m.udp(to, seq, 2000, 10_000, || {});
        let delta = m.tables().counters().unwrap().since(&before);
        assert_all_arrived(&got, seq, 2000, 63, &format!("udp {to}"));
        assert_eq!(
            delta.get(counter).packets,
            2000,
            "{to}: {} counted",
            counter.name()
        );
        assert_eq!(delta.verdict(Verdict::Drop), 0, "{to}: no drops");
        seq += 2000;
    }

    // The kernel forwarded nothing itself.
    let nstat = m.r.exec("cat", &["/proc/net/snmp"]).unwrap();
    let snmp = String::from_utf8_lossy(&nstat.stdout);
    let ip: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Ip:")).collect();
    let fwd_col = ip[0]
        .split_whitespace()
        .position(|c| c == "ForwDatagrams")
        .unwrap();
    assert_eq!(
        ip[1].split_whitespace().nth(fwd_col),
        Some("0"),
        "kernel forwarded: {snmp}"
    );

    // Restart the loader mid-stream: program replaced atomically, tables kept, no loss.
    let got = m.udp(v4, seq, 6000, 3000, || {
        std::thread::sleep(Duration::from_millis(700));
        let out = m.loader(&["attach", "r0", "r1"]);
        assert!(out.contains("r0: program replaced, tables kept"), "{out}");
        assert!(out.contains("r1: program replaced, tables kept"), "{out}");
    });
    assert_all_arrived(&got, seq, 6000, 63, "udp across a loader restart");
    assert_eq!(m.tables().routes().unwrap().len(), 8);
    seq += 6000;

    // Detached, R forwards nothing again: it really was the XDP program.
    m.loader(&["detach", "r0", "r1"]);
    let got = m.udp(v4, seq, 20, 1000, || {});
    assert!(got.is_empty(), "forwarded after detach: {}", got.len());
    m.loader(&["teardown"]);
    assert!(!m.pin.join("maps").exists());
}
