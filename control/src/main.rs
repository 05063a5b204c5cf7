//! `dcmesh`: keys, certificates, the routing daemon, and queries to it.
use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use dcmesh_control::{
    api::{self, Query},
    cert::Certificate,
    config::Config,
    daemon,
    identity::{Identity, NodeId},
};
use ipnet::IpNet;

#[derive(Parser)]
#[command(
    name = "dcmesh",
    version,
    about = "dcmesh mesh router: signed link state, ETX+SNR routing, XDP forwarding"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Target {
    /// Control socket of the daemon.
    #[arg(long, default_value = "/run/dcmesh.sock", conflicts_with = "config")]
    socket: PathBuf,
    /// Read the control socket path from this config file instead.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates a node key (mode 0600; refuses to overwrite) and prints its public key.
    Keygen {
        #[arg(long, default_value = "node.key")]
        out: PathBuf,
    },
    /// Prints the public key of a key file.
    Pubkey {
        #[arg(long)]
        key: PathBuf,
    },
    /// Certificate authority operations.
    #[command(subcommand)]
    Authority(AuthorityCmd),
    /// Shows a certificate file.
    ShowCert { path: PathBuf },
    /// Runs the daemon.
    Run {
        #[arg(long, default_value = "/etc/dcmesh/dcmesh.toml")]
        config: PathBuf,
    },
    /// Node, certificate, counters.
    Status(Target),
    /// Neighbours and link metrics.
    Neighbors(Target),
    /// Computed routes.
    Routes(Target),
    /// The verified link-state database.
    Adverts(Target),
    /// TSN lanes maintenance.
    #[command(subcommand)]
    Lanes(LanesCmd),
}

#[derive(Subcommand)]
enum LanesCmd {
    /// Takes the TSN lanes off an interface: detaches the TC program (unpins its link),
    /// removes its pinned maps and deletes the HTB queues. Lanes outlive the daemon on
    /// purpose; stop it and set `lanes = false` on the interface (or drop [lanes]) first,
    /// or its next start puts them back.
    Remove {
        /// The interface (in this network namespace).
        #[arg(long)]
        interface: String,
        /// The daemon's config, for its pin_dir.
        #[arg(
            long,
            default_value = "/etc/dcmesh/dcmesh.toml",
            conflicts_with = "pin_dir"
        )]
        config: PathBuf,
        /// The daemon's pin_dir, instead of reading the config.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuthorityCmd {
    /// Creates an authority key (mode 0600; refuses to overwrite); list its public key
    /// under [authorities] keys in every node's config.
    Init {
        #[arg(long, default_value = "authority.key")]
        out: PathBuf,
    },
    /// Issues a certificate signed by this authority (other authorities add theirs with
    /// `cosign` until the threshold is met).
    Issue {
        /// Authority key file.
        #[arg(long, default_value = "authority.key")]
        key: PathBuf,
        /// The node's public key (64 hex digits, from `dcmesh keygen`).
        #[arg(long)]
        node: NodeId,
        /// Granted prefix (repeatable).
        #[arg(long = "prefix", required = true, num_args = 1..)]
        prefixes: Vec<IpNet>,
        /// Lifetime: e.g. 4h, 90m, 3600s (at most 4h).
        #[arg(long, default_value = "4h")]
        validity: String,
        /// Start of validity, unix seconds (default: now).
        #[arg(long)]
        not_before: Option<u64>,
        /// Output certificate file (replaced atomically, so a running daemon picks it up).
        #[arg(long, default_value = "node.cert")]
        out: PathBuf,
    },
    /// Adds this authority's signature to an existing certificate.
    Cosign {
        #[arg(long, default_value = "authority.key")]
        key: PathBuf,
        #[arg(long)]
        cert: PathBuf,
    },
}

/// Parses `4h`, `90m`, `3600s` or plain seconds.
fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 's')) => (&s[..i], 1),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--validity \"{s}\": expected e.g. 4h, 90m or 3600s"))?;
    n.checked_mul(mul).context("--validity: too large")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Keygen { out } | Cmd::Authority(AuthorityCmd::Init { out }) => {
            let id = Identity::generate();
            id.write_new(&out)?;
            println!("{}", id.id());
            eprintln!(
                "wrote {} (mode 0600); the line above is its public key",
                out.display()
            );
        }
        Cmd::Pubkey { key } => println!("{}", Identity::load(&key)?.id()),
        Cmd::Authority(AuthorityCmd::Issue {
            key,
            node,
            prefixes,
            validity,
            not_before,
            out,
        }) => {
            let auth = Identity::load(&key)?;
            let secs = parse_duration(&validity)?;
            let nb = not_before.unwrap_or_else(now);
            let mut c = Certificate::new(node, prefixes, nb, nb.saturating_add(secs))
                .map_err(|e| anyhow::anyhow!("--validity {validity}: {e}"))?;
            c.sign(&auth)?;
            write_atomic(&out, &c.to_file_text())?;
            eprintln!(
                "wrote {} for {} valid {}..{}, signed by {}",
                out.display(),
                node.short(),
                c.not_before,
                c.not_after,
                auth.id().short()
            );
        }
        Cmd::Authority(AuthorityCmd::Cosign { key, cert }) => {
            let auth = Identity::load(&key)?;
            let mut c = Certificate::load(&cert)?;
            c.sign(&auth)?;
            write_atomic(&cert, &c.to_file_text())?;
            eprintln!("{}: now {} signature(s)", cert.display(), c.sigs.len());
        }
        Cmd::ShowCert { path } => {
            let c = Certificate::load(&path)?;
            let v = serde_json::json!({
                "node": c.node,
                "not_before": c.not_before,
                "not_after": c.not_after,
                "prefixes": c.prefixes,
                "signed_by": c.sigs.iter().map(|s| s.0).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Run { config } => {
            let cfg = Config::load(&config)?;
            daemon::run(cfg)?;
        }
        Cmd::Status(t) => ask(t, Query::Status)?,
        Cmd::Neighbors(t) => ask(t, Query::Neighbors)?,
        Cmd::Routes(t) => ask(t, Query::Routes)?,
        Cmd::Adverts(t) => ask(t, Query::Adverts)?,
        Cmd::Lanes(LanesCmd::Remove {
            interface,
            config,
            pin_dir,
        }) => {
            let root = match pin_dir {
                Some(p) => p,
                None => Config::load(&config)?.pin_dir,
            };
            let dir = dcmesh_loader::lanes::pin_dir_for(&root, &interface);
            let r =
                dcmesh_loader::lanes::remove(&dir, &interface, dcmesh_loader::lanes::DEFAULT_MAJOR)
                    .with_context(|| format!("remove the lanes of \"{interface}\""))?;
            let mut done = Vec::new();
            if r.link {
                done.push("TC program detached");
            }
            if r.maps {
                done.push("pinned maps removed");
            }
            if r.queues {
                done.push("HTB queues deleted");
            }
            eprintln!("{interface}: {}", done.join(", "));
        }
    }
    Ok(())
}

fn ask(t: Target, q: Query) -> anyhow::Result<()> {
    let socket = match &t.config {
        Some(c) => Config::load(c)?.control_socket,
        None => t.socket.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let v = rt.block_on(api::query(&socket, q))?;
    if t.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", human(q, &v));
    Ok(())
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn short(v: &serde_json::Value) -> String {
    let x = s(v);
    if x.len() == 64 {
        x[..8].to_string()
    } else {
        x
    }
}

/// Plain-text tables for people.
fn human(q: Query, v: &serde_json::Value) -> String {
    let empty = vec![];
    let rows = v.as_array().unwrap_or(&empty);
    let mut out = String::new();
    match q {
        Query::Status => {
            out += &format!("node        {}\n", s(&v["node"]));
            out += &format!("uptime      {} s\n", s(&v["uptime_s"]));
            out += &format!("advert seq  {}\n", s(&v["seq"]));
            let c = &v["cert"];
            if c["valid"] == serde_json::Value::Bool(true) {
                out += &format!("certificate valid until {}\n", s(&c["not_after"]));
            } else {
                out += &format!("certificate INVALID: {}\n", s(&c["error"]));
            }
            out += &format!(
                "neighbours {}  routes {}  adverts {}\n",
                s(&v["neighbours"]),
                s(&v["routes"]),
                s(&v["adverts"])
            );
            for i in v["interfaces"].as_array().unwrap_or(&empty) {
                out += &format!(
                    "interface {} (#{}) {}\n",
                    s(&i["name"]),
                    s(&i["ifindex"]),
                    if i["up"] == true { "up" } else { "DOWN" }
                );
            }
            let l = &v["lsdb"];
            out += &format!(
                "adverts accepted {}  duplicates {}  purged {}\n",
                s(&l["accepted"]),
                s(&l["duplicates"]),
                s(&l["purged"])
            );
            if let Some(m) = l["rejected"].as_object() {
                for (k, n) in m.iter().filter(|(_, n)| n.as_u64() != Some(0)) {
                    out += &format!("  rejected {k}: {}\n", s(n));
                }
            }
            for f in v["lanes"].as_array().unwrap_or(&empty) {
                out += &lanes_line(f);
            }
        }
        Query::Neighbors => {
            out += "IFACE     NEIGHBOUR  MAC                DF    DR    ETX   SNR     COST\n";
            for r in rows {
                out += &format!(
                    "{:<9} {:<10} {:<18} {:<5} {:<5} {:<5} {:<7} {}\n",
                    s(&r["iface"]),
                    short(&r["node"]),
                    s(&r["mac"]),
                    s(&r["df"]),
                    s(&r["dr"]),
                    s(&r["etx"]),
                    s(&r["snr_db"]),
                    s(&r["cost"])
                );
            }
        }
        Query::Routes => {
            out += "PREFIX               ORIGIN     METRIC  VIA        ALTERNATE  IFACE\n";
            for r in rows {
                let via = &r["via"];
                let (p, a) = if via["kind"] == "local" {
                    ("local".to_string(), "-".to_string())
                } else {
                    (short(&via["primary"]), short(&via["alternate"]))
                };
                out += &format!(
                    "{:<20} {:<10} {:<7} {:<10} {:<10} {}\n",
                    s(&r["prefix"]),
                    short(&r["origin"]),
                    s(&r["metric"]),
                    p,
                    a,
                    s(&r["iface"])
                );
            }
        }
        Query::Adverts => {
            out += "ORIGIN     SEQ         EXPIRES     LINKS  PREFIXES\n";
            for r in rows {
                let links = r["links"].as_array().map_or(0, Vec::len);
                let pfx: Vec<String> = r["prefixes"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(s)
                    .collect();
                out += &format!(
                    "{:<10} {:<11} {:<11} {:<6} {}\n",
                    short(&r["origin"]),
                    s(&r["seq"]),
                    s(&r["expires"]),
                    links,
                    pfx.join(" ")
                );
            }
        }
    }
    out
}

/// `dcmesh status` lines of one interface's lanes.
fn lanes_line(f: &serde_json::Value) -> String {
    let name = s(&f["interface"]);
    if f["mode"] == "failed" {
        return format!("lanes {name}: NOT ACTIVE: {}\n", s(&f["error"]));
    }
    let sch = &f["schedule"];
    let n = sch["entries"].as_array().map_or(0, Vec::len);
    let mut out = format!(
        "lanes {name}: {} mode, {} bit/s, cycle {} ns in {n} {} ({})\n",
        s(&f["mode"]),
        s(&sch["link_rate_bps"]),
        s(&sch["cycle_ns"]),
        if n == 1 { "entry" } else { "entries" },
        s(&f["mode_detail"])
    );
    if let Some(lanes) = f["counters"]["lanes"].as_object() {
        for (lane, actions) in lanes {
            let parts: Vec<String> = actions
                .as_object()
                .into_iter()
                .flatten()
                .map(|(a, v)| format!("{a} {}", s(&v["packets"])))
                .collect();
            out += &format!("  lane {lane}: {}\n", parts.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("4h").unwrap(), 14400);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration("30s").unwrap(), 30);
        assert_eq!(parse_duration("30").unwrap(), 30);
        assert!(parse_duration("4 days").is_err());
        assert!(parse_duration("h").is_err());
    }
}
