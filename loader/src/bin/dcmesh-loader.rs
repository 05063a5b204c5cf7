//! `dcmesh-loader`: a small debug CLI over the loader library. Attach the XDP forwarder,
//! write routes and next hops by hand, read counters. The `dcmesh` daemon does all of this
//! itself; this tool is for bring-up, tests and debugging.
use std::{net::IpAddr, path::PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dcmesh_loader::{
    format_mac, parse_mac, AttachMode, Attached, Datapath, IpNet, NextHopSpec, RouteTarget, Tables,
    DEFAULT_PIN_DIR,
};
use dcmesh_schema::Verdict;

#[derive(Parser)]
#[command(
    name = "dcmesh-loader",
    version,
    about = "Load, attach and inspect the dcmesh XDP datapath"
)]
struct Cli {
    /// Where maps and links are pinned (must be on bpffs; mounted if missing).
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, ValueEnum)]
enum Miss {
    Pass,
    Drop,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the forwarder (reusing pinned tables) and attach it; replaces a running program
    /// without a gap. Forwarding continues after this command exits.
    Attach {
        #[arg(required = true)]
        interfaces: Vec<String>,
        #[arg(long, value_enum, default_value = "auto")]
        mode: Mode,
        /// What to do with packets matching no route.
        #[arg(long, value_enum)]
        miss: Option<Miss>,
    },
    /// Detach from interfaces (tables stay pinned).
    Detach {
        #[arg(required = true)]
        interfaces: Vec<String>,
    },
    /// Detach everywhere and delete the pinned tables.
    Teardown,
    /// Attached interfaces, miss policy and counters.
    Status,
    /// Per-reason packet counters.
    Counters,
    #[command(subcommand)]
    Nexthop(NhCmd),
    #[command(subcommand)]
    Route(RouteCmd),
}

#[derive(Subcommand)]
enum NhCmd {
    /// Add or replace next hop ID: out of DEV to the neighbour with MAC LLADDR.
    Add {
        id: u32,
        #[arg(long)]
        dev: String,
        #[arg(long)]
        lladdr: String,
        /// Override the egress MTU (default: the interface's).
        #[arg(long)]
        mtu: Option<u16>,
    },
    /// Delete next hop ID (refused while routes use it, unless --force).
    Del {
        id: u32,
        #[arg(long)]
        force: bool,
    },
    /// Mark next hop ID down: routes with an alternate switch to it.
    Down {
        id: u32,
    },
    /// Mark next hop ID up.
    Up {
        id: u32,
    },
    List,
}

#[derive(Subcommand)]
enum RouteCmd {
    /// Add or replace a route: `via ID [--alt ID]`, `local`, `kernel` or `blackhole`.
    Add {
        prefix: String,
        /// via | local | kernel | blackhole
        kind: String,
        /// Next hop id (with `via`).
        id: Option<u32>,
        /// Loop-free alternate next hop id.
        #[arg(long)]
        alt: Option<u32>,
    },
    Del {
        prefix: String,
    },
    /// The route the datapath uses for an address.
    Get {
        addr: IpAddr,
    },
    List,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("dcmesh-loader: {e:#}");
        std::process::exit(1);
    }
}

fn prefix(s: &str) -> Result<IpNet> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .with_context(|| format!("\"{s}\" is not a prefix (e.g. 10.1.0.0/16 or 2001:db8::/32)"))
}

fn tables(cli: &Cli) -> Result<Tables> {
    Ok(Tables::open_pinned(&cli.pin_dir)?)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Attach {
            interfaces,
            mode,
            miss,
        } => {
            let mode = match mode {
                Mode::Auto => AttachMode::Auto,
                Mode::Native => AttachMode::Native,
                Mode::Generic => AttachMode::Generic,
            };
            // Check every name before touching anything.
            for i in interfaces {
                dcmesh_loader::ifindex(i)?;
            }
            let mut dp = Datapath::load(Some(&cli.pin_dir))?;
            if let Some(m) = miss {
                dp.tables().set_miss_drop(matches!(m, Miss::Drop))?;
            }
            for i in interfaces {
                match dp.attach(i, mode)? {
                    Attached::New { native: true } => println!("{i}: attached (native XDP)"),
                    Attached::New { native: false } => println!("{i}: attached (generic XDP)"),
                    Attached::Replaced => println!("{i}: program replaced, tables kept"),
                }
            }
        }
        Cmd::Detach { interfaces } => {
            for i in interfaces {
                dcmesh_loader::detach(&cli.pin_dir, i)?;
                println!("{i}: detached");
            }
        }
        Cmd::Teardown => {
            dcmesh_loader::teardown(&cli.pin_dir)?;
            println!("detached everywhere; tables removed");
        }
        Cmd::Status => {
            let t = tables(&cli)?;
            let ifs = dcmesh_loader::attached_interfaces(&cli.pin_dir);
            println!(
                "attached: {}",
                if ifs.is_empty() {
                    "-".into()
                } else {
                    ifs.join(" ")
                }
            );
            println!(
                "route miss: {}",
                if t.miss_drop() { "drop" } else { "pass" }
            );
            println!("routes: {}", t.routes()?.len());
            println!("next hops: {}", t.nexthops().len());
            let c = t.counters()?;
            println!(
                "packets: {} redirected, {} passed, {} dropped",
                c.verdict(Verdict::Redirect),
                c.verdict(Verdict::Pass),
                c.verdict(Verdict::Drop)
            );
        }
        Cmd::Counters => {
            let c = tables(&cli)?.counters()?;
            for (k, v) in c.named() {
                println!(
                    "{:<20} {:>14} pkts {:>16} bytes",
                    k.name(),
                    v.packets,
                    v.bytes
                );
            }
        }
        Cmd::Nexthop(n) => nexthop(&cli, n)?,
        Cmd::Route(r) => route(&cli, r)?,
    }
    Ok(())
}

fn nexthop(cli: &Cli, cmd: &NhCmd) -> Result<()> {
    let mut t = tables(cli)?;
    match cmd {
        NhCmd::Add {
            id,
            dev,
            lladdr,
            mtu,
        } => {
            let mac = parse_mac(lladdr)
                .with_context(|| format!("\"{lladdr}\" is not a MAC (aa:bb:cc:dd:ee:ff)"))?;
            let mut spec = NextHopSpec::via_interface(dev, mac)?;
            if let Some(m) = mtu {
                spec.mtu = *m;
            }
            t.set_nexthop(*id, spec)?;
        }
        NhCmd::Del { id, force } => {
            let users = t.routes_using(*id)?;
            if !users.is_empty() && !force {
                bail!(
                    "next hop {id} is used by {} route(s), e.g. {}; move them first or pass --force",
                    users.len(),
                    users[0]
                );
            }
            t.delete_nexthop(*id)?;
        }
        NhCmd::Down { id } => t.set_nexthop_down(*id, true)?,
        NhCmd::Up { id } => t.set_nexthop_down(*id, false)?,
        NhCmd::List => {
            for (id, nh) in t.nexthops() {
                let name = dcmesh_loader::ifname(nh.ifindex).unwrap_or_else(|_| "?".into());
                println!(
                    "{id:>5} dev {name} lladdr {} src {} mtu {}{}",
                    format_mac(&nh.dst_mac),
                    format_mac(&nh.src_mac),
                    nh.mtu,
                    if t.nexthop_down(id) { " DOWN" } else { "" }
                );
            }
        }
    }
    Ok(())
}

fn describe(t: &RouteTarget) -> String {
    match t {
        RouteTarget::Via { id, alt: None } => format!("via {id}"),
        RouteTarget::Via { id, alt: Some(a) } => format!("via {id} alt {a}"),
        RouteTarget::Local => "local".into(),
        RouteTarget::Kernel => "kernel".into(),
        RouteTarget::Blackhole => "blackhole".into(),
    }
}

fn route(cli: &Cli, cmd: &RouteCmd) -> Result<()> {
    let mut t = tables(cli)?;
    match cmd {
        RouteCmd::Add {
            prefix: p,
            kind,
            id,
            alt,
        } => {
            let target = match (kind.as_str(), id) {
                ("via", Some(id)) => RouteTarget::Via { id: *id, alt: *alt },
                ("via", None) => bail!("`via` needs a next hop id: route add {p} via ID"),
                ("local", None) => RouteTarget::Local,
                ("kernel", None) => RouteTarget::Kernel,
                ("blackhole", None) => RouteTarget::Blackhole,
                (k, _) => {
                    bail!("unknown route kind \"{k}\"; use via ID, local, kernel or blackhole")
                }
            };
            t.set_route(prefix(p)?, target)?;
        }
        RouteCmd::Del { prefix: p } => t.delete_route(prefix(p)?)?,
        RouteCmd::Get { addr } => match t.lookup(*addr) {
            Some(r) => println!("{addr} {}", describe(&r)),
            None => println!("{addr}: no route"),
        },
        RouteCmd::List => {
            for (net, r) in t.routes()? {
                println!("{net} {}", describe(&r));
            }
        }
    }
    Ok(())
}
