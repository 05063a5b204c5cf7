//! Neighbours heard on each mesh interface, and the links they make.
//!
//! A neighbour appears with its first valid hello and is lost when no hello arrived for
//! `dead_ms` plus a per-neighbour stagger (below), when its certificate expires (checked
//! every hello interval), or at once when the interface loses carrier
//! ([`Neighbours::drop_interface`]).
//!
//! # Ordered loss detection
//! When a node dies, all its neighbours stop hearing it at the same moment. Had they
//! all declared the loss at once, each would repair through another that still
//! believed in the dead node, and their repairs could loop (measured: exact timers
//! without a stagger looped on 2 of 4 node-crash runs, up to 63 TTL expiries). So the
//! daemon gives each neighbour an extra delay by its rank among the lost node's
//! neighbours ([`Neighbours::expire`]'s `extra`), and wakes exactly at the earliest
//! deadline ([`Neighbours::next_expiry_ms`]): the neighbours then declare the loss one
//! after another, each after the previous one's advert has arrived, and repair in
//! order. The step (`loss_stagger_ms`, 50 ms by default) must cover an advert crossing
//! one hop and a route computation: at 25 ms a loaded test run still looped once.
//!
//! # Usable links
//! A link is usable (goes into adverts) only when both directions work: the neighbour's
//! hello must report that it hears us (`df > 0`), and we must hear it (`dr > 0`). A neighbour that stops listing
//! us keeps its last `df` for `dead_ms` (like Babel's IHU hold time): a neighbour that
//! restarted does not know us for one hello interval, and that must not withdraw routes
//! its still-running datapath carries. A link that really became one-way is dropped
//! within the same bound as a silent neighbour.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::Ipv6Addr,
};

use crate::{
    identity::NodeId,
    metric::{self, HelloWindow, Snr, SnrPolicy},
    wire::{Heard, Hello},
};

/// Seconds of SNR samples kept for the trend.
pub const SNR_TREND_WINDOW_S: f64 = 10.0;

/// One neighbour on one interface.
#[derive(Clone, Debug)]
pub struct Neighbour {
    pub node: NodeId,
    pub mac: [u8; 6],
    /// Its link-local address (kernel FIB gateway).
    pub addr: Ipv6Addr,
    pub window: HelloWindow,
    /// Fraction of our hellos it last reported receiving (0..=1).
    pub df: f64,
    /// When a hello last listed us (caller's clock, ms).
    df_at_ms: Option<u64>,
    /// Its certificate's expiry, unix seconds.
    pub cert_not_after: u64,
    /// SNR samples `(seconds, dB)` of the last [`SNR_TREND_WINDOW_S`].
    snr: VecDeque<(f64, f64)>,
}

impl Neighbour {
    /// Current SNR and trend, if any sample exists.
    pub fn snr(&self) -> Option<Snr> {
        let last = self.snr.back()?;
        let samples: Vec<(f64, f64)> = self.snr.iter().copied().collect();
        Some(Snr {
            db: last.1,
            slope_db_s: metric::snr_slope(&samples),
        })
    }
}

/// A link's state, as the control socket and metrics show it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Link {
    pub iface: usize,
    pub node: NodeId,
    #[serde(skip)]
    pub mac: [u8; 6],
    pub addr: Ipv6Addr,
    pub df: f64,
    pub dr: f64,
    pub etx: Option<f64>,
    pub snr_db: Option<f64>,
    pub snr_slope_db_s: Option<f64>,
    /// 1/256 ETX units; `None` when not bidirectional.
    pub cost: Option<u32>,
}

/// What a hello told about its sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloOutcome {
    /// First hello from it on this interface (or since it was lost).
    pub new: bool,
    /// Its hello numbering jumped: it restarted and may have lost its database.
    pub restarted: bool,
}

/// Ranks beyond this share the last stagger step (a node with more neighbours than
/// this gets no order among its highest-ranked ones, rather than a long delay).
pub const MAX_LOSS_RANK: u64 = 8;

/// The extra silence (ms) before we declare a lost neighbour X dead: our rank among
/// X's advertised neighbours (by node id, which every node sorts alike) times `step_ms`;
/// 0 when X does not list us. See "Ordered loss detection" above.
pub fn loss_stagger_ms(
    x_neighbours: impl IntoIterator<Item = NodeId>,
    me: &NodeId,
    step_ms: u64,
) -> u64 {
    let mut v: Vec<NodeId> = x_neighbours.into_iter().collect();
    v.sort();
    v.dedup();
    v.iter()
        .position(|n| n == me)
        .map_or(0, |r| (r as u64).min(MAX_LOSS_RANK) * step_ms)
}

/// All neighbours, per interface (by index into the configured interface list).
#[derive(Clone, Debug, Default)]
pub struct Neighbours {
    per_iface: Vec<HashMap<NodeId, Neighbour>>,
    dead_ms: u64,
}

impl Neighbours {
    pub fn new(interfaces: usize, dead_ms: u64) -> Self {
        Self {
            per_iface: vec![HashMap::new(); interfaces],
            dead_ms,
        }
    }

    /// Records a verified hello from `src` on `iface`; `me` is our id.
    pub fn on_hello(
        &mut self,
        iface: usize,
        h: &Hello,
        src: Ipv6Addr,
        cert_not_after: u64,
        me: &NodeId,
        now_ms: u64,
    ) -> HelloOutcome {
        let Some(map) = self.per_iface.get_mut(iface) else {
            return HelloOutcome::default();
        };
        let df = h
            .heard
            .iter()
            .find(|x| x.node == *me && x.rx > 0)
            .map(|x| metric::ratio_from_wire(x.rx));
        let mut new = false;
        let n = map.entry(h.node).or_insert_with(|| {
            new = true;
            Neighbour {
                node: h.node,
                mac: h.mac,
                addr: src,
                window: HelloWindow::default(),
                df: 0.0,
                df_at_ms: None,
                cert_not_after,
                snr: VecDeque::new(),
            }
        });
        n.mac = h.mac;
        n.addr = src;
        if let Some(df) = df {
            n.df = df;
            n.df_at_ms = Some(now_ms);
        } else if n
            .df_at_ms
            .is_none_or(|t| now_ms.saturating_sub(t) > self.dead_ms)
        {
            n.df = 0.0;
        }
        n.cert_not_after = cert_not_after;
        let restarted = n.window.record(h.seq, now_ms);
        HelloOutcome { new, restarted }
    }

    /// Records an SNR sample for the neighbour with `mac` on `iface` (`None`: all).
    pub fn set_snr(&mut self, iface: usize, mac: Option<[u8; 6]>, db: f64, now_ms: u64) {
        let Some(map) = self.per_iface.get_mut(iface) else {
            return;
        };
        let t = now_ms as f64 / 1000.0;
        for n in map.values_mut().filter(|n| mac.is_none_or(|m| m == n.mac)) {
            n.snr.push_back((t, db));
            while n.snr.front().is_some_and(|s| t - s.0 > SNR_TREND_WINDOW_S) {
                n.snr.pop_front();
            }
        }
    }

    /// Forgets the SNR of neighbours on `iface` whose newest sample is older than
    /// `max_age_ms`, so a source that stopped reporting a neighbour leaves it without
    /// SNR (plain ETX) instead of a stale value. Fresh neighbours keep their whole trend
    /// window.
    pub fn expire_snr(&mut self, iface: usize, max_age_ms: u64, now_ms: u64) {
        let Some(map) = self.per_iface.get_mut(iface) else {
            return;
        };
        let t = now_ms as f64 / 1000.0;
        let max_age = max_age_ms as f64 / 1000.0;
        for n in map.values_mut() {
            if n.snr.back().is_some_and(|s| t - s.0 > max_age) {
                n.snr.clear();
            }
        }
    }

    /// Drops neighbours silent for more than `dead_ms + extra(neighbour)` or whose
    /// certificate expired.
    pub fn expire(
        &mut self,
        now_ms: u64,
        now_s: u64,
        extra: impl Fn(&NodeId) -> u64,
    ) -> Vec<(usize, NodeId)> {
        let mut gone = Vec::new();
        for (i, map) in self.per_iface.iter_mut().enumerate() {
            map.retain(|id, n| {
                let alive = now_ms.saturating_sub(n.window.last_heard_ms())
                    <= self.dead_ms + extra(id)
                    && now_s < n.cert_not_after;
                if !alive {
                    gone.push((i, *id));
                }
                alive
            });
        }
        gone
    }

    /// When (caller's clock, ms) [`Neighbours::expire`] with the same `extra` drops the
    /// next silent neighbour; `None` without neighbours.
    pub fn next_expiry_ms(&self, extra: impl Fn(&NodeId) -> u64) -> Option<u64> {
        self.per_iface
            .iter()
            .flat_map(|m| m.values())
            .map(|n| n.window.last_heard_ms() + self.dead_ms + extra(&n.node) + 1)
            .min()
    }

    /// Forgets every neighbour on `iface` (carrier lost).
    pub fn drop_interface(&mut self, iface: usize) -> Vec<NodeId> {
        self.per_iface
            .get_mut(iface)
            .map(|m| m.drain().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    /// What we tell `iface` we hear (sorted, at most [`crate::wire::MAX_HEARD`]).
    pub fn heard(&self, iface: usize) -> Vec<Heard> {
        let mut v: Vec<Heard> = self
            .per_iface
            .get(iface)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|n| Heard {
                node: n.node,
                rx: metric::ratio_to_wire(n.window.ratio()),
            })
            .collect();
        v.sort_by_key(|h| h.node);
        v.truncate(crate::wire::MAX_HEARD);
        v
    }

    /// Every link, sorted by interface then neighbour.
    pub fn links(&self, now_ms: u64, p: &SnrPolicy) -> Vec<Link> {
        let mut v = Vec::new();
        for (i, map) in self.per_iface.iter().enumerate() {
            for n in map.values() {
                let dr = n.window.ratio();
                let df = match n.df_at_ms {
                    Some(t) if now_ms.saturating_sub(t) <= self.dead_ms => n.df,
                    _ => 0.0,
                };
                let snr = n.snr();
                v.push(Link {
                    iface: i,
                    node: n.node,
                    mac: n.mac,
                    addr: n.addr,
                    df,
                    dr,
                    etx: metric::etx(df, dr),
                    snr_db: snr.map(|s| s.db),
                    snr_slope_db_s: snr.map(|s| s.slope_db_s),
                    cost: metric::cost(df, dr, snr, p),
                });
            }
        }
        v.sort_by_key(|l| (l.iface, l.node));
        v
    }

    /// Per neighbour, its cheapest usable link (lowest interface index on a tie).
    pub fn best_links(&self, now_ms: u64, p: &SnrPolicy) -> BTreeMap<NodeId, Link> {
        let mut best: BTreeMap<NodeId, Link> = BTreeMap::new();
        for l in self.links(now_ms, p) {
            let Some(c) = l.cost else { continue };
            match best.get(&l.node) {
                Some(b) if b.cost.unwrap_or(u32::MAX) <= c => {}
                _ => {
                    best.insert(l.node, l);
                }
            }
        }
        best
    }

    /// Number of neighbours over all interfaces.
    pub fn len(&self) -> usize {
        self.per_iface.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One reading from an SNR file: for one neighbour (by MAC) or every neighbour (`*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnrReading {
    pub mac: Option<[u8; 6]>,
    pub db: f64,
}

/// Parses an SNR file: one `<neighbour MAC or *> <SNR dB>` per line; `#` starts a
/// comment. Returns the readings and the numbers (1-based) of lines that made no sense.
pub fn parse_snr_file(text: &str) -> (Vec<SnrReading>, Vec<usize>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut w = line.split_whitespace();
        let reading = match (w.next(), w.next().map(str::parse::<f64>), w.next()) {
            (Some("*"), Some(Ok(db)), None) if db.is_finite() => Some(SnrReading { mac: None, db }),
            (Some(m), Some(Ok(db)), None) if db.is_finite() => {
                dcmesh_loader::parse_mac(m).map(|mac| SnrReading { mac: Some(mac), db })
            }
            _ => None,
        };
        match reading {
            Some(r) => ok.push(r),
            None => bad.push(i + 1),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: u8, seq: u16, hears_me: Option<u16>) -> Hello {
        Hello {
            node: NodeId([node; 32]),
            mac: [2, 0, 0, 0, 0, node],
            seq,
            interval_ms: 1000,
            cert: vec![],
            heard: hears_me
                .map(|rx| {
                    vec![Heard {
                        node: NodeId([0; 32]),
                        rx,
                    }]
                })
                .unwrap_or_default(),
        }
    }

    const ME: NodeId = NodeId([0; 32]);
    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

    #[test]
    fn one_way_links_are_not_usable_until_they_hear_us() {
        let mut n = Neighbours::new(1, 4000);
        assert!(n.on_hello(0, &hello(1, 1, None), LL, u64::MAX, &ME, 0).new);
        assert!(n.best_links(0, &SnrPolicy::default()).is_empty());
        assert_eq!(
            n.on_hello(0, &hello(1, 2, Some(65535)), LL, u64::MAX, &ME, 1000),
            HelloOutcome::default()
        );
        let b = n.best_links(1000, &SnrPolicy::default());
        assert_eq!(b[&NodeId([1; 32])].cost, Some(256));
        assert_eq!(n.heard(0)[0].node, NodeId([1; 32]));
    }

    #[test]
    fn a_neighbour_that_stops_listing_us_keeps_its_link_for_the_dead_interval() {
        let mut n = Neighbours::new(1, 4000);
        let p = SnrPolicy::default();
        n.on_hello(0, &hello(1, 1, Some(65535)), LL, u64::MAX, &ME, 0);
        // It restarted: its hellos do not list us yet.
        let o = n.on_hello(0, &hello(1, 1000, None), LL, u64::MAX, &ME, 500);
        assert_eq!(
            o,
            HelloOutcome {
                new: false,
                restarted: true
            }
        );
        for (k, t) in [1000u64, 2000, 3000, 4000].iter().enumerate() {
            n.on_hello(0, &hello(1, 1001 + k as u16, None), LL, u64::MAX, &ME, *t);
            assert_eq!(n.best_links(*t, &p).len(), 1, "link dropped at {t} ms");
        }
        n.on_hello(0, &hello(1, 1010, None), LL, u64::MAX, &ME, 4001);
        assert!(
            n.best_links(4001, &p).is_empty(),
            "one-way for longer than dead_ms"
        );
        // Hearing us again restores it at once.
        n.on_hello(0, &hello(1, 1011, Some(65535)), LL, u64::MAX, &ME, 5000);
        assert_eq!(n.best_links(5000, &p).len(), 1);
    }

    #[test]
    fn the_neighbours_of_a_node_are_staggered_by_rank() {
        let id = |i: u8| NodeId([i; 32]);
        let x_links = [id(9), id(3), id(5), id(3)];
        assert_eq!(loss_stagger_ms(x_links, &id(3), 25), 0);
        assert_eq!(loss_stagger_ms(x_links, &id(5), 25), 25);
        assert_eq!(loss_stagger_ms(x_links, &id(9), 25), 50);
        assert_eq!(loss_stagger_ms(x_links, &id(7), 25), 0, "not listed");
        let many: Vec<NodeId> = (0..40).map(id).collect();
        assert_eq!(
            loss_stagger_ms(many, &id(39), 25),
            MAX_LOSS_RANK * 25,
            "capped"
        );
    }

    #[test]
    fn silence_beyond_the_dead_interval_loses_the_neighbour() {
        let none = |_: &NodeId| 0;
        let mut n = Neighbours::new(2, 4000);
        assert_eq!(n.next_expiry_ms(none), None);
        n.on_hello(0, &hello(1, 1, Some(65535)), LL, u64::MAX, &ME, 10_000);
        n.on_hello(1, &hello(2, 1, Some(65535)), LL, u64::MAX, &ME, 10_500);
        // The earliest deadline, and exactly when `expire` drops that neighbour.
        assert_eq!(n.next_expiry_ms(none), Some(14_001));
        assert!(
            n.expire(14_000, 0, none).is_empty(),
            "exactly dead_ms of silence is still alive"
        );
        assert_eq!(n.expire(14_001, 0, none), vec![(0, NodeId([1; 32]))]);
        assert_eq!(n.next_expiry_ms(none), Some(14_501));
        // A hello moves the deadline.
        n.on_hello(1, &hello(2, 2, Some(65535)), LL, u64::MAX, &ME, 11_000);
        assert_eq!(n.next_expiry_ms(none), Some(15_001));
        // The stagger delays both alike.
        let late = |_: &NodeId| 300;
        assert_eq!(n.next_expiry_ms(late), Some(15_301));
        assert!(n.expire(15_300, 0, late).is_empty());
        assert_eq!(n.expire(15_301, 0, late), vec![(1, NodeId([2; 32]))]);
        assert!(n.is_empty());
        assert_eq!(n.next_expiry_ms(none), None);
    }

    #[test]
    fn certificate_expiry_and_carrier_loss_drop_neighbours() {
        let mut n = Neighbours::new(2, 4000);
        n.on_hello(0, &hello(1, 1, Some(65535)), LL, 100, &ME, 0);
        n.on_hello(1, &hello(2, 1, Some(65535)), LL, 1000, &ME, 0);
        assert_eq!(n.expire(0, 100, |_| 0), vec![(0, NodeId([1; 32]))]);
        assert_eq!(n.drop_interface(1), vec![NodeId([2; 32])]);
        assert!(n.is_empty());
    }

    #[test]
    fn snr_files_parse_and_bad_lines_are_reported() {
        let (ok, bad) = parse_snr_file("# radio model\n* 30\n02:00:00:00:00:01 12.5 # weak\nnonsense\n02:00:00:00:00:01 inf\n\n");
        assert_eq!(
            ok,
            vec![
                SnrReading {
                    mac: None,
                    db: 30.0
                },
                SnrReading {
                    mac: Some([2, 0, 0, 0, 0, 1]),
                    db: 12.5
                }
            ]
        );
        assert_eq!(bad, vec![4, 5]);
    }

    #[test]
    fn stale_snr_samples_are_forgotten() {
        let mut n = Neighbours::new(2, 60_000);
        let p = SnrPolicy::default();
        for i in 0..2 {
            n.on_hello(i, &hello(1, 1, Some(65535)), LL, u64::MAX, &ME, 0);
        }
        n.set_snr(0, Some([2, 0, 0, 0, 0, 1]), 12.0, 0);
        n.set_snr(1, None, 12.0, 0);
        n.set_snr(0, Some([2, 0, 0, 0, 0, 1]), 11.0, 1000);
        n.expire_snr(0, 500, 1000);
        assert_eq!(
            n.links(1000, &p)[0].snr_slope_db_s,
            Some(-1.0),
            "a fresh neighbour keeps its older samples for the trend"
        );
        n.expire_snr(0, 4000, 5000);
        assert_eq!(
            n.links(5000, &p)[0].snr_db,
            Some(11.0),
            "1000 ms sample is 4 s old"
        );
        n.expire_snr(0, 4000, 5001);
        assert_eq!(n.links(5001, &p)[0].snr_db, None, "newest sample too old");
        let l = &n.links(5001, &p)[0];
        assert_eq!(
            l.cost,
            metric::cost(l.df, l.dr, None, &p),
            "no SNR: plain ETX"
        );
        assert_eq!(
            n.links(5001, &p)[1].snr_db,
            Some(12.0),
            "other interface untouched"
        );
    }

    #[test]
    fn snr_feeds_the_cost_and_the_best_link_wins() {
        let mut n = Neighbours::new(2, 4000);
        let p = SnrPolicy::default();
        for i in 0..2 {
            n.on_hello(i, &hello(1, 1, Some(65535)), LL, u64::MAX, &ME, 0);
        }
        n.set_snr(0, None, 10.0, 0);
        n.set_snr(1, Some([2, 0, 0, 0, 0, 1]), 30.0, 0);
        let b = n.best_links(0, &p);
        assert_eq!(b[&NodeId([1; 32])].iface, 1);
        assert_eq!(b[&NodeId([1; 32])].cost, Some(256));
        let l = n.links(0, &p);
        assert_eq!(l[0].cost, Some(1024));
        // A falling SNR raises the cost.
        for k in 1..=5u16 {
            n.on_hello(
                1,
                &hello(1, 1 + k, Some(65535)),
                LL,
                u64::MAX,
                &ME,
                u64::from(k) * 1000,
            );
        }
        n.set_snr(1, None, 20.0, 5000);
        assert_eq!(
            n.links(5000, &p)[1].etx,
            Some(1.0),
            "no loss: only SNR moves"
        );
        assert!(n.links(5000, &p)[1].cost.unwrap() > 256 * 2);
    }
}
