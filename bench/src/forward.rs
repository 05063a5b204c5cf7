//! The forwarding benchmark of issue 2, section 5.
//!
//! Topology: namespaces gen — R — sink joined by veth pairs (g0–r0, r1–s0), plus a direct
//! pair gd–sd from gen to sink. The generator (`bench_gen`, XDP live frames) sends 64-byte
//! UDP frames; the sink (`bench_sink`, XDP) counts and drops them. R is, in turn: an XDP
//! program that only redirects (ceiling), dcmesh with one route and with a large table,
//! and the Linux kernel with the same routes. Method: `shared/notes/bench.md`.
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    sys::{enable_stats, Stats},
};
use dcmesh_loader::{
    interface_info, AttachMode, Counters, Datapath, IpNet, NextHopSpec, RouteTarget,
};
use dcmesh_schema::{Counter, Verdict};
use dcmesh_testbed::{netns, Netns};

use crate::{
    frames::{UdpV4, FRAME_LEN},
    probe,
    report::{Case, CaseResult, Check, Meta, PathCost, Report},
    routes,
    tools::{GenRun, Tools},
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Timed repetitions per case.
    pub reps: usize,
    /// Length of one repetition, seconds.
    pub seconds: f64,
    /// CPU the generator runs on (everything in the chain then runs there too).
    pub cpu: Option<usize>,
    /// Live-frames batch size (frames per redirect flush).
    pub batch: u32,
    /// Routes and destinations of the large-table cases.
    pub routes: usize,
    pub destinations: usize,
    /// Packets per `BPF_PROG_TEST_RUN` cost measurement.
    pub test_run_packets: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reps: 5,
            seconds: 2.0,
            cpu: None,
            batch: 64,
            routes: 100_000,
            destinations: 4_000,
            test_run_packets: 10_000_000,
        }
    }
}

/// Seed of the large route table, fixed so every run loads the same table.
const ROUTE_SEED: u64 = 0x6463_6d65_7368;
/// Warm-up before the timed repetitions of each case (page pools, caches, frequency).
const WARMUP: Duration = Duration::from_millis(500);
/// Length of the extra run that reads the kernel's BPF run-time statistics.
const STATS_RUN: Duration = Duration::from_secs(1);
/// Time for frames still in flight to reach the sink after the generator stops.
const SETTLE: Duration = Duration::from_millis(20);

const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const R_IN_ADDR: &str = "10.0.1.1/24";
const GEN_CIDR: &str = "10.0.1.2/24";
const R_OUT_ADDR: &str = "10.0.2.1/24";
const SINK_CIDR: &str = "10.0.2.2/24";
const SINK_ADDR: &str = "10.0.2.2";
/// The one-route cases: RFC 2544's benchmarking range.
const ONE_ROUTE: &str = "198.18.0.0/15";
const ONE_DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// TTL of the frames of the chain.
const TTL: u8 = 64;
/// For `BPF_PROG_TEST_RUN`: the kernel does not restore the frame between repeats and
/// the forwarder lowers the TTL in place, so a TTL-255 frame forwards 254 times.
const TEST_TTL: u8 = 255;
const TEST_REPEAT: u32 = 254;
/// Repeats per call for frames the program leaves unchanged.
const PATH_REPEAT: u32 = 1_000_000;
/// A destination no table routes (10/8 holds only the benchmark's links, not routed).
const MISS_DST: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

/// Frames that stop at successive stages of the forwarder, for [`path_costs`].
struct PathFrames {
    non_ip: Vec<[u8; FRAME_LEN]>,
    bad_csum: Vec<[u8; FRAME_LEN]>,
    miss: Vec<[u8; FRAME_LEN]>,
    ttl1: Vec<[u8; FRAME_LEN]>,
    forward: Vec<[u8; FRAME_LEN]>,
}

impl PathFrames {
    fn new(topo: &Topology, dsts: &[Ipv4Addr]) -> Self {
        let mut non_ip = topo.chain_frame(dsts[0], TTL);
        non_ip[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut bad_csum = topo.chain_frame(dsts[0], TTL);
        bad_csum[24] ^= 0xff;
        Self {
            non_ip: vec![non_ip],
            bad_csum: vec![bad_csum],
            miss: vec![topo.chain_frame(MISS_DST, TTL)],
            ttl1: dsts.iter().map(|d| topo.chain_frame(*d, 1)).collect(),
            forward: dsts
                .iter()
                .map(|d| topo.chain_frame(*d, TEST_TTL))
                .collect(),
        }
    }
}

/// An interface as seen inside its namespace.
#[derive(Clone, Debug)]
struct Iface {
    name: &'static str,
    index: u32,
    mac: [u8; 6],
}

/// The three namespaces and their links. Dropping it deletes the namespaces, and with
/// them the veths and every XDP attachment on them.
struct Topology {
    gen: Netns,
    r: Netns,
    sink: Netns,
    g0: Iface,
    gd: Iface,
    r0: Iface,
    r1: Iface,
    s0: Iface,
    sd: Iface,
}

fn iface(ns: &Netns, name: &'static str) -> Result<Iface> {
    let info = ns.enter(|| interface_info(name))??;
    Ok(Iface {
        name,
        index: info.index,
        mac: info.mac,
    })
}

impl Topology {
    fn build() -> Result<Self> {
        let gen = Netns::create("gen")?;
        let r = Netns::create("r")?;
        let sink = Netns::create("sink")?;
        for ns in [&gen, &r, &sink] {
            // No IPv6 autoconfiguration, DAD or MLD frames: the sink counts every frame.
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        }
        r.sysctl("net.ipv4.ip_forward", "0")?;
        netns::veth(&gen, "g0", &r, "r0")?;
        netns::veth(&r, "r1", &sink, "s0")?;
        netns::veth(&gen, "gd", &sink, "sd")?;
        gen.ip(&["addr", "add", GEN_CIDR, "dev", "g0"])?;
        r.ip(&["addr", "add", R_IN_ADDR, "dev", "r0"])?;
        r.ip(&["addr", "add", R_OUT_ADDR, "dev", "r1"])?;
        sink.ip(&["addr", "add", SINK_CIDR, "dev", "s0"])?;
        Ok(Self {
            g0: iface(&gen, "g0")?,
            gd: iface(&gen, "gd")?,
            r0: iface(&r, "r0")?,
            r1: iface(&r, "r1")?,
            s0: iface(&sink, "s0")?,
            sd: iface(&sink, "sd")?,
            gen,
            r,
            sink,
        })
    }

    /// A chain frame to `dst` (addressed to R's ingress).
    fn chain_frame(&self, dst: Ipv4Addr, ttl: u8) -> [u8; FRAME_LEN] {
        UdpV4 {
            dst_mac: self.r0.mac,
            src_mac: self.g0.mac,
            src: GEN_ADDR,
            dst,
            ttl,
        }
        .build()
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET indexes within it (checked below);
    // sched_setaffinity(0, ..) affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        ensure!(
            cpu < 8 * std::mem::size_of::<libc::cpu_set_t>(),
            "CPU {cpu} out of range"
        );
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pin generator to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

struct Bench<'a> {
    opts: &'a Options,
    stop: &'a AtomicBool,
    topo: &'a Topology,
    tools: Tools,
    cpu: usize,
}

/// Rates and frame counts of one case's repetitions.
struct Measured {
    mpps: Vec<f64>,
    generated: u64,
    received: u64,
}

impl Bench<'_> {
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Loads `frames` into the generator and points it at `port` (in gen's namespace).
    fn prepare(&mut self, port: &Iface, frames: &[[u8; FRAME_LEN]]) -> Result<()> {
        self.tools.set_templates(frames)?;
        let tools = &mut self.tools;
        self.topo.gen.enter(|| tools.set_gen_port(port.index))?
    }

    /// One generator run of `dur`; returns what was sent and what the sink counted.
    fn run_once(&self, port: &Iface, dur: Duration) -> Result<(GenRun, u64)> {
        let before = self.tools.sink_count()?;
        let (tools, opts, stop, cpu) = (&self.tools, self.opts, self.stop, self.cpu);
        let run = self.topo.gen.enter(|| {
            pin_to(cpu)?;
            tools.generate(port.index, dur, opts.batch, stop)
        })??;
        std::thread::sleep(SETTLE);
        let received = self.tools.sink_count()?.saturating_sub(before);
        Ok((run, received))
    }

    /// Warm-up, then the timed repetitions.
    fn measure(&self, case: Case, port: &Iface) -> Result<Measured> {
        let (warm, warm_rx) = self.run_once(port, WARMUP)?;
        let mut m = Measured {
            mpps: Vec::with_capacity(self.opts.reps),
            generated: warm.frames,
            received: warm_rx,
        };
        for _ in 0..self.opts.reps {
            let (run, rx) = self.run_once(port, Duration::from_secs_f64(self.opts.seconds))?;
            let mpps = rx as f64 / run.elapsed.as_secs_f64() / 1e6;
            m.mpps.push(mpps);
            m.generated += run.frames;
            m.received += rx;
        }
        let list: Vec<String> = m.mpps.iter().map(|x| format!("{x:.2}")).collect();
        eprintln!("  {}: {} Mpps", case.label(), list.join(" "));
        Ok(m)
    }

    /// One extra chain run with the kernel's BPF run-time statistics on; returns ns per
    /// run of each of `progs` (by the closure's order), and frames counted at the sink.
    fn chain_prog_ns(
        &self,
        port: &Iface,
        mut read: impl FnMut() -> Result<Vec<(u64, u64)>>,
    ) -> Result<Vec<Option<f64>>> {
        let _stats = enable_stats(Stats::RunTime).context("enable BPF run-time statistics")?;
        let before = read()?;
        self.run_once(port, STATS_RUN)?;
        let after = read()?;
        Ok(before
            .iter()
            .zip(&after)
            .map(|((t0, n0), (t1, n1))| (n1 > n0).then(|| (t1 - t0) as f64 / (n1 - n0) as f64))
            .collect())
    }
}

fn prog_stats(p: &Xdp) -> Result<(u64, u64)> {
    let i = p.info().context("read program info")?;
    Ok((i.run_time().as_nanos() as u64, i.run_count()))
}

/// Mean ns per run of `prog` over about `packets` runs (`BPF_PROG_TEST_RUN`, not live),
/// `repeat` runs per call, cycling over `frames` call by call.
fn test_run_ns(
    prog: &Xdp,
    frames: &[[u8; FRAME_LEN]],
    packets: u64,
    repeat: u32,
    stop: &AtomicBool,
) -> Result<f64> {
    let calls = packets.div_ceil(u64::from(repeat)).max(1);
    let mut total_ns = 0u128;
    for i in 0..calls {
        if i % 1024 == 0 && stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let frame = &frames[i as usize % frames.len()];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN")?;
        // The kernel reports the mean ns per repeat of this call.
        total_ns += r.duration.as_nanos() * u128::from(repeat);
    }
    Ok(total_ns as f64 / (calls * u64::from(repeat)) as f64)
}

/// Runs of `packets` rounded up to whole calls of `repeat`.
fn whole_calls(packets: u64, repeat: u32) -> u64 {
    packets.div_ceil(u64::from(repeat)).max(1) * u64::from(repeat)
}

/// The cost of each path through the forwarder, cheapest first, by running frames that
/// stop at successive stages; the differences say what each stage costs. Paths that do
/// not modify the frame run `PATH_REPEAT` times per call; the forwarding path uses the
/// TTL-255 method. Each row's counter must have moved by exactly its runs.
fn path_costs(
    dp: &mut Datapath,
    table: &str,
    frames: &PathFrames,
    opts: &Options,
    stop: &AtomicBool,
) -> Result<(Vec<PathCost>, Vec<Check>)> {
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let cases: [(&str, Counter, &[[u8; FRAME_LEN]]); 5] = [
        (
            "not IP: parse Ethernet, count",
            Counter::PassNonIp,
            &frames.non_ip,
        ),
        (
            "IPv4, bad header checksum: + IPv4 parse and checksum",
            Counter::DropBadChecksum,
            &frames.bad_csum,
        ),
        (
            "IPv4, no route (miss = drop): + route lookup",
            Counter::DropMiss,
            &frames.miss,
        ),
        (
            "IPv4, TTL 1: + next-hop checks",
            Counter::PassTtl,
            &frames.ttl1,
        ),
        (
            "IPv4, forwarded: + TTL, checksum, MACs, redirect",
            Counter::FwdV4,
            &frames.forward,
        ),
    ];
    for (path, counter, f) in cases {
        // Unchanged frames repeat at length; the forwarded one lowers its TTL in place,
        // and several destinations are cycled call by call.
        let (repeat, packets) = if counter == Counter::FwdV4 || f.len() > 1 {
            (TEST_REPEAT, opts.test_run_packets)
        } else {
            (PATH_REPEAT, opts.test_run_packets / 5)
        };
        let before = dp.tables().counters()?;
        let ns = test_run_ns(dp.program()?, f, packets, repeat, stop)?;
        let moved = dp.tables().counters()?.since(&before);
        let runs = whole_calls(packets, repeat);
        let got = moved.get(counter).packets;
        checks.push(Check::new(
            format!(
                "BPF_PROG_TEST_RUN, {table}, \"{path}\": every run counted as {}",
                counter.name()
            ),
            got == runs && moved.total() == runs,
            format!(
                "{} +{got} of {runs} runs, {} in all",
                counter.name(),
                moved.total()
            ),
        ));
        rows.push(PathCost {
            table: table.to_string(),
            path: path.to_string(),
            counter: counter.name(),
            ns,
        });
    }
    Ok((rows, checks))
}

fn sink_checks(m: &Measured, min_delivered: f64) -> Vec<Check> {
    let frac = m.received as f64 / m.generated.max(1) as f64;
    vec![Check::new(
        "sink counted the generated frames",
        m.received > 0 && m.received <= m.generated && frac >= min_delivered,
        format!(
            "{} of {} frames ({:.2} %, at least {:.0} % expected)",
            m.received,
            m.generated,
            frac * 100.0,
            min_delivered * 100.0
        ),
    )]
}

/// Evidence for a dcmesh case: R's counters moved only on `fwd_v4`, and the sink counted
/// no more than R forwarded.
fn dcmesh_checks(m: &Measured, counters: &Counters) -> Vec<Check> {
    let fwd = counters.get(Counter::FwdV4).packets;
    let other: Vec<String> = counters
        .named()
        .filter(|(c, v)| *c != Counter::FwdV4 && v.packets > 0)
        .map(|(c, v)| format!("{} {}", c.name(), v.packets))
        .collect();
    vec![
        Check::new(
            "R's dcmesh counters: every frame forwarded, nothing passed or dropped",
            fwd > 0 && other.is_empty() && counters.verdict(Verdict::Redirect) == fwd,
            format!(
                "fwd_v4 +{fwd}{}",
                if other.is_empty() {
                    String::new()
                } else {
                    format!(", also {}", other.join(", "))
                }
            ),
        ),
        Check::new(
            "generated ≥ R forwarded ≥ sink counted",
            m.generated >= fwd && fwd >= m.received && m.received > 0,
            format!(
                "{} ≥ {fwd} ≥ {} (sink counted {:.2} % of R's forwards)",
                m.generated,
                m.received,
                m.received as f64 * 100.0 / fwd.max(1) as f64
            ),
        ),
    ]
}

/// Sets up Linux forwarding on R (XDP must be detached first).
fn kernel_forwarding(topo: &Topology) -> Result<()> {
    let r = &topo.r;
    r.sysctl("net.ipv4.ip_forward", "1")?;
    r.exec("ethtool", &["-K", topo.r0.name, "gro", "on"])?;
    let mac = dcmesh_loader::format_mac(&topo.s0.mac);
    r.ip(&[
        "neigh",
        "replace",
        SINK_ADDR,
        "lladdr",
        &mac,
        "dev",
        topo.r1.name,
        "nud",
        "permanent",
    ])?;
    r.ip(&[
        "route",
        "replace",
        ONE_ROUTE,
        "via",
        SINK_ADDR,
        "dev",
        topo.r1.name,
    ])?;
    Ok(())
}

/// Installs `prefixes` into R's FIB in one `ip -batch` (read from stdin).
fn kernel_routes(topo: &Topology, prefixes: &[ipnet::Ipv4Net]) -> Result<()> {
    let mut batch = String::with_capacity(prefixes.len() * 48);
    for p in prefixes {
        batch.push_str(&format!(
            "route replace {p} via {SINK_ADDR} dev {}\n",
            topo.r1.name
        ));
    }
    let mut child = Command::new("ip")
        .args(["-n", topo.r.name(), "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run ip -batch")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("ip -batch stdin")?;
        stdin
            .write_all(batch.as_bytes())
            .context("write routes to ip -batch")?;
    }
    let out = child.wait_with_output().context("wait for ip -batch")?;
    ensure!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Evidence for a kernel case: R's IP stack forwarded what the sink counted, and nothing
/// was dropped as "otherhost" on R's ingress.
fn kernel_checks(
    m: &Measured,
    forwarded: u64,
    r0: &[(String, u64)],
    r1: &[(String, u64)],
) -> Vec<Check> {
    let otherhost = r0
        .iter()
        .find(|(k, _)| k == "rx.otherhost")
        .map_or(0, |(_, v)| *v);
    let show = |v: &[(String, u64)]| {
        v.iter()
            .map(|(k, d)| format!("{k} +{d}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        Check::new(
            "nstat IpForwDatagrams: generated ≥ R forwarded ≥ sink counted",
            m.generated >= forwarded && forwarded >= m.received && m.received > 0,
            format!("{} ≥ {forwarded} ≥ {}", m.generated, m.received),
        ),
        Check::new(
            "no frame dropped as otherhost on r0",
            otherhost == 0,
            format!("ip -s -s link r0: {}; r1: {}", show(r0), show(r1)),
        ),
    ]
}

/// Runs every case and returns the report (not yet written anywhere).
pub fn run(opts: &Options, stop: &AtomicBool) -> Result<Report> {
    ensure!(
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() } == 0,
        "the forwarding benchmark creates network namespaces and loads XDP programs: run it as root"
    );
    ensure!(
        opts.reps >= 1 && opts.seconds > 0.0,
        "need reps ≥ 1 and seconds > 0"
    );
    let started = Instant::now();
    let mut meta = Meta {
        date: jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        kernel: probe::kernel(),
        commit: probe::commit(),
        cpu: probe::cpu(),
        load_before: probe::loadavg(),
        reps: opts.reps,
        seconds: opts.seconds,
        routes: opts.routes,
        destinations: opts.destinations,
        test_run_packets: opts.test_run_packets,
        ..Meta::default()
    };
    for gone in netns::clear_stale()? {
        eprintln!("removed stale namespace {gone}");
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = opts.cpu.unwrap_or(ncpu - 1);
    ensure!(
        cpu < ncpu,
        "--cpu {cpu}: this machine has CPUs 0..{}",
        ncpu - 1
    );

    eprintln!("building topology gen — R — sink");
    let topo = Topology::build()?;
    let mut bench = Bench {
        opts,
        stop,
        topo: &topo,
        tools: Tools::load()?,
        cpu,
    };
    {
        let tools = &mut bench.tools;
        topo.sink.enter(|| -> Result<()> {
            tools.attach_sink(topo.s0.index)?;
            tools.attach_sink(topo.sd.index)?;
            Ok(())
        })??;
    }
    let table = routes::generate(opts.routes, opts.destinations, ROUTE_SEED);
    let one_route: IpNet = ONE_ROUTE.parse().expect("valid literal");
    let one = [topo.chain_frame(ONE_DST, TTL)];
    let many: Vec<_> = table
        .destinations
        .iter()
        .map(|d| topo.chain_frame(*d, TTL))
        .collect();
    let one_paths = PathFrames::new(&topo, &[ONE_DST]);
    let many_paths = PathFrames::new(&topo, &table.destinations);
    let mut report = Report::default();

    // (0) direct.
    let direct_frame = UdpV4 {
        dst_mac: topo.sd.mac,
        src_mac: topo.gd.mac,
        src: GEN_ADDR,
        dst: ONE_DST,
        ttl: TTL,
    }
    .build();
    bench.prepare(&topo.gd, &[direct_frame])?;
    let m = bench.measure(Case::Direct, &topo.gd)?;
    report.cases.push((
        Case::Direct,
        CaseResult {
            checks: sink_checks(&m, 0.99),
            mpps: m.mpps,
            generated: m.generated,
            received: m.received,
            ..CaseResult::default()
        },
    ));

    // (1) ceiling: redirect_only on r0 → r1.
    bench.prepare(&topo.g0, &one)?;
    let link = {
        let tools = &mut bench.tools;
        topo.r.enter(|| -> Result<_> {
            tools.set_ceiling_port(topo.r1.index)?;
            tools.attach_ceiling(topo.r0.index)
        })??
    };
    let m = bench.measure(Case::Ceiling, &topo.g0)?;
    let prog_ns = test_run_ns(
        bench.tools.ceiling()?,
        &one_paths.forward,
        opts.test_run_packets,
        PATH_REPEAT,
        stop,
    )?;
    let t = &bench.tools;
    let chain = bench.chain_prog_ns(&topo.g0, || {
        Ok(vec![
            prog_stats(t.generator()?)?,
            prog_stats(t.ceiling()?)?,
            prog_stats(t.sink()?)?,
        ])
    })?;
    report.notes.push(stage_note(Case::Ceiling, &chain));
    bench.tools.detach_ceiling(link)?;
    report.cases.push((
        Case::Ceiling,
        CaseResult {
            checks: sink_checks(&m, 0.99),
            mpps: m.mpps,
            generated: m.generated,
            received: m.received,
            prog_ns: Some(prog_ns),
            chain_prog_ns: chain[1],
        },
    ));

    // (2) and (3): dcmesh.
    let mut dp = Datapath::load(None).context("load the dcmesh datapath")?;
    let sink_mac = topo.s0.mac;
    topo.r.enter(|| -> Result<()> {
        dp.attach(topo.r0.name, AttachMode::Native)?;
        let nh = NextHopSpec::via_interface(topo.r1.name, sink_mac)?;
        dp.tables().set_nexthop(1, nh)?;
        dp.tables().set_miss_drop(true)?;
        dp.tables()
            .set_route(one_route, RouteTarget::Via { id: 1, alt: None })?;
        Ok(())
    })??;
    let big_name = format!("{} routes", opts.routes);
    for (case, frames, table_name, path_frames) in [
        (Case::Dcmesh1, &one[..], "1 route", &one_paths),
        (Case::DcmeshMany, &many[..], big_name.as_str(), &many_paths),
    ] {
        if case == Case::DcmeshMany {
            let t0 = Instant::now();
            for (i, p) in table.prefixes.iter().enumerate() {
                if i % 4096 == 0 {
                    bench.check_stop()?;
                }
                dp.tables()
                    .set_route(IpNet::V4(*p), RouteTarget::Via { id: 1, alt: None })?;
            }
            eprintln!(
                "  loaded {} routes into dcmesh in {:.1} s",
                table.prefixes.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        bench.prepare(&topo.g0, frames)?;
        let before = dp.tables().counters()?;
        let m = bench.measure(case, &topo.g0)?;
        let counters = dp.tables().counters()?.since(&before);
        let mut checks = dcmesh_checks(&m, &counters);

        let (rows, path_checks) = path_costs(&mut dp, table_name, path_frames, opts, stop)?;
        let prog_ns = rows.last().map(|r| r.ns);
        checks.extend(path_checks);
        report.paths.extend(rows);

        let t = &bench.tools;
        let dpr = &mut dp;
        let chain = bench.chain_prog_ns(&topo.g0, || {
            Ok(vec![
                prog_stats(t.generator()?)?,
                prog_stats(dpr.program()?)?,
                prog_stats(t.sink()?)?,
            ])
        })?;
        report.notes.push(stage_note(case, &chain));
        report.cases.push((
            case,
            CaseResult {
                checks,
                mpps: m.mpps,
                generated: m.generated,
                received: m.received,
                prog_ns,
                chain_prog_ns: chain[1],
            },
        ));
    }
    // Detaches dcmesh from r0.
    drop(dp);

    // (4) and (4b): the Linux kernel.
    kernel_forwarding(&topo)?;
    for (case, frames) in [(Case::Kernel1, &one[..]), (Case::KernelMany, &many[..])] {
        if case == Case::KernelMany {
            let t0 = Instant::now();
            kernel_routes(&topo, &table.prefixes)?;
            eprintln!(
                "  loaded {} routes into R's FIB in {:.1} s",
                table.prefixes.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        bench.prepare(&topo.g0, frames)?;
        let fwd0 = probe::nstat(&topo.r, "IpForwDatagrams")?;
        let (r0a, r1a) = (
            probe::link_stats(&topo.r, topo.r0.name)?,
            probe::link_stats(&topo.r, topo.r1.name)?,
        );
        let m = bench.measure(case, &topo.g0)?;
        let fwd = probe::nstat(&topo.r, "IpForwDatagrams")?.saturating_sub(fwd0);
        let (r0b, r1b) = (
            probe::link_stats(&topo.r, topo.r0.name)?,
            probe::link_stats(&topo.r, topo.r1.name)?,
        );
        report.cases.push((
            case,
            CaseResult {
                checks: kernel_checks(
                    &m,
                    fwd,
                    &probe::grown(&r0a, &r0b),
                    &probe::grown(&r1a, &r1b),
                ),
                mpps: m.mpps,
                generated: m.generated,
                received: m.received,
                ..CaseResult::default()
            },
        ));
    }

    meta.load_after = probe::loadavg();
    meta.wall_seconds = started.elapsed().as_secs_f64();
    report.meta = meta;
    Ok(report)
}

/// One line on where a chain's time goes, from the in-chain BPF statistics of generator,
/// R's program and sink.
fn stage_note(case: Case, ns: &[Option<f64>]) -> String {
    let f = |x: Option<&Option<f64>>| {
        x.copied()
            .flatten()
            .map_or("—".to_string(), |v| format!("{v:.1} ns"))
    };
    format!(
        "{}: BPF run time per packet in the chain: generator {}, R's program {}, sink {} \
         (the rest of the chain's per-packet time is kernel work: live-frame pages, \
         redirect, veth transmit and NAPI)",
        case.label(),
        f(ns.first()),
        f(ns.get(1)),
        f(ns.get(2)),
    )
}

/// Where the report goes: `dir/forward-<UTC date>.md` and `dir/forward-latest.md`.
pub fn write(report: &Report, dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let day = report.meta.date.get(..10).unwrap_or("undated");
    let md = report.markdown();
    let mut written = Vec::new();
    for name in [format!("forward-{day}.md"), "forward-latest.md".to_string()] {
        let p = dir.join(name);
        std::fs::write(&p, &md).with_context(|| format!("write {}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}
