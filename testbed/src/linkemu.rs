//! Userspace side of the link-emulation program (ebpf/src/link_emu.rs): per-interface
//! frame loss, changed at run time, and per-interface pass/drop counters.
use aya::{
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::{Xdp, XdpMode},
    Ebpf,
};
use dcmesh_loader::TOOLS_OBJ;

use crate::Netns;

const PROGRAM: &str = "dcmesh_link_emu";
const LOSS_MAP: &str = "LINK_EMU_LOSS";
const STATS_MAP: &str = "LINK_EMU_STATS";

/// Why the emulation failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkEmuError {
    #[error("load the link emulation program: {0}")]
    Load(String),
    #[error("attach link emulation to {iface} in {ns}: {reason}")]
    Attach {
        iface: String,
        ns: String,
        reason: String,
    },
    #[error("link emulation map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("loss {0} is not a probability in 0..=1")]
    Loss(f64),
}

/// Frames counted on one interface's ingress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfStats {
    pub passed: u64,
    pub passed_bytes: u64,
    pub dropped: u64,
    pub dropped_bytes: u64,
}

impl IfStats {
    /// Counts since `earlier`.
    pub fn since(&self, earlier: &IfStats) -> IfStats {
        IfStats {
            passed: self.passed.saturating_sub(earlier.passed),
            passed_bytes: self.passed_bytes.saturating_sub(earlier.passed_bytes),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            dropped_bytes: self.dropped_bytes.saturating_sub(earlier.dropped_bytes),
        }
    }
}

/// The drop threshold for loss probability `p`: a frame is dropped when a uniform
/// 32-bit random number is below it. `p = 1` gives 2³², which drops every frame.
pub fn loss_threshold(p: f64) -> Result<u64, LinkEmuError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(LinkEmuError::Loss(p));
    }
    Ok((p * 4_294_967_296.0).round() as u64)
}

/// One loaded instance of the program, attached to any number of interfaces (of one or
/// more namespaces). Dropping it detaches everything.
pub struct LinkEmu {
    ebpf: Ebpf,
    loss: HashMap<MapData, u32, u64>,
    stats: PerCpuHashMap<MapData, u32, [u64; 4]>,
    cpus: usize,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> LinkEmuError {
    move |e| LinkEmuError::Map {
        map,
        reason: e.to_string(),
    }
}

impl LinkEmu {
    /// Loads the program (needs root).
    pub fn load() -> Result<Self, LinkEmuError> {
        let mut ebpf = Ebpf::load(TOOLS_OBJ).map_err(|e| LinkEmuError::Load(e.to_string()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| LinkEmuError::Load(format!("{PROGRAM} missing from the tools object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| LinkEmuError::Load(e.to_string()))?;
        prog.load().map_err(|e| LinkEmuError::Load(e.to_string()))?;
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| LinkEmuError::Map {
                map: name,
                reason: "missing from the tools object".into(),
            })
        };
        let loss = HashMap::try_from(take(&mut ebpf, LOSS_MAP)?).map_err(map_err(LOSS_MAP))?;
        let stats =
            PerCpuHashMap::try_from(take(&mut ebpf, STATS_MAP)?).map_err(map_err(STATS_MAP))?;
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| LinkEmuError::Load(format!("{what}: {e}")))?;
        Ok(Self {
            ebpf,
            loss,
            stats,
            cpus,
        })
    }

    /// Attaches to `iface` in `ns` (native XDP, as veth supports it) and registers its
    /// counters. Returns the interface index (the key for [`LinkEmu::set_loss`]).
    pub fn attach(&mut self, ns: &Netns, iface: &str) -> Result<u32, LinkEmuError> {
        let err = |reason: String| LinkEmuError::Attach {
            iface: iface.into(),
            ns: ns.name().into(),
            reason,
        };
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| err("program missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
        let index = ns
            .enter(|| -> Result<u32, String> {
                let index = dcmesh_loader::ifindex(iface).map_err(|e| e.to_string())?;
                prog.attach_to_if_index(index, XdpMode::Driver)
                    .map_err(|e| e.to_string())?;
                Ok(index)
            })
            .map_err(|e| err(e.to_string()))?
            .map_err(err)?;
        let zero =
            PerCpuValues::try_from(vec![[0u64; 4]; self.cpus]).map_err(|e| err(e.to_string()))?;
        self.stats
            .insert(index, zero, 0)
            .map_err(map_err(STATS_MAP))?;
        self.loss.insert(index, 0, 0).map_err(map_err(LOSS_MAP))?;
        Ok(index)
    }

    /// Sets the loss probability of frames arriving on interface `ifindex`.
    pub fn set_loss(&mut self, ifindex: u32, p: f64) -> Result<(), LinkEmuError> {
        let t = loss_threshold(p)?;
        self.loss.insert(ifindex, t, 0).map_err(map_err(LOSS_MAP))
    }

    /// The loss probability currently set on `ifindex`.
    pub fn loss(&self, ifindex: u32) -> f64 {
        self.loss
            .get(&ifindex, 0)
            .map_or(0.0, |t| (t as f64 / 4_294_967_296.0).min(1.0))
    }

    /// Counters of `ifindex`, summed over CPUs.
    pub fn stats(&self, ifindex: u32) -> Result<IfStats, LinkEmuError> {
        let v = self.stats.get(&ifindex, 0).map_err(map_err(STATS_MAP))?;
        let mut s = IfStats::default();
        for c in v.iter() {
            s.passed += c[0];
            s.passed_bytes += c[1];
            s.dropped += c[2];
            s.dropped_bytes += c[3];
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_cover_the_range() {
        assert_eq!(loss_threshold(0.0).unwrap(), 0);
        assert_eq!(loss_threshold(1.0).unwrap(), 1 << 32);
        assert_eq!(loss_threshold(0.5).unwrap(), 1 << 31);
        assert!(loss_threshold(-0.1).is_err());
        assert!(loss_threshold(1.01).is_err());
        assert!(loss_threshold(f64::NAN).is_err());
    }
}
