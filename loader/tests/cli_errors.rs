//! Bad input to `dcmesh-loader` gets a clear error and a non-zero exit, never a panic.

mod common;

use std::process::Command;

use common::{require_root, Bpffs};
use dcmesh_testbed::Netns;

const LOADER: &str = env!("CARGO_BIN_EXE_dcmesh-loader");

/// Runs the loader in `ns` with `pin`; returns (success, stderr).
fn loader(ns: &Netns, pin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), LOADER, "--pin-dir", pin])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    (out.status.success(), err)
}

fn fails_with(ns: &Netns, pin: &str, args: &[&str], msg: &str) {
    let (ok, err) = loader(ns, pin, args);
    assert!(!ok, "{args:?} must fail");
    assert!(err.contains(msg), "{args:?}: expected \"{msg}\" in: {err}");
}

#[test]
fn not_root_is_a_clear_error() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            LOADER,
        ])
        .args(["--pin-dir", "/nonexistent", "attach", "lo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
}

#[test]
fn bad_input_is_refused_clearly() {
    require_root();
    let ns = Netns::create("cli").unwrap();
    let bpffs = Bpffs::mount("cli");
    let pin = format!("{}/pins", bpffs.0.display());
    let p = pin.as_str();

    fails_with(&ns, p, &["status"], "pinned maps not found");
    fails_with(
        &ns,
        p,
        &["attach", "nosuch0"],
        "interface \"nosuch0\" not found",
    );
    let (ok, err) = loader(&ns, p, &["attach", "lo", "--mode", "generic"]);
    assert!(ok, "{err}");
    fails_with(
        &ns,
        p,
        &["route", "add", "10.0.0.0/33", "local"],
        "is not a prefix",
    );
    fails_with(
        &ns,
        p,
        &["route", "add", "10.0.0.0/8", "via"],
        "needs a next hop id",
    );
    fails_with(
        &ns,
        p,
        &["route", "add", "10.0.0.0/8", "sideways"],
        "unknown route kind",
    );
    fails_with(
        &ns,
        p,
        &["route", "add", "10.0.0.0/8", "via", "7"],
        "next hop 7 does not exist",
    );
    fails_with(
        &ns,
        p,
        &["route", "del", "10.0.0.0/8"],
        "no route for 10.0.0.0/8",
    );
    fails_with(
        &ns,
        p,
        &["nexthop", "add", "1", "--dev", "lo", "--lladdr", "zz"],
        "is not a MAC",
    );
    fails_with(
        &ns,
        p,
        &[
            "nexthop",
            "add",
            "1",
            "--dev",
            "nosuch0",
            "--lladdr",
            "02:00:00:00:00:01",
        ],
        "not found",
    );
    fails_with(
        &ns,
        p,
        &[
            "nexthop",
            "add",
            "0",
            "--dev",
            "lo",
            "--lladdr",
            "02:00:00:00:00:01",
        ],
        "out of range",
    );
    let (ok, err) = loader(
        &ns,
        p,
        &[
            "nexthop",
            "add",
            "1",
            "--dev",
            "lo",
            "--lladdr",
            "02:00:00:00:00:01",
        ],
    );
    assert!(ok, "{err}");
    let (ok, err) = loader(&ns, p, &["route", "add", "10.0.0.0/8", "via", "1"]);
    assert!(ok, "{err}");
    fails_with(&ns, p, &["nexthop", "del", "1"], "used by 1 route");
    fails_with(&ns, p, &["detach", "eth9"], "not attached");
    let (ok, err) = loader(&ns, p, &["teardown"]);
    assert!(ok, "{err}");
}

/// Creates a `PERCPU_ARRAY` map (key 4, value 16) with `entries` entries and pins it at
/// `path`, as an older dcmesh with fewer counters would have (raw `bpf(2)`: aya has no
/// public map-creation call).
fn pin_percpu_array(path: &str, entries: u32) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
    let mut create = [0u32; 32];
    create[..4].copy_from_slice(&[BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, entries]);
    // SAFETY: bpf(2) with a zeroed attr union of adequate size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            create.as_ptr(),
            std::mem::size_of_val(&create),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let cpath = std::ffi::CString::new(path).unwrap();
    let mut pin = [0u64; 4];
    pin[0] = cpath.as_ptr() as u64;
    pin[1] = fd as u64;
    // SAFETY: bpf(2) with a BPF_OBJ_PIN attr (pathname pointer, fd) that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            pin.as_ptr(),
            std::mem::size_of_val(&pin),
        )
    };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: closing the fd we created; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

/// Pinned maps left by another dcmesh version (here: a counters map with fewer entries)
/// are refused with a message naming the map and the way out, not silently reused.
#[test]
fn pinned_map_of_another_version_is_refused() {
    require_root();
    let ns = Netns::create("cliv").unwrap();
    let bpffs = Bpffs::mount("cliv");
    let pin = format!("{}/pins", bpffs.0.display());
    std::fs::create_dir_all(format!("{pin}/maps")).unwrap();
    let counters = format!("{pin}/maps/{}", dcmesh_schema::maps::COUNTERS);
    pin_percpu_array(&counters, dcmesh_schema::NUM_COUNTERS - 1);
    fails_with(
        &ns,
        &pin,
        &["attach", "lo", "--mode", "generic"],
        "was made by another dcmesh version",
    );
    let (_, err) = loader(&ns, &pin, &["attach", "lo", "--mode", "generic"]);
    assert!(err.contains("teardown"), "{err}");
    std::fs::remove_file(&counters).unwrap();
    let (ok, err) = loader(&ns, &pin, &["attach", "lo", "--mode", "generic"]);
    assert!(ok, "a clean pin dir loads: {err}");
}
