//! `dcmesh-testbed demo`: a live mesh on this machine, torn down on exit (also on Ctrl-C).
//!
//! Today's demo: hosts A and B behind router R, whose kernel forwarding is off; the dcmesh
//! XDP datapath on R forwards every packet from routes written through the loader.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dcmesh_loader::{AttachMode, Datapath, NextHopSpec, RouteTarget};
use dcmesh_schema::{Counter, Verdict};
use dcmesh_testbed::{
    generate::{self, GenOptions},
    netns,
    units::{Dur, Rate},
    Netns,
};

#[derive(Parser)]
#[command(
    name = "dcmesh-testbed",
    about = "Meshes of network namespaces running dcmesh"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the demo mesh and show live stats until Ctrl-C or --duration.
    Demo {
        /// How long to run (e.g. 30s, 2m); default: until Ctrl-C.
        #[arg(long, value_parser = parse_dur)]
        duration: Option<Duration>,
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

fn parse_dur(s: &str) -> Result<Duration, String> {
    s.parse::<Dur>().map(|d| d.0).map_err(|e| e.to_string())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
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
        Cmd::Demo { duration } => {
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = stop.clone();
                ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
                    .context("install Ctrl-C handler")?;
            }
            let removed = netns::clear_stale()?;
            if !removed.is_empty() {
                println!("cleared leftovers of an earlier run: {}", removed.join(" "));
            }
            demo(duration, &stop)
        }
    }
}

fn mac(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-br", "link", "show", dev])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(dcmesh_loader::parse_mac)
        .with_context(|| format!("no MAC for {dev} in {}", ns.name()))
}

fn demo(duration: Option<Duration>, stop: &AtomicBool) -> Result<()> {
    println!("building the demo mesh: host A — router R — host B");
    let a = Netns::create("demo-a")?;
    let r = Netns::create("demo-r")?;
    let b = Netns::create("demo-b")?;
    netns::veth(&a, "a0", &r, "r0")?;
    netns::veth(&r, "r1", &b, "b0")?;
    for (ns, dev, v4, v6) in [
        (&a, "a0", "10.0.1.2/24", "2001:db8:1::2/64"),
        (&r, "r0", "10.0.1.1/24", "2001:db8:1::1/64"),
        (&r, "r1", "10.0.2.1/24", "2001:db8:2::1/64"),
        (&b, "b0", "10.0.2.2/24", "2001:db8:2::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", dev])?;
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
    }
    for (ns, dev, gw4, gw6) in [
        (&a, "a0", "10.0.1.1", "2001:db8:1::1"),
        (&b, "b0", "10.0.2.1", "2001:db8:2::1"),
    ] {
        ns.ip(&["route", "add", "default", "via", gw4])?;
        ns.ip(&["-6", "route", "add", "default", "via", gw6])?;
        ns.exec("ethtool", &["-K", dev, "gro", "on"])?;
    }
    r.sysctl("net.ipv4.ip_forward", "0")?;
    r.sysctl("net.ipv6.conf.all.forwarding", "0")?;
    let (mac_a, mac_b) = (mac(&a, "a0")?, mac(&b, "b0")?);

    let mut dp = r.enter(|| -> Result<Datapath> {
        let mut dp = Datapath::load(None)?;
        for i in ["r0", "r1"] {
            dp.attach(i, AttachMode::Auto)?;
        }
        let t = dp.tables();
        t.set_nexthop(1, NextHopSpec::via_interface("r1", mac_b)?)?;
        t.set_nexthop(2, NextHopSpec::via_interface("r0", mac_a)?)?;
        let via = |id| RouteTarget::Via { id, alt: None };
        for (p, tgt) in [
            ("10.0.2.0/24", via(1)),
            ("10.0.1.0/24", via(2)),
            ("2001:db8:2::/64", via(1)),
            ("2001:db8:1::/64", via(2)),
            ("10.0.1.1/32", RouteTarget::Local),
            ("10.0.2.1/32", RouteTarget::Local),
            ("2001:db8:1::1/128", RouteTarget::Local),
            ("2001:db8:2::1/128", RouteTarget::Local),
        ] {
            t.set_route(p.parse()?, tgt)?;
        }
        Ok(dp)
    })??;
    println!("R: dcmesh XDP attached to r0 and r1; kernel forwarding off");
    println!("R routes:");
    for (net, t) in dp.tables().routes()? {
        println!("  {:<22} {t:?}", net.to_string());
    }
    for dst in ["10.0.2.2", "2001:db8:2::2"] {
        let out = a.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", dst])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().find(|l| l.contains("received")).unwrap_or("");
        println!("A → B ping {dst}: {summary}");
    }
    println!(
        "live traffic A → B (5 pings/s in each family); {}",
        match duration {
            Some(d) => format!("running for {}s", d.as_secs()),
            None => "Ctrl-C to stop".into(),
        }
    );
    let mut pings: Vec<std::process::Child> = ["10.0.2.2", "2001:db8:2::2"]
        .iter()
        .map(|dst| {
            std::process::Command::new("ip")
                .args(["netns", "exec", a.name(), "ping", "-q", "-i", "0.2", dst])
                .stdout(std::process::Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let mut last = dp.tables().counters()?;
    while !stop.load(Ordering::SeqCst) && duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_secs(1));
        let now = dp.tables().counters()?;
        let d = now.since(&last);
        println!(
            "[{:>4}s] R forwarded v4 {:>4}/s v6 {:>4}/s | passed {:>3}/s dropped {:>3}/s | total forwarded {}",
            start.elapsed().as_secs(),
            d.get(Counter::FwdV4).packets,
            d.get(Counter::FwdV6).packets,
            d.verdict(Verdict::Pass),
            d.verdict(Verdict::Drop),
            now.verdict(Verdict::Redirect)
        );
        last = now;
    }
    for p in &mut pings {
        let _ = p.kill();
        let _ = p.wait();
    }
    println!("stopping: detaching XDP and removing namespaces");
    drop(dp);
    Ok(())
}
