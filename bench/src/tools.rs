//! The benchmark's helper programs (loader's `TOOLS_OBJ`): the live-frames generator, the
//! counting sink and the redirect-only ceiling, with typed handles on their maps.
//!
//! Interface indexes are per network namespace, and the kernel resolves the ones written
//! into a devmap, an XDP attachment or a live-frames context in the namespace of the
//! calling thread: callers run those methods inside `Netns::enter` of the right namespace.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, DevMap, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use dcmesh_loader::TOOLS_OBJ;
use dcmesh_schema::bench::{GenConfig, Template, GEN_MAX_TEMPLATES};

use crate::frames::FRAME_LEN;

const GEN: &str = "bench_gen";
const SINK: &str = "bench_sink";
const CEILING: &str = "redirect_only";

/// Frames per `BPF_PROG_TEST_RUN` call of the generator: about 0.1 s at the fastest rate
/// measured here, short enough for Ctrl-C and the time limit to be honoured promptly.
const GEN_CHUNK: u32 = 500_000;

/// The loaded helper programs and their maps.
pub struct Tools {
    ebpf: Ebpf,
    templates: Array<MapData, Template>,
    config: Array<MapData, GenConfig>,
    gen_tx: DevMap<MapData>,
    sink_count: PerCpuArray<MapData, u64>,
    redirect_tx: DevMap<MapData>,
}

/// What one generator run sent.
#[derive(Clone, Copy, Debug)]
pub struct GenRun {
    /// Frames the generator program ran on (each redirected out, or dropped by the kernel
    /// if the interface could not take it).
    pub frames: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

fn map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from TOOLS_OBJ (rebuild the loader)"))?;
    T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
}

impl Tools {
    /// Loads the three programs into the kernel.
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(TOOLS_OBJ).context("load the bench tools object")?;
        for name in [GEN, SINK, CEILING] {
            prog_mut(&mut ebpf, name)?
                .load()
                .with_context(|| format!("load program {name}"))?;
        }
        Ok(Self {
            templates: map(&mut ebpf, "GEN_TEMPLATES")?,
            config: map(&mut ebpf, "GEN_CONFIG")?,
            gen_tx: map(&mut ebpf, "GEN_TX")?,
            sink_count: map(&mut ebpf, "SINK_COUNT")?,
            redirect_tx: map(&mut ebpf, "REDIRECT_TX")?,
            ebpf,
        })
    }

    /// Sets the frames the generator cycles through (round robin, at most
    /// `GEN_MAX_TEMPLATES`).
    pub fn set_templates(&mut self, frames: &[[u8; FRAME_LEN]]) -> Result<()> {
        if frames.is_empty() || frames.len() > GEN_MAX_TEMPLATES as usize {
            bail!(
                "{} templates: the generator takes 1..={GEN_MAX_TEMPLATES}",
                frames.len()
            );
        }
        for (i, f) in frames.iter().enumerate() {
            self.templates
                .set(i as u32, Template { bytes: *f }, 0)
                .context("write GEN_TEMPLATES")?;
        }
        self.config
            .set(
                0,
                GenConfig {
                    templates: frames.len() as u32,
                },
                0,
            )
            .context("write GEN_CONFIG")
    }

    /// Points the generator at `ifindex`. Call inside the generator's namespace.
    pub fn set_gen_port(&mut self, ifindex: u32) -> Result<()> {
        self.gen_tx
            .set(0, ifindex, None, 0)
            .with_context(|| format!("GEN_TX[0] = interface #{ifindex}"))
    }

    /// Points the ceiling program at `ifindex`. Call inside the router's namespace.
    pub fn set_ceiling_port(&mut self, ifindex: u32) -> Result<()> {
        self.redirect_tx
            .set(0, ifindex, None, 0)
            .with_context(|| format!("REDIRECT_TX[0] = interface #{ifindex}"))
    }

    /// Attaches the sink (native XDP) to `ifindex`. Call inside the sink's namespace.
    pub fn attach_sink(&mut self, ifindex: u32) -> Result<XdpLinkId> {
        attach(prog_mut(&mut self.ebpf, SINK)?, ifindex, SINK)
    }

    /// Attaches the generator in generic mode to `ifindex` (gen's loopback, which carries
    /// no traffic). This keeps it in the kernel's XDP dispatcher: otherwise every
    /// `BPF_PROG_TEST_RUN` call with `repeat > 1` swaps it in and out, waiting for an RCU
    /// grace period each time, and those waits would count as generator time. Call
    /// inside the generator's namespace.
    pub fn hold_generator(&mut self, ifindex: u32) -> Result<XdpLinkId> {
        prog_mut(&mut self.ebpf, GEN)?
            .attach_to_if_index(ifindex, XdpMode::Skb)
            .with_context(|| format!("attach bench_gen (generic XDP) to interface #{ifindex}"))
    }

    /// Attaches the ceiling program (native XDP) to `ifindex`. Call inside the router's
    /// namespace.
    pub fn attach_ceiling(&mut self, ifindex: u32) -> Result<XdpLinkId> {
        attach(prog_mut(&mut self.ebpf, CEILING)?, ifindex, CEILING)
    }

    /// Detaches the ceiling program.
    pub fn detach_ceiling(&mut self, link: XdpLinkId) -> Result<()> {
        prog_mut(&mut self.ebpf, CEILING)?
            .detach(link)
            .context("detach redirect_only")
    }

    /// Frames the sink has counted since it was loaded (all CPUs).
    pub fn sink_count(&self) -> Result<u64> {
        Ok(self
            .sink_count
            .get(&0, 0)
            .context("read SINK_COUNT")?
            .iter()
            .sum())
    }

    /// The generator program (for run statistics).
    pub fn generator(&self) -> Result<&Xdp> {
        prog(&self.ebpf, GEN)
    }

    /// The sink program (for run statistics).
    pub fn sink(&self) -> Result<&Xdp> {
        prog(&self.ebpf, SINK)
    }

    /// The ceiling program.
    pub fn ceiling(&self) -> Result<&Xdp> {
        prog(&self.ebpf, CEILING)
    }

    /// Runs the generator in live-frames mode for `amount`, as if the frames arrived on
    /// `ingress_ifindex` (the interface it redirects to). Call inside the generator's
    /// namespace, on the thread to be measured. Stops early, with an error, when `stop`
    /// is set (checked between calls).
    pub fn generate(
        &self,
        ingress_ifindex: u32,
        amount: Amount,
        batch: u32,
        stop: &AtomicBool,
    ) -> Result<GenRun> {
        let prog = self.generator()?;
        let data = [0u8; FRAME_LEN];
        let ctx = xdp_md(FRAME_LEN as u32, ingress_ifindex);
        let start = Instant::now();
        let mut frames = 0u64;
        loop {
            let repeat = match amount {
                Amount::For(d) if start.elapsed() < d => GEN_CHUNK,
                Amount::Frames(n) if frames < n => (n - frames).min(u64::from(u32::MAX)) as u32,
                _ => break,
            };
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let r = prog.test_run(TestRunOptions {
                data_in: Some(&data),
                ctx_in: Some(&ctx),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::new()
            });
            match r {
                Ok(_) => frames += u64::from(repeat),
                Err(e) if is_eintr(&e) && stop.load(Ordering::Relaxed) => bail!("interrupted"),
                Err(e) => return Err(e).context("BPF_PROG_TEST_RUN (live frames) of bench_gen"),
            }
        }
        Ok(GenRun {
            frames,
            elapsed: start.elapsed(),
        })
    }
}

/// How much a generator run sends.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    /// Calls of `GEN_CHUNK` frames until this much time has passed.
    For(Duration),
    /// This many frames, in as few calls as possible: each call takes the kernel's XDP
    /// dispatcher lock, which other processes' XDP attachments may hold for an RCU grace
    /// period, so a timed repetition makes one call.
    Frames(u64),
}

fn is_eintr(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EINTR))
}

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` takes it: data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, egress_ifindex (all u32, native endian).
pub fn xdp_md(data_end: u32, ingress_ifindex: u32) -> [u8; 24] {
    let fields = [0, data_end, 0, ingress_ifindex, 0, 0];
    let mut out = [0u8; 24];
    for (chunk, v) in out.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    out
}

fn prog_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from TOOLS_OBJ"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

fn prog<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    ebpf.program(name)
        .ok_or_else(|| anyhow!("program {name} missing from TOOLS_OBJ"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

fn attach(prog: &mut Xdp, ifindex: u32, name: &str) -> Result<XdpLinkId> {
    prog.attach_to_if_index(ifindex, XdpMode::Driver)
        .with_context(|| format!("attach {name} (native XDP) to interface #{ifindex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_md_layout() {
        let md = xdp_md(64, 7);
        assert_eq!(u32::from_ne_bytes(md[4..8].try_into().unwrap()), 64);
        assert_eq!(u32::from_ne_bytes(md[12..16].try_into().unwrap()), 7);
        assert!(md[..4]
            .iter()
            .chain(&md[8..12])
            .chain(&md[16..])
            .all(|b| *b == 0));
    }
}
