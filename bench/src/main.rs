//! dcmesh benchmarks. `dcmesh-bench forward`: the forwarding benchmark of issue 2
//! (method in `shared/notes/bench.md`). Needs root.
use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod cost;
mod forward;
mod frames;
mod probe;
mod report;
mod routes;
mod stats;
mod tools;
mod topology;

#[derive(Parser)]
#[command(version, about = "dcmesh benchmarks (run as root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Forwarding rate and per-packet router cost: direct, XDP ceiling, dcmesh (1 route and
    /// a large table) and Linux forwarding, through namespaces gen — R — sink.
    Forward {
        /// Timed repetitions per case.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        reps: u32,
        /// Seconds per repetition.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Directory for forward-<UTC date>.md and forward-latest.md.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
        out: PathBuf,
        /// CPU for the generator (the whole chain runs on it); default: the last CPU.
        #[arg(long)]
        cpu: Option<usize>,
        /// Routes in the large-table cases.
        #[arg(long, default_value_t = 100_000)]
        routes: usize,
        /// Distinct destinations the generator cycles through in the large-table cases.
        #[arg(long, default_value_t = 4_000, value_parser = clap::value_parser!(u32).range(1..=8192))]
        destinations: u32,
        /// Live-frames batch: frames the generator sends per redirect flush (1..=256).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
        batch: u32,
    },
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    // Ctrl-C, SIGTERM and SIGHUP stop the run between steps, so every namespace, program
    // and route is removed on the way out; a second signal exits at once (a later run's
    // `clear_stale` then removes the leftovers).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("install signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }
    match cli.cmd {
        Cmd::Forward {
            reps,
            seconds,
            out,
            cpu,
            routes,
            destinations,
            batch,
        } => {
            anyhow::ensure!(
                seconds.is_finite() && (0.1..=60.0).contains(&seconds),
                "--seconds {seconds}: give 0.1 to 60"
            );
            anyhow::ensure!(
                (destinations as usize) <= routes,
                "--destinations {destinations} exceeds --routes {routes}"
            );
            let opts = forward::Options {
                reps: reps as usize,
                seconds,
                cpu,
                routes,
                destinations: destinations as usize,
                batch,
                ..forward::Options::default()
            };
            let report = match forward::run(&opts, &stop) {
                Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => {
                    eprintln!("interrupted; every namespace and program it made is removed");
                    std::process::exit(130);
                }
                r => r?,
            };
            let md = report.markdown();
            println!("{md}");
            for p in forward::write(&report, &out)? {
                eprintln!("wrote {}", p.display());
            }
            anyhow::ensure!(
                report.checks_ok(),
                "some evidence checks failed: the rates above may not measure forwarding"
            );
            Ok(())
        }
    }
}
