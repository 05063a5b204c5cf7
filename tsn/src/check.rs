//! Schedule validation, as a config tool should do it: every problem is reported (not just
//! the first), each names the entry or lane and the rule it breaks.
//!
//! Rules:
//! - at least one entry, at most [`MAX_ENTRIES`];
//! - every interval positive and at least one minimum frame at the link rate;
//! - the intervals sum to the cycle, and the cycle is at most [`MAX_CYCLE_NS`];
//! - every lane that carries traffic opens, and some window of it is at least one maximum
//!   frame long at the link rate (the guard band: otherwise a full-size frame can never
//!   leave without overrunning the window);
//! - a lane that never opens (and carries no traffic) is only a warning.

use crate::{frame_ns, GateEntry, Gcl, LANES, MAX_CYCLE_NS, MAX_ENTRIES, MIN_FRAME};

/// Whether a problem stops the configuration from being used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with a schedule. Entries are numbered from 0 as in the config list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "the schedule has no entries; give at least one (e.g. every gate open for the whole cycle)"
    )]
    NoEntries,
    #[error("the schedule has {count} entries; at most {max} are supported")]
    TooManyEntries { count: usize, max: usize },
    #[error("entry {entry}: interval is 0 ns; every interval must be positive")]
    ZeroInterval { entry: usize },
    #[error("entry {entry}: interval {interval_ns} ns is shorter than a minimum frame ({min_ns} ns at the link rate)")]
    IntervalTooShort {
        entry: usize,
        interval_ns: u64,
        min_ns: u64,
    },
    #[error("the intervals sum to {sum_ns} ns but the cycle is {cycle_ns} ns; they must be equal (or leave the cycle out)")]
    CycleMismatch { sum_ns: u64, cycle_ns: u64 },
    #[error("the cycle is {cycle_ns} ns; at most {max_ns} ns is supported")]
    CycleTooLong { cycle_ns: u64, max_ns: u64 },
    #[error("the link rate is 0 bit/s; give the rate the lanes share")]
    ZeroRate,
    #[error("lane {lane} carries traffic but its gate never opens; open it in some entry or send its traffic to another lane")]
    TrafficLaneNeverOpens { lane: u8 },
    #[error("lane {lane} carries traffic but its longest window is {longest_ns} ns, shorter than a maximum frame ({need_ns} ns at the link rate): lengthen the window (guard band)")]
    NoGuardBand {
        lane: u8,
        longest_ns: u64,
        need_ns: u64,
    },
    #[error("lane {lane} never opens and carries no traffic")]
    LaneNeverOpens { lane: u8 },
}

impl Problem {
    pub const fn severity(&self) -> Severity {
        match self {
            Self::LaneNeverOpens { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// The link facts validation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    /// Line rate in bit/s.
    pub rate_bps: u64,
    /// Bytes per frame on the wire beyond `skb->len`.
    pub overhead: u32,
    /// Largest frame in bytes as `skb->len` counts it (MTU + L2 header).
    pub max_frame: u32,
}

impl LinkFacts {
    /// Transmission time of a minimum frame in ns.
    pub fn min_frame_ns(&self) -> u64 {
        frame_ns(u64::from(MIN_FRAME + self.overhead), self.rate_bps)
    }

    /// Transmission time of a maximum frame in ns.
    pub fn max_frame_ns(&self) -> u64 {
        frame_ns(
            u64::from(self.max_frame) + u64::from(self.overhead),
            self.rate_bps,
        )
    }
}

/// Checks a schedule of `entries` with cycle `cycle_ns` on `link`, where `traffic` has bit
/// `l` set for every lane that carries traffic (the default lane, lanes named by rules,
/// demotion targets). Calls `report` once per problem, in entry order, then lane order.
pub fn check_schedule(
    entries: &[GateEntry],
    cycle_ns: u64,
    link: &LinkFacts,
    traffic: u8,
    mut report: impl FnMut(Problem),
) {
    if link.rate_bps == 0 {
        report(Problem::ZeroRate);
        return;
    }
    if entries.is_empty() {
        report(Problem::NoEntries);
        return;
    }
    if entries.len() > MAX_ENTRIES {
        report(Problem::TooManyEntries {
            count: entries.len(),
            max: MAX_ENTRIES,
        });
    }
    let min_ns = link.min_frame_ns();
    for (entry, e) in entries.iter().enumerate() {
        let interval_ns = u64::from(e.interval_ns);
        if interval_ns == 0 {
            report(Problem::ZeroInterval { entry });
        } else if interval_ns < min_ns {
            report(Problem::IntervalTooShort {
                entry,
                interval_ns,
                min_ns,
            });
        }
    }
    let sum_ns: u64 = entries.iter().map(|e| u64::from(e.interval_ns)).sum();
    if sum_ns != cycle_ns {
        report(Problem::CycleMismatch { sum_ns, cycle_ns });
    }
    if cycle_ns > MAX_CYCLE_NS {
        report(Problem::CycleTooLong {
            cycle_ns,
            max_ns: MAX_CYCLE_NS,
        });
    }
    let gcl = Gcl::new(0, sum_ns, entries);
    let need_ns = link.max_frame_ns();
    for lane in 0..LANES as u8 {
        let longest_ns = gcl.longest_window(lane);
        let carries = traffic & (1 << lane) != 0;
        match (longest_ns, carries) {
            (0, true) => report(Problem::TrafficLaneNeverOpens { lane }),
            (0, false) => report(Problem::LaneNeverOpens { lane }),
            (l, true) if l < need_ns => report(Problem::NoGuardBand {
                lane,
                longest_ns,
                need_ns,
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINK: LinkFacts = LinkFacts {
        rate_bps: 100_000_000,
        overhead: 24,
        max_frame: 1514,
    };

    fn problems(entries: &[GateEntry], cycle: u64, traffic: u8) -> Vec<Problem> {
        let mut v = Vec::new();
        check_schedule(entries, cycle, &LINK, traffic, |p| v.push(p));
        v
    }

    #[test]
    fn each_rule_names_its_entry_or_lane() {
        let e = GateEntry::new;
        assert_eq!(problems(&[], 0, 0x80), vec![Problem::NoEntries]);
        assert_eq!(
            problems(
                &[e(0xff, 500_000), e(0xff, 0), e(0xff, 1000)],
                501_000,
                0x80
            ),
            vec![
                Problem::ZeroInterval { entry: 1 },
                Problem::IntervalTooShort {
                    entry: 2,
                    interval_ns: 1000,
                    min_ns: 6720
                },
            ]
        );
        assert_eq!(
            problems(&[e(0xff, 500_000)], 600_000, 0x80),
            vec![Problem::CycleMismatch {
                sum_ns: 500_000,
                cycle_ns: 600_000
            }]
        );
        let p = problems(&[e(0xff, 1_000_000_000), e(0xff, 1)], 1_000_000_001, 0x80);
        assert!(p.contains(&Problem::CycleTooLong {
            cycle_ns: 1_000_000_001,
            max_ns: MAX_CYCLE_NS
        }));
        // Lane 0 opens for 100 µs only: a 1514-byte frame needs 123.04 µs.
        let split = [e(0x01, 100_000), e(0x80, 900_000)];
        assert_eq!(
            problems(&split, 1_000_000, 0x81),
            vec![
                Problem::NoGuardBand {
                    lane: 0,
                    longest_ns: 100_000,
                    need_ns: 123_040
                },
                Problem::LaneNeverOpens { lane: 1 },
                Problem::LaneNeverOpens { lane: 2 },
                Problem::LaneNeverOpens { lane: 3 },
                Problem::LaneNeverOpens { lane: 4 },
                Problem::LaneNeverOpens { lane: 5 },
                Problem::LaneNeverOpens { lane: 6 },
            ]
        );
        assert!(
            problems(&split, 1_000_000, 0x02).contains(&Problem::TrafficLaneNeverOpens { lane: 1 })
        );
        // Two 70 µs entries in a row (and across the cycle end) form one 140 µs window.
        let wrap = [e(0x01, 70_000), e(0x80, 860_000), e(0x01, 70_000)];
        assert!(!problems(&wrap, 1_000_000, 0x81)
            .iter()
            .any(|p| p.severity() == Severity::Error));
    }

    proptest! {
        /// What validation accepts, the datapath can always send: every traffic lane has a
        /// departure for a maximum frame from any time.
        #[test]
        fn accepted_schedules_always_depart(
            es in prop::collection::vec((any::<u8>(), 7_000u32..400_000), 1..10),
            traffic in any::<u8>(), t in 0u64..10_000_000,
        ) {
            let entries: Vec<_> = es.iter().map(|(g, i)| GateEntry::new(*g, *i)).collect();
            let cycle = entries.iter().map(|e| u64::from(e.interval_ns)).sum();
            let ok = problems(&entries, cycle, traffic).iter().all(|p| p.severity() != Severity::Error);
            let g = Gcl::new(0, cycle, &entries);
            let all_depart = (0..8u8).filter(|l| traffic & (1 << l) != 0)
                .all(|l| g.departure(l, t, LINK.max_frame_ns()).is_some());
            prop_assert_eq!(ok, all_depart);
        }
    }
}
