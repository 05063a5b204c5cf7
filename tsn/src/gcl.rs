//! Gate control lists (IEEE 802.1Qbv) and their arithmetic.
//!
//! A schedule repeats every `cycle_ns`, starting at `base_ns` (and, by periodic extension,
//! before it too). Entry `i` keeps the gates in `entries[i].gates` (bit `l` = lane `l` open)
//! for `entries[i].interval_ns`; the intervals sum to the cycle. A lane's *window* is a
//! maximal run of consecutive entries, possibly wrapping around the cycle end, in which its
//! gate is open.
//!
//! Every function here is total: a list that is empty or inconsistent (something
//! [`crate::check`] rejects) yields `None`/closed gates, never a panic, and every loop is
//! bounded by [`MAX_ENTRIES`] so the eBPF verifier accepts it.

use bytemuck::{Pod, Zeroable};

use crate::{LANES, MAX_ENTRIES};

/// One gate control list entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GateEntry {
    /// How long these gates hold, in ns.
    pub interval_ns: u32,
    /// Bit `l` set: lane `l`'s gate is open during this entry.
    pub gates: u8,
    pub _pad: [u8; 3],
}

impl GateEntry {
    pub const fn new(gates: u8, interval_ns: u32) -> Self {
        Self {
            interval_ns,
            gates,
            _pad: [0; 3],
        }
    }
}

/// A gate control list in the fixed-size form the datapath reads from a map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Gcl {
    /// Start of some cycle, in ns of the gate clock. Only its value modulo the cycle
    /// matters; [`Gcl::new`] stores it reduced.
    pub base_ns: u64,
    /// Cycle time in ns.
    pub cycle_ns: u64,
    /// Entries in use (`entries[..len]`).
    pub len: u32,
    pub _pad: u32,
    pub entries: [GateEntry; MAX_ENTRIES],
    /// Each lane's windows, sorted by start: derived from the entries by [`Gcl::new`] so
    /// that [`Gcl::departure`] is a short scan the eBPF verifier can follow.
    pub windows: [[Window; MAX_WINDOWS]; LANES],
    /// Windows in use per lane (`windows[lane][..window_count[lane]]`).
    pub window_count: [u8; LANES],
}

/// Most windows one lane can have: it must close between two windows.
pub const MAX_WINDOWS: usize = MAX_ENTRIES / 2;

/// [`Window::len_ns`] of a lane whose gate never closes.
pub const ALWAYS_OPEN: u32 = u32::MAX;

/// A maximal time a lane's gate stays open, merged across entries and the cycle end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Window {
    /// Offset of the opening into the cycle, in ns.
    pub start_ns: u32,
    /// How long it stays open in ns (may run past the cycle end), or [`ALWAYS_OPEN`].
    pub len_ns: u32,
}

impl Default for Gcl {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl Gcl {
    /// A list with `entries` (at most [`MAX_ENTRIES`]; extra ones are ignored, which
    /// [`crate::check`] reports) and the cycle `cycle_ns`.
    pub fn new(base_ns: u64, cycle_ns: u64, entries: &[GateEntry]) -> Self {
        let mut g = Self::zeroed();
        g.base_ns = base_ns.checked_rem(cycle_ns).unwrap_or(0);
        g.cycle_ns = cycle_ns;
        let n = entries.len().min(MAX_ENTRIES);
        g.entries[..n].copy_from_slice(&entries[..n]);
        g.len = n as u32;
        // An uncovered tail of the cycle (an invalid list) keeps every gate closed.
        let mut padded = [GateEntry::default(); MAX_ENTRIES + 1];
        padded[..n].copy_from_slice(&entries[..n]);
        let sum: u64 = entries[..n].iter().map(|e| u64::from(e.interval_ns)).sum();
        let mut m = n;
        if sum < cycle_ns {
            padded[n] = GateEntry::new(0, (cycle_ns - sum).min(u64::from(u32::MAX)) as u32);
            m += 1;
        }
        for lane in 0..LANES as u8 {
            let (ws, count) = windows_of(&padded[..m], lane);
            g.windows[lane as usize] = ws;
            g.window_count[lane as usize] = count;
        }
        g
    }

    /// One entry, every gate open: plain strict priority between the lanes.
    pub fn always_open(cycle_ns: u32) -> Self {
        Self::new(0, u64::from(cycle_ns), &[GateEntry::new(0xff, cycle_ns)])
    }

    /// The entries in use.
    pub fn entries(&self) -> &[GateEntry] {
        &self.entries[..(self.len as usize).min(MAX_ENTRIES)]
    }

    /// Offset of `t` into its cycle, in ns; `None` for a zero cycle.
    #[inline(always)]
    pub fn phase(&self, t: u64) -> Option<u64> {
        let c = self.cycle_ns;
        let base = self.base_ns.checked_rem(c)?;
        if t >= base {
            (t - base).checked_rem(c)
        } else {
            // Before the (reduced) base: at most one cycle after the clock's epoch.
            Some(t + c - base)
        }
    }

    /// The first cycle start at or after `t`.
    pub fn next_cycle_start(&self, t: u64) -> Option<u64> {
        let p = self.phase(t)?;
        Some(if p == 0 { t } else { t + (self.cycle_ns - p) })
    }

    /// Index of the entry in force at phase `p`, and the phase at which it ends. `None`
    /// when the intervals end before `p` (they do not fill the cycle).
    #[inline(always)]
    fn locate(&self, p: u64) -> Option<(usize, u64)> {
        let n = self.len as usize;
        let mut end = 0u64;
        let mut i = 0;
        while i < MAX_ENTRIES {
            if i >= n {
                break;
            }
            end += u64::from(self.entries[i].interval_ns);
            if p < end {
                return Some((i, end));
            }
            i += 1;
        }
        None
    }

    /// The gate mask in force at `t` (all closed for an unusable list).
    pub fn gates_at(&self, t: u64) -> u8 {
        match self.phase(t).and_then(|p| self.locate(p)) {
            Some((i, _)) => self.entries[i].gates,
            None => 0,
        }
    }

    /// Whether `lane`'s gate is open at `t`.
    pub fn is_open(&self, lane: u8, t: u64) -> bool {
        self.gates_at(t) & lane_bit(lane) != 0
    }

    /// The earliest time `d ≥ t` at which `lane`'s gate is open and stays open for
    /// `need_ns` (a frame of that transmission time fits the window): `t` itself when the
    /// gate is open and the rest of the window is long enough. `None` when no window of
    /// the lane is that long (or the list is unusable).
    ///
    /// This is the one question both datapath modes ask: admission admits a frame iff the
    /// answer is `t`; earliest-departure-time stamps the answer.
    #[inline(always)]
    pub fn departure(&self, lane: u8, t: u64, need_ns: u64) -> Option<u64> {
        let l = (lane & 7) as usize;
        let m = self.window_count[l] as usize;
        if m == 0 || m > MAX_WINDOWS {
            return None;
        }
        let c = self.cycle_ns;
        let p = self.phase(t)?;
        let ws = &self.windows[l];
        // s: the first window opening after p; 0 if none does (then it is the first
        // window of the next cycle).
        let mut s = 0usize;
        let mut j = 0;
        while j < MAX_WINDOWS {
            if j >= m {
                break;
            }
            if u64::from(ws[j].start_ns) > p {
                s = j;
                break;
            }
            j += 1;
        }
        // Only the window before s can be open at p (possibly since the previous cycle).
        let cur = if s == 0 { m - 1 } else { s - 1 };
        // black_box: the compiler can prove this bound, the eBPF verifier cannot; keep the
        // check in the object code.
        let cur = core::hint::black_box(cur);
        if cur >= MAX_WINDOWS {
            return None;
        }
        let w = ws[cur];
        if w.len_ns == ALWAYS_OPEN {
            return Some(t);
        }
        let off = (p + c - u64::from(w.start_ns)).checked_rem(c)?;
        if off < u64::from(w.len_ns) && u64::from(w.len_ns) - off >= need_ns {
            return Some(t);
        }
        // Otherwise the first window, in the order they open after p, that is long enough.
        let mut j = 0;
        while j < MAX_WINDOWS {
            if j >= m {
                break;
            }
            let mut idx = s + j;
            if idx >= m {
                idx -= m;
            }
            let idx = core::hint::black_box(idx);
            if idx >= MAX_WINDOWS {
                return None;
            }
            let w = ws[idx];
            if u64::from(w.len_ns) >= need_ns {
                // Time from p to the window's next opening, in 1..=c.
                let d = (u64::from(w.start_ns) + c - p - 1).checked_rem(c)? + 1;
                return Some(t + d);
            }
            j += 1;
        }
        None
    }

    /// Time from `t` to the end of `lane`'s current window in ns: 0 when the gate is
    /// closed at `t`, `u64::MAX` when it never closes.
    pub fn time_left(&self, lane: u8, t: u64) -> u64 {
        let n = self.len as usize;
        let Some(p) = self.phase(t) else {
            return 0;
        };
        let Some((mut k, end)) = self.locate(p) else {
            return 0;
        };
        let bit = lane_bit(lane);
        let mut left = 0u64;
        let mut seg = end - p;
        for _ in 0..=n {
            if self.entries[k].gates & bit == 0 {
                return left;
            }
            left += seg;
            k = (k + 1) % n;
            seg = u64::from(self.entries[k].interval_ns);
        }
        u64::MAX
    }

    /// The longest window of `lane` in ns, windows wrapping around the cycle end merged;
    /// 0 when the lane never opens, `u64::MAX` when it never closes.
    pub fn longest_window(&self, lane: u8) -> u64 {
        let e = self.entries();
        let bit = lane_bit(lane);
        if e.is_empty() || e.iter().all(|e| e.gates & bit == 0) {
            return 0;
        }
        if e.iter().all(|e| e.gates & bit != 0) {
            return u64::MAX;
        }
        // Start right after a closed entry so no window is split by the cycle end.
        let first_closed = e.iter().position(|e| e.gates & bit == 0).unwrap_or(0);
        let (mut best, mut run) = (0u64, 0u64);
        for i in 1..=e.len() {
            let x = &e[(first_closed + i) % e.len()];
            if x.gates & bit != 0 {
                run += u64::from(x.interval_ns);
                best = best.max(run);
            } else {
                run = 0;
            }
        }
        best
    }

    /// Lanes whose gate opens at some point in the cycle (bit `l` = lane `l`).
    pub fn lanes_opening(&self) -> u8 {
        self.entries().iter().fold(0, |m, e| m | e.gates)
    }

    /// Sum of the intervals in ns.
    pub fn intervals_sum(&self) -> u64 {
        self.entries()
            .iter()
            .map(|e| u64::from(e.interval_ns))
            .sum()
    }
}

/// `lane`'s windows in `entries`, sorted by start, and how many there are.
fn windows_of(entries: &[GateEntry], lane: u8) -> ([Window; MAX_WINDOWS], u8) {
    let mut out = [Window::default(); MAX_WINDOWS];
    let bit = lane_bit(lane);
    let open = |e: &GateEntry| e.gates & bit != 0;
    if entries.is_empty() || !entries.iter().any(open) {
        return (out, 0);
    }
    if entries.iter().all(open) {
        out[0] = Window {
            start_ns: 0,
            len_ns: ALWAYS_OPEN,
        };
        return (out, 1);
    }
    let n = entries.len();
    let mut starts = [0u64; MAX_ENTRIES + 1];
    let mut acc = 0u64;
    for (i, e) in entries.iter().enumerate() {
        starts[i] = acc;
        acc += u64::from(e.interval_ns);
    }
    // Walk once around the cycle from just after a closed entry, so no run is split.
    let first_closed = entries.iter().position(|e| !open(e)).unwrap_or(0);
    let mut count = 0usize;
    let mut run: Option<Window> = None;
    for step in 1..=n {
        let i = (first_closed + step) % n;
        let e = &entries[i];
        match (open(e), run.as_mut()) {
            (true, Some(w)) => w.len_ns = w.len_ns.saturating_add(e.interval_ns),
            (true, None) => {
                run = Some(Window {
                    start_ns: starts[i].min(u64::from(u32::MAX - 1)) as u32,
                    len_ns: e.interval_ns,
                })
            }
            (false, _) => {
                if let Some(w) = run.take() {
                    if count < MAX_WINDOWS {
                        out[count] = w;
                        count += 1;
                    }
                }
            }
        }
    }
    if let Some(w) = run {
        if count < MAX_WINDOWS {
            out[count] = w;
            count += 1;
        }
    }
    out[..count].sort_unstable_by_key(|w| w.start_ns);
    (out, count as u8)
}

#[inline(always)]
fn lane_bit(lane: u8) -> u8 {
    1u8 << (lane & 7)
}

/// Transmission time in ns of `bytes` at `rate_bps`, rounded up; `u64::MAX` for a zero rate.
#[inline(always)]
pub fn frame_ns(bytes: u64, rate_bps: u64) -> u64 {
    (bytes * 8_000_000_000 + rate_bps.saturating_sub(1))
        .checked_div(rate_bps)
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference semantics by brute force: the gate mask for every ns of one cycle.
    fn expand(g: &Gcl) -> Vec<u8> {
        g.entries()
            .iter()
            .flat_map(|e| std::iter::repeat_n(e.gates, e.interval_ns as usize))
            .collect()
    }

    fn open_ref(g: &Gcl, m: &[u8], lane: u8, t: u64) -> bool {
        let c = g.cycle_ns;
        let idx = ((t as i128 - g.base_ns as i128).rem_euclid(c as i128)) as usize;
        m[idx] & (1 << lane) != 0
    }

    /// Earliest d ≥ t with [d, d+need) all open, searching three cycles ahead.
    fn departure_ref(g: &Gcl, m: &[u8], lane: u8, t: u64, need: u64) -> Option<u64> {
        let horizon = 3 * g.cycle_ns;
        let mut run = 0u64;
        let mut start = t;
        for d in t..t + horizon + need {
            if open_ref(g, m, lane, d) {
                if run == 0 {
                    start = d;
                }
                run += 1;
                if run >= need.max(1) {
                    return Some(if need == 0 { d } else { start });
                }
            } else {
                run = 0;
            }
        }
        None
    }

    /// Small lists (tiny ns intervals) so the reference can expand them.
    fn small_gcl() -> impl Strategy<Value = Gcl> {
        (
            prop::collection::vec((any::<u8>(), 1u32..20), 1..8),
            0u64..200,
        )
            .prop_map(|(es, base)| {
                let entries: Vec<GateEntry> =
                    es.iter().map(|(g, i)| GateEntry::new(*g, *i)).collect();
                let cycle: u64 = entries.iter().map(|e| u64::from(e.interval_ns)).sum();
                Gcl::new(base, cycle, &entries)
            })
    }

    proptest! {
        #[test]
        fn departure_matches_brute_force(g in small_gcl(), lane in 0u8..8, t in 0u64..500, need in 0u64..40) {
            let m = expand(&g);
            let want = departure_ref(&g, &m, lane, t, need);
            prop_assert_eq!(g.departure(lane, t, need), want);
        }

        #[test]
        fn gates_match_brute_force(g in small_gcl(), t in 0u64..1000) {
            let m = expand(&g);
            for lane in 0..8 {
                prop_assert_eq!(g.is_open(lane, t), open_ref(&g, &m, lane, t));
            }
        }

        #[test]
        fn time_left_is_the_window_end(g in small_gcl(), lane in 0u8..8, t in 0u64..500) {
            let m = expand(&g);
            let left = g.time_left(lane, t);
            if left == u64::MAX {
                prop_assert!(m.iter().all(|x| x & (1 << lane) != 0));
            } else {
                for d in t..t + left {
                    prop_assert!(open_ref(&g, &m, lane, d));
                }
                prop_assert!(!open_ref(&g, &m, lane, t + left));
            }
        }

        #[test]
        fn longest_window_is_the_largest_need_that_departs(g in small_gcl(), lane in 0u8..8) {
            let longest = g.longest_window(lane);
            if longest == u64::MAX {
                prop_assert_eq!(g.departure(lane, 7, 10 * g.cycle_ns), Some(7));
            } else {
                let fits = |need| (0..g.cycle_ns).any(|t| g.departure(lane, t, need).is_some());
                if longest > 0 {
                    prop_assert!(fits(longest));
                }
                prop_assert!(!fits(longest + 1));
            }
        }

        #[test]
        fn periodic_and_cycle_starts(g in small_gcl(), t in 0u64..10_000) {
            let c = g.cycle_ns;
            prop_assert_eq!(g.gates_at(t), g.gates_at(t + c));
            let s = g.next_cycle_start(t).unwrap();
            prop_assert!(s >= t && s < t + c);
            prop_assert_eq!(g.phase(s), Some(0));
        }

        #[test]
        fn frame_time_rounds_up(bytes in 1u64..70_000, rate in 1_000u64..400_000_000_000) {
            let ns = frame_ns(bytes, rate);
            // ns is the least integer with ns * rate ≥ bytes * 8e9.
            let bits = u128::from(bytes) * 8_000_000_000;
            prop_assert!(u128::from(ns) * u128::from(rate) >= bits);
            prop_assert!(u128::from(ns - 1) * u128::from(rate) < bits);
        }
    }

    #[test]
    fn unusable_lists_are_closed_not_panicking() {
        let empty = Gcl::default();
        assert_eq!(empty.departure(0, 5, 1), None);
        assert_eq!(empty.gates_at(5), 0);
        assert_eq!(empty.time_left(0, 5), 0);
        assert_eq!(empty.next_cycle_start(5), None);
        // Intervals shorter than the cycle: the uncovered tail is closed.
        let short = Gcl::new(0, 100, &[GateEntry::new(0xff, 10)]);
        assert!(short.is_open(3, 5));
        assert!(!short.is_open(3, 50));
        assert_eq!(short.departure(3, 50, 1), Some(100));
        assert_eq!(short.departure(3, 50, 11), None);
    }

    #[test]
    fn worked_example() {
        // 1 ms cycle: lane 0 alone for 200 µs, then lanes 1..7 for 800 µs.
        let g = Gcl::new(
            0,
            1_000_000,
            &[GateEntry::new(0x01, 200_000), GateEntry::new(0xfe, 800_000)],
        );
        let frame = frame_ns(1514 + 24, 100_000_000);
        assert_eq!(frame, 123_040);
        assert_eq!(g.departure(0, 10_000, frame), Some(10_000));
        // 100 µs left in lane 0's window: too short, next window is the next cycle.
        assert_eq!(g.departure(0, 100_000, frame), Some(1_000_000));
        assert_eq!(g.departure(7, 100_000, frame), Some(200_000));
        assert_eq!(g.time_left(7, 900_000), 100_000);
        assert_eq!(g.longest_window(0), 200_000);
        assert_eq!(g.next_cycle_start(1_000_001), Some(2_000_000));
    }
}
