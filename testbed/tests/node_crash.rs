//! A node crash on a 20-node mesh (testbed/topologies/node-crash20.toml): the crashed
//! node's neighbours all lose it at once and hold their routes (RFC 8333); their held
//! alternates must not close a loop among them (they once did, for the whole hold: 20 to
//! 35 polls of the tables, 50 ms apart, saw it), and the mesh must route around the node
//! and take it back after its restart. Needs root.
//!
//! Not asserted here: the few-ms microloops toward the crashed node's own prefixes while
//! its neighbours detect the loss a hello interval apart (seen in some runs as one poll
//! or a burst of TTL expiries). They are issue 4's open point; the test prints them.
mod common;

use dcmesh_testbed::Topology;

#[test]
fn neighbours_of_a_crashed_node_do_not_loop_while_they_hold() {
    common::require_root();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/node-crash20.toml");
    let (_mesh, r) = common::run_with_daemons(Topology::load(&path).unwrap());
    assert_eq!(r.faults.len(), 2);
    assert!(
        r.faults[0].table_loop_polls <= 2,
        "a loop outlived the detection spread ({} polls):\n{}",
        r.faults[0].table_loop_polls,
        r.summary()
    );
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
