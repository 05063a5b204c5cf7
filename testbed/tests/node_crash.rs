//! A node crash on a 20-node mesh (testbed/topologies/node-crash20.toml): the crashed
//! node's neighbours all lose it at once and hold their routes (RFC 8333); their held
//! alternates must not close a loop among them (they once did, for the whole hold: 20 to
//! 35 polls of the tables, 50 ms apart, saw it), and their repairs must not loop either
//! (they did for a few ms while the neighbours declared the loss at nearly the same
//! moment; the daemon now orders those declarations, see "Ordered loss detection" in
//! control/src/neighbour.rs). The mesh must route around the node and take it back after
//! its restart. Needs root.
mod common;

use dcmesh_testbed::Topology;

#[test]
fn neighbours_of_a_crashed_node_do_not_loop_while_they_hold() {
    common::require_root();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/node-crash20.toml");
    let (_mesh, r) = common::run_with_daemons(Topology::load(&path).unwrap());
    assert_eq!(r.faults.len(), 2);
    // No loop at all: no TTL expiry, no probe over the mesh diameter, no poll of the
    // tables that finds one.
    assert_eq!(r.loops(), 0, "loops:\n{}", r.summary());
    // The crash broke the paths through n5 (and n5's own prefixes, unreachable until it
    // restarts); the restart was repaired before the run ended.
    assert!(r.faults[0].broke, "{}", r.summary());
    assert!(
        r.faults[1].restored_ms.is_some(),
        "not repaired after the restart:\n{}",
        r.summary()
    );
    let ratio = r.delivery_outside_windows.ratio.unwrap();
    assert!(ratio >= 0.999, "delivery outside windows {ratio}");
}
