//! The `[lanes]` section of the dcmesh TOML configuration, and its compiler to a [`Plan`].
//!
//! ```toml
//! [lanes]
//! link_rate_bps = 100_000_000   # the rate the lanes share (the HTB root), bit/s
//! frame_overhead = 24           # wire bytes per frame beyond skb->len (default: Ethernet)
//! max_frame = 1514              # largest frame, bytes as skb->len counts it (MTU + 14)
//! mode = "auto"                 # "auto" | "edt" | "admission"
//! default_lane = 7              # lane of frames no rule matches
//!
//! [lanes.schedule]              # default: one entry, every gate open (strict priority)
//! base_time_ns = 0              # CLOCK_TAI; only its value modulo the cycle matters
//! cycle_ns = 1_000_000          # default: the sum of the intervals
//! entries = [
//!   { gates = [0], interval_ns = 250_000 },
//!   { gates = [0, 1, 2, 3, 4, 5, 6, 7], interval_ns = 750_000 },
//! ]
//!
//! [[lanes.rules]]               # tried in order; the first match picks the lane
//! name = "ptp"
//! lane = 0
//! proto = "udp"                 # name or number
//! dst_ports = "319-320"         # a port or "lo-hi"
//! dscp = [46]                   # any of these DSCP values
//! src = "10.0.0.0/8"            # prefixes; src and dst of one family
//!
//! [[lanes.lane]]                # per-lane settings
//! lane = 3
//! on_closed = { demote = 7 }    # or "drop" (the default)
//! queue_limit = 100             # packets in the lane's queue (default 1000)
//! ```

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    check::{check_schedule, LinkFacts, Problem, Severity},
    classify::cond,
    plan::{NO_DEMOTION, PLAN_F_VALID},
    GateEntry, Gcl, LaneParams, Link, Plan, Rule, RuleTable, LANES, MAX_CYCLE_NS, MAX_RULES,
    MIN_FRAME,
};

/// Default queue length of a lane in packets (Linux's default `txqueuelen`).
pub const DEFAULT_QUEUE_LIMIT: u32 = 1000;

/// The `[lanes]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanesConfig {
    /// Rate the lanes share in bit/s: the HTB root rate, and the rate frame times and
    /// guard bands are computed at.
    pub link_rate_bps: u64,
    /// Wire bytes per frame that `skb->len` does not count (preamble, gap, FCS).
    #[serde(default = "default_overhead")]
    pub frame_overhead: u32,
    /// Largest frame in bytes as `skb->len` counts it (MTU + 14-byte Ethernet header).
    #[serde(default = "default_max_frame")]
    pub max_frame: u32,
    #[serde(default)]
    pub mode: ModeChoice,
    /// Lane of frames no rule matches.
    #[serde(default = "default_lane")]
    pub default_lane: u8,
    /// The gate control list; absent means every gate always open.
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default, rename = "lane")]
    pub lanes: Vec<LaneConfig>,
}

fn default_overhead() -> u32 {
    crate::ETHERNET_OVERHEAD
}
fn default_max_frame() -> u32 {
    1514
}
fn default_lane() -> u8 {
    (LANES - 1) as u8
}

impl LanesConfig {
    /// A configuration with every default: every gate always open, everything on lane 7.
    pub fn new(link_rate_bps: u64) -> Self {
        Self {
            link_rate_bps,
            frame_overhead: default_overhead(),
            max_frame: default_max_frame(),
            mode: ModeChoice::Auto,
            default_lane: default_lane(),
            schedule: None,
            rules: Vec::new(),
            lanes: Vec::new(),
        }
    }
}

/// How the gates are enforced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    /// Earliest departure time if the kernel has fq or etf, else admission.
    #[default]
    Auto,
    /// Earliest departure time; fail if the kernel has neither fq nor etf.
    Edt,
    /// Admission control at enqueue, whatever the kernel has.
    Admission,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// A cycle start in ns of CLOCK_TAI (0: cycles aligned to the TAI epoch, so nodes
    /// with synchronised clocks and equal cycles open together).
    #[serde(default)]
    pub base_time_ns: u64,
    /// Cycle time in ns; default the sum of the intervals.
    #[serde(default)]
    pub cycle_ns: Option<u64>,
    pub entries: Vec<EntryConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryConfig {
    /// Lanes whose gates are open during this entry.
    pub gates: Vec<u8>,
    pub interval_ns: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in error messages.
    #[serde(default)]
    pub name: Option<String>,
    pub lane: u8,
    /// Any of these DSCP values (0..=63).
    #[serde(default)]
    pub dscp: Vec<u8>,
    /// Any of these 802.1Q PCP values (0..=7); untagged frames never match.
    #[serde(default)]
    pub pcp: Vec<u8>,
    #[serde(default)]
    pub proto: Option<Proto>,
    #[serde(default)]
    pub src: Option<IpNet>,
    #[serde(default)]
    pub dst: Option<IpNet>,
    #[serde(default)]
    pub src_ports: Option<PortRange>,
    #[serde(default)]
    pub dst_ports: Option<PortRange>,
}

/// An IP protocol by name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `udplite`, `gre`, `esp`)
/// or number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Proto {
    Number(u8),
    Name(String),
}

impl Proto {
    /// The protocol number, or `None` for an unknown name.
    pub fn number(&self) -> Option<u8> {
        Some(match self {
            Self::Number(n) => *n,
            Self::Name(s) => match s.to_ascii_lowercase().as_str() {
                "icmp" => 1,
                "tcp" => 6,
                "udp" => 17,
                "gre" => 47,
                "esp" => 50,
                "icmpv6" | "ipv6-icmp" => 58,
                "sctp" => 132,
                "udplite" => 136,
                _ => return None,
            },
        })
    }
}

/// A port or an inclusive range `"lo-hi"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRange {
    One(u16),
    Range(String),
}

impl PortRange {
    /// `[lo, hi]`, or a description of what is wrong.
    pub fn bounds(&self) -> Result<[u16; 2], String> {
        match self {
            Self::One(p) => Ok([*p, *p]),
            Self::Range(s) => {
                let parse = |x: &str| {
                    x.trim().parse::<u16>().map_err(|_| {
                        format!("\"{s}\" is not a port or a range \"lo-hi\" of ports 0..=65535")
                    })
                };
                let (lo, hi) = match s.split_once('-') {
                    Some((a, b)) => (parse(a)?, parse(b)?),
                    None => {
                        let p = parse(s)?;
                        (p, p)
                    }
                };
                if lo > hi {
                    return Err(format!(
                        "port range \"{s}\" is empty (low end above high end)"
                    ));
                }
                Ok([lo, hi])
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    pub lane: u8,
    /// What to do with a frame whose gate is closed or whose window is too short now
    /// (admission mode), or that fits no window at all (EDT modes).
    #[serde(default)]
    pub on_closed: OnClosed,
    /// Packets the lane's queue holds.
    #[serde(default)]
    pub queue_limit: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnClosed {
    #[default]
    Drop,
    /// Send it on this (lower-priority) lane if that lane can take it.
    Demote(u8),
}

/// A problem with a `[lanes]` section, located by its path in the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("lanes.{field}: {what}")]
    Field { field: &'static str, what: String },
    #[error("lanes.schedule: {0}")]
    Schedule(Problem),
    #[error("lanes.schedule.entries[{entry}]: {what}")]
    Entry { entry: usize, what: String },
    #[error("lanes.rules[{index}]{}: {what}", name_suffix(.name))]
    Rule {
        index: usize,
        name: Option<String>,
        what: String,
    },
    #[error("lanes.lane[{index}] (lane {lane}): {what}")]
    Lane {
        index: usize,
        lane: u8,
        what: String,
    },
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" (\"{n}\")"))
        .unwrap_or_default()
}

impl ConfigError {
    pub fn severity(&self) -> Severity {
        match self {
            Self::Schedule(p) => p.severity(),
            _ => Severity::Error,
        }
    }
}

/// Several problems, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration, ready for the loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// The plan without the parts only the loader knows: `lanes[].priority` (HTB class ids)
    /// and `link.mode` (which qdisc the kernel has).
    pub plan: Plan,
    pub mode: ModeChoice,
    /// Queue length of each lane in packets.
    pub queue_limits: [u32; LANES],
    /// Largest frame in bytes as `skb->len` counts it.
    pub max_frame: u32,
    /// Problems that do not stop the configuration (e.g. a lane that never opens).
    pub warnings: Vec<ConfigError>,
}

impl LanesConfig {
    /// Validates every field and compiles the plan, or returns every error found.
    pub fn compile(&self) -> Result<Compiled, ConfigErrors> {
        let mut errs = Vec::new();
        let field = |field, what: String| ConfigError::Field { field, what };
        if !(1_000..=1_000_000_000_000).contains(&self.link_rate_bps) {
            errs.push(field(
                "link_rate_bps",
                format!(
                    "{} bit/s is outside 1 kbit/s..=1 Tbit/s; give the shared link rate in bit/s",
                    self.link_rate_bps
                ),
            ));
        }
        if self.frame_overhead > 64 {
            errs.push(field(
                "frame_overhead",
                format!(
                    "{} bytes is more than 64; Ethernet adds 24",
                    self.frame_overhead
                ),
            ));
        }
        if !(MIN_FRAME..=65_535).contains(&self.max_frame) {
            errs.push(field(
                "max_frame",
                format!("{} bytes is outside {MIN_FRAME}..=65535", self.max_frame),
            ));
        }
        if usize::from(self.default_lane) >= LANES {
            errs.push(field(
                "default_lane",
                format!("lane {} does not exist; lanes are 0..=7", self.default_lane),
            ));
        }

        let mut traffic: u8 = lane_bit(self.default_lane);
        let rules = self.compile_rules(&mut errs, &mut traffic);
        let (lanes, queue_limits) = self.compile_lanes(&mut errs, &mut traffic);

        let (base, cycle, entries) = match &self.schedule {
            None => (0, 1_000_000, vec![GateEntry::new(0xff, 1_000_000)]),
            Some(s) => {
                let entries = compile_entries(s, &mut errs);
                let sum: u64 = s.entries.iter().map(|e| e.interval_ns).sum();
                (s.base_time_ns, s.cycle_ns.unwrap_or(sum), entries)
            }
        };
        let facts = LinkFacts {
            rate_bps: self.link_rate_bps,
            overhead: self.frame_overhead,
            max_frame: self.max_frame,
        };
        let mut warnings = Vec::new();
        if !errs.iter().any(|e| matches!(e, ConfigError::Entry { .. })) {
            check_schedule(&entries, cycle, &facts, traffic, |p| match p.severity() {
                Severity::Error => errs.push(ConfigError::Schedule(p)),
                Severity::Warning => warnings.push(ConfigError::Schedule(p)),
            });
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let plan = Plan {
            link: Link {
                rate_bps: self.link_rate_bps,
                overhead: self.frame_overhead,
                mode: 0,
                flags: PLAN_F_VALID,
                _pad: 0,
            },
            gcl: Gcl::new(base, cycle, &entries),
            lanes,
            rules,
        };
        Ok(Compiled {
            plan,
            mode: self.mode,
            queue_limits,
            max_frame: self.max_frame,
            warnings,
        })
    }

    fn compile_rules(&self, errs: &mut Vec<ConfigError>, traffic: &mut u8) -> RuleTable {
        let mut table = RuleTable {
            default_lane: u32::from(self.default_lane),
            ..RuleTable::default()
        };
        if self.rules.len() > MAX_RULES {
            errs.push(ConfigError::Field {
                field: "rules",
                what: format!(
                    "{} rules; at most {MAX_RULES} are supported",
                    self.rules.len()
                ),
            });
        }
        for (index, rc) in self.rules.iter().enumerate() {
            let mut bad = |what: String| {
                errs.push(ConfigError::Rule {
                    index,
                    name: rc.name.clone(),
                    what,
                })
            };
            match compile_rule(rc) {
                Ok(r) => {
                    *traffic |= lane_bit(r.lane);
                    if index < MAX_RULES {
                        table.rules[index] = r;
                        table.len = index as u32 + 1;
                    }
                }
                Err(list) => list.into_iter().for_each(&mut bad),
            }
        }
        table
    }

    fn compile_lanes(
        &self,
        errs: &mut Vec<ConfigError>,
        traffic: &mut u8,
    ) -> ([LaneParams; LANES], [u32; LANES]) {
        let mut params = [LaneParams {
            demote_to: NO_DEMOTION,
            ..LaneParams::default()
        }; LANES];
        let mut limits = [DEFAULT_QUEUE_LIMIT; LANES];
        let mut seen = 0u8;
        for (index, lc) in self.lanes.iter().enumerate() {
            let lane = lc.lane;
            let mut bad = |what: String| errs.push(ConfigError::Lane { index, lane, what });
            if usize::from(lane) >= LANES {
                bad("no such lane; lanes are 0..=7".into());
                continue;
            }
            if seen & lane_bit(lane) != 0 {
                bad("lane configured twice".into());
            }
            seen |= lane_bit(lane);
            if let OnClosed::Demote(to) = lc.on_closed {
                if usize::from(to) >= LANES {
                    bad(format!(
                        "demotion lane {to} does not exist; lanes are 0..=7"
                    ));
                } else if to <= lane {
                    bad(format!(
                        "demotion lane {to} must have a lower priority (higher number) than lane {lane}"
                    ));
                } else {
                    params[usize::from(lane)].demote_to = to;
                    *traffic |= lane_bit(to);
                }
            }
            match lc.queue_limit {
                Some(0) => bad("queue_limit 0 would drop every frame; give at least 1".into()),
                Some(n) => limits[usize::from(lane)] = n,
                None => {}
            }
        }
        (params, limits)
    }
}

fn lane_bit(lane: u8) -> u8 {
    if usize::from(lane) < LANES {
        1 << lane
    } else {
        0
    }
}

fn compile_entries(s: &ScheduleConfig, errs: &mut Vec<ConfigError>) -> Vec<GateEntry> {
    let mut out = Vec::with_capacity(s.entries.len());
    for (entry, e) in s.entries.iter().enumerate() {
        let mut gates = 0u8;
        for &g in &e.gates {
            if usize::from(g) >= LANES {
                errs.push(ConfigError::Entry {
                    entry,
                    what: format!("gate of lane {g}, which does not exist; lanes are 0..=7"),
                });
            }
            gates |= lane_bit(g);
        }
        if e.interval_ns > MAX_CYCLE_NS {
            errs.push(ConfigError::Entry {
                entry,
                what: format!(
                    "interval {} ns is longer than the longest cycle ({MAX_CYCLE_NS} ns)",
                    e.interval_ns
                ),
            });
        }
        out.push(GateEntry::new(
            gates,
            e.interval_ns.min(MAX_CYCLE_NS) as u32,
        ));
    }
    out
}

/// Address bytes (IPv4 in the first 4) and mask of a prefix.
fn prefix_bytes(net: &IpNet) -> ([u8; 16], [u8; 16]) {
    let mut a = [0u8; 16];
    let mut m = [0u8; 16];
    match net {
        IpNet::V4(n) => {
            a[..4].copy_from_slice(&n.network().octets());
            m[..4].copy_from_slice(&n.netmask().octets());
        }
        IpNet::V6(n) => {
            a.copy_from_slice(&n.network().octets());
            m.copy_from_slice(&n.netmask().octets());
        }
    }
    (a, m)
}

fn compile_rule(rc: &RuleConfig) -> Result<Rule, Vec<String>> {
    let mut errs = Vec::new();
    let mut r = Rule {
        lane: rc.lane,
        ..Rule::default()
    };
    if usize::from(rc.lane) >= LANES {
        errs.push(format!("lane {} does not exist; lanes are 0..=7", rc.lane));
    }
    for &d in &rc.dscp {
        if d >= 64 {
            errs.push(format!("DSCP {d} is outside 0..=63"));
        } else {
            r.dscp |= 1 << d;
            r.conds |= cond::DSCP;
        }
    }
    for &p in &rc.pcp {
        if p >= 8 {
            errs.push(format!("PCP {p} is outside 0..=7"));
        } else {
            r.pcp |= 1 << p;
            r.conds |= cond::PCP;
        }
    }
    if let Some(p) = &rc.proto {
        match p.number() {
            Some(n) => {
                r.proto = n;
                r.conds |= cond::PROTO;
            }
            None => errs.push(format!(
                "unknown protocol {p:?}; use tcp, udp, icmp, icmpv6, sctp, udplite, gre, esp or a number"
            )),
        }
    }
    let family = |n: &IpNet| if n.addr().is_ipv4() { 4 } else { 6 };
    if let (Some(s), Some(d)) = (&rc.src, &rc.dst) {
        if family(s) != family(d) {
            errs.push(format!("src {s} and dst {d} are of different families"));
        }
    }
    if let Some(s) = &rc.src {
        (r.src, r.src_mask) = prefix_bytes(s);
        r.family = family(s);
        r.conds |= cond::SRC;
    }
    if let Some(d) = &rc.dst {
        (r.dst, r.dst_mask) = prefix_bytes(d);
        r.family = family(d);
        r.conds |= cond::DST;
    }
    for (range, slot, bit, what) in [
        (&rc.src_ports, &mut r.sport, cond::SPORT, "src_ports"),
        (&rc.dst_ports, &mut r.dport, cond::DPORT, "dst_ports"),
    ] {
        if let Some(pr) = range {
            match pr.bounds() {
                Ok(b) => {
                    *slot = b;
                    r.conds |= bit;
                }
                Err(e) => errs.push(format!("{what}: {e}")),
            }
        }
    }
    if errs.is_empty() {
        Ok(r)
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classify::PacketKey, decide, Action};

    #[derive(Deserialize)]
    struct File {
        lanes: LanesConfig,
    }

    fn parse(s: &str) -> LanesConfig {
        toml::from_str::<File>(s).expect("parse").lanes
    }

    fn errors(s: &str) -> Vec<String> {
        match parse(s).compile() {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn module_example_compiles_and_classifies() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&example)
            .compile()
            .expect("the documented example is valid");
        assert_eq!(c.queue_limits[3], 100);
        assert_eq!(c.plan.lanes[3].demote_to, 7);
        assert_eq!(c.plan.gcl.cycle_ns, 1_000_000);
        let mut ptp = PacketKey {
            family: 4,
            dscp: 46,
            proto: 17,
            has_ports: true,
            sport: 5000,
            dport: 320,
            ..PacketKey::default()
        };
        ptp.src[..4].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(c.plan.rules.classify(&ptp), 0);
        ptp.src[0] = 11;
        assert_eq!(c.plan.rules.classify(&ptp), 7);
        // Lane 0 may send a full frame at the start of its 250 µs window.
        assert_eq!(decide(&c.plan, 0, 1514, 0).action, Action::Admitted);
    }

    #[test]
    fn defaults_are_strict_priority() {
        let c = parse("[lanes]\nlink_rate_bps = 100_000_000")
            .compile()
            .unwrap();
        assert_eq!(c.plan.gcl.gates_at(12_345), 0xff);
        assert_eq!(c.plan.rules.default_lane, 7);
        assert_eq!(c.queue_limits, [DEFAULT_QUEUE_LIMIT; LANES]);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn every_error_is_reported_with_its_location() {
        let e = errors(
            r#"
            [lanes]
            link_rate_bps = 100_000_000
            default_lane = 9
            [lanes.schedule]
            entries = [ { gates = [0, 8], interval_ns = 100 }, { gates = [7], interval_ns = 900_000 } ]
            [[lanes.rules]]
            name = "bad"
            lane = 1
            dscp = [64]
            proto = "quic"
            src = "10.0.0.0/8"
            dst = "2001:db8::/32"
            dst_ports = "9-3"
            [[lanes.lane]]
            lane = 4
            on_closed = { demote = 2 }
            queue_limit = 0
            "#,
        );
        let want = [
            "lanes.default_lane: lane 9 does not exist",
            "lanes.rules[0] (\"bad\"): DSCP 64 is outside 0..=63",
            "lanes.rules[0] (\"bad\"): unknown protocol",
            "lanes.rules[0] (\"bad\"): src 10.0.0.0/8 and dst 2001:db8::/32 are of different families",
            "lanes.rules[0] (\"bad\"): dst_ports: port range \"9-3\" is empty",
            "lanes.lane[0] (lane 4): demotion lane 2 must have a lower priority",
            "lanes.lane[0] (lane 4): queue_limit 0",
            "lanes.schedule.entries[0]: gate of lane 8, which does not exist",
        ];
        for w in want {
            assert!(
                e.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {e:#?}"
            );
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn schedule_problems_and_warnings() {
        let e = errors(
            r#"
            [lanes]
            link_rate_bps = 100_000_000
            [lanes.schedule]
            cycle_ns = 1_000_000
            entries = [ { gates = [0], interval_ns = 1_000 }, { gates = [7], interval_ns = 100_000 } ]
            [[lanes.rules]]
            lane = 2
            "#,
        );
        assert!(
            e.iter().any(|x| x.starts_with(
                "lanes.schedule: entry 0: interval 1000 ns is shorter than a minimum frame"
            )),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|x| x.contains("sum to 101000 ns but the cycle is 1000000 ns")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|x| x.contains("lane 2 carries traffic but its gate never opens")),
            "{e:#?}"
        );
        let ok = parse(
            "[lanes]\nlink_rate_bps = 100_000_000\n[lanes.schedule]\nentries = [{ gates = [7], interval_ns = 1_000_000 }]",
        )
        .compile()
        .unwrap();
        assert_eq!(ok.warnings.len(), 7, "lanes 0..=6 never open");
        assert_eq!(
            ok.warnings[0].to_string(),
            "lanes.schedule: lane 0 never opens and carries no traffic"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r = toml::from_str::<File>("[lanes]\nlink_rate_bps = 1000000\nlink_rate = 5");
        assert!(r.is_err());
    }

    #[test]
    fn ports_parse() {
        assert_eq!(PortRange::One(7).bounds(), Ok([7, 7]));
        assert_eq!(PortRange::Range("10-20".into()).bounds(), Ok([10, 20]));
        assert_eq!(PortRange::Range("443".into()).bounds(), Ok([443, 443]));
        assert!(PortRange::Range("1-70000".into()).bounds().is_err());
        assert!(PortRange::Range("x".into()).bounds().is_err());
    }
}
