//! Map layouts shared by the dcmesh eBPF programs and userspace.
//!
//! Every key and value that crosses the kernel boundary is defined here, once, as
//! `#[repr(C)]` plain old data. The eBPF crate and the loader both depend on this crate,
//! so a layout change is a compile-time change on both sides. Map *names* live here too:
//! the loader finds maps by these strings and the eBPF programs declare them with them.
#![no_std]

use bytemuck::{Pod, Zeroable};

pub mod lanes;

/// Map names, shared so a rename cannot silently split the two sides.
pub mod maps {
    /// `LPM_TRIE<Key<[u8; 4]>, Route>`: IPv4 routes.
    pub const ROUTES_V4: &str = "DCMESH_ROUTES_V4";
    /// `LPM_TRIE<Key<[u8; 16]>, Route>`: IPv6 routes.
    pub const ROUTES_V6: &str = "DCMESH_ROUTES_V6";
    /// `ARRAY<u32, NextHop>`: next hops by id; id 0 is reserved as "none".
    pub const NEXTHOPS: &str = "DCMESH_NEXTHOPS";
    /// `DEVMAP<u32, u32>`: egress ports by slot; a next hop names its slot.
    pub const TX_PORTS: &str = "DCMESH_TX_PORTS";
    /// `ARRAY<u32, DatapathConfig>` with one entry.
    pub const CONFIG: &str = "DCMESH_CONFIG";
    /// `PERCPU_ARRAY<u32, CounterValue>` indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "DCMESH_COUNTERS";
    /// `PERCPU_ARRAY<u32, RouteSetV4>`: the IPv4 route cache; private to one program
    /// instance, not pinned.
    pub const ROUTE_CACHE_V4: &str = "DCMESH_RCACHE_V4";
    /// `PERCPU_ARRAY<u32, RouteSetV6>`: as above for IPv6.
    pub const ROUTE_CACHE_V6: &str = "DCMESH_RCACHE_V6";

    /// Every map the forwarding program shares with userspace (the ones that get pinned).
    pub const FORWARDING: [&str; 6] = [ROUTES_V4, ROUTES_V6, NEXTHOPS, TX_PORTS, CONFIG, COUNTERS];
}

/// Program names inside the eBPF object.
pub mod programs {
    /// The XDP forwarding program.
    pub const XDP_FORWARD: &str = "dcmesh_xdp_forward";
}

/// Capacity of the IPv4 route table (the bench loads 100,000 routes).
pub const MAX_ROUTES_V4: u32 = 262_144;
/// Capacity of the IPv6 route table.
pub const MAX_ROUTES_V6: u32 = 131_072;
/// Capacity of the next-hop table, id 0 included (reserved).
pub const MAX_NEXTHOPS: u32 = 16_384;
/// Capacity of the egress port table.
pub const MAX_TX_PORTS: u32 = 256;

/// Route flag: destination is this node; hand the packet to the kernel.
pub const ROUTE_F_LOCAL: u32 = 1 << 0;
/// Route flag: let the kernel forward it (e.g. a route another daemon owns).
pub const ROUTE_F_KERNEL: u32 = 1 << 1;
/// Route flag: drop, and count it (a blackhole/null route).
pub const ROUTE_F_BLACKHOLE: u32 = 1 << 2;
/// Route flag: `alt_nexthop` holds a loop-free alternate used while the primary is down.
pub const ROUTE_F_HAS_ALT: u32 = 1 << 3;

/// The value of an IPv4 or IPv6 route.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Route {
    /// Primary next hop id (index into `NEXTHOPS`); ignored for local/kernel/blackhole routes.
    pub nexthop: u32,
    /// Loop-free alternate next hop id, valid when `ROUTE_F_HAS_ALT` is set.
    pub alt_nexthop: u32,
    /// `ROUTE_F_*` bits.
    pub flags: u32,
}

/// Next-hop flag: the entry is in use. A zeroed (never written) slot is invalid.
pub const NH_F_VALID: u16 = 1 << 0;
/// Next-hop flag: the controller marked the neighbour down (carrier loss, missed hellos);
/// routes switch to their alternate at once. Kept in the entry itself so the fast path needs
/// no extra lookup; toggling it rewrites an otherwise identical entry, so a concurrent reader
/// sees either the old or the new flags, never a mix of two next hops.
pub const NH_F_DOWN: u16 = 1 << 1;

/// Where and how to send a packet: egress port and the Ethernet header to write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NextHop {
    /// Slot in `TX_PORTS` holding the egress interface.
    pub port: u32,
    /// Egress interface index (for userspace; the program redirects through `port`).
    pub ifindex: u32,
    /// `NH_F_*` bits.
    pub flags: u16,
    /// Egress MTU in bytes (IP packet size). Larger packets go to the kernel, which
    /// fragments or sends ICMP "packet too big". 0 means "do not check".
    pub mtu: u16,
    /// Destination MAC: the neighbour's address. With `src_mac` right after it, these 12
    /// bytes are the new Ethernet addresses in wire order, copied as six 16-bit words.
    pub dst_mac: [u8; 6],
    /// Source MAC: the egress interface's address.
    pub src_mac: [u8; 6],
}

/// Byte offset of `NextHop::dst_mac` (start of the 12 Ethernet address bytes).
pub const NEXTHOP_ETH_OFFSET: usize = 12;

/// Config flag: drop packets that match no route (default: hand them to the kernel).
pub const CFG_F_MISS_DROP: u32 = 1 << 0;

/// Datapath-wide settings (entry 0 of `CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DatapathConfig {
    /// `CFG_F_*` bits.
    pub flags: u32,
    /// Zero; keeps `generation` 8-byte aligned without a padding hole.
    pub reserved: u32,
    /// Bumped by userspace after every route change; route-cache slots tagged with another
    /// generation are ignored, so a change takes effect for the very next packet. 64 bits so
    /// it never wraps back onto a stale slot.
    pub generation: u64,
}

/// One slot of the IPv4 route cache: the result of one longest-prefix match for a /32.
///
/// The cache is per CPU and 2-way set associative (a multiplicative hash of the address
/// picks the set), so a hit costs an inlined array access and a few compares instead of a
/// trie walk: one node per branching prefix bit, each a likely cache miss on a large table
/// (about 1 µs at 100,000 routes), and a helper call even for a one-entry trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouteSlotV4 {
    /// `DatapathConfig::generation` when this slot was filled.
    pub generation: u64,
    /// The destination address, as the native-endian `u32` of its four wire bytes.
    pub dst: u32,
    /// 1 if a route matched, 0 for a cached miss.
    pub present: u32,
    pub route: Route,
    /// Zero (alignment).
    pub reserved: u32,
}

/// One set of the IPv4 route cache (one 64-byte cache line). A miss moves slot 0 to slot 1
/// and fills slot 0, so the newer of two colliding destinations is kept.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouteSetV4 {
    pub slots: [RouteSlotV4; 2],
}

/// One slot of the IPv6 route cache, as [`RouteSlotV4`] for a /128.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouteSlotV6 {
    /// `DatapathConfig::generation` when this slot was filled.
    pub generation: u64,
    /// The destination address as four native-endian `u32`s of its wire bytes.
    pub dst: [u32; 4],
    /// 1 if a route matched, 0 for a cached miss.
    pub present: u32,
    pub route: Route,
}

/// One set of the IPv6 route cache, as [`RouteSetV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouteSetV6 {
    pub slots: [RouteSlotV6; 2],
}

/// log2 of the IPv4 route cache's sets per CPU (32,768 sets of 2, 2 MiB per CPU): of a
/// working set of 4,000 destinations cycled packet by packet, under 1 % share a set with
/// two others and keep missing.
pub const ROUTE_CACHE_V4_BITS: u32 = 15;
/// log2 of the IPv6 route cache's sets per CPU (8,192 sets of 2, 640 KiB per CPU).
pub const ROUTE_CACHE_V6_BITS: u32 = 13;

/// Multiplier of the route caches' set hash (Knuth's multiplicative hashing: the top bits
/// of `key * φ·2³²` spread nearby addresses across the table).
pub const ROUTE_CACHE_HASH_MUL: u32 = 0x9E37_79B1;

/// Set of a native-endian IPv4 address word (or a fold of an IPv6 address) in a cache of
/// `1 << bits` sets.
#[inline(always)]
pub const fn route_cache_slot(key: u32, bits: u32) -> u32 {
    key.wrapping_mul(ROUTE_CACHE_HASH_MUL) >> (32 - bits)
}

/// A per-CPU counter cell; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

/// The XDP verdict a counter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Redirect,
    Pass,
    Drop,
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident = $idx:literal, $label:literal, $verdict:ident; )+) => {
        /// Why a packet got its verdict. Every packet the forwarding program sees moves
        /// exactly one of these, so their sum is the number of packets seen.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $( $(#[$doc])* $name = $idx, )+ }

        impl Counter {
            /// All counters, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$name,)+];

            /// Stable snake_case name (metrics label, CLI output).
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$name => $label,)+ }
            }

            /// The XDP verdict packets counted here received.
            pub const fn verdict(self) -> Verdict {
                match self { $(Counter::$name => Verdict::$verdict,)+ }
            }
        }
    };
}

counters! {
    /// IPv4 packet forwarded (redirected).
    FwdV4 = 0, "fwd_v4", Redirect;
    /// IPv6 packet forwarded (redirected).
    FwdV6 = 1, "fwd_v6", Redirect;
    /// Destination is this node.
    PassLocal = 2, "pass_local", Pass;
    /// Route marked "to kernel".
    PassKernelRoute = 3, "pass_kernel_route", Pass;
    /// TTL / hop limit ≤ 1: the kernel sends ICMP time exceeded.
    PassTtl = 4, "pass_ttl", Pass;
    /// Not IPv4/IPv6 (ARP, VLAN-tagged, LLDP, ...).
    PassNonIp = 5, "pass_non_ip", Pass;
    /// Link-local source or destination.
    PassLinkLocal = 6, "pass_link_local", Pass;
    /// Multicast or broadcast (L2 group address, IPv4 224/4 or limited broadcast, IPv6 ff00::/8).
    PassMulticast = 7, "pass_multicast", Pass;
    /// No route, miss policy "pass".
    PassMiss = 8, "pass_miss", Pass;
    /// IPv6 hop-by-hop options, which every router must process: left to the kernel.
    PassHopByHop = 9, "pass_hop_by_hop", Pass;
    /// Larger than the egress MTU: the kernel fragments or sends "packet too big".
    PassMtu = 10, "pass_mtu", Pass;
    /// No route, miss policy "drop".
    DropMiss = 11, "drop_miss", Drop;
    /// Truncated or inconsistent header (bad version, IHL, length).
    DropMalformed = 12, "drop_malformed", Drop;
    /// IPv4 header checksum wrong on arrival.
    DropBadChecksum = 13, "drop_bad_checksum", Drop;
    /// Blackhole route.
    DropBlackhole = 14, "drop_blackhole", Drop;
    /// Route names a next hop that is not (or no longer) valid.
    DropNoNextHop = 15, "drop_no_nexthop", Drop;
    /// Primary next hop down and no usable alternate.
    DropNextHopDown = 16, "drop_nexthop_down", Drop;
    /// The egress port slot is empty or the redirect failed.
    DropNoPort = 17, "drop_no_port", Drop;
    /// The route leads straight back to the neighbour the packet came from (a two-node
    /// microloop while the mesh converges).
    DropUturn = 18, "drop_uturn", Drop;
}

/// Number of counters (size of the `COUNTERS` map).
pub const NUM_COUNTERS: u32 = 19;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)] Pod types without padding holes (bytemuck checked).
    unsafe impl aya::Pod for super::Route {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::CounterValue {}
    unsafe impl aya::Pod for super::RouteSetV4 {}
    unsafe impl aya::Pod for super::RouteSetV6 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        assert_eq!(Counter::ALL.len() as u32, NUM_COUNTERS);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{c:?} out of order");
            for d in &Counter::ALL[..i] {
                assert_ne!(c.name(), d.name());
            }
        }
    }

    #[test]
    fn cache_slots_stay_in_range_and_spread() {
        let bits = ROUTE_CACHE_V4_BITS;
        let mut seen = [false; 256];
        for host in 0..256u32 {
            let key = u32::from_ne_bytes([10, 1, 2, host as u8]);
            let slot = route_cache_slot(key, bits);
            assert!(slot < 1 << bits);
            seen[(slot >> (bits - 8)) as usize] = true;
        }
        // 256 consecutive hosts land in many different eighths-of-a-percent of the table.
        assert!(seen.iter().filter(|s| **s).count() > 100);
        assert!(route_cache_slot(u32::MAX, 1) < 2);
    }

    #[test]
    fn layouts_are_stable() {
        // Pinned maps survive restarts: a size change must be deliberate.
        assert_eq!(core::mem::size_of::<Route>(), 12);
        assert_eq!(core::mem::size_of::<NextHop>(), 24);
        assert_eq!(core::mem::size_of::<CounterValue>(), 16);
        assert_eq!(core::mem::size_of::<DatapathConfig>(), 16);
        assert_eq!(core::mem::size_of::<RouteSlotV4>(), 32);
        assert_eq!(core::mem::size_of::<RouteSlotV6>(), 40);
        assert_eq!(core::mem::size_of::<RouteSetV4>(), 64);
        assert_eq!(core::mem::offset_of!(NextHop, dst_mac), NEXTHOP_ETH_OFFSET);
        assert_eq!(
            core::mem::offset_of!(NextHop, src_mac),
            NEXTHOP_ETH_OFFSET + 6
        );
    }
}

/// Layouts of the benchmark programs' maps (generator templates).
pub mod bench {
    use bytemuck::{Pod, Zeroable};

    /// Most templates the generator cycles through (distinct destinations).
    pub const GEN_MAX_TEMPLATES: u32 = 8192;

    /// A 64-byte frame the generator writes into each live frame.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct Template {
        pub bytes: [u8; 64],
    }

    /// Generator settings (entry 0).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct GenConfig {
        /// How many templates are in use (round robin).
        pub templates: u32,
    }

    #[cfg(feature = "user")]
    // SAFETY: #[repr(C)] Pod types.
    unsafe impl aya::Pod for Template {}
    #[cfg(feature = "user")]
    // SAFETY: #[repr(C)] Pod types.
    unsafe impl aya::Pod for GenConfig {}
}
