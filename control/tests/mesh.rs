//! Real daemons in network namespaces: convergence, forwarding through XDP with kernel
//! forwarding off, rejection of injected adverts, and rerouting around a dead node.
//! Needs root. Run with `cargo test -p dcmesh-control --test mesh`.
mod common;

use std::time::Duration;

use common::{unix_now, Mesh, Node, DEAD_MS, HELLO_MS};
use dcmesh_control::{
    cert::Certificate,
    identity::Identity,
    wire::{AdvLink, Advert},
};

fn line() -> Vec<(usize, usize)> {
    vec![(0, 1), (1, 2), (2, 3), (3, 4)]
}

fn ring() -> Vec<(usize, usize)> {
    let mut l = line();
    l.push((4, 0));
    l
}

#[test]
fn line_of_five_converges_and_forwards_through_xdp() {
    let m = Mesh::new("line", 5, &line());
    let all: Vec<usize> = (0..5).collect();
    m.wait_converged(&all);
    for ns in &m.nodes {
        let v = ns
            .ns
            .exec("sysctl", &["-n", "net.ipv4.ip_forward"])
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "0");
    }
    // Node 0 reaches node 4 over three XDP hops; its only route is through node 1.
    let r = m.route_to(0, 4).unwrap();
    assert_eq!(r.2, m.nodes[1].key.id().to_string());
    assert_eq!(r.3, "-", "a line has no loop-free alternate");
    let before: Vec<u64> = (1..4).map(|i| m.counter(i, "fwd_v4")).collect();
    let before6: Vec<u64> = (1..4).map(|i| m.counter(i, "fwd_v6")).collect();
    assert!(m.ping(0, 4, false), "IPv4 ping 0 -> 4 failed\n{}", m.log(0));
    assert!(m.ping(4, 0, true), "IPv6 ping 4 -> 0 failed\n{}", m.log(4));
    assert_eq!(m.udp(0, 4, 20), 20, "UDP datagrams lost on 0 -> 4");
    for (k, i) in (1..4).enumerate() {
        let fwd = m.counter(i, "fwd_v4") - before[k];
        // 3 echo requests + 3 replies + 20 datagrams cross every middle node.
        assert!(
            fwd >= 26,
            "node {i} forwarded only {fwd} IPv4 packets in XDP"
        );
        assert!(
            m.counter(i, "fwd_v6") - before6[k] >= 6,
            "node {i}: IPv6 not forwarded in XDP"
        );
    }
    // The same routes are in the kernel FIB under the dcmesh protocol number.
    let fib = m.nodes[0]
        .ns
        .ip(&["route", "show", "proto", "200"])
        .unwrap();
    let fib = String::from_utf8_lossy(&fib.stdout);
    for j in 1..5 {
        assert!(
            fib.contains(&Node::prefix(j)),
            "kernel FIB lacks {}:\n{fib}",
            Node::prefix(j)
        );
    }
    let metrics = m.metrics(2);
    for name in [
        "dcmesh_link_cost{",
        "dcmesh_adverts_received_total",
        "dcmesh_spf_duration_seconds_count",
        "dcmesh_datapath_packets_total{counter=\"fwd_v4\"}",
        "dcmesh_own_cert_valid 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // Carrier loss: node 1 sees its link to node 2 go at once (no waiting for silence).
    m.nodes[2].ns.ip(&["link", "set", "to1", "down"]).unwrap();
    m.wait_for("carrier loss on node 1", Duration::from_secs(5), |m| {
        m.status(1)["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "to2" && i["up"] == false)
    });
    assert!(m.log(1).contains("carrier lost"), "{}", m.log(1));
    assert!(m.log(1).contains("next hop(s) marked down"), "{}", m.log(1));
}

/// An advert for node `origin` with its real key and certificate unless overridden.
fn craft(
    m: &Mesh,
    origin: usize,
    seq: u64,
    expires: u64,
    cert: &Certificate,
    signer: &Identity,
    prefix: &str,
) -> Vec<u8> {
    Advert {
        origin: m.nodes[origin].key.id(),
        seq,
        expires,
        cert: cert.encode(),
        links: vec![AdvLink {
            neighbour: m.nodes[0].key.id(),
            cost: 256,
        }],
        prefixes: vec![prefix.parse().unwrap()],
    }
    .encode(|b| signer.sign(b))
    .unwrap()
}

#[test]
fn ring_of_five_rejects_bad_adverts_and_reroutes_around_a_dead_node() {
    let mut m = Mesh::new("ring", 5, &ring());
    let all: Vec<usize> = (0..5).collect();
    m.wait_converged(&all);
    // 0 -> 2: primary through 1 (two hops). Node 4 is as far from 2 as node 0 is, so it
    // is no downstream alternate: alternates must be strictly nearer, which keeps
    // fast failover loop-free under any number of simultaneous failures.
    let r = m.route_to(0, 2).unwrap();
    assert_eq!(r.2, m.nodes[1].key.id().to_string());
    assert_eq!(r.3, "-", "no alternate: {r:?}");
    assert!(m.ping(0, 2, false));

    // The radio model reports node 0's link to node 1 fading to 8 dB (below the 10 dB
    // floor): its cost rises fourfold before any hello is lost, and 0 -> 2 moves to the
    // other side of the ring. When the SNR recovers, the route comes back.
    let via = |m: &Mesh, n: usize| {
        m.route_to(0, 2)
            .is_some_and(|r| r.2 == m.nodes[n].key.id().to_string())
    };
    m.set_snr(0, 1, 8.0);
    m.wait_for(
        "0 -> 2 to avoid the fading link",
        Duration::from_secs(10),
        |m| via(m, 4),
    );
    // Node 1 (one hop from 2) is now nearer to 2 than node 0 (three hops): a downstream
    // alternate over the fading link.
    m.wait_for(
        "0 -> 2 to get node 1 as alternate",
        Duration::from_secs(5),
        |m| {
            m.route_to(0, 2)
                .is_some_and(|r| r.3 == m.nodes[1].key.id().to_string())
        },
    );
    // The datapath holds the alternate ready: primary towards node 4's MAC, alternate
    // towards node 1's, both out of the right interfaces.
    let datapath = |m: &Mesh| {
        let dir = m.pin_dir(0);
        m.nodes[0]
            .ns
            .enter(move || {
                let t = dcmesh_loader::Tables::open_pinned(&dir).unwrap();
                (t.lookup(Node::addr(2).parse().unwrap()), t.nexthops())
            })
            .unwrap()
    };
    m.wait_for(
        "node 0's datapath to hold the alternate",
        Duration::from_secs(5),
        |m| {
            matches!(
                datapath(m).0,
                Some(dcmesh_loader::RouteTarget::Via { alt: Some(_), .. })
            )
        },
    );
    let (target, nhs) = datapath(&m);
    let Some(dcmesh_loader::RouteTarget::Via { id, alt: Some(alt) }) = target else {
        panic!("node 0's datapath route to node 2 has no alternate: {target:?}");
    };
    let mac_of = |id: u32| {
        nhs.iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.dst_mac)
            .unwrap()
    };
    let iface_mac = |n: usize, ifname: &str| {
        let ifname = ifname.to_string();
        m.nodes[n]
            .ns
            .enter(move || dcmesh_loader::interface_info(&ifname).unwrap().mac)
            .unwrap()
    };
    assert_eq!(mac_of(id), iface_mac(4, "to0"));
    assert_eq!(mac_of(alt), iface_mac(1, "to0"));
    let link = m.query(0, dcmesh_control::api::Query::Neighbors).unwrap();
    let to1 = link
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["iface"] == "to1")
        .unwrap()
        .clone();
    assert!(to1["cost"].as_u64().unwrap() >= 1024, "{to1}");
    assert_eq!(
        to1["etx"].as_f64(),
        Some(1.0),
        "no loss: the move came from SNR alone"
    );
    m.set_snr(0, 1, 30.0);
    m.wait_for("0 -> 2 to return to node 1", Duration::from_secs(15), |m| {
        via(m, 1)
    });
    m.wait_converged(&all);

    // A replay needs an older advert: wait for node 2's periodic refresh (5 s).
    m.wait_for(
        "node 2 to originate a second advert",
        Duration::from_secs(10),
        |m| m.status(2)["seq"].as_u64().unwrap() >= 2,
    );
    m.wait_converged(&all);
    let snapshot: Vec<_> = (0..5).map(|i| m.routes(i)).collect();
    let now = unix_now();
    let seq = m.status(2)["seq"].as_u64().unwrap();
    let key2 = &m.nodes[2].key;
    let cert2 = m.nodes[2].cert.clone();
    let expired_cert = m.issue(key2, 2, now - 7200, now - 3600);
    let p2 = Node::prefix(2);
    // Every injected advert claims node 2 now only links to node 0: accepted, it would
    // change routes everywhere.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad_signature",
            craft(
                &m,
                2,
                seq + 1000,
                now + 30,
                &cert2,
                &Identity::generate(),
                &p2,
            ),
        ),
        ("replayed", craft(&m, 2, 1, now + 30, &cert2, key2, &p2)),
        (
            "expired",
            craft(&m, 2, seq + 1000, now - 1, &cert2, key2, &p2),
        ),
        (
            "cert_expired",
            craft(&m, 2, seq + 1000, now + 30, &expired_cert, key2, &p2),
        ),
        (
            "prefix_not_granted",
            craft(&m, 2, seq + 1000, now + 30, &cert2, key2, &Node::prefix(3)),
        ),
    ];
    for (reason, raw) in &cases {
        let before = m.rejected(1, reason);
        m.inject(0, "to1", raw);
        m.wait_for(
            &format!("node 1 to count a {reason} advert"),
            Duration::from_secs(5),
            |m| m.rejected(1, reason) > before,
        );
        std::thread::sleep(Duration::from_millis(3 * HELLO_MS));
        for (i, snap) in snapshot.iter().enumerate() {
            assert_eq!(
                &m.routes(i),
                snap,
                "a {reason} advert changed node {i}'s routes"
            );
        }
    }

    // Kill node 1: its neighbours notice the silence, its links vanish from their
    // adverts, its prefix is withdrawn and 0 -> 2 goes the other way round.
    let fwd4 = m.counter(4, "fwd_v4");
    m.kill(1);
    let alive = [0, 2, 3, 4];
    m.wait_for(
        "node 1's routes to be withdrawn",
        Duration::from_secs(10 + DEAD_MS / 1000),
        |m| {
            alive.iter().all(|&i| m.route_to(i, 1).is_none())
                && m.route_to(0, 2)
                    .is_some_and(|r| r.2 == m.nodes[4].key.id().to_string())
        },
    );
    assert!(
        m.ping(0, 2, false),
        "0 -> 2 after node 1 died\n{}",
        m.log(0)
    );
    assert!(
        m.counter(4, "fwd_v4") >= fwd4 + 6,
        "traffic did not go through node 4"
    );
}
