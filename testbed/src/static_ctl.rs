//! The static controller: the testbed writing routes itself, through the loader library,
//! from the topology it knows to be true. Used to exercise the datapath, faults and
//! measurements without the control plane (`--controller static`).
//!
//! - At boot of a node: the XDP datapath is loaded (pinned under the run bpffs) and
//!   attached to every interface; one next hop per interface (neighbour's or client's
//!   MAC) is written once.
//! - [`StaticCtl::apply`]: shortest paths with loop-free alternates ([`crate::routes`])
//!   over the links that carry frames now; only changed routes are written. It is an
//!   oracle — it knows about silent failures at once — so the runner calls it after a
//!   configurable reaction delay, never instantly.
//! - A carrier watcher (rtnetlink link events in every node's namespace) marks a next
//!   hop down the moment its interface loses carrier, and up again when carrier returns:
//!   the datapath's fast failover, driven the way the daemon drives it.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Instant,
};

use anyhow::{Context, Result};
use dcmesh_loader::{AttachMode, Datapath, IpNet, NextHopSpec, RouteTarget, Tables};

use crate::{
    converge::Port,
    mesh::Mesh,
    plan,
    routes::{self, Graph},
};

/// One carrier change the watcher acted on.
#[derive(Clone, Copy, Debug)]
pub struct Reaction {
    pub node: usize,
    pub ifindex: u32,
    /// Carrier came back (`true`) or went (`false`).
    pub up: bool,
    /// When the kernel's event was read.
    pub seen: Instant,
    /// When the next-hop liveness entry was written.
    pub written: Instant,
}

pub struct StaticCtl {
    /// Per node: ifindex → next hop id.
    nh: Vec<HashMap<u32, u32>>,
    /// Per node: routes as last written.
    written: Vec<BTreeMap<IpNet, RouteTarget>>,
    reactions: Arc<Mutex<Vec<Reaction>>>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl StaticCtl {
    /// Assigns next-hop ids and starts the carrier watcher.
    pub fn new(mesh: &Mesh) -> Result<Self> {
        let nh: Vec<HashMap<u32, u32>> = mesh
            .nodes
            .iter()
            .map(|n| {
                n.ifaces
                    .iter()
                    .enumerate()
                    .map(|(k, f)| (f.ifindex, k as u32 + 1))
                    .collect()
            })
            .collect();
        let mut socks = Vec::new();
        for n in &mesh.nodes {
            let fd = n.ns.enter(link_socket)??;
            socks.push(fd);
        }
        let pins: Vec<PathBuf> = mesh.nodes.iter().map(|n| n.pin.clone()).collect();
        let reactions = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (nh, reactions, stop) = (nh.clone(), reactions.clone(), stop.clone());
            std::thread::Builder::new()
                .name("carrier-watch".into())
                .spawn(move || watch(socks, pins, nh, reactions, stop))?
        };
        Ok(Self {
            nh,
            written: vec![BTreeMap::new(); mesh.nodes.len()],
            reactions,
            stop,
            watcher: Some(watcher),
        })
    }

    /// Loads and attaches node `i`'s datapath and writes its next hops (marked down
    /// where the carrier is gone).
    pub fn boot(&mut self, mesh: &Mesh, i: usize) -> Result<()> {
        let node = &mesh.nodes[i];
        let nh = &self.nh[i];
        let pin = node.pin.clone();
        let down: Vec<u32> = node
            .ifaces
            .iter()
            .filter(|f| matches!(f.port, Port::Mesh { link, .. } if !mesh.links[link].carrier))
            .map(|f| nh[&f.ifindex])
            .collect();
        node.ns
            .enter(|| -> Result<()> {
                let mut dp = Datapath::load(Some(&pin))?;
                for f in &node.ifaces {
                    dp.attach(&f.name, AttachMode::Auto)?;
                }
                let t = dp.tables();
                for f in &node.ifaces {
                    let dst = match f.port {
                        Port::Mesh { peer_mac, .. } => peer_mac,
                        Port::Access { mac, .. } => mac,
                    };
                    t.set_nexthop(nh[&f.ifindex], NextHopSpec::via_interface(&f.name, dst)?)?;
                }
                for id in &down {
                    t.set_nexthop_down(*id, true)?;
                }
                Ok(())
            })
            .with_context(|| format!("boot {}", node.name))??;
        self.written[i].clear();
        Ok(())
    }

    /// What every running node's routes should be, given the true topology now, each
    /// with its rank for ordered writing: 0 at the destination's own node, else the
    /// node's path cost to the destination.
    fn desired(&self, mesh: &Mesh) -> Vec<BTreeMap<IpNet, (RouteTarget, u64)>> {
        let n = mesh.nodes.len();
        let mut g = Graph::new(n);
        for l in &mesh.links {
            if !(l.passes() && mesh.nodes[l.a].on && mesh.nodes[l.b].on) {
                continue;
            }
            let (ab, ba) = l.effective_loss();
            if let Some(c) = routes::link_cost(ab, ba, l.state.snr_db) {
                g.add(l.a, l.b, c);
                g.add(l.b, l.a, c);
            }
        }
        let table = routes::compute(&g);
        // Prefixes each node owns.
        let owned: Vec<Vec<IpNet>> = (0..n)
            .map(|j| {
                let mut v = vec![
                    IpNet::from(IpAddr::V4(plan::node_v4(j))),
                    IpNet::from(IpAddr::V6(plan::node_v6(j))),
                ];
                for c in mesh.clients.iter().filter(|c| c.node == j) {
                    v.push(IpNet::V4(c.prefix4));
                    v.push(IpNet::V6(c.prefix6));
                }
                v
            })
            .collect();
        (0..n)
            .map(|i| {
                let mut want = BTreeMap::new();
                if !mesh.nodes[i].on {
                    return want;
                }
                let node = &mesh.nodes[i];
                let nh_to = |peer: usize| {
                    node.ifaces
                        .iter()
                        .find(|f| matches!(f.port, Port::Mesh { peer: p, .. } if p == peer))
                        .map(|f| self.nh[i][&f.ifindex])
                };
                want.insert(
                    IpNet::from(IpAddr::V4(plan::node_v4(i))),
                    (RouteTarget::Local, 0),
                );
                want.insert(
                    IpNet::from(IpAddr::V6(plan::node_v6(i))),
                    (RouteTarget::Local, 0),
                );
                for f in &node.ifaces {
                    if let Port::Access { client, .. } = f.port {
                        let c = &mesh.clients[client];
                        let (gw4, _) = plan::access_v4(c.prefix4);
                        let (gw6, _) = plan::access_v6(c.prefix6);
                        want.insert(IpNet::from(IpAddr::V4(gw4)), (RouteTarget::Local, 0));
                        want.insert(IpNet::from(IpAddr::V6(gw6)), (RouteTarget::Local, 0));
                        let via = RouteTarget::Via {
                            id: self.nh[i][&f.ifindex],
                            alt: None,
                        };
                        want.insert(IpNet::V4(c.prefix4), (via, 0));
                        want.insert(IpNet::V6(c.prefix6), (via, 0));
                    }
                }
                for (j, hop) in table[i].iter().enumerate() {
                    let Some(h) = hop else { continue };
                    let Some(id) = nh_to(h.primary) else { continue };
                    let target = RouteTarget::Via {
                        id,
                        alt: h.alt.and_then(nh_to),
                    };
                    for p in &owned[j] {
                        want.insert(*p, (target, h.cost));
                    }
                }
                want
            })
            .collect()
    }

    /// Recomputes and writes what changed (routes only; next hops are fixed).
    ///
    /// Writes are ordered per prefix by the writing node's new distance to the
    /// destination, nearest first, and removals last. A node then only ever points at a
    /// neighbour that already uses its new, loop-free path, so no intermediate state
    /// loops (ordered updates in the spirit of RFC 6976).
    pub fn apply(&mut self, mesh: &Mesh) -> Result<()> {
        let want = self.desired(mesh);
        let mut ops: Vec<(IpNet, u64, usize, Option<RouteTarget>)> = Vec::new();
        for (i, w) in want.iter().enumerate() {
            if !mesh.nodes[i].on {
                continue;
            }
            for (p, (r, rank)) in w {
                if self.written[i].get(p) != Some(r) {
                    ops.push((*p, *rank, i, Some(*r)));
                }
            }
            for p in self.written[i].keys() {
                if !w.contains_key(p) {
                    ops.push((*p, u64::MAX, i, None));
                }
            }
        }
        ops.sort_by_key(|o| (o.0, o.1, o.2));
        let mut tables: Vec<Option<Tables>> = (0..mesh.nodes.len()).map(|_| None).collect();
        for (p, _, i, r) in ops {
            if tables[i].is_none() {
                tables[i] = Some(
                    Tables::open_pinned(&mesh.nodes[i].pin)
                        .with_context(|| format!("open {}'s tables", mesh.nodes[i].name))?,
                );
            }
            let t = tables[i].as_mut().expect("opened above");
            match r {
                Some(r) => {
                    t.set_route(p, r)?;
                    self.written[i].insert(p, r);
                }
                None => {
                    // Already gone is fine: the goal is its absence.
                    let _ = t.delete_route(p);
                    self.written[i].remove(&p);
                }
            }
        }
        Ok(())
    }

    /// Carrier changes acted on so far.
    pub fn reactions(&self) -> Vec<Reaction> {
        self.reactions.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

impl Drop for StaticCtl {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A NETLINK_ROUTE socket subscribed to link events, in the calling thread's namespace.
fn link_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("netlink socket");
    }
    // SAFETY: fd was just created and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: valid fd and address of the right size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind netlink socket");
    }
    Ok(fd)
}

/// (ifindex, carrier) of every RTM_NEWLINK message in a netlink datagram.
pub fn parse_link_events(buf: &[u8]) -> Vec<(u32, bool)> {
    const NLMSG_HDR: usize = 16;
    const IFINFO: usize = 16;
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
        if len < NLMSG_HDR || off + len > buf.len() {
            break;
        }
        if ty == libc::RTM_NEWLINK && len >= NLMSG_HDR + IFINFO {
            let m = &buf[off + NLMSG_HDR..];
            let index = i32::from_ne_bytes(m[4..8].try_into().expect("4 bytes"));
            let flags = u32::from_ne_bytes(m[8..12].try_into().expect("4 bytes"));
            if index > 0 {
                out.push((index as u32, flags & libc::IFF_LOWER_UP as u32 != 0));
            }
        }
        off += (len + 3) & !3;
    }
    out
}

fn watch(
    socks: Vec<OwnedFd>,
    pins: Vec<PathBuf>,
    nh: Vec<HashMap<u32, u32>>,
    reactions: Arc<Mutex<Vec<Reaction>>>,
    stop: Arc<AtomicBool>,
) {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut last: HashMap<(usize, u32), bool> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: valid pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        for node in 0..fds.len() {
            if fds[node].revents == 0 {
                continue;
            }
            loop {
                // SAFETY: reading into our buffer from our socket.
                let r = unsafe {
                    libc::recv(
                        fds[node].fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if r <= 0 {
                    break;
                }
                let seen = Instant::now();
                for (ifindex, up) in parse_link_events(&buf[..r as usize]) {
                    let Some(&id) = nh[node].get(&ifindex) else {
                        continue;
                    };
                    if last.insert((node, ifindex), up) == Some(up) {
                        continue;
                    }
                    let ok = Tables::open_pinned(&pins[node])
                        .ok()
                        .and_then(|mut t| t.set_nexthop_down(id, !up).ok())
                        .is_some();
                    if ok {
                        if let Ok(mut v) = reactions.lock() {
                            v.push(Reaction {
                                node,
                                ifindex,
                                up,
                                seen,
                                written: Instant::now(),
                            });
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, index: i32, flags: u32) -> Vec<u8> {
        let len = 32u32;
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&[0u8; 10]);
        b.extend_from_slice(&[0u8; 4]);
        b.extend_from_slice(&index.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&[0u8; 4]);
        b
    }

    #[test]
    fn link_events_give_index_and_carrier() {
        let lower_up = libc::IFF_LOWER_UP as u32 | libc::IFF_UP as u32;
        let mut b = msg(libc::RTM_NEWLINK, 7, lower_up);
        b.extend(msg(libc::RTM_NEWLINK, 9, libc::IFF_UP as u32));
        b.extend(msg(libc::RTM_DELLINK, 3, 0));
        assert_eq!(parse_link_events(&b), vec![(7, true), (9, false)]);
        // Truncated or garbage input yields what is whole, never panics.
        assert_eq!(parse_link_events(&b[..40]), vec![(7, true)]);
        assert!(parse_link_events(&[0xff; 7]).is_empty());
        let mut bad = msg(libc::RTM_NEWLINK, 7, 0);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_link_events(&bad).is_empty());
    }
}
