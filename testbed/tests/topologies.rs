//! Every checked-in topology parses, validates, and has a timeline.
use dcmesh_testbed::Topology;

#[test]
fn example_topologies_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let t = Topology::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            t.timeline().unwrap();
            assert!(!t.clients.is_empty(), "{}: no clients", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} topologies in {}", dir.display());
}
