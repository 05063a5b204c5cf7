//! Route computation: shortest paths over verified bidirectional links, a primary next hop
//! and a downstream loop-free alternate per destination.
//!
//! - A link u→v counts only if u's advert lists v *and* v's advert lists u: a one-sided
//!   claim (a node announcing a link to a victim) creates nothing. Its cost is the one u
//!   announced (costs of 0 are treated as 1, so every path has a positive length).
//! - Ties are deterministic: nodes are numbered in public-key order, and among equal-cost
//!   shortest paths the primary next hop is the neighbour with the smallest key.
//! - Downstream alternate (RFC 5286, inequality 2): neighbour N ≠ primary protects
//!   destination D when `dist(N, D) < dist(S, D)`. Primary and alternate hops then both
//!   lower the distance to D, so forwarding cannot loop however many links and nodes fail
//!   before the mesh reconverges. The weaker loop-free condition (inequality 1,
//!   `dist(N, D) < dist(N, S) + dist(S, D)`) protects more routes (rings) but loops after
//!   a power cut or a partition, when neighbours of different failures each fall back.
//!   Among the candidates, the one with the smallest `cost(S, N) + dist(N, D)`, then the
//!   smallest key.
//! - A prefix announced by several nodes goes to the nearest one (smallest key on a tie);
//!   one announced by this node is local.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    hash::{BuildHasherDefault, Hasher},
};

use ipnet::IpNet;

use crate::{identity::NodeId, wire::AdvLink};

/// Hashes a node id by its first 8 bytes. Ids are Ed25519 public keys, and the table
/// it serves holds only origins whose certificates k authorities signed, so nobody can
/// fill it with colliding keys; that makes a keyed (slower) hash unnecessary here.
#[derive(Default)]
struct KeyPrefixHasher(u64);

impl Hasher for KeyPrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn write_usize(&mut self, _: usize) {}
}

/// No node / unreachable.
pub const NONE: u32 = u32::MAX;

/// The graph, in compressed adjacency form, nodes numbered in key order.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// Sorted.
    ids: Vec<NodeId>,
    /// Edges of node i are `edges[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    edges: Vec<(u32, u32)>,
    prefixes: Vec<(IpNet, u32)>,
}

/// One node's input: its id, announced links and prefixes.
pub struct NodeInput<'a> {
    pub id: NodeId,
    pub links: &'a [AdvLink],
    pub prefixes: &'a [IpNet],
}

impl Topology {
    /// Builds the graph from every node's announcement. O(E log E): ids are found by
    /// binary search and the bidirectional check is a binary search in the other end's
    /// sorted claims (no hashing of 32-byte keys).
    pub fn build<'a>(nodes: impl IntoIterator<Item = NodeInput<'a>>) -> Self {
        let mut nodes: Vec<NodeInput<'a>> = nodes.into_iter().collect();
        nodes.sort_unstable_by_key(|n| n.id);
        nodes.dedup_by_key(|n| n.id);
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        let mut index: HashMap<NodeId, u32, BuildHasherDefault<KeyPrefixHasher>> =
            HashMap::with_capacity_and_hasher(ids.len(), Default::default());
        index.extend(ids.iter().enumerate().map(|(i, id)| (*id, i as u32)));
        let find = |id: &NodeId| index.get(id).copied();
        // Claimed links per node: (neighbour, cheapest cost), sorted, self-links dropped.
        let mut c_off = Vec::with_capacity(ids.len() + 1);
        let mut claims: Vec<(u32, u32)> = Vec::new();
        for (u, n) in nodes.iter().enumerate() {
            c_off.push(claims.len());
            let start = claims.len();
            claims.extend(
                n.links
                    .iter()
                    .filter_map(|l| find(&l.neighbour).map(|v| (v, l.cost.max(1))))
                    .filter(|&(v, _)| v != u as u32),
            );
            claims[start..].sort_unstable();
            let mut w = start;
            for r in start..claims.len() {
                if w == start || claims[w - 1].0 != claims[r].0 {
                    claims[w] = claims[r];
                    w += 1;
                }
            }
            claims.truncate(w);
        }
        c_off.push(claims.len());
        let claimed = |u: u32, v: u32| {
            let c = &claims[c_off[u as usize]..c_off[u as usize + 1]];
            c.binary_search_by_key(&v, |e| e.0).is_ok()
        };
        let mut offsets = Vec::with_capacity(ids.len() + 1);
        let mut edges = Vec::with_capacity(claims.len());
        let mut prefixes = Vec::new();
        for (u, n) in nodes.iter().enumerate() {
            offsets.push(edges.len() as u32);
            edges.extend(
                claims[c_off[u]..c_off[u + 1]]
                    .iter()
                    .copied()
                    .filter(|&(v, _)| claimed(v, u as u32)),
            );
            prefixes.extend(n.prefixes.iter().map(|p| (p.trunc(), u as u32)));
        }
        offsets.push(edges.len() as u32);
        Self {
            ids,
            offsets,
            edges,
            prefixes,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, i: u32) -> NodeId {
        self.ids[i as usize]
    }

    pub fn index_of(&self, id: &NodeId) -> Option<u32> {
        self.ids.binary_search(id).ok().map(|i| i as u32)
    }

    /// Bidirectional edges out of `u`: (neighbour, cost).
    pub fn edges(&self, u: u32) -> &[(u32, u32)] {
        let (a, b) = (self.offsets[u as usize], self.offsets[u as usize + 1]);
        &self.edges[a as usize..b as usize]
    }

    /// Number of directed edges (twice the number of links).
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }
}

/// Shortest distances from `src` and, per node, the first hop (smallest-index neighbour
/// of `src` that starts a shortest path; [`NONE`] for `src` and unreachable nodes).
pub fn dijkstra(t: &Topology, src: u32) -> (Vec<u64>, Vec<u32>) {
    let n = t.len();
    let mut dist = vec![u64::MAX; n];
    let mut first = vec![NONE; n];
    let mut done = vec![false; n];
    let mut heap = BinaryHeap::new();
    dist[src as usize] = 0;
    heap.push(Reverse((0u64, src)));
    while let Some(Reverse((d, u))) = heap.pop() {
        if done[u as usize] {
            continue;
        }
        done[u as usize] = true;
        for &(v, c) in t.edges(u) {
            let nd = d + u64::from(c);
            let fh = if u == src { v } else { first[u as usize] };
            let (dv, fv) = (&mut dist[v as usize], &mut first[v as usize]);
            if nd < *dv {
                *dv = nd;
                *fv = fh;
                heap.push(Reverse((nd, v)));
            } else if nd == *dv && fh < *fv && !done[v as usize] {
                // Every predecessor on a shortest path is settled before v (costs > 0),
                // so v's first hop ends as the smallest among them.
                *fv = fh;
            }
        }
    }
    (dist, first)
}

/// Where a destination node is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRoute {
    pub dist: u64,
    /// Neighbour (node index) of the primary path.
    pub primary: u32,
    /// Downstream alternate neighbour (strictly nearer to the destination), if any.
    pub alternate: Option<u32>,
}

/// Per node (by index): its route from `src`, `None` for `src` itself and unreachable
/// nodes. Runs one Dijkstra from `src` and one from each neighbour (for the alternates).
pub fn node_routes(t: &Topology, src: u32) -> Vec<Option<NodeRoute>> {
    let (dist, first) = dijkstra(t, src);
    let nbrs: Vec<(u32, u32, Vec<u64>)> = t
        .edges(src)
        .iter()
        .map(|&(n, c)| (n, c, dijkstra(t, n).0))
        .collect();
    (0..t.len() as u32)
        .map(|d| {
            let dd = dist[d as usize];
            if d == src || dd == u64::MAX {
                return None;
            }
            let primary = first[d as usize];
            let mut best: Option<(u64, u32)> = None;
            for (n, c, dn) in &nbrs {
                let n_d = dn[d as usize];
                if *n == primary || n_d == u64::MAX {
                    continue;
                }
                // Downstream only (RFC 5286 inequality 2): the neighbour is strictly
                // nearer to `d` than we are. Every hop, primary or alternate, then
                // lowers the distance on the topology all nodes share, so packets
                // cannot loop however many links or nodes fail at once. The weaker
                // loop-free condition (`n_d < n_s + dd`) only holds for one failure.
                if n_d < dd {
                    let via = u64::from(*c) + n_d;
                    if best.is_none_or(|b| (via, *n) < b) {
                        best = Some((via, *n));
                    }
                }
            }
            Some(NodeRoute {
                dist: dd,
                primary,
                alternate: best.map(|b| b.1),
            })
        })
        .collect()
}

/// Whether a neighbour `n` of `s` still protects destination `d` on this topology (RFC
/// 5286 inequality 1: `dist(n, d) < dist(n, s) + dist(s, d)`, so `n`'s shortest path to
/// `d` does not come back through `s`). `from_n` are distances from `n`, `from_s` from
/// `s` ([`dijkstra`]'s first result); an unreachable `d` is protected by nobody.
pub fn still_loop_free(from_n: &[u64], from_s: &[u64], s: u32, d: u32) -> bool {
    let (n_d, n_s, s_d) = (
        from_n.get(d as usize).copied().unwrap_or(u64::MAX),
        from_n.get(s as usize).copied().unwrap_or(u64::MAX),
        from_s.get(d as usize).copied().unwrap_or(u64::MAX),
    );
    n_d != u64::MAX && s_d != u64::MAX && n_d < n_s.saturating_add(s_d)
}

/// Whether neighbour `n`'s shortest path to `d` may run through `s` (a path through `s`
/// is among its shortest: `dist(n, d) ≥ dist(n, s) + dist(s, d)`), so `n` may forward
/// `d`'s traffic back to `s`. False when either cannot reach `d` (`n` would drop it, not
/// return it). Distances as [`still_loop_free`] takes them.
pub fn routes_through(from_n: &[u64], from_s: &[u64], s: u32, d: u32) -> bool {
    let (n_d, n_s, s_d) = (
        from_n.get(d as usize).copied().unwrap_or(u64::MAX),
        from_n.get(s as usize).copied().unwrap_or(u64::MAX),
        from_s.get(d as usize).copied().unwrap_or(u64::MAX),
    );
    n_d != u64::MAX && s_d != u64::MAX && n_d >= n_s.saturating_add(s_d)
}

/// How a prefix is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Via {
    /// This node announces it.
    Local,
    /// Through neighbours.
    Neighbour {
        primary: NodeId,
        alternate: Option<NodeId>,
    },
}

/// A computed route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PrefixRoute {
    pub prefix: IpNet,
    pub origin: NodeId,
    /// Path cost in 1/256 ETX units (0 for local).
    pub metric: u64,
    pub via: Via,
}

/// Every prefix route from `src`, sorted by prefix. Empty if `src` is not in the graph.
pub fn compute(t: &Topology, src: &NodeId) -> Vec<PrefixRoute> {
    let Some(s) = t.index_of(src) else {
        return Vec::new();
    };
    let nodes = node_routes(t, s);
    let mut best: HashMap<IpNet, (u64, u32)> = HashMap::new();
    for &(p, o) in &t.prefixes {
        let d = if o == s {
            0
        } else {
            match nodes[o as usize] {
                Some(r) => r.dist,
                None => continue,
            }
        };
        let e = best.entry(p).or_insert((d, o));
        if (d, o) < *e {
            *e = (d, o);
        }
    }
    let mut out: Vec<PrefixRoute> = best
        .into_iter()
        .map(|(prefix, (metric, o))| PrefixRoute {
            prefix,
            origin: t.id(o),
            metric,
            via: match nodes[o as usize] {
                _ if o == s => Via::Local,
                Some(r) => Via::Neighbour {
                    primary: t.id(r.primary),
                    alternate: r.alternate.map(|a| t.id(a)),
                },
                None => Via::Local,
            },
        })
        .collect();
    out.sort_by_key(|r| r.prefix);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(i: u32) -> NodeId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        NodeId(b)
    }

    /// Nodes 0..n; `links` are directed claims (u, v, cost).
    fn topo(n: u32, links: &[(u32, u32, u32)]) -> (Topology, Vec<Vec<AdvLink>>) {
        let mut per: Vec<Vec<AdvLink>> = vec![Vec::new(); n as usize];
        for &(u, v, c) in links {
            per[u as usize].push(AdvLink {
                neighbour: id(v),
                cost: c,
            });
        }
        let t = Topology::build((0..n).map(|i| NodeInput {
            id: id(i),
            links: &per[i as usize],
            prefixes: &[],
        }));
        (t, per)
    }

    /// All-pairs distances by Floyd–Warshall over the same bidirectional rule.
    fn oracle(n: usize, links: &[(u32, u32, u32)]) -> Vec<Vec<u64>> {
        let inf = u64::MAX / 4;
        let mut c = vec![vec![inf; n]; n];
        for &(u, v, w) in links {
            let back = links.iter().any(|&(a, b, _)| a == v && b == u);
            if u != v && back {
                c[u as usize][v as usize] = c[u as usize][v as usize].min(u64::from(w.max(1)));
            }
        }
        let adj = c.clone();
        let mut d = c;
        for (i, row) in d.iter_mut().enumerate() {
            row[i] = 0;
        }
        for k in 0..n {
            for i in 0..n {
                for j in 0..n {
                    let x = d[i][k] + d[k][j];
                    if x < d[i][j] {
                        d[i][j] = x;
                    }
                }
            }
        }
        // Store adjacency below the distances for the callers.
        let mut out = d;
        out.extend(adj);
        out
    }

    #[test]
    fn one_sided_links_are_ignored() {
        let (t, _) = topo(3, &[(0, 1, 1), (1, 0, 1), (1, 2, 1)]);
        assert_eq!(t.edges(1), &[(0, 1)]);
        assert!(t.edges(2).is_empty());
        let r = node_routes(&t, 0);
        assert_eq!(r[2], None);
    }

    #[test]
    fn square_has_an_alternate_and_ties_go_to_the_smaller_key() {
        // 0-1-3 and 0-2-3, all cost 1: two equal paths to 3.
        let l = [
            (0, 1, 1),
            (1, 0, 1),
            (0, 2, 1),
            (2, 0, 1),
            (1, 3, 1),
            (3, 1, 1),
            (2, 3, 1),
            (3, 2, 1),
        ];
        let (t, _) = topo(4, &l);
        let r = node_routes(&t, 0);
        assert_eq!(
            r[3],
            Some(NodeRoute {
                dist: 2,
                primary: 1,
                alternate: Some(2)
            })
        );
        assert_eq!(
            r[1],
            Some(NodeRoute {
                dist: 1,
                primary: 1,
                alternate: None
            })
        );
    }

    #[test]
    fn line_has_no_alternate() {
        let l = [(0, 1, 3), (1, 0, 3), (1, 2, 3), (2, 1, 3)];
        let (t, _) = topo(3, &l);
        assert_eq!(
            node_routes(&t, 0)[2],
            Some(NodeRoute {
                dist: 6,
                primary: 1,
                alternate: None
            })
        );
    }

    #[test]
    fn an_alternate_stops_protecting_once_its_path_runs_back_through_us() {
        // Square 0-1-3-2-0 plus 1-3: from 0, node 2 protects 3 while 2-3 exists...
        let sym = |v: &[(u32, u32, u32)]| -> Vec<(u32, u32, u32)> {
            v.iter()
                .flat_map(|&(a, b, c)| [(a, b, c), (b, a, c)])
                .collect()
        };
        let (t, _) = topo(4, &sym(&[(0, 1, 1), (1, 3, 1), (0, 2, 1), (2, 3, 1)]));
        let (from0, from2) = (dijkstra(&t, 0).0, dijkstra(&t, 2).0);
        assert!(still_loop_free(&from2, &from0, 0, 3));
        // ...but not once 2-3 is gone: 2's way to 3 is back through 0.
        let (t, _) = topo(4, &sym(&[(0, 1, 1), (1, 3, 1), (0, 2, 1)]));
        let (from0, from2) = (dijkstra(&t, 0).0, dijkstra(&t, 2).0);
        assert!(!still_loop_free(&from2, &from0, 0, 3));
        // An unreachable destination is protected by nobody.
        let (t, _) = topo(4, &sym(&[(0, 1, 1), (0, 2, 1)]));
        let (from0, from2) = (dijkstra(&t, 0).0, dijkstra(&t, 2).0);
        assert!(!still_loop_free(&from2, &from0, 0, 3));
        assert!(!still_loop_free(&[], &from0, 0, 3), "unknown neighbour");
        // From 2, with 2-3 gone, the way to 3 runs through 0; with 2-3 it does not; and
        // nobody routes an unreachable destination back.
        let (t, _) = topo(4, &sym(&[(0, 1, 1), (1, 3, 1), (0, 2, 1)]));
        let (from0, from2) = (dijkstra(&t, 0).0, dijkstra(&t, 2).0);
        assert!(routes_through(&from2, &from0, 0, 3));
        let (t, _) = topo(4, &sym(&[(0, 1, 1), (1, 3, 1), (0, 2, 1), (2, 3, 1)]));
        let (from0, from2) = (dijkstra(&t, 0).0, dijkstra(&t, 2).0);
        assert!(!routes_through(&from2, &from0, 0, 3));
        let (t, _) = topo(4, &sym(&[(0, 1, 1), (0, 2, 1)]));
        let (from0, from2) = (dijkstra(&t, 0).0, dijkstra(&t, 2).0);
        assert!(!routes_through(&from2, &from0, 0, 3));
    }

    #[test]
    fn prefixes_go_to_the_nearest_origin_and_own_are_local() {
        let l = [AdvLink {
            neighbour: id(1),
            cost: 5,
        }];
        let l1 = [
            AdvLink {
                neighbour: id(0),
                cost: 5,
            },
            AdvLink {
                neighbour: id(2),
                cost: 5,
            },
        ];
        let l2 = [AdvLink {
            neighbour: id(1),
            cost: 5,
        }];
        let any: IpNet = "10.0.0.0/24".parse().unwrap();
        let own: IpNet = "10.9.0.0/24".parse().unwrap();
        let p0 = [own];
        let p = [any];
        let t = Topology::build([
            NodeInput {
                id: id(0),
                links: &l,
                prefixes: &p0,
            },
            NodeInput {
                id: id(1),
                links: &l1,
                prefixes: &p,
            },
            NodeInput {
                id: id(2),
                links: &l2,
                prefixes: &p,
            },
        ]);
        let r = compute(&t, &id(0));
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            PrefixRoute {
                prefix: any,
                origin: id(1),
                metric: 5,
                via: Via::Neighbour {
                    primary: id(1),
                    alternate: None
                }
            }
        );
        assert_eq!(
            r[1],
            PrefixRoute {
                prefix: own,
                origin: id(0),
                metric: 0,
                via: Via::Local
            }
        );
    }

    fn graphs() -> impl Strategy<Value = (u32, Vec<(u32, u32, u32)>)> {
        (2u32..11)
            .prop_flat_map(|n| {
                let link = (0..n, 0..n, 1u32..6, any::<bool>(), 1u32..6);
                (
                    Just(n),
                    proptest::collection::vec(link, 0..(n as usize * 3)),
                )
            })
            .prop_map(|(n, ls)| {
                let mut out = Vec::new();
                for (u, v, c, both, c2) in ls {
                    out.push((u, v, c));
                    if both {
                        out.push((v, u, c2));
                    }
                }
                (n, out)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn matches_brute_force((n, links) in graphs(), src in 0u32..11) {
            let src = src % n;
            let (t, _) = topo(n, &links);
            let all = oracle(n as usize, &links);
            let (d, adj) = all.split_at(n as usize);
            let inf = u64::MAX / 4;
            let got = node_routes(&t, src);
            for dst in 0..n {
                let ds = d[src as usize][dst as usize];
                let r = got[dst as usize];
                if dst == src || ds >= inf {
                    prop_assert_eq!(r, None);
                    continue;
                }
                let r = r.unwrap();
                prop_assert_eq!(r.dist, ds);
                let nbrs: Vec<u32> = (0..n).filter(|&x| adj[src as usize][x as usize] < inf).collect();
                let primary = nbrs.iter().copied()
                    .filter(|&x| adj[src as usize][x as usize] + d[x as usize][dst as usize] == ds)
                    .min().unwrap();
                prop_assert_eq!(r.primary, primary);
                let alt = nbrs.iter().copied()
                    .filter(|&x| x != primary && d[x as usize][dst as usize] < ds)
                    .min_by_key(|&x| (adj[src as usize][x as usize] + d[x as usize][dst as usize], x));
                prop_assert_eq!(r.alternate, alt);
                // The alternate is strictly nearer, so it never loops back through src.
                if let Some(a) = r.alternate {
                    prop_assert!(d[a as usize][dst as usize] < ds);
                }
            }
        }

        /// Any set of failed links and nodes at once, every node still on the routes it
        /// computed before (the datapath's fast failover: primary if its link is up,
        /// else the alternate, else drop): no packet ever loops.
        #[test]
        fn failover_never_loops_under_many_failures(
            (n, links) in graphs(),
            failed_links in proptest::collection::vec((0u32..11, 0u32..11), 0..6),
            failed_nodes in proptest::collection::vec(0u32..11, 0..3),
        ) {
            let (t, _) = topo(n, &links);
            let routes: Vec<_> = (0..n).map(|s| node_routes(&t, s)).collect();
            let up = |a: u32, b: u32| {
                !failed_nodes.contains(&b)
                    && !failed_links.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
            };
            for src in (0..n).filter(|s| !failed_nodes.contains(s)) {
                for dst in 0..n {
                    let (mut at, mut seen) = (src, vec![false; n as usize]);
                    while at != dst {
                        prop_assert!(!seen[at as usize], "loop at {} from {} to {}", at, src, dst);
                        seen[at as usize] = true;
                        let Some(r) = routes[at as usize][dst as usize] else { break };
                        match [Some(r.primary), r.alternate].into_iter().flatten().find(|&h| up(at, h)) {
                            Some(h) => at = h,
                            None => break,
                        }
                    }
                }
            }
        }
    }
}
