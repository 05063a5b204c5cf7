//! `dcmesh-testbed`: meshes of network namespaces running dcmesh, with faults and
//! measurements. Needs root (namespaces, eBPF).
//!
//! - `demo`: the `cargo xtask run` mesh (testbed/topologies/demo.toml unless
//!   `--topology`): converge, show neighbours and routes, send probes, live per-flow and
//!   per-link stats until Ctrl-C or `--duration`.
//! - `run --topology FILE`: a scripted scenario (the file's faults plus `--fault`s).
//! - `chaos --nodes 20 --duration 5m`: random faults on a random geometric mesh.
//! - `gen`: write a generated topology; `clean`: remove leftovers of crashed runs.
//!
//! Every run writes `report.json`, `summary.txt` and the daemons' logs to `--out`
//! (default `target/testbed/<name>-<unix time>`), and removes everything it created
//! on exit: normal end, Ctrl-C, SIGTERM, error or panic; a SIGKILLed run's leftovers
//! are removed at the start of the next.
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dcmesh_testbed::{
    chaos::{self, ChaosOptions},
    daemons,
    generate::{self, GenOptions},
    mesh::{Controller, Mesh},
    netns,
    probe::{Families, Family},
    report::Report,
    scenario::{self, Live, RunConfig},
    topology::{FaultSpec, Topology},
    units::{Dur, Rate},
};

#[derive(Parser)]
#[command(
    name = "dcmesh-testbed",
    about = "Meshes of network namespaces running dcmesh, with faults and measurements"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Ctl {
    /// The dcmesh daemon if its binary is found, else static.
    Auto,
    /// The real dcmesh daemon on every node.
    Daemon,
    /// Routes written by the testbed itself (an oracle; no control plane).
    Static,
}

#[derive(Args)]
struct Common {
    /// Who computes routes.
    #[arg(long, value_enum, default_value = "auto")]
    controller: Ctl,
    /// The dcmesh binary (default: $DCMESH_BIN, or next to this program).
    #[arg(long)]
    dcmesh: Option<PathBuf>,
    /// Where to write report.json, summary.txt and logs.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Static controller: delay before it recomputes after a fault.
    #[arg(long, value_parser = parse_dur, default_value = "1s")]
    static_delay: Duration,
    /// Address families of the probe flows. With `both`, every flow runs twice (an
    /// IPv4 and an IPv6 twin), each at the flow's rate, so the probe traffic doubles.
    #[arg(long, value_enum, default_value = "both")]
    family: Families,
}

#[derive(Subcommand)]
enum Cmd {
    /// The demo mesh with live stats until Ctrl-C or --duration.
    Demo {
        #[arg(long)]
        topology: Option<PathBuf>,
        /// How long to run after convergence (e.g. 30s, 2m); default until Ctrl-C.
        #[arg(long, value_parser = parse_dur)]
        duration: Option<Duration>,
        #[command(flatten)]
        common: Common,
    },
    /// A scripted scenario from a topology file.
    Run {
        #[arg(long)]
        topology: PathBuf,
        /// Extra faults: AT:ACTION[:ARG], e.g. 10s:link-down:n1-n2, 20s:node-crash:n3,
        /// 30s:partition:n1,n2, 40s:power-outage:0.3,5s, 50s:heal,
        /// 60s:set-link:n1-n2,snr=8.
        #[arg(long = "fault")]
        faults: Vec<String>,
        /// How long to run after convergence; default: 10 s after the last fault.
        #[arg(long, value_parser = parse_dur)]
        duration: Option<Duration>,
        /// Print live stats every second.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Random faults on a random geometric mesh; reports loops, delivery outside
    /// convergence windows and the convergence-time distribution.
    Chaos {
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        #[arg(long, value_parser = parse_dur, default_value = "5m")]
        duration: Duration,
        #[arg(long, default_value_t = 5.0)]
        degree: f64,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Probes per second per flow and family (see --family).
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Write a generated topology (TOML) to stdout.
    Gen {
        #[command(subcommand)]
        shape: Shape,
        /// Client hosts, placed far apart.
        #[arg(long, default_value_t = 2, global = true)]
        clients: usize,
        /// Neighbour distance in metres (line, ring, grid).
        #[arg(long, default_value_t = 100.0, global = true)]
        spacing: f64,
        /// Link rate per direction (e.g. 50mbit); default unshaped.
        #[arg(long, global = true)]
        rate: Option<Rate>,
        #[arg(long, default_value_t = 1, global = true)]
        seed: u64,
    },
    /// Remove leftovers of testbed runs whose process is gone.
    Clean,
}

#[derive(Subcommand)]
enum Shape {
    Line {
        nodes: usize,
    },
    Ring {
        nodes: usize,
    },
    Grid {
        width: usize,
        height: usize,
    },
    /// Random geometric placement; links where the path-loss model allows.
    Rgg {
        nodes: usize,
        #[arg(long, default_value_t = 5.0)]
        degree: f64,
    },
}

/// Chaos meshes only get links that lose at most 0.1 % of frames (SNR ≥ 12.9 dB with
/// the default model), so probes lost outside convergence windows measure the control
/// plane, not static radio loss; the SNR dips among the faults add loss on purpose.
const CHAOS_MAX_LOSS: f64 = 0.001;

fn parse_dur(s: &str) -> Result<Duration, String> {
    s.parse::<Dur>().map(|d| d.0).map_err(|e| e.to_string())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = real_main(Cli::parse()) {
        eprintln!("dcmesh-testbed: error: {e:#}");
        std::process::exit(1);
    }
}

fn require_root() -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root: it creates network namespaces and loads eBPF programs (try sudo)");
    }
    Ok(())
}

/// Ctrl-C / SIGTERM set the flag; the run then ends normally and cleans up.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("dcmesh-testbed: still cleaning up, please wait");
        }
    })
    .context("install Ctrl-C handler")?;
    Ok(stop)
}

fn prepare() -> Result<Arc<AtomicBool>> {
    require_root()?;
    let stop = stop_flag()?;
    let removed = netns::clear_stale()?;
    if !removed.is_empty() {
        println!("cleared leftovers of earlier runs: {}", removed.join(" "));
    }
    Ok(stop)
}

fn controller(c: &Common) -> Result<Controller> {
    let bin = c.dcmesh.clone().or_else(daemons::find_bin);
    match (c.controller, bin) {
        (Ctl::Static, _) => Ok(Controller::Static),
        (_, Some(bin)) if bin.is_file() => Ok(Controller::Daemon { bin }),
        (Ctl::Daemon, b) => bail!(
            "dcmesh binary not found{}; build it with `cargo build --release -p dcmesh-control \
             --bin dcmesh`, pass --dcmesh PATH or use --controller static",
            b.map_or(String::new(), |b| format!(" at {}", b.display()))
        ),
        (Ctl::Auto, _) => {
            eprintln!(
                "note: dcmesh binary not found next to this program; using the static controller"
            );
            Ok(Controller::Static)
        }
    }
}

fn out_dir(c: &Common, name: &str) -> PathBuf {
    c.out.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("target/testbed").join(format!("{name}-{t}"))
    })
}

fn write_results(mesh: &Mesh, report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("summary.txt"), report.summary())?;
    mesh.save_logs(&dir.join("logs"))?;
    Ok(())
}

fn topology_file(p: Option<PathBuf>) -> Result<Topology> {
    let path =
        p.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/demo.toml"));
    Ok(Topology::load(&path)?)
}

/// `AT:ACTION[:ARG]` → a fault spec.
fn parse_fault(s: &str) -> Result<FaultSpec> {
    let mut parts = s.splitn(3, ':');
    let at: Dur = parts.next().unwrap_or("").parse()?;
    let action = parts.next().context("--fault AT:ACTION[:ARG]")?.to_string();
    let arg = parts.next().unwrap_or("");
    let mut f = FaultSpec {
        at,
        action: action.clone(),
        ..FaultSpec::default()
    };
    match action.as_str() {
        "link-down" | "link-up" | "link-silent" | "link-restore" => f.link = Some(arg.into()),
        "node-crash" | "node-restart" | "controller-restart" => f.node = Some(arg.into()),
        "power-off" | "power-on" | "partition" => {
            f.nodes = Some(arg.split(',').map(String::from).collect())
        }
        "power-outage" => {
            let (share, d) = arg.split_once(',').context("power-outage:SHARE,DURATION")?;
            f.share = Some(share.parse().context("power-outage share")?);
            f.duration = Some(d.parse()?);
        }
        "set-link" => {
            let mut it = arg.split(',');
            f.link = it.next().map(String::from);
            for kv in it {
                let (k, v) = kv.split_once('=').context("set-link:LINK,key=value,...")?;
                match k {
                    "snr" | "snr_db" => f.snr_db = Some(v.parse()?),
                    "loss" => f.loss = Some(dcmesh_testbed::topology::Loss::Both(v.parse()?)),
                    "rate" => f.rate = Some(v.parse()?),
                    _ => bail!("set-link: unknown key {k} (snr, loss, rate)"),
                }
            }
        }
        _ => {}
    }
    Ok(f)
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Gen {
            shape,
            clients,
            spacing,
            rate,
            seed,
        } => {
            let o = GenOptions {
                clients,
                spacing_m: spacing,
                rate,
                seed,
                ..GenOptions::default()
            };
            let t = match shape {
                Shape::Line { nodes } => generate::line(nodes, &o)?,
                Shape::Ring { nodes } => generate::ring(nodes, &o)?,
                Shape::Grid { width, height } => generate::grid(width, height, &o)?,
                Shape::Rgg { nodes, degree } => generate::random_geometric(nodes, degree, &o)?,
            };
            print!("{}", t.to_toml());
            Ok(())
        }
        Cmd::Clean => {
            require_root()?;
            let removed = netns::clear_stale()?;
            println!("removed {} leftover(s)", removed.len());
            for r in removed {
                println!("  {r}");
            }
            Ok(())
        }
        Cmd::Demo {
            topology,
            duration,
            common,
        } => {
            let stop = prepare()?;
            let topo = topology_file(topology)?;
            demo(topo, duration, &common, &stop)
        }
        Cmd::Run {
            topology,
            faults,
            duration,
            live,
            common,
        } => {
            let stop = prepare()?;
            let mut topo = Topology::load(&topology)?;
            for f in &faults {
                topo.faults
                    .push(parse_fault(f).with_context(|| format!("--fault {f}"))?);
            }
            topo.validate()?;
            let cfg = RunConfig {
                duration,
                static_delay: common.static_delay,
                families: common.family,
                live: if live { Live::Full } else { Live::Off },
                ..RunConfig::default()
            };
            scripted(topo, cfg, &common, &stop)
        }
        Cmd::Chaos {
            nodes,
            duration,
            degree,
            clients,
            seed,
            rate,
            common,
        } => {
            let stop = prepare()?;
            let mut topo = generate::random_geometric(
                nodes,
                degree,
                &GenOptions {
                    clients,
                    seed,
                    max_loss: CHAOS_MAX_LOSS,
                    ..GenOptions::default()
                },
            )?;
            topo.probes = topo
                .probe_flows()
                .into_iter()
                .map(|mut p| {
                    p.rate = rate;
                    p
                })
                .collect();
            topo.name = format!("chaos-{nodes}-seed{seed}");
            let ctl = controller(&common)?;
            let plan = chaos::plan(
                &topo,
                &ChaosOptions {
                    duration,
                    daemons: matches!(ctl, Controller::Daemon { .. }),
                    seed,
                    ..ChaosOptions::default()
                },
            );
            println!(
                "chaos: {} nodes, {} links, {} clients, {} fault events over {:?} (seed {seed})",
                topo.nodes.len(),
                topo.links.len(),
                topo.clients.len(),
                plan.len(),
                duration
            );
            let cfg = RunConfig {
                duration: Some(duration),
                static_delay: common.static_delay,
                families: common.family,
                live: Live::Compact,
                // Reading every node's tables costs CPU the daemons need on a small host.
                poll: Duration::from_millis(50),
                ..RunConfig::default()
            };
            execute(topo, ctl, plan, cfg, &common, &stop)
        }
    }
}

fn scripted(topo: Topology, cfg: RunConfig, common: &Common, stop: &AtomicBool) -> Result<()> {
    let timeline = topo.timeline()?;
    let ctl = controller(common)?;
    execute(topo, ctl, timeline, cfg, common, stop)
}

fn execute(
    topo: Topology,
    ctl: Controller,
    timeline: Vec<dcmesh_testbed::topology::Fault>,
    cfg: RunConfig,
    common: &Common,
    stop: &AtomicBool,
) -> Result<()> {
    let dir = out_dir(common, &topo.name);
    println!(
        "building {} ({} nodes, {} links, {} clients)",
        topo.name,
        topo.nodes.len(),
        topo.links.len(),
        topo.clients.len()
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("topology.toml"), topo.to_toml())?;
    let mut mesh = Mesh::build(topo, ctl)?;
    let result = scenario::run(&mut mesh, &timeline, &cfg, stop);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = mesh.save_logs(&dir.join("logs"));
            return Err(e.context(format!("logs in {}", dir.join("logs").display())));
        }
    };
    write_results(&mesh, &report, &dir)?;
    println!("\n{}", report.summary());
    println!("report: {}/report.json (summary.txt, logs/)", dir.display());
    println!("removing the mesh");
    drop(mesh);
    Ok(())
}

fn demo(
    topo: Topology,
    duration: Option<Duration>,
    common: &Common,
    stop: &AtomicBool,
) -> Result<()> {
    let ctl = controller(common)?;
    let dir = out_dir(common, &topo.name);
    let timeline = topo.timeline()?;
    println!(
        "building the demo mesh {}: {} nodes, {} links, {} clients ({})",
        topo.name,
        topo.nodes.len(),
        topo.links.len(),
        topo.clients.len(),
        match &ctl {
            Controller::Static => "static routes written by the testbed".to_string(),
            Controller::Daemon { bin } => format!("dcmesh daemon {}", bin.display()),
        }
    );
    let mut mesh = Mesh::build(topo, ctl)?;
    let t = scenario::wait_converged(
        &mut mesh,
        Duration::from_secs(60),
        Duration::from_millis(25),
        stop,
    )?;
    println!("converged in {:.0} ms\n", t.as_secs_f64() * 1e3);
    show_state(&mut mesh);
    println!("metrics while it runs:");
    if let Controller::Daemon { bin } = &mesh.controller {
        println!(
            "  Prometheus: ip netns exec {} curl -s 127.0.0.1:9477/metrics   (one per node namespace)",
            mesh.nodes[0].ns.name()
        );
        println!(
            "  dcmesh CLI: {} routes --socket {}   (status | neighbors | routes | adverts)",
            bin.display(),
            mesh.nodes[0].dir.join("ctl.sock").display()
        );
    }
    println!(
        "  datapath:   dcmesh-loader --pin-dir {} counters",
        mesh.nodes[0].pin.display()
    );
    println!("  results:    {} (written at the end)\n", dir.display());
    println!(
        "sending probes ({}) between every pair of clients; {}",
        common.family,
        match duration {
            Some(d) => format!("running for {:?}", d),
            None => "Ctrl-C to stop".into(),
        }
    );
    let cfg = RunConfig {
        duration,
        live: Live::Full,
        converged_after: Some(t),
        static_delay: common.static_delay,
        families: common.family,
        ..RunConfig::default()
    };
    // No duration: run until Ctrl-C even if the timeline ends.
    let cfg = if duration.is_none() {
        RunConfig {
            duration: Some(Duration::from_secs(365 * 24 * 3600)),
            ..cfg
        }
    } else {
        cfg
    };
    let report = scenario::run(&mut mesh, &timeline, &cfg, stop)?;
    write_results(&mesh, &report, &dir)?;
    println!("\n{}", report.summary());
    println!("report: {}/report.json (summary.txt, logs/)", dir.display());
    println!("removing the mesh: daemons, XDP programs, namespaces, pins");
    drop(mesh);
    println!("done; nothing left behind");
    Ok(())
}

/// Neighbours and routes: from the daemons' control sockets, or the tables.
fn show_state(mesh: &mut Mesh) {
    let names: Vec<String> = mesh.nodes.iter().map(|n| n.name.clone()).collect();
    if matches!(mesh.controller, Controller::Daemon { .. }) {
        let mut ids = std::collections::HashMap::new();
        for (i, nm) in names.iter().enumerate() {
            if let Some(s) = mesh.socket(i) {
                if let Ok(v) = daemons::query(&s, "status") {
                    if let Some(id) = v["node"].as_str() {
                        ids.insert(id.to_string(), nm.clone());
                    }
                }
            }
        }
        let name = |v: &serde_json::Value| {
            v.as_str()
                .map(|s| {
                    ids.get(s)
                        .cloned()
                        .unwrap_or_else(|| s.chars().take(8).collect())
                })
                .unwrap_or_else(|| "-".into())
        };
        println!("neighbours (ETX, SNR dB, cost in 1/256 ETX):");
        for (i, nm) in names.iter().enumerate() {
            let Some(s) = mesh.socket(i) else { continue };
            let Ok(v) = daemons::query(&s, "neighbors") else {
                continue;
            };
            let list: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{} via {} (etx {}, snr {}, cost {})",
                        name(&r["node"]),
                        r["iface"].as_str().unwrap_or("-"),
                        r["etx"].as_f64().map_or("-".into(), |x| format!("{x:.2}")),
                        r["snr_db"]
                            .as_f64()
                            .map_or("-".into(), |x| format!("{x:.0}")),
                        r["cost"]
                    )
                })
                .collect();
            println!("  {:<6} {}", nm, list.join("; "));
        }
        println!(
            "routes of {} (prefix → primary / loop-free alternate):",
            names[0]
        );
        if let Some(s) = mesh.socket(0) {
            if let Ok(v) = daemons::query(&s, "routes") {
                for r in v.as_array().into_iter().flatten() {
                    let via = &r["via"];
                    let hop = if via["kind"] == "local" {
                        "local".to_string()
                    } else {
                        format!("{} / {}", name(&via["primary"]), name(&via["alternate"]))
                    };
                    println!(
                        "  {:<20} {:<16} metric {}",
                        r["prefix"].as_str().unwrap_or("-"),
                        hop,
                        r["metric"]
                    );
                }
            }
        }
    } else {
        println!("neighbours (static topology):");
        for (i, n) in mesh.nodes.iter().enumerate() {
            let peers: Vec<String> = mesh
                .links
                .iter()
                .filter_map(|l| {
                    if l.a == i {
                        Some(names[l.b].clone())
                    } else if l.b == i {
                        Some(names[l.a].clone())
                    } else {
                        None
                    }
                })
                .collect();
            println!("  {:<6} {}", n.name, peers.join(" "));
        }
    }
    let snap = mesh.snapshot();
    println!("paths now (by the datapath tables):");
    for (a, ca) in mesh.clients.iter().enumerate() {
        for (b, cb) in mesh.clients.iter().enumerate() {
            if a != b {
                println!(
                    "  {} → {} ({}): {}",
                    ca.name,
                    cb.name,
                    cb.addr4,
                    scenario::path_of(mesh, &snap, a, b, Family::V4)
                );
                println!(
                    "  {} → {} ({}): {}",
                    ca.name,
                    cb.name,
                    cb.addr6,
                    scenario::path_of(mesh, &snap, a, b, Family::V6)
                );
            }
        }
    }
    println!();
}
