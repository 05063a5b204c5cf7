//! TSN lanes for dcmesh: eight priority lanes, IEEE 802.1Qbv gate control lists, and the
//! classification rules that put frames on lanes.
//!
//! This crate is `no_std` and allocation-free in its core so that the TC egress program
//! compiles *the very same* arithmetic that userspace uses to validate schedules and that
//! tests use to predict the program's verdicts:
//!
//! - [`gcl`]: gate control lists (base time, cycle time, entries of gate mask and interval)
//!   and the arithmetic on them: gate state at a time, the earliest departure of a frame of
//!   a given length on a lane, time left in the current window, cycle boundaries.
//! - [`plan`]: the compiled per-lane policy and link parameters, and [`plan::decide`], the
//!   one function that turns (lane, frame length, time) into a verdict.
//! - [`classify`]: classification rules (DSCP, VLAN PCP, protocol, L4 port ranges,
//!   prefixes) and first-match lane selection with a default lane.
//! - [`check`]: validation of a schedule as a config tool should do it, reporting every
//!   problem with the entry or lane it concerns.
//! - `config` (feature `std`): the `[lanes]` TOML schema (serde) and its compiler to a
//!   [`plan::Plan`], for the daemon to embed in its configuration.
//!
//! Times are nanoseconds of the clock the gates follow (CLOCK_TAI in the datapath, so that
//! PTP-synchronised nodes open their gates together); rates are bits per second; frame
//! lengths are bytes.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod check;
pub mod classify;
pub mod gcl;
pub mod plan;

#[cfg(feature = "std")]
pub mod config;

pub use check::{Problem, Severity};
pub use classify::{PacketKey, Rule, RuleTable};
pub use gcl::{frame_ns, GateEntry, Gcl, Window};
pub use plan::{decide, Action, LaneParams, Link, Mode, Plan, Verdict};

/// Number of lanes. Lane 0 has the highest priority, lane 7 the lowest.
pub const LANES: usize = 8;

/// Most entries a gate control list may have (bounds the datapath's loops).
pub const MAX_ENTRIES: usize = 32;

/// Most classification rules (bounds the datapath's loop).
pub const MAX_RULES: usize = 32;

/// Longest cycle accepted, in ns (1 s). Longer cycles make sub-millisecond jitter
/// meaningless and would let a deferred frame wait beyond the EDT qdisc's horizon.
pub const MAX_CYCLE_NS: u64 = 1_000_000_000;

/// Smallest Ethernet frame in bytes (header + payload, without FCS): 60 bytes plus the
/// 4-byte FCS make the 64-byte minimum.
pub const MIN_FRAME: u32 = 60;

/// Per-frame bytes on an Ethernet wire that `skb->len` does not count: preamble and SFD (8),
/// inter-frame gap (12) and FCS (4).
pub const ETHERNET_OVERHEAD: u32 = 24;
