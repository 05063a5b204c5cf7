//! Link emulation for the testbed: random frame loss per interface (the kernel here has
//! no netem). Attached as XDP to the wire ends of emulated links, so every frame a node
//! sends — redirected by its XDP forwarder or sent by its kernel — passes here once.
//!
//! Maps (userspace: testbed/src/linkemu.rs; keys are ingress ifindexes):
//! - `LINK_EMU_LOSS: HASH<u32, u64>`: drop threshold `t`. A frame is dropped when
//!   `bpf_get_prandom_u32() < t`, so `t = p·2³²` drops a share `p`; `t ≥ 2³²` drops all.
//!   No entry (or 0) loses nothing. Userspace rewrites it at run time to change the loss.
//! - `LINK_EMU_STATS: PERCPU_HASH<u32, [u64; 4]>`: passed packets, passed bytes, dropped
//!   packets, dropped bytes. Counted only for interfaces userspace registered.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::{HashMap, PerCpuHashMap},
    programs::XdpContext,
};

/// Most interfaces one loaded instance can serve.
const MAX_IFACES: u32 = 65_536;

#[map]
static LINK_EMU_LOSS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map]
static LINK_EMU_STATS: PerCpuHashMap<u32, [u64; 4]> =
    PerCpuHashMap::with_max_entries(MAX_IFACES, 0);

#[xdp]
pub fn dcmesh_link_emu(ctx: XdpContext) -> u32 {
    // SAFETY: ctx.ctx points at the kernel's xdp_md for this frame.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let threshold = LINK_EMU_LOSS
        .get_ptr(ifindex)
        // SAFETY: the pointer comes from a successful lookup; a plain u64 read.
        .map(|p| unsafe { *p })
        .unwrap_or(0);
    let drop = threshold != 0
        && (threshold > u32::MAX as u64
            // SAFETY: helper without preconditions.
            || u64::from(unsafe { bpf_get_prandom_u32() }) < threshold);
    if let Some(s) = LINK_EMU_STATS.get_ptr_mut(ifindex) {
        let base = if drop { 2 } else { 0 };
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe {
            (*s)[base] += 1;
            (*s)[base + 1] += bytes;
        }
    }
    if drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}
