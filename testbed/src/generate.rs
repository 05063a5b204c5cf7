//! Topology generators: line, ring, grid and random geometric placement.
//!
//! Every generator places nodes in the plane (metres) and lets the path-loss model
//! ([`crate::model`]) give each link its SNR and loss, so generated meshes have the
//! radio-like spread of link qualities a real one has. Names are `n1..nN` and `c1..cK`.
//! Clients go to nodes far apart (greedy farthest-point in hops), so probes cross the mesh.
use std::collections::VecDeque;

use crate::{
    model::RadioModel,
    topology::{Client, Link, LinkDefaults, Node, Topology},
    units::Rate,
};

/// Knobs every generator shares.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Number of client hosts (0..=nodes).
    pub clients: usize,
    /// Distance between neighbours in metres (line, ring, grid).
    pub spacing_m: f64,
    /// Link rate per direction; `None` leaves links unshaped.
    pub rate: Option<Rate>,
    /// Seed for random placement, written into the topology.
    pub seed: u64,
    pub radio: RadioModel,
    /// Random geometric: worst frame loss a link may have; farther pairs get no link.
    pub max_loss: f64,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            clients: 2,
            spacing_m: 100.0,
            rate: None,
            seed: 1,
            radio: RadioModel::default(),
            max_loss: RGG_MAX_LOSS,
        }
    }
}

/// Why a generator could not produce a topology.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GenError {
    #[error("{what} needs {need}, got {got}")]
    Size {
        what: &'static str,
        need: &'static str,
        got: usize,
    },
    #[error("{clients} clients do not fit on {nodes} nodes")]
    Clients { clients: usize, nodes: usize },
    #[error("spacing {0} m must be a positive number")]
    Spacing(f64),
    #[error("mean degree {0} must be in 1..n-1")]
    Degree(f64),
    #[error("maximum link loss {0} must be in (0, 1)")]
    MaxLoss(f64),
    #[error("no connected placement of {nodes} nodes at mean degree {degree} in {tries} tries; raise the degree")]
    Disconnected {
        nodes: usize,
        degree: f64,
        tries: u32,
    },
}

fn base(name: String, pos: Vec<[f64; 2]>, edges: Vec<(usize, usize)>, o: &GenOptions) -> Topology {
    let nodes: Vec<Node> = pos
        .iter()
        .enumerate()
        .map(|(i, p)| Node {
            name: format!("n{}", i + 1),
            pos: Some(*p),
        })
        .collect();
    let links = edges
        .iter()
        .map(|&(a, b)| Link {
            nodes: [nodes[a].name.clone(), nodes[b].name.clone()],
            rate: None,
            snr_db: None,
            loss: None,
            schedule: Vec::new(),
        })
        .collect();
    let clients = spread(pos.len(), &edges, o.clients)
        .into_iter()
        .enumerate()
        .map(|(k, n)| Client {
            name: format!("c{}", k + 1),
            node: nodes[n].name.clone(),
            prefix: None,
            prefix6: None,
        })
        .collect();
    Topology {
        name,
        seed: o.seed,
        radio: o.radio,
        link_defaults: LinkDefaults {
            rate: o.rate,
            ..LinkDefaults::default()
        },
        daemon: toml::Table::new(),
        nodes,
        links,
        clients,
        probes: Vec::new(),
        faults: Vec::new(),
    }
}

fn check(o: &GenOptions, n: usize) -> Result<(), GenError> {
    if !(o.spacing_m.is_finite() && o.spacing_m > 0.0) {
        return Err(GenError::Spacing(o.spacing_m));
    }
    if o.clients > n {
        return Err(GenError::Clients {
            clients: o.clients,
            nodes: n,
        });
    }
    Ok(())
}

/// `n` nodes in a row.
pub fn line(n: usize, o: &GenOptions) -> Result<Topology, GenError> {
    if n < 2 {
        return Err(GenError::Size {
            what: "a line",
            need: "at least 2 nodes",
            got: n,
        });
    }
    check(o, n)?;
    let pos = (0..n).map(|i| [i as f64 * o.spacing_m, 0.0]).collect();
    let edges = (0..n - 1).map(|i| (i, i + 1)).collect();
    Ok(base(format!("line-{n}"), pos, edges, o))
}

/// `n` nodes on a circle, neighbours `spacing_m` apart.
pub fn ring(n: usize, o: &GenOptions) -> Result<Topology, GenError> {
    if n < 3 {
        return Err(GenError::Size {
            what: "a ring",
            need: "at least 3 nodes",
            got: n,
        });
    }
    check(o, n)?;
    let step = std::f64::consts::TAU / n as f64;
    let r = o.spacing_m / (2.0 * (step / 2.0).sin());
    let pos = (0..n)
        .map(|i| {
            let a = i as f64 * step;
            [r * a.cos(), r * a.sin()]
        })
        .collect();
    let edges = (0..n).map(|i| (i, (i + 1) % n)).collect();
    Ok(base(format!("ring-{n}"), pos, edges, o))
}

/// A `w`×`h` grid, links to the right and downward neighbours.
pub fn grid(w: usize, h: usize, o: &GenOptions) -> Result<Topology, GenError> {
    if w * h < 2 || w == 0 || h == 0 {
        return Err(GenError::Size {
            what: "a grid",
            need: "at least 2 nodes",
            got: w * h,
        });
    }
    check(o, w * h)?;
    let mut pos = Vec::new();
    let mut edges = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            pos.push([x as f64 * o.spacing_m, y as f64 * o.spacing_m]);
            if x + 1 < w {
                edges.push((i, i + 1));
            }
            if y + 1 < h {
                edges.push((i, i + w));
            }
        }
    }
    Ok(base(format!("grid-{w}x{h}"), pos, edges, o))
}

/// Default worst frame loss of a random geometric link.
pub const RGG_MAX_LOSS: f64 = 0.1;

/// `n` nodes placed uniformly at random in a square sized for the wanted mean degree;
/// a link wherever the model's loss is at most `o.max_loss`. Placements are redrawn
/// (deterministically from the seed) until the mesh is connected.
pub fn random_geometric(n: usize, mean_degree: f64, o: &GenOptions) -> Result<Topology, GenError> {
    if n < 2 {
        return Err(GenError::Size {
            what: "a random geometric mesh",
            need: "at least 2 nodes",
            got: n,
        });
    }
    if !(mean_degree >= 1.0 && mean_degree <= (n - 1) as f64) {
        return Err(GenError::Degree(mean_degree));
    }
    check(o, n)?;
    if !(o.max_loss > 0.0 && o.max_loss < 1.0) {
        return Err(GenError::MaxLoss(o.max_loss));
    }
    let range = o.radio.range_m(o.max_loss);
    // E[degree] ≈ (n − 1)·π·r² / L² away from the edges; edges lower it, so aim a little up.
    let side = range * (std::f64::consts::PI * (n - 1) as f64 / (mean_degree * 1.15)).sqrt();
    let mut rng = fastrand::Rng::with_seed(o.seed);
    const TRIES: u32 = 1000;
    for _ in 0..TRIES {
        let pos: Vec<[f64; 2]> = (0..n)
            .map(|_| [rng.f64() * side, rng.f64() * side])
            .collect();
        let mut edges = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                let d = ((pos[a][0] - pos[b][0]).powi(2) + (pos[a][1] - pos[b][1]).powi(2)).sqrt();
                if o.radio.loss(o.radio.snr_db(d)) <= o.max_loss {
                    edges.push((a, b));
                }
            }
        }
        if hops_from(n, &edges, 0).iter().all(Option::is_some) {
            // Round positions to centimetres so the file form reads well and round-trips.
            let pos = pos
                .into_iter()
                .map(|[x, y]| [(x * 100.0).round() / 100.0, (y * 100.0).round() / 100.0])
                .collect();
            return Ok(base(format!("rgg-{n}"), pos, edges, o));
        }
    }
    Err(GenError::Disconnected {
        nodes: n,
        degree: mean_degree,
        tries: TRIES,
    })
}

/// Hop counts from `src` (BFS); `None` = unreachable.
pub fn hops_from(n: usize, edges: &[(usize, usize)], src: usize) -> Vec<Option<usize>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    let mut dist = vec![None; n];
    dist[src] = Some(0);
    let mut q = VecDeque::from([src]);
    while let Some(u) = q.pop_front() {
        let du = dist[u].expect("queued nodes have a distance");
        for &v in &adj[u] {
            if dist[v].is_none() {
                dist[v] = Some(du + 1);
                q.push_back(v);
            }
        }
    }
    dist
}

/// `k` nodes far apart: node 0 first, then each time the node farthest (in hops) from
/// those already chosen; ties go to the lowest index.
fn spread(n: usize, edges: &[(usize, usize)], k: usize) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::new();
    let mut best = vec![usize::MAX; n];
    while chosen.len() < k.min(n) {
        let next = if chosen.is_empty() {
            0
        } else {
            (0..n)
                .filter(|i| !chosen.contains(i))
                .max_by_key(|&i| (best[i], std::cmp::Reverse(i)))
                .expect("k <= n")
        };
        chosen.push(next);
        for (i, d) in hops_from(n, edges, next).into_iter().enumerate() {
            best[i] = best[i].min(d.unwrap_or(usize::MAX / 2));
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(t: &Topology) -> Vec<(usize, usize)> {
        (0..t.links.len()).map(|i| t.link_ends(i)).collect()
    }

    fn degree(t: &Topology) -> f64 {
        2.0 * t.links.len() as f64 / t.nodes.len() as f64
    }

    #[test]
    fn shapes_have_the_right_links() {
        let o = GenOptions::default();
        let l = line(5, &o).unwrap();
        assert_eq!((l.nodes.len(), l.links.len()), (5, 4));
        let r = ring(6, &o).unwrap();
        assert_eq!((r.nodes.len(), r.links.len()), (6, 6));
        let g = grid(4, 3, &o).unwrap();
        assert_eq!((g.nodes.len(), g.links.len()), (12, 3 * 3 + 4 * 2));
        for t in [&l, &r, &g] {
            t.validate().unwrap();
            // Every link is exactly `spacing` long, so every link has the same SNR.
            for i in 0..t.links.len() {
                let (a, b) = t.link_ends(i);
                assert!((t.distance(a, b).unwrap() - o.spacing_m).abs() < 1e-6);
                assert!((t.initial_state(i).snr_db - o.radio.snr_db(o.spacing_m)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn clients_go_far_apart() {
        let o = GenOptions::default();
        let l = line(7, &o).unwrap();
        let at: Vec<&str> = l.clients.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(at, vec!["n1", "n7"]);
        let three = line(
            7,
            &GenOptions {
                clients: 3,
                ..o.clone()
            },
        )
        .unwrap();
        let at: Vec<&str> = three.clients.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(at, vec!["n1", "n7", "n4"]);
        assert!(line(3, &GenOptions { clients: 4, ..o }).is_err());
    }

    #[test]
    fn random_geometric_is_connected_deterministic_and_near_the_degree() {
        for seed in 1..6 {
            let o = GenOptions {
                seed,
                ..GenOptions::default()
            };
            let t = random_geometric(20, 5.0, &o).unwrap();
            t.validate().unwrap();
            assert!(hops_from(20, &edges(&t), 0).iter().all(Option::is_some));
            assert_eq!(random_geometric(20, 5.0, &o).unwrap(), t, "seed {seed}");
            assert!((2.0..10.0).contains(&degree(&t)), "degree {}", degree(&t));
            for i in 0..t.links.len() {
                assert!(t.initial_state(i).loss.0 <= RGG_MAX_LOSS + 1e-9);
            }
            // The file form keeps everything.
            assert_eq!(Topology::parse(&t.to_toml()).unwrap(), t);
        }
    }

    #[test]
    fn a_stricter_loss_bound_gives_cleaner_links() {
        let o = GenOptions {
            max_loss: 0.001,
            ..GenOptions::default()
        };
        let t = random_geometric(20, 5.0, &o).unwrap();
        for i in 0..t.links.len() {
            assert!(t.initial_state(i).loss.0 <= 0.001 + 1e-12);
        }
        assert!(random_geometric(20, 5.0, &GenOptions { max_loss: 1.0, ..o }).is_err());
    }

    #[test]
    fn mean_degree_follows_the_request_on_average() {
        let avg = |deg: f64| {
            (1..11)
                .map(|seed| {
                    let o = GenOptions {
                        seed,
                        ..GenOptions::default()
                    };
                    degree(&random_geometric(40, deg, &o).unwrap())
                })
                .sum::<f64>()
                / 10.0
        };
        let (d4, d8) = (avg(4.0), avg(8.0));
        assert!((3.0..6.0).contains(&d4), "{d4}");
        assert!((6.0..10.5).contains(&d8), "{d8}");
    }

    #[test]
    fn bad_sizes_are_refused() {
        let o = GenOptions::default();
        assert!(line(1, &o).is_err());
        assert!(ring(2, &o).is_err());
        assert!(grid(1, 1, &o).is_err());
        assert!(random_geometric(10, 0.5, &o).is_err());
        assert!(random_geometric(10, 10.0, &o).is_err());
        assert!(line(
            3,
            &GenOptions {
                spacing_m: -1.0,
                ..o
            }
        )
        .is_err());
    }
}
