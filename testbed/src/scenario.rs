//! Running a scenario on a built mesh: wait for convergence, start the probes, apply the
//! timeline's faults at their times, watch the forwarding state, and assemble a
//! [`Report`].
//!
//! Every `poll` the runner reads every node's tables and runs the convergence check
//! ([`crate::converge`]) against the true topology: a fault's *restore* time is from the
//! fault to the first check that delivers every reachable destination again, its
//! *settle* time to the last change of any table before the next fault. Probe flows
//! give what users see: outages, delivery outside those windows, loops.
use std::{
    net::{SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use dcmesh_schema::Counter;

use crate::{
    converge::{self, Outcome, Snapshot},
    mesh::{Controller, Mesh},
    probe::{self, Families, Family, FlowSpec, Probes, PROBE_PORT},
    report::{
        Delivery, Distribution, ExpiredProbe, FaultReport, FlowReport, OutageReport, Report,
        TableLoop,
    },
    topology::{Action, Fault, Topology},
};

/// How much the runner prints while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    Off,
    /// One line per second.
    Compact,
    /// Per-flow paths and per-link rates every second.
    Full,
}

/// Knobs of a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Measured time after convergence; `None`: until the stop flag, or `tail` after
    /// the last timeline event if there are events.
    pub duration: Option<Duration>,
    /// Time kept after the last event when no duration is given.
    pub tail: Duration,
    /// Interval of the convergence checks.
    pub poll: Duration,
    /// Longest wait for the initial convergence.
    pub converge_timeout: Duration,
    /// Static controller: delay between a fault and its recomputation (it is an oracle,
    /// so it must not react instantly to what only hellos could reveal).
    pub static_delay: Duration,
    /// Lost probes in a row that make an outage.
    pub min_outage: u64,
    pub live: Live,
    /// The caller already waited for convergence, this long: do not wait again.
    pub converged_after: Option<Duration>,
    /// Address families every probe flow runs over; with both, each family's twin
    /// sends at the flow's configured rate.
    pub families: Families,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            duration: None,
            tail: Duration::from_secs(10),
            poll: Duration::from_millis(25),
            converge_timeout: Duration::from_secs(60),
            static_delay: Duration::from_secs(1),
            min_outage: 2,
            live: Live::Off,
            converged_after: None,
            families: Families::Both,
        }
    }
}

/// Human form of a fault action, with names.
pub fn describe(t: &Topology, a: &Action) -> String {
    let link = |l: usize| t.links[l].name();
    let node = |n: usize| t.nodes[n].name.clone();
    let nodes = |ns: &[usize]| ns.iter().map(|&n| node(n)).collect::<Vec<_>>().join(",");
    match a {
        Action::LinkDown(l) => format!("link-down {}", link(*l)),
        Action::LinkUp(l) => format!("link-up {}", link(*l)),
        Action::LinkSilent(l) => format!("link-silent {}", link(*l)),
        Action::LinkRestore(l) => format!("link-restore {}", link(*l)),
        Action::SetLink {
            link: l,
            loss,
            snr_db,
            rate,
        } => {
            let mut s = format!("set-link {}", link(*l));
            if let Some(x) = snr_db {
                s += &format!(" snr={x:.0}dB");
            }
            if let Some(x) = loss {
                let (a, b) = x.pair();
                s += &format!(" loss={a}/{b}");
            }
            if let Some(r) = rate {
                s += &format!(" rate={r}");
            }
            s
        }
        Action::NodeCrash(n) => format!("node-crash {}", node(*n)),
        Action::NodeRestart(n) => format!("node-restart {}", node(*n)),
        Action::ControllerRestart(n) => format!("controller-restart {}", node(*n)),
        Action::PowerOff(ns) => format!("power-off {}", nodes(ns)),
        Action::PowerOn(ns) => format!("power-on {}", nodes(ns)),
        Action::PowerOutage { share, duration } => {
            format!("power-outage {share} for {:?}", duration)
        }
        Action::Partition(ns) => format!("partition {}", nodes(ns)),
        Action::Heal => "heal".into(),
    }
}

/// Opens the probe sockets inside the clients and starts the flows: every configured
/// flow once per family in `families` (IPv4 twin first), each at the flow's rate.
pub fn start_probes(mesh: &Mesh, t0: Instant, families: Families) -> Result<Probes> {
    let t = &mesh.topo;
    let addr = |k: usize, fam: Family| -> SocketAddr {
        let c = &mesh.clients[k];
        match fam {
            Family::V4 => SocketAddr::from((c.addr4, PROBE_PORT)),
            Family::V6 => SocketAddr::from((c.addr6, PROBE_PORT)),
        }
    };
    let configured = t.probe_flows();
    let n = configured.len() * families.members().len();
    // Probes carry their flow's index as a u16.
    if n > usize::from(u16::MAX) + 1 {
        bail!(
            "{n} probe flows ({} configured, {families}): at most 65536 fit the probe \
             format; list fewer [[probe]] flows or pick one family with --family",
            configured.len()
        );
    }
    let mut flows = Vec::new();
    let mut senders = Vec::new();
    for p in configured {
        let from = t.client_index(&p.from).expect("validated");
        let to = t.client_index(&p.to).expect("validated");
        for &fam in families.members() {
            let s = mesh.clients[from].ns.enter(|| probe::sender(fam))??;
            senders.push(s);
            flows.push(FlowSpec {
                from,
                to,
                rate: p.rate,
                dst: addr(to, fam),
            });
        }
    }
    let mut receivers = Vec::new();
    let mut dsts: Vec<(usize, Family)> = flows.iter().map(|f| (f.to, f.family())).collect();
    dsts.sort_unstable();
    dsts.dedup();
    for (k, fam) in dsts {
        let a = addr(k, fam);
        let s = mesh.clients[k].ns.enter(|| UdpSocket::bind(a))??;
        receivers.push((k, s));
    }
    // Time-exceeded errors come back to the sources: one raw ICMP or ICMPv6 listener
    // per source and family.
    let mut srcs: Vec<(usize, Family)> = flows.iter().map(|f| (f.from, f.family())).collect();
    srcs.sort_unstable();
    srcs.dedup();
    let mut icmp = Vec::new();
    for (k, fam) in srcs {
        icmp.push((fam, mesh.clients[k].ns.enter(|| probe::listener(fam))??));
    }
    Ok(Probes::start(flows, senders, receivers, icmp, t0)?)
}

/// A flow's name in reports: "c1→c2 v6".
pub fn flow_label(mesh: &Mesh, f: &FlowSpec) -> String {
    format!(
        "{}→{} {}",
        mesh.clients[f.from].name,
        mesh.clients[f.to].name,
        f.family()
    )
}

/// The node that owns `a` (its router address, or the gateway address of one of its
/// clients' access prefixes: a router's ICMP errors may come from either), by name;
/// else the address itself.
pub fn router_name(mesh: &Mesh, a: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    let node = (0..mesh.nodes.len())
        .find(|&i| {
            a == IpAddr::V4(crate::plan::node_v4(i)) || a == IpAddr::V6(crate::plan::node_v6(i))
        })
        .or_else(|| {
            mesh.clients
                .iter()
                .find(|c| {
                    a == IpAddr::V4(crate::plan::access_v4(c.prefix4).0)
                        || a == IpAddr::V6(crate::plan::access_v6(c.prefix6).0)
                })
                .map(|c| c.node)
        });
    node.map_or(a.to_string(), |i| mesh.nodes[i].name.clone())
}

/// Waits until the convergence check passes; returns the time it took.
pub fn wait_converged(
    mesh: &mut Mesh,
    timeout: Duration,
    poll: Duration,
    stop: &AtomicBool,
) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let (_, c) = mesh.check();
        if c.converged() {
            return Ok(t.elapsed());
        }
        if t.elapsed() > timeout || stop.load(Ordering::SeqCst) {
            let unreadable: Vec<String> = (0..mesh.nodes.len())
                .filter_map(|i| {
                    mesh.table_error(i)
                        .map(|e| format!("{}: tables unreadable: {e}", mesh.nodes[i].name))
                })
                .collect();
            let lost: Vec<String> = unreadable
                .into_iter()
                .chain(c.lost.iter().take(8).map(|(s, d, at, why)| {
                    format!(
                        "{} → {} lost at {}: {why}",
                        mesh.nodes[*s].name, d.addr, mesh.nodes[*at].name
                    )
                }))
                .collect();
            let logs: String = (0..mesh.nodes.len())
                .map(|i| {
                    let l = mesh.log(i);
                    let tail: Vec<&str> = l.lines().rev().take(5).collect();
                    format!(
                        "--- {} ---\n{}\n",
                        mesh.nodes[i].name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            bail!(
                "no convergence after {:.1} s: {} of {} destinations delivered, {} loops\n{}\n{}",
                t.elapsed().as_secs_f64(),
                c.delivered,
                c.expected,
                c.loops.len(),
                lost.join("\n"),
                logs
            );
        }
        std::thread::sleep(poll);
    }
}

struct Track {
    at_ns: u64,
    action: String,
    note: Option<String>,
    broke: bool,
    last_bad_ns: Option<u64>,
    restored_ns: Option<u64>,
    last_change_ns: Option<u64>,
    loop_polls: u64,
    first_failures: Vec<String>,
    last_failures: Vec<String>,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// Runs `timeline` (times relative to the start of the probes) on `mesh`.
pub fn run(
    mesh: &mut Mesh,
    timeline: &[Fault],
    cfg: &RunConfig,
    stop: &AtomicBool,
) -> Result<Report> {
    let initial = match cfg.converged_after {
        Some(t) => t,
        None => wait_converged(mesh, cfg.converge_timeout, cfg.poll, stop)?,
    };
    let end_ns = match cfg.duration {
        Some(d) => Some(ns(d)),
        None => timeline.last().map(|f| ns(f.at + cfg.tail)),
    };
    let t0 = Instant::now();
    let probes = start_probes(mesh, t0, cfg.families)?;
    let n = mesh.nodes.len();
    let flow_nodes: Vec<(usize, usize)> = probes
        .flows()
        .iter()
        .map(|f| (mesh.clients[f.from].node, mesh.clients[f.to].node))
        .collect();
    let mut unreachable: Vec<Vec<(u64, u64)>> = vec![Vec::new(); flow_nodes.len()];
    let mut unreachable_since: Vec<Option<u64>> = vec![None; flow_nodes.len()];
    let mut tracks: Vec<Track> = Vec::new();
    let mut next = 0;
    let mut static_due: Option<u64> = None;
    let mut last_fp = converge::fingerprint(&mesh.snapshot());
    let mut table_loop_polls = 0u64;
    let mut table_loops: Vec<TableLoop> = Vec::new();
    let mut last_loops: Vec<(usize, std::net::IpAddr, Vec<usize>)> = Vec::new();
    // (pass_ttl, drop_uturn) per node at the last reading.
    let mut ttl_last: Vec<Option<(u64, u64)>> = vec![None; n];
    let mut ttl_expired = 0u64;
    let mut ttl_at: Vec<(u64, String, u64)> = Vec::new();
    let mut uturns = 0u64;
    let mut uturn_at: Vec<(u64, String, u64)> = Vec::new();
    let mut next_second = 1_000_000_000u64;
    let mut link_last: Vec<(u64, u64, u64, u64)> = vec![(0, 0, 0, 0); mesh.links.len()];
    loop {
        let now = ns(t0.elapsed());
        if stop.load(Ordering::SeqCst) || end_ns.is_some_and(|e| now >= e) {
            break;
        }
        // Faults due now.
        while next < timeline.len() && ns(timeline[next].at) <= now {
            let f = &timeline[next];
            let at_ns = ns(t0.elapsed());
            let note = mesh.apply(&f.action)?;
            let action = describe(&mesh.topo, &f.action);
            if cfg.live != Live::Off {
                println!(
                    "[{:>6.1}s] fault: {action}{}",
                    at_ns as f64 / 1e9,
                    note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
                );
            }
            tracks.push(Track {
                at_ns,
                action,
                note,
                broke: false,
                last_bad_ns: None,
                restored_ns: None,
                last_change_ns: None,
                loop_polls: 0,
                first_failures: Vec::new(),
                last_failures: Vec::new(),
            });
            if matches!(mesh.controller, Controller::Static) {
                static_due = Some(at_ns + ns(cfg.static_delay));
            }
            next += 1;
        }
        if static_due.is_some_and(|d| now >= d) {
            mesh.static_recompute()?;
            static_due = None;
        }
        // Forwarding state.
        let (snap, c) = mesh.check();
        let now = ns(t0.elapsed());
        let fp = converge::fingerprint(&snap);
        if !c.loops.is_empty() {
            table_loop_polls += 1;
        }
        for (src, d, path) in &c.loops {
            let key = (*src, d.addr, path.clone());
            if !last_loops.contains(&key) && table_loops.len() < 100 {
                table_loops.push(TableLoop {
                    at_ms: now as f64 / 1e6,
                    from: mesh.nodes[*src].name.clone(),
                    dest: d.addr.to_string(),
                    path: path.iter().map(|&i| mesh.nodes[i].name.clone()).collect(),
                });
            }
        }
        last_loops = c
            .loops
            .iter()
            .map(|(s, d, p)| (*s, d.addr, p.clone()))
            .collect();
        if let Some(tr) = tracks.last_mut() {
            if fp != last_fp {
                tr.last_change_ns = Some(now - tr.at_ns);
            }
            if !c.loops.is_empty() {
                tr.loop_polls += 1;
            }
            if c.converged() {
                if tr.restored_ns.is_none() {
                    tr.restored_ns = Some(tr.last_bad_ns.map_or(0, |_| now - tr.at_ns));
                }
            } else {
                if !tr.broke {
                    tr.first_failures = describe_check(mesh, &c);
                } else {
                    tr.last_failures = describe_check(mesh, &c);
                }
                tr.broke = true;
                tr.last_bad_ns = Some(now);
                tr.restored_ns = None;
            }
        }
        last_fp = fp;
        // Which flows have a path in the true topology.
        let truth = mesh.truth();
        for (k, &(a, b)) in flow_nodes.iter().enumerate() {
            let ok = truth.reachable(a)[b];
            match (ok, unreachable_since[k]) {
                (false, None) => unreachable_since[k] = Some(now),
                (true, Some(s)) => {
                    unreachable[k].push((s, now));
                    unreachable_since[k] = None;
                }
                _ => {}
            }
        }
        if now >= next_second {
            next_second += 1_000_000_000;
            for (i, last) in ttl_last.iter_mut().enumerate() {
                let cur = loop_counters(mesh, i);
                if let (Some(c), Some(l)) = (cur, *last) {
                    let (t, u) = (grew(c.0, l.0), grew(c.1, l.1));
                    ttl_expired += t;
                    uturns += u;
                    if t > 0 {
                        ttl_at.push((now / 1_000_000_000, mesh.nodes[i].name.clone(), t));
                    }
                    if u > 0 {
                        uturn_at.push((now / 1_000_000_000, mesh.nodes[i].name.clone(), u));
                    }
                }
                *last = cur.or(*last);
            }
            if cfg.live != Live::Off {
                print_live(mesh, &probes, &snap, now, cfg.live, &mut link_last);
            }
        }
        std::thread::sleep(cfg.poll);
    }
    let end = ns(t0.elapsed());
    for (k, s) in unreachable_since.iter().enumerate() {
        if let Some(s) = s {
            unreachable[k].push((*s, end));
        }
    }
    let specs = probes.flows().to_vec();
    let recs = probes.stop(Duration::from_millis(500));
    for (i, last) in ttl_last.iter().enumerate() {
        if let (Some(c), Some(l)) = (loop_counters(mesh, i), *last) {
            let (t, u) = (grew(c.0, l.0), grew(c.1, l.1));
            ttl_expired += t;
            uturns += u;
            if t > 0 {
                ttl_at.push((end / 1_000_000_000, mesh.nodes[i].name.clone(), t));
            }
            if u > 0 {
                uturn_at.push((end / 1_000_000_000, mesh.nodes[i].name.clone(), u));
            }
        }
    }
    // Fault windows: from just before the fault to its restore (or the next fault).
    let mut windows = Vec::new();
    for (i, t) in tracks.iter().enumerate() {
        let next_at = tracks.get(i + 1).map_or(end, |x| x.at_ns);
        let stop_at = t.restored_ns.map_or(next_at, |r| t.at_ns + r);
        windows.push((t.at_ns.saturating_sub(2_000_000), stop_at.max(t.at_ns)));
    }
    let max_hops = n as u8;
    let mut flows = Vec::new();
    let (mut sent, mut got, mut osent, mut ogot, mut undeliverable, mut looped) =
        (0, 0, 0, 0, 0, 0);
    let mut fault_outage: Vec<Option<f64>> = vec![None; tracks.len()];
    let mut fault_lost: Vec<Vec<(String, u64)>> = vec![Vec::new(); tracks.len()];
    let mut lost_outside: Vec<(String, f64)> = Vec::new();
    for (k, (spec, r)) in specs.iter().zip(&recs).enumerate() {
        let label = flow_label(mesh, spec);
        let (s, g) = probe::delivery(r, &[], false);
        sent += s;
        got += g;
        let mut excl = windows.clone();
        excl.extend(unreachable[k].iter().copied());
        let (os, og) = probe::delivery(r, &excl, false);
        for (seq, &sent_ns) in r.sent.iter().enumerate() {
            if lost_outside.len() >= 50 {
                break;
            }
            let within = excl.iter().any(|&(a, b)| sent_ns >= a && sent_ns < b);
            if !within && r.recv.get(seq).copied().flatten().is_none() {
                lost_outside.push((label.clone(), sent_ns as f64 / 1e6));
            }
        }
        osent += os;
        ogot += og;
        undeliverable += probe::delivery(r, &unreachable[k], true).0;
        let lp = probe::looped(r, max_hops);
        looped += lp;
        let last_ns = r.sent.last().copied().unwrap_or(0);
        for (i, t) in tracks.iter().enumerate() {
            let w = (t.at_ns, t.at_ns + t.restored_ns.unwrap_or(0) + 500_000_000);
            let (s, g) = probe::delivery(r, &[w], true);
            fault_lost[i].push((label.clone(), s - g));
        }
        let period = 1_000_000_000 / u64::from(spec.rate.max(1));
        let mut outages = Vec::new();
        for o in probe::outages(r, cfg.min_outage) {
            let o_end = o.end_ns.unwrap_or(last_ns);
            let deliverable = !unreachable[k]
                .iter()
                .any(|&(a, b)| o.start_ns < b && a < o_end);
            if deliverable {
                for (i, t) in tracks.iter().enumerate() {
                    let until = t.at_ns + t.restored_ns.unwrap_or(0) + 500_000_000;
                    if o.start_ns + 2 * period >= t.at_ns && o.start_ns <= until {
                        let len = o.len_ns(last_ns) as f64 / 1e6;
                        let e = fault_outage[i].get_or_insert(0.0);
                        *e = e.max(len);
                    }
                }
            }
            outages.push(OutageReport {
                start_ms: o.start_ns as f64 / 1e6,
                len_ms: o.len_ns(last_ns) as f64 / 1e6,
                lost: o.lost,
                expected_deliverable: deliverable,
            });
        }
        flows.push(FlowReport {
            from: mesh.clients[spec.from].name.clone(),
            to: mesh.clients[spec.to].name.clone(),
            family: spec.family(),
            rate: spec.rate,
            sent: s,
            delivered: g,
            dups: r.dups,
            send_errors: r.send_errors,
            looped: lp,
            looped_at_ms: r
                .recv
                .iter()
                .flatten()
                .filter(|x| x.hops().is_some_and(|h| h > max_hops))
                .map(|x| x.ns as f64 / 1e6)
                .collect(),
            max_hops: r.recv.iter().flatten().filter_map(|x| x.hops()).max(),
            outages,
        });
    }
    let mut expired_probes = Vec::new();
    for (spec, r) in specs.iter().zip(&recs) {
        for e in &r.expired {
            let fault = tracks.iter().rev().find(|t| t.at_ns <= e.sent_ns);
            expired_probes.push(ExpiredProbe {
                flow: flow_label(mesh, spec),
                seq: e.seq,
                sent_ms: e.sent_ns as f64 / 1e6,
                router: router_name(mesh, e.router),
                after_fault: fault.map(|t| t.action.clone()),
                since_fault_ms: fault.map(|t| (e.sent_ns - t.at_ns) as f64 / 1e6),
            });
        }
    }
    expired_probes.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    let faults: Vec<FaultReport> = tracks
        .iter()
        .zip(&fault_outage)
        .zip(fault_lost)
        .map(|((t, o), lost)| FaultReport {
            at_ms: t.at_ns as f64 / 1e6,
            action: t.action.clone(),
            note: t.note.clone(),
            broke: t.broke,
            restored_ms: t.restored_ns.map(|x| x as f64 / 1e6),
            settled_ms: t.last_change_ns.map(|x| x as f64 / 1e6),
            table_loop_polls: t.loop_polls,
            reroute_ms: if t.broke { Some(o.unwrap_or(0.0)) } else { *o },
            lost_per_flow: lost,
            first_failures: t.first_failures.clone(),
            last_failures: if t.last_failures == t.first_failures {
                Vec::new()
            } else {
                t.last_failures.clone()
            },
        })
        .collect();
    let restore: Vec<f64> = faults
        .iter()
        .filter(|f| f.broke)
        .filter_map(|f| f.restored_ms)
        .collect();
    let settle: Vec<f64> = faults.iter().filter_map(|f| f.settled_ms).collect();
    let reroute: Vec<f64> = faults.iter().filter_map(|f| f.reroute_ms).collect();
    let reactions: Vec<f64> = mesh
        .carrier_reactions()
        .iter()
        .filter(|r| !r.up)
        .map(|r| r.written.duration_since(r.seen).as_secs_f64() * 1e3)
        .collect();
    Ok(Report {
        topology: mesh.topo.name.clone(),
        controller: match mesh.controller {
            Controller::Static => "static (testbed oracle)".into(),
            Controller::Daemon { .. } => "dcmesh daemon".into(),
        },
        nodes: n,
        links: mesh.links.len(),
        clients: mesh.clients.len(),
        initial_convergence_ms: initial.as_secs_f64() * 1e3,
        duration_s: end as f64 / 1e9,
        poll_ms: cfg.poll.as_secs_f64() * 1e3,
        min_outage_probes: cfg.min_outage,
        probe_families: cfg.families,
        probe_rate_total: specs.iter().map(|f| u64::from(f.rate)).sum(),
        flows,
        faults,
        delivery: Delivery::new(sent, got),
        delivery_outside_windows: Delivery::new(osent, ogot),
        lost_outside_windows: lost_outside,
        undeliverable_by_topology: undeliverable,
        ttl_expired,
        ttl_expired_at: ttl_at,
        uturns_dropped: uturns,
        uturns_dropped_at: uturn_at,
        probes_looped: looped,
        table_loop_polls,
        expired_probes,
        table_loops,
        restore_ms: Distribution::of(&restore),
        settle_ms: Distribution::of(&settle),
        reroute_ms: Distribution::of(&reroute),
        carrier_reaction_ms: Distribution::of(&reactions),
    })
}

/// Node `i`'s (pass_ttl, drop_uturn) packet counters, `None` if unreadable (node off).
fn loop_counters(mesh: &mut Mesh, i: usize) -> Option<(u64, u64)> {
    mesh.counters(i).map(|c| {
        (
            c.get(Counter::PassTtl).packets,
            c.get(Counter::DropUturn).packets,
        )
    })
}

/// How much a counter grew since `last` (counters restart from zero when a node reboots).
fn grew(cur: u64, last: u64) -> u64 {
    if cur >= last {
        cur - last
    } else {
        cur
    }
}

/// The first few undelivered (source, destination) pairs of a failed check.
fn describe_check(mesh: &Mesh, c: &converge::Check) -> Vec<String> {
    let mut v: Vec<String> = c
        .lost
        .iter()
        .take(3)
        .map(|(s, d, at, why)| {
            format!(
                "{} → {} lost at {}: {why}",
                mesh.nodes[*s].name, d.addr, mesh.nodes[*at].name
            )
        })
        .collect();
    if let Some((s, d, path)) = c.loops.first() {
        let p: Vec<&str> = path.iter().map(|&i| mesh.nodes[i].name.as_str()).collect();
        v.push(format!(
            "{} → {} loops: {}",
            mesh.nodes[*s].name,
            d.addr,
            p.join(" ")
        ));
    }
    if c.lost.len() > 3 {
        v.push(format!("... {} more", c.lost.len() - 3));
    }
    v
}

/// The nodes a flow's packets cross now, by the tables.
pub fn path_of(
    mesh: &Mesh,
    snap: &Snapshot,
    from_client: usize,
    to_client: usize,
    family: Family,
) -> String {
    let d = mesh
        .dests()
        .into_iter()
        .find(|d| d.client == Some(to_client) && d.addr.is_ipv4() == (family == Family::V4));
    let Some(d) = d else { return "-".into() };
    match converge::walk(snap, &mesh.truth(), mesh.clients[from_client].node, d) {
        Outcome::Delivered { path } => path
            .iter()
            .map(|&i| mesh.nodes[i].name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        Outcome::Loop { path } => format!(
            "LOOP {}",
            path.iter()
                .map(|&i| mesh.nodes[i].name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Outcome::Lost { at, why } => format!("lost at {}: {why}", mesh.nodes[at].name),
    }
}

fn print_live(
    mesh: &Mesh,
    probes: &Probes,
    snap: &Snapshot,
    now: u64,
    live: Live,
    link_last: &mut [(u64, u64, u64, u64)],
) {
    let from = now.saturating_sub(1_500_000_000);
    let to = now.saturating_sub(500_000_000);
    let mut total = (0, 0);
    let mut lines = Vec::new();
    for (k, f) in probes.flows().iter().enumerate() {
        let w = probes.with(k, |r| probe::window(r, from, to));
        total.0 += w.sent;
        total.1 += w.delivered;
        if live == Live::Full {
            lines.push(format!(
                "  {}: {}/{} delivered, p50 {}, {} hops, path {}",
                flow_label(mesh, f),
                w.delivered,
                w.sent,
                w.latency_p50_ns
                    .map_or("-".into(), |x| format!("{:.2} ms", x as f64 / 1e6)),
                w.hops.map_or("-".into(), |h| h.to_string()),
                path_of(mesh, snap, f.from, f.to, f.family())
            ));
        }
    }
    let mut link_line = Vec::new();
    for (l, last) in link_last.iter_mut().enumerate() {
        let Ok((ab, ba)) = mesh.link_stats(l) else {
            continue;
        };
        let cur = (ab.passed, ab.dropped, ba.passed, ba.dropped);
        let d = (
            cur.0 - last.0.min(cur.0),
            cur.1 - last.1.min(cur.1),
            cur.2 - last.2.min(cur.2),
            cur.3 - last.3.min(cur.3),
        );
        *last = cur;
        if live == Live::Full {
            let k = &mesh.links[l];
            let state = if !k.carrier {
                " DOWN"
            } else if k.silent {
                " SILENT"
            } else if k.cut {
                " CUT"
            } else {
                ""
            };
            link_line.push(format!(
                "{}-{} {}/{}{}{}",
                mesh.nodes[k.a].name,
                mesh.nodes[k.b].name,
                d.0,
                d.2,
                if d.1 + d.3 > 0 {
                    format!(" ({} lost)", d.1 + d.3)
                } else {
                    String::new()
                },
                state
            ));
        }
    }
    let pct = if total.0 > 0 {
        format!("{:.2} %", total.1 as f64 * 100.0 / total.0 as f64)
    } else {
        "-".into()
    };
    println!(
        "[{:>6.1}s] probes delivered {pct} ({} of {}) in the last second",
        now as f64 / 1e9,
        total.1,
        total.0
    );
    for l in lines {
        println!("{l}");
    }
    if !link_line.is_empty() {
        println!("  link frames/s a→b/b→a: {}", link_line.join(" | "));
    }
}
