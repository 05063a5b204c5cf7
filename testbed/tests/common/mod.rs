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
