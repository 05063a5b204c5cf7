//! bench-lanes: lane-0 one-way delay through a 100 Mbit/s bottleneck under a best-effort
//! flood, for three kinds of queueing on the router's egress, in one run:
//!
//! 1. `fifo`: one HTB leaf with a 1000-packet FIFO (what a link gets by default);
//! 2. `htb-u32`: hand-made HTB strict priority, lane-0 traffic picked by a `tc filter u32`;
//! 3. `dcmesh-lanes`: the lanes TC program and the HTB tree the loader builds.
//!
//! Topology a — r — b in namespaces this run creates; r's egress to b is the bottleneck
//! (HTB root rate = ceil = the link rate, GSO/TSO/GRO off everywhere). a floods b with UDP
//! above the link rate and sends lane-0 probes at 1 kHz stamped with CLOCK_REALTIME; b takes
//! the kernel's receive timestamp (SO_TIMESTAMPNS, the same machine clock) and computes the
//! one-way delay. Writes bench/results/lanes-<UTC date>.md, lanes-latest.md and histogram
//! pictures. Run as root. Every flood is bounded in time and packet count and stays inside
//! the namespaces it creates.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dcmesh_loader::lanes::{self, class_stats, ClassStats, LaneCounters};
use dcmesh_testbed::{netns::veth, Netns};
use dcmesh_tsn::{
    config::{LaneConfig, LanesConfig, OnClosed, PortRange, Proto, RuleConfig},
    frame_ns, Action,
};

const A_IP: &str = "10.81.1.1";
const RA_IP: &str = "10.81.1.254";
const RB_IP: &str = "10.81.2.254";
const B_IP: &str = "10.81.2.1";
const PROBE_PORT: u16 = 7000;
const FLOOD_PORT: u16 = 9000;
/// Largest frame (skb->len) and the Ethernet bytes HTB adds per frame.
const MAX_FRAME: u64 = 1514;
const OVERHEAD: u64 = 24;

#[derive(Parser, Debug)]
#[command(about = "FIFO vs hand-made HTB priority vs dcmesh lanes: lane-0 one-way delay")]
struct Args {
    /// Bottleneck rate in Mbit/s.
    #[arg(long, default_value_t = 100)]
    rate_mbit: u64,
    /// Best-effort flood rate in Mbit/s (UDP payload bytes on the wire).
    #[arg(long, default_value_t = 300)]
    flood_mbit: u64,
    /// Flood datagram payload in bytes.
    #[arg(long, default_value_t = 1400)]
    flood_payload: usize,
    /// Lane-0 probes per case, sent at 1 kHz.
    #[arg(long, default_value_t = 5000)]
    probes: u32,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Leave the generator threads where the scheduler puts them. By default the flood
    /// (sender and sink) runs on one CPU and the probes (sender and receiver) on another,
    /// so a probe never waits for the flood's threads or queues behind flood frames in a
    /// CPU's receive backlog before the bottleneck: on the 2-core VM the generators share
    /// the router's CPUs, which a real router's neighbours do not.
    #[arg(long)]
    no_pin: bool,
}

/// CPUs for (the flood's threads, the probes' threads), or `None` to leave them be.
fn placement(args: &Args) -> Option<(usize, usize)> {
    if args.no_pin {
        return None;
    }
    // SAFETY: zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        set
    };
    // SAFETY: CPU_ISSET reads the set within its size.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .collect();
    (cpus.len() >= 2).then(|| (cpus[0], cpus[1]))
}

/// Pins the calling thread to `cpu` (no-op for `None`).
fn pin(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: a zeroed cpu_set_t with one CPU set, passed with its size; pid 0 is this thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        log::warn!(
            "cannot pin a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Fifo,
    HtbU32,
    Lanes,
}

impl Case {
    const ALL: [Case; 3] = [Case::Fifo, Case::HtbU32, Case::Lanes];
    fn name(self) -> &'static str {
        match self {
            Case::Fifo => "fifo",
            Case::HtbU32 => "htb-u32",
            Case::Lanes => "dcmesh-lanes",
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Case::Fifo => "one HTB leaf, 1000-packet FIFO",
            Case::HtbU32 => "HTB strict priority, probes to a prio-0 leaf by `tc filter ... u32`",
            Case::Lanes => "dcmesh lanes: TC program + loader-built HTB (8 leaves)",
        }
    }
}

/// What one case measured.
struct Outcome {
    case: Case,
    /// One-way delays in ns, in probe order.
    delays: Vec<i64>,
    probes_sent: u32,
    flood_sent: u64,
    flood_received: u64,
    flood_secs: f64,
    flood_payload: usize,
    mode: Option<String>,
    counters: Option<LaneCounters>,
    classes: Vec<ClassStats>,
}

fn main() -> Result<()> {
    env_logger::init();
    let args = Args::parse();
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench-lanes builds namespaces, qdiscs and eBPF programs; run it as root");
    }
    dcmesh_testbed::netns::clear_stale()?;
    let load_at_start = loadavg();
    let topo = Topo::new()?;
    let mut outcomes = Vec::new();
    for case in Case::ALL {
        eprintln!("case {}: {}", case.name(), case.describe());
        outcomes.push(run_case(&topo, case, &args)?);
    }
    let report = Report::new(&args, outcomes, load_at_start);
    report.write(&args.out)?;
    print!("{}", report.summary());
    Ok(())
}

/// The 1, 5 and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// a — r — b with the bottleneck on r's `rb`.
struct Topo {
    a: Netns,
    r: Netns,
    b: Netns,
}

impl Topo {
    fn new() -> Result<Self> {
        let (a, r, b) = (
            Netns::create("la")?,
            Netns::create("lr")?,
            Netns::create("lb")?,
        );
        veth(&a, "a0", &r, "ra")?;
        veth(&r, "rb", &b, "b0")?;
        a.ip(&["addr", "add", &format!("{A_IP}/24"), "dev", "a0"])?;
        r.ip(&["addr", "add", &format!("{RA_IP}/24"), "dev", "ra"])?;
        r.ip(&["addr", "add", &format!("{RB_IP}/24"), "dev", "rb"])?;
        b.ip(&["addr", "add", &format!("{B_IP}/24"), "dev", "b0"])?;
        a.ip(&["route", "add", "default", "via", RA_IP])?;
        b.ip(&["route", "add", "default", "via", RB_IP])?;
        r.sysctl("net.ipv4.ip_forward", "1")?;
        for (ns, dev) in [(&a, "a0"), (&r, "ra"), (&r, "rb"), (&b, "b0")] {
            ns.exec(
                "ethtool",
                &["-K", dev, "gso", "off", "tso", "off", "gro", "off"],
            )?;
        }
        let mac = |ns: &Netns, dev: &str| -> Result<String> {
            let info = ns.enter(|| dcmesh_loader::interface_info(dev))??;
            Ok(dcmesh_loader::format_mac(&info.mac))
        };
        // Static neighbours: no ARP may be stuck behind the flood.
        let neigh = |ns: &Netns, ip: &str, mac: String, dev: &str| {
            ns.ip(&[
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])
        };
        neigh(&a, RA_IP, mac(&r, "ra")?, "a0")?;
        neigh(&r, A_IP, mac(&a, "a0")?, "ra")?;
        neigh(&r, B_IP, mac(&b, "b0")?, "rb")?;
        neigh(&b, RB_IP, mac(&r, "rb")?, "b0")?;
        Ok(Self { a, r, b })
    }
}

fn tc(ns: &Netns, args: &[&str]) -> Result<()> {
    ns.exec("tc", args)?;
    Ok(())
}

/// The hand-made set-ups an admin would type; the same root as the lanes tree.
fn handmade_queues(r: &Netns, case: Case, rate: &str) -> Result<()> {
    let q = (MAX_FRAME + OVERHEAD).to_string();
    let ov = OVERHEAD.to_string();
    let root = [
        "qdisc", "replace", "dev", "rb", "root", "handle", "1:", "htb", "default", "11",
    ];
    tc(r, &root)?;
    tc(
        r,
        &[
            "class", "replace", "dev", "rb", "parent", "1:", "classid", "1:1", "htb", "rate", rate,
            "ceil", rate, "quantum", &q, "overhead", &ov,
        ],
    )?;
    match case {
        Case::Fifo => {
            tc(
                r,
                &[
                    "class", "replace", "dev", "rb", "parent", "1:1", "classid", "1:11", "htb",
                    "rate", rate, "ceil", rate, "quantum", &q, "overhead", &ov,
                ],
            )?;
            tc(
                r,
                &[
                    "qdisc", "replace", "dev", "rb", "parent", "1:11", "pfifo", "limit", "1000",
                ],
            )?;
        }
        Case::HtbU32 => {
            for (class, prio) in [("1:10", "0"), ("1:11", "7")] {
                tc(
                    r,
                    &[
                        "class", "replace", "dev", "rb", "parent", "1:1", "classid", class, "htb",
                        "rate", "100kbit", "ceil", rate, "prio", prio, "quantum", &q, "overhead",
                        &ov,
                    ],
                )?;
                tc(
                    r,
                    &[
                        "qdisc", "replace", "dev", "rb", "parent", class, "pfifo", "limit", "1000",
                    ],
                )?;
            }
            let port = PROBE_PORT.to_string();
            tc(
                r,
                &[
                    "filter", "add", "dev", "rb", "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", "dport", &port, "0xffff", "flowid", "1:10",
                ],
            )?;
        }
        Case::Lanes => unreachable!("the loader builds the lanes tree"),
    }
    Ok(())
}

fn lanes_config(rate_bps: u64) -> LanesConfig {
    let mut cfg = LanesConfig::new(rate_bps);
    cfg.frame_overhead = OVERHEAD as u32;
    cfg.max_frame = MAX_FRAME as u32;
    cfg.rules.push(RuleConfig {
        name: Some("lane-0 probes".into()),
        lane: 0,
        proto: Some(Proto::Name("udp".into())),
        dst_ports: Some(PortRange::One(PROBE_PORT)),
        ..RuleConfig::default()
    });
    cfg.lanes.push(LaneConfig {
        lane: 7,
        on_closed: OnClosed::Drop,
        queue_limit: Some(1000),
    });
    cfg
}

fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// A UDP socket that records the kernel's receive time of each datagram.
fn timestamping(sock: &UdpSocket) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram and its kernel receive time (CLOCK_REALTIME ns), or `None` on timeout.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, i64)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: zeroed msghdr pointing at live buffers; the kernel writes within their sizes,
    // and the control messages are walked with the CMSG_* accessors.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return None;
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some((n as usize, ts.tv_sec * 1_000_000_000 + ts.tv_nsec));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Some((n as usize, realtime_ns()))
    }
}

fn run_case(topo: &Topo, case: Case, args: &Args) -> Result<Outcome> {
    let rate_bps = args.rate_mbit * 1_000_000;
    let rate = format!("{rate_bps}bit");
    let lanes_setup = match case {
        Case::Lanes => Some(
            topo.r
                .enter(|| lanes::setup("rb", &lanes_config(rate_bps)))??,
        ),
        _ => {
            handmade_queues(&topo.r, case, &rate)?;
            None
        }
    };
    let mode = lanes_setup.as_ref().map(|s| s.mode.to_string());
    let before = lanes_setup
        .as_ref()
        .map(|s| s.lanes.counters())
        .transpose()?;

    let (probe_rx, sink) = topo.b.enter(|| -> Result<_> {
        let p = UdpSocket::bind((B_IP, PROBE_PORT))?;
        timestamping(&p)?;
        p.set_read_timeout(Some(Duration::from_millis(200)))?;
        let s = UdpSocket::bind((B_IP, FLOOD_PORT))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok((p, s))
    })??;
    let (probe_tx, flood_tx) = topo.a.enter(|| -> Result<_> {
        Ok((
            UdpSocket::bind((A_IP, PROBE_PORT + 1))?,
            UdpSocket::bind((A_IP, FLOOD_PORT + 1))?,
        ))
    })??;
    let probe_dst: SocketAddr = format!("{B_IP}:{PROBE_PORT}").parse()?;
    let flood_dst: SocketAddr = format!("{B_IP}:{FLOOD_PORT}").parse()?;

    // Flood: paced to the asked rate; ends when told, and in any case after this long or
    // this many datagrams.
    let wire_bits = ((args.flood_payload + 28 + 14) * 8) as f64;
    let flood_pps = (args.flood_mbit * 1_000_000) as f64 / wire_bits;
    let warmup = Duration::from_millis(500);
    let flood_max_time =
        warmup + Duration::from_millis(u64::from(args.probes)) + Duration::from_secs(3);
    let flood_max_packets = (flood_pps * flood_max_time.as_secs_f64()) as u64 + 1;

    let stop_flood = AtomicBool::new(false);
    let stop_rx = AtomicBool::new(false);
    let cpus = placement(args);
    let (flood_cpu, probe_cpu) = (cpus.map(|c| c.0), cpus.map(|c| c.1));
    let (delays, probes_sent, flood_sent, flood_received, flood_secs) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            pin(probe_cpu);
            let mut buf = [0u8; 256];
            let mut got: Vec<(u32, i64)> = Vec::new();
            loop {
                match recv_stamped(&probe_rx, &mut buf) {
                    Some((n, at)) if n >= 12 => {
                        let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                        let sent = i64::from_be_bytes(buf[4..12].try_into().unwrap());
                        got.push((seq, at - sent));
                    }
                    Some(_) => {}
                    None if stop_rx.load(Ordering::Relaxed) => break,
                    None => {}
                }
            }
            got.sort_by_key(|(seq, _)| *seq);
            got.into_iter().map(|(_, d)| d).collect::<Vec<i64>>()
        });
        let sink = s.spawn(|| {
            pin(flood_cpu);
            let mut buf = [0u8; 2048];
            let (mut n, mut first, mut last) = (0u64, None, Instant::now());
            loop {
                match sink.recv(&mut buf) {
                    Ok(_) => {
                        n += 1;
                        last = Instant::now();
                        first.get_or_insert(last);
                    }
                    Err(_) if stop_rx.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            let secs = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
            (n, secs)
        });
        let flood = s.spawn(|| {
            pin(flood_cpu);
            let payload = vec![0xabu8; args.flood_payload];
            let start = Instant::now();
            let mut sent = 0u64;
            while !stop_flood.load(Ordering::Relaxed)
                && sent < flood_max_packets
                && start.elapsed() < flood_max_time
            {
                let due = (start.elapsed().as_secs_f64() * flood_pps) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                // Small bursts: a burst queues ahead of the probe in the CPU's receive
                // backlog before the bottleneck, which no qdisc can fix.
                for _ in 0..(due - sent).min(4) {
                    if flood_tx.send_to(&payload, flood_dst).is_ok() {
                        sent += 1;
                    }
                }
            }
            sent
        });
        std::thread::sleep(warmup);
        // Probes at 1 kHz on absolute deadlines; each carries its sequence number and send
        // time. The flood outlives them (a flood ending early would flatter every case).
        let sent = s
            .spawn(|| {
                pin(probe_cpu);
                let start = Instant::now();
                let mut sent = 0u32;
                let mut payload = [0u8; 64];
                for seq in 0..args.probes {
                    let due = start + Duration::from_millis(u64::from(seq));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    payload[..4].copy_from_slice(&seq.to_be_bytes());
                    payload[4..12].copy_from_slice(&realtime_ns().to_be_bytes());
                    if probe_tx.send_to(&payload, probe_dst).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
            .join()
            .expect("probe sender");
        std::thread::sleep(Duration::from_millis(300));
        stop_flood.store(true, Ordering::Relaxed);
        let flood_sent = flood.join().expect("flood thread");
        // Let the queue drain (a full FIFO holds ~120 ms), then stop the receivers.
        std::thread::sleep(Duration::from_millis(500));
        stop_rx.store(true, Ordering::Relaxed);
        let delays = rx.join().expect("probe receiver");
        let (flood_received, flood_secs) = sink.join().expect("sink");
        (delays, sent, flood_sent, flood_received, flood_secs)
    });

    let counters = match (&lanes_setup, before) {
        (Some(s), Some(b)) => Some(s.lanes.counters()?.since(&b)),
        _ => None,
    };
    let classes = topo.r.enter(|| class_stats("rb"))??;
    drop(lanes_setup);
    topo.r.enter(|| lanes::remove_queues("rb"))??;
    Ok(Outcome {
        case,
        delays,
        probes_sent,
        flood_sent,
        flood_received,
        flood_secs,
        flood_payload: args.flood_payload,
        mode,
        counters,
        classes,
    })
}

/// Delay statistics of one case, in ns.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    received: usize,
    p50: i64,
    p99: i64,
    p999: i64,
    max: i64,
    /// Mean |d_i − d_{i−1}| over consecutive received probes (RFC 3550 style, unsmoothed).
    jitter: f64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    // In tenths of a percent, integer arithmetic: 99.9 % of 1000 is rank 999 exactly.
    let tenths = (p * 10.0).round() as usize;
    let rank = (tenths * sorted.len()).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stats(delays: &[i64]) -> Stats {
    let mut s = delays.to_vec();
    s.sort_unstable();
    let jitter = if delays.len() > 1 {
        delays
            .windows(2)
            .map(|w| (w[1] - w[0]).abs() as f64)
            .sum::<f64>()
            / (delays.len() - 1) as f64
    } else {
        0.0
    };
    Stats {
        received: s.len(),
        p50: percentile(&s, 50.0),
        p99: percentile(&s, 99.0),
        p999: percentile(&s, 99.9),
        max: s.last().copied().unwrap_or(0),
        jitter,
    }
}

fn us(ns: i64) -> String {
    if ns.abs() >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

struct Report {
    date: String,
    rate_mbit: u64,
    flood_mbit: u64,
    probes: u32,
    outcomes: Vec<(Outcome, Stats)>,
    /// The delay target for lane 0: one maximum frame at the link rate plus 50 µs, in ns.
    bound_ns: i64,
    /// Where the generator threads ran (flood, probes), `None`: unpinned.
    cpus: Option<(usize, usize)>,
    /// `/proc/loadavg` when the run started: other work on the machine skews the delays.
    load_at_start: String,
}

impl Report {
    fn new(args: &Args, outcomes: Vec<Outcome>, load_at_start: String) -> Self {
        let bound_ns = frame_ns(MAX_FRAME + OVERHEAD, args.rate_mbit * 1_000_000) as i64 + 50_000;
        Self {
            date: dcmesh_bench::utc_today(),
            rate_mbit: args.rate_mbit,
            flood_mbit: args.flood_mbit,
            probes: args.probes,
            outcomes: outcomes
                .into_iter()
                .map(|o| {
                    let s = stats(&o.delays);
                    (o, s)
                })
                .collect(),
            bound_ns,
            cpus: placement(args),
            load_at_start,
        }
    }

    fn get(&self, case: Case) -> Option<&(Outcome, Stats)> {
        self.outcomes.iter().find(|(o, _)| o.case == case)
    }

    /// (name, verdict, detail) for each target.
    fn targets(&self) -> Vec<(String, bool, String)> {
        let (Some((_, fifo)), Some((lo, lanes)), Some((_, htb))) = (
            self.get(Case::Fifo),
            self.get(Case::Lanes),
            self.get(Case::HtbU32),
        ) else {
            return vec![];
        };
        let lost = lo.probes_sent as usize - lanes.received;
        let ratio = fifo.p99 as f64 / lanes.p99.max(1) as f64;
        vec![
            (
                "lane-0 p99 at least 10× lower than FIFO".into(),
                ratio >= 10.0 && lanes.received > 0,
                format!(
                    "FIFO p99 {} / lanes p99 {} = {ratio:.0}×",
                    us(fifo.p99),
                    us(lanes.p99)
                ),
            ),
            (
                "lane-0 p99 ≤ one max frame at link rate + 50 µs".into(),
                lanes.p99 <= self.bound_ns && lanes.received > 0,
                format!(
                    "lanes p99 {} ≤ {} ({} B at {} Mbit/s = {} + 50 µs)",
                    us(lanes.p99),
                    us(self.bound_ns),
                    MAX_FRAME + OVERHEAD,
                    self.rate_mbit,
                    us(self.bound_ns - 50_000)
                ),
            ),
            (
                "no lane-0 probe lost".into(),
                lost == 0,
                format!("{lost} of {} lost", lo.probes_sent),
            ),
            (
                "(reference) lanes p99 vs hand-made HTB+u32 p99".into(),
                lanes.p99 <= htb.p99 + htb.p99 / 10,
                format!(
                    "lanes {} vs HTB+u32 {} (PASS within +10%)",
                    us(lanes.p99),
                    us(htb.p99)
                ),
            ),
        ]
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        for (o, st) in &self.outcomes {
            s += &format!(
                "{:<13} p50 {:>10} p99 {:>10} p99.9 {:>10} max {:>10} jitter {:>10} lost {}\n",
                o.case.name(),
                us(st.p50),
                us(st.p99),
                us(st.p999),
                us(st.max),
                us(st.jitter as i64),
                o.probes_sent as usize - st.received
            );
        }
        for (name, ok, detail) in self.targets() {
            s += &format!("{}: {name}: {detail}\n", if ok { "PASS" } else { "FAIL" });
        }
        s
    }

    fn markdown(&self, picture: &str, picture_note: &str) -> String {
        let mut m = format!("# Lanes benchmark, {} (UTC)\n\n", self.date);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        m += &format!(
            "Topology a — r — b (network namespaces), r's egress to b under HTB root rate = ceil = \
             {} Mbit/s (overhead {OVERHEAD} B/frame), GSO/TSO/GRO off. a sends a {} Mbit/s UDP \
             flood ({}-byte datagrams) to b and {} lane-0 probes (64-byte UDP, dport {PROBE_PORT}) \
             at 1 kHz, each stamped with CLOCK_REALTIME at send; b takes the kernel receive \
             timestamp (SO_TIMESTAMPNS, same machine clock) and computes the one-way delay. All \
             three cases in one run, same load. Kernel {}; {} CPUs; {}; load average at start \
             {} (at the end {}).\n\n",
            self.rate_mbit,
            self.flood_mbit,
            self.outcomes.first().map(|(o, _)| o.flood_payload).unwrap_or(0),
            self.probes,
            kernel.trim(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            match self.cpus {
                Some((f, p)) => format!(
                    "flood sender and sink pinned to CPU {f}, probe sender and receiver to CPU {p}"
                ),
                None => "generator threads not pinned".into(),
            },
            self.load_at_start,
            loadavg(),
        );
        m += "| case | queueing on r's egress | probes recv/sent | p50 | p99 | p99.9 | max | jitter | flood delivered |\n";
        m += "|---|---|---|---|---|---|---|---|---|\n";
        for (o, st) in &self.outcomes {
            let mbit = if o.flood_secs > 0.0 {
                o.flood_received as f64 * ((o.flood_payload + 42) * 8) as f64 / o.flood_secs / 1e6
            } else {
                0.0
            };
            m += &format!(
                "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {:.1} Mbit/s ({} of {} datagrams) |\n",
                o.case.name(),
                o.case.describe(),
                st.received,
                o.probes_sent,
                us(st.p50),
                us(st.p99),
                us(st.p999),
                us(st.max),
                us(st.jitter as i64),
                mbit,
                o.flood_received,
                o.flood_sent
            );
        }
        m += "\nJitter: mean |d(i) − d(i−1)| over consecutive received probes (RFC 3550 style, \
              unsmoothed). Flood delivered: L2 rate of flood datagrams received by b while they \
              arrived.\n\n## Targets\n\n| target | result | numbers |\n|---|---|---|\n";
        for (name, ok, detail) in self.targets() {
            m += &format!(
                "| {name} | {} | {detail} |\n",
                if ok { "PASS" } else { "FAIL" }
            );
        }
        if let Some((o, _)) = self.get(Case::Lanes) {
            m += &format!(
                "\n## dcmesh lanes details\n\nMode: {}.\n\n",
                o.mode.as_deref().unwrap_or("?")
            );
            if let Some(c) = &o.counters {
                m += "| lane | admitted | deferred | demoted | dropped | too big |\n|---|---|---|---|---|---|\n";
                for lane in 0..8u8 {
                    let row: Vec<u64> = Action::ALL
                        .iter()
                        .map(|a| c.get(lane, *a).packets)
                        .collect();
                    if row.iter().any(|x| *x > 0) {
                        m += &format!(
                            "| {lane} | {} | {} | {} | {} | {} |\n",
                            row[0], row[1], row[2], row[3], row[4]
                        );
                    }
                }
            }
            m += "\nHTB classes on r's egress after the case:\n\n| class | lane | packets | drops |\n|---|---|---|---|\n";
            for cl in o.classes.iter().filter(|c| c.packets > 0 || c.drops > 0) {
                m += &format!(
                    "| {} | {} | {} | {} |\n",
                    cl.classid,
                    cl.lane
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "root".into()),
                    cl.packets,
                    cl.drops
                );
            }
        }
        m += &format!("\n## Histogram\n\n![one-way delay histograms]({picture})\n{picture_note}\n");
        m += "\nRun: `cargo build --release -p dcmesh-bench --bin bench-lanes && sudo target/release/bench-lanes` \
              (or `cargo xtask bench lanes`).\n";
        m
    }

    fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let png = format!("lanes-{}.png", self.date);
        let note = match self.histogram(&dir.join(&png)) {
            Ok(true) => String::new(),
            Ok(false) => "\n(No DejaVu Sans font found: the picture has no labels; install fonts-dejavu-core.)\n".into(),
            Err(e) => format!("\n(The picture could not be drawn: {e:#}.)\n"),
        };
        std::fs::copy(dir.join(&png), dir.join("lanes-latest.png")).ok();
        let md = self.markdown(&png, &note);
        std::fs::write(dir.join(format!("lanes-{}.md", self.date)), &md)?;
        std::fs::write(
            dir.join("lanes-latest.md"),
            md.replace(&png, "lanes-latest.png"),
        )?;
        eprintln!(
            "wrote {}",
            dir.join(format!("lanes-{}.md", self.date)).display()
        );
        Ok(())
    }

    /// Histograms of the three cases on one log-scale delay axis; false if drawn without
    /// text for lack of a font.
    fn histogram(&self, path: &Path) -> Result<bool> {
        use plotters::prelude::*;
        let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
            .iter()
            .find_map(|p| std::fs::read(p).ok());
        let labels = match font {
            Some(bytes) => plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .is_ok(),
            None => false,
        };
        let root = BitMapBackend::new(path, (1000, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((self.outcomes.len(), 1));
        // 10 µs .. 1 s in 10 bins per decade.
        let (lo, hi, per_decade) = (1e-5f64, 1.0f64, 10.0);
        let bins = ((hi / lo).log10() * per_decade) as usize;
        let colors = [RED, BLUE, GREEN];
        for (i, ((o, st), area)) in self.outcomes.iter().zip(panels.iter()).enumerate() {
            let mut counts = vec![0usize; bins];
            for d in &o.delays {
                let x = (*d as f64 / 1e9).clamp(lo, hi * 0.999_999);
                let b = (((x / lo).log10()) * per_decade) as usize;
                counts[b.min(bins - 1)] += 1;
            }
            let total = o.delays.len().max(1) as f64;
            let mut chart = ChartBuilder::on(area);
            chart
                .margin(10)
                .x_label_area_size(if labels { 35 } else { 5 })
                .y_label_area_size(if labels { 55 } else { 5 });
            if labels {
                chart.caption(
                    format!(
                        "{} — p50 {}, p99 {}, max {}",
                        o.case.name(),
                        us(st.p50),
                        us(st.p99),
                        us(st.max)
                    ),
                    ("sans-serif", 20),
                );
            }
            let mut chart = chart.build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
            if labels {
                chart
                    .configure_mesh()
                    .x_desc("one-way delay (s, log scale)")
                    .y_desc("fraction of probes")
                    .draw()?;
            }
            let color = colors[i % colors.len()];
            chart.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                |(b, c)| {
                    let x0 = lo * 10f64.powf(b as f64 / per_decade);
                    let x1 = lo * 10f64.powf((b + 1) as f64 / per_decade);
                    Rectangle::new([(x0, 0.0), (x1, *c as f64 / total)], color.filled())
                },
            ))?;
            let bound = self.bound_ns as f64 / 1e9;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(bound, 0.0), (bound, 1.0)],
                BLACK,
            )))?;
        }
        root.present()?;
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&[], 50.0), 0);
        let s = stats(&[10, 30, 20]);
        assert_eq!((s.p50, s.max), (20, 30));
        assert_eq!(s.jitter, 15.0);
    }
}
