//! Control-plane benchmark: route computation and advert verification at mesh scale.
//!
//! Builds a random geometric topology (nodes uniform in the unit square, linked when
//! closer than r, with r chosen for the requested mean degree), gives every node a real
//! Ed25519 key, a 2-of-3 certificate and a signed advert, and measures on one thread:
//! - full route computation (graph build, Dijkstra from the node, one Dijkstra per
//!   neighbour for loop-free alternates, prefix selection), and Dijkstra alone;
//! - adverts verified per second, one at a time and in batches, with certificates not
//!   yet seen (cold: k + 1 signature checks per advert) and already seen (warm: the
//!   steady state, where certificates live for hours and adverts refresh every 30 s);
//! - memory: process RSS growth from holding the whole verified database and graph.
//!
//! Run: `cargo run --release -p dcmesh-bench --bin bench-control` (add `taskset -c 0`
//! to pin it; it is single-threaded either way). Writes bench/results/control-<date>.md
//! and control-latest.md.
use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Parser;
use dcmesh_control::{
    cert::{Authorities, Certificate},
    identity::{Identity, NodeId},
    lsdb::{Accepted, Lsdb, LsdbConfig},
    spf::{self, NodeInput, Topology},
    wire::{AdvLink, Advert},
    IpNet,
};

#[derive(Parser)]
#[command(about = "dcmesh control-plane benchmark (SPF time, advert verification rate, memory)")]
struct Args {
    /// Nodes in the synthetic mesh.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Target mean degree (4..8 is typical of community meshes).
    #[arg(long, default_value_t = 6.0)]
    degree: f64,
    /// Route computations timed (median reported).
    #[arg(long, default_value_t = 21)]
    spf_runs: usize,
    /// Verification rounds (median reported, best shown).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Adverts per verification batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Random seed (topology and keys are reproducible).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Append to today's results file instead of replacing it (to record a second
    /// build, e.g. generic and target-cpu=native, in one report).
    #[arg(long)]
    append: bool,
    /// Results directory.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

/// SplitMix64: small, deterministic, good enough to place points.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Undirected links of a random geometric graph (grid-bucketed, O(n)).
fn geometric(n: usize, degree: f64, rng: &mut Rng) -> Vec<(usize, usize)> {
    let pts: Vec<(f64, f64)> = (0..n).map(|_| (rng.unit(), rng.unit())).collect();
    // E[degree] ≈ n·π·r² away from the border.
    let r = (degree / (std::f64::consts::PI * n as f64)).sqrt();
    let cells = ((1.0 / r).floor() as usize).max(1);
    let mut grid: Vec<Vec<usize>> = vec![Vec::new(); cells * cells];
    let cell = |x: f64| ((x * cells as f64) as usize).min(cells - 1);
    for (i, p) in pts.iter().enumerate() {
        grid[cell(p.1) * cells + cell(p.0)].push(i);
    }
    let mut links = Vec::new();
    for (i, p) in pts.iter().enumerate() {
        let (cx, cy) = (cell(p.0), cell(p.1));
        for gy in cy.saturating_sub(1)..=(cy + 1).min(cells - 1) {
            for gx in cx.saturating_sub(1)..=(cx + 1).min(cells - 1) {
                for &j in &grid[gy * cells + gx] {
                    let q = pts[j];
                    if j > i && (p.0 - q.0).powi(2) + (p.1 - q.1).powi(2) < r * r {
                        links.push((i, j));
                    }
                }
            }
        }
    }
    links
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Node {
    key: Identity,
    cert: Vec<u8>,
    prefix: IpNet,
    links: Vec<AdvLink>,
}

fn adverts(nodes: &[Node], seq: u64, expires: u64) -> Vec<Vec<u8>> {
    nodes
        .iter()
        .map(|n| {
            Advert {
                origin: n.key.id(),
                seq,
                expires,
                cert: n.cert.clone(),
                links: n.links.clone(),
                prefixes: vec![n.prefix],
            }
            .encode(|m| n.key.sign(m))
            .expect("advert fits")
        })
        .collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut rng = Rng(a.seed);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let rss0 = rss_kib();

    eprintln!("building a {}-node random geometric mesh...", a.nodes);
    let links = geometric(a.nodes, a.degree, &mut rng);
    let mean_degree = 2.0 * links.len() as f64 / a.nodes as f64;
    let auths: Vec<Identity> = (0..3u8)
        .map(|i| Identity::from_seed([0xa0 + i; 32]))
        .collect();
    let set = Authorities::new(auths.iter().map(|x| x.id()).collect(), 2)?;
    let mut nodes: Vec<Node> = (0..a.nodes)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&rng.next().to_be_bytes());
            seed[8..16].copy_from_slice(&(i as u64).to_be_bytes());
            let key = Identity::from_seed(seed);
            let prefix: IpNet = format!("10.{}.{}.0/24", i / 256, i % 256)
                .parse()
                .expect("prefix");
            let mut c =
                Certificate::new(key.id(), vec![prefix], now - 60, now + 3600).expect("cert");
            c.sign(&auths[0]).expect("sign");
            c.sign(&auths[2]).expect("sign");
            Node {
                key,
                cert: c.encode(),
                prefix,
                links: Vec::new(),
            }
        })
        .collect();
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.key.id()).collect();
    for &(u, v) in &links {
        // Costs between 1 and 4 ETX, as on real radio links.
        let c1 = 256 + (rng.next() % 769) as u32;
        let c2 = 256 + (rng.next() % 769) as u32;
        nodes[u].links.push(AdvLink {
            neighbour: ids[v],
            cost: c1,
        });
        nodes[v].links.push(AdvLink {
            neighbour: ids[u],
            cost: c2,
        });
    }
    eprintln!("signing {} adverts...", a.nodes);
    let cold = adverts(&nodes, 1, now + 600);
    let cfg = LsdbConfig {
        authorities: set,
        max_lifetime_s: 3600,
    };

    // Verification, cold certificates, one at a time.
    let rss1 = rss_kib();
    let mut db = Lsdb::new(cfg.clone());
    let t = Instant::now();
    for r in &cold {
        assert_eq!(db.accept(r, now), Ok(Accepted::New));
    }
    let cold_single = t.elapsed();
    let rss_db = rss_kib();
    // Warm certificates: rounds of fresh adverts (new sequence numbers), alternately
    // one at a time and batched; the median round is reported (the machine is shared).
    let mut warm_single = Vec::new();
    let mut warm_batch = Vec::new();
    for round in 0..a.rounds as u64 {
        eprintln!("verification round {}/{}...", round + 1, a.rounds);
        let single = adverts(&nodes, 2 + 2 * round, now + 600);
        let t = Instant::now();
        for r in &single {
            assert_eq!(db.accept(r, now), Ok(Accepted::New));
        }
        warm_single.push(t.elapsed());
        drop(single);
        let batched = adverts(&nodes, 3 + 2 * round, now + 600);
        let t = Instant::now();
        for chunk in batched.chunks(a.batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(|r| r.as_slice()).collect();
            for r in db.accept_batch(&refs, now) {
                assert_eq!(r, Ok(Accepted::New));
            }
        }
        warm_batch.push(t.elapsed());
    }
    let (ws_best, wb_best) = (
        rate(a.nodes, *warm_single.iter().min().expect("rounds")),
        rate(a.nodes, *warm_batch.iter().min().expect("rounds")),
    );
    let (warm_single, warm_batch) = (median(warm_single), median(warm_batch));
    // Cold certificates, batched (a fresh database).
    let mut db2 = Lsdb::new(cfg);
    let t = Instant::now();
    for chunk in cold.chunks(a.batch) {
        let refs: Vec<&[u8]> = chunk.iter().map(|r| r.as_slice()).collect();
        for r in db2.accept_batch(&refs, now) {
            assert_eq!(r, Ok(Accepted::New));
        }
    }
    let cold_batch = t.elapsed();
    drop(db2);

    // Route computation from a few vantage points.
    let build = |db: &Lsdb| {
        Topology::build(db.entries().map(|e| NodeInput {
            id: e.advert.origin,
            links: &e.advert.links,
            prefixes: &e.advert.prefixes,
        }))
    };
    let mut full = Vec::new();
    let mut dijkstra_only = Vec::new();
    let mut build_t = Vec::new();
    let mut routes = 0;
    for k in 0..a.spf_runs {
        let src = ids[(rng.next() % a.nodes as u64) as usize];
        let t = Instant::now();
        let topo = build(&db);
        let tb = t.elapsed();
        let r = spf::compute(&topo, &src);
        full.push(t.elapsed());
        build_t.push(tb);
        routes = routes.max(r.len());
        let s = topo.index_of(&src).expect("source in graph");
        let t = Instant::now();
        let _ = spf::dijkstra(&topo, s);
        dijkstra_only.push(t.elapsed());
        if k == 0 {
            eprintln!("first SPF: {} routes in {:?}", r.len(), full[0]);
        }
    }
    let topo = build(&db);
    let edges = topo.edge_count();

    let full_med = median(full.clone());
    let max_full = *full.iter().max().expect("runs");
    let r_cs = rate(a.nodes, cold_single);
    let r_ws = rate(a.nodes, warm_single);
    let r_wb = rate(a.nodes, warm_batch);
    let r_cb = rate(a.nodes, cold_batch);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let date = dcmesh_bench::utc_date(now);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let report = format!(
        "# Control-plane benchmark, {date}\n\n\
         Command: `{env}cargo run --release -p dcmesh-bench --bin bench-control -- --nodes {n} --degree {deg} --seed {seed}`  \n\
         Machine: {cores} cores, {cpu}; {flags}. One thread; load average {load} at the start \
         (other work on the machine makes numbers noisy).\n\n\
         ## Topology\n\
         Random geometric graph: {n} nodes uniform in the unit square, linked within r = sqrt(d/(πn)); \
         mean degree {md:.2} (target {deg}), {links} links ({edges} directed edges, all bidirectional), \
         link costs 1–4 ETX. Every node: a real Ed25519 key, a 2-of-3 certificate, one /24.\n\n\
         ## Route computation (target ≤ 20 ms): {v1}\n\
         | what | median | max | runs |\n|---|---|---|---|\n\
         | full: graph build + Dijkstra + alternates (one Dijkstra per neighbour) + {routes} prefix routes | {fm:.2} ms | {fx:.2} ms | {runs} |\n\
         | of which graph build from the database | {bm:.2} ms | | |\n\
         | Dijkstra alone (primary next hops) | {dm:.2} ms | | |\n\n\
         ## Advert verification (target ≥ 50,000/s on one core, steady state): {v2}\n\
         Each advert is fully checked (decode, certificate window, sequence, prefix grant, k-of-n \
         certificate signatures unless that certificate was verified before, advert signature) and installed.\n\n\
         | certificates | one at a time | batched ({batch}) |\n|---|---|---|\n\
         | already verified (steady state: certificates live hours, adverts refresh every 30 s); median of {rounds} rounds | {ws:.0}/s | {wb:.0}/s |\n\
         | already verified, best round | {wsb:.0}/s | {wbb:.0}/s |\n\
         | first sight (3 signatures per advert) | {cs:.0}/s | {cb:.0}/s |\n\n\
         ## Memory\n\
         Process RSS: {r0} MiB at start, {r1} MiB after generating keys and {nadv} signed adverts; \
         verifying and storing those {n} adverts (database with certificate cache) added {dmem} MiB \
         (one advert ≈ {per} bytes on the wire). The graph for route computation adds about \
         {gmem} KiB (compressed adjacency). A daemon holding this database therefore needs \
         roughly {dmem} MiB on top of its base (about 9 MiB RSS for a release-build daemon in a small mesh).\n",
        env = if cfg!(target_feature = "avx2") {
            "RUSTFLAGS=\"-C target-cpu=native\" "
        } else {
            ""
        },
        n = a.nodes,
        deg = a.degree,
        seed = a.seed,
        load = std::fs::read_to_string("/proc/loadavg").map_or(String::new(), |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        cores = std::fs::read_to_string("/proc/cpuinfo").map_or(0, |s| s.lines().filter(|l| l.starts_with("processor")).count()),
        flags = if cfg!(target_feature = "avx2") {
            "built with AVX2 enabled (e.g. RUSTFLAGS=\"-C target-cpu=native\")"
        } else {
            "generic x86-64 build (no target-cpu flags)"
        },
        md = mean_degree,
        links = links.len(),
        v1 = verdict(full_med <= Duration::from_millis(20)),
        fm = full_med.as_secs_f64() * 1e3,
        fx = max_full.as_secs_f64() * 1e3,
        runs = a.spf_runs,
        bm = median(build_t).as_secs_f64() * 1e3,
        dm = median(dijkstra_only).as_secs_f64() * 1e3,
        v2 = verdict(r_ws.max(r_wb) >= 50_000.0),
        batch = a.batch,
        ws = r_ws,
        wsb = ws_best,
        wbb = wb_best,
        rounds = a.rounds,
        wb = r_wb,
        cs = r_cs,
        cb = r_cb,
        r0 = rss0 / 1024,
        r1 = rss1 / 1024,
        nadv = a.nodes,
        dmem = rss_db.saturating_sub(rss1) / 1024,
        gmem = (edges * 8 + topo.len() * (32 + 4) + routes * 64) / 1024,
        per = cold.iter().map(Vec::len).sum::<usize>() / a.nodes.max(1),
    );
    print!("{report}");
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    let dated = a.out.join(format!("control-{date}.md"));
    let text = if a.append {
        let old = std::fs::read_to_string(&dated).unwrap_or_default();
        format!("{old}\n---\n\n{report}")
    } else {
        report
    };
    std::fs::write(&dated, &text).with_context(|| format!("write {}", dated.display()))?;
    std::fs::write(a.out.join("control-latest.md"), &text)?;
    eprintln!("wrote {} and control-latest.md", dated.display());
    Ok(())
}
