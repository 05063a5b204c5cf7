//! Helpers shared by the testbed's namespace tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests build namespaces and load eBPF; run them as root (`cargo xtask test`)"
    );
}

/// The dcmesh daemon binary: $DCMESH_BIN, or the one `cargo test --workspace` built next
/// to this test's target directory.
pub fn dcmesh_bin() -> PathBuf {
    dcmesh_testbed::daemons::find_bin()
        .filter(|p| p.is_file())
        .expect(
            "the dcmesh daemon binary is needed: run the workspace tests (`cargo xtask test`), \
             or build it with `cargo build -p dcmesh-control --bin dcmesh` (same profile and \
             target directory), or set DCMESH_BIN",
        )
}

/// Both families were measured (the default): every flow has its IPv6 twin, and each
/// delivered something.
pub fn assert_both_families(r: &dcmesh_testbed::report::Report) {
    use dcmesh_testbed::probe::Family;
    let v6 = r.flows.iter().filter(|f| f.family == Family::V6).count();
    assert!(v6 > 0 && v6 * 2 == r.flows.len(), "IPv6 twins missing");
    for f in &r.flows {
        assert!(
            f.delivered > 0,
            "{}→{} {}: nothing delivered",
            f.from,
            f.to,
            f.family
        );
    }
}

/// Runs `topo`'s fault script on a mesh of real daemons, 4 s of tail after the last
/// fault, and prints the summary. The mesh is returned for its logs.
pub fn run_with_daemons(
    topo: dcmesh_testbed::Topology,
) -> (dcmesh_testbed::mesh::Mesh, dcmesh_testbed::report::Report) {
    use dcmesh_testbed::{
        mesh::{Controller, Mesh},
        scenario::{self, RunConfig},
    };
    let timeline = topo.timeline().unwrap();
    let mut mesh = Mesh::build(topo, Controller::Daemon { bin: dcmesh_bin() }).unwrap();
    let cfg = RunConfig {
        tail: std::time::Duration::from_secs(4),
        ..RunConfig::default()
    };
    let r = scenario::run(
        &mut mesh,
        &timeline,
        &cfg,
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", r.summary());
    (mesh, r)
}
