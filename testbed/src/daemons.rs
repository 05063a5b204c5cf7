//! The real `dcmesh` daemon on every node: a testbed authority that issues every node's
//! key and certificate through the daemon's own CLI, one config per node, and the
//! processes themselves.
//!
//! Certificates are issued by authority 0 and co-signed by authority 1 of three, with a
//! threshold of two (distributed validation, as on a real mesh). Each node is granted
//! exactly what it announces: its router addresses and its clients' access prefixes.
//! SNR reaches each daemon through its `file` source: one file per mesh interface, a
//! single line `* <dB>`, rewritten atomically when the link's SNR changes.
//!
//! Daemons are started with `ip netns exec` (their own view of /sys) and
//! `PR_SET_PDEATHSIG`, so they die with the testbed even if it is SIGKILLed; a rerun's
//! [`crate::netns::clear_stale`] also kills anything left in stale namespaces.
use std::{
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    converge::Port,
    mesh::{snr_path, Mesh},
    plan,
};

/// Hello interval the testbed gives daemons unless the topology's `[daemon]` says.
pub const DEFAULT_HELLO_MS: u64 = 100;
/// Dead interval (3 hellos) unless the topology says.
pub const DEFAULT_DEAD_MS: u64 = 300;
/// RFC 8333 local convergence delay unless the topology says. The RFC sizes it to the
/// mesh's worst-case convergence after a loss is known: here adverts flood and every
/// node installs within about 100 ms (logs), and the daemon's 1 s default is for
/// real radios with 1 s hellos. Detection plus this delay stays under the 1 s
/// full-reconvergence target.
pub const DEFAULT_LOCAL_DELAY_MS: u64 = 500;
/// Authorities in the testbed's set, and signatures a certificate needs.
pub const AUTHORITIES: usize = 3;
pub const THRESHOLD: usize = 2;

pub struct Daemons {
    bin: PathBuf,
    children: Vec<Option<Child>>,
}

/// Runs a `dcmesh` CLI command and returns its stdout.
fn cli(bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`dcmesh {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Where to find the `dcmesh` binary: `$DCMESH_BIN`, else next to this executable (or
/// its parent, for test binaries in `deps/`).
pub fn find_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DCMESH_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("dcmesh"), dir.parent()?.join("dcmesh")]
        .into_iter()
        .find(|p| p.is_file())
}

impl Daemons {
    /// Creates the authority, every node's key, certificate and config.
    pub fn new(mesh: &Mesh, bin: PathBuf) -> Result<Self> {
        if !bin.is_file() {
            bail!(
                "dcmesh daemon binary {} not found; build it with \
                 `cargo build --release -p dcmesh-control --bin dcmesh` or set DCMESH_BIN",
                bin.display()
            );
        }
        let auth = mesh.run.path().join("authority");
        std::fs::create_dir_all(&auth)?;
        let mut keys = Vec::new();
        for a in 0..AUTHORITIES {
            let path = auth.join(format!("authority{a}.key"));
            keys.push(cli(
                &bin,
                &["authority", "init", "--out", &path.to_string_lossy()],
            )?);
        }
        for (i, n) in mesh.nodes.iter().enumerate() {
            let key = n.dir.join("node.key");
            let cert = n.dir.join("node.cert");
            let id = cli(&bin, &["keygen", "--out", &key.to_string_lossy()])?;
            let prefixes = node_prefixes(mesh, i);
            let a0 = auth.join("authority0.key");
            let mut args = vec![
                "authority".to_string(),
                "issue".into(),
                "--key".into(),
                a0.to_string_lossy().into(),
                "--node".into(),
                id,
                "--validity".into(),
                "4h".into(),
                "--out".into(),
                cert.to_string_lossy().into(),
            ];
            for p in &prefixes {
                args.push("--prefix".into());
                args.push(p.clone());
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&bin, &a)?;
            let a1 = auth.join("authority1.key");
            cli(
                &bin,
                &[
                    "authority",
                    "cosign",
                    "--key",
                    &a1.to_string_lossy(),
                    "--cert",
                    &cert.to_string_lossy(),
                ],
            )?;
            std::fs::write(
                n.dir.join("dcmesh.toml"),
                config(mesh, i, &keys, &prefixes)?,
            )?;
        }
        Ok(Self {
            bin,
            children: (0..mesh.nodes.len()).map(|_| None).collect(),
        })
    }

    /// Starts node `i`'s daemon (appending to its log).
    pub fn start(&mut self, mesh: &Mesh, i: usize) -> Result<()> {
        let n = &mesh.nodes[i];
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("log"))?;
        writeln!(log, "==== testbed: starting dcmesh")?;
        let mut cmd = n.ns.command(&self.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(n.dir.join("dcmesh.toml"))
            .env(
                "RUST_LOG",
                std::env::var("DCMESH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the daemon gets SIGKILL when the thread
        // that started it (the testbed's main thread) exits, however it exits.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start dcmesh on {}", n.name))?;
        self.children[i] = Some(child);
        Ok(())
    }

    pub fn running(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL (a crash or power loss: no clean-up).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a planned stop: the datapath keeps forwarding, and the daemon keeps its
    /// kernel routes for the next start, as the testbed configures), SIGKILL after 3 s.
    pub fn stop(&mut self, i: usize) {
        let Some(mut c) = self.children[i].take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Stops every daemon: SIGTERM to all, then SIGKILL what is left after 3 s.
    pub fn shutdown(&mut self) {
        for c in self.children.iter().flatten() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let t = Instant::now();
        for c in self.children.iter_mut() {
            if let Some(mut ch) = c.take() {
                while t.elapsed() < Duration::from_secs(3) {
                    if matches!(ch.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = ch.kill();
                let _ = ch.wait();
            }
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What node `i` announces (and is granted): router addresses, clients' prefixes.
pub fn node_prefixes(mesh: &Mesh, i: usize) -> Vec<String> {
    let mut v = vec![
        format!("{}/32", plan::node_v4(i)),
        format!("{}/128", plan::node_v6(i)),
    ];
    for c in mesh.clients.iter().filter(|c| c.node == i) {
        v.push(c.prefix4.to_string());
        v.push(c.prefix6.to_string());
    }
    v
}

/// Node `i`'s dcmesh.toml: the testbed's settings, then the topology's `[daemon]` table
/// on top.
fn config(mesh: &Mesh, i: usize, auth_keys: &[String], prefixes: &[String]) -> Result<String> {
    let n = &mesh.nodes[i];
    let p = |f: &str| n.dir.join(f).to_string_lossy().into_owned();
    let mut t = toml::Table::new();
    t.insert("key".into(), p("node.key").into());
    t.insert("certificate".into(), p("node.cert").into());
    t.insert("state_dir".into(), p("state").into());
    t.insert("control_socket".into(), p("ctl.sock").into());
    t.insert("metrics_listen".into(), "127.0.0.1:9477".into());
    t.insert(
        "pin_dir".into(),
        n.pin.to_string_lossy().into_owned().into(),
    );
    t.insert(
        "prefixes".into(),
        toml::Value::Array(prefixes.iter().map(|s| s.clone().into()).collect()),
    );
    t.insert("hello_interval_ms".into(), (DEFAULT_HELLO_MS as i64).into());
    t.insert("dead_interval_ms".into(), (DEFAULT_DEAD_MS as i64).into());
    t.insert(
        "local_convergence_delay_ms".into(),
        (DEFAULT_LOCAL_DELAY_MS as i64).into(),
    );
    // Controller restarts must not cost client traffic, which the kernel forwards.
    t.insert("kernel_routes_on_exit".into(), "retain".into());
    let mut a = toml::Table::new();
    a.insert(
        "keys".into(),
        toml::Value::Array(auth_keys.iter().map(|k| k.clone().into()).collect()),
    );
    a.insert("threshold".into(), (THRESHOLD as i64).into());
    t.insert("authorities".into(), a.into());
    let ifaces: Vec<toml::Value> = n
        .ifaces
        .iter()
        .filter(|f| matches!(f.port, Port::Mesh { .. }))
        .map(|f| {
            let mut s = toml::Table::new();
            s.insert("source".into(), "file".into());
            s.insert(
                "path".into(),
                snr_path(&n.dir, &f.name)
                    .to_string_lossy()
                    .into_owned()
                    .into(),
            );
            let mut i = toml::Table::new();
            i.insert("name".into(), f.name.clone().into());
            i.insert("snr".into(), s.into());
            i.into()
        })
        .collect();
    t.insert("interface".into(), toml::Value::Array(ifaces));
    for (k, v) in &mesh.topo.daemon {
        t.insert(k.clone(), v.clone());
    }
    Ok(toml::to_string(&t)?)
}

/// Asks node `socket`'s daemon (`status`, `neighbors`, `routes`, `adverts`) over its
/// JSON control socket.
pub fn query(socket: &Path, request: &str) -> Result<serde_json::Value> {
    use std::io::{BufRead, BufReader};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    writeln!(s, "{}", serde_json::json!({ "request": request }))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).context("control socket answer")?;
    if v["ok"] != true {
        bail!("daemon: {}", v["error"]);
    }
    Ok(v["data"].clone())
}
