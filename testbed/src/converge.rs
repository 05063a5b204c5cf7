//! Is the mesh converged? A walk over every node's datapath tables, checked against the
//! true topology the testbed knows.
//!
//! For every running source node and every destination (each running node's router
//! address, each client's host address) the walk follows what the XDP datapath would do:
//! longest-prefix match, primary next hop unless it is marked down (then the alternate,
//! unless that one is down or leads back to the sender: dropped); a packet whose next hop
//! is the neighbour it came from is dropped (the U-turn rule); next hop → interface → the
//! neighbour behind it. A packet is *delivered* when it reaches a `local` route at the destination's own node (or the client's access next
//! hop there); it is *lost* when a route is missing or points at a dead link, a powered
//! off node, a wrong neighbour MAC, or a `local` route elsewhere; it *loops* when it
//! comes back to a node it has visited.
//!
//! The mesh counts as converged when every destination that is reachable in the true
//! topology is delivered, loop-free, from every running node. That is "forwarding
//! restored"; the route tables may keep moving toward better paths afterwards, which
//! the caller sees as changes of [`Snapshot`]s.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use dcmesh_loader::{IpNet, RouteTarget};

/// What an interface of a node leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Mesh link `link` to node `peer`, whose interface has MAC `peer_mac`.
    Mesh {
        link: usize,
        peer: usize,
        peer_mac: [u8; 6],
    },
    /// Access link to client `client`, MAC `mac`.
    Access { client: usize, mac: [u8; 6] },
}

/// One node's forwarding state as read from its tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTables {
    /// Routes, any order.
    pub routes: Vec<(IpNet, RouteTarget)>,
    /// Next hop id → (egress ifindex, neighbour MAC); only ids routes name.
    pub nexthops: BTreeMap<u32, (u32, [u8; 6])>,
    /// Next hop ids marked down.
    pub down: Vec<u32>,
}

impl NodeTables {
    /// Longest-prefix match.
    pub fn lookup(&self, addr: IpAddr) -> Option<RouteTarget> {
        self.routes
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, t)| *t)
    }
}

/// Every node's tables at one moment (`None`: node off or tables unreadable).
pub type Snapshot = Vec<Option<NodeTables>>;

/// What the testbed knows to be true right now.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    /// Per node: powered on.
    pub node_on: Vec<bool>,
    /// Per link: its ends.
    pub link_ends: Vec<(usize, usize)>,
    /// Per link: carries frames (carrier up, not silent, loss below the usable bound).
    pub link_usable: Vec<bool>,
    /// Per node: ifindex → port.
    pub ports: Vec<HashMap<u32, Port>>,
}

impl Truth {
    /// Nodes reachable from `src` over usable links between running nodes.
    pub fn reachable(&self, src: usize) -> Vec<bool> {
        let n = self.node_on.len();
        let mut seen = vec![false; n];
        if !self.node_on[src] {
            return seen;
        }
        seen[src] = true;
        let mut stack = vec![src];
        while let Some(u) = stack.pop() {
            for (l, &(a, b)) in self.link_ends.iter().enumerate() {
                if !self.link_usable[l] {
                    continue;
                }
                let v = if a == u {
                    b
                } else if b == u {
                    a
                } else {
                    continue;
                };
                if self.node_on[v] && !seen[v] {
                    seen[v] = true;
                    stack.push(v);
                }
            }
        }
        seen
    }
}

/// A destination: an address and where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest {
    pub addr: IpAddr,
    /// The node that owns it (the client's node for a client).
    pub node: usize,
    /// For a client host: its index.
    pub client: Option<usize>,
}

/// Where a walk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Arrived; `path` lists the nodes crossed, source first.
    Delivered { path: Vec<usize> },
    /// Came back to a node already on the path.
    Loop { path: Vec<usize> },
    /// Lost at `at` for `why`.
    Lost { at: usize, why: &'static str },
}

/// Follows the datapath from `src` toward `dest`.
pub fn walk(snap: &Snapshot, truth: &Truth, src: usize, dest: Dest) -> Outcome {
    let mut path = vec![src];
    let mut at = src;
    // (ingress ifindex at `at`, the sender's MAC) once the packet has crossed a link.
    let mut arrived: Option<(u32, [u8; 6])> = None;
    loop {
        let Some(t) = snap.get(at).and_then(Option::as_ref) else {
            return Outcome::Lost {
                at,
                why: "node has no tables",
            };
        };
        let Some(route) = t.lookup(dest.addr) else {
            return Outcome::Lost {
                at,
                why: "no route",
            };
        };
        let (id, alt) = match route {
            RouteTarget::Local => {
                return if at == dest.node {
                    Outcome::Delivered { path }
                } else {
                    Outcome::Lost {
                        at,
                        why: "local route at the wrong node",
                    }
                };
            }
            RouteTarget::Kernel => {
                return Outcome::Lost {
                    at,
                    why: "route handed to the kernel",
                }
            }
            RouteTarget::Blackhole => {
                return Outcome::Lost {
                    at,
                    why: "blackhole route",
                }
            }
            RouteTarget::Via { id, alt } => (id, alt),
        };
        let down = |i: u32| t.down.contains(&i);
        // The datapath's U-turn rule: never straight back to the neighbour the packet
        // came from (same interface, next-hop MAC = the frame's source MAC).
        let uturn = |i: u32| {
            arrived.is_some_and(|a| t.nexthops.get(&i).is_some_and(|&(ifx, m)| (ifx, m) == a))
        };
        let id = if !down(id) && !uturn(id) {
            id
        } else {
            match alt {
                Some(a) if down(id) && !down(a) && !uturn(a) => a,
                _ => {
                    return Outcome::Lost {
                        at,
                        why: if down(id) {
                            "next hop down, no alternate"
                        } else {
                            "U-turn dropped (next hop is the neighbour it came from)"
                        },
                    }
                }
            }
        };
        let Some(&(ifindex, mac)) = t.nexthops.get(&id) else {
            return Outcome::Lost {
                at,
                why: "next hop missing",
            };
        };
        let Some(port) = truth.ports.get(at).and_then(|p| p.get(&ifindex)) else {
            return Outcome::Lost {
                at,
                why: "next hop on an unknown interface",
            };
        };
        match *port {
            Port::Access { client, mac: cmac } => {
                return if Some(client) == dest.client && at == dest.node && mac == cmac {
                    Outcome::Delivered { path }
                } else {
                    Outcome::Lost {
                        at,
                        why: "sent to the wrong client",
                    }
                };
            }
            Port::Mesh {
                link,
                peer,
                peer_mac,
            } => {
                if mac != peer_mac {
                    return Outcome::Lost {
                        at,
                        why: "next hop MAC is not the neighbour's",
                    };
                }
                if !truth.link_usable[link] {
                    return Outcome::Lost {
                        at,
                        why: "next hop over a dead link",
                    };
                }
                if !truth.node_on[peer] {
                    return Outcome::Lost {
                        at,
                        why: "next hop is powered off",
                    };
                }
                if path.contains(&peer) {
                    path.push(peer);
                    return Outcome::Loop { path };
                }
                // Where it lands: the peer's interface on this link, from our MAC.
                arrived = truth.ports.get(peer).and_then(|p| {
                    p.iter().find_map(|(&ifx, q)| match *q {
                        Port::Mesh {
                            link: l, peer_mac, ..
                        } if l == link => Some((ifx, peer_mac)),
                        _ => None,
                    })
                });
                path.push(peer);
                at = peer;
            }
        }
    }
}

/// The result of checking every (source, destination) pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// Pairs expected to be delivered (destination reachable in the true topology).
    pub expected: usize,
    pub delivered: usize,
    /// Loops among all pairs (also unreachable ones: a loop is always a fault).
    pub loops: Vec<(usize, Dest, Vec<usize>)>,
    /// Expected pairs that were lost: (source, destination, node, reason).
    pub lost: Vec<(usize, Dest, usize, &'static str)>,
}

impl Check {
    pub fn converged(&self) -> bool {
        self.delivered == self.expected && self.loops.is_empty()
    }
}

/// Walks every running source to every destination.
pub fn check(snap: &Snapshot, truth: &Truth, dests: &[Dest]) -> Check {
    let mut c = Check::default();
    for src in 0..truth.node_on.len() {
        if !truth.node_on[src] {
            continue;
        }
        let reach = truth.reachable(src);
        for d in dests {
            if d.node == src && d.client.is_none() {
                continue;
            }
            let expected = reach[d.node];
            if expected {
                c.expected += 1;
            }
            match walk(snap, truth, src, *d) {
                Outcome::Delivered { .. } if expected => c.delivered += 1,
                Outcome::Delivered { .. } => {}
                Outcome::Loop { path } => c.loops.push((src, *d, path)),
                Outcome::Lost { at, why } if expected => c.lost.push((src, *d, at, why)),
                Outcome::Lost { .. } => {}
            }
        }
    }
    c
}

/// A route target as plain values: (kind, next hop, alternate).
type RouteKey = (u8, u32, Option<u32>);

fn key(t: &RouteTarget) -> RouteKey {
    match *t {
        RouteTarget::Via { id, alt } => (0, id, alt),
        RouteTarget::Local => (1, 0, None),
        RouteTarget::Kernel => (2, 0, None),
        RouteTarget::Blackhole => (3, 0, None),
    }
}

/// A fingerprint of a snapshot, to notice when forwarding state changes.
pub fn fingerprint(snap: &Snapshot) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in snap {
        match t {
            None => 0u8.hash(&mut h),
            Some(t) => {
                let mut r: Vec<(IpNet, RouteKey)> =
                    t.routes.iter().map(|(n, x)| (*n, key(x))).collect();
                r.sort();
                r.hash(&mut h);
                t.nexthops.hash(&mut h);
                let d: HashSet<&u32> = t.down.iter().collect();
                let mut d: Vec<_> = d.into_iter().collect();
                d.sort();
                d.hash(&mut h);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [[u8; 6]; 4] = [
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 3],
        [2, 0, 0, 0, 0, 4],
    ];

    /// A ring 0-1-2-3-0; node i's interface toward j has ifindex 10·i + j and every
    /// interface of node j has MAC[j].
    fn ring() -> Truth {
        let link_ends = vec![(0, 1), (1, 2), (2, 3), (3, 0)];
        let mut ports = vec![HashMap::new(); 4];
        for (l, &(a, b)) in link_ends.iter().enumerate() {
            ports[a].insert(
                10 * a as u32 + b as u32,
                Port::Mesh {
                    link: l,
                    peer: b,
                    peer_mac: MAC[b],
                },
            );
            ports[b].insert(
                10 * b as u32 + a as u32,
                Port::Mesh {
                    link: l,
                    peer: a,
                    peer_mac: MAC[a],
                },
            );
        }
        Truth {
            node_on: vec![true; 4],
            link_ends,
            link_usable: vec![true; 4],
            ports,
        }
    }

    fn addr(i: usize) -> IpAddr {
        format!("10.255.0.{}", i + 1).parse().unwrap()
    }

    fn dest(i: usize) -> Dest {
        Dest {
            addr: addr(i),
            node: i,
            client: None,
        }
    }

    /// Node `i` sends everything for node `d` toward `toward[d]` (alternate `alt`).
    fn tables(i: usize, toward: &[(usize, usize, Option<usize>)]) -> NodeTables {
        let mut t = NodeTables::default();
        t.routes.push((
            format!("{}/32", addr(i)).parse().unwrap(),
            RouteTarget::Local,
        ));
        for &(d, via, alt) in toward {
            let id = via as u32 + 1;
            t.nexthops
                .insert(id, (10 * i as u32 + via as u32, MAC[via]));
            let alt_id = alt.map(|a| {
                t.nexthops
                    .insert(a as u32 + 1, (10 * i as u32 + a as u32, MAC[a]));
                a as u32 + 1
            });
            t.routes.push((
                format!("{}/32", addr(d)).parse().unwrap(),
                RouteTarget::Via { id, alt: alt_id },
            ));
        }
        t
    }

    /// Clockwise routing with counter-clockwise alternates for everything.
    fn clockwise() -> Snapshot {
        (0..4)
            .map(|i| {
                let r: Vec<_> = (0..4)
                    .filter(|&d| d != i)
                    .map(|d| (d, (i + 1) % 4, Some((i + 3) % 4)))
                    .collect();
                Some(tables(i, &r))
            })
            .collect()
    }

    fn all() -> Vec<Dest> {
        (0..4).map(dest).collect()
    }

    #[test]
    fn a_consistent_ring_is_converged() {
        let c = check(&clockwise(), &ring(), &all());
        assert_eq!(c.expected, 12);
        assert!(c.converged(), "{c:?}");
        assert_eq!(
            walk(&clockwise(), &ring(), 0, dest(3)),
            Outcome::Delivered {
                path: vec![0, 1, 2, 3]
            }
        );
    }

    #[test]
    fn a_dead_link_is_lost_until_the_alternate_is_used() {
        let mut truth = ring();
        truth.link_usable[0] = false; // 0-1
        let mut snap = clockwise();
        let c = check(&snap, &truth, &all());
        assert!(!c.converged());
        assert!(c
            .lost
            .iter()
            .any(|l| l.0 == 0 && l.3 == "next hop over a dead link"));
        // Node 0 marks next hop 2 (toward 1) down: traffic takes the alternate toward 3,
        // which routes clockwise back to 0. The datapath's U-turn rule drops it at 3 (even
        // though 3 has an alternate): not looped.
        snap[0].as_mut().unwrap().down.push(2);
        assert_eq!(
            walk(&snap, &truth, 0, dest(2)),
            Outcome::Lost {
                at: 3,
                why: "U-turn dropped (next hop is the neighbour it came from)"
            }
        );
        // A loop over three nodes is no U-turn: the checker must see it.
        let mut three = ring();
        three.link_ends.push((0, 2));
        three.link_usable.push(true);
        three.ports[0].insert(
            2,
            Port::Mesh {
                link: 4,
                peer: 2,
                peer_mac: MAC[2],
            },
        );
        three.ports[2].insert(
            20,
            Port::Mesh {
                link: 4,
                peer: 0,
                peer_mac: MAC[0],
            },
        );
        let mut lp = clockwise();
        lp[0] = Some(tables(0, &[(3, 1, None)]));
        lp[1] = Some(tables(1, &[(3, 2, None)]));
        let mut t2 = tables(2, &[]);
        t2.nexthops.insert(9, (20, MAC[0]));
        t2.routes.push((
            format!("{}/32", addr(3)).parse().unwrap(),
            RouteTarget::Via { id: 9, alt: None },
        ));
        lp[2] = Some(t2);
        assert_eq!(
            walk(&lp, &three, 0, dest(3)),
            Outcome::Loop {
                path: vec![0, 1, 2, 0]
            }
        );
        assert!(!check(&lp, &three, &all()).loops.is_empty());
    }

    #[test]
    fn powered_off_nodes_are_neither_sources_nor_expected() {
        let mut truth = ring();
        truth.node_on[2] = false;
        let mut snap = clockwise();
        snap[2] = None;
        // Reroute around 2: 1 sends to 0 for 3, 3 sends to 0 for 1.
        snap[1] = Some(tables(1, &[(0, 0, None), (3, 0, None)]));
        snap[3] = Some(tables(3, &[(0, 0, None), (1, 0, None)]));
        snap[0] = Some(tables(0, &[(1, 1, None), (3, 3, None)]));
        let c = check(&snap, &truth, &all());
        assert_eq!(c.expected, 6);
        assert!(c.converged(), "{c:?}");
    }

    #[test]
    fn wrong_mac_missing_route_and_misplaced_local_are_lost() {
        let truth = ring();
        let mut snap = clockwise();
        snap[1].as_mut().unwrap().nexthops.insert(3, (12, MAC[0]));
        assert_eq!(
            walk(&snap, &truth, 0, dest(2)),
            Outcome::Lost {
                at: 1,
                why: "next hop MAC is not the neighbour's"
            }
        );
        let mut snap = clockwise();
        snap[1]
            .as_mut()
            .unwrap()
            .routes
            .retain(|r| r.0.to_string() != "10.255.0.3/32");
        assert_eq!(
            walk(&snap, &truth, 0, dest(2)),
            Outcome::Lost {
                at: 1,
                why: "no route"
            }
        );
        let mut snap = clockwise();
        snap[1]
            .as_mut()
            .unwrap()
            .routes
            .push(("10.255.0.0/24".parse().unwrap(), RouteTarget::Local));
        snap[1]
            .as_mut()
            .unwrap()
            .routes
            .retain(|r| r.0.to_string() != "10.255.0.3/32");
        assert_eq!(
            walk(&snap, &truth, 0, dest(2)),
            Outcome::Lost {
                at: 1,
                why: "local route at the wrong node"
            }
        );
    }

    #[test]
    fn clients_are_delivered_through_their_access_next_hop() {
        let mut truth = ring();
        let cmac = [2, 0, 0, 0, 0, 0x99];
        truth.ports[2].insert(
            99,
            Port::Access {
                client: 0,
                mac: cmac,
            },
        );
        let caddr: IpAddr = "10.100.1.2".parse().unwrap();
        let cdest = Dest {
            addr: caddr,
            node: 2,
            client: Some(0),
        };
        let mut snap = clockwise();
        for i in [0, 1] {
            let t = snap[i].as_mut().unwrap();
            let id = (i as u32 + 1) % 4 + 1;
            t.routes.push((
                "10.100.1.0/24".parse().unwrap(),
                RouteTarget::Via { id, alt: None },
            ));
        }
        let t2 = snap[2].as_mut().unwrap();
        t2.nexthops.insert(50, (99, cmac));
        t2.routes.push((
            "10.100.1.0/24".parse().unwrap(),
            RouteTarget::Via { id: 50, alt: None },
        ));
        assert_eq!(
            walk(&snap, &truth, 0, cdest),
            Outcome::Delivered {
                path: vec![0, 1, 2]
            }
        );
        // A local route for the client prefix at its own node also counts (the kernel
        // delivers on the access subnet).
        let t2 = snap[2].as_mut().unwrap();
        t2.routes.retain(|r| r.0.to_string() != "10.100.1.0/24");
        t2.routes
            .push(("10.100.1.0/24".parse().unwrap(), RouteTarget::Local));
        assert_eq!(
            walk(&snap, &truth, 0, cdest),
            Outcome::Delivered {
                path: vec![0, 1, 2]
            }
        );
    }

    #[test]
    fn fingerprints_change_with_state_and_not_with_order() {
        let a = clockwise();
        let mut b = clockwise();
        b[0].as_mut().unwrap().routes.reverse();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b[0].as_mut().unwrap().down.push(2);
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
