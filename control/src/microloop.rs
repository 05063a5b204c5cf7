//! Microloop avoidance at the point of local repair (after RFC 8333).
//!
//! When a neighbour we forward through is lost, its next hop is marked down at once, so
//! the datapath moves every route that has a loop-free alternate onto it. Installing our
//! freshly computed routes at that moment could loop: neighbours that have not yet heard
//! of the loss may still route back through us. So this node keeps its forwarding state
//! (with the dead next hop down) for `local_convergence_delay_ms`, while every node not
//! adjacent to the loss installs its routes at once; then it installs its own.
//!
//! The hold is safe only while the single-loss assumption holds: losing a link can only
//! change routes that went over it, so every route whose primary next hop is still up
//! stays optimal. A computed route set that moves any such route (or adds a prefix) shows
//! another change in the mesh, and the hold is cancelled at once, as RFC 8333 asks.
//!
//! Only protected routes are held ([`held_routes`]): a route whose primary is down and
//! that has no usable alternate is repaired at once (holding would only drop its traffic
//! for the whole delay), and so is one whose alternate no longer protects it on the
//! topology as now known. That happens when the loss was not a single link (a node
//! failure or a partition): the alternate's own new path then runs back through us, and
//! keeping the alternate would form a loop as soon as the alternate converges.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv6Addr,
};

use ipnet::IpNet;

use crate::{
    decision::{NhKey, Target},
    fib::KernelNextHop,
};

/// The local convergence delay timer. Times are ms on the caller's clock.
#[derive(Clone, Debug)]
pub struct Hold {
    delay_ms: u64,
    /// (started, until) while holding.
    active: Option<(u64, u64)>,
}

impl Hold {
    /// `delay_ms` = 0 disables the hold.
    pub fn new(delay_ms: u64) -> Self {
        Self {
            delay_ms,
            active: None,
        }
    }

    /// A next hop we forward through was lost at `now`: hold (or keep holding) until
    /// `now + delay`. Losses a few detection intervals apart (a partition, a power
    /// outage) each need the mesh to converge, so a later loss extends the hold, but
    /// never past twice the delay from its start: a flapping neighbour cannot freeze
    /// the routes. Returns whether a new hold started.
    pub fn on_local_loss(&mut self, now: u64) -> bool {
        if self.delay_ms == 0 {
            return false;
        }
        match &mut self.active {
            Some((start, until)) => {
                *until = (now + self.delay_ms).min(*start + 2 * self.delay_ms);
                false
            }
            None => {
                self.active = Some((now, now + self.delay_ms));
                true
            }
        }
    }

    /// Whether routes must still be held at `now` (forgets an expired hold).
    pub fn holding(&mut self, now: u64) -> bool {
        match self.active {
            Some((_, until)) if now < until => true,
            _ => {
                self.active = None;
                false
            }
        }
    }

    /// Ends the hold now (another change in the mesh).
    pub fn cancel(&mut self) {
        self.active = None;
    }
}

/// Ordered repair: a route whose next hops are all lost moves onto a new next hop only
/// once that neighbour has had time to stop routing the destination through us.
///
/// When we lose a neighbour, we know at once and the rest of the mesh a flood later. If
/// our new next hop for a prefix routed that prefix through us on the topology as it was
/// before the loss (it is *upstream* of us), repairing at once sends packets to a
/// neighbour that still sends them back: a microloop of two or more nodes until it hears
/// the news (after a partition, until it hears every loss). So such a repair waits
/// `delay_ms` (about one flood and one route computation) and the neighbour switches
/// first (the order of RFC 6976, for one hop).
///
/// Only routes that drop meanwhile wait (primary down, no alternate that is up): holding
/// a route that still forwards could keep a loop alive, holding one that drops cannot.
/// Every other change (moves of live routes, repairs onto neighbours that were not
/// upstream, new prefixes, withdrawals) goes in at once. The cost: a repair that can
/// only go back the way traffic came (a ring) waits the delay, during which the U-turn
/// rule would have dropped that traffic anyway.
#[derive(Clone, Debug, Default)]
pub struct SwitchOrder {
    delay_ms: u64,
    /// Prefix → (the next hop it waits to move onto, since when).
    waiting: BTreeMap<IpNet, (NhKey, u64)>,
}

impl SwitchOrder {
    /// `delay_ms` = 0 switches everything at once.
    pub fn new(delay_ms: u64) -> Self {
        Self {
            delay_ms,
            waiting: BTreeMap::new(),
        }
    }

    /// What to install now instead of `computed`, given what is `installed` and which
    /// next hops are `down`. `upstream` tells whether a neighbour routed a prefix
    /// through us before the change (asked only for repairs not yet waiting). Returns
    /// the routes and the time (ms) to look again, when some repair is still waiting.
    pub fn filter(
        &mut self,
        now: u64,
        installed: &BTreeMap<IpNet, Target>,
        computed: &BTreeMap<IpNet, Target>,
        down: &BTreeSet<NhKey>,
        mut upstream: impl FnMut(&IpNet, &NhKey) -> bool,
    ) -> (BTreeMap<IpNet, Target>, Option<u64>) {
        let primary = |t: &Target| match t {
            Target::Local => None,
            Target::Via { primary, .. } => Some(NhKey::from(primary)),
        };
        let dropping = |t: &Target| match t {
            Target::Local => false,
            Target::Via { primary, alternate } => {
                down.contains(&NhKey::from(primary))
                    && alternate.is_none_or(|a| down.contains(&NhKey::from(&a)))
            }
        };
        let mut out = BTreeMap::new();
        let mut waiting = BTreeMap::new();
        for (p, t) in computed {
            let old = installed.get(p).filter(|o| dropping(o));
            let moving = match (old.and_then(primary), primary(t)) {
                (Some(o), Some(n)) if o != n && self.delay_ms > 0 => Some(n),
                _ => None,
            };
            let since = moving.and_then(|n| match self.waiting.get(p) {
                Some(&(k, since)) if k == n => Some(since),
                _ => upstream(p, &n).then_some(now),
            });
            match (since, moving, old) {
                (Some(since), Some(n), Some(old)) if now < since + self.delay_ms => {
                    waiting.insert(*p, (n, since));
                    out.insert(*p, *old);
                }
                _ => {
                    out.insert(*p, *t);
                }
            }
        }
        self.waiting = waiting;
        let next = self
            .waiting
            .values()
            .map(|&(_, since)| since + self.delay_ms)
            .min();
        (out, next)
    }

    /// Prefixes whose move is waiting.
    pub fn waiting(&self) -> impl Iterator<Item = &IpNet> {
        self.waiting.keys()
    }
}

/// What this node installs while it holds, or `None` when the computed routes show a
/// change the loss cannot explain (then the hold ends and everything is installed).
///
/// Per installed prefix, by its primary next hop:
/// - not in `changed`: the loss cannot have moved the route, so the computed one must
///   keep that primary (its alternate may differ: alternates depend on the whole
///   topology); the computed route is installed;
/// - in `changed` but not `down` (its cost rose): kept as installed;
/// - `down`, with an alternate that is up and that `protects` the prefix on the topology
///   as now known (its shortest path does not run back through us): kept as installed,
///   so the datapath keeps using the alternate while the mesh converges;
/// - `down` otherwise (no usable alternate, or one whose path now comes back through us,
///   as after a node failure or a partition): the computed route is installed at once,
///   or the prefix removed if it is unreachable. Holding it would only drop its traffic
///   (lengthening repair) or loop it.
///
/// A computed prefix that was not installed is a change the loss cannot explain.
pub fn held_routes(
    installed: &BTreeMap<IpNet, Target>,
    computed: &BTreeMap<IpNet, Target>,
    changed: &BTreeSet<NhKey>,
    down: &BTreeSet<NhKey>,
    protects: impl Fn(&IpNet, &NhKey) -> bool,
) -> Option<BTreeMap<IpNet, Target>> {
    let primary = |t: &Target| match t {
        Target::Local => None,
        Target::Via { primary, .. } => Some(NhKey::from(primary)),
    };
    if computed.keys().any(|p| !installed.contains_key(p)) {
        return None;
    }
    let mut out = BTreeMap::new();
    for (p, t) in installed {
        let now = computed.get(p);
        match (t, primary(t)) {
            (_, Some(k)) if changed.contains(&k) && !down.contains(&k) => {
                out.insert(*p, *t);
            }
            (
                Target::Via {
                    alternate: Some(a), ..
                },
                Some(k),
            ) if down.contains(&k)
                && !down.contains(&NhKey::from(a))
                && protects(p, &NhKey::from(a)) =>
            {
                out.insert(*p, *t);
            }
            (_, Some(k)) if down.contains(&k) => {
                if let Some(n) = now {
                    out.insert(*p, *n);
                }
            }
            (_, old) => {
                let n = now.filter(|n| primary(n) == old)?;
                out.insert(*p, *n);
            }
        }
    }
    Some(out)
}

/// The kernel FIB's view of held routes: what the datapath does with them. A route whose
/// primary is down goes to its alternate if that one is up, else it is left out (the
/// kernel has no alternates; a route to a lost neighbour would only black-hole locally
/// originated traffic). `gateway` gives a live neighbour's link-local address.
pub fn kernel_view(
    installed: &BTreeMap<IpNet, Target>,
    down: &BTreeSet<NhKey>,
    gateway: impl Fn(&NhKey) -> Option<Ipv6Addr>,
) -> BTreeMap<IpNet, KernelNextHop> {
    installed
        .iter()
        .filter_map(|(p, t)| {
            let Target::Via { primary, alternate } = t else {
                return None;
            };
            let up = |k: NhKey| (!down.contains(&k)).then_some(k);
            let k = up(NhKey::from(primary)).or(alternate.map(|a| NhKey::from(&a)).and_then(up))?;
            Some((
                *p,
                KernelNextHop {
                    ifindex: k.ifindex,
                    gateway: gateway(&k)?,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcmesh_loader::NextHopSpec;

    fn nh(i: u8) -> NextHopSpec {
        NextHopSpec {
            ifindex: 1,
            src_mac: [2, 0, 0, 0, 0, 0],
            dst_mac: [2, 0, 0, 0, 1, i],
            mtu: 1500,
        }
    }
    fn via(p: u8, a: Option<u8>) -> Target {
        Target::Via {
            primary: nh(p),
            alternate: a.map(nh),
        }
    }
    fn pfx(i: u8) -> IpNet {
        format!("10.{i}.0.0/16").parse().unwrap()
    }

    #[test]
    fn hold_runs_for_the_delay_and_extends_at_most_to_twice_it() {
        let mut h = Hold::new(1000);
        assert!(!h.holding(0));
        assert!(h.on_local_loss(100));
        assert!(h.holding(100));
        assert!(h.holding(1099));
        assert!(!h.holding(1100));
        assert!(!h.holding(1050), "an expired hold is forgotten");
        assert!(h.on_local_loss(2000));
        assert!(!h.on_local_loss(2800), "extends, does not restart");
        assert!(h.holding(3799));
        assert!(!h.holding(3800));
        h.on_local_loss(5000);
        for t in (5500..7000).step_by(500) {
            h.on_local_loss(t);
        }
        assert!(h.holding(6999));
        assert!(!h.holding(7000), "capped at twice the delay from the start");
        h.on_local_loss(8000);
        h.cancel();
        assert!(!h.holding(8001));
        let mut off = Hold::new(0);
        assert!(!off.on_local_loss(5));
        assert!(!off.holding(5));
    }

    #[test]
    fn repairs_onto_upstream_neighbours_wait_and_everything_else_goes_at_once() {
        let mut o = SwitchOrder::new(50);
        let down = BTreeSet::from([NhKey::from(&nh(1))]);
        let installed = BTreeMap::from([
            (pfx(1), via(1, None)),
            (pfx(2), via(1, Some(2))),
            (pfx(3), via(2, None)),
            (pfx(4), Target::Local),
            (pfx(5), via(1, None)),
            (pfx(7), via(1, None)),
        ]);
        // pfx(1) drops (nh(1) down, no alternate) and its repair goes to nh(2), which
        // routed it through us: waits. pfx(7)'s repair goes to nh(3), which did not: at
        // once. pfx(2) still forwards on its alternate and pfx(3) on a live primary:
        // their moves go at once, unasked. pfx(6) is new, pfx(5) withdrawn: at once.
        let computed = BTreeMap::from([
            (pfx(1), via(2, None)),
            (pfx(2), via(3, None)),
            (pfx(3), via(3, Some(1))),
            (pfx(4), Target::Local),
            (pfx(6), via(2, None)),
            (pfx(7), via(3, None)),
        ]);
        let mut asked = Vec::new();
        let up = |p: &IpNet, k: &NhKey| {
            asked.push((*p, *k));
            *p == pfx(1) && *k == NhKey::from(&nh(2))
        };
        let (now, next) = o.filter(1000, &installed, &computed, &down, up);
        let mut want = computed.clone();
        want.insert(pfx(1), via(1, None));
        assert_eq!(now, want);
        assert_eq!(next, Some(1050));
        assert_eq!(
            asked,
            vec![(pfx(1), NhKey::from(&nh(2))), (pfx(7), NhKey::from(&nh(3)))],
            "only repairs of dropping routes are asked about"
        );
        assert_eq!(o.waiting().collect::<Vec<_>>(), vec![&pfx(1)]);
        // Still waiting just before the delay ends (not asked again), moved after it.
        let installed = now;
        let never = |_: &IpNet, _: &NhKey| -> bool { panic!("asked again") };
        let (now, _) = o.filter(1049, &installed, &computed, &down, never);
        assert_eq!(now, installed);
        let (now, next) = o.filter(1050, &installed, &computed, &down, never);
        assert_eq!(now, computed);
        assert_eq!(next, None);
        assert_eq!(o.waiting().count(), 0);
        // A live route never waits, even for an upstream neighbour.
        let none = BTreeSet::new();
        let live = BTreeMap::from([(pfx(1), via(1, None))]);
        let to2 = BTreeMap::from([(pfx(1), via(2, None))]);
        assert_eq!(o.filter(2000, &live, &to2, &none, |_, _| true).0, to2);
    }

    #[test]
    fn a_wait_restarts_when_the_target_changes_and_ends_when_the_repair_does() {
        let mut o = SwitchOrder::new(50);
        let down = BTreeSet::from([NhKey::from(&nh(1))]);
        let installed = BTreeMap::from([(pfx(1), via(1, None))]);
        let to = |n: u8| BTreeMap::from([(pfx(1), via(n, None))]);
        let mut f =
            |t: u64, c: &BTreeMap<IpNet, Target>| o.filter(t, &installed, c, &down, |_, _| true);
        assert_eq!(f(0, &to(2)).0, installed);
        // Now towards nh(3), also upstream: a new wait from t = 40.
        assert_eq!(f(40, &to(3)).0, installed);
        assert_eq!(f(60, &to(3)).0, installed);
        assert_eq!(f(90, &to(3)).0, to(3));
        // Back to the installed primary: nothing waits.
        f(100, &to(2));
        assert_eq!(f(110, &installed).1, None);
        assert_eq!(o.waiting().count(), 0);
        // A delay of 0 never waits.
        let mut off = SwitchOrder::new(0);
        assert_eq!(
            off.filter(0, &installed, &to(2), &down, |_, _| true).0,
            to(2)
        );
    }

    #[test]
    fn the_kernel_follows_the_datapath_onto_alternates() {
        let installed = BTreeMap::from([
            (pfx(1), via(1, Some(2))),
            (pfx(2), via(1, None)),
            (pfx(3), via(2, Some(1))),
            (pfx(4), Target::Local),
        ]);
        let down = BTreeSet::from([NhKey::from(&nh(1))]);
        let gw = |k: &NhKey| Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(k.mac[5])));
        let v = kernel_view(&installed, &down, gw);
        let to = |i: u16| KernelNextHop {
            ifindex: 1,
            gateway: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i),
        };
        assert_eq!(v, BTreeMap::from([(pfx(1), to(2)), (pfx(3), to(2))]));
        // A next hop with no known address is left out too.
        let v = kernel_view(&installed, &BTreeSet::new(), |k| {
            (k.mac[5] == 2).then(|| gw(k)).flatten()
        });
        assert_eq!(v, BTreeMap::from([(pfx(3), to(2))]));
    }

    #[test]
    fn the_hold_keeps_protected_routes_and_repairs_the_rest_at_once() {
        let installed = BTreeMap::from([
            (pfx(1), via(1, Some(2))),
            (pfx(2), via(2, Some(1))),
            (pfx(3), Target::Local),
            (pfx(5), via(1, None)),
            (pfx(6), via(1, Some(3))),
            (pfx(7), via(1, Some(2))),
        ]);
        let down = BTreeSet::from([NhKey::from(&nh(1))]);
        // nh(3) no longer protects pfx(6) (its path now runs back through us), and
        // nothing protects pfx(7), now unreachable.
        let protects = |p: &IpNet, _: &NhKey| *p != pfx(6) && *p != pfx(7);
        let computed = BTreeMap::from([
            (pfx(1), via(3, None)),
            (pfx(2), via(2, None)),
            (pfx(3), Target::Local),
            (pfx(5), via(2, Some(3))),
            (pfx(6), via(2, None)),
        ]);
        let held = held_routes(&installed, &computed, &down, &down, protects).unwrap();
        assert_eq!(
            held,
            BTreeMap::from([
                (pfx(1), via(1, Some(2))), // protected: kept on its alternate
                (pfx(2), via(2, None)),    // untouched primary: the new alternate
                (pfx(3), Target::Local),
                (pfx(5), via(2, Some(3))), // no alternate: repaired at once
                (pfx(6), via(2, None)),    // alternate no longer loop-free: repaired
                                           // pfx(7): unreachable now, removed
            ])
        );
        // The alternate itself down: repaired.
        let both = BTreeSet::from([NhKey::from(&nh(1)), NhKey::from(&nh(2))]);
        let c = BTreeMap::from([(pfx(1), via(3, None))]);
        let i = BTreeMap::from([(pfx(1), via(1, Some(2)))]);
        assert_eq!(
            held_routes(&i, &c, &both, &both, |_, _| true),
            Some(c.clone())
        );
        // A cost rise (changed, not down): kept as it is.
        let worse = BTreeSet::from([NhKey::from(&nh(1))]);
        assert_eq!(
            held_routes(&i, &c, &worse, &BTreeSet::new(), |_, _| true),
            Some(i.clone())
        );
        // A route over a live next hop moved or vanished, or a prefix appeared: another
        // change in the mesh.
        let mut moved = computed.clone();
        moved.insert(pfx(2), via(3, None));
        assert!(held_routes(&installed, &moved, &down, &down, protects).is_none());
        let mut lost = computed.clone();
        lost.remove(&pfx(2));
        assert!(held_routes(&installed, &lost, &down, &down, protects).is_none());
        let mut new = computed.clone();
        new.insert(pfx(4), via(2, None));
        assert!(held_routes(&installed, &new, &down, &down, protects).is_none());
        // Nothing changed: only an identical primary set is explained.
        let none = BTreeSet::new();
        assert_eq!(
            held_routes(&installed, &installed, &none, &none, protects),
            Some(installed.clone())
        );
        assert!(held_routes(&installed, &computed, &none, &none, protects).is_none());
    }
}
