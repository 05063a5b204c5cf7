//! Map layouts of the TSN lanes program (`dcmesh-lanes`, a TC egress classifier).
//!
//! The plan itself (gate control list, per-lane policy, classification rules) is the
//! `dcmesh_tsn::Plan` value type: the program runs `dcmesh_tsn::decide` on it, and
//! userspace predicts verdicts with the same function. What this module adds is how plans
//! sit in maps: two slots, a control word saying which slot is active from when, and the
//! per-lane counters.

use bytemuck::{Pod, Zeroable};
pub use dcmesh_tsn::{Action, Plan, LANES};

/// Map names, shared by the program and the loader.
pub mod maps {
    /// `ARRAY<u32, LaneSlot>` with [`super::SLOTS`] entries: the double-buffered plans.
    pub const PLANS: &str = "DCMESH_LANES_PLANS";
    /// `ARRAY<u32, LaneCtl>` with one entry, `BPF_F_MMAPABLE` so userspace switches slots
    /// with one atomic 64-bit store.
    pub const CTL: &str = "DCMESH_LANES_CTL";
    /// `PERCPU_ARRAY<u32, CounterValue>` indexed by [`super::counter_index`].
    pub const COUNTERS: &str = "DCMESH_LANES_COUNTERS";
    /// `ARRAY<u32, u64>` with one entry: when non-zero, the program takes this as the time
    /// (both clocks) instead of reading the kernel's. For `BPF_PROG_TEST_RUN` tests only;
    /// the loader never writes it on a router.
    pub const TEST_CLOCK: &str = "DCMESH_LANES_TEST_CLOCK";

    /// The maps a lanes datapath shares with userspace.
    pub const ALL: [&str; 4] = [PLANS, CTL, COUNTERS, TEST_CLOCK];
}

/// Program name inside the `dcmesh-lanes` object.
pub const PROGRAM: &str = "dcmesh_tc_lanes";

/// Number of plan slots (double buffering).
pub const SLOTS: u32 = 2;

/// `BPF_F_MMAPABLE` (linux/bpf.h), the flag of the control map.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// A plan in a map slot.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct LaneSlot(pub Plan);

/// Which slot is in force. `word = switch_at_ns << 1 | new_slot`: slot `new_slot` from
/// `switch_at_ns` (gate clock) on, the other slot before. Userspace writes the idle slot,
/// then publishes the switch with one atomic store, so a packet never sees a half-written
/// plan and the change lands exactly at a cycle boundary.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LaneCtl {
    pub word: u64,
}

impl LaneCtl {
    /// Switch to `slot` (0 or 1) at `at_ns`; times are kept to even nanoseconds.
    pub const fn switch(slot: u32, at_ns: u64) -> Self {
        Self {
            word: ((at_ns >> 1) << 1) | (slot as u64 & 1),
        }
    }

    /// When the last switch takes (took) effect, in ns.
    pub const fn switch_at(self) -> u64 {
        self.word & !1
    }

    /// The slot in force at `now`.
    #[inline(always)]
    pub const fn slot_at(self, now: u64) -> u32 {
        let new = (self.word & 1) as u32;
        if now >= self.switch_at() {
            new
        } else {
            new ^ 1
        }
    }
}

/// Counters that belong to no lane, after the per-lane ones.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// No valid plan in the active slot: the frame passed untouched.
    NoPlan = 0,
}

impl Global {
    pub const ALL: [Global; 1] = [Global::NoPlan];

    pub const fn name(self) -> &'static str {
        match self {
            Self::NoPlan => "no_plan",
        }
    }
}

/// Index of `lane`'s counter for `action`.
#[inline(always)]
pub const fn counter_index(lane: u8, action: Action) -> u32 {
    (lane as u32 & 7) * Action::COUNT as u32 + action as u32
}

/// Index of a global counter.
pub const fn global_index(g: Global) -> u32 {
    (LANES * Action::COUNT) as u32 + g as u32
}

/// Size of the counters map.
pub const NUM_COUNTERS: u32 = (LANES * Action::COUNT + Global::ALL.len()) as u32;

#[cfg(feature = "user")]
// SAFETY: #[repr(transparent)]/#[repr(C)] Pod types (bytemuck checked).
unsafe impl aya::Pod for LaneSlot {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for LaneCtl {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_word_switches_at_its_time() {
        let c = LaneCtl::switch(1, 1_000_001);
        assert_eq!(c.switch_at(), 1_000_000);
        assert_eq!(c.slot_at(999_999), 0);
        assert_eq!(c.slot_at(1_000_000), 1);
        assert_eq!(LaneCtl::switch(0, 10).slot_at(9), 1);
        assert_eq!(LaneCtl::default().slot_at(0), 0);
    }

    #[test]
    fn counter_indices_are_dense() {
        let mut seen = [false; NUM_COUNTERS as usize];
        for lane in 0..LANES as u8 {
            for a in Action::ALL {
                let i = counter_index(lane, a) as usize;
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
        seen[global_index(Global::NoPlan) as usize] = true;
        assert!(seen.iter().all(|s| *s));
    }
}
