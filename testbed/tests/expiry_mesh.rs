//! TTL expiry in a real dcmesh mesh, both families: on the diamond with daemons
//! (testbed/topologies/diamond.toml, c1 — n1 ⟨ n2 | n3 ⟩ n4 — c2, active path over n2),
//! probes from c1 to c2 that leave with TTL / hop limit 2 reach n2 with 1 left; its XDP
//! datapath hands them to the kernel, which drops them and sends an ICMP / ICMPv6
//! time-exceeded error back. The source's listeners must decode every such error to the
//! probe's flow, sequence number and send time, and the router address must name the
//! second router of the path the tables give (n2, unless the daemons still prefer n3).
//! Needs root and the dcmesh daemon binary.
mod common;

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use dcmesh_testbed::{
    mesh::{Controller, Mesh},
    probe::{self, Family, FlowSpec, Probes, PROBE_PORT},
    scenario, Topology,
};

/// Sets the hop limit of an IPv6 socket's unicast datagrams.
fn set_hops6(s: &std::net::UdpSocket, hops: libc::c_int) {
    // SAFETY: valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            (&hops as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn probes_expiring_in_the_mesh_name_the_router_in_both_families() {
    common::require_root();
    let bin = common::dcmesh_bin();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/diamond.toml");
    let mut topo = Topology::load(&path).unwrap();
    topo.faults.clear();
    let mut mesh = Mesh::build(topo, Controller::Daemon { bin }).unwrap();
    scenario::wait_converged(
        &mut mesh,
        Duration::from_secs(60),
        Duration::from_millis(25),
        &AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (c1, c2) = (0, 1);
    // The router where TTL / hop limit 2 runs out: the second on each family's path.
    let second = |mesh: &mut Mesh, fam| {
        let snap = mesh.snapshot();
        let p = scenario::path_of(mesh, &snap, c1, c2, fam);
        p.split(' ').nth(1).unwrap_or("-").to_string()
    };
    let mut expected = vec![second(&mut mesh, Family::V4), second(&mut mesh, Family::V6)];
    let flows: Vec<FlowSpec> = [
        SocketAddr::from((mesh.clients[c2].addr4, PROBE_PORT)),
        SocketAddr::from((mesh.clients[c2].addr6, PROBE_PORT)),
    ]
    .into_iter()
    .map(|dst| FlowSpec {
        from: c1,
        to: c2,
        rate: 50,
        dst,
    })
    .collect();
    let senders: Vec<std::net::UdpSocket> = flows
        .iter()
        .map(|f| {
            let s = mesh.clients[c1]
                .ns
                .enter(|| probe::sender(f.family()))
                .unwrap()
                .unwrap();
            match f.family() {
                Family::V4 => s.set_ttl(2).unwrap(),
                Family::V6 => set_hops6(&s, 2),
            }
            s
        })
        .collect();
    let icmp = [Family::V4, Family::V6]
        .into_iter()
        .map(|fam| {
            let fd = mesh.clients[c1]
                .ns
                .enter(|| probe::listener(fam))
                .unwrap()
                .unwrap();
            (fam, fd)
        })
        .collect();
    let probes = Probes::start(flows, senders, Vec::new(), icmp, Instant::now()).unwrap();
    // Not a timing assertion: a bound on a hung test.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30)
        && !probes.records().iter().all(|r| r.expired.len() >= 20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let recs = probes.stop(Duration::from_millis(300));
    expected.extend([second(&mut mesh, Family::V4), second(&mut mesh, Family::V6)]);
    assert!(
        expected.iter().all(|n| n == "n2" || n == "n3"),
        "paths over {expected:?}"
    );
    for (fam, r) in ["v4", "v6"].iter().zip(&recs) {
        assert!(
            r.expired.len() >= 20,
            "{fam}: {} time-exceeded errors decoded for {} probes sent",
            r.expired.len(),
            r.sent.len()
        );
        for e in &r.expired {
            let at = scenario::router_name(&mesh, e.router);
            assert!(
                expected.contains(&at),
                "{fam}: expired at {} ({at}), paths over {expected:?}",
                e.router
            );
            assert_eq!(r.sent.get(e.seq as usize).copied(), Some(e.sent_ns));
        }
        println!(
            "{fam}: {} of {} probes sent came back as time exceeded from {}",
            r.expired.len(),
            r.sent.len(),
            r.expired[0].router
        );
    }
}
