//! The decision writer: computed routes into the datapath's tables, without transient
//! black holes.
//!
//! Order of every update: (1) next hops a route will need are written (new ids, or
//! changed MAC/MTU in place); (2) routes are added or repointed; (3) routes no longer
//! wanted are removed; (4) next hops no route names any more are removed. So at every
//! instant each route names a complete next hop, and nothing that still carries traffic
//! disappears before its replacement is in place.
//!
//! On start the writer adopts what the pinned tables already hold (a restarted daemon
//! keeps forwarding with the old state, then converges to the new one by the same diff).
use std::collections::{BTreeMap, BTreeSet, HashMap};

use dcmesh_loader::{IpNet, NextHopSpec, RouteTarget};
use dcmesh_schema::MAX_NEXTHOPS;

/// A next hop's identity: egress interface and neighbour MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhKey {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

impl From<&NextHopSpec> for NhKey {
    fn from(s: &NextHopSpec) -> Self {
        Self {
            ifindex: s.ifindex,
            mac: s.dst_mac,
        }
    }
}

/// What a prefix should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Local,
    Via {
        primary: NextHopSpec,
        alternate: Option<NextHopSpec>,
    },
}

/// The table operations the writer needs (implemented by the loader's `Tables`).
pub trait Sink {
    type Error: std::fmt::Display;
    fn set_nexthop(&mut self, id: u32, spec: NextHopSpec) -> Result<(), Self::Error>;
    fn delete_nexthop(&mut self, id: u32) -> Result<(), Self::Error>;
    fn set_route(&mut self, prefix: IpNet, target: RouteTarget) -> Result<(), Self::Error>;
    fn delete_route(&mut self, prefix: IpNet) -> Result<(), Self::Error>;
    fn set_nexthop_down(&mut self, id: u32, down: bool) -> Result<(), Self::Error>;
}

impl Sink for dcmesh_loader::Tables {
    type Error = dcmesh_loader::LoaderError;
    fn set_nexthop(&mut self, id: u32, spec: NextHopSpec) -> Result<(), Self::Error> {
        dcmesh_loader::Tables::set_nexthop(self, id, spec)
    }
    fn delete_nexthop(&mut self, id: u32) -> Result<(), Self::Error> {
        dcmesh_loader::Tables::delete_nexthop(self, id)
    }
    fn set_route(&mut self, prefix: IpNet, target: RouteTarget) -> Result<(), Self::Error> {
        dcmesh_loader::Tables::set_route(self, prefix, target)
    }
    fn delete_route(&mut self, prefix: IpNet) -> Result<(), Self::Error> {
        dcmesh_loader::Tables::delete_route(self, prefix)
    }
    fn set_nexthop_down(&mut self, id: u32, down: bool) -> Result<(), Self::Error> {
        dcmesh_loader::Tables::set_nexthop_down(self, id, down)
    }
}

/// What one [`Writer::apply`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub nexthops_set: usize,
    pub nexthops_deleted: usize,
    pub routes_set: usize,
    pub routes_deleted: usize,
}

/// The writer and its view of the tables.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    nexthops: BTreeMap<u32, NextHopSpec>,
    ids: HashMap<NhKey, u32>,
    routes: BTreeMap<IpNet, RouteTarget>,
    /// Next hops marked down since they were written (rewritten, hence up, when reused).
    down: BTreeSet<u32>,
}

/// Writer errors.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("next-hop table full ({0} entries)")]
    Full(u32),
    #[error("datapath table update failed: {0}")]
    Sink(String),
}

impl Writer {
    /// Adopts the current table contents.
    pub fn adopt(nexthops: Vec<(u32, NextHopSpec)>, routes: Vec<(IpNet, RouteTarget)>) -> Self {
        let ids = nexthops
            .iter()
            .map(|(id, s)| (NhKey::from(s), *id))
            .collect();
        Self {
            nexthops: nexthops.into_iter().collect(),
            ids,
            routes: routes.into_iter().collect(),
            down: BTreeSet::new(),
        }
    }

    /// Records next hops found marked down in adopted tables, so reusing them rewrites
    /// (and so raises) them.
    pub fn adopt_down(&mut self, ids: impl IntoIterator<Item = u32>) {
        self.down.extend(ids);
    }

    /// Routes as last written.
    pub fn routes(&self) -> &BTreeMap<IpNet, RouteTarget> {
        &self.routes
    }

    fn free_id(&self) -> Result<u32, WriteError> {
        (1..MAX_NEXTHOPS)
            .find(|id| !self.nexthops.contains_key(id))
            .ok_or(WriteError::Full(MAX_NEXTHOPS))
    }

    /// The id of a next hop with `spec`, written first if needed. A next hop marked down
    /// is rewritten (so raised) only if `raise`.
    fn ensure<S: Sink>(
        &mut self,
        sink: &mut S,
        spec: NextHopSpec,
        raise: bool,
        ch: &mut Changes,
    ) -> Result<u32, WriteError> {
        let key = NhKey::from(&spec);
        let id = match self.ids.get(&key) {
            Some(&id)
                if self.nexthops.get(&id) == Some(&spec)
                    && (!raise || !self.down.contains(&id)) =>
            {
                return Ok(id)
            }
            Some(&id) => id,
            None => self.free_id()?,
        };
        sink.set_nexthop(id, spec)
            .map_err(|e| WriteError::Sink(e.to_string()))?;
        self.nexthops.insert(id, spec);
        self.ids.insert(key, id);
        self.down.remove(&id); // a (re)written next hop starts up
        ch.nexthops_set += 1;
        Ok(id)
    }

    /// Marks every next hop out of `ifindex` down at once (carrier lost): the datapath
    /// switches routes that have a loop-free alternate to it before routes are
    /// recomputed. Returns how many were marked.
    pub fn mark_interface_down<S: Sink>(
        &mut self,
        sink: &mut S,
        ifindex: u32,
    ) -> Result<usize, WriteError> {
        self.mark_down_where(sink, |s| s.ifindex == ifindex)
    }

    /// Marks down every next hop matching `pick` that is not down yet; returns how many.
    fn mark_down_where<S: Sink>(
        &mut self,
        sink: &mut S,
        pick: impl Fn(&NextHopSpec) -> bool,
    ) -> Result<usize, WriteError> {
        let ids: Vec<u32> = self
            .nexthops
            .iter()
            .filter(|(id, s)| pick(s) && !self.down.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            sink.set_nexthop_down(*id, true)
                .map_err(|e| WriteError::Sink(e.to_string()))?;
            self.down.insert(*id);
        }
        Ok(ids.len())
    }

    /// Marks down every next hop whose neighbour is not in `live` (lost, or its link no
    /// longer usable): the datapath moves routes with a loop-free alternate onto it.
    /// Returns how many were newly marked.
    pub fn mark_down_unless<S: Sink>(
        &mut self,
        sink: &mut S,
        live: &BTreeSet<NhKey>,
    ) -> Result<usize, WriteError> {
        self.mark_down_where(sink, |s| !live.contains(&NhKey::from(s)))
    }

    /// Whether the tables hold the next hop `key` (routes name every one they hold).
    pub fn uses(&self, key: &NhKey) -> bool {
        self.ids.contains_key(key)
    }

    /// Next hops currently marked down.
    pub fn down_keys(&self) -> BTreeSet<NhKey> {
        self.down
            .iter()
            .filter_map(|id| self.nexthops.get(id))
            .map(NhKey::from)
            .collect()
    }

    /// The installed routes as targets (routes naming an unknown next hop, or of a kind
    /// the daemon never writes, are skipped).
    pub fn installed(&self) -> BTreeMap<IpNet, Target> {
        self.routes
            .iter()
            .filter_map(|(p, r)| {
                let t = match *r {
                    RouteTarget::Local => Target::Local,
                    RouteTarget::Via { id, alt } => Target::Via {
                        primary: *self.nexthops.get(&id)?,
                        alternate: alt.and_then(|a| self.nexthops.get(&a)).copied(),
                    },
                    _ => return None,
                };
                Some((*p, t))
            })
            .collect()
    }

    /// Makes the tables hold exactly `desired` (next hops it names are up).
    pub fn apply<S: Sink>(
        &mut self,
        sink: &mut S,
        desired: &BTreeMap<IpNet, Target>,
    ) -> Result<Changes, WriteError> {
        self.write(sink, desired, true)
    }

    /// Like [`Writer::apply`], but next hops marked down stay down (routes kept during a
    /// microloop hold still name their lost primary, and must keep using the alternate).
    pub fn apply_held<S: Sink>(
        &mut self,
        sink: &mut S,
        desired: &BTreeMap<IpNet, Target>,
    ) -> Result<Changes, WriteError> {
        self.write(sink, desired, false)
    }

    fn write<S: Sink>(
        &mut self,
        sink: &mut S,
        desired: &BTreeMap<IpNet, Target>,
        raise: bool,
    ) -> Result<Changes, WriteError> {
        let mut ch = Changes::default();
        let sink_err = |e: S::Error| WriteError::Sink(e.to_string());
        // (1) + (2)
        for (prefix, t) in desired {
            let rt = match *t {
                Target::Local => RouteTarget::Local,
                Target::Via { primary, alternate } => {
                    let id = self.ensure(sink, primary, raise, &mut ch)?;
                    let alt = match alternate {
                        Some(a) if NhKey::from(&a) != NhKey::from(&primary) => {
                            Some(self.ensure(sink, a, raise, &mut ch)?)
                        }
                        _ => None,
                    };
                    RouteTarget::Via { id, alt }
                }
            };
            if self.routes.get(prefix) != Some(&rt) {
                sink.set_route(*prefix, rt).map_err(sink_err)?;
                self.routes.insert(*prefix, rt);
                ch.routes_set += 1;
            }
        }
        // (3)
        let stale: Vec<IpNet> = self
            .routes
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        for p in stale {
            sink.delete_route(p).map_err(sink_err)?;
            self.routes.remove(&p);
            ch.routes_deleted += 1;
        }
        // (4)
        let used: BTreeSet<u32> = self
            .routes
            .values()
            .flat_map(|r| match r {
                RouteTarget::Via { id, alt } => vec![Some(*id), *alt],
                _ => vec![],
            })
            .flatten()
            .collect();
        let unused: Vec<u32> = self
            .nexthops
            .keys()
            .filter(|id| !used.contains(id))
            .copied()
            .collect();
        for id in unused {
            sink.delete_nexthop(id).map_err(sink_err)?;
            if let Some(s) = self.nexthops.remove(&id) {
                self.ids.remove(&NhKey::from(&s));
            }
            self.down.remove(&id);
            ch.nexthops_deleted += 1;
        }
        Ok(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fake datapath that checks, after every single operation, that no route names a
    /// missing next hop (a black hole).
    #[derive(Default)]
    struct Fake {
        down: BTreeSet<u32>,
        nh: BTreeMap<u32, NextHopSpec>,
        routes: BTreeMap<IpNet, RouteTarget>,
        ops: usize,
    }

    impl Fake {
        fn check(&self) -> Result<(), String> {
            for (p, r) in &self.routes {
                if let RouteTarget::Via { id, alt } = r {
                    for x in std::iter::once(id).chain(alt.iter()) {
                        if !self.nh.contains_key(x) {
                            return Err(format!("{p} names missing next hop {x}"));
                        }
                    }
                }
            }
            Ok(())
        }
    }

    impl Sink for Fake {
        type Error = String;
        fn set_nexthop_down(&mut self, id: u32, down: bool) -> Result<(), String> {
            self.ops += 1;
            if down {
                self.down.insert(id);
            } else {
                self.down.remove(&id);
            }
            Ok(())
        }
        fn set_nexthop(&mut self, id: u32, spec: NextHopSpec) -> Result<(), String> {
            self.ops += 1;
            self.down.remove(&id);
            self.nh.insert(id, spec);
            self.check()
        }
        fn delete_nexthop(&mut self, id: u32) -> Result<(), String> {
            self.ops += 1;
            self.nh.remove(&id).ok_or("no such next hop")?;
            self.check()
        }
        fn set_route(&mut self, prefix: IpNet, target: RouteTarget) -> Result<(), String> {
            self.ops += 1;
            self.routes.insert(prefix, target);
            self.check()
        }
        fn delete_route(&mut self, prefix: IpNet) -> Result<(), String> {
            self.ops += 1;
            self.routes.remove(&prefix).ok_or("no such route")?;
            self.check()
        }
    }

    fn nh(i: u8) -> NextHopSpec {
        NextHopSpec {
            ifindex: u32::from(i % 3) + 1,
            src_mac: [2, 0, 0, 0, 0, 0],
            dst_mac: [2, 0, 0, 0, 1, i],
            mtu: 1500,
        }
    }

    fn pfx(i: u8) -> IpNet {
        format!("10.{i}.0.0/16").parse().unwrap()
    }

    fn desired(spec: &[(u8, Option<u8>, Option<u8>)]) -> BTreeMap<IpNet, Target> {
        spec.iter()
            .map(|&(p, prim, alt)| {
                let t = match prim {
                    None => Target::Local,
                    Some(x) => Target::Via {
                        primary: nh(x),
                        alternate: alt.map(nh),
                    },
                };
                (pfx(p), t)
            })
            .collect()
    }

    #[test]
    fn repointing_writes_the_new_next_hop_first_and_removes_the_old_last() {
        let mut f = Fake::default();
        let mut w = Writer::default();
        let ch = w
            .apply(&mut f, &desired(&[(1, Some(1), Some(2)), (2, None, None)]))
            .unwrap();
        assert_eq!(
            ch,
            Changes {
                nexthops_set: 2,
                nexthops_deleted: 0,
                routes_set: 2,
                routes_deleted: 0
            }
        );
        let ch = w.apply(&mut f, &desired(&[(1, Some(3), None)])).unwrap();
        assert_eq!(
            ch,
            Changes {
                nexthops_set: 1,
                nexthops_deleted: 2,
                routes_set: 1,
                routes_deleted: 1
            }
        );
        assert_eq!(f.nh.len(), 1);
        // Nothing to do: no operations.
        let before = f.ops;
        w.apply(&mut f, &desired(&[(1, Some(3), None)])).unwrap();
        assert_eq!(f.ops, before);
    }

    #[test]
    fn carrier_loss_marks_next_hops_down_and_reuse_brings_them_up() {
        let mut f = Fake::default();
        let mut w = Writer::default();
        // nh(1) and nh(4) share ifindex 2; nh(2) is on ifindex 3.
        w.apply(
            &mut f,
            &desired(&[(1, Some(1), Some(2)), (2, Some(4), None)]),
        )
        .unwrap();
        assert_eq!(w.mark_interface_down(&mut f, 2).unwrap(), 2);
        assert_eq!(f.down.len(), 2);
        assert_eq!(w.mark_interface_down(&mut f, 2).unwrap(), 0, "already down");
        assert_eq!(w.down_keys().len(), 2);
        // The same next hop wanted again (carrier back): rewritten, hence up, once.
        let d = desired(&[(1, Some(1), Some(2)), (2, Some(4), None)]);
        assert_eq!(w.apply(&mut f, &d).unwrap().nexthops_set, 2);
        assert!(f.down.is_empty());
        assert!(w.down_keys().is_empty());
        assert_eq!(w.apply(&mut f, &d).unwrap(), Changes::default());
        // Next hops whose neighbour is not live go down; live ones stay up.
        let live = BTreeSet::from([NhKey::from(&nh(1)), NhKey::from(&nh(2))]);
        assert_eq!(w.mark_down_unless(&mut f, &live).unwrap(), 1);
        assert_eq!(w.down_keys(), BTreeSet::from([NhKey::from(&nh(4))]));
        assert_eq!(w.mark_down_unless(&mut f, &live).unwrap(), 0);
        // A held write keeps it down; a normal one raises it.
        assert_eq!(w.apply_held(&mut f, &d).unwrap(), Changes::default());
        assert_eq!(f.down.len(), 1);
        assert!(w.uses(&NhKey::from(&nh(4))) && !w.uses(&NhKey::from(&nh(3))));
        assert_eq!(w.installed(), d);
    }

    #[test]
    fn adopts_pinned_state_and_cleans_it_up() {
        let mut f = Fake::default();
        let mut w0 = Writer::default();
        w0.apply(&mut f, &desired(&[(1, Some(1), None), (2, Some(2), None)]))
            .unwrap();
        let mut w = Writer::adopt(
            f.nh.clone().into_iter().collect(),
            f.routes.clone().into_iter().collect(),
        );
        let ch = w.apply(&mut f, &desired(&[(1, Some(1), None)])).unwrap();
        assert_eq!(
            ch,
            Changes {
                nexthops_set: 0,
                nexthops_deleted: 1,
                routes_set: 0,
                routes_deleted: 1
            }
        );
    }

    proptest! {
        #[test]
        fn any_sequence_of_updates_never_black_holes(
            steps in proptest::collection::vec(
                proptest::collection::vec((0u8..8, proptest::option::of(0u8..6), proptest::option::of(0u8..6)), 0..8),
                1..6)
        ) {
            let mut f = Fake::default();
            let mut w = Writer::default();
            for s in steps {
                let d = desired(&s);
                w.apply(&mut f, &d).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(f.routes.len(), d.len());
                prop_assert_eq!(&f.routes, w.routes());
                // Only next hops in use remain.
                let used: BTreeSet<NhKey> = d.values().flat_map(|t| match t {
                    Target::Via { primary, alternate } => {
                        let mut v = vec![NhKey::from(primary)];
                        v.extend(alternate.iter().map(NhKey::from));
                        v
                    }
                    Target::Local => vec![],
                }).collect();
                let have: BTreeSet<NhKey> = f.nh.values().map(NhKey::from).collect();
                prop_assert_eq!(have, used);
            }
        }
    }
}
