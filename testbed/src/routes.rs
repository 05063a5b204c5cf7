//! Route computation for the testbed's static controller: shortest paths with a
//! downstream loop-free alternate (RFC 5286) per destination.
//!
//! This is the stand-in used when the real `dcmesh` daemon is not run (`--controller
//! static`): an oracle that sees the true topology. It exists to exercise the datapath,
//! the fault injection and the measurements on their own; the daemon computes its own
//! routes from signed link state.
use std::{cmp::Reverse, collections::BinaryHeap};

/// Cost unit: 256 = one perfect transmission (ETX 1.0).
pub const COST_UNIT: f64 = 256.0;
/// SNR in dB above which a link gets no penalty.
pub const SNR_GOOD_DB: f64 = 25.0;
/// Penalty per dB below [`SNR_GOOD_DB`], in cost units.
pub const SNR_PENALTY_PER_DB: f64 = 8.0;
/// Links losing more than this (either way) are not used.
pub const MAX_USABLE_LOSS: f64 = 0.9;

/// The static controller's link cost: `256·ETX + 8·max(0, 25 − SNR)`, with
/// `ETX = 1 / ((1 − loss_ab)(1 − loss_ba))`. `None` when the link is unusable.
pub fn link_cost(loss_ab: f64, loss_ba: f64, snr_db: f64) -> Option<u32> {
    if loss_ab > MAX_USABLE_LOSS || loss_ba > MAX_USABLE_LOSS {
        return None;
    }
    let etx = 1.0 / ((1.0 - loss_ab) * (1.0 - loss_ba));
    let penalty = SNR_PENALTY_PER_DB * (SNR_GOOD_DB - snr_db).max(0.0);
    Some((COST_UNIT * etx + penalty).round().min(u32::MAX as f64) as u32)
}

/// A directed graph of nodes `0..n`.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    adj: Vec<Vec<(usize, u32)>>,
}

impl Graph {
    pub fn new(n: usize) -> Self {
        Self {
            adj: vec![Vec::new(); n],
        }
    }

    pub fn len(&self) -> usize {
        self.adj.len()
    }

    pub fn is_empty(&self) -> bool {
        self.adj.is_empty()
    }

    /// Adds the edge `a → b` (replacing an earlier one).
    pub fn add(&mut self, a: usize, b: usize, cost: u32) {
        self.adj[a].retain(|(t, _)| *t != b);
        self.adj[a].push((b, cost));
        self.adj[a].sort_unstable();
    }

    /// Edges out of `a`: (neighbour, cost), sorted by neighbour.
    pub fn out(&self, a: usize) -> &[(usize, u32)] {
        &self.adj[a]
    }

    /// Distance from every node to `dst` (Dijkstra on reversed edges).
    pub fn dist_to(&self, dst: usize) -> Vec<Option<u64>> {
        let n = self.len();
        let mut rev = vec![Vec::new(); n];
        for (a, es) in self.adj.iter().enumerate() {
            for &(b, c) in es {
                rev[b].push((a, c));
            }
        }
        let mut dist = vec![None; n];
        let mut heap = BinaryHeap::from([Reverse((0u64, dst))]);
        while let Some(Reverse((d, u))) = heap.pop() {
            if dist[u].is_some() {
                continue;
            }
            dist[u] = Some(d);
            for &(v, c) in &rev[u] {
                if dist[v].is_none() {
                    heap.push(Reverse((d + u64::from(c), v)));
                }
            }
        }
        dist
    }
}

/// Where node `src` sends traffic for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// Neighbour on a shortest path.
    pub primary: usize,
    /// Downstream alternate neighbour, if one exists.
    pub alt: Option<usize>,
    /// Path cost.
    pub cost: u64,
}

/// Every node's next hops: `table[src][dst]` (`None` for `src == dst` or unreachable).
///
/// Primary: the neighbour minimising `cost(src, v) + dist(v, dst)`, ties to the lower
/// index. Alternate: among the other neighbours, those strictly nearer to `dst` than
/// `src` (`dist(v, dst) < dist(src, dst)`: downstream, RFC 5286 inequality 2, so no mix
/// of failures can make forwarding loop), the one with the lowest
/// `cost(src, v) + dist(v, dst)`.
pub fn compute(g: &Graph) -> Vec<Vec<Option<Hop>>> {
    let n = g.len();
    let dist: Vec<Vec<Option<u64>>> = (0..n).map(|d| g.dist_to(d)).collect();
    let mut table = vec![vec![None; n]; n];
    for src in 0..n {
        for dst in 0..n {
            if src == dst {
                continue;
            }
            let Some(d_src) = dist[dst][src] else {
                continue;
            };
            let via = |v: usize, c: u32| dist[dst][v].map(|d| d + u64::from(c));
            let primary = g
                .out(src)
                .iter()
                .filter_map(|&(v, c)| via(v, c).map(|t| (t, v)))
                .min()
                .map(|(_, v)| v)
                .expect("a reachable destination has a first hop");
            let alt = g
                .out(src)
                .iter()
                .filter(|&&(v, _)| v != primary)
                .filter_map(|&(v, c)| {
                    let dv = dist[dst][v]?;
                    (dv < d_src).then(|| (via(v, c).expect("dv known"), v))
                })
                .min()
                .map(|(_, v)| v);
            table[src][dst] = Some(Hop {
                primary,
                alt,
                cost: d_src,
            });
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undirected(n: usize, edges: &[(usize, usize, u32)]) -> Graph {
        let mut g = Graph::new(n);
        for &(a, b, c) in edges {
            g.add(a, b, c);
            g.add(b, a, c);
        }
        g
    }

    /// All-pairs shortest distances by Floyd–Warshall: the oracle.
    fn floyd(g: &Graph) -> Vec<Vec<Option<u64>>> {
        let n = g.len();
        let mut d = vec![vec![None; n]; n];
        for (a, row) in d.iter_mut().enumerate() {
            row[a] = Some(0);
            for &(b, c) in g.out(a) {
                row[b] = Some(row[b].map_or(u64::from(c), |x: u64| x.min(u64::from(c))));
            }
        }
        for k in 0..n {
            for i in 0..n {
                for j in 0..n {
                    if let (Some(a), Some(b)) = (d[i][k], d[k][j]) {
                        if d[i][j].is_none_or(|x| a + b < x) {
                            d[i][j] = Some(a + b);
                        }
                    }
                }
            }
        }
        d
    }

    fn random_graph(rng: &mut fastrand::Rng) -> Graph {
        let n = rng.usize(2..12);
        let mut edges = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                if rng.f64() < 0.35 {
                    edges.push((a, b, rng.u32(1..1000)));
                }
            }
        }
        undirected(n, &edges)
    }

    #[test]
    fn costs_follow_etx_and_snr() {
        assert_eq!(link_cost(0.0, 0.0, 30.0), Some(256));
        assert_eq!(link_cost(0.5, 0.0, 30.0), Some(512));
        assert_eq!(link_cost(0.0, 0.0, 20.0), Some(256 + 40));
        assert_eq!(link_cost(0.95, 0.0, 30.0), None);
        // Monotone: more loss or less SNR never costs less.
        let mut last = 0;
        for i in 0..90 {
            let c = link_cost(i as f64 / 100.0, 0.0, 30.0 - i as f64 / 3.0).unwrap();
            assert!(c >= last);
            last = c;
        }
    }

    #[test]
    fn diamond_prefers_the_cheap_side_and_keeps_the_other_as_alternate() {
        // 0 —1— 1 —1— 3 and 0 —2— 2 —1— 3: 2 is nearer to 3 than 0 is (downstream).
        let g = undirected(4, &[(0, 1, 1), (1, 3, 1), (0, 2, 2), (2, 3, 1)]);
        let t = compute(&g);
        assert_eq!(
            t[0][3],
            Some(Hop {
                primary: 1,
                alt: Some(2),
                cost: 2
            })
        );
        // With 2 —2— 3, 2 is as far from 3 as 0 is: loop-free, but not downstream.
        let g = undirected(4, &[(0, 1, 1), (1, 3, 1), (0, 2, 2), (2, 3, 2)]);
        assert_eq!(compute(&g)[0][3].unwrap().alt, None);
        // A line has no alternate.
        let line = undirected(3, &[(0, 1, 1), (1, 2, 1)]);
        assert_eq!(compute(&line)[0][2].unwrap().alt, None);
        // Unreachable: none.
        let split = undirected(4, &[(0, 1, 1), (2, 3, 1)]);
        assert_eq!(compute(&split)[0][3], None);
    }

    #[test]
    fn primaries_are_shortest_and_loop_free_on_random_graphs() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..300 {
            let g = random_graph(&mut rng);
            let oracle = floyd(&g);
            let t = compute(&g);
            for src in 0..g.len() {
                for dst in 0..g.len() {
                    if src == dst {
                        continue;
                    }
                    let hop = t[src][dst];
                    assert_eq!(hop.map(|h| h.cost), oracle[src][dst], "{src}->{dst}");
                    let Some(h) = hop else { continue };
                    let c = g.out(src).iter().find(|e| e.0 == h.primary).unwrap().1;
                    assert_eq!(u64::from(c) + oracle[h.primary][dst].unwrap(), h.cost);
                    // Following primaries reaches dst within n hops.
                    let (mut at, mut hops) = (src, 0);
                    while at != dst {
                        at = t[at][dst].unwrap().primary;
                        hops += 1;
                        assert!(hops <= g.len(), "loop from {src} to {dst}");
                    }
                }
            }
        }
    }

    #[test]
    fn alternates_protect_the_primary_link() {
        // Fail src→primary: forwarding to the alternate, then along primaries computed
        // before the failure, still reaches dst and never comes back to src.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut checked = 0;
        for _ in 0..300 {
            let g = random_graph(&mut rng);
            let t = compute(&g);
            for (src, row) in t.iter().enumerate() {
                for (dst, hop) in row.iter().enumerate() {
                    let Some(Hop {
                        primary,
                        alt: Some(a),
                        ..
                    }) = *hop
                    else {
                        continue;
                    };
                    assert_ne!(a, primary);
                    let mut at = a;
                    let mut hops = 0;
                    while at != dst {
                        assert_ne!(at, src, "alternate {a} loops back to {src} (dst {dst})");
                        let next = t[at][dst].unwrap().primary;
                        assert!(
                            !(at == src && next == primary),
                            "alternate path uses the failed link"
                        );
                        at = next;
                        hops += 1;
                        assert!(hops <= g.len());
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "too few alternates exercised: {checked}");
    }
}
