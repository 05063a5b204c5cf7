//! XDP forwarding: route lookup, TTL/hop-limit and checksum update, MAC rewrite, redirect.
//!
//! Every decision comes from a map written by userspace (`dcmesh-schema` has the layouts).
//! Anything the fast path does not own (local delivery, TTL expiry, non-IP, link-local,
//! multicast, IPv6 hop-by-hop options, oversize packets) is handed to the kernel with
//! `XDP_PASS`, so the kernel keeps doing ICMP, ARP/ND and fragmentation. Every packet moves
//! exactly one counter.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, DevMap, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use dcmesh_ebpf::{
    csum,
    hdr::{
        ptr_at, EthHdr, Ipv4Hdr, Ipv6Hdr, ETH_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_HOPOPTS, IPV4_LEN,
        IPV6_LEN,
    },
};
use dcmesh_schema::{
    route_cache_slot, Counter, CounterValue, DatapathConfig, NextHop, Route, RouteSetV4,
    RouteSetV6, CFG_F_MISS_DROP, MAX_NEXTHOPS, MAX_ROUTES_V4, MAX_ROUTES_V6, MAX_TX_PORTS,
    NEXTHOP_ETH_OFFSET, NH_F_DOWN, NH_F_VALID, NUM_COUNTERS, ROUTE_CACHE_V4_BITS,
    ROUTE_CACHE_V6_BITS, ROUTE_F_BLACKHOLE, ROUTE_F_HAS_ALT, ROUTE_F_KERNEL, ROUTE_F_LOCAL,
};

// Map names must equal `dcmesh_schema::maps::*` (the loader test checks every one exists).
#[map]
static DCMESH_ROUTES_V4: LpmTrie<[u8; 4], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V4, 0);
#[map]
static DCMESH_ROUTES_V6: LpmTrie<[u8; 16], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V6, 0);
#[map]
static DCMESH_NEXTHOPS: Array<NextHop> = Array::with_max_entries(MAX_NEXTHOPS, 0);
#[map]
static DCMESH_TX_PORTS: DevMap = DevMap::with_max_entries(MAX_TX_PORTS, 0);
#[map]
static DCMESH_CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);
#[map]
static DCMESH_RCACHE_V4: PerCpuArray<RouteSetV4> =
    PerCpuArray::with_max_entries(1 << ROUTE_CACHE_V4_BITS, 0);
#[map]
static DCMESH_RCACHE_V6: PerCpuArray<RouteSetV6> =
    PerCpuArray::with_max_entries(1 << ROUTE_CACHE_V6_BITS, 0);
#[map]
static DCMESH_COUNTERS: PerCpuArray<CounterValue> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[xdp]
pub fn dcmesh_xdp_forward(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let (counter, action) = forward(start, end, ctx.ingress_ifindex() as u32);
    count(counter, (end - start) as u64);
    action
}

#[inline(always)]
fn count(c: Counter, bytes: u64) {
    if let Some(cell) = DCMESH_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += bytes;
        }
    }
}

const PASS: u32 = xdp_action::XDP_PASS;
const DROP: u32 = xdp_action::XDP_DROP;

#[inline(always)]
fn forward(start: usize, end: usize, ingress: u32) -> (Counter, u32) {
    let Some(eth) = ptr_at::<EthHdr>(start, end, 0) else {
        return (Counter::DropMalformed, DROP);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    let eth = unsafe { &mut *eth };
    if eth.dst[0] & 1 != 0 {
        return (Counter::PassMulticast, PASS);
    }
    match u16::from_be_bytes(eth.proto) {
        ETH_P_IP => forward_v4(start, end, eth, ingress),
        ETH_P_IPV6 => forward_v6(start, end, eth, ingress),
        _ => (Counter::PassNonIp, PASS),
    }
}

/// What a route lookup decided, before the TTL check.
enum Decision {
    Done(Counter, u32),
    Send(&'static NextHop),
}

/// The datapath config, or defaults if userspace never wrote it.
#[inline(always)]
fn config() -> DatapathConfig {
    DCMESH_CONFIG.get(0).copied().unwrap_or_default()
}

/// Reads a 2-byte aligned 16-bit word of the packet in native order (one load; a byte-array
/// copy of an address compiles to a load, shift and or per byte).
///
/// # Safety
/// `p` must be 2-byte aligned and inside a bounds-checked header.
#[inline(always)]
unsafe fn word(p: *const u8) -> u32 {
    u32::from(*(p as *const u16))
}

/// The native-endian `u32` of four wire bytes at `p` (2-byte aligned, bounds checked).
#[inline(always)]
unsafe fn addr_word(p: *const u8) -> u32 {
    let (lo, hi) = (word(p), word(p.add(2)));
    if cfg!(target_endian = "little") {
        lo | hi << 16
    } else {
        lo << 16 | hi
    }
}

/// The cached answer of `slot` if it holds `key` at `generation`.
macro_rules! cached {
    ($slot:expr, $key:expr, $generation:expr) => {
        if $slot.generation == $generation && $slot.dst == $key {
            return ($slot.present != 0).then_some($slot.route);
        }
    };
}

/// Moves slot 0 to slot 1 (field by field: a struct copy may compile to a memcpy call)
/// and fills slot 0 with a fresh answer.
macro_rules! refill {
    ($set:expr, $key:expr, $generation:expr, $found:expr) => {{
        let [s0, s1] = &mut $set.slots;
        s1.generation = s0.generation;
        s1.dst = s0.dst;
        s1.present = s0.present;
        s1.route = s0.route;
        s0.generation = $generation;
        s0.dst = $key;
        s0.present = u32::from($found.is_some());
        s0.route = $found.unwrap_or_default();
    }};
}

/// Longest-prefix match for an IPv4 destination, through the per-CPU route cache.
#[inline(always)]
fn lookup_v4(ip: &Ipv4Hdr, generation: u64) -> Option<Route> {
    // SAFETY: `ip` is a bounds-checked header at offset 14 of a 2-aligned frame.
    let key = unsafe { addr_word(ip.dst.as_ptr()) };
    let Some(set) = DCMESH_RCACHE_V4.get_ptr_mut(route_cache_slot(key, ROUTE_CACHE_V4_BITS)) else {
        return DCMESH_ROUTES_V4.get(Key::new(32, ip.dst)).copied();
    };
    // SAFETY: per-CPU set, read and written on this CPU only.
    let set = unsafe { &mut *set };
    cached!(set.slots[0], key, generation);
    cached!(set.slots[1], key, generation);
    let found = DCMESH_ROUTES_V4.get(Key::new(32, ip.dst)).copied();
    refill!(set, key, generation, found);
    found
}

/// Longest-prefix match for an IPv6 destination, as [`lookup_v4`].
#[inline(always)]
fn lookup_v6(ip: &Ipv6Hdr, generation: u64) -> Option<Route> {
    let p = ip.dst.as_ptr();
    // SAFETY: `ip` is a bounds-checked header at offset 14 of a 2-aligned frame.
    let key = unsafe {
        [
            addr_word(p),
            addr_word(p.add(4)),
            addr_word(p.add(8)),
            addr_word(p.add(12)),
        ]
    };
    let folded = key[0] ^ key[1] ^ key[2] ^ key[3];
    let Some(set) = DCMESH_RCACHE_V6.get_ptr_mut(route_cache_slot(folded, ROUTE_CACHE_V6_BITS))
    else {
        return DCMESH_ROUTES_V6.get(Key::new(128, ip.dst)).copied();
    };
    // SAFETY: per-CPU set, read and written on this CPU only.
    let set = unsafe { &mut *set };
    cached!(set.slots[0], key, generation);
    cached!(set.slots[1], key, generation);
    let found = DCMESH_ROUTES_V6.get(Key::new(128, ip.dst)).copied();
    refill!(set, key, generation, found);
    found
}

/// Where a packet came from: its ingress interface and the Ethernet source (the neighbour
/// that sent it).
struct Arrival<'a> {
    ifindex: u32,
    src_mac: &'a [u8; 6],
}

impl Arrival<'_> {
    /// Whether sending through `nh` would return the packet to the neighbour it came from.
    #[inline(always)]
    fn is_uturn(&self, nh: &NextHop) -> bool {
        if nh.ifindex != self.ifindex {
            return false;
        }
        // Three 16-bit compares: both sides are 2-byte aligned.
        let (a, b) = (self.src_mac.as_ptr(), nh.dst_mac.as_ptr());
        // SAFETY: six bytes inside the checked Ethernet header and inside the map value.
        unsafe {
            word(a) == word(b)
                && word(a.add(2)) == word(b.add(2))
                && word(a.add(4)) == word(b.add(4))
        }
    }
}

/// The next hop for `route`: its primary, or its downstream alternate (RFC 5286) when the
/// primary is marked down. A packet whose next hop is the neighbour it came from is
/// dropped and counted: that "U-turn" is the two-node microloop of a mesh still
/// converging (the neighbour routes through us, we still route through it). It is not
/// sent on the alternate: nodes that disagree about the topology are exactly where an
/// alternate's guarantee does not hold, and in chaos runs a U-turn onto the alternate
/// turned two-node loops into three-node ones (the neighbour, the alternate, and us)
/// that lasted as long as the disagreement.
#[inline(always)]
fn route_decision(route: Option<Route>, cfg: &DatapathConfig, from: &Arrival) -> Decision {
    let Some(route) = route else {
        return if cfg.flags & CFG_F_MISS_DROP != 0 {
            Decision::Done(Counter::DropMiss, DROP)
        } else {
            Decision::Done(Counter::PassMiss, PASS)
        };
    };
    let flags = route.flags;
    if flags & (ROUTE_F_LOCAL | ROUTE_F_KERNEL | ROUTE_F_BLACKHOLE) != 0 {
        return if flags & ROUTE_F_LOCAL != 0 {
            Decision::Done(Counter::PassLocal, PASS)
        } else if flags & ROUTE_F_KERNEL != 0 {
            Decision::Done(Counter::PassKernelRoute, PASS)
        } else {
            Decision::Done(Counter::DropBlackhole, DROP)
        };
    }
    let Some(nh) = usable(route.nexthop) else {
        return Decision::Done(Counter::DropNoNextHop, DROP);
    };
    let down = nh.flags & NH_F_DOWN != 0;
    if !down && !from.is_uturn(nh) {
        return Decision::Send(nh);
    }
    if down && flags & ROUTE_F_HAS_ALT != 0 {
        if let Some(alt) = usable(route.alt_nexthop) {
            if alt.flags & NH_F_DOWN == 0 && !from.is_uturn(alt) {
                return Decision::Send(alt);
            }
        }
    }
    if down {
        Decision::Done(Counter::DropNextHopDown, DROP)
    } else {
        Decision::Done(Counter::DropUturn, DROP)
    }
}

/// The next-hop entry `id`, if it is a valid (written, non-zero) id.
#[inline(always)]
fn usable(id: u32) -> Option<&'static NextHop> {
    if id == 0 {
        return None;
    }
    DCMESH_NEXTHOPS
        .get(id)
        .filter(|nh| nh.flags & NH_F_VALID != 0)
}

/// Writes the next hop's MACs and redirects through its port.
#[inline(always)]
fn transmit(eth: &mut EthHdr, nh: &NextHop, ok: Counter) -> (Counter, u32) {
    // Twelve bytes as six 16-bit words: a byte-array assignment compiles to a memcpy call.
    // Both sides are 2-byte aligned (frames start 2-aligned; the offset is 12 in the value).
    let from = (nh as *const NextHop as *const u8).wrapping_add(NEXTHOP_ETH_OFFSET) as *const u16;
    let to = eth as *mut EthHdr as *mut u16;
    // SAFETY: 12 bytes inside the map value and inside the checked Ethernet header.
    unsafe {
        for i in 0..6 {
            *to.add(i) = *from.add(i);
        }
    }
    match DCMESH_TX_PORTS.redirect(nh.port, 0) {
        Ok(action) => (ok, action),
        Err(_) => (Counter::DropNoPort, DROP),
    }
}

#[inline(always)]
fn forward_v4(start: usize, end: usize, eth: &mut EthHdr, ingress: u32) -> (Counter, u32) {
    let Some(ip) = ptr_at::<Ipv4Hdr>(start, end, ETH_LEN) else {
        return (Counter::DropMalformed, DROP);
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &mut *ip };
    let ihl = (ip.ver_ihl & 0x0f) as usize * 4;
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if ip.ver_ihl >> 4 != 4 || ihl < IPV4_LEN || tot_len < ihl || ETH_LEN + tot_len > end - start {
        return (Counter::DropMalformed, DROP);
    }
    if !v4_checksum_ok(start, end, ihl) {
        return (Counter::DropBadChecksum, DROP);
    }
    let dst = ip.dst;
    if dst[0] & 0xf0 == 0xe0 || dst == [255; 4] {
        return (Counter::PassMulticast, PASS);
    }
    if (dst[0] == 169 && dst[1] == 254) || (ip.src[0] == 169 && ip.src[1] == 254) {
        return (Counter::PassLinkLocal, PASS);
    }
    let cfg = config();
    let route = lookup_v4(ip, cfg.generation);
    let from = Arrival {
        ifindex: ingress,
        src_mac: &eth.src,
    };
    let nh = match route_decision(route, &cfg, &from) {
        Decision::Done(c, a) => return (c, a),
        Decision::Send(nh) => nh,
    };
    if ip.ttl <= 1 {
        return (Counter::PassTtl, PASS);
    }
    if nh.mtu != 0 && tot_len > nh.mtu as usize {
        return (Counter::PassMtu, PASS);
    }
    ip.ttl -= 1;
    // SAFETY: the checksum field is inside the checked header, 2-byte aligned (offset 24).
    unsafe {
        let check = ip.check.as_mut_ptr() as *mut u16;
        *check = csum::ttl_decremented(*check);
    }
    transmit(eth, nh, Counter::FwdV4)
}

/// Verifies the IPv4 header checksum over `ihl` bytes (20..=60).
///
/// Sums native-order 16-bit words: one's-complement addition commutes with byte swapping,
/// so a valid header folds to 0xffff in either byte order, and native loads avoid a swap
/// per word. Frames start 2-byte aligned, so the IP header (at offset 14) is too.
#[inline(always)]
fn v4_checksum_ok(start: usize, end: usize, ihl: usize) -> bool {
    let Some(base) = ptr_at::<[u16; IPV4_LEN / 2]>(start, end, ETH_LEN) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at; 2-byte alignment as above.
    let w = unsafe { &*base };
    let mut sum: u32 = u32::from(w[0])
        + u32::from(w[1])
        + u32::from(w[2])
        + u32::from(w[3])
        + u32::from(w[4])
        + u32::from(w[5])
        + u32::from(w[6])
        + u32::from(w[7])
        + u32::from(w[8])
        + u32::from(w[9]);
    if ihl > IPV4_LEN {
        // Options: at most 40 bytes, 20 words.
        let words = (ihl - IPV4_LEN) / 2;
        let mut i = 0;
        while i < 20 {
            if i >= words {
                break;
            }
            let Some(w) = ptr_at::<u16>(start, end, ETH_LEN + IPV4_LEN + i * 2) else {
                return false;
            };
            // SAFETY: bounds checked by ptr_at.
            sum += u32::from(unsafe { *w });
            i += 1;
        }
    }
    csum::fold(sum) == 0xffff
}

#[inline(always)]
fn forward_v6(start: usize, end: usize, eth: &mut EthHdr, ingress: u32) -> (Counter, u32) {
    let Some(ip) = ptr_at::<Ipv6Hdr>(start, end, ETH_LEN) else {
        return (Counter::DropMalformed, DROP);
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &mut *ip };
    let payload = u16::from_be_bytes(ip.payload_len) as usize;
    if ip.ver_tc_flow[0] >> 4 != 6 || ETH_LEN + IPV6_LEN + payload > end - start {
        return (Counter::DropMalformed, DROP);
    }
    let dst = ip.dst;
    if dst[0] == 0xff {
        return (Counter::PassMulticast, PASS);
    }
    if (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80) || (ip.src[0] == 0xfe && ip.src[1] & 0xc0 == 0x80)
    {
        return (Counter::PassLinkLocal, PASS);
    }
    if ip.next_hdr == IPPROTO_HOPOPTS {
        return (Counter::PassHopByHop, PASS);
    }
    let cfg = config();
    let route = lookup_v6(ip, cfg.generation);
    let from = Arrival {
        ifindex: ingress,
        src_mac: &eth.src,
    };
    let nh = match route_decision(route, &cfg, &from) {
        Decision::Done(c, a) => return (c, a),
        Decision::Send(nh) => nh,
    };
    if ip.hop_limit <= 1 {
        return (Counter::PassTtl, PASS);
    }
    if nh.mtu != 0 && IPV6_LEN + payload > nh.mtu as usize {
        return (Counter::PassMtu, PASS);
    }
    ip.hop_limit -= 1;
    transmit(eth, nh, Counter::FwdV6)
}
