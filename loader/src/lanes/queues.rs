//! The queues the lanes program steers into: an HTB root of the link rate with eight
//! leaves in strict priority, and below each leaf the EDT qdisc the kernel has (fq, else
//! etf) or a plain FIFO (admission mode). Built with `tc` (iproute2), the interface every
//! Linux admin can inspect it with (`tc -s class show dev IF`).

use std::{fmt, process::Command};

use dcmesh_tsn::{
    config::{Compiled, ModeChoice},
    Mode, LANES,
};

use super::LanesError;

/// HTB handle major used when none is given.
pub const DEFAULT_MAJOR: u16 = 1;

/// Minor of lane `lane`'s leaf class: lane 0 is `:10`, lane 7 is `:17` (hex).
pub const fn lane_minor(lane: u8) -> u16 {
    0x10 + (lane & 7) as u16
}

/// The `skb->priority` value that makes HTB queue a frame in lane `lane`'s leaf.
pub const fn lane_class(major: u16, lane: u8) -> u32 {
    ((major as u32) << 16) | lane_minor(lane) as u32
}

/// `major:minor` as tc writes it (hex).
fn classid(major: u16, minor: u16) -> String {
    format!("{major:x}:{minor:x}")
}

/// What the queues should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// HTB root rate (= ceil), bit/s.
    pub rate_bps: u64,
    /// Bytes added per frame in HTB's rate accounting (as in the plan).
    pub overhead: u32,
    /// Largest frame in bytes (HTB quantum).
    pub max_frame: u32,
    /// Packets each lane's leaf queue holds.
    pub queue_limits: [u32; LANES],
    /// Leaf of frames the program did not classify (program detached, no plan).
    pub default_lane: u8,
    pub mode: ModeChoice,
    /// HTB handle major.
    pub major: u16,
}

impl QueueSpec {
    pub fn from_compiled(c: &Compiled) -> Self {
        Self {
            rate_bps: c.plan.link.rate_bps,
            overhead: c.plan.link.overhead,
            max_frame: c.max_frame,
            queue_limits: c.queue_limits,
            default_lane: (c.plan.rules.default_lane & 7) as u8,
            mode: c.mode,
            major: DEFAULT_MAJOR,
        }
    }
}

/// The earliest-departure-time qdisc found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdtQdisc {
    /// `fq`: honours `skb->tstamp` in CLOCK_MONOTONIC.
    Fq,
    /// `etf`: honours `skb->tstamp` in CLOCK_TAI.
    Etf,
}

/// How gates are enforced on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveMode {
    /// Frames are stamped with their departure time and held by this qdisc until then.
    Edt(EdtQdisc),
    /// No EDT qdisc: frames are admitted at enqueue only if their gate is open and they fit
    /// the window, else demoted or dropped.
    Admission,
}

impl ActiveMode {
    /// The plan's `link.mode` for this mode.
    pub const fn plan_mode(self) -> Mode {
        match self {
            Self::Edt(EdtQdisc::Fq) => Mode::EdtMonotonic,
            Self::Edt(EdtQdisc::Etf) => Mode::EdtTai,
            Self::Admission => Mode::Admission,
        }
    }
}

impl fmt::Display for ActiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Edt(EdtQdisc::Fq) => write!(f, "earliest departure time (fq holds frames until their window)"),
            Self::Edt(EdtQdisc::Etf) => write!(f, "earliest departure time (etf holds frames until their window)"),
            Self::Admission => write!(
                f,
                "admission control (no fq or etf in this kernel: frames are admitted only inside their window, else demoted or dropped)"
            ),
        }
    }
}

/// Runs `tc args`; its stderr on failure.
pub(crate) fn tc(args: &[&str]) -> Result<String, LanesError> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .map_err(LanesError::TcMissing)?;
    if !out.status.success() {
        return Err(LanesError::Tc {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether tc's error says the qdisc kind is not in this kernel (as opposed to, say, a
/// bad parameter).
pub fn qdisc_unknown(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("specified qdisc kind is unknown")
        || s.contains("no such file or directory")
        || s.contains("unknown qdisc")
}

/// Builds (or rebuilds) the HTB tree on `iface` in the calling thread's network namespace,
/// picks the leaf qdisc, and says which mode is active.
pub fn build_queues(iface: &str, spec: &QueueSpec) -> Result<ActiveMode, LanesError> {
    let m = spec.major;
    let rate = format!("{}bit", spec.rate_bps);
    // Each leaf is guaranteed 1/1000 of the link (so none starves entirely) and may borrow
    // up to the whole link; among borrowers HTB serves the lowest `prio` first.
    let floor = format!("{}bit", (spec.rate_bps / 1000).max(8_000));
    let quantum = (spec.max_frame + spec.overhead).to_string();
    let overhead = spec.overhead.to_string();
    let root = format!("{m:x}:");
    let default = format!("{:x}", lane_minor(spec.default_lane));
    // HTB cannot be changed in place ("qdisc replace" of an HTB root fails), and deleting
    // it would drop every queued frame: an existing tree of ours is kept and only its
    // classes and leaves are updated, so a restart does not disturb traffic.
    match existing_htb(iface, m)? {
        Some(d) if d == lane_minor(spec.default_lane) => {}
        Some(d) => log::warn!(
            "{iface}: keeping the lanes' HTB tree, whose default leaf is {m:x}:{d:x}, not {m:x}:{default} (it only matters while no lanes program runs); \"dcmesh lanes remove\" and a restart rebuild it"
        ),
        None => {
            tc(&[
                "qdisc", "replace", "dev", iface, "root", "handle", &root, "htb", "default",
                &default,
            ])?;
        }
    }
    let top = classid(m, 1);
    tc(&[
        "class", "replace", "dev", iface, "parent", &root, "classid", &top, "htb", "rate", &rate,
        "ceil", &rate, "quantum", &quantum, "overhead", &overhead,
    ])?;
    for lane in 0..LANES as u8 {
        let prio = lane.to_string();
        tc(&[
            "class",
            "replace",
            "dev",
            iface,
            "parent",
            &top,
            "classid",
            &classid(m, lane_minor(lane)),
            "htb",
            "rate",
            &floor,
            "ceil",
            &rate,
            "prio",
            &prio,
            "quantum",
            &quantum,
            "overhead",
            &overhead,
        ])?;
    }
    let candidates: &[Option<EdtQdisc>] = match spec.mode {
        ModeChoice::Auto => &[Some(EdtQdisc::Fq), Some(EdtQdisc::Etf), None],
        ModeChoice::Edt => &[Some(EdtQdisc::Fq), Some(EdtQdisc::Etf)],
        ModeChoice::Admission => &[None],
    };
    for cand in candidates {
        match set_leaf_qdiscs(iface, spec, *cand) {
            Ok(()) => {
                return Ok(match cand {
                    Some(q) => ActiveMode::Edt(*q),
                    None => ActiveMode::Admission,
                })
            }
            Err(LanesError::Tc { stderr, .. }) if qdisc_unknown(&stderr) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(LanesError::NoEdtQdisc)
}

fn set_leaf_qdiscs(iface: &str, spec: &QueueSpec, q: Option<EdtQdisc>) -> Result<(), LanesError> {
    for lane in 0..LANES as u8 {
        let parent = classid(spec.major, lane_minor(lane));
        let limit = spec.queue_limits[lane as usize].to_string();
        let mut args = vec!["qdisc", "replace", "dev", iface, "parent", &parent];
        match q {
            Some(EdtQdisc::Fq) => {
                args.extend(["fq", "limit", &limit, "flow_limit", &limit]);
            }
            // etf compares stamps with CLOCK_TAI; 200 µs lets the frame reach the device
            // before its time. Forwarded frames have no socket, hence skip_sock_check.
            Some(EdtQdisc::Etf) => {
                args.extend([
                    "etf",
                    "clockid",
                    "CLOCK_TAI",
                    "delta",
                    "200000",
                    "skip_sock_check",
                ]);
            }
            None => args.extend(["pfifo", "limit", &limit]),
        }
        tc(&args)?;
    }
    Ok(())
}

/// Removes the HTB tree (and the lanes' queues with it) from `iface`.
pub fn remove_queues(iface: &str) -> Result<(), LanesError> {
    tc(&["qdisc", "del", "dev", iface, "root"]).map(|_| ())
}

/// The default leaf minor of the HTB root with handle `major:` on `iface`, if there is one.
pub fn existing_htb(iface: &str, major: u16) -> Result<Option<u16>, LanesError> {
    Ok(parse_htb_root(
        &tc(&["qdisc", "show", "dev", iface, "root"])?,
        major,
    ))
}

/// Parses `tc qdisc show dev IF root`: `qdisc htb 1: root ... default 0x17 ...`.
pub fn parse_htb_root(text: &str, major: u16) -> Option<u16> {
    let handle = format!("{major:x}:");
    text.lines().find_map(|line| {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 4 || w[0] != "qdisc" || w[1] != "htb" || w[2] != handle || w[3] != "root" {
            return None;
        }
        let d = w
            .iter()
            .position(|x| *x == "default")
            .and_then(|i| w.get(i + 1))?;
        u16::from_str_radix(d.trim_start_matches("0x"), 16).ok()
    })
}

/// Statistics of one HTB class, as `tc -s class show` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// `major:minor` (hex, as tc prints it).
    pub classid: String,
    /// The lane, when this is one of the lane leaves.
    pub lane: Option<u8>,
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
}

/// Statistics of the HTB classes on `iface`.
pub fn class_stats(iface: &str) -> Result<Vec<ClassStats>, LanesError> {
    Ok(parse_class_stats(&tc(&[
        "-s", "class", "show", "dev", iface,
    ])?))
}

/// Parses `tc -s class show` output: a `class htb M:N ...` line, then ` Sent B bytes P pkt
/// (dropped D, ...)`.
pub fn parse_class_stats(text: &str) -> Vec<ClassStats> {
    let mut out: Vec<ClassStats> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["class", "htb", id, ..] => {
                let lane = id
                    .split_once(':')
                    .and_then(|(_, minor)| u16::from_str_radix(minor, 16).ok())
                    .and_then(|minor| {
                        (0x10..0x10 + LANES as u16)
                            .contains(&minor)
                            .then(|| (minor - 0x10) as u8)
                    });
                out.push(ClassStats {
                    classid: id.to_string(),
                    lane,
                    ..ClassStats::default()
                });
            }
            ["Sent", bytes, "bytes", pkts, "pkt", "(dropped", drops, ..] => {
                if let Some(c) = out.last_mut() {
                    c.bytes = bytes.parse().unwrap_or(0);
                    c.packets = pkts.parse().unwrap_or(0);
                    c.drops = drops.trim_end_matches(',').parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_ids() {
        assert_eq!(lane_class(1, 0), 0x10010);
        assert_eq!(lane_class(1, 7), 0x10017);
        assert_eq!(lane_class(0xab, 3), 0xab0013);
        assert_eq!(classid(1, lane_minor(7)), "1:17");
    }

    #[test]
    fn unknown_qdisc_is_told_apart_from_bad_parameters() {
        assert!(qdisc_unknown("Error: Specified qdisc kind is unknown."));
        assert!(qdisc_unknown(
            "RTNETLINK answers: No such file or directory"
        ));
        assert!(!qdisc_unknown("Error: Invalid argument."));
        assert!(!qdisc_unknown("Illegal \"limit\""));
    }

    #[test]
    fn finds_our_htb_root() {
        let t = "qdisc htb 1: root refcnt 3 r2q 10 default 0x17 direct_packets_stat 1 direct_qlen 1000\n";
        assert_eq!(parse_htb_root(t, 1), Some(0x17));
        assert_eq!(parse_htb_root(t, 2), None);
        assert_eq!(parse_htb_root("qdisc noqueue 0: root refcnt 2\n", 1), None);
        assert_eq!(
            parse_htb_root("qdisc tbf 1: root refcnt 2 rate 1Mbit\n", 1),
            None
        );
    }

    #[test]
    fn parses_tc_class_statistics() {
        let text = "class htb 1:1 root rate 100Mbit ceil 100Mbit burst 1600b cburst 1600b \n Sent 1538000 bytes 1000 pkt (dropped 0, overlimits 12 requeues 0) \n backlog 0b 0p requeues 0\nclass htb 1:10 parent 1:1 leaf 8001: prio 0 rate 100Kbit ceil 100Mbit burst 1600b cburst 1600b \n Sent 7000 bytes 70 pkt (dropped 3, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\nclass htb 1:17 parent 1:1 leaf 8008: prio 7 rate 100Kbit ceil 100Mbit\n Sent 5 bytes 1 pkt (dropped 250, overlimits 0 requeues 0) \n";
        let s = parse_class_stats(text);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            ClassStats {
                classid: "1:1".into(),
                lane: None,
                bytes: 1538000,
                packets: 1000,
                drops: 0
            }
        );
        assert_eq!(s[1].lane, Some(0));
        assert_eq!((s[1].packets, s[1].drops), (70, 3));
        assert_eq!((s[2].lane, s[2].drops), (Some(7), 250));
    }
}
