//! The forwarding benchmark of issue 2, section 5 (method: `shared/notes/bench.md`).
//!
//! The generator (`bench_gen`, XDP live frames) sends 64-byte UDP frames through R to the
//! sink (`bench_sink`, XDP), which counts and drops them. R is, in turn: nothing (direct
//! gen → sink), an XDP program that only redirects (ceiling), dcmesh with one route and
//! with a large table, and the Linux kernel with the same routes.
//!
//! Cases (0)–(4) run interleaved, one repetition of each per round, so a change in the
//! machine's background load spreads over all of them instead of biasing one; dcmesh is
//! loaded afresh each round. (4b) follows: its 100,000 FIB routes would slow (4).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::sys::{enable_stats, Stats};
use dcmesh_loader::{AttachMode, Counters, Datapath, IpNet, NextHopSpec, RouteTarget};
use dcmesh_schema::{Counter, CounterValue, Verdict};
use dcmesh_testbed::netns;

use crate::{
    cost::{self, PathFrames, LONG_REPEAT},
    frames::FRAME_LEN,
    probe,
    report::{Case, CaseResult, Check, Meta, Report},
    routes,
    tools::{Amount, Tools},
    topology::{Iface, Topology},
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Timed repetitions per case.
    pub reps: usize,
    /// Length of one repetition, seconds.
    pub seconds: f64,
    /// CPU the generator runs on (the whole chain then runs there too); default the last.
    pub cpu: Option<usize>,
    /// Live-frames batch size (frames per redirect flush).
    pub batch: u32,
    /// Routes and destinations of the large-table cases.
    pub routes: usize,
    pub destinations: usize,
    /// Runs per `BPF_PROG_TEST_RUN` cost figure.
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
/// Warm-up before each timed repetition (page pools, caches, a freshly attached program).
const WARMUP: Duration = Duration::from_millis(300);
/// Length of the extra run that reads the kernel's BPF run-time statistics.
const STATS_RUN: Duration = Duration::from_secs(1);
/// Time for frames still in flight to reach the sink after the generator stops.
const SETTLE: Duration = Duration::from_millis(20);
/// The one-route cases: RFC 2544's benchmarking range.
const ONE_ROUTE: &str = "198.18.0.0/15";
const ONE_DST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 10);
/// TTL of the chain's frames.
const TTL: u8 = 64;

/// One generator run: frames sent, frames the sink counted, wall-clock time, and the
/// share of that time the chain had its CPU (generator thread plus ksoftirqd); the rest
/// went to other tasks.
struct Once {
    frames: u64,
    received: u64,
    elapsed: Duration,
    cpu_share: f64,
}

/// A case's results as the rounds add to them.
#[derive(Default)]
struct Acc {
    mpps: Vec<f64>,
    cpu_share: Vec<f64>,
    generated: u64,
    received: u64,
    counters: Option<Counters>,
}

impl Acc {
    fn add(&mut self, warm: Once, timed: Once) {
        self.mpps
            .push(timed.received as f64 / timed.elapsed.as_secs_f64() / 1e6);
        self.cpu_share.push(timed.cpu_share);
        self.generated += warm.frames + timed.frames;
        self.received += warm.received + timed.received;
    }

    fn add_counters(&mut self, c: Counters) {
        self.counters = Some(match self.counters.take() {
            None => c,
            Some(a) => Counters(
                Counter::ALL
                    .iter()
                    .map(|k| {
                        let (x, y) = (a.get(*k), c.get(*k));
                        CounterValue {
                            packets: x.packets + y.packets,
                            bytes: x.bytes + y.bytes,
                        }
                    })
                    .collect(),
            ),
        });
    }

    fn into_result(self, checks: Vec<Check>) -> CaseResult {
        CaseResult {
            mpps: self.mpps,
            cpu_share: self.cpu_share,
            generated: self.generated,
            received: self.received,
            checks,
            ..CaseResult::default()
        }
    }
}

/// Time on the CPU, ns, from a `schedstat` file (`/proc/<pid>/schedstat`).
fn run_ns(path: &str) -> Result<u64> {
    let s = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    s.split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .with_context(|| format!("unexpected {path}: {s:?}"))
}

/// The `schedstat` path of `ksoftirqd/<cpu>`, which takes over packet processing on that
/// CPU when softirqs run long: its time is the chain's time too.
fn ksoftirqd(cpu: usize) -> Option<String> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == want).then(|| e.path().join("schedstat").to_string_lossy().into_owned())
    })
}

/// Gives the calling thread the highest nice priority (-20), so ordinary tasks on the
/// machine (builds, tests) take little of the chain's CPU. Unlike a real-time policy
/// this never starves `ksoftirqd`, which may carry part of the chain's work. Best effort:
/// without the privilege the run goes on at normal priority (the CPU share shows it).
fn raise_priority() {
    // SAFETY: setpriority on the calling thread (Linux nice values are per thread).
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } != 0 {
        log::warn!(
            "could not raise the generator's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<()> {
    ensure!(
        cpu < 8 * std::mem::size_of::<libc::cpu_set_t>(),
        "CPU {cpu} out of range"
    );
    // SAFETY: cpu_set_t is plain data, CPU_SET indexes inside it (checked above), and
    // sched_setaffinity(0, ..) affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
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

    /// One generator run of `amount` into `port`.
    fn run_once(&self, port: &Iface, amount: Amount) -> Result<Once> {
        let before = self.tools.sink_count()?;
        let (tools, batch, stop, cpu) = (&self.tools, self.opts.batch, self.stop, self.cpu);
        let softirqd = ksoftirqd(cpu);
        let soft0 = softirqd.as_deref().map(run_ns).transpose()?;
        let (run, gen_ns) = self.topo.gen.enter(|| -> Result<_> {
            pin_to(cpu)?;
            raise_priority();
            let t0 = run_ns("/proc/thread-self/schedstat")?;
            let run = tools.generate(port.index, amount, batch, stop)?;
            Ok((run, run_ns("/proc/thread-self/schedstat")? - t0))
        })??;
        let soft1 = softirqd.as_deref().map(run_ns).transpose()?;
        std::thread::sleep(SETTLE);
        let received = self.tools.sink_count()?.saturating_sub(before);
        let soft_ns = soft1.zip(soft0).map_or(0, |(b, a)| b.saturating_sub(a));
        Ok(Once {
            frames: run.frames,
            received,
            elapsed: run.elapsed,
            cpu_share: ((gen_ns + soft_ns) as f64 / run.elapsed.as_nanos().max(1) as f64).min(1.0),
        })
    }

    /// A warm-up run, then one timed repetition, added to `acc`.
    fn rep(&self, acc: &mut Acc, port: &Iface) -> Result<()> {
        let warm = self.run_once(port, Amount::For(WARMUP))?;
        // Sized from the warm-up's rate to last about `seconds`; its real length is measured.
        let rate = warm.frames as f64 / warm.elapsed.as_secs_f64().max(1e-3);
        let frames = (rate * self.opts.seconds).max(100_000.0) as u64;
        let timed = self.run_once(port, Amount::Frames(frames))?;
        acc.add(warm, timed);
        Ok(())
    }

    /// One extra chain run with the kernel's BPF run-time statistics on; returns ns per
    /// run of each program `read` reports (run time, run count), in its order.
    fn chain_prog_ns(
        &self,
        port: &Iface,
        mut read: impl FnMut() -> Result<Vec<(u64, u64)>>,
    ) -> Result<Vec<Option<f64>>> {
        let _stats = enable_stats(Stats::RunTime).context("enable BPF run-time statistics")?;
        let before = read()?;
        self.run_once(port, Amount::For(STATS_RUN))?;
        let after = read()?;
        Ok(before
            .iter()
            .zip(&after)
            .map(|((t0, n0), (t1, n1))| (n1 > n0).then(|| (t1 - t0) as f64 / (n1 - n0) as f64))
            .collect())
    }
}

/// Loads dcmesh on R's ingress with one next hop (the sink) and the one route.
fn load_dcmesh(topo: &Topology) -> Result<Datapath> {
    let mut dp = Datapath::load(None).context("load the dcmesh datapath")?;
    let sink_mac = topo.s0.mac;
    let route: IpNet = ONE_ROUTE.parse().expect("valid literal");
    topo.r.enter(|| -> Result<()> {
        dp.attach(topo.r0.name, AttachMode::Native)?;
        let nh = NextHopSpec::via_interface(topo.r1.name, sink_mac)?;
        dp.tables().set_nexthop(1, nh)?;
        // Misses are dropped and counted, never silently handed to a kernel that would
        // not forward them.
        dp.tables().set_miss_drop(true)?;
        dp.tables()
            .set_route(route, RouteTarget::Via { id: 1, alt: None })?;
        Ok(())
    })??;
    Ok(dp)
}

fn add_routes(dp: &mut Datapath, prefixes: &[ipnet::Ipv4Net], stop: &AtomicBool) -> Result<()> {
    for (i, p) in prefixes.iter().enumerate() {
        if i % 4096 == 0 && stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        dp.tables()
            .set_route(IpNet::V4(*p), RouteTarget::Via { id: 1, alt: None })?;
    }
    Ok(())
}

fn sink_check(a: &Acc) -> Check {
    let frac = a.received as f64 / a.generated.max(1) as f64;
    // The bare redirect also carries the few control frames the namespaces' own stacks
    // send (IPv6 router and neighbour solicitations), so allow a handful beyond the
    // generated count; many more would mean the sink counts something else.
    let stray = 16 + a.generated / 100_000;
    Check::new(
        "the sink counted the generated frames",
        a.received > 0 && a.received <= a.generated + stray && frac >= 0.99,
        format!(
            "{} of {} ({:.2} %, ≥ 99 % expected)",
            a.received,
            a.generated,
            frac * 100.0
        ),
    )
}

/// Evidence for a dcmesh case: R's counters moved only on `fwd_v4`, and the sink counted
/// no more than R forwarded.
fn dcmesh_checks(a: &Acc) -> Vec<Check> {
    let c = a.counters.clone().unwrap_or_default();
    let fwd = c.get(Counter::FwdV4).packets;
    let other: Vec<String> = c
        .named()
        .filter(|(k, v)| *k != Counter::FwdV4 && v.packets > 0)
        .map(|(k, v)| format!("{} +{}", k.name(), v.packets))
        .collect();
    vec![
        Check::new(
            "R's dcmesh counters: every frame forwarded, none passed or dropped",
            fwd > 0 && other.is_empty() && c.verdict(Verdict::Redirect) == fwd,
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
            a.generated >= fwd && fwd >= a.received && a.received > 0,
            format!(
                "{} ≥ {fwd} ≥ {} (the sink counted {:.2} % of R's forwards)",
                a.generated,
                a.received,
                a.received as f64 * 100.0 / fwd.max(1) as f64
            ),
        ),
    ]
}

/// What R's kernel accounted during a kernel case's repetitions.
#[derive(Default)]
struct KernelEv {
    /// `IpForwDatagrams` increase.
    forwarded: u64,
    /// Interface counters that grew on r0 and r1 (`ip -s -s link`), summed.
    r0: BTreeMap<String, u64>,
    r1: BTreeMap<String, u64>,
}

/// A repetition of a kernel case, with R's SNMP and interface counters read around it.
fn kernel_rep(bench: &Bench, acc: &mut Acc, ev: &mut KernelEv) -> Result<()> {
    let topo = bench.topo;
    let fwd0 = probe::nstat(&topo.r, "IpForwDatagrams")?;
    let r0a = probe::link_stats(&topo.r, topo.r0.name)?;
    let r1a = probe::link_stats(&topo.r, topo.r1.name)?;
    bench.rep(acc, &topo.g0)?;
    ev.forwarded += probe::nstat(&topo.r, "IpForwDatagrams")?.saturating_sub(fwd0);
    for (k, d) in probe::grown(&r0a, &probe::link_stats(&topo.r, topo.r0.name)?) {
        *ev.r0.entry(k).or_default() += d;
    }
    for (k, d) in probe::grown(&r1a, &probe::link_stats(&topo.r, topo.r1.name)?) {
        *ev.r1.entry(k).or_default() += d;
    }
    Ok(())
}

/// Evidence for a kernel case: R's IP stack forwarded what the sink counted, and nothing
/// was dropped as "otherhost" on R's ingress. The counters are read around the timed
/// repetitions and their warm-ups only.
fn kernel_checks(a: &Acc, ev: &KernelEv) -> Vec<Check> {
    let otherhost = ev.r0.get("rx.otherhost").copied().unwrap_or(0);
    let show = |v: &BTreeMap<String, u64>| {
        v.iter()
            .map(|(k, d)| format!("{k} +{d}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fwd = ev.forwarded;
    vec![
        Check::new(
            "nstat IpForwDatagrams: generated ≥ R forwarded ≥ sink counted",
            a.generated >= fwd && fwd >= a.received && a.received > 0,
            format!("{} ≥ {fwd} ≥ {}", a.generated, a.received),
        ),
        Check::new(
            "no frame dropped as otherhost on r0",
            otherhost == 0,
            format!("ip -s -s link: r0 {}; r1 {}", show(&ev.r0), show(&ev.r1)),
        ),
    ]
}

/// One line on where a chain's time goes, from the in-chain BPF statistics of the
/// generator, R's program and the sink.
fn stage_note(case: Case, ns: &[Option<f64>]) -> String {
    let f = |x: Option<&Option<f64>>| {
        x.copied()
            .flatten()
            .map_or("—".to_string(), |v| format!("{v:.1} ns"))
    };
    format!(
        "{}: BPF run time per packet in the chain: generator {}, R's program {}, sink {}; \
         the rest of the chain's time per packet is kernel work (live-frame pages, \
         redirect, veth transmit, NAPI)",
        case.label(),
        f(ns.first()),
        f(ns.get(1)),
        f(ns.get(2)),
    )
}

fn progress(case: Case, a: &Acc) {
    if let (Some(m), Some(s)) = (a.mpps.last(), a.cpu_share.last()) {
        eprintln!(
            "  {:<36} {m:6.3} Mpps (generator on CPU {:.0} %)",
            case.label(),
            s * 100.0
        );
    }
}

/// Runs every case and returns the report (not yet written anywhere).
pub fn run(opts: &Options, stop: &AtomicBool) -> Result<Report> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    ensure!(
        root,
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
        "--cpu {cpu}: this machine has CPUs 0..={}",
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
        topo.r.enter(|| tools.set_ceiling_port(topo.r1.index))??;
        topo.gen
            .enter(|| tools.hold_generator(dcmesh_loader::ifindex("lo")?))??;
    }
    let table = routes::generate(opts.routes, opts.destinations, ROUTE_SEED);
    let big_name = format!("{} routes", opts.routes);
    let one = [topo.chain_frame(ONE_DST, TTL)];
    let many: Vec<_> = table
        .destinations
        .iter()
        .map(|d| topo.chain_frame(*d, TTL))
        .collect();
    let direct = [topo.direct_frame(ONE_DST, TTL)];
    let one_paths = PathFrames::new(&topo, &[ONE_DST]);
    let many_paths = PathFrames::new(&topo, &table.destinations);

    let mut report = Report::default();
    let (mut a_direct, mut a_ceil, mut a_one, mut a_many) = (
        Acc::default(),
        Acc::default(),
        Acc::default(),
        Acc::default(),
    );
    let (mut ceil_ns, mut one_ns, mut many_ns) = (None, None, None);
    let (mut ceil_chain, mut one_chain, mut many_chain) = (None, None, None);
    let mut path_checks: [Vec<Check>; 2] = Default::default();
    let (mut a_k1, mut a_k1_ev) = (Acc::default(), KernelEv::default());
    // Linux forwarding is set up once: while an XDP program holds r0 it sees nothing
    // (dcmesh's counters would show any frame handed to it).
    topo.kernel_forwarding(ONE_ROUTE)?;

    for round in 0..opts.reps {
        let last = round + 1 == opts.reps;
        eprintln!("round {}/{}", round + 1, opts.reps);

        // (0) direct.
        bench.prepare(&topo.gd, &direct)?;
        bench.rep(&mut a_direct, &topo.gd)?;
        progress(Case::Direct, &a_direct);

        // (1) ceiling.
        bench.prepare(&topo.g0, &one)?;
        let link = {
            let tools = &mut bench.tools;
            topo.r.enter(|| tools.attach_ceiling(topo.r0.index))??
        };
        bench.rep(&mut a_ceil, &topo.g0)?;
        progress(Case::Ceiling, &a_ceil);
        if last {
            let t = &bench.tools;
            ceil_ns = Some(cost::test_run_ns(
                t.ceiling()?,
                &one_paths.forward,
                opts.test_run_packets,
                LONG_REPEAT,
                stop,
            )?);
            report.paths.push(cost::reference_cost(
                t.ceiling()?,
                "redirect_only: devmap redirect",
                &one_paths.forward[0],
                opts.test_run_packets / 5,
                stop,
            )?);
            report.paths.push(cost::reference_cost(
                t.sink()?,
                "bench_sink: count, drop",
                &one_paths.forward[0],
                opts.test_run_packets / 5,
                stop,
            )?);
            let ns = bench.chain_prog_ns(&topo.g0, || {
                Ok(vec![
                    cost::prog_stats(t.generator()?)?,
                    cost::prog_stats(t.ceiling()?)?,
                    cost::prog_stats(t.sink()?)?,
                ])
            })?;
            report.notes.push(stage_note(Case::Ceiling, &ns));
            ceil_chain = ns.get(1).copied().flatten();
        }
        bench.tools.detach_ceiling(link)?;

        // (2) dcmesh, one route, freshly loaded.
        let mut dp = load_dcmesh(&topo)?;
        bench.prepare(&topo.g0, &one)?;
        let c0 = dp.tables().counters()?;
        bench.rep(&mut a_one, &topo.g0)?;
        a_one.add_counters(dp.tables().counters()?.since(&c0));
        progress(Case::Dcmesh1, &a_one);
        if last {
            let (rows, checks) =
                cost::path_costs(&mut dp, "1 route", &one_paths, opts.test_run_packets, stop)?;
            one_ns = rows
                .iter()
                .find(|r| r.counter == Counter::FwdV4.name())
                .map(|r| r.ns);
            report.paths.extend(rows);
            path_checks[0] = checks;
            let ns = dcmesh_chain_ns(&bench, &mut dp)?;
            report.notes.push(stage_note(Case::Dcmesh1, &ns));
            one_chain = ns.get(1).copied().flatten();
        }

        // (3) dcmesh, large table.
        let t0 = Instant::now();
        add_routes(&mut dp, &table.prefixes, stop)?;
        if round == 0 {
            eprintln!(
                "  loaded {} routes into dcmesh in {:.1} s",
                table.prefixes.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        bench.prepare(&topo.g0, &many)?;
        let c0 = dp.tables().counters()?;
        bench.rep(&mut a_many, &topo.g0)?;
        a_many.add_counters(dp.tables().counters()?.since(&c0));
        progress(Case::DcmeshMany, &a_many);
        if last {
            let (rows, checks) =
                cost::path_costs(&mut dp, &big_name, &many_paths, opts.test_run_packets, stop)?;
            many_ns = rows
                .iter()
                .find(|r| r.counter == Counter::FwdV4.name())
                .map(|r| r.ns);
            report.paths.extend(rows);
            path_checks[1] = checks;
            let ns = dcmesh_chain_ns(&bench, &mut dp)?;
            report.notes.push(stage_note(Case::DcmeshMany, &ns));
            many_chain = ns.get(1).copied().flatten();
        }
        // Dropping the datapath detaches it from r0.
        drop(dp);

        // (4) Linux forwarding, one route.
        bench.prepare(&topo.g0, &one)?;
        kernel_rep(&bench, &mut a_k1, &mut a_k1_ev)?;
        progress(Case::Kernel1, &a_k1);
        bench.check_stop()?;
    }
    let [one_checks, many_checks] = path_checks;
    report.cases.push((Case::Direct, {
        let c = vec![sink_check(&a_direct)];
        a_direct.into_result(c)
    }));
    report.cases.push((Case::Ceiling, {
        let c = vec![sink_check(&a_ceil)];
        CaseResult {
            prog_ns: ceil_ns,
            chain_prog_ns: ceil_chain,
            ..a_ceil.into_result(c)
        }
    }));
    for (case, acc, ns, chain, extra) in [
        (Case::Dcmesh1, a_one, one_ns, one_chain, one_checks),
        (Case::DcmeshMany, a_many, many_ns, many_chain, many_checks),
    ] {
        let mut c = dcmesh_checks(&acc);
        c.extend(extra);
        report.cases.push((
            case,
            CaseResult {
                prog_ns: ns,
                chain_prog_ns: chain,
                ..acc.into_result(c)
            },
        ));
    }

    report.cases.push((Case::Kernel1, {
        let c = kernel_checks(&a_k1, &a_k1_ev);
        a_k1.into_result(c)
    }));

    // (4b): the large table in R's FIB; after the rounds, as it would slow (4).
    let t0 = Instant::now();
    topo.kernel_routes(&table.prefixes)?;
    eprintln!(
        "  loaded {} routes into R's FIB in {:.1} s",
        table.prefixes.len(),
        t0.elapsed().as_secs_f64()
    );
    bench.prepare(&topo.g0, &many)?;
    let (mut acc, mut ev) = (Acc::default(), KernelEv::default());
    for _ in 0..opts.reps {
        kernel_rep(&bench, &mut acc, &mut ev)?;
        progress(Case::KernelMany, &acc);
    }
    let c = kernel_checks(&acc, &ev);
    report.cases.push((Case::KernelMany, acc.into_result(c)));

    meta.load_after = probe::loadavg();
    meta.wall_seconds = started.elapsed().as_secs_f64();
    report.meta = meta;
    Ok(report)
}

fn dcmesh_chain_ns(bench: &Bench, dp: &mut Datapath) -> Result<Vec<Option<f64>>> {
    let t = &bench.tools;
    bench.chain_prog_ns(&bench.topo.g0, || {
        Ok(vec![
            cost::prog_stats(t.generator()?)?,
            cost::prog_stats(dp.program()?)?,
            cost::prog_stats(t.sink()?)?,
        ])
    })
}

/// Writes the report to `dir/forward-<UTC date>.md` and `dir/forward-latest.md`.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
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
