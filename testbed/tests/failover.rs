//! Fast failover with the real daemon on the diamond (testbed/topologies/diamond.toml):
//! carrier loss and silent death of the active link, then controller-only restarts of a
//! transit node on the active path and of a node serving a client (whose access traffic
//! the kernel FIB forwards). Asserts correctness only — every failure is repaired before
//! the next fault, no loop of any kind, at least 99.9 % of the probes sent outside
//! convergence windows arrive, and neither controller restart loses a probe — and prints
//! the measured times. Needs root.
mod common;

use std::time::Duration;

use dcmesh_testbed::{units::Dur, Topology};

#[test]
fn diamond_fails_over_without_loops_or_loss_outside_convergence() {
    common::require_root();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/diamond.toml");
    let mut topo = Topology::load(&path).unwrap();
    // The file's script, compressed: a fault every 5 s.
    for (i, f) in topo.faults.iter_mut().enumerate() {
        f.at = Dur(Duration::from_secs(3 + 5 * i as u64));
    }
    let (mesh, r) = common::run_with_daemons(topo);
    let logs = || {
        (0..mesh.nodes.len())
            .map(|i| format!("--- {} ---\n{}", mesh.nodes[i].name, mesh.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    common::assert_both_families(&r);
    assert_eq!(r.faults.len(), 6);
    for f in &r.faults[..4] {
        assert!(
            !f.broke || f.restored_ms.is_some(),
            "forwarding not repaired after {}:\n{}\n{}",
            f.action,
            r.summary(),
            logs()
        );
    }
    assert!(
        r.faults[0].broke,
        "the carrier loss did not affect the active path"
    );
    assert!(
        r.faults[2].broke,
        "the silent death did not affect the active path"
    );
    let d = &r.delivery_outside_windows;
    assert!(
        d.delivered * 1000 >= d.sent * 999,
        "probes lost outside convergence windows ({} of {}):\n{}",
        d.sent - d.delivered,
        d.sent,
        r.summary()
    );
    assert_eq!(r.loops(), 0, "loops:\n{}\n{}", r.summary(), logs());
    for restart in &r.faults[4..] {
        assert!(restart.action.starts_with("controller-restart"));
        assert!(
            restart.lost_per_flow.iter().all(|(_, lost)| *lost == 0),
            "{} lost probes:\n{}\n{}",
            restart.action,
            r.summary(),
            logs()
        );
    }
}
