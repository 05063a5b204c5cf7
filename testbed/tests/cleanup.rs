//! Everything the testbed creates goes away on every exit path: drop, panic, Ctrl-C and
//! SIGTERM of the binary; a SIGKILLed run's leftovers (namespaces, run directory with its
//! bpffs, processes inside) are removed by the next run, and nothing of a live process is
//! touched. Needs root.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use dcmesh_testbed::{
    mesh::{Controller, Mesh},
    netns, Topology,
};

const BIN: &str = env!("CARGO_BIN_EXE_dcmesh-testbed");

/// The tests create and clear leftovers; run them one at a time so one's clean-up never
/// races another's expectations.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests build namespaces and load eBPF; run them as root (`cargo xtask test`)"
    );
}

fn tiny() -> Topology {
    Topology::parse(
        r#"
        name = "tiny"
        [[node]]
        name = "a"
        [[node]]
        name = "b"
        [[link]]
        nodes = ["a", "b"]
        [[client]]
        name = "ca"
        node = "a"
        [[client]]
        name = "cb"
        node = "b"
        "#,
    )
    .unwrap()
}

/// Namespaces and /run directories named for `pid`.
fn traces(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| netns::owner_pid(n) == Some(pid))
        .map(String::from)
        .collect();
    for e in std::fs::read_dir("/run").unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if netns::owner_pid(&n) == Some(pid) {
            v.push(format!("/run/{n}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        if m.starts_with("/run/dcm-") && m.contains(&format!("-{pid}-")) {
            v.push(format!("mount {m}"));
        }
    }
    v
}

/// A pid that belonged to a process that has exited.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn drop_and_panic_leave_nothing() {
    require_root();
    let _g = serial();
    let me = std::process::id();
    {
        let m = Mesh::build(tiny(), Controller::Static).unwrap();
        assert!(traces(me).len() >= 4, "{:?}", traces(me));
        drop(m);
    }
    assert_eq!(traces(me), Vec::<String>::new(), "after drop");
    let r = std::panic::catch_unwind(|| {
        let _m = Mesh::build(tiny(), Controller::Static).unwrap();
        panic!("boom");
    });
    assert!(r.is_err());
    assert_eq!(traces(me), Vec::<String>::new(), "after panic");
}

#[test]
fn stale_leftovers_of_dead_processes_only_are_cleared() {
    require_root();
    let _g = serial();
    let dead = dead_pid();
    let me = std::process::id();
    let stale_ns = format!("dcm-x-{dead}-0");
    let live_ns = format!("dcm-live-{me}-9999");
    let stale_dir = format!("/run/dcm-tb-{dead}-0");
    let foreign = format!("/run/not-ours-{dead}-0");
    for ns in [&stale_ns, &live_ns] {
        netns::run("ip", &["netns", "add", ns]).unwrap();
    }
    std::fs::create_dir_all(format!("{stale_dir}/bpf")).unwrap();
    std::fs::create_dir_all(&foreign).unwrap();
    netns::run("mount", &["-t", "bpf", "bpf", &format!("{stale_dir}/bpf")]).unwrap();
    // A process left running in the stale namespace (like a daemon of a crashed run).
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &stale_ns, "sleep", "600"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let removed = netns::clear_stale().unwrap();
    assert!(removed.contains(&stale_ns), "{removed:?}");
    assert!(removed.contains(&stale_dir), "{removed:?}");
    let status = sleeper.wait().unwrap();
    assert!(
        !status.success(),
        "the process in the stale namespace was not killed"
    );
    assert!(!Path::new(&stale_dir).exists());
    // Not ours to touch: a live process's namespace, a directory without our prefix.
    assert!(Path::new(&format!("/run/netns/{live_ns}")).exists());
    assert!(Path::new(&foreign).exists());
    netns::run("ip", &["netns", "del", &live_ns]).unwrap();
    std::fs::remove_dir(&foreign).unwrap();
}

/// Starts the demo on the tiny topology and waits until it sends probes.
fn start_demo(dir: &Path) -> Child {
    let topo = dir.join("tiny.toml");
    std::fs::write(&topo, tiny().to_toml()).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--controller",
            "static",
            "--duration",
            "10m",
            "--topology",
        ])
        .arg(&topo)
        .arg("--out")
        .arg(dir.join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let t = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("demo exited before sending probes")
            .unwrap();
        if line.contains("sending probes") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "demo did not start");
    }
    // Keep draining stdout so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(c.id() as i32, sig) }, 0);
}

#[test]
fn ctrl_c_sigterm_and_sigkill_of_the_binary() {
    require_root();
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("dcm-cleanup-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut c = start_demo(&dir);
        let pid = c.id();
        assert!(!traces(pid).is_empty());
        signal(&c, sig);
        let status = c.wait().unwrap();
        assert!(status.success(), "signal {sig}: exit {status}");
        assert_eq!(
            traces(pid),
            Vec::<String>::new(),
            "signal {sig} left traces"
        );
        assert!(
            dir.join("out/report.json").exists(),
            "no report after signal {sig}"
        );
    }
    // SIGKILL: no chance to clean up; `clean` (as every run's start) removes it all.
    let mut c = start_demo(&dir);
    let pid = c.id();
    signal(&c, libc::SIGKILL);
    c.wait().unwrap();
    let left = traces(pid);
    assert!(
        left.len() >= 5,
        "expected leftovers after SIGKILL, found {left:?}"
    );
    let out = Command::new(BIN).arg("clean").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for l in left.iter().filter(|l| !l.starts_with("mount ")) {
        assert!(
            text.contains(l.as_str()),
            "clean did not report {l}:\n{text}"
        );
    }
    assert_eq!(traces(pid), Vec::<String>::new(), "clean left traces");
    std::fs::remove_dir_all(&dir).unwrap();
}
