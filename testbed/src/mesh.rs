//! Building a topology on this machine, changing it while it runs, and tearing it down.
//!
//! Layout (names in [`crate::plan`]):
//! - one namespace per node and per client, and one *wire* namespace holding, per link,
//!   a two-port bridge between the link's two veth pairs. The link emulation XDP program
//!   sits on both wire ends (loss per direction, counters per direction) and a TBF qdisc
//!   on their egress shapes each direction's rate. Taking a wire end down makes the
//!   node behind it lose carrier, like a pulled cable.
//! - a run directory `/run/dcm-tb-<pid>-<n>` with a bpffs (`bpf/`, every node's pins),
//!   per node a directory with its key, certificate, config, SNR files and log.
//!
//! Teardown happens in `Drop` (so also on panic): daemons are killed, XDP detached,
//! namespaces deleted, the bpffs unmounted and the run directory removed. A process
//! killed before it could clean up leaves names carrying its pid, which
//! [`crate::netns::clear_stale`] removes on the next run.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};
use dcmesh_loader::Tables;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    converge::{self, Dest, NodeTables, Port, Snapshot, Truth},
    daemons::Daemons,
    linkemu::{IfStats, LinkEmu},
    netns::{self, Netns},
    plan,
    routes::MAX_USABLE_LOSS,
    static_ctl::StaticCtl,
    topology::{Action, LinkState, Topology},
};

static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

/// A directory under /run with a bpffs inside; unmounted and removed on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn create() -> Result<Self> {
        let path = PathBuf::from(format!(
            "{}/{}tb-{}-{}",
            netns::RUN_ROOT,
            netns::PREFIX,
            std::process::id(),
            RUN_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(path.join("bpf"))
            .with_context(|| format!("create {}", path.display()))?;
        let d = Self { path };
        // Mounted in the root mount namespace, so pins outlive `ip netns exec` children.
        netns::run("mount", &["-t", "bpf", "bpf", &d.bpf().to_string_lossy()])?;
        Ok(d)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bpffs.
    pub fn bpf(&self) -> PathBuf {
        self.path.join("bpf")
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        netns::unmount_below(&self.path);
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            log::warn!("cleanup: remove {}: {e}", self.path.display());
        }
    }
}

/// Who writes the routes.
#[derive(Clone, Debug)]
pub enum Controller {
    /// The testbed's own oracle (see [`crate::static_ctl`]): the datapath and the
    /// measurements without the control plane.
    Static,
    /// The real `dcmesh` daemon on every node.
    Daemon {
        /// The `dcmesh` binary.
        bin: PathBuf,
    },
}

/// An interface of a node.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub port: Port,
}

/// A running node.
#[derive(Debug)]
pub struct NodeRt {
    pub name: String,
    pub ns: Netns,
    /// Keys, configuration, SNR files, log.
    pub dir: PathBuf,
    /// The datapath's pin directory (on the run bpffs).
    pub pin: PathBuf,
    pub ifaces: Vec<Iface>,
    pub on: bool,
}

impl NodeRt {
    /// The interface toward mesh link `link`.
    pub fn mesh_iface(&self, link: usize) -> Option<&Iface> {
        self.ifaces
            .iter()
            .find(|i| matches!(i.port, Port::Mesh { link: l, .. } if l == link))
    }
}

/// A running client host.
#[derive(Debug)]
pub struct ClientRt {
    pub name: String,
    pub ns: Netns,
    pub node: usize,
    pub prefix4: Ipv4Net,
    pub prefix6: Ipv6Net,
    pub addr4: Ipv4Addr,
    pub addr6: Ipv6Addr,
    pub mac: [u8; 6],
}

/// A link's emulation handles and the faults on it.
#[derive(Clone, Debug)]
pub struct LinkRt {
    pub a: usize,
    pub b: usize,
    /// Wire ends: (name, ifindex) facing a and facing b.
    pub wire_a: (String, u32),
    pub wire_b: (String, u32),
    pub state: LinkState,
    /// Carrier up (not pulled).
    pub carrier: bool,
    /// Silently dead (all frames lost).
    pub silent: bool,
    /// Cut by a partition.
    pub cut: bool,
}

impl LinkRt {
    /// Frames cross the link at all.
    pub fn passes(&self) -> bool {
        self.carrier && !self.silent && !self.cut
    }

    /// Loss a→b and b→a as emulated now.
    pub fn effective_loss(&self) -> (f64, f64) {
        if self.silent || self.cut {
            (1.0, 1.0)
        } else {
            self.state.loss
        }
    }
}

/// A topology, built.
pub struct Mesh {
    pub topo: Topology,
    pub controller: Controller,
    // Drop order matters: processes and programs first, namespaces next, the run
    // directory (bpffs) last. `Drop for Mesh` handles the processes.
    pub(crate) static_ctl: Option<StaticCtl>,
    pub(crate) daemons: Option<Daemons>,
    tables: Vec<Option<Tables>>,
    /// Why a node's tables could not be opened, last time it was tried.
    table_errors: Vec<Option<String>>,
    emu: LinkEmu,
    pub links: Vec<LinkRt>,
    pub clients: Vec<ClientRt>,
    pub nodes: Vec<NodeRt>,
    pub wire: Netns,
    pub run: RunDir,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    dcmesh_loader::parse_mac(s)
}

/// (ifindex, MAC) of every interface in `ns`, by name.
fn links_of(ns: &Netns) -> Result<HashMap<String, (u32, [u8; 6])>> {
    let out = ns.ip(&["-j", "link", "show"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse ip -j link")?;
    let mut m = HashMap::new();
    for l in v.as_array().into_iter().flatten() {
        let (Some(name), Some(idx)) = (l["ifname"].as_str(), l["ifindex"].as_u64()) else {
            continue;
        };
        let mac = l["address"]
            .as_str()
            .and_then(parse_mac)
            .unwrap_or_default();
        m.insert(name.to_string(), (idx as u32, mac));
    }
    Ok(m)
}

/// A veth pair, both ends up, without TX checksum offload (see [`netns::veth`]) and
/// without segmentation offloads (so shaping sees real packet sizes).
fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    netns::veth_offloads_off(a, a_if, b, b_if, &["tx", "tso", "gso"])
}

/// TBF parameters for `rate` bits/s: a burst of 4 ms of traffic (at least 4 full
/// frames) and at most 50 ms of queue.
pub fn tbf_args(dev: &str, rate_bps: u64) -> Vec<String> {
    let burst = (rate_bps / 8 / 250).max(6_000);
    [
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{rate_bps}bit"),
        "burst",
        &burst.to_string(),
        "latency",
        "50ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Mesh {
    /// Builds `topo` and starts `controller` on every node. Everything is removed again
    /// if any step fails.
    pub fn build(topo: Topology, controller: Controller) -> Result<Self> {
        topo.validate()?;
        let run = RunDir::create()?;
        let wire = Netns::create("wire")?;
        for k in ["default", "all"] {
            wire.sysctl(&format!("net.ipv6.conf.{k}.disable_ipv6"), "1")?;
        }
        let forwarding = if matches!(controller, Controller::Static) {
            "0"
        } else {
            // The daemon leaves local prefixes (the clients' access subnets) to the
            // kernel, which must then forward the last hop; transit stays in XDP.
            "1"
        };
        let mut nodes = Vec::new();
        for (i, n) in topo.nodes.iter().enumerate() {
            let ns = Netns::create(&n.name)?;
            for (k, v) in [
                ("net.ipv4.ip_forward", forwarding),
                ("net.ipv6.conf.all.forwarding", forwarding),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
                // Every TTL expiry sends its time-exceeded error back (the probes note
                // where loops were); the default rate limit would drop most of them.
                ("net.ipv4.icmp_ratelimit", "0"),
                ("net.ipv6.icmp.ratelimit", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
            ns.ip_batch(&[
                format!("addr add {}/32 dev lo", plan::node_v4(i)),
                format!("addr add {}/128 dev lo", plan::node_v6(i)),
            ])?;
            let dir = run.path().join("nodes").join(&n.name);
            std::fs::create_dir_all(&dir)?;
            nodes.push(NodeRt {
                name: n.name.clone(),
                ns,
                dir,
                pin: run.bpf().join(&n.name),
                ifaces: Vec::new(),
                on: true,
            });
        }
        let mut clients = Vec::new();
        for (k, c) in topo.clients.iter().enumerate() {
            let ns = Netns::create(&c.name)?;
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            let node = topo.node_index(&c.node).expect("validated");
            let (p4, p6) = topo.client_prefixes(k);
            let (gw4, h4) = plan::access_v4(p4);
            let (gw6, h6) = plan::access_v6(p6);
            let nif = plan::access_if(&c.name);
            netns::veth(&nodes[node].ns, &nif, &ns, plan::CLIENT_IF)?;
            nodes[node].ns.ip_batch(&[
                format!("addr add {gw4}/{} dev {nif}", p4.prefix_len()),
                format!("addr add {gw6}/{} dev {nif} nodad", p6.prefix_len()),
            ])?;
            ns.ip_batch(&[
                format!("addr add {h4}/{} dev {}", p4.prefix_len(), plan::CLIENT_IF),
                format!(
                    "addr add {h6}/{} dev {} nodad",
                    p6.prefix_len(),
                    plan::CLIENT_IF
                ),
                format!("route add default via {gw4}"),
                format!("route add default via {gw6}"),
            ])?;
            // Frames the node's XDP redirects into this veth need GRO (or XDP) here.
            ns.exec("ethtool", &["-K", plan::CLIENT_IF, "gro", "on"])?;
            clients.push(ClientRt {
                name: c.name.clone(),
                ns,
                node,
                prefix4: p4,
                prefix6: p6,
                addr4: h4,
                addr6: h6,
                mac: [0; 6],
            });
        }
        let mut wire_cmds = Vec::new();
        for (l, link) in topo.links.iter().enumerate() {
            let (a, b) = topo.link_ends(l);
            let (wa, wb, br) = (
                plan::wire_if(l, true),
                plan::wire_if(l, false),
                plan::wire_bridge(l),
            );
            veth(&nodes[a].ns, &plan::mesh_if(&link.nodes[1]), &wire, &wa)?;
            veth(&nodes[b].ns, &plan::mesh_if(&link.nodes[0]), &wire, &wb)?;
            wire_cmds.extend([
                format!("link add {br} type bridge mcast_snooping 0"),
                format!("link set {wa} master {br}"),
                format!("link set {wb} master {br}"),
                format!("link set {br} up"),
                format!("link set {wa} up"),
                format!("link set {wb} up"),
            ]);
        }
        wire.ip_batch(&wire_cmds)?;
        let mut emu = LinkEmu::load()?;
        let wire_links = links_of(&wire)?;
        let mut links = Vec::new();
        let mut tc = Vec::new();
        for l in 0..topo.links.len() {
            let (a, b) = topo.link_ends(l);
            let (wa, wb) = (plan::wire_if(l, true), plan::wire_if(l, false));
            let ia = emu.attach(&wire, &wa)?;
            let ib = emu.attach(&wire, &wb)?;
            debug_assert_eq!(Some(ia), wire_links.get(&wa).map(|x| x.0));
            let state = topo.initial_state(l);
            let rt = LinkRt {
                a,
                b,
                wire_a: (wa, ia),
                wire_b: (wb, ib),
                state,
                carrier: true,
                silent: false,
                cut: false,
            };
            let (lab, lba) = rt.effective_loss();
            emu.set_loss(ia, lab)?;
            emu.set_loss(ib, lba)?;
            if let Some(r) = state.rate {
                // a→b leaves the wire toward b, and the other way round.
                tc.push(tbf_args(&rt.wire_b.0, r.0).join(" "));
                tc.push(tbf_args(&rt.wire_a.0, r.0).join(" "));
            }
            links.push(rt);
        }
        if !tc.is_empty() {
            let mut child = std::process::Command::new("ip")
                .args(["netns", "exec", wire.name(), "tc", "-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            use std::io::Write;
            child
                .stdin
                .take()
                .context("tc stdin")?
                .write_all(tc.join("\n").as_bytes())?;
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("tc -batch: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        // Interfaces: index and MAC, and what each leads to.
        let node_links: Vec<HashMap<String, (u32, [u8; 6])>> = nodes
            .iter()
            .map(|n| links_of(&n.ns))
            .collect::<Result<_>>()?;
        for c in &mut clients {
            c.mac = links_of(&c.ns)?
                .get(plan::CLIENT_IF)
                .map(|x| x.1)
                .context("client interface missing")?;
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            for (l, link) in topo.links.iter().enumerate() {
                let (a, b) = topo.link_ends(l);
                let (peer, peer_name, my_name) = if a == i {
                    (b, &link.nodes[1], &link.nodes[0])
                } else if b == i {
                    (a, &link.nodes[0], &link.nodes[1])
                } else {
                    continue;
                };
                let name = plan::mesh_if(peer_name);
                let (ifindex, mac) = node_links[i][&name];
                let peer_mac = node_links[peer][&plan::mesh_if(my_name)].1;
                node.ifaces.push(Iface {
                    name,
                    ifindex,
                    mac,
                    port: Port::Mesh {
                        link: l,
                        peer,
                        peer_mac,
                    },
                });
            }
            for (k, c) in clients.iter().enumerate().filter(|(_, c)| c.node == i) {
                let name = plan::access_if(&c.name);
                let (ifindex, mac) = node_links[i][&name];
                node.ifaces.push(Iface {
                    name,
                    ifindex,
                    mac,
                    port: Port::Access {
                        client: k,
                        mac: c.mac,
                    },
                });
            }
        }
        let n = nodes.len();
        let mut mesh = Mesh {
            topo,
            controller: controller.clone(),
            static_ctl: None,
            daemons: None,
            tables: (0..n).map(|_| None).collect(),
            table_errors: vec![None; n],
            emu,
            links,
            clients,
            nodes,
            wire,
            run,
        };
        match controller {
            Controller::Static => {
                let mut ctl = StaticCtl::new(&mesh)?;
                for i in 0..n {
                    ctl.boot(&mesh, i)?;
                }
                ctl.apply(&mesh)?;
                mesh.static_ctl = Some(ctl);
            }
            Controller::Daemon { bin } => {
                let mut d = Daemons::new(&mesh, bin)?;
                for i in 0..n {
                    mesh.write_snr(i)?;
                    d.start(&mesh, i)?;
                }
                mesh.daemons = Some(d);
            }
        }
        Ok(mesh)
    }

    /// True state of every link and node, for the convergence check.
    pub fn truth(&self) -> Truth {
        Truth {
            node_on: self.nodes.iter().map(|n| n.on).collect(),
            link_ends: self.links.iter().map(|l| (l.a, l.b)).collect(),
            link_usable: self
                .links
                .iter()
                .map(|l| {
                    let (x, y) = l.effective_loss();
                    l.passes() && x <= MAX_USABLE_LOSS && y <= MAX_USABLE_LOSS
                })
                .collect(),
            ports: self
                .nodes
                .iter()
                .map(|n| n.ifaces.iter().map(|i| (i.ifindex, i.port)).collect())
                .collect(),
        }
    }

    /// What the convergence check walks to: every node's router address and every
    /// client's IPv4 and IPv6 address.
    pub fn dests(&self) -> Vec<Dest> {
        let mut d: Vec<Dest> = (0..self.nodes.len())
            .map(|i| Dest {
                addr: IpAddr::V4(plan::node_v4(i)),
                node: i,
                client: None,
            })
            .collect();
        for (k, c) in self.clients.iter().enumerate() {
            for addr in [IpAddr::V4(c.addr4), IpAddr::V6(c.addr6)] {
                d.push(Dest {
                    addr,
                    node: c.node,
                    client: Some(k),
                });
            }
        }
        d
    }

    /// Opens node `i`'s pinned tables if not open yet (they appear when its datapath
    /// loads).
    fn open_tables(&mut self, i: usize) {
        if self.tables[i].is_some() {
            return;
        }
        let pin = &self.nodes[i].pin;
        if !pin.join("maps").exists() {
            self.table_errors[i] = Some(format!("no pinned maps under {}", pin.display()));
            return;
        }
        match Tables::open_pinned(pin) {
            Ok(t) => {
                self.tables[i] = Some(t);
                self.table_errors[i] = None;
            }
            Err(e) => self.table_errors[i] = Some(e.to_string()),
        }
    }

    /// Why node `i`'s tables are unreadable, if they are.
    pub fn table_error(&self, i: usize) -> Option<&str> {
        self.table_errors[i].as_deref()
    }

    /// Every node's forwarding tables, read now. Off nodes read as `None`.
    pub fn snapshot(&mut self) -> Snapshot {
        (0..self.nodes.len())
            .map(|i| {
                if !self.nodes[i].on {
                    return None;
                }
                self.open_tables(i);
                let t = self.tables[i].as_ref()?;
                read_tables(t)
            })
            .collect()
    }

    /// The convergence check on a fresh snapshot.
    pub fn check(&mut self) -> (Snapshot, converge::Check) {
        let snap = self.snapshot();
        let c = converge::check(&snap, &self.truth(), &self.dests());
        (snap, c)
    }

    /// Datapath counters of node `i` (None when off or not loaded).
    pub fn counters(&mut self, i: usize) -> Option<dcmesh_loader::Counters> {
        if !self.nodes[i].on {
            return None;
        }
        self.open_tables(i);
        self.tables[i].as_ref()?.counters().ok()
    }

    /// Link emulation counters of link `l`: (a→b, b→a).
    pub fn link_stats(&self, l: usize) -> Result<(IfStats, IfStats)> {
        let k = &self.links[l];
        Ok((self.emu.stats(k.wire_a.1)?, self.emu.stats(k.wire_b.1)?))
    }

    fn push_loss(&mut self, l: usize) -> Result<()> {
        let (ab, ba) = self.links[l].effective_loss();
        let (ia, ib) = (self.links[l].wire_a.1, self.links[l].wire_b.1);
        self.emu.set_loss(ia, ab)?;
        self.emu.set_loss(ib, ba)?;
        Ok(())
    }

    /// Writes node `i`'s SNR files (one per mesh interface, `* <dB>`), atomically.
    pub fn write_snr(&self, i: usize) -> Result<()> {
        for f in &self.nodes[i].ifaces {
            if let Port::Mesh { link, .. } = f.port {
                let path = snr_path(&self.nodes[i].dir, &f.name);
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, format!("* {:.1}\n", self.links[link].state.snr_db))?;
                std::fs::rename(&tmp, &path)?;
            }
        }
        Ok(())
    }

    fn set_carrier(&mut self, l: usize, up: bool) -> Result<()> {
        let k = &self.links[l];
        let state = if up { "up" } else { "down" };
        self.wire.ip_batch(&[
            format!("link set {} {state}", k.wire_a.0),
            format!("link set {} {state}", k.wire_b.0),
        ])?;
        self.links[l].carrier = up;
        Ok(())
    }

    fn power(&mut self, i: usize, on: bool) -> Result<()> {
        if self.nodes[i].on == on {
            return Ok(());
        }
        let state = if on { "up" } else { "down" };
        if !on {
            if let Some(d) = self.daemons.as_mut() {
                d.kill(i);
            }
            self.tables[i] = None;
        }
        let cmds: Vec<String> = self.nodes[i]
            .ifaces
            .iter()
            .map(|f| format!("link set {} {state}", f.name))
            .collect();
        self.nodes[i].ns.ip_batch(&cmds)?;
        self.nodes[i].on = on;
        if on {
            // A reboot: empty tables, nothing attached, then the controller starts.
            dcmesh_loader::teardown(&self.nodes[i].pin)
                .with_context(|| format!("reset {}'s datapath", self.nodes[i].name))?;
            if let Some(mut c) = self.static_ctl.take() {
                let r = c.boot(self, i);
                self.static_ctl = Some(c);
                r?;
            }
            if let Some(mut d) = self.daemons.take() {
                let r = d.start(self, i);
                self.daemons = Some(d);
                r?;
            }
        }
        Ok(())
    }

    /// Applies one fault. Returns a note when the action does not apply to this
    /// controller (e.g. a daemon crash without daemons).
    pub fn apply(&mut self, action: &Action) -> Result<Option<String>> {
        let mut note = None;
        match action {
            Action::LinkDown(l) => self.set_carrier(*l, false)?,
            Action::LinkUp(l) => self.set_carrier(*l, true)?,
            Action::LinkSilent(l) => {
                self.links[*l].silent = true;
                self.push_loss(*l)?;
            }
            Action::LinkRestore(l) => {
                self.links[*l].silent = false;
                self.push_loss(*l)?;
            }
            Action::SetLink {
                link,
                loss,
                snr_db,
                rate,
            } => {
                let s = self
                    .topo
                    .apply_change(self.links[*link].state, *loss, *snr_db, *rate);
                let old_rate = self.links[*link].state.rate;
                self.links[*link].state = s;
                self.push_loss(*link)?;
                if s.rate != old_rate {
                    if let Some(r) = s.rate {
                        let k = &self.links[*link];
                        for dev in [&k.wire_a.0, &k.wire_b.0] {
                            let a = tbf_args(dev, r.0);
                            let a: Vec<&str> = a.iter().map(String::as_str).collect();
                            self.wire.exec("tc", &a)?;
                        }
                    }
                }
                if self.daemons.is_some() {
                    let (a, b) = (self.links[*link].a, self.links[*link].b);
                    self.write_snr(a)?;
                    self.write_snr(b)?;
                }
            }
            Action::NodeCrash(i) => match self.daemons.as_mut() {
                Some(d) => d.kill(*i),
                None => note = Some("no daemon to crash (static controller)".into()),
            },
            Action::NodeRestart(i) => match self.daemons.take() {
                Some(mut d) => {
                    let r = if self.nodes[*i].on && !d.running(*i) {
                        d.start(self, *i)
                    } else {
                        Ok(())
                    };
                    self.daemons = Some(d);
                    r?;
                }
                None => note = Some("no daemon to restart (static controller)".into()),
            },
            Action::ControllerRestart(i) => match self.daemons.take() {
                Some(mut d) => {
                    d.stop(*i);
                    let r = if self.nodes[*i].on {
                        d.start(self, *i)
                    } else {
                        Ok(())
                    };
                    self.daemons = Some(d);
                    r?;
                }
                None => note = Some("no daemon to restart (static controller)".into()),
            },
            Action::PowerOff(ns) => {
                for &i in ns {
                    self.power(i, false)?;
                }
            }
            Action::PowerOn(ns) => {
                for &i in ns {
                    self.power(i, true)?;
                }
            }
            Action::Partition(ns) => {
                for l in 0..self.links.len() {
                    let (a, b) = (self.links[l].a, self.links[l].b);
                    if ns.contains(&a) != ns.contains(&b) {
                        self.links[l].cut = true;
                        self.push_loss(l)?;
                    }
                }
            }
            Action::Heal => {
                for l in 0..self.links.len() {
                    if self.links[l].cut {
                        self.links[l].cut = false;
                        self.push_loss(l)?;
                    }
                }
            }
            Action::PowerOutage { .. } => {
                bail!("power-outage must be expanded with Topology::timeline first")
            }
        }
        Ok(note)
    }

    /// The static controller recomputes from the true topology (no-op with daemons).
    pub fn static_recompute(&mut self) -> Result<()> {
        if let Some(mut c) = self.static_ctl.take() {
            let r = c.apply(self);
            self.static_ctl = Some(c);
            r?;
        }
        Ok(())
    }

    /// Carrier events the static controller reacted to: (node, ifindex, up, seen ns,
    /// written ns) since the watcher started, in `Instant`-relative ns of `t0`.
    pub fn carrier_reactions(&self) -> Vec<crate::static_ctl::Reaction> {
        self.static_ctl
            .as_ref()
            .map(|c| c.reactions())
            .unwrap_or_default()
    }

    /// Daemon control socket of node `i` (None with the static controller).
    pub fn socket(&self, i: usize) -> Option<PathBuf> {
        self.daemons
            .as_ref()
            .map(|_| self.nodes[i].dir.join("ctl.sock"))
    }

    /// Node `i`'s daemon log (empty with the static controller).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("log")).unwrap_or_default()
    }

    /// Copies every node's log and config into `dir` (for after the run).
    pub fn save_logs(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for n in &self.nodes {
            for f in ["log", "dcmesh.toml"] {
                let src = n.dir.join(f);
                if src.exists() {
                    std::fs::copy(&src, dir.join(format!("{}.{f}", n.name)))?;
                }
            }
        }
        Ok(())
    }
}

/// The SNR file of interface `iface` in a node directory.
pub fn snr_path(node_dir: &Path, iface: &str) -> PathBuf {
    node_dir.join(format!("snr-{iface}"))
}

/// Reads a node's routes and the next hops they name.
pub fn read_tables(t: &Tables) -> Option<NodeTables> {
    let routes = t.routes().ok()?;
    let mut nt = NodeTables {
        routes,
        ..NodeTables::default()
    };
    for (_, r) in &nt.routes {
        if let dcmesh_loader::RouteTarget::Via { id, alt } = r {
            for x in std::iter::once(*id).chain(*alt) {
                if nt.nexthops.contains_key(&x) {
                    continue;
                }
                if let Some(nh) = t.nexthop(x) {
                    nt.nexthops.insert(x, (nh.ifindex, nh.dst_mac));
                }
                if t.nexthop_down(x) {
                    nt.down.push(x);
                }
            }
        }
    }
    Some(nt)
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Some(c) = self.static_ctl.as_mut() {
            c.shutdown();
        }
        if let Some(d) = self.daemons.as_mut() {
            d.shutdown();
        }
        self.tables.clear();
        for n in &self.nodes {
            if let Err(e) = dcmesh_loader::teardown(&n.pin) {
                log::warn!("cleanup: {}: {e}", n.name);
            }
        }
        // Then fields drop in order: link emulation detaches, namespaces go, the run
        // directory (bpffs and files) goes last.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_burst_covers_frames_and_scales_with_rate() {
        let a = tbf_args("w0a", 1_000_000);
        assert!(a.contains(&"6000".to_string()), "{a:?}");
        let a = tbf_args("w0a", 1_000_000_000);
        assert!(a.contains(&"500000".to_string()), "{a:?}");
        assert!(a.contains(&"1000000000bit".to_string()));
    }
}
