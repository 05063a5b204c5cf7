//! TSN lanes at egress: classify each frame to a lane, check the lane's gate, and steer the
//! frame to the lane's HTB leaf.
//!
//! Every decision comes from the plan in the active slot of `DCMESH_LANES_PLANS`, computed
//! by `dcmesh_tsn::decide` (the same function userspace validates and predicts with):
//! - admission mode (no EDT qdisc): a frame is admitted only if its gate is open and it
//!   fits the rest of the window; otherwise it is demoted or dropped;
//! - EDT modes (fq or etf below the HTB leaves): `skb->tstamp` is set to the departure time
//!   (now, or the lane's next window that fits the frame).
//! In every mode `skb->priority` becomes the HTB class id of the lane that carries the frame.
//! Every frame moves exactly one counter of the lane it was classified to.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{bpf_ktime_get_ns, bpf_ktime_get_tai_ns},
    macros::{classifier, map},
    maps::{Array, PerCpuArray},
    programs::TcContext,
};
use dcmesh_schema::{
    lanes::{
        counter_index, global_index, Global, LaneCtl, LaneSlot, BPF_F_MMAPABLE, NUM_COUNTERS, SLOTS,
    },
    CounterValue,
};
use dcmesh_tsn::{decide, plan::PLAN_F_VALID, Mode, PacketKey};

// Map names must equal `dcmesh_schema::lanes::maps::*`.
#[map]
static DCMESH_LANES_PLANS: Array<LaneSlot> = Array::with_max_entries(SLOTS, 0);
#[map]
static DCMESH_LANES_CTL: Array<LaneCtl> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static DCMESH_LANES_COUNTERS: PerCpuArray<CounterValue> =
    PerCpuArray::with_max_entries(NUM_COUNTERS, 0);
#[map]
static DCMESH_LANES_TEST_CLOCK: Array<u64> = Array::with_max_entries(1, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

#[classifier]
pub fn dcmesh_tc_lanes(ctx: TcContext) -> i32 {
    let (now, mono) = clocks();
    let len = ctx.len();
    let ctl = match DCMESH_LANES_CTL.get_ptr(0) {
        // SAFETY: map value pointer; a volatile read sees userspace's atomic store whole.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => LaneCtl::default(),
    };
    let plan = match DCMESH_LANES_PLANS.get(ctl.slot_at(now)) {
        Some(slot) if slot.0.link.flags & PLAN_F_VALID != 0 => &slot.0,
        _ => {
            count(global_index(Global::NoPlan), len);
            return TC_ACT_UNSPEC;
        }
    };
    let key = parse(&ctx);
    let lane = plan.rules.classify(&key);
    let v = decide(plan, lane, len, now);
    count(counter_index(lane, v.action), len);
    if !v.action.sends() {
        return TC_ACT_SHOT as i32;
    }
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the program's run; `priority` and `tstamp`
    // are writable from TC programs.
    unsafe {
        (*skb).priority = plan.lanes[(v.lane & 7) as usize].priority;
        if let Some(at) = v.depart_ns {
            (*skb).tstamp = match Mode::from_u32(plan.link.mode) {
                Mode::EdtTai => at,
                _ => mono + (at - now),
            };
        }
    }
    TC_ACT_UNSPEC
}

/// (gate clock = CLOCK_TAI, CLOCK_MONOTONIC) in ns; both replaced by the test clock when set.
#[inline(always)]
fn clocks() -> (u64, u64) {
    if let Some(t) = DCMESH_LANES_TEST_CLOCK.get(0) {
        if *t != 0 {
            return (*t, *t);
        }
    }
    // SAFETY: helpers without arguments.
    unsafe { (bpf_ktime_get_tai_ns(), bpf_ktime_get_ns()) }
}

#[inline(always)]
fn count(index: u32, bytes: u32) {
    if let Some(cell) = DCMESH_LANES_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += u64::from(bytes);
        }
    }
}

#[inline(always)]
fn be16(ctx: &TcContext, off: usize) -> Option<u16> {
    ctx.load::<[u8; 2]>(off).ok().map(u16::from_be_bytes)
}

/// Reads what the rules look at. Unreadable parts stay at their defaults (non-IP, no
/// ports), so a truncated frame is classified by what could be read, never dropped here.
#[inline(always)]
fn parse(ctx: &TcContext) -> PacketKey {
    let mut k = PacketKey::default();
    // SAFETY: valid context pointer; vlan fields are readable from TC programs.
    let (vlan_present, tci) = unsafe { ((*ctx.skb.skb).vlan_present, (*ctx.skb.skb).vlan_tci) };
    if vlan_present != 0 {
        k.tagged = true;
        k.pcp = (tci >> 13) as u8 & 7;
    }
    let Some(mut proto) = be16(ctx, 12) else {
        return k;
    };
    let mut off = 14usize;
    // Up to two in-band tags (802.1ad outer, 802.1Q inner); the outer one's PCP counts.
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let (Some(tci), Some(inner)) = (be16(ctx, off), be16(ctx, off + 2)) else {
            return k;
        };
        if !k.tagged {
            k.tagged = true;
            k.pcp = (tci >> 13) as u8;
        }
        proto = inner;
        off += 4;
    }
    match proto {
        ETH_P_IP => parse_v4(ctx, off, &mut k),
        ETH_P_IPV6 => parse_v6(ctx, off, &mut k),
        _ => {}
    }
    k
}

#[inline(always)]
fn has_ports(proto: u8) -> bool {
    // TCP, UDP, SCTP, UDP-Lite: ports are the first four bytes.
    matches!(proto, 6 | 17 | 132 | 136)
}

#[inline(always)]
fn read_ports(ctx: &TcContext, off: usize, k: &mut PacketKey) {
    if let Ok(p) = ctx.load::<[u8; 4]>(off) {
        k.has_ports = true;
        k.sport = u16::from_be_bytes([p[0], p[1]]);
        k.dport = u16::from_be_bytes([p[2], p[3]]);
    }
}

#[inline(always)]
fn parse_v4(ctx: &TcContext, off: usize, k: &mut PacketKey) {
    let Ok(h) = ctx.load::<[u8; 20]>(off) else {
        return;
    };
    if h[0] >> 4 != 4 {
        return;
    }
    k.family = 4;
    k.dscp = h[1] >> 2;
    k.proto = h[9];
    k.src[..4].copy_from_slice(&h[12..16]);
    k.dst[..4].copy_from_slice(&h[16..20]);
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let frag_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    if ihl >= 20 && frag_offset == 0 && has_ports(k.proto) {
        read_ports(ctx, off + ihl, k);
    }
}

#[inline(always)]
fn parse_v6(ctx: &TcContext, mut off: usize, k: &mut PacketKey) {
    let Ok(h) = ctx.load::<[u8; 40]>(off) else {
        return;
    };
    if h[0] >> 4 != 6 {
        return;
    }
    k.family = 6;
    k.dscp = (((h[0] & 0x0f) << 4) | (h[1] >> 4)) >> 2;
    k.src.copy_from_slice(&h[8..24]);
    k.dst.copy_from_slice(&h[24..40]);
    let mut nh = h[6];
    off += 40;
    let mut later_fragment = false;
    // Walk up to four extension headers to the upper-layer protocol.
    for _ in 0..4 {
        match nh {
            // Hop-by-hop, routing, destination options: length in 8-byte units beyond 8.
            0 | 43 | 60 => {
                let Ok(e) = ctx.load::<[u8; 2]>(off) else {
                    return;
                };
                nh = e[0];
                off += (usize::from(e[1]) + 1) * 8;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let Ok(e) = ctx.load::<[u8; 4]>(off) else {
                    return;
                };
                nh = e[0];
                later_fragment = u16::from_be_bytes([e[2], e[3]]) >> 3 != 0;
                off += 8;
            }
            // Authentication header: length in 4-byte units beyond 8.
            51 => {
                let Ok(e) = ctx.load::<[u8; 2]>(off) else {
                    return;
                };
                nh = e[0];
                off += (usize::from(e[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    k.proto = nh;
    if !later_fragment && has_ports(nh) {
        read_ports(ctx, off, k);
    }
}
