//! The daemon's TSN lanes: sets them up on the configured interfaces at start, and reports
//! their mode, plan and counters (status, metrics).
//!
//! Lanes are pinned under `<pin_dir>/lanes/<interface>/` (see `dcmesh_loader::lanes`), so
//! they stay enforced while the daemon is down, and a restart picks them up without a gap:
//! same maps (the counters carry on), the program swapped in atomically, the queues kept,
//! a changed plan switched in at a cycle boundary. A stop leaves them in place, like the
//! XDP datapath; `dcmesh lanes remove` takes them away.
//!
//! A lane set-up that fails (no `tc`, no HTB, `mode = "edt"` without fq or etf, ...) is
//! logged and reported with its reason; the daemon routes on without lanes there.
use std::path::{Path, PathBuf};

use dcmesh_loader::lanes::{
    self, ActiveMode, Applied, EdtQdisc, LaneAttach, LaneCounters, Lanes, PinnedSetup,
};
use dcmesh_tsn::{Action, Plan, LANES};
use serde_json::{json, Value};

use crate::config::LaneTarget;

/// How an interface's lanes run, as status and metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeName {
    Admission,
    EdtFq,
    EdtEtf,
    /// Set-up failed: no lanes on this interface.
    Failed,
}

impl ModeName {
    pub const ALL: [ModeName; 4] = [Self::Admission, Self::EdtFq, Self::EdtEtf, Self::Failed];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Admission => "admission",
            Self::EdtFq => "edt_fq",
            Self::EdtEtf => "edt_etf",
            Self::Failed => "failed",
        }
    }

    pub const fn of(mode: ActiveMode) -> Self {
        match mode {
            ActiveMode::Admission => Self::Admission,
            ActiveMode::Edt(EdtQdisc::Fq) => Self::EdtFq,
            ActiveMode::Edt(EdtQdisc::Etf) => Self::EdtEtf,
        }
    }
}

struct Running {
    lanes: Lanes,
    mode: ActiveMode,
    plan: Plan,
    applied: Option<Applied>,
    attach: LaneAttach,
}

struct IfaceLanes {
    iface: String,
    pin_dir: PathBuf,
    state: Result<Running, String>,
}

/// The lanes of every interface that has them.
#[derive(Default)]
pub struct LaneManager {
    ifaces: Vec<IfaceLanes>,
}

impl LaneManager {
    /// Sets up (or takes over) the lanes of every target. Never fails: an interface whose
    /// set-up fails is logged as an error and reported in [`ModeName::Failed`].
    pub fn start(pin_root: &Path, targets: &[LaneTarget]) -> Self {
        for iface in left_behind(pin_root, targets) {
            log::warn!(
                "{iface}: TSN lanes from an earlier run are still enforced there (pinned under {}), but the config no longer puts lanes on it; \"dcmesh lanes remove --interface {iface}\" takes them off",
                lanes::pin_dir_for(pin_root, &iface).display()
            );
        }
        let ifaces = targets
            .iter()
            .map(|t| {
                let pin_dir = lanes::pin_dir_for(pin_root, &t.iface);
                let state = lanes::setup_pinned(&t.iface, &t.config, &pin_dir)
                    .map(|s| {
                        log_started(&t.iface, &s);
                        let PinnedSetup {
                            lanes,
                            mode,
                            plan,
                            applied,
                            attach,
                        } = s;
                        Running {
                            lanes,
                            mode,
                            plan,
                            applied,
                            attach,
                        }
                    })
                    .map_err(|e| {
                        let e = error_chain(&e);
                        log::error!(
                            "{}: TSN lanes NOT active: {e}. Routing continues without lanes on this interface; queues may be partly built (\"dcmesh lanes remove --interface {}\" clears them).",
                            t.iface, t.iface
                        );
                        e
                    });
                IfaceLanes {
                    iface: t.iface.clone(),
                    pin_dir,
                    state,
                }
            })
            .collect();
        Self { ifaces }
    }

    pub fn is_empty(&self) -> bool {
        self.ifaces.is_empty()
    }

    /// `(interface, mode, counters)` of every interface with lanes (counters `None` when
    /// set-up failed or the map could not be read).
    pub fn snapshot(&self) -> Vec<(&str, ModeName, Option<LaneCounters>)> {
        self.ifaces
            .iter()
            .map(|f| match &f.state {
                Ok(r) => (
                    f.iface.as_str(),
                    ModeName::of(r.mode),
                    r.lanes.counters().ok(),
                ),
                Err(_) => (f.iface.as_str(), ModeName::Failed, None),
            })
            .collect()
    }

    /// The `lanes` part of `dcmesh status`.
    pub fn status(&self) -> Value {
        Value::Array(self.ifaces.iter().map(iface_status).collect())
    }
}

/// Interfaces with pinned lanes that `targets` leaves out.
fn left_behind(pin_root: &Path, targets: &[LaneTarget]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pin_root.join("lanes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !targets.iter().any(|t| &t.iface == name))
        .collect();
    v.sort();
    v
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

fn log_started(iface: &str, s: &PinnedSetup) {
    let how = match s.attach {
        LaneAttach::Pinned => "program attached and pinned",
        LaneAttach::Replaced => "program replaced atomically in the pinned link",
        LaneAttach::Unpinned => "program attached, NOT pinned (detached when dcmesh exits)",
    };
    let carried = if s.lanes.reused() {
        "pinned plan and counters carried over"
    } else {
        "new maps"
    };
    let plan = match s.applied {
        None => "plan unchanged".to_string(),
        Some(a) if a.at_tai_ns == 0 => "plan in force".to_string(),
        Some(a) => format!(
            "new plan in force at the cycle boundary at TAI {} ns",
            a.at_tai_ns
        ),
    };
    log::info!(
        "{iface}: TSN lanes in {} mode: {}; {how}; {carried}; {plan}",
        ModeName::of(s.mode).name(),
        s.mode
    );
}

fn schedule_json(plan: &Plan) -> Value {
    let g = &plan.gcl;
    json!({
        "base_time_ns": g.base_ns,
        "cycle_ns": g.cycle_ns,
        "link_rate_bps": plan.link.rate_bps,
        "entries": g.entries().iter().map(|e| json!({
            "gates": (0..LANES as u8).filter(|l| e.gates & (1 << l) != 0).collect::<Vec<_>>(),
            "interval_ns": e.interval_ns,
        })).collect::<Vec<_>>(),
    })
}

/// `{lane: {action: {packets, bytes}}}`, lanes and actions that never counted left out.
pub fn counters_json(c: &LaneCounters) -> Value {
    let mut lanes = serde_json::Map::new();
    for lane in 0..LANES as u8 {
        let mut actions = serde_json::Map::new();
        for a in Action::ALL {
            let v = c.get(lane, a);
            if v.packets != 0 {
                actions.insert(
                    a.name().into(),
                    json!({"packets": v.packets, "bytes": v.bytes}),
                );
            }
        }
        if !actions.is_empty() {
            lanes.insert(lane.to_string(), Value::Object(actions));
        }
    }
    json!({ "lanes": lanes, "no_plan": {"packets": c.no_plan.packets, "bytes": c.no_plan.bytes} })
}

fn iface_status(f: &IfaceLanes) -> Value {
    match &f.state {
        Err(e) => json!({
            "interface": f.iface,
            "mode": ModeName::Failed.name(),
            "error": e,
            "pin_dir": f.pin_dir,
        }),
        Ok(r) => {
            let active = r.lanes.active_plan().ok().flatten();
            json!({
                "interface": f.iface,
                "mode": ModeName::of(r.mode).name(),
                "mode_detail": r.mode.to_string(),
                "attach": match r.attach {
                    LaneAttach::Pinned => "pinned",
                    LaneAttach::Replaced => "replaced",
                    LaneAttach::Unpinned => "unpinned",
                },
                "reused_pins": r.lanes.reused(),
                "pin_dir": f.pin_dir,
                "plan_switch_tai_ns": r.applied.map(|a| a.at_tai_ns),
                "configured_in_force": active == Some(r.plan),
                "schedule": schedule_json(active.as_ref().unwrap_or(&r.plan)),
                "counters": r.lanes.counters().ok().as_ref().map(counters_json),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcmesh_schema::CounterValue;

    #[test]
    fn pins_the_config_left_behind_are_found() {
        let root = std::env::temp_dir().join(format!("dcmesh-lanes-left-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert!(left_behind(&root, &[]).is_empty(), "no pin dir at all");
        for i in ["mesh0", "mesh1", "mesh2"] {
            std::fs::create_dir_all(lanes::pin_dir_for(&root, i)).unwrap();
        }
        let t = |iface: &str| LaneTarget {
            iface: iface.into(),
            config: dcmesh_tsn::config::LanesConfig::new(100_000_000),
        };
        assert_eq!(left_behind(&root, &[t("mesh1")]), ["mesh0", "mesh2"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn counters_json_keeps_what_counted() {
        let mut c = LaneCounters::default();
        c.lanes[0][Action::Admitted as usize] = CounterValue {
            packets: 3,
            bytes: 300,
        };
        c.lanes[3][Action::Demoted as usize] = CounterValue {
            packets: 1,
            bytes: 60,
        };
        let v = counters_json(&c);
        assert_eq!(v["lanes"]["0"]["admitted"]["packets"], 3);
        assert_eq!(v["lanes"]["0"]["admitted"]["bytes"], 300);
        assert_eq!(v["lanes"]["3"]["demoted"]["packets"], 1);
        assert!(v["lanes"]["1"].is_null());
        assert_eq!(v["lanes"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn schedule_json_lists_open_gates() {
        let c = dcmesh_tsn::config::LanesConfig {
            schedule: Some(dcmesh_tsn::config::ScheduleConfig {
                base_time_ns: 0,
                cycle_ns: None,
                entries: vec![
                    dcmesh_tsn::config::EntryConfig {
                        gates: vec![0],
                        interval_ns: 250_000,
                    },
                    dcmesh_tsn::config::EntryConfig {
                        gates: vec![0, 7],
                        interval_ns: 750_000,
                    },
                ],
            }),
            ..dcmesh_tsn::config::LanesConfig::new(100_000_000)
        }
        .compile()
        .unwrap();
        let v = schedule_json(&c.plan);
        assert_eq!(v["cycle_ns"], 1_000_000);
        assert_eq!(v["entries"][1]["gates"], json!([0, 7]));
        assert_eq!(v["entries"][0]["interval_ns"], 250_000);
    }
}
