//! A mesh of network namespaces running real `dcmesh run` daemons.
//!
//! Node i lives in its own namespace with address 10.77.i.1/32 and fd77:0:0:i::1/128 on `lo`
//! and announces 10.77.i.0/24 and fd77:0:0:i::/64. Neighbours i and j are joined by a
//! veth pair named `to<j>` (in i) and `to<i>` (in j). Kernel forwarding is off in every
//! namespace, so traffic between non-neighbours crosses only through the XDP datapath.
//! Pins live on a bpffs mounted under /run in the root mount namespace (daemons run
//! under `ip netns exec`, which gives them a private mount namespace). Everything —
//! daemons, namespaces, pins, the bpffs mount, temporary files — goes away on drop,
//! also when a test panics.
#![allow(dead_code)]

use std::{
    net::SocketAddrV6,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dcmesh_control::{
    api::{self, Query},
    cert::Certificate,
    daemon::GROUP,
    identity::Identity,
};
use dcmesh_testbed::{netns, Netns};
use serde_json::Value;

pub const PORT: u16 = 6699;
pub const HELLO_MS: u64 = 200;
pub const DEAD_MS: u64 = 800;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "network-namespace tests need root (they create namespaces and load XDP programs); run them as root"
    );
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub struct Node {
    pub ns: Netns,
    pub dir: PathBuf,
    pub key: Identity,
    pub cert: Certificate,
    pub daemon: Option<Child>,
}

impl Node {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }
    pub fn prefix(i: usize) -> String {
        format!("10.77.{i}.0/24")
    }
    /// Node `i`'s IPv6 prefix in canonical form (fd77::/64 for node 0).
    pub fn prefix6(i: usize) -> String {
        format!("fd77:0:0:{i}::/64")
            .parse::<ipnet::IpNet>()
            .unwrap()
            .to_string()
    }
    pub fn addr6(i: usize) -> String {
        format!("fd77:0:0:{i}::1")
    }
    pub fn addr(i: usize) -> String {
        format!("10.77.{i}.1")
    }
}

pub struct Mesh {
    // Field order is drop order: daemons die (in Drop) before namespaces and pins go.
    pub nodes: Vec<Node>,
    pub auths: Vec<Identity>,
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    pub rt: tokio::runtime::Runtime,
    /// Neighbour dead interval the daemons run with.
    pub dead_ms: u64,
}

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Mesh {
    /// Builds `n` nodes joined by `links` (pairs of node indices) and starts a daemon on each.
    pub fn new(tag: &str, n: usize, links: &[(usize, usize)]) -> Mesh {
        Self::with_dead_interval(tag, n, links, DEAD_MS)
    }

    /// Like [`Mesh::new`], with the daemons' `dead_interval_ms` set to `dead_ms`.
    pub fn with_dead_interval(tag: &str, n: usize, links: &[(usize, usize)], dead_ms: u64) -> Mesh {
        require_root();
        let _ = netns::clear_stale();
        let id = format!("{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("dcmesh-mesh-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bpffs = PathBuf::from(format!("/run/dcmesh-test-{id}"));
        std::fs::create_dir_all(&bpffs).unwrap();
        sh("mount", &["-t", "bpf", "bpf", bpffs.to_str().unwrap()]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let auths: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
        let mut mesh = Mesh {
            nodes: Vec::new(),
            auths,
            dir,
            bpffs,
            rt,
            dead_ms,
        };
        let now = unix_now();
        for i in 0..n {
            let ns = Netns::create(&format!("n{i}")).unwrap();
            for (k, v) in [
                ("net.ipv4.ip_forward", "0"),
                ("net.ipv6.conf.all.forwarding", "0"),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ] {
                ns.sysctl(k, v).unwrap();
            }
            ns.ip(&["addr", "add", &format!("{}/32", Node::addr(i)), "dev", "lo"])
                .unwrap();
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/128", Node::addr6(i)),
                "dev",
                "lo",
            ])
            .unwrap();
            let ndir = mesh.dir.join(format!("node{i}"));
            std::fs::create_dir_all(&ndir).unwrap();
            let key = Identity::generate();
            key.write_new(&ndir.join("node.key")).unwrap();
            let cert = mesh.issue(&key, i, now - 60, now + 3600);
            std::fs::write(ndir.join("node.cert"), cert.to_file_text()).unwrap();
            mesh.nodes.push(Node {
                ns,
                dir: ndir,
                key,
                cert,
                daemon: None,
            });
        }
        for &(a, b) in links {
            netns::veth(
                &mesh.nodes[a].ns,
                &format!("to{b}"),
                &mesh.nodes[b].ns,
                &format!("to{a}"),
            )
            .unwrap();
        }
        for i in 0..n {
            let ifaces: Vec<usize> = links
                .iter()
                .filter_map(|&(a, b)| {
                    if a == i {
                        Some(b)
                    } else if b == i {
                        Some(a)
                    } else {
                        None
                    }
                })
                .collect();
            mesh.write_config(i, &ifaces);
            mesh.start(i);
        }
        mesh
    }

    /// A certificate for node `i`, signed by authorities 0 and 2 (threshold 2 of 3).
    pub fn issue(&self, key: &Identity, i: usize, nb: u64, na: u64) -> Certificate {
        let mut c = Certificate::new(
            key.id(),
            vec![
                Node::prefix(i).parse().unwrap(),
                format!("fd77:0:0:{i}::/64").parse().unwrap(),
            ],
            nb,
            na,
        )
        .unwrap();
        c.sign(&self.auths[0]).unwrap();
        c.sign(&self.auths[2]).unwrap();
        c
    }

    fn write_config(&self, i: usize, ifaces: &[usize]) {
        let d = &self.nodes[i].dir;
        let keys: Vec<String> = self
            .auths
            .iter()
            .map(|a| format!("\"{}\"", a.id()))
            .collect();
        let mut cfg = format!(
            "key = \"{d}/node.key\"\ncertificate = \"{d}/node.cert\"\nstate_dir = \"{d}/state\"\n\
             control_socket = \"{d}/ctl.sock\"\nmetrics_listen = \"127.0.0.1:9477\"\n\
             pin_dir = \"{pin}/node{i}\"\nprefixes = [\"{p4}\", \"fd77:0:0:{i}::/64\"]\nport = {PORT}\n\
             hello_interval_ms = {HELLO_MS}\ndead_interval_ms = {dead}\nadvert_refresh_s = 5\n\
             advert_lifetime_s = 20\nmax_advert_lifetime_s = 60\n\n\
             [authorities]\nkeys = [{keys}]\nthreshold = 2\n",
            d = d.display(),
            pin = self.bpffs.display(),
            dead = self.dead_ms,
            p4 = Node::prefix(i),
            keys = keys.join(", "),
        );
        for j in ifaces {
            let snr = d.join(format!("snr-to{j}"));
            std::fs::write(&snr, "* 30\n").unwrap();
            cfg += &format!(
                "\n[[interface]]\nname = \"to{j}\"\nsnr = {{ source = \"file\", path = \"{}\" }}\n",
                snr.display()
            );
        }
        std::fs::write(d.join("dcmesh.toml"), cfg).unwrap();
    }

    /// Starts (or restarts) node `i`'s daemon.
    pub fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("log"))
            .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                node.ns.name(),
                env!("CARGO_BIN_EXE_dcmesh"),
                "run",
                "--config",
            ])
            .arg(node.dir.join("dcmesh.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.daemon = Some(child);
    }

    /// SIGKILLs node `i`'s daemon (no clean-up: a crash or power loss).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs node `i`'s daemon and waits for it to exit (a clean shutdown).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].daemon.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "node {i} exited with {status}\n{}",
                self.log(i)
            );
        }
    }

    /// Node `i`'s Prometheus exposition (`GET /metrics` inside its namespace).
    pub fn metrics(&self, i: usize) -> String {
        self.nodes[i]
            .ns
            .enter(|| {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
            .unwrap()
    }

    /// Sets the SNR node `i` reads for every neighbour on its interface `to<j>`.
    pub fn set_snr(&self, i: usize, j: usize, db: f64) {
        let p = self.nodes[i].dir.join(format!("snr-to{j}"));
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, format!("* {db}\n")).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }

    /// Routes, kernel FIB and datapath counters of every node, for failure messages.
    pub fn diag(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let fib = self.nodes[i]
                    .ns
                    .ip(&["route", "show", "proto", "200"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let st = self
                    .query(i, Query::Status)
                    .map(|v| v["datapath"].to_string())
                    .unwrap_or_default();
                format!(
                    "--- node {i}\nroutes {:?}\nfib {fib}\ndatapath {st}\n{}",
                    self.routes(i),
                    tail(&self.log(i), 15)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Node `i`'s pin directory.
    pub fn pin_dir(&self, i: usize) -> PathBuf {
        self.bpffs.join(format!("node{i}"))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("log")).unwrap_or_default()
    }

    pub fn query(&self, i: usize, q: Query) -> anyhow::Result<Value> {
        self.rt.block_on(api::query(&self.nodes[i].socket(), q))
    }

    /// Node `i`'s routes as `prefix -> (origin, primary, alternate)` (metrics left out).
    pub fn routes(&self, i: usize) -> Vec<(String, String, String, String)> {
        let Ok(v) = self.query(i, Query::Routes) else {
            return Vec::new();
        };
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
                (
                    s(&r["prefix"]),
                    s(&r["origin"]),
                    s(&r["via"]["primary"]),
                    s(&r["via"]["alternate"]),
                )
            })
            .collect()
    }

    pub fn status(&self, i: usize) -> Value {
        self.query(i, Query::Status)
            .unwrap_or_else(|e| panic!("node {i} status: {e:#}\n{}", self.log(i)))
    }

    /// The route of node `i` for node `dst`'s IPv4 prefix, if any.
    pub fn route_to(&self, i: usize, dst: usize) -> Option<(String, String, String, String)> {
        self.routes(i)
            .into_iter()
            .find(|r| r.0 == Node::prefix(dst))
    }

    /// Waits until `cond` holds, or panics with every node's log after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Mesh) -> bool) {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = (0..self.nodes.len())
            .map(|i| {
                let q = |q| {
                    self.query(i, q)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|e| e.to_string())
                };
                format!(
                    "--- node {i} ---\nroutes: {}\nadverts: {}\nneighbours: {}\n{}",
                    q(Query::Routes),
                    q(Query::Adverts),
                    q(Query::Neighbors),
                    tail(&self.log(i), 30)
                )
            })
            .collect();
        panic!("timed out waiting for {what}\n{}", logs.join("\n"));
    }

    /// Waits until every running node routes to every other running node's IPv4 and
    /// IPv6 prefix.
    pub fn wait_converged(&self, alive: &[usize]) {
        self.wait_for("convergence", Duration::from_secs(30), |m| {
            alive.iter().all(|&i| {
                let Ok(v) = m.query(i, Query::Routes) else {
                    return false;
                };
                if v.as_array().unwrap().iter().any(|r| r["installed"] != true) {
                    return false;
                }
                let r = m.routes(i);
                alive.iter().all(|&j| {
                    r.iter().any(|x| x.0 == Node::prefix(j))
                        && r.iter().any(|x| x.0 == Node::prefix6(j))
                })
            })
        });
    }

    /// Datapath counter `name` (packets) of node `i`.
    pub fn counter(&self, i: usize, name: &str) -> u64 {
        self.status(i)["datapath"][name].as_u64().unwrap_or(0)
    }

    /// Advert rejections of node `i` for `reason`.
    pub fn rejected(&self, i: usize, reason: &str) -> u64 {
        self.status(i)["lsdb"]["rejected"][reason]
            .as_u64()
            .unwrap_or(0)
    }

    /// Pings `dst`'s address from node `src` (IPv4 or IPv6); true if replies came back.
    pub fn ping(&self, src: usize, dst: usize, v6: bool) -> bool {
        let (from, to) = if v6 {
            (Node::addr6(src), Node::addr6(dst))
        } else {
            (Node::addr(src), Node::addr(dst))
        };
        let mut args = vec!["-c", "3", "-i", "0.2", "-W", "2", "-I", &from, &to];
        if v6 {
            args.insert(0, "-6");
        }
        self.nodes[src].ns.exec("ping", &args).is_ok()
    }

    /// Sends `count` UDP datagrams from node `src` to node `dst` and returns how many
    /// arrived.
    pub fn udp(&self, src: usize, dst: usize, count: usize) -> usize {
        let to: std::net::SocketAddr = format!("{}:5999", Node::addr(dst)).parse().unwrap();
        let from: std::net::SocketAddr = format!("{}:0", Node::addr(src)).parse().unwrap();
        std::thread::scope(|s| {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let rx = s.spawn(|| {
                self.nodes[dst]
                    .ns
                    .enter(move || {
                        let sock = std::net::UdpSocket::bind(to).unwrap();
                        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        ready_tx.send(()).unwrap();
                        let mut got = 0;
                        let mut buf = [0u8; 2048];
                        while let Ok((n, _)) = sock.recv_from(&mut buf) {
                            if &buf[..n] == b"dcmesh-udp-probe" {
                                got += 1;
                            }
                            if got == count {
                                break;
                            }
                        }
                        got
                    })
                    .unwrap()
            });
            ready_rx.recv().unwrap();
            self.nodes[src]
                .ns
                .enter(move || {
                    let sock = std::net::UdpSocket::bind(from).unwrap();
                    for _ in 0..count {
                        sock.send_to(b"dcmesh-udp-probe", to).unwrap();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
                .unwrap();
            rx.join().unwrap()
        })
    }

    /// Sends raw bytes to the dcmesh multicast group from node `src` out of `iface`.
    pub fn inject(&self, src: usize, iface: &str, raw: &[u8]) {
        let raw = raw.to_vec();
        let iface = iface.to_string();
        self.nodes[src]
            .ns
            .enter(move || {
                let idx = dcmesh_loader::ifindex(&iface).unwrap();
                let s = std::net::UdpSocket::bind("[::]:0").unwrap();
                let s2 = socket2::SockRef::from(&s);
                s2.set_multicast_if_v6(idx).unwrap();
                s2.set_multicast_loop_v6(false).unwrap();
                s.send_to(&raw, SocketAddrV6::new(GROUP, PORT, 0, idx))
                    .unwrap();
            })
            .unwrap();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.daemon.take() {
                // SAFETY: plain kill(2) on our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(3) {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.nodes.clear(); // namespaces (and veths) go
        let _ = Command::new("umount").arg(&self.bpffs).status(); // every pin goes with it
        let _ = std::fs::remove_dir(&self.bpffs);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
