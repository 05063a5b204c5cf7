//! Results of a run: a JSON document and a readable summary.
use serde::Serialize;

use crate::probe::{Families, Family};

/// min / median / p90 / p99 / max of a set of values (milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Distribution {
    /// Nearest-rank percentiles.
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
            Some(v[k.clamp(1, v.len()) - 1])
        };
        Self {
            count: v.len(),
            min: v.first().copied(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v.last().copied(),
        }
    }

    fn line(&self) -> String {
        match (self.min, self.p50, self.p90, self.max) {
            (Some(a), Some(b), Some(c), Some(d)) => format!(
                "n={} min {a:.1} p50 {b:.1} p90 {c:.1} max {d:.1} ms",
                self.count
            ),
            _ => "none".into(),
        }
    }
}

/// A run of lost probes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutageReport {
    /// Start, ms since the probes started.
    pub start_ms: f64,
    pub len_ms: f64,
    pub lost: u64,
    /// Whether the flow's endpoints were connected in the true topology meanwhile.
    pub expected_deliverable: bool,
}

/// One probe flow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowReport {
    pub from: String,
    pub to: String,
    /// "v4" or "v6".
    pub family: Family,
    /// Probes per second of this flow alone.
    pub rate: u32,
    pub sent: u64,
    pub delivered: u64,
    pub dups: u64,
    pub send_errors: u64,
    /// Probes that crossed more routers than the mesh has (looped and survived).
    pub looped: u64,
    pub max_hops: Option<u8>,
    /// Arrival times (ms) of probes that looped.
    pub looped_at_ms: Vec<f64>,
    pub outages: Vec<OutageReport>,
}

/// One fault and how the mesh took it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultReport {
    pub at_ms: f64,
    pub action: String,
    /// Why the action did nothing, if it did nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Whether forwarding state stopped delivering some reachable destination.
    pub broke: bool,
    /// Time until every reachable destination was delivered loop-free again (0 when
    /// nothing broke); `None` if that did not happen before the next fault.
    pub restored_ms: Option<f64>,
    /// Time until the last change of any node's tables before the next fault.
    pub settled_ms: Option<f64>,
    /// Polls that saw a forwarding loop in the tables after this fault.
    pub table_loop_polls: u64,
    /// Longest probe outage that began around this fault (expected-deliverable flows).
    pub reroute_ms: Option<f64>,
    /// Per flow ("c1→c2 v6"): probes lost from the fault to 500 ms after its restore.
    pub lost_per_flow: Vec<(String, u64)>,
    /// The first failed check after the fault: which destinations were not delivered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_failures: Vec<String>,
    /// The last failed check before forwarding was restored, when it differs from the
    /// first: what held a long repair up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_failures: Vec<String>,
}

/// A probe whose TTL ran out, as the router's ICMP time-exceeded error told its sender.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExpiredProbe {
    /// "c1→c2 v6".
    pub flow: String,
    pub seq: u64,
    /// Send time, ms since the probes started.
    pub sent_ms: f64,
    /// The node where the TTL ran out.
    pub router: String,
    /// The last fault before the probe was sent, and how long before.
    pub after_fault: Option<String>,
    pub since_fault_ms: Option<f64>,
}

/// A forwarding loop seen in the tables by one check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableLoop {
    pub at_ms: f64,
    /// Source node, destination address, and the nodes the walk crossed.
    pub from: String,
    pub dest: String,
    pub path: Vec<String>,
}

/// Delivery counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Delivery {
    pub sent: u64,
    pub delivered: u64,
    pub ratio: Option<f64>,
}

impl Delivery {
    pub fn new(sent: u64, delivered: u64) -> Self {
        Self {
            sent,
            delivered,
            ratio: (sent > 0).then(|| delivered as f64 / sent as f64),
        }
    }

    fn pct(&self) -> String {
        self.ratio
            .map_or("-".into(), |r| format!("{:.3} %", r * 100.0))
    }
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub topology: String,
    pub controller: String,
    pub nodes: usize,
    pub links: usize,
    pub clients: usize,
    /// Time from start of the controller to the first converged check.
    pub initial_convergence_ms: f64,
    /// Length of the measured part (probes running), seconds.
    pub duration_s: f64,
    /// Interval of the convergence checks: the resolution of restore/settle times.
    pub poll_ms: f64,
    /// Probes shorter than this many in a row lost do not count as an outage.
    pub min_outage_probes: u64,
    /// The address families every configured flow ran over; with both, each flow has
    /// an IPv4 and an IPv6 twin, each at the configured rate.
    pub probe_families: Families,
    /// Probes per second of all flows together (every family's twin counted).
    pub probe_rate_total: u64,
    pub flows: Vec<FlowReport>,
    pub faults: Vec<FaultReport>,
    /// Every probe.
    pub delivery: Delivery,
    /// Probes sent while their endpoints were connected and outside every fault's
    /// window `[fault, restored]`.
    pub delivery_outside_windows: Delivery,
    /// Send times (ms) of up to 50 probes lost outside the windows, with their flow.
    pub lost_outside_windows: Vec<(String, f64)>,
    /// Probes sent while the true topology had no path between their endpoints.
    pub undeliverable_by_topology: u64,
    /// Packets whose TTL ran out in some node's datapath (pass_ttl), summed.
    pub ttl_expired: u64,
    /// Where and when they did: (second of the run, node, packets).
    pub ttl_expired_at: Vec<(u64, String, u64)>,
    /// Packets the datapath dropped instead of sending them straight back to the
    /// neighbour they came from (its U-turn rule: a two-node loop avoided, not a loop).
    pub uturns_dropped: u64,
    /// Where and when: (second of the run, node, packets).
    pub uturns_dropped_at: Vec<(u64, String, u64)>,
    /// Probes that arrived after crossing more routers than the mesh has.
    pub probes_looped: u64,
    /// Polls whose tables held a forwarding loop.
    pub table_loop_polls: u64,
    /// Probes whose TTL ran out, with where (diagnostics: from ICMP errors, which can be
    /// lost; `ttl_expired` is the count).
    pub expired_probes: Vec<ExpiredProbe>,
    /// The loops the checks saw (the first 100; one per source, destination and path
    /// until it changes).
    pub table_loops: Vec<TableLoop>,
    pub restore_ms: Distribution,
    pub settle_ms: Distribution,
    pub reroute_ms: Distribution,
    /// Static controller only: carrier event read → next hop marked down, per event.
    pub carrier_reaction_ms: Distribution,
}

impl Report {
    /// Loops of any kind observed.
    pub fn loops(&self) -> u64 {
        self.ttl_expired + self.probes_looped + self.table_loop_polls
    }

    /// A readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "topology {} ({} nodes, {} links, {} clients), controller {}\n",
            self.topology, self.nodes, self.links, self.clients, self.controller
        );
        s += &format!(
            "initial convergence {:.0} ms; measured {:.1} s; checks every {:.0} ms\n",
            self.initial_convergence_ms, self.duration_s, self.poll_ms
        );
        s += &format!(
            "probes: {} flows over {}{}, {} probes/s in all\n",
            self.flows.len(),
            self.probe_families,
            if self.probe_families == Families::Both {
                " (each configured flow twice, once per family, each at its configured rate)"
            } else {
                ""
            },
            self.probe_rate_total
        );
        s += &format!(
            "delivery: all probes {} of {} ({}); outside convergence windows {} of {} ({}); \
             {} probes undeliverable by topology (excluded)\n",
            self.delivery.delivered,
            self.delivery.sent,
            self.delivery.pct(),
            self.delivery_outside_windows.delivered,
            self.delivery_outside_windows.sent,
            self.delivery_outside_windows.pct(),
            self.undeliverable_by_topology
        );
        s += &format!(
            "loops: {} TTL expiries in the datapath, {} probes over the mesh diameter, \
             {} checks with a loop in the tables\n",
            self.ttl_expired, self.probes_looped, self.table_loop_polls
        );
        if !self.lost_outside_windows.is_empty() {
            let l: Vec<String> = self
                .lost_outside_windows
                .iter()
                .take(10)
                .map(|(f, t)| format!("{f} at {:.3}s", t / 1000.0))
                .collect();
            s += &format!("  lost outside windows: {}\n", l.join(", "));
        }
        for (t, n, k) in self.ttl_expired_at.iter().take(10) {
            s += &format!("  {k} TTL expiries at {n} around {t} s\n");
        }
        if self.uturns_dropped > 0 {
            let at: Vec<String> = self
                .uturns_dropped_at
                .iter()
                .take(10)
                .map(|(t, n, k)| format!("{k} at {n} around {t} s"))
                .collect();
            s += &format!(
                "  U-turns dropped by the datapath (two-node loops avoided): {} ({})\n",
                self.uturns_dropped,
                at.join(", ")
            );
        }
        for e in self.expired_probes.iter().take(20) {
            s += &format!(
                "  probe {} #{} sent at {:.3}s expired at {}{}\n",
                e.flow,
                e.seq,
                e.sent_ms / 1000.0,
                e.router,
                match (&e.after_fault, e.since_fault_ms) {
                    (Some(f), Some(d)) => format!(", {d:.0} ms after {f}"),
                    _ => String::new(),
                }
            );
        }
        for l in self.table_loops.iter().take(20) {
            s += &format!(
                "  table loop at {:.3}s: {} → {}: {}\n",
                l.at_ms / 1000.0,
                l.from,
                l.dest,
                l.path.join(" ")
            );
        }
        s += &format!("restored after a fault: {}\n", self.restore_ms.line());
        s += &format!("tables settled:         {}\n", self.settle_ms.line());
        s += &format!("probe outage per fault: {}\n", self.reroute_ms.line());
        if self.carrier_reaction_ms.count > 0 {
            s += &format!(
                "carrier loss → next hop marked down: {}\n",
                self.carrier_reaction_ms.line()
            );
        }
        if !self.faults.is_empty() {
            s += "faults:\n";
            s += "  AT(s)    ACTION                         BROKE  RESTORED(ms)  SETTLED(ms)  OUTAGE(ms)  LOST PROBES\n";
            for f in &self.faults {
                let o = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0}"));
                let lost: Vec<String> = f
                    .lost_per_flow
                    .iter()
                    .filter(|x| x.1 > 0)
                    .map(|(n, l)| format!("{n} {l}"))
                    .collect();
                s += &format!(
                    "  {:<8.1} {:<30} {:<6} {:<13} {:<12} {:<11} {}{}\n",
                    f.at_ms / 1000.0,
                    f.action,
                    if f.broke { "yes" } else { "no" },
                    o(f.restored_ms),
                    o(f.settled_ms),
                    o(f.reroute_ms),
                    if lost.is_empty() {
                        "0".into()
                    } else {
                        lost.join(", ")
                    },
                    f.note
                        .as_ref()
                        .map_or(String::new(), |n| format!("  ({n})"))
                );
                for x in &f.first_failures {
                    s += &format!("           first failed check: {x}\n");
                }
                for x in &f.last_failures {
                    s += &format!("           last failed check: {x}\n");
                }
            }
        }
        s += "flows:\n";
        for f in &self.flows {
            let worst = f
                .outages
                .iter()
                .map(|o| o.len_ms)
                .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
            s += &format!(
                "  {}→{} {} @{}/s: {} of {} delivered, {} outages (longest {}), max {} hops{}\n",
                f.from,
                f.to,
                f.family,
                f.rate,
                f.delivered,
                f.sent,
                f.outages.len(),
                worst.map_or("-".into(), |w| format!("{w:.0} ms")),
                f.max_hops.map_or("-".into(), |h| h.to_string()),
                if f.looped > 0 {
                    let at: Vec<String> = f
                        .looped_at_ms
                        .iter()
                        .map(|t| format!("{:.1}s", t / 1000.0))
                        .collect();
                    format!(", {} LOOPED (at {})", f.looped, at.join(" "))
                } else {
                    String::new()
                }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = Distribution::of(&v);
        assert_eq!(d.count, 100);
        assert_eq!(
            (d.min, d.p50, d.p90, d.p99, d.max),
            (Some(1.0), Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
        let one = Distribution::of(&[7.0]);
        assert_eq!((one.p50, one.p99), (Some(7.0), Some(7.0)));
        assert_eq!(Distribution::of(&[]).p50, None);
        assert_eq!(Distribution::of(&[f64::NAN, 3.0]).count, 1);
    }

    #[test]
    fn summary_mentions_every_headline() {
        let r = Report {
            topology: "t".into(),
            delivery: Delivery::new(1000, 999),
            delivery_outside_windows: Delivery::new(900, 900),
            faults: vec![FaultReport {
                at_ms: 10_000.0,
                action: "link-down n1-n2".into(),
                note: None,
                broke: true,
                restored_ms: Some(30.0),
                settled_ms: Some(800.0),
                table_loop_polls: 0,
                reroute_ms: Some(12.0),
                lost_per_flow: vec![("c1→c2".into(), 3)],
                first_failures: vec![],
                last_failures: vec![],
            }],
            flows: vec![FlowReport {
                from: "c1".into(),
                to: "c2".into(),
                family: Family::V6,
                rate: 200,
                sent: 1000,
                delivered: 999,
                dups: 0,
                send_errors: 0,
                looped: 0,
                max_hops: Some(3),
                looped_at_ms: vec![],
                outages: vec![],
            }],
            probe_rate_total: 400,
            ..Report::default()
        };
        let s = r.summary();
        for want in [
            "99.900 %",
            "100.000 %",
            "link-down n1-n2",
            "loops: 0",
            "c1→c2 v6 @200/s: 999 of 1000 delivered",
            "max 3 hops",
            "over IPv4 and IPv6 (each configured flow twice, once per family, each at its \
             configured rate), 400 probes/s in all",
        ] {
            assert!(s.contains(want), "{want} missing:\n{s}");
        }
        assert_eq!(r.loops(), 0);
    }
}
