//! What one run of an XDP program costs, from `BPF_PROG_TEST_RUN` (the program alone) and
//! from the kernel's BPF run-time statistics (the program inside the running chain).
//!
//! Test runs must happen while the program is attached somewhere: with `repeat > 1` the
//! kernel swaps the program into the XDP dispatcher for each call, and for a program that
//! is not already there that costs an RCU grace period per call.
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use dcmesh_loader::Datapath;
use dcmesh_schema::Counter;

use crate::{
    frames::FRAME_LEN,
    report::{Check, PathCost},
    topology::Topology,
};

/// The kernel does not restore the frame between repeats and the forwarder lowers the
/// TTL in place, so a TTL-255 frame forwards exactly 254 times per call.
pub const TEST_TTL: u8 = 255;
pub const TEST_REPEAT: u32 = 254;
/// Repeats per call for frames the program leaves unchanged.
pub const LONG_REPEAT: u32 = 1_000_000;
/// A destination no table routes (10/8 holds only the benchmark's links, never routed).
const MISS_DST: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// TTL of frames that are not meant to be forwarded.
const TTL: u8 = 64;

/// Run time and run count of `p` (advance only while BPF statistics are enabled).
pub fn prog_stats(p: &Xdp) -> Result<(u64, u64)> {
    let i = p.info().context("read program info")?;
    Ok((i.run_time().as_nanos() as u64, i.run_count()))
}

/// Mean ns per run of `prog` over about `packets` runs (`BPF_PROG_TEST_RUN`, not live),
/// `repeat` runs per call, cycling over `frames` call by call.
pub fn test_run_ns(
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
pub fn whole_calls(packets: u64, repeat: u32) -> u64 {
    packets.div_ceil(u64::from(repeat)).max(1) * u64::from(repeat)
}

/// Frames that leave the forwarder at successive stages.
pub struct PathFrames {
    non_ip: Vec<[u8; FRAME_LEN]>,
    bad_csum: Vec<[u8; FRAME_LEN]>,
    miss: Vec<[u8; FRAME_LEN]>,
    ttl1: Vec<[u8; FRAME_LEN]>,
    /// TTL-255 frames to each destination (also the ceiling's test frame).
    pub forward: Vec<[u8; FRAME_LEN]>,
}

impl PathFrames {
    /// Frames to `dsts` (at least one), addressed to R.
    pub fn new(topo: &Topology, dsts: &[Ipv4Addr]) -> Self {
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

/// The cost of each path through the forwarder (route miss policy must be "drop"). Each
/// path but the last extends the one before it, so the differences say what each stage
/// costs; every row's counter must move by exactly its runs.
pub fn path_costs(
    dp: &mut Datapath,
    table: &str,
    frames: &PathFrames,
    packets: u64,
    stop: &AtomicBool,
) -> Result<(Vec<PathCost>, Vec<Check>)> {
    type Row<'a> = (&'a str, Counter, &'a [[u8; FRAME_LEN]], Option<usize>);
    let paths: [Row; 5] = [
        (
            "not IP: parse Ethernet, count",
            Counter::PassNonIp,
            &frames.non_ip,
            None,
        ),
        (
            "IPv4 with a bad header checksum: + IPv4 checks and checksum",
            Counter::DropBadChecksum,
            &frames.bad_csum,
            Some(0),
        ),
        (
            "IPv4 hit, TTL 1: + route lookup, next-hop checks",
            Counter::PassTtl,
            &frames.ttl1,
            Some(1),
        ),
        (
            "IPv4 forwarded: + TTL, checksum, MACs, redirect",
            Counter::FwdV4,
            &frames.forward,
            Some(2),
        ),
        (
            "IPv4 miss (dropped): + route lookup, config",
            Counter::DropMiss,
            &frames.miss,
            Some(1),
        ),
    ];
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for (path, counter, f, extends) in paths {
        // Unchanged frames repeat at length; the forwarded one lowers its TTL in place,
        // and several destinations are cycled call by call.
        let repeat = if counter == Counter::FwdV4 || f.len() > 1 {
            TEST_REPEAT
        } else {
            LONG_REPEAT
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
            extends,
        });
    }
    Ok((rows, checks))
}

/// Test-run cost of a helper program on `frame`, as a reference row.
pub fn reference_cost(
    prog: &Xdp,
    what: &str,
    frame: &[u8; FRAME_LEN],
    packets: u64,
    stop: &AtomicBool,
) -> Result<PathCost> {
    Ok(PathCost {
        table: "reference programs".into(),
        path: what.into(),
        counter: "—",
        ns: test_run_ns(
            prog,
            std::slice::from_ref(frame),
            packets,
            LONG_REPEAT,
            stop,
        )?,
        extends: None,
    })
}
