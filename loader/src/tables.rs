//! Typed handles on the forwarding tables: routes, next hops, egress ports, config, counters.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::{
    maps::{lpm_trie::Key, Array, DevMap, LpmTrie, Map, MapData, PerCpuArray},
    Ebpf,
};
use dcmesh_schema::{
    maps, Counter, CounterValue, DatapathConfig, NextHop, Route, Verdict, CFG_F_MISS_DROP,
    MAX_NEXTHOPS, MAX_TX_PORTS, NH_F_DOWN, NH_F_VALID, ROUTE_F_BLACKHOLE, ROUTE_F_HAS_ALT,
    ROUTE_F_KERNEL, ROUTE_F_LOCAL,
};
pub use ipnet::IpNet;

use crate::{iface, LoaderError};

/// What a route does with matching packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// Forward via next hop `id`; `alt` is a loop-free alternate used while `id` is down.
    Via { id: u32, alt: Option<u32> },
    /// Destination is this node.
    Local,
    /// Let the kernel route it.
    Kernel,
    /// Drop and count.
    Blackhole,
}

impl RouteTarget {
    fn encode(self) -> Route {
        match self {
            Self::Via { id, alt } => Route {
                nexthop: id,
                alt_nexthop: alt.unwrap_or(0),
                flags: if alt.is_some() { ROUTE_F_HAS_ALT } else { 0 },
            },
            Self::Local => Route {
                flags: ROUTE_F_LOCAL,
                ..Route::default()
            },
            Self::Kernel => Route {
                flags: ROUTE_F_KERNEL,
                ..Route::default()
            },
            Self::Blackhole => Route {
                flags: ROUTE_F_BLACKHOLE,
                ..Route::default()
            },
        }
    }

    /// Decodes a stored route.
    pub fn decode(r: &Route) -> Self {
        if r.flags & ROUTE_F_LOCAL != 0 {
            Self::Local
        } else if r.flags & ROUTE_F_KERNEL != 0 {
            Self::Kernel
        } else if r.flags & ROUTE_F_BLACKHOLE != 0 {
            Self::Blackhole
        } else {
            Self::Via {
                id: r.nexthop,
                alt: (r.flags & ROUTE_F_HAS_ALT != 0).then_some(r.alt_nexthop),
            }
        }
    }
}

/// A next hop as userspace describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHopSpec {
    /// Egress interface index.
    pub ifindex: u32,
    /// The egress interface's MAC (source of forwarded frames).
    pub src_mac: [u8; 6],
    /// The neighbour's MAC.
    pub dst_mac: [u8; 6],
    /// Egress MTU (IP bytes); 0 disables the check.
    pub mtu: u16,
}

impl NextHopSpec {
    /// A next hop out of interface `name` (MAC and MTU read from the kernel) to `dst_mac`.
    pub fn via_interface(name: &str, dst_mac: [u8; 6]) -> Result<Self, LoaderError> {
        let info = iface::interface_info(name)?;
        Ok(Self {
            ifindex: info.index,
            src_mac: info.mac,
            dst_mac,
            mtu: info.mtu,
        })
    }
}

/// Per-counter totals summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub Vec<CounterValue>);

impl Counters {
    pub fn get(&self, c: Counter) -> CounterValue {
        self.0.get(c as usize).copied().unwrap_or_default()
    }
    /// Packets per counter, named.
    pub fn named(&self) -> impl Iterator<Item = (Counter, CounterValue)> + '_ {
        Counter::ALL.iter().map(|c| (*c, self.get(*c)))
    }
    /// Packets that got `v`.
    pub fn verdict(&self, v: Verdict) -> u64 {
        self.named()
            .filter(|(c, _)| c.verdict() == v)
            .map(|(_, x)| x.packets)
            .sum()
    }
    /// Every packet the program saw.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.packets).sum()
    }
    /// Counts since `earlier` (counters only grow).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(
            Counter::ALL
                .iter()
                .map(|c| {
                    let (a, b) = (self.get(*c), earlier.get(*c));
                    CounterValue {
                        packets: a.packets.saturating_sub(b.packets),
                        bytes: a.bytes.saturating_sub(b.bytes),
                    }
                })
                .collect(),
        )
    }
}

/// The forwarding tables of one datapath.
pub struct Tables {
    routes_v4: LpmTrie<MapData, [u8; 4], Route>,
    routes_v6: LpmTrie<MapData, [u8; 16], Route>,
    nexthops: Array<MapData, NextHop>,
    ports: DevMap<MapData>,
    config: Array<MapData, DatapathConfig>,
    counters: PerCpuArray<MapData, CounterValue>,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, LoaderError> {
    ebpf.take_map(name)
        .ok_or(LoaderError::MissingInObject(name))
}

fn pinned(dir: &Path, name: &'static str) -> Result<Map, LoaderError> {
    let path = dir.join("maps").join(name);
    if !path.exists() {
        return Err(LoaderError::NotLoaded(dir.to_path_buf()));
    }
    let data = MapData::from_pin(&path).map_err(LoaderError::map(name))?;
    Map::from_map_data(data).map_err(LoaderError::map(name))
}

macro_rules! typed {
    ($get:expr, $name:expr) => {{
        let name = $name;
        $get(name)?.try_into().map_err(LoaderError::map(name))?
    }};
}

impl Tables {
    pub(crate) fn take_from(ebpf: &mut Ebpf) -> Result<Self, LoaderError> {
        Self::build(|n| take(ebpf, n))
    }

    /// Opens the pinned tables of a running datapath (see [`crate::Datapath::load`]).
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, LoaderError> {
        crate::error::require_root()?;
        Self::build(|n| pinned(pin_dir, n))
    }

    fn build(
        mut get: impl FnMut(&'static str) -> Result<Map, LoaderError>,
    ) -> Result<Self, LoaderError> {
        Ok(Self {
            routes_v4: typed!(get, maps::ROUTES_V4),
            routes_v6: typed!(get, maps::ROUTES_V6),
            nexthops: typed!(get, maps::NEXTHOPS),
            ports: typed!(get, maps::TX_PORTS),
            config: typed!(get, maps::CONFIG),
            counters: typed!(get, maps::COUNTERS),
        })
    }

    // ---- routes ----

    /// Adds or replaces the route for `prefix` (host bits are cleared). A route via a next
    /// hop is refused unless that next hop (and its alternate) exists.
    pub fn set_route(&mut self, prefix: IpNet, target: RouteTarget) -> Result<(), LoaderError> {
        if let RouteTarget::Via { id, alt } = target {
            self.require_nexthop(id)?;
            if let Some(a) = alt {
                self.require_nexthop(a)?;
            }
        }
        let value = target.encode();
        match prefix.trunc() {
            IpNet::V4(n) => self
                .routes_v4
                .insert(
                    &Key::new(n.prefix_len().into(), n.addr().octets()),
                    value,
                    0,
                )
                .map_err(LoaderError::map(maps::ROUTES_V4))?,
            IpNet::V6(n) => self
                .routes_v6
                .insert(
                    &Key::new(n.prefix_len().into(), n.addr().octets()),
                    value,
                    0,
                )
                .map_err(LoaderError::map(maps::ROUTES_V6))?,
        }
        self.table_changed()
    }

    /// Removes the route for exactly `prefix`.
    pub fn delete_route(&mut self, prefix: IpNet) -> Result<(), LoaderError> {
        let missing = |_| LoaderError::NoSuchRoute(prefix.to_string());
        match prefix.trunc() {
            IpNet::V4(n) => self
                .routes_v4
                .remove(&Key::new(n.prefix_len().into(), n.addr().octets()))
                .map_err(missing)?,
            IpNet::V6(n) => self
                .routes_v6
                .remove(&Key::new(n.prefix_len().into(), n.addr().octets()))
                .map_err(missing)?,
        }
        self.table_changed()
    }

    /// Records a route change: bumps the generation, invalidating every route-cache slot.
    /// Called after the trie write, so a packet that sees the new generation also sees the
    /// new trie.
    fn table_changed(&mut self) -> Result<(), LoaderError> {
        let mut cfg = self.config.get(&0, 0).unwrap_or_default();
        cfg.generation = cfg.generation.wrapping_add(1);
        self.config
            .set(0, cfg, 0)
            .map_err(LoaderError::map(maps::CONFIG))
    }

    /// The route the datapath would use for `addr` (longest prefix match).
    pub fn lookup(&self, addr: IpAddr) -> Option<RouteTarget> {
        let r = match addr {
            IpAddr::V4(a) => self.routes_v4.get(&Key::new(32, a.octets()), 0),
            IpAddr::V6(a) => self.routes_v6.get(&Key::new(128, a.octets()), 0),
        };
        r.ok().map(|r| RouteTarget::decode(&r))
    }

    /// Every route, IPv4 first, sorted.
    pub fn routes(&self) -> Result<Vec<(IpNet, RouteTarget)>, LoaderError> {
        let mut out = Vec::new();
        for kv in self.routes_v4.iter() {
            let (k, r) = kv.map_err(LoaderError::map(maps::ROUTES_V4))?;
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8).map_err(
                |e| {
                    LoaderError::BadPrefix(
                        format!("{:?}/{}", k.data(), k.prefix_len()),
                        e.to_string(),
                    )
                },
            )?;
            out.push((IpNet::V4(net), RouteTarget::decode(&r)));
        }
        for kv in self.routes_v6.iter() {
            let (k, r) = kv.map_err(LoaderError::map(maps::ROUTES_V6))?;
            let net = ipnet::Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8).map_err(
                |e| {
                    LoaderError::BadPrefix(
                        format!("{:?}/{}", k.data(), k.prefix_len()),
                        e.to_string(),
                    )
                },
            )?;
            out.push((IpNet::V6(net), RouteTarget::decode(&r)));
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    // ---- next hops ----

    fn check_id(id: u32) -> Result<(), LoaderError> {
        if id == 0 || id >= MAX_NEXTHOPS {
            return Err(LoaderError::NextHopRange {
                id,
                max: MAX_NEXTHOPS,
            });
        }
        Ok(())
    }

    fn require_nexthop(&self, id: u32) -> Result<(), LoaderError> {
        Self::check_id(id)?;
        match self.nexthop(id) {
            Some(_) => Ok(()),
            None => Err(LoaderError::NoSuchNextHop(id)),
        }
    }

    /// The next hop with `id`, if valid.
    pub fn nexthop(&self, id: u32) -> Option<NextHop> {
        self.nexthops
            .get(&id, 0)
            .ok()
            .filter(|n| n.flags & NH_F_VALID != 0)
    }

    /// Every valid next hop.
    pub fn nexthops(&self) -> Vec<(u32, NextHop)> {
        (1..MAX_NEXTHOPS)
            .filter_map(|id| self.nexthop(id).map(|n| (id, n)))
            .collect()
    }

    /// Adds or replaces next hop `id` (1..MAX_NEXTHOPS). Its egress interface gets a port
    /// slot first, so the entry is complete the moment a route can see it.
    pub fn set_nexthop(&mut self, id: u32, spec: NextHopSpec) -> Result<(), LoaderError> {
        Self::check_id(id)?;
        let port = self.ensure_port(spec.ifindex)?;
        let nh = NextHop {
            port,
            ifindex: spec.ifindex,
            flags: NH_F_VALID,
            mtu: spec.mtu,
            src_mac: spec.src_mac,
            dst_mac: spec.dst_mac,
        };
        // A (re)written next hop starts up.
        self.nexthops
            .set(id, nh, 0)
            .map_err(LoaderError::map(maps::NEXTHOPS))
    }

    /// Invalidates next hop `id`. Routes still naming it drop (counted as
    /// `drop_no_nexthop`); move them first (see [`Tables::routes_using`]).
    pub fn delete_nexthop(&mut self, id: u32) -> Result<(), LoaderError> {
        self.require_nexthop(id)?;
        self.nexthops
            .set(id, NextHop::default(), 0)
            .map_err(LoaderError::map(maps::NEXTHOPS))
    }

    /// Routes that name next hop `id` as primary or alternate.
    pub fn routes_using(&self, id: u32) -> Result<Vec<IpNet>, LoaderError> {
        Ok(self
            .routes()?
            .into_iter()
            .filter(|(_, t)| matches!(t, RouteTarget::Via { id: p, alt } if *p == id || *alt == Some(id)))
            .map(|(n, _)| n)
            .collect())
    }

    /// Marks next hop `id` down (routes switch to their alternate at once) or up again.
    pub fn set_nexthop_down(&mut self, id: u32, down: bool) -> Result<(), LoaderError> {
        self.require_nexthop(id)?;
        let mut nh = self.nexthop(id).ok_or(LoaderError::NoSuchNextHop(id))?;
        if down {
            nh.flags |= NH_F_DOWN;
        } else {
            nh.flags &= !NH_F_DOWN;
        }
        self.nexthops
            .set(id, nh, 0)
            .map_err(LoaderError::map(maps::NEXTHOPS))
    }

    /// Whether next hop `id` is marked down.
    pub fn nexthop_down(&self, id: u32) -> bool {
        self.nexthop(id).is_some_and(|n| n.flags & NH_F_DOWN != 0)
    }

    /// The port slot holding `ifindex`, assigning a free one if needed.
    fn ensure_port(&mut self, ifindex: u32) -> Result<u32, LoaderError> {
        let mut free = None;
        for slot in 0..MAX_TX_PORTS {
            match self.ports.get(slot, 0) {
                Ok(v) if v.if_index == ifindex => return Ok(slot),
                Ok(_) => {}
                Err(_) => {
                    free.get_or_insert(slot);
                }
            }
        }
        let slot = free.ok_or(LoaderError::PortsFull(MAX_TX_PORTS))?;
        self.ports
            .set(slot, ifindex, None, 0)
            .map_err(|e| LoaderError::Map {
                map: maps::TX_PORTS,
                reason: format!(
                    "add interface #{ifindex}: {} (the interface must support XDP redirect)",
                    crate::error::chain(&e)
                ),
            })?;
        Ok(slot)
    }

    // ---- config and counters ----

    /// Route-miss policy: `true` drops, `false` (default) hands the packet to the kernel.
    pub fn set_miss_drop(&mut self, drop: bool) -> Result<(), LoaderError> {
        let mut cfg = self.config.get(&0, 0).unwrap_or_default();
        cfg.flags = if drop {
            cfg.flags | CFG_F_MISS_DROP
        } else {
            cfg.flags & !CFG_F_MISS_DROP
        };
        self.config
            .set(0, cfg, 0)
            .map_err(LoaderError::map(maps::CONFIG))
    }

    /// Current route-miss policy (`true` = drop).
    pub fn miss_drop(&self) -> bool {
        self.config
            .get(&0, 0)
            .is_ok_and(|c| c.flags & CFG_F_MISS_DROP != 0)
    }

    /// Reads every counter, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, LoaderError> {
        let mut out = Vec::with_capacity(Counter::ALL.len());
        for c in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(*c as u32), 0)
                .map_err(LoaderError::map(maps::COUNTERS))?;
            out.push(
                per_cpu
                    .iter()
                    .fold(CounterValue::default(), |a, v| CounterValue {
                        packets: a.packets + v.packets,
                        bytes: a.bytes + v.bytes,
                    }),
            );
        }
        Ok(Counters(out))
    }
}
