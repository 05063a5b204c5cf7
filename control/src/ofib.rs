//! Ordered route updates (after RFC 6976): when the mesh changes, each node installs its
//! new routes after a delay set by its place in the change, so no packet meets a mix of
//! old and new next hops that sends it round a loop.
//!
//! Flooding tells the nodes nearest a change first, which is the wrong order for bad news:
//! a node beside a failed link that reroutes at once sends traffic to neighbours that still
//! route back through it. So:
//! - **bad news** (links gone or dearer, nothing better): for each worse link `r → v`,
//!   the nodes whose old shortest path to `v` crossed it form a tree towards `r`. A node's
//!   rank is the height of its subtree: the far leaves (rank 0) switch first, `r` last.
//! - **good news** (links new or cheaper, nothing worse): for each better link `u → v`,
//!   the nodes whose new shortest path to `v` crosses it form a tree towards `u`, and a
//!   node's rank is its depth: `u` switches first, the far leaves last.
//! - a mix of both, or more than [`MAX_LINKS`] changed links: rank 0 (everyone at once, as
//!   without ordering; the RFC's fallback for unrelated changes).
//!
//! A node waits `rank × step` from the moment it learned of the change, where `step`
//! covers the spread in when nodes hear the news plus one route installation.
use std::collections::{BinaryHeap, HashMap};

use crate::{identity::NodeId, spf::Topology};

/// More changed directed links than this (a mesh starting up, a big merge) are not
/// ordered: the trees would cost more than they save.
pub const MAX_LINKS: usize = 32;

/// This node's rank for the change from `old` to `new` (0 when it is not in any tree, the
/// change is mixed, or too big).
pub fn rank(old: &Topology, new: &Topology, me: &NodeId) -> u32 {
    let (lo, ln) = (links(old), links(new));
    let worse: Vec<(NodeId, NodeId)> = lo
        .iter()
        .filter(|(k, c)| ln.get(*k).is_none_or(|n| n > *c))
        .map(|(k, _)| *k)
        .collect();
    let better: Vec<(NodeId, NodeId)> = ln
        .iter()
        .filter(|(k, c)| lo.get(*k).is_none_or(|o| o > *c))
        .map(|(k, _)| *k)
        .collect();
    if worse.len() + better.len() > MAX_LINKS {
        return 0;
    }
    let (t, changed, bad) = match (worse.is_empty(), better.is_empty()) {
        (false, true) => (old, worse, true),
        (true, false) => (new, better, false),
        _ => return 0,
    };
    let Some(m) = t.index_of(me) else {
        return 0;
    };
    let rev = reverse(t);
    let mut rank = 0;
    for (a, b) in changed {
        let (Some(r), Some(v)) = (t.index_of(&a), t.index_of(&b)) else {
            continue;
        };
        if let Some(k) = tree_rank(t, &rev, r, v, m, bad) {
            rank = rank.max(k);
        }
    }
    rank
}

/// Directed links of `t` by node ids, with their costs.
fn links(t: &Topology) -> HashMap<(NodeId, NodeId), u32> {
    (0..t.len() as u32)
        .flat_map(|u| t.edges(u).iter().map(move |&(v, c)| ((u, v), c)))
        .map(|((u, v), c)| ((t.id(u), t.id(v)), c))
        .collect()
}

/// In-edges per node: (from, cost).
fn reverse(t: &Topology) -> Vec<Vec<(u32, u32)>> {
    let mut rev = vec![Vec::new(); t.len()];
    for u in 0..t.len() as u32 {
        for &(v, c) in t.edges(u) {
            rev[v as usize].push((u, c));
        }
    }
    rev
}

/// Shortest distances from every node *to* `root` (Dijkstra on the in-edges).
fn dist_to(rev: &[Vec<(u32, u32)>], root: u32) -> Vec<u64> {
    let mut dist = vec![u64::MAX; rev.len()];
    let mut heap = BinaryHeap::new();
    dist[root as usize] = 0;
    heap.push(std::cmp::Reverse((0u64, root)));
    while let Some(std::cmp::Reverse((d, u))) = heap.pop() {
        if d > dist[u as usize] {
            continue;
        }
        for &(w, c) in &rev[u as usize] {
            let nd = d + u64::from(c);
            if nd < dist[w as usize] {
                dist[w as usize] = nd;
                heap.push(std::cmp::Reverse((nd, w)));
            }
        }
    }
    dist
}

/// `me`'s rank in the tree of link `r → v` on `t`: subtree height for bad news, depth for
/// good news; `None` when `me`'s shortest path to `v` does not cross the link.
fn tree_rank(
    t: &Topology,
    rev: &[Vec<(u32, u32)>],
    r: u32,
    v: u32,
    me: u32,
    bad: bool,
) -> Option<u32> {
    let c = t.edges(r).iter().find(|e| e.0 == v)?.1;
    let (to_r, to_v) = (dist_to(rev, r), dist_to(rev, v));
    let crosses = |x: u32| {
        let (a, b) = (to_r[x as usize], to_v[x as usize]);
        a != u64::MAX && b != u64::MAX && b == a + u64::from(c)
    };
    if !crosses(me) {
        return None;
    }
    // Members, nearest `r` first; each one's parent is its first hop towards `r` (the
    // smallest index on a tie, as route computation breaks ties).
    let mut members: Vec<u32> = (0..t.len() as u32).filter(|&x| crosses(x)).collect();
    members.sort_by_key(|&x| (to_r[x as usize], x));
    let parent = |x: u32| {
        t.edges(x)
            .iter()
            .filter(|&&(y, cy)| {
                to_r[y as usize] != u64::MAX && to_r[y as usize] + u64::from(cy) == to_r[x as usize]
            })
            .map(|&(y, _)| y)
            .min()
    };
    let mut level = vec![0u32; t.len()];
    if bad {
        for &x in members.iter().rev() {
            if x == r {
                continue;
            }
            if let Some(p) = parent(x) {
                level[p as usize] = level[p as usize].max(level[x as usize] + 1);
            }
        }
    } else {
        for &x in &members {
            if x != r {
                level[x as usize] = parent(x).map_or(0, |p| level[p as usize] + 1);
            }
        }
    }
    Some(level[me as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        spf::{node_routes, NodeInput},
        wire::AdvLink,
    };
    use proptest::prelude::*;

    fn id(i: u32) -> NodeId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        NodeId(b)
    }

    /// Undirected links (a, b, cost) on nodes 0..n.
    fn topo(n: u32, links: &[(u32, u32, u32)]) -> Topology {
        let mut adv: Vec<Vec<AdvLink>> = vec![Vec::new(); n as usize];
        for &(a, b, c) in links {
            adv[a as usize].push(AdvLink {
                neighbour: id(b),
                cost: c,
            });
            adv[b as usize].push(AdvLink {
                neighbour: id(a),
                cost: c,
            });
        }
        Topology::build((0..n).map(|i| NodeInput {
            id: id(i),
            links: &adv[i as usize],
            prefixes: &[],
        }))
    }

    fn ring(n: u32, without: Option<(u32, u32)>) -> Topology {
        let l: Vec<(u32, u32, u32)> = (0..n)
            .map(|i| (i, (i + 1) % n, 1))
            .filter(|&(a, b, _)| Some((a, b)) != without)
            .collect();
        topo(n, &l)
    }

    #[test]
    fn a_failure_updates_the_far_nodes_first_and_its_ends_last() {
        // Ring of 7 losing 0-1: traffic to 1 came through 6 -> 0 (and 5 -> 6 -> 0), to 0
        // through 2 -> 1 and 3 -> 2 -> 1.
        let (old, new) = (ring(7, None), ring(7, Some((0, 1))));
        let ranks: Vec<u32> = (0..7).map(|i| rank(&old, &new, &id(i))).collect();
        assert_eq!(ranks, vec![2, 2, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn a_repair_updates_its_ends_first_and_the_far_nodes_last() {
        let (old, new) = (ring(7, Some((0, 1))), ring(7, None));
        let ranks: Vec<u32> = (0..7).map(|i| rank(&old, &new, &id(i))).collect();
        assert_eq!(ranks, vec![0, 0, 1, 2, 0, 2, 1]);
    }

    #[test]
    fn mixed_or_no_news_is_not_ordered() {
        let base = ring(7, None);
        assert_eq!(rank(&base, &base, &id(0)), 0);
        // 0-1 gone and 3-4 dearer: both bad, still ordered.
        let l: Vec<(u32, u32, u32)> = (0..7)
            .map(|i| (i, (i + 1) % 7, if i == 3 { 5 } else { 1 }))
            .filter(|&(a, _, _)| a != 0)
            .collect();
        assert!((0..7).any(|i| rank(&base, &topo(7, &l), &id(i)) > 0));
        // 0-1 gone and 3-4 cheaper: mixed.
        let l: Vec<(u32, u32, u32)> = [(0, 1, 2)]
            .into_iter()
            .chain((1..7).map(|i| (i, (i + 1) % 7, 2)))
            .collect();
        let old = topo(7, &l);
        let mut l2: Vec<(u32, u32, u32)> = l.iter().copied().filter(|e| e.0 != 0).collect();
        l2.iter_mut().for_each(|e| {
            if e.0 == 3 {
                e.2 = 1
            }
        });
        assert!((0..7).all(|i| rank(&old, &topo(7, &l2), &id(i)) == 0));
        // A node that is not in the graph has rank 0.
        assert_eq!(rank(&base, &ring(7, Some((0, 1))), &id(99)), 0);
    }

    /// Random connected graphs with distinct-ish costs (ties are where two computations
    /// may disagree, so they are made rare).
    fn graphs() -> impl Strategy<Value = (u32, Vec<(u32, u32, u32)>)> {
        (4u32..10).prop_flat_map(|n| {
            let extra = proptest::collection::vec((0..n, 0..n, 1u32..1000), 0..(2 * n as usize));
            let tree = proptest::collection::vec((0u32..1000, 1u32..1000), n as usize);
            (Just(n), tree, extra).prop_map(|(n, tree, extra)| {
                let mut l: Vec<(u32, u32, u32)> = (1..n)
                    .map(|i| (i, tree[i as usize].0 % i, tree[i as usize].1))
                    .collect();
                for (a, b, c) in extra {
                    if a != b
                        && !l
                            .iter()
                            .any(|&(x, y, _)| (x, y) == (a, b) || (x, y) == (b, a))
                    {
                        l.push((a, b, c));
                    }
                }
                (n, l)
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// One link fails (or comes back, or changes cost). Nodes switch from old to new
        /// routes rank by rank, in any order within a rank: no packet ever loops, at any
        /// moment. Packets meeting a link that is gone are dropped (no alternates here).
        #[test]
        fn ordered_updates_never_loop(
            (n, links) in graphs(),
            pick in 0usize..64,
            change in 0u32..3,
            order_seed in 0u64..1000,
        ) {
            let k = pick % links.len();
            let (a, b, c) = links[k];
            let changed: Vec<(u32, u32, u32)> = match change {
                0 => links.iter().copied().filter(|e| *e != (a, b, c)).collect(),
                1 => links.iter().map(|&e| if e == (a, b, c) { (a, b, c * 3 + 7) } else { e }).collect(),
                _ => links.iter().map(|&e| if e == (a, b, c) { (a, b, c / 3 + 1) } else { e }).collect(),
            };
            for (old_l, new_l) in [(&links, &changed), (&changed, &links)] {
                let (old, new) = (topo(n, old_l), topo(n, new_l));
                let ranks: Vec<u32> = (0..n).map(|i| rank(&old, &new, &id(i))).collect();
                let before: Vec<_> = (0..n).map(|s| node_routes(&old, s)).collect();
                let after: Vec<_> = (0..n).map(|s| node_routes(&new, s)).collect();
                let up = |x: u32, y: u32| new.edges(x).iter().any(|e| e.0 == y);
                let top = ranks.iter().copied().max().unwrap_or(0);
                let mut rng = order_seed;
                for phase in 0..=top + 1 {
                    // Nodes below `phase` have switched; nodes at `phase` maybe.
                    let switched: Vec<bool> = (0..n as usize).map(|i| {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ranks[i] < phase || (ranks[i] == phase && (rng >> 33) & 1 == 1)
                    }).collect();
                    for src in 0..n {
                        for dst in 0..n {
                            let (mut at, mut seen) = (src, vec![false; n as usize]);
                            while at != dst {
                                prop_assert!(!seen[at as usize],
                                    "loop at {} from {} to {} (phase {}, ranks {:?})", at, src, dst, phase, ranks);
                                seen[at as usize] = true;
                                let table = if switched[at as usize] { &after } else { &before };
                                let Some(r) = table[at as usize][dst as usize] else { break };
                                if !up(at, r.primary) { break; }
                                at = r.primary;
                            }
                        }
                    }
                }
            }
        }
    }
}
