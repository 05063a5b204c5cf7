//! TSN lanes: loads the TC egress program (`dcmesh-lanes`), attaches it (TCX, or clsact on
//! kernels before 6.6), builds the HTB queues it steers into, and switches plans.
//!
//! Plans are double-buffered: [`Lanes::apply`] writes the idle slot and publishes the
//! switch with one atomic store into an mmap'ed control word, effective at the first cycle
//! boundary of the new schedule (802.1Qbv's config change time), so no packet ever sees a
//! half-written plan and no cycle is cut at an arbitrary point.
//!
//! [`setup`] does all of it for an interface from a `[lanes]` configuration; [`setup_pinned`]
//! does it so that the lanes outlive the process: the maps are pinned under a directory
//! and the TCX link is pinned there too, so the gates stay enforced (and the counters keep
//! counting) while no daemon runs. A later `setup_pinned` reuses the maps, swaps the
//! program in atomically (`bpf_link_update`: no frame ever misses the program), keeps the
//! queues, and switches the plan only if it changed, at a cycle boundary. [`remove`] takes
//! it all away.
//!
//! Pin layout under the directory (e.g. `<pin_dir>/lanes/<iface>/`): `link` (the TCX link,
//! which holds the program) and `maps/<MAP NAME>` for the plans, control word and counters.

mod queues;

use std::{
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use aya::{
    maps::{Array, Map, MapData, MapInfo, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use dcmesh_schema::{
    lanes::{
        self, counter_index, global_index, maps, Global, LaneCtl, LaneSlot, NUM_COUNTERS, SLOTS,
    },
    CounterValue,
};
use dcmesh_tsn::{
    config::{Compiled, ConfigErrors, LanesConfig},
    plan::PLAN_F_VALID,
    Action, Plan, LANES,
};

pub use queues::{
    build_queues, class_stats, existing_htb, lane_class, lane_minor, parse_class_stats,
    parse_htb_root, qdisc_unknown, remove_queues, ActiveMode, ClassStats, EdtQdisc, QueueSpec,
    DEFAULT_MAJOR,
};

use crate::error::{chain, require_root};

/// The lanes eBPF object (built by build.rs from ebpf/).
pub static LANES_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcmesh-lanes"));

/// A plan switch is published at least this long before it takes effect, in ns.
const SWITCH_LEAD_NS: u64 = 100_000;
/// A slot is rewritten only this long after it stopped being used, in ns: no program run
/// that read it can still be going on.
const SLOT_SETTLE_NS: u64 = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum LanesError {
    #[error(transparent)]
    Loader(#[from] crate::LoaderError),
    #[error("invalid [lanes] configuration:\n{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot run tc (iproute2 is needed to build the lane queues): {0}")]
    TcMissing(#[source] std::io::Error),
    #[error("`tc {args}` failed: {stderr}")]
    Tc { args: String, stderr: String },
    #[error("mode \"edt\" was asked for, but this kernel has neither the fq nor the etf qdisc; load sch_fq, or set mode = \"auto\" or \"admission\"")]
    NoEdtQdisc,
    #[error("cannot attach the lanes program to the egress of \"{iface}\": {reason}")]
    Attach { iface: String, reason: String },
    #[error("cannot map the lanes control word: {0}")]
    Mmap(#[source] std::io::Error),
    #[error("the plan is not marked valid (compile it from a configuration)")]
    InvalidPlan,
    #[error("pinned lanes map {path} does not fit this build ({what}); remove the old lanes with \"dcmesh lanes remove --interface IF\" and start again")]
    Incompatible { path: PathBuf, what: String },
    #[error("no lanes installed on \"{iface}\" (nothing pinned under {dir} and no HTB root {major:x}: on it)")]
    NotInstalled {
        iface: String,
        dir: PathBuf,
        major: u16,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The lanes program, loaded, and its maps.
pub struct Lanes {
    ebpf: Ebpf,
    plans: Array<MapData, LaneSlot>,
    counters: PerCpuArray<MapData, CounterValue>,
    test_clock: Array<MapData, u64>,
    ctl: CtlWord,
    links: Vec<(String, SchedClassifierLink)>,
    pin_dir: Option<PathBuf>,
    reused: bool,
}

/// What [`Lanes::attach`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneAttach {
    /// A new TCX link, pinned: the program stays attached when this process exits.
    Pinned,
    /// A pinned link was already there: the program was swapped in atomically.
    Replaced,
    /// Attached without a pin (no pin directory, or a kernel before 6.6 without TCX, whose
    /// clsact filters cannot be pinned): detached when this value is dropped.
    Unpinned,
}

/// When a plan takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The slot it went into.
    pub slot: u32,
    /// CLOCK_TAI ns from which it is in force (0: at once, there was no plan before).
    pub at_tai_ns: u64,
}

impl Lanes {
    /// Loads the program and its maps. Nothing is attached yet, and until a plan is
    /// applied every frame passes untouched (counted as `no_plan`).
    pub fn load() -> Result<Self, LanesError> {
        Self::load_with(None)
    }

    /// Loads the program with its maps pinned under `dir/maps` (created on a bpffs if
    /// needed). Maps already pinned there are reused: the plan in force, the pending
    /// switch and the counters carry on.
    pub fn load_pinned(dir: &Path) -> Result<Self, LanesError> {
        Self::load_with(Some(dir))
    }

    fn load_with(dir: Option<&Path>) -> Result<Self, LanesError> {
        require_root()?;
        let mut loader = EbpfLoader::new();
        let mut reused = false;
        let paths: Vec<(&str, PathBuf)> = match dir {
            None => Vec::new(),
            Some(d) => {
                crate::bpffs::ensure_dir(&d.join("maps"))?;
                PINNED_MAPS
                    .iter()
                    .map(|(name, _)| (*name, d.join("maps").join(name)))
                    .collect()
            }
        };
        for ((name, want), (_, path)) in PINNED_MAPS.iter().zip(&paths) {
            if path.exists() {
                check_pinned(path, *want)?;
                reused = true;
            }
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(LANES_OBJ).map_err(crate::LoaderError::load)?;
        let prog = program(&mut ebpf)?;
        prog.load().map_err(crate::LoaderError::program)?;
        let plans = Array::try_from(take(&mut ebpf, maps::PLANS)?)
            .map_err(crate::LoaderError::map(maps::PLANS))?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, maps::COUNTERS)?)
            .map_err(crate::LoaderError::map(maps::COUNTERS))?;
        let test_clock = Array::try_from(take(&mut ebpf, maps::TEST_CLOCK)?)
            .map_err(crate::LoaderError::map(maps::TEST_CLOCK))?;
        let ctl = match take(&mut ebpf, maps::CTL)? {
            Map::Array(data) => CtlWord::map(data)?,
            _ => {
                return Err(crate::LoaderError::Map {
                    map: maps::CTL,
                    reason: "not an array map".into(),
                }
                .into())
            }
        };
        Ok(Self {
            ebpf,
            plans,
            counters,
            test_clock,
            ctl,
            links: Vec::new(),
            pin_dir: dir.map(Path::to_path_buf),
            reused,
        })
    }

    /// Whether pinned maps from an earlier run were reused.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> Result<&mut SchedClassifier, LanesError> {
        program(&mut self.ebpf)
    }

    /// Attaches to the egress of `iface` (in the calling thread's network namespace).
    /// Loaded with a pin directory, the link is pinned there (or, if one is pinned already,
    /// the program replaces the one it runs, atomically) and outlives this value;
    /// otherwise the program stays attached while this value lives.
    pub fn attach(&mut self, iface: &str) -> Result<LaneAttach, LanesError> {
        let attach_err = |e: &dyn std::error::Error| LanesError::Attach {
            iface: iface.into(),
            reason: chain(e),
        };
        let link_pin = self.pin_dir.as_ref().map(|d| d.join(LINK_PIN));
        let prog = program(&mut self.ebpf)?;
        if let Some(path) = link_pin.as_ref().filter(|p| p.exists()) {
            match replace_pinned(prog, path) {
                Ok(()) => return Ok(LaneAttach::Replaced),
                // The interface went away and came back (or the link was detached by
                // hand): the pin is stale, attach afresh.
                Err(e) => {
                    log::warn!(
                        "{iface}: pinned lanes link {} is stale ({e}); attaching anew",
                        path.display()
                    );
                    std::fs::remove_file(path).map_err(|e| LanesError::Io {
                        what: format!("remove stale pin {}", path.display()),
                        source: e,
                    })?;
                }
            }
        }
        let id = match prog.attach(iface, TcAttachType::Egress) {
            Ok(id) => id,
            // Before Linux 6.6 (no TCX) programs hang off a clsact qdisc.
            Err(first) => {
                aya::programs::tc::qdisc_add_clsact(iface).map_err(|e| attach_err(&e))?;
                prog.attach(iface, TcAttachType::Egress)
                    .map_err(|_| attach_err(&first))?
            }
        };
        let link = prog.take_link(id).map_err(|e| attach_err(&e))?;
        let Some(path) = link_pin else {
            self.links.push((iface.to_string(), link));
            return Ok(LaneAttach::Unpinned);
        };
        if <&FdLink>::try_from(&link).is_err() {
            log::warn!(
                "{iface}: the lanes program is attached through clsact (no TCX before Linux 6.6); such a filter cannot be pinned and is detached when dcmesh exits"
            );
            self.links.push((iface.to_string(), link));
            return Ok(LaneAttach::Unpinned);
        }
        let fd = FdLink::try_from(link).map_err(|e| attach_err(&e))?;
        fd.pin(&path).map_err(|e| LanesError::Attach {
            iface: iface.into(),
            reason: format!("pin the link at {}: {}", path.display(), chain(&e)),
        })?;
        // The pin holds the link (and the program); our descriptor can go.
        Ok(LaneAttach::Pinned)
    }

    /// Detaches from `iface`'s egress; false if it was not attached here.
    pub fn detach(&mut self, iface: &str) -> bool {
        let before = self.links.len();
        self.links.retain(|(i, _)| i != iface);
        self.links.len() != before
    }

    /// Puts `plan` in force: written to the idle slot, switched to at the first cycle start
    /// of its schedule after now (at once when there is no plan yet). If the previous
    /// switch is still pending, waits for it first.
    pub fn apply(&mut self, plan: &Plan) -> Result<Applied, LanesError> {
        if plan.link.flags & PLAN_F_VALID == 0 {
            return Err(LanesError::InvalidPlan);
        }
        let mut now = tai_now();
        let ctl = self.ctl.load();
        let settled = ctl.switch_at().saturating_add(SLOT_SETTLE_NS);
        if ctl.switch_at() != 0 && now < settled {
            std::thread::sleep(Duration::from_nanos(settled - now));
            now = tai_now();
        }
        let active = ctl.slot_at(now);
        let idle = active ^ 1;
        let in_force = self
            .plans
            .get(&active, 0)
            .map_err(crate::LoaderError::map(maps::PLANS))?
            .0
            .link
            .flags
            & PLAN_F_VALID
            != 0;
        self.plans
            .set(idle, LaneSlot(*plan), 0)
            .map_err(crate::LoaderError::map(maps::PLANS))?;
        let at = if in_force {
            plan.gcl
                .next_cycle_start(now + SWITCH_LEAD_NS)
                .unwrap_or(now + SWITCH_LEAD_NS)
        } else {
            0
        };
        self.ctl.store(LaneCtl::switch(idle, at));
        Ok(Applied {
            slot: idle,
            at_tai_ns: LaneCtl::switch(idle, at).switch_at(),
        })
    }

    /// The plan in force now, if any.
    pub fn active_plan(&self) -> Result<Option<Plan>, LanesError> {
        let slot = self.ctl.load().slot_at(tai_now());
        let p = self
            .plans
            .get(&slot, 0)
            .map_err(crate::LoaderError::map(maps::PLANS))?
            .0;
        Ok((p.link.flags & PLAN_F_VALID != 0).then_some(p))
    }

    /// The per-lane counters, summed over CPUs.
    pub fn counters(&self) -> Result<LaneCounters, LanesError> {
        let read = |i: u32| -> Result<CounterValue, LanesError> {
            let v = self
                .counters
                .get(&i, 0)
                .map_err(crate::LoaderError::map(maps::COUNTERS))?;
            Ok(v.iter().fold(CounterValue::default(), |a, v| CounterValue {
                packets: a.packets + v.packets,
                bytes: a.bytes + v.bytes,
            }))
        };
        let mut c = LaneCounters::default();
        for lane in 0..LANES as u8 {
            for a in Action::ALL {
                c.lanes[lane as usize][a as usize] = read(counter_index(lane, a))?;
            }
        }
        c.no_plan = read(global_index(Global::NoPlan))?;
        Ok(c)
    }

    /// Test only: makes the program read `ns` (both clocks) instead of the kernel's clock;
    /// 0 restores the kernel clock. For `BPF_PROG_TEST_RUN` fixtures; never use it on a
    /// router.
    #[doc(hidden)]
    pub fn set_test_clock(&mut self, ns: u64) -> Result<(), LanesError> {
        self.test_clock
            .set(0, ns, 0)
            .map_err(crate::LoaderError::map(maps::TEST_CLOCK))?;
        Ok(())
    }
}

/// Counters of every lane: `lanes[lane][action]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneCounters {
    pub lanes: [[CounterValue; Action::COUNT]; LANES],
    /// Frames passed untouched because no plan was in force.
    pub no_plan: CounterValue,
}

impl LaneCounters {
    pub fn get(&self, lane: u8, action: Action) -> CounterValue {
        self.lanes[(lane & 7) as usize][action as usize]
    }

    /// Counts since `earlier` (counters only grow).
    pub fn since(&self, earlier: &LaneCounters) -> LaneCounters {
        let sub = |a: CounterValue, b: CounterValue| CounterValue {
            packets: a.packets.saturating_sub(b.packets),
            bytes: a.bytes.saturating_sub(b.bytes),
        };
        let mut out = *self;
        for l in 0..LANES {
            for a in 0..Action::COUNT {
                out.lanes[l][a] = sub(self.lanes[l][a], earlier.lanes[l][a]);
            }
        }
        out.no_plan = sub(self.no_plan, earlier.no_plan);
        out
    }

    /// Every frame the program saw.
    pub fn total(&self) -> u64 {
        self.lanes.iter().flatten().map(|c| c.packets).sum::<u64>() + self.no_plan.packets
    }

    /// `(lane, action, value)` for every per-lane counter: the metrics labels.
    pub fn named(&self) -> impl Iterator<Item = (u8, &'static str, CounterValue)> + '_ {
        (0..LANES as u8).flat_map(move |l| {
            Action::ALL
                .iter()
                .map(move |a| (l, a.name(), self.get(l, *a)))
        })
    }
}

/// A plan ready for the datapath: the compiled configuration with the HTB class of each
/// lane and the mode the queues support.
pub fn finish_plan(c: &Compiled, mode: ActiveMode, major: u16) -> Plan {
    let mut plan = c.plan;
    for (lane, p) in plan.lanes.iter_mut().enumerate() {
        p.priority = lane_class(major, lane as u8);
    }
    plan.link.mode = mode.plan_mode() as u32;
    plan
}

/// Lanes running on an interface.
pub struct LaneSetup {
    pub lanes: Lanes,
    pub mode: ActiveMode,
    pub plan: Plan,
    pub applied: Applied,
}

/// Validates `cfg`, builds the queues on `iface`, loads the program, applies the plan and
/// attaches (in that order, so the first frame already meets the plan). Warnings are
/// logged, and so is the active mode.
pub fn setup(iface: &str, cfg: &LanesConfig) -> Result<LaneSetup, LanesError> {
    let (mode, plan) = prepare(iface, cfg)?;
    log::info!("{iface}: lanes in {mode} mode");
    let mut lanes = Lanes::load()?;
    let applied = lanes.apply(&plan)?;
    lanes.attach(iface)?;
    Ok(LaneSetup {
        lanes,
        mode,
        plan,
        applied,
    })
}

/// Validates `cfg` (logging its warnings), builds the queues on `iface`, and finishes the
/// plan for the mode they support.
fn prepare(iface: &str, cfg: &LanesConfig) -> Result<(ActiveMode, Plan), LanesError> {
    require_root()?;
    let compiled = cfg.compile()?;
    for w in &compiled.warnings {
        log::warn!("{iface}: {w}");
    }
    let spec = QueueSpec::from_compiled(&compiled);
    let mode = build_queues(iface, &spec)?;
    Ok((mode, finish_plan(&compiled, mode, spec.major)))
}

/// Lanes made to outlive the process (see [`setup_pinned`]).
pub struct PinnedSetup {
    pub lanes: Lanes,
    pub mode: ActiveMode,
    pub plan: Plan,
    /// The plan switch, or `None` when the plan in force already was this one.
    pub applied: Option<Applied>,
    pub attach: LaneAttach,
}

/// Like [`setup`], with the maps and link pinned under `dir` (see [`pin_dir_for`]), so the
/// lanes stay in force when the process exits. Run again (a restart, a new
/// configuration), it reuses the pinned maps (counters carry on), keeps the queues
/// (classes and leaves are updated in place), switches the plan at the next cycle
/// boundary only if it changed, and swaps the program in atomically: at no point does a
/// frame leave unclassified.
pub fn setup_pinned(iface: &str, cfg: &LanesConfig, dir: &Path) -> Result<PinnedSetup, LanesError> {
    let (mode, plan) = prepare(iface, cfg)?;
    let mut lanes = Lanes::load_pinned(dir)?;
    let applied = if lanes.active_plan()? == Some(plan) {
        None
    } else {
        Some(lanes.apply(&plan)?)
    };
    let attach = lanes.attach(iface)?;
    Ok(PinnedSetup {
        lanes,
        mode,
        plan,
        applied,
        attach,
    })
}

/// CLOCK_TAI now, in ns: the gate clock.
pub fn tai_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_TAI exists on every kernel dcmesh supports.
    unsafe { libc::clock_gettime(libc::CLOCK_TAI, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// File name of the pinned TCX link inside a lanes pin directory.
const LINK_PIN: &str = "link";

/// The maps pinned (name, (key size, value size, entries)). The test clock is not: it
/// must never outlive a test.
const PINNED_MAPS: [(&str, (u32, u32, u32)); 3] = [
    (
        maps::PLANS,
        (4, std::mem::size_of::<LaneSlot>() as u32, SLOTS),
    ),
    (maps::CTL, (4, std::mem::size_of::<LaneCtl>() as u32, 1)),
    (
        maps::COUNTERS,
        (4, std::mem::size_of::<CounterValue>() as u32, NUM_COUNTERS),
    ),
];

/// Refuses a pinned map whose shape differs from this build's (an older dcmesh's maps):
/// reusing it would fail in the verifier or, worse, misread the plan.
fn check_pinned(path: &Path, (key, value, entries): (u32, u32, u32)) -> Result<(), LanesError> {
    let info = MapInfo::from_pin(path).map_err(|e| LanesError::Incompatible {
        path: path.to_path_buf(),
        what: format!("cannot read it: {}", chain(&e)),
    })?;
    let got = (info.key_size(), info.value_size(), info.max_entries());
    if got != (key, value, entries) {
        return Err(LanesError::Incompatible {
            path: path.to_path_buf(),
            what: format!(
                "key/value size and entries {got:?}, this build needs {:?}",
                (key, value, entries)
            ),
        });
    }
    Ok(())
}

/// Points the pinned link at `path` to `prog` (one `bpf_link_update`: atomic).
fn replace_pinned(prog: &mut SchedClassifier, path: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| chain(&e))?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| chain(&e))?;
    let id = prog.attach_to_link(link).map_err(|e| chain(&e))?;
    // The pin keeps the link (now running this program); our handle can go.
    drop(prog.take_link(id).map_err(|e| chain(&e))?);
    Ok(())
}

/// Programs attached to the TCX egress of `iface` (calling thread's namespace), as
/// `(program id, name)`: what `bpftool net show dev IF` lists, for operators and tests
/// (`tc filter show` does not list TCX programs). The lanes program is named
/// [`lanes::PROGRAM`].
pub fn egress_programs(iface: &str) -> Result<Vec<(u32, String)>, LanesError> {
    let (_, progs) = SchedClassifier::query_tcx(iface, TcAttachType::Egress)
        .map_err(crate::LoaderError::program)?;
    Ok(progs
        .iter()
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_string()))
        .collect())
}

/// The lanes pin directory of `iface` under a daemon's pin directory.
pub fn pin_dir_for(pin_root: &Path, iface: &str) -> PathBuf {
    pin_root.join("lanes").join(iface)
}

/// What [`remove`] took away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// The pinned link (the program is detached now).
    pub link: bool,
    /// The pinned maps (plans and counters).
    pub maps: bool,
    /// The HTB tree (and every frame queued in it).
    pub queues: bool,
}

/// Takes the lanes off `iface` (in the calling thread's network namespace): unpins the
/// link, so the program detaches at once, removes the pinned maps under `dir`, and
/// deletes the HTB root `major:` if it is there. Anything missing is skipped; nothing
/// there at all is an error.
pub fn remove(dir: &Path, iface: &str, major: u16) -> Result<Removed, LanesError> {
    require_root()?;
    let mut r = Removed::default();
    let link = dir.join(LINK_PIN);
    if link.exists() {
        std::fs::remove_file(&link).map_err(|e| LanesError::Io {
            what: format!("remove {}", link.display()),
            source: e,
        })?;
        r.link = true;
    }
    let maps = dir.join("maps");
    if maps.exists() {
        std::fs::remove_dir_all(&maps).map_err(|e| LanesError::Io {
            what: format!("remove {}", maps.display()),
            source: e,
        })?;
        r.maps = true;
    }
    let _ = std::fs::remove_dir(dir);
    if crate::iface::ifindex(iface).is_ok() && existing_htb(iface, major)?.is_some() {
        remove_queues(iface)?;
        r.queues = true;
    }
    if r == Removed::default() {
        return Err(LanesError::NotInstalled {
            iface: iface.into(),
            dir: dir.to_path_buf(),
            major,
        });
    }
    Ok(r)
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LanesError> {
    Ok(ebpf
        .program_mut(lanes::PROGRAM)
        .ok_or(crate::LoaderError::MissingInObject(lanes::PROGRAM))?
        .try_into()
        .map_err(crate::LoaderError::program)?)
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, LanesError> {
    Ok(ebpf
        .take_map(name)
        .ok_or(crate::LoaderError::MissingInObject(name))?)
}

/// The control word, mapped into our memory so a switch is one atomic store.
struct CtlWord {
    ptr: NonNull<AtomicU64>,
    len: usize,
    _data: MapData,
}

// SAFETY: the mapping is shared memory accessed only through atomics; the map it belongs
// to is owned alongside it.
unsafe impl Send for CtlWord {}
// SAFETY: as above.
unsafe impl Sync for CtlWord {}

impl CtlWord {
    fn map(data: MapData) -> Result<Self, LanesError> {
        // SAFETY: sysconf has no preconditions.
        let len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let fd = data.fd().as_fd();
        // SAFETY: mapping a BPF_F_MMAPABLE array map: the kernel maps its value area, which
        // starts with entry 0 (an 8-byte aligned u64).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(LanesError::Mmap(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<AtomicU64>())
            .ok_or_else(|| LanesError::Mmap(std::io::Error::other("mmap returned null")))?;
        Ok(Self {
            ptr,
            len,
            _data: data,
        })
    }

    fn load(&self) -> LaneCtl {
        // SAFETY: the mapping lives as long as self.
        LaneCtl {
            word: unsafe { self.ptr.as_ref() }.load(Ordering::Acquire),
        }
    }

    fn store(&self, c: LaneCtl) {
        // SAFETY: as above.
        unsafe { self.ptr.as_ref() }.store(c.word, Ordering::Release);
    }
}

impl Drop for CtlWord {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
