//! Results of the forwarding benchmark, the targets, and the Markdown report.
use std::fmt::Write as _;

use crate::stats::{ns_per_packet, router_cost_ns, Summary};

/// The measured cases, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// Generator straight into the sink: the per-packet cost of everything but a router.
    Direct,
    /// R runs an XDP program that only redirects (devmap): the XDP forwarding ceiling.
    Ceiling,
    /// R runs dcmesh with one route.
    Dcmesh1,
    /// R runs dcmesh with the large table, traffic spread over many destinations.
    DcmeshMany,
    /// R forwards in the kernel (XDP detached), one route.
    Kernel1,
    /// R forwards in the kernel with the large table, the same traffic as `DcmeshMany`.
    KernelMany,
}

impl Case {
    #[cfg(test)]
    pub const ALL: [Case; 6] = [
        Case::Direct,
        Case::Ceiling,
        Case::Dcmesh1,
        Case::DcmeshMany,
        Case::Kernel1,
        Case::KernelMany,
    ];

    /// Short label with the numbering ((4b) is an addition).
    pub fn label(self) -> &'static str {
        match self {
            Case::Direct => "(0) direct: generator → sink",
            Case::Ceiling => "(1) ceiling: XDP redirect only",
            Case::Dcmesh1 => "(2) dcmesh, 1 route",
            Case::DcmeshMany => "(3) dcmesh, large table",
            Case::Kernel1 => "(4) Linux forwarding, 1 route",
            Case::KernelMany => "(4b) Linux forwarding, large table",
        }
    }
}

/// One named check with its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub what: String,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    pub fn new(what: impl Into<String>, pass: bool, detail: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            pass,
            detail: detail.into(),
        }
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

/// Everything measured for one case.
#[derive(Clone, Debug, Default)]
pub struct CaseResult {
    /// Chain rate of each timed repetition, Mpps at the sink.
    pub mpps: Vec<f64>,
    /// Share of each repetition's wall-clock time the chain had its CPU (0..=1); the rest
    /// went to other tasks on the machine.
    pub cpu_share: Vec<f64>,
    /// Frames the generator sent over the case (warm-up included).
    pub generated: u64,
    /// Frames the sink counted over the same span.
    pub received: u64,
    /// ns per packet of R's program alone (`BPF_PROG_TEST_RUN`, large repeat count).
    pub prog_ns: Option<f64>,
    /// ns per packet of R's program in the running chain (kernel BPF run-time statistics).
    pub chain_prog_ns: Option<f64>,
    /// Evidence that the packets took the path the case claims.
    pub checks: Vec<Check>,
}

/// When, where and how the run was made.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// UTC, RFC 3339.
    pub date: String,
    pub kernel: String,
    pub commit: String,
    pub cpu: String,
    /// `/proc/loadavg` before and after the run: other work on the machine skews rates.
    pub load_before: String,
    pub load_after: String,
    pub reps: usize,
    pub seconds: f64,
    /// Routes and destinations of the large-table cases.
    pub routes: usize,
    pub destinations: usize,
    /// Packets per `BPF_PROG_TEST_RUN` cost measurement.
    pub test_run_packets: u64,
    /// Wall-clock duration of the whole benchmark, seconds.
    pub wall_seconds: f64,
}

/// The cost of one path through the forwarder (`BPF_PROG_TEST_RUN`).
#[derive(Clone, Debug, PartialEq)]
pub struct PathCost {
    /// Which route table was loaded ("1 route", "100000 routes").
    pub table: String,
    /// Where the path ends, and what it adds to the previous one.
    pub path: String,
    /// The counter the path moves.
    pub counter: &'static str,
    /// Mean ns per run.
    pub ns: f64,
    /// Index, among the rows of the same table, of the path this one extends.
    pub extends: Option<usize>,
}

/// Below this share of the wall-clock time on its CPU, the chain was crowded out by
/// other tasks and its rate is a lower bound.
pub const MIN_CPU_SHARE: f64 = 0.95;

/// The benchmark's results.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub meta: Meta,
    pub cases: Vec<(Case, CaseResult)>,
    /// dcmesh's cost by path, per table, cheapest path first.
    pub paths: Vec<PathCost>,
    /// Free-form profiling notes (per-stage costs), printed under the tables.
    pub notes: Vec<String>,
}

/// A ratio target: `num / den ≥ min`.
struct Ratio {
    what: &'static str,
    min: f64,
    percent: bool,
}

impl Report {
    pub fn get(&self, c: Case) -> Option<&CaseResult> {
        self.cases.iter().find(|(k, _)| *k == c).map(|(_, r)| r)
    }

    /// Median chain rate of `c`, Mpps.
    pub fn median(&self, c: Case) -> Option<f64> {
        self.get(c)
            .and_then(|r| Summary::of(&r.mpps))
            .map(|s| s.median)
    }

    /// Median rate of `c` per second of CPU time the chain got, Mpps: what the chain would
    /// reach with its CPU to itself (an estimate when other tasks took the CPU).
    pub fn median_per_cpu(&self, c: Case) -> Option<f64> {
        let r = self.get(c)?;
        if r.cpu_share.len() != r.mpps.len() || r.cpu_share.iter().any(|s| *s <= 0.0) {
            return None;
        }
        let v: Vec<f64> = r
            .mpps
            .iter()
            .zip(&r.cpu_share)
            .map(|(m, s)| m / s)
            .collect();
        Summary::of(&v).map(|s| s.median)
    }

    /// Router cost of `c` from median rates, ns per packet (`None` for the direct case).
    pub fn cost(&self, c: Case) -> Option<f64> {
        self.cost_on(c, |k| self.median(k))
    }

    fn cost_on(&self, c: Case, rate: impl Fn(Case) -> Option<f64>) -> Option<f64> {
        if c == Case::Direct {
            return None;
        }
        Some(router_cost_ns(rate(c)?, rate(Case::Direct)?))
    }

    /// The targets (and one addition, marked as such), evaluated on median
    /// wall-clock rates.
    pub fn targets(&self) -> Vec<Check> {
        self.targets_on(|c| self.median(c), "")
    }

    /// The same targets on CPU-normalised rates ([`Report::median_per_cpu`]).
    pub fn targets_per_cpu(&self) -> Vec<Check> {
        self.targets_on(|c| self.median_per_cpu(c), ", CPU-normalised estimate")
    }

    fn targets_on(&self, rate: impl Fn(Case) -> Option<f64>, suffix: &str) -> Vec<Check> {
        let cost = |c| self.cost_on(c, &rate);
        let mut out = Vec::new();
        let mut ratio = |r: Ratio, num: Option<f64>, den: Option<f64>, how: &str| {
            let (pass, detail) = match (num, den) {
                (Some(n), Some(d)) if d > 0.0 && n > 0.0 => {
                    let x = n / d;
                    let shown = if r.percent {
                        format!("{:.1} %", x * 100.0)
                    } else {
                        format!("{x:.2}×")
                    };
                    (x >= r.min, format!("{shown} ({how}: {n:.2} / {d:.2})"))
                }
                _ => (false, format!("not measured ({how})")),
            };
            out.push(Check::new(format!("{}{suffix}", r.what), pass, detail));
        };
        ratio(
            Ratio {
                what: "(2) router cost ≥ 4× better than (4)",
                min: 4.0,
                percent: false,
            },
            cost(Case::Kernel1),
            cost(Case::Dcmesh1),
            "kernel ns / dcmesh ns",
        );
        ratio(
            Ratio {
                what: "(2) chain ≥ 90 % of (1)",
                min: 0.9,
                percent: true,
            },
            rate(Case::Dcmesh1),
            rate(Case::Ceiling),
            "Mpps",
        );
        ratio(
            Ratio {
                what: "(3) chain ≥ 80 % of (2)",
                min: 0.8,
                percent: true,
            },
            rate(Case::DcmeshMany),
            rate(Case::Dcmesh1),
            "Mpps",
        );
        ratio(
            Ratio {
                what: "(3) router cost ≥ 4× better than (4b) (addition: large table on both)",
                min: 4.0,
                percent: false,
            },
            cost(Case::KernelMany),
            cost(Case::DcmeshMany),
            "kernel ns / dcmesh ns",
        );
        out
    }

    /// The cases whose chain had less than [`MIN_CPU_SHARE`] of its CPU in some
    /// repetition, described; `None` if none.
    pub fn crowded(&self) -> Option<String> {
        let v: Vec<String> = self
            .cases
            .iter()
            .filter_map(|(c, r)| {
                let min = Summary::of(&r.cpu_share)?.min;
                (min < MIN_CPU_SHARE).then(|| format!("{} down to {:.0} %", c.label(), min * 100.0))
            })
            .collect();
        (!v.is_empty()).then(|| v.join("; "))
    }

    /// Whether every case's evidence holds (the measurement is meaningful).
    pub fn checks_ok(&self) -> bool {
        self.cases
            .iter()
            .all(|(_, r)| r.checks.iter().all(|c| c.pass))
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let m = &self.meta;
        let mut s = String::new();
        let _ = writeln!(s, "# dcmesh forwarding benchmark, {}\n", m.date);
        let _ = writeln!(
            s,
            "Kernel {}, commit {}, {}. Topology gen — R — sink (network namespaces, veth), \
             64-byte IPv4/UDP frames from an XDP live-frames generator, an XDP counter at the \
             sink. {} timed repetitions of {:.1} s per case after a warm-up; large table = {} \
             routes, traffic cycling over {} destinations; {} runs per BPF_PROG_TEST_RUN \
             figure. Load average before / after: {} / {}. Whole run: {:.0} s.\n",
            m.kernel,
            m.commit,
            m.cpu,
            m.reps,
            m.seconds,
            m.routes,
            m.destinations,
            m.test_run_packets,
            m.load_before,
            m.load_after,
            m.wall_seconds,
        );
        s.push_str(
            "| case | chain Mpps min | median | max | ns/pkt (chain) | router cost ns/pkt \
             | program ns/pkt (test_run) | program ns/pkt (in chain) | delivered \
             | CPU share (min) | Mpps per CPU-second (median) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let opt = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.1}"));
        for (case, r) in &self.cases {
            let sum = Summary::of(&r.mpps);
            let (min, med, max) = sum.map_or(("—".into(), "—".into(), "—".into()), |x| {
                (
                    format!("{:.2}", x.min),
                    format!("{:.2}", x.median),
                    format!("{:.2}", x.max),
                )
            });
            let delivered = if r.generated > 0 {
                format!("{:.1} %", r.received as f64 * 100.0 / r.generated as f64)
            } else {
                "—".into()
            };
            let share = Summary::of(&r.cpu_share)
                .map_or("—".into(), |x| format!("{:.0} %", x.min * 100.0));
            let _ = writeln!(
                s,
                "| {} | {min} | {med} | {max} | {} | {} | {} | {} | {delivered} | {share} | {} |",
                case.label(),
                opt(sum.map(|x| ns_per_packet(x.median))),
                opt(self.cost(*case)),
                opt(r.prog_ns),
                opt(r.chain_prog_ns),
                self.median_per_cpu(*case)
                    .map_or("—".into(), |v| format!("{v:.2}")),
            );
        }
        if let Some(w) = self.crowded() {
            let _ = writeln!(
                s,
                "\n**Warning:** other tasks took CPU time from the chain ({w}); those rates \
                 are lower bounds. Re-run on a quiet machine before drawing conclusions."
            );
        }
        s.push_str("\n## Targets\n\n| target | measured | result |\n|---|---|---|\n");
        let mut targets = self.targets();
        if self.crowded().is_some() {
            targets.extend(self.targets_per_cpu());
        }
        for t in targets {
            let _ = writeln!(s, "| {} | {} | {} |", t.what, t.detail, verdict(t.pass));
        }
        s.push_str("\n## Evidence that the packets were forwarded\n\n");
        for (case, r) in &self.cases {
            for c in &r.checks {
                let _ = writeln!(
                    s,
                    "- {} {}: {}: {}",
                    verdict(c.pass),
                    case.label(),
                    c.what,
                    c.detail
                );
            }
        }
        if !self.paths.is_empty() {
            s.push_str(
                "\n## dcmesh cost by path (BPF_PROG_TEST_RUN)\n\n\
                 | table | path | counter | ns/run | added to the path it extends |\n\
                 |---|---|---|---:|---:|\n",
            );
            let mut tables: Vec<&str> = Vec::new();
            for p in &self.paths {
                if !tables.contains(&p.table.as_str()) {
                    tables.push(&p.table);
                }
            }
            for t in tables {
                let rows: Vec<&PathCost> = self.paths.iter().filter(|p| p.table == t).collect();
                for p in &rows {
                    let added = p
                        .extends
                        .and_then(|i| rows.get(i))
                        .map_or("—".into(), |b| format!("{:+.1}", p.ns - b.ns));
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {:.1} | {added} |",
                        p.table, p.path, p.counter, p.ns
                    );
                }
            }
        }
        if !self.notes.is_empty() {
            s.push_str("\n## Where the time goes\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s.push_str(METHOD);
        s
    }
}

const METHOD: &str = "
## Method

- Chain rate: frames counted by the sink's XDP program over the generator's wall-clock
  run time. Each timed repetition follows a 0.3 s warm-up and is one live-frames call
  sized from the warm-up's rate. Router cost = 1/chain − 1/direct
  (`shared/notes/bench.md`): generator, router and sink share the generator's CPU, so the
  difference isolates what R adds per packet. Cases (0)–(4) run interleaved, one
  repetition of each per round (dcmesh loaded afresh each round), so drifting background
  load spreads over all of them; (4b) follows, as its FIB routes would slow (4).
- The generator thread runs at nice -20, pinned to one CPU, where the whole chain runs.
  CPU share: the generator thread's plus `ksoftirqd`'s time on the chain's CPU over wall
  time (`/proc/*/schedstat`). Below 95 %, other tasks took the CPU and the rate is a lower
  bound; Mpps per CPU-second (rate / share) then estimates the rate on a quiet machine
  (other tasks still pollute the caches), and the targets are also shown on it.
- Program ns/pkt (test_run): `BPF_PROG_TEST_RUN` of R's program, not live. The kernel does
  not restore the frame between repeats and the forwarder lowers the TTL in place, so the
  forwarding figures repeat a TTL-255 frame 254 times per call (every repeat forwards, as
  R's counters confirm) over many calls; frames the program leaves unchanged repeat
  1,000,000 times per call. Large table: calls cycle over the destinations, so all but
  the first of each destination's 254 repeats hit the per-CPU route cache; the chain's
  figure, where every packet has another destination, shows the cost with cache misses.
  The kernel reports whole ns per call: figures may read up to 1 ns low.
- Program ns/pkt (in chain): the kernel's BPF run-time statistics (`BPF_ENABLE_STATS`)
  during one extra 1 s run of the chain, not one of the timed repetitions (the statistics
  cost time themselves); they include reading the clock.
- Linux forwarding: XDP detached from R, `ip_forward=1`, GRO on R's ingress veth, a
  permanent neighbour entry for the sink, the same routes in R's FIB (`ip -batch`).
";

#[cfg(test)]
mod tests {
    use super::*;

    fn case(mpps: &[f64]) -> CaseResult {
        CaseResult {
            mpps: mpps.to_vec(),
            cpu_share: vec![1.0; mpps.len()],
            generated: 100,
            received: 99,
            checks: vec![Check::new("sink counted", true, "ok")],
            ..CaseResult::default()
        }
    }

    fn report(d1: f64, many: f64) -> Report {
        Report {
            cases: vec![
                (Case::Direct, case(&[7.0, 7.2, 7.1, 7.1, 7.3])),
                (Case::Ceiling, case(&[4.25; 5])),
                (Case::Dcmesh1, case(&[d1; 5])),
                (Case::DcmeshMany, case(&[many; 5])),
                (Case::Kernel1, case(&[1.25; 5])),
                (Case::KernelMany, case(&[1.2; 5])),
            ],
            ..Report::default()
        }
    }

    #[test]
    fn targets_pass_and_fail_on_the_right_side() {
        let t = report(4.0, 3.5).targets();
        assert!(t.iter().all(|c| c.pass), "{t:#?}");
        // 3.8 / 4.25 = 89.4 % < 90 %.
        let t = report(3.8, 3.5).targets();
        assert!(!t[1].pass && t[0].pass, "{t:#?}");
        // 3.1 / 4.0 = 77.5 % < 80 %.
        let t = report(4.0, 3.1).targets();
        assert!(!t[2].pass && t[1].pass, "{t:#?}");
    }

    #[test]
    fn cpu_normalised_rates_divide_by_the_share() {
        let mut r = report(4.0, 3.5);
        r.cases[1].1.mpps = vec![2.0, 3.0, 4.0];
        r.cases[1].1.cpu_share = vec![0.5, 1.0, 0.8];
        // 4.0, 3.0, 5.0 → median 4.0.
        assert_eq!(r.median_per_cpu(Case::Ceiling), Some(4.0));
        assert_eq!(r.median(Case::Ceiling), Some(3.0));
        r.cases[1].1.cpu_share = vec![0.5];
        assert_eq!(r.median_per_cpu(Case::Ceiling), None);
    }

    #[test]
    fn router_cost_uses_medians() {
        let r = report(4.0, 3.5);
        let expect = 1e3 / 4.0 - 1e3 / 7.1;
        assert!((r.cost(Case::Dcmesh1).unwrap() - expect).abs() < 1e-9);
        assert_eq!(r.cost(Case::Direct), None);
    }

    #[test]
    fn missing_case_fails_its_target() {
        let mut r = report(4.0, 3.5);
        r.cases.retain(|(c, _)| *c != Case::Kernel1);
        let t = r.targets();
        assert!(!t[0].pass);
        assert!(t[0].detail.contains("not measured"));
    }

    #[test]
    fn markdown_has_every_case_target_and_check() {
        let mut r = report(4.0, 3.5);
        r.cases[2]
            .1
            .checks
            .push(Check::new("fwd", false, "nothing"));
        let md = r.markdown();
        for c in Case::ALL {
            assert!(md.contains(c.label()), "{}", c.label());
        }
        assert!(md.contains("| (2) chain ≥ 90 % of (1) | 94.1 %"), "{md}");
        assert!(md.contains("- FAIL (2) dcmesh, 1 route: fwd: nothing"));
        assert!(md.contains("| 99.0 % |"));
        assert!(!r.checks_ok());
    }

    #[test]
    fn path_table_shows_stage_differences_within_a_table() {
        let mut r = report(4.0, 3.5);
        let rows = [
            ("1 route", "a", 10.0, None),
            ("big", "a", 12.0, None),
            ("1 route", "b", 25.5, Some(0)),
            ("1 route", "c", 30.0, Some(1)),
            ("1 route", "d", 20.0, Some(0)),
        ];
        for (table, path, ns, extends) in rows {
            r.paths.push(PathCost {
                table: table.into(),
                path: path.into(),
                counter: "k",
                ns,
                extends,
            });
        }
        let md = r.markdown();
        assert!(md.contains("| 1 route | a | k | 10.0 | — |"), "{md}");
        assert!(md.contains("| 1 route | b | k | 25.5 | +15.5 |"), "{md}");
        assert!(md.contains("| 1 route | c | k | 30.0 | +4.5 |"), "{md}");
        assert!(md.contains("| 1 route | d | k | 20.0 | +10.0 |"), "{md}");
        assert!(md.contains("| big | a | k | 12.0 | — |"), "{md}");
        // Rows of one table stay together, in first-seen table order.
        assert!(md.find("| 1 route | d").unwrap() < md.find("| big | a").unwrap());
    }

    #[test]
    fn crowded_runs_are_flagged() {
        let mut r = report(4.0, 3.5);
        assert_eq!(r.crowded(), None);
        let md = r.markdown();
        assert!(!md.contains("Warning") && !md.contains("CPU-normalised estimate"));
        r.cases[1].1.cpu_share = vec![1.0, 0.7, 0.99, 1.0, 1.0];
        let w = r.crowded().unwrap();
        assert!(w.contains("(1) ceiling") && w.contains("70 %"), "{w}");
        let md = r.markdown();
        assert!(md.contains("**Warning:**"));
        assert!(
            md.contains("| (2) chain ≥ 90 % of (1), CPU-normalised estimate |"),
            "{md}"
        );
    }
}
