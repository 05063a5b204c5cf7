//! Daemon life cycle with real daemons: clean shutdown removes kernel routes but keeps
//! the pinned XDP datapath; a restart adopts it and continues the advert sequence; an
//! expired own certificate is loud, and a renewed one is picked up without a restart.
//! Needs root. Run with `cargo test -p dcmesh-control --test lifecycle`.
mod common;

use std::time::Duration;

use common::{unix_now, Mesh, Node};
use dcmesh_control::api::Query;

/// Node `i`'s dcmesh kernel routes, both families.
fn fib(m: &Mesh, i: usize) -> String {
    ["-4", "-6"]
        .iter()
        .map(|f| {
            let out = m.nodes[i]
                .ns
                .ip(&[f, "route", "show", "proto", "200"])
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

#[test]
fn restart_keeps_the_datapath_and_certificates_renew_live() {
    let mut m = Mesh::new("life", 3, &[(0, 1), (1, 2)]);
    m.wait_converged(&[0, 1, 2]);
    assert!(m.ping(0, 2, false));
    let before = fib(&m, 1);
    assert!(
        before.contains(&Node::prefix(2)) && before.contains(&Node::prefix6(2)),
        "{before}"
    );
    let seq_before = m.status(1)["seq"].as_u64().unwrap();

    // Clean shutdown: kernel routes go, the pinned datapath and its routes stay.
    m.stop(1);
    assert_eq!(
        fib(&m, 1).trim(),
        "",
        "kernel routes left behind after shutdown"
    );
    let pinned = m.nodes[1]
        .ns
        .enter({
            let dir = m.pin_dir(1);
            move || dcmesh_loader::Tables::open_pinned(&dir).and_then(|t| t.routes())
        })
        .unwrap()
        .unwrap();
    for j in [0, 2] {
        let p: ipnet::IpNet = Node::prefix(j).parse().unwrap();
        assert!(
            pinned.iter().any(|(q, _)| *q == p),
            "pinned routes lost {p}: {pinned:?}"
        );
    }

    // Restart: the XDP program is swapped in place, the sequence number continues.
    m.start(1);
    m.wait_for("node 1 to restart", Duration::from_secs(10), |m| {
        m.query(1, Query::Status).is_ok()
    });
    m.wait_converged(&[0, 1, 2]);
    assert!(
        m.log(1).contains("Replaced"),
        "restart did not reuse the pinned XDP link\n{}",
        m.log(1)
    );
    // Its first advert after the start-up hold continues above the persisted number.
    m.wait_for("node 1 to originate again", Duration::from_secs(10), |m| {
        m.status(1)["seq"].as_u64().unwrap() > seq_before
    });
    assert!(m.ping(0, 2, false));

    // Node 0's certificate expires: a loud error, a metric, and the mesh stops trusting it.
    let now = unix_now();
    let expired = m.issue(&m.nodes[0].key, 0, now - 7200, now - 3600);
    std::fs::write(m.nodes[0].dir.join("node.cert"), expired.to_file_text()).unwrap();
    m.wait_for(
        "node 0 to notice its expired certificate",
        Duration::from_secs(5),
        |m| m.status(0)["cert"]["valid"] == false,
    );
    assert!(
        m.log(0).contains("OWN CERTIFICATE NOT VALID"),
        "{}",
        m.log(0)
    );
    let metrics = m.metrics(0);
    assert!(metrics.contains("dcmesh_own_cert_valid 0"), "{metrics}");
    m.wait_for("node 1 to drop node 0", Duration::from_secs(10), |m| {
        m.route_to(1, 0).is_none()
    });
    assert!(
        m.status(1)["hellos_rejected"]["cert_expired"]
            .as_u64()
            .unwrap()
            > 0
    );

    // A renewed certificate is picked up without a restart.
    let renewed = m.issue(&m.nodes[0].key, 0, now - 60, now + 3600);
    std::fs::write(m.nodes[0].dir.join("node.cert"), renewed.to_file_text()).unwrap();
    m.wait_for(
        "node 0 to pick up its renewed certificate",
        Duration::from_secs(5),
        |m| m.status(0)["cert"]["valid"] == true,
    );
    m.wait_converged(&[0, 1, 2]);
    assert!(m.ping(0, 2, false), "{}", m.diag());
}

#[test]
fn a_crashed_daemon_restarts_without_dropping_transit_traffic() {
    // Neighbours wait 3 s before declaring a silent node dead: long enough for a restart.
    let mut m = Mesh::with_dead_interval("crash", 3, &[(0, 1), (1, 2)], 3000);
    m.wait_converged(&[0, 1, 2]);
    // 80 pings, 50 ms apart, from node 0 to node 2 through node 1's XDP datapath.
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            m.nodes[0].ns.name(),
            "ping",
            "-q",
            "-i",
            "0.05",
            "-c",
            "80",
            "-W",
            "1",
        ])
        .args(["-I", &Node::addr(0), &Node::addr(2)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    m.kill(1); // a crash: no clean-up at all
    m.start(1);
    m.wait_for("node 1 to answer again", Duration::from_secs(10), |m| {
        m.query(1, Query::Status).is_ok()
    });
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("80 packets transmitted, 80 received"),
        "pings lost while node 1's daemon restarted:\n{text}\n{}",
        m.diag()
    );
    assert!(m.log(1).contains("Replaced"), "{}", m.log(1));
    m.wait_converged(&[0, 1, 2]);
}
