//! `cargo xtask setup | build | test | run | bench`: everything a fresh machine needs, in one place.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod setup;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "dcmesh developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and tests need (idempotent): packages, rust-src, bpf-linker.
    Setup,
    /// Set up, then build every crate and the eBPF objects (release).
    Build,
    /// Set up, build, then run every test (unit, property, BPF_PROG_TEST_RUN, namespaces). Needs root.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and start a live demo mesh on this machine. Needs root.
    Run {
        /// Arguments for the demo (e.g. --duration 30s, --topology FILE).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Random faults on a random geometric mesh of real daemons (e.g. --nodes 20
    /// --duration 5m): loops, delivery outside convergence windows, convergence times.
    /// Needs root.
    Chaos {
        /// Arguments for `dcmesh-testbed chaos` (--nodes, --duration, --seed, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks: `forward`, `lanes`, `control`, or `all` (default). Needs root.
    Bench {
        #[arg(default_value = "all")]
        which: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root: it loads eBPF programs and creates network namespaces. \
             Run it as root (e.g. `sudo -E cargo xtask {what}`). Nothing was run."
        );
    }
    Ok(())
}

/// Runs `cargo args` in the workspace with the project's tool directory on PATH.
fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root())
        .env("PATH", setup::path_with_tools())
        .status()
        .with_context(|| format!("run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `dcmesh-testbed SUB ARGS` (release), after building the daemon it starts in
/// every node (found next to the testbed binary).
fn testbed(task: &str, sub: &str, args: &[String]) -> Result<()> {
    require_root(task)?;
    setup::setup()?;
    cargo(&[
        "build",
        "--release",
        "-p",
        "dcmesh-control",
        "--bin",
        "dcmesh",
    ])?;
    let mut a = vec![
        "run",
        "--release",
        "-p",
        "dcmesh-testbed",
        "--bin",
        "dcmesh-testbed",
        "--",
        sub,
    ];
    a.extend(args.iter().map(String::as_str));
    cargo(&a)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build => {
            setup::setup()?;
            cargo(&["build", "--release", "--workspace", "--all-targets"])
        }
        Cmd::Test { args } => {
            require_root("test")?;
            setup::setup()?;
            let mut a = vec!["test", "--workspace", "--no-fail-fast"];
            a.extend(args.iter().map(String::as_str));
            cargo(&a)
        }
        Cmd::Run { args } => testbed("run", "demo", &args),
        Cmd::Chaos { args } => testbed("chaos", "chaos", &args),
        Cmd::Bench { which, args } => {
            require_root("bench")?;
            setup::setup()?;
            let all = ["forward", "lanes", "control"];
            let list: Vec<&str> = if which == "all" {
                all.to_vec()
            } else {
                vec![which.as_str()]
            };
            for b in list {
                let mut a: Vec<&str> = match b {
                    "forward" => vec![
                        "run",
                        "--release",
                        "-p",
                        "dcmesh-bench",
                        "--bin",
                        "dcmesh-bench",
                        "--",
                        "forward",
                    ],
                    "lanes" => vec![
                        "run",
                        "--release",
                        "-p",
                        "dcmesh-bench",
                        "--bin",
                        "bench-lanes",
                        "--",
                    ],
                    "control" => vec![
                        "run",
                        "--release",
                        "-p",
                        "dcmesh-bench",
                        "--bin",
                        "bench-control",
                        "--",
                    ],
                    other => {
                        bail!("unknown benchmark \"{other}\"; use forward, lanes, control or all")
                    }
                };
                a.extend(args.iter().map(String::as_str));
                println!("== bench {b} ==");
                cargo(&a)?;
            }
            Ok(())
        }
    }
}
