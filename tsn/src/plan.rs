//! The compiled lanes configuration the datapath reads, and the verdict arithmetic.

use bytemuck::{Pod, Zeroable};

use crate::{gcl::frame_ns, Gcl, RuleTable, LANES};

/// [`LaneParams::demote_to`] value meaning "no demotion: drop".
pub const NO_DEMOTION: u8 = 0xff;

/// What the datapath does with one lane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LaneParams {
    /// Value written to `skb->priority`: the HTB leaf class id `major << 16 | minor`
    /// that queues this lane.
    pub priority: u32,
    /// Lane that takes a frame this lane cannot send (gate closed, or the frame does not fit
    /// the rest of the window), or [`NO_DEMOTION`] to drop it.
    pub demote_to: u8,
    pub _pad: [u8; 3],
}

/// How the datapath enforces the gates.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No earliest-departure-time qdisc: admit a frame only if its gate is open and it fits
    /// the rest of the window; otherwise demote or drop it.
    Admission = 0,
    /// An EDT qdisc whose clock is CLOCK_MONOTONIC (fq): stamp `skb->tstamp` with the
    /// departure time converted to that clock.
    EdtMonotonic = 1,
    /// An EDT qdisc whose clock is CLOCK_TAI (etf): stamp the departure time as is.
    EdtTai = 2,
}

impl Mode {
    /// Decodes the value stored in [`Link::mode`]; unknown values mean admission, the mode
    /// that needs nothing from the qdisc.
    #[inline(always)]
    pub const fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::EdtMonotonic,
            2 => Self::EdtTai,
            _ => Self::Admission,
        }
    }

    /// Whether departure times are stamped (an EDT qdisc holds frames until then).
    pub const fn stamps(self) -> bool {
        !matches!(self, Self::Admission)
    }
}

/// Flag in [`Link::flags`]: this plan is complete and may be used.
pub const PLAN_F_VALID: u32 = 1 << 0;

/// The link the lanes share.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Link {
    /// Line rate in bit/s; frame times are computed at this rate.
    pub rate_bps: u64,
    /// Bytes added to `skb->len` per frame on the wire (see [`crate::ETHERNET_OVERHEAD`]).
    pub overhead: u32,
    /// A [`Mode`] value.
    pub mode: u32,
    /// `PLAN_F_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// Everything the datapath needs, in one value: written whole into the inactive slot of a
/// double-buffered map, so a packet always sees one consistent plan.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Plan {
    pub link: Link,
    pub gcl: Gcl,
    pub lanes: [LaneParams; LANES],
    pub rules: RuleTable,
}

impl Default for Plan {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// What happened to a frame; one per-lane counter each.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sent on its lane now.
    Admitted = 0,
    /// Sent on its lane, stamped to leave at a later window (EDT modes).
    Deferred = 1,
    /// Sent on its demotion lane (now or stamped).
    Demoted = 2,
    /// Dropped: gate closed or window too short now, and no demotion lane could take it.
    Dropped = 3,
    /// Dropped: longer than any window of its lane (and of its demotion lane).
    TooBig = 4,
}

impl Action {
    /// Number of actions (counters per lane).
    pub const COUNT: usize = 5;
    /// All actions in index order.
    pub const ALL: [Action; Self::COUNT] = [
        Self::Admitted,
        Self::Deferred,
        Self::Demoted,
        Self::Dropped,
        Self::TooBig,
    ];

    /// Stable snake_case name (metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Deferred => "deferred",
            Self::Demoted => "demoted",
            Self::Dropped => "dropped",
            Self::TooBig => "too_big",
        }
    }

    /// Whether the frame is sent.
    pub const fn sends(self) -> bool {
        matches!(self, Self::Admitted | Self::Deferred | Self::Demoted)
    }
}

/// The verdict on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// The lane whose queue gets the frame (the demotion lane when demoted).
    pub lane: u8,
    /// Departure time in ns of the gate clock, when the mode stamps one.
    pub depart_ns: Option<u64>,
}

/// The verdict on a frame of `len` bytes (`skb->len`) classified to `lane` at time `now`
/// (ns of the gate clock).
#[inline(always)]
pub fn decide(plan: &Plan, lane: u8, len: u32, now: u64) -> Verdict {
    let lane = lane & 7;
    let mode = Mode::from_u32(plan.link.mode);
    let need = frame_ns(
        u64::from(len) + u64::from(plan.link.overhead),
        plan.link.rate_bps,
    );
    let own = plan.gcl.departure(lane, now, need);
    let demote_to = plan.lanes[lane as usize].demote_to;
    let demote = if demote_to == NO_DEMOTION || demote_to as usize >= LANES {
        None
    } else {
        Some(demote_to)
    };
    let verdict = |action, lane, at: u64| Verdict {
        action,
        lane,
        depart_ns: if mode.stamps() { Some(at) } else { None },
    };
    match own {
        Some(d) if d == now => return verdict(Action::Admitted, lane, now),
        Some(d) if mode.stamps() => return verdict(Action::Deferred, lane, d),
        _ => {}
    }
    if let Some(to) = demote {
        match plan.gcl.departure(to, now, need) {
            Some(d) if d == now || mode.stamps() => return verdict(Action::Demoted, to, d),
            _ => {}
        }
    }
    Verdict {
        action: if own.is_none() {
            Action::TooBig
        } else {
            Action::Dropped
        },
        lane,
        depart_ns: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GateEntry;
    use proptest::prelude::*;

    fn plan(mode: Mode, gcl: Gcl, demote: [u8; LANES]) -> Plan {
        let mut p = Plan {
            link: Link {
                rate_bps: 100_000_000,
                overhead: 24,
                mode: mode as u32,
                flags: PLAN_F_VALID,
                _pad: 0,
            },
            gcl,
            ..Plan::default()
        };
        for (l, d) in p.lanes.iter_mut().zip(demote) {
            l.demote_to = d;
        }
        p
    }

    /// 1 ms: lane 0 alone 200 µs, lanes 1..7 800 µs.
    fn split() -> Gcl {
        Gcl::new(
            0,
            1_000_000,
            &[GateEntry::new(0x01, 200_000), GateEntry::new(0xfe, 800_000)],
        )
    }

    const FRAME: u32 = 1514; // 123.04 µs at 100 Mbit/s with 24 bytes overhead

    #[test]
    fn admission_mode() {
        let n = NO_DEMOTION;
        let p = plan(Mode::Admission, split(), [n, 7, n, n, n, n, n, n]);
        let v = |lane, now| decide(&p, lane, FRAME, now);
        assert_eq!(
            v(0, 0),
            Verdict {
                action: Action::Admitted,
                lane: 0,
                depart_ns: None
            }
        );
        // 76.96 µs left before lane 0 closes: exactly fits, 1 ns later it does not.
        assert_eq!(v(0, 76_960).action, Action::Admitted);
        assert_eq!(v(0, 76_961).action, Action::Dropped);
        // Lane 1 is closed during lane 0's window and demotes to lane 7, also closed.
        assert_eq!(v(1, 10).action, Action::Dropped);
        assert_eq!(
            v(1, 300_000),
            Verdict {
                action: Action::Admitted,
                lane: 1,
                depart_ns: None
            }
        );
        // Lane 1 demotes to 7 only where 7 can send now, which is never when 1 cannot
        // (same gates); lane 0 has no demotion.
        assert_eq!(decide(&p, 0, 40_000, 0).action, Action::TooBig);
    }

    #[test]
    fn demotion_takes_an_open_lane() {
        let n = NO_DEMOTION;
        let g = Gcl::new(
            0,
            1_000_000,
            &[GateEntry::new(0x03, 200_000), GateEntry::new(0xfe, 800_000)],
        );
        let p = plan(Mode::Admission, g, [1, n, n, n, n, n, n, n]);
        // Lane 0 closed at 500 µs; lane 1 open.
        assert_eq!(
            decide(&p, 0, FRAME, 500_000),
            Verdict {
                action: Action::Demoted,
                lane: 1,
                depart_ns: None
            }
        );
    }

    #[test]
    fn edt_mode_stamps_next_opening() {
        let n = NO_DEMOTION;
        let p = plan(Mode::EdtTai, split(), [n; LANES]);
        assert_eq!(
            decide(&p, 0, FRAME, 100_000),
            Verdict {
                action: Action::Deferred,
                lane: 0,
                depart_ns: Some(1_000_000)
            }
        );
        assert_eq!(
            decide(&p, 3, FRAME, 5_000),
            Verdict {
                action: Action::Deferred,
                lane: 3,
                depart_ns: Some(200_000)
            }
        );
        assert_eq!(
            decide(&p, 3, FRAME, 300_000),
            Verdict {
                action: Action::Admitted,
                lane: 3,
                depart_ns: Some(300_000)
            }
        );
        assert_eq!(decide(&p, 0, 4_000, 0).action, Action::TooBig);
    }

    proptest! {
        #[test]
        fn verdicts_respect_the_gates(
            mode in prop::sample::select(vec![Mode::Admission, Mode::EdtMonotonic, Mode::EdtTai]),
            gates in prop::collection::vec((any::<u8>(), 10_000u32..300_000), 1..6),
            demote in prop::array::uniform8(prop::sample::select(vec![NO_DEMOTION, 3, 7])),
            lane in 0u8..8, len in 60u32..3000, now in 0u64..5_000_000,
        ) {
            let entries: Vec<_> = gates.iter().map(|(g, i)| GateEntry::new(*g, *i)).collect();
            let cycle = entries.iter().map(|e| u64::from(e.interval_ns)).sum();
            let p = plan(mode, Gcl::new(0, cycle, &entries), demote);
            let v = decide(&p, lane, len, now);
            let need = frame_ns(u64::from(len) + 24, 100_000_000);
            if v.action.sends() {
                let at = v.depart_ns.unwrap_or(now);
                prop_assert!(at >= now);
                prop_assert!(mode.stamps() || at == now);
                // The frame's whole transmission lies inside one window of its lane.
                prop_assert!(p.gcl.is_open(v.lane, at));
                prop_assert!(p.gcl.time_left(v.lane, at) >= need);
                prop_assert_eq!(v.lane != lane, v.action == Action::Demoted);
            } else {
                prop_assert_eq!(v.depart_ns, None);
                prop_assert_eq!(v.lane, lane);
            }
        }
    }
}
