//! Random fault scripts for `chaos` runs.
//!
//! Faults come one at a time: each is applied, undone after a recovery delay, and the
//! next one starts after a gap, so every fault's restore time is measured on its own.
//! The mix covers everything the testbed can do: carrier loss, silent link death, an SNR
//! dip (a radio fading out and back), a daemon crash and restart, a controller-only
//! restart, a power outage of a share of nodes, and a partition. Deterministic for a
//! seed.
use std::time::Duration;

use crate::topology::{Action, Fault, Topology};

/// Frame loss during an SNR dip (2 %: about 10 dB with the default model, the
/// daemon's `snr_min`): lossy enough that traffic should move, not a dead link.
pub const DIP_LOSS: f64 = 0.02;

/// Knobs of a chaos script.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// Length of the whole run (faults stop `tail` before it).
    pub duration: Duration,
    /// Quiet time at the start and at the end.
    pub warmup: Duration,
    pub tail: Duration,
    /// Time between one fault's recovery and the next fault.
    pub gap: (Duration, Duration),
    /// Time a fault lasts before it is undone.
    pub hold: (Duration, Duration),
    /// Share of nodes in a power outage.
    pub outage_share: f64,
    /// Whether daemon faults (crash, controller restart) apply.
    pub daemons: bool,
    pub seed: u64,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(300),
            warmup: Duration::from_secs(3),
            tail: Duration::from_secs(5),
            gap: (Duration::from_secs(3), Duration::from_secs(6)),
            hold: (Duration::from_secs(2), Duration::from_secs(5)),
            outage_share: 0.15,
            daemons: true,
            seed: 1,
        }
    }
}

fn between(rng: &mut fastrand::Rng, (a, b): (Duration, Duration)) -> Duration {
    let (a, b) = (
        a.as_millis() as u64,
        b.as_millis().max(a.as_millis()) as u64,
    );
    Duration::from_millis(rng.u64(a..=b))
}

/// A connected group of about a third of the nodes (BFS from a random node), never all.
fn partition_group(t: &Topology, rng: &mut fastrand::Rng) -> Vec<usize> {
    let n = t.nodes.len();
    let want = (n / 3).max(1).min(n.saturating_sub(1));
    let start = rng.usize(0..n);
    let mut group = vec![start];
    let mut i = 0;
    while group.len() < want && i < group.len() {
        let u = group[i];
        for l in 0..t.links.len() {
            let (a, b) = t.link_ends(l);
            let v = if a == u {
                b
            } else if b == u {
                a
            } else {
                continue;
            };
            if !group.contains(&v) && group.len() < want {
                group.push(v);
            }
        }
        i += 1;
    }
    group.sort_unstable();
    group
}

/// A random fault script for `t`.
pub fn plan(t: &Topology, o: &ChaosOptions) -> Vec<Fault> {
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let mut out = Vec::new();
    let mut at = o.warmup;
    let end = o.duration.saturating_sub(o.tail);
    let n = t.nodes.len();
    let kinds: &[&str] = if o.daemons {
        &[
            "carrier",
            "carrier",
            "silent",
            "silent",
            "snr",
            "crash",
            "restart",
            "outage",
            "partition",
        ]
    } else {
        &[
            "carrier",
            "carrier",
            "silent",
            "silent",
            "snr",
            "outage",
            "partition",
        ]
    };
    loop {
        let hold = between(&mut rng, o.hold);
        if at + hold > end || t.links.is_empty() {
            break;
        }
        let kind = kinds[rng.usize(0..kinds.len())];
        let link = rng.usize(0..t.links.len());
        let node = rng.usize(0..n);
        let (start, undo) = match kind {
            "carrier" => (Action::LinkDown(link), Some(Action::LinkUp(link))),
            "silent" => (Action::LinkSilent(link), Some(Action::LinkRestore(link))),
            "snr" => {
                let before = t.initial_state(link).snr_db;
                (
                    Action::SetLink {
                        link,
                        loss: None,
                        snr_db: Some(t.radio.snr_for_loss(DIP_LOSS)),
                        rate: None,
                    },
                    Some(Action::SetLink {
                        link,
                        loss: None,
                        snr_db: Some(before),
                        rate: None,
                    }),
                )
            }
            "crash" => (Action::NodeCrash(node), Some(Action::NodeRestart(node))),
            "restart" => (Action::ControllerRestart(node), None),
            "outage" => {
                let nodes = t.outage_pick(o.outage_share, &mut rng);
                if nodes.is_empty() {
                    continue;
                }
                (
                    Action::PowerOff(nodes.clone()),
                    Some(Action::PowerOn(nodes)),
                )
            }
            _ => (
                Action::Partition(partition_group(t, &mut rng)),
                Some(Action::Heal),
            ),
        };
        out.push(Fault { at, action: start });
        if let Some(u) = undo {
            out.push(Fault {
                at: at + hold,
                action: u,
            });
        }
        at += hold + between(&mut rng, o.gap);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{random_geometric, GenOptions};

    fn topo() -> Topology {
        random_geometric(
            20,
            5.0,
            &GenOptions {
                clients: 4,
                ..GenOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn faults_are_ordered_paired_and_inside_the_run() {
        let t = topo();
        let o = ChaosOptions::default();
        let p = plan(&t, &o);
        assert!(p.len() > 40, "only {} events in 5 minutes", p.len());
        for w in p.windows(2) {
            assert!(w[0].at <= w[1].at);
        }
        assert!(p.first().unwrap().at >= o.warmup);
        assert!(p.last().unwrap().at <= o.duration - o.tail);
        // Every start is undone before the next fault starts.
        let mut open: Option<&Action> = None;
        for f in &p {
            match (&f.action, open) {
                (Action::LinkUp(a), Some(Action::LinkDown(b)))
                | (Action::LinkRestore(a), Some(Action::LinkSilent(b)))
                | (Action::NodeRestart(a), Some(Action::NodeCrash(b))) => {
                    assert_eq!(a, b);
                    open = None;
                }
                (Action::PowerOn(a), Some(Action::PowerOff(b))) => {
                    assert_eq!(a, b);
                    open = None;
                }
                (Action::Heal, Some(Action::Partition(_)))
                | (Action::SetLink { .. }, Some(Action::SetLink { .. })) => open = None,
                (Action::ControllerRestart(_), None) => {}
                (a, None) => open = Some(a),
                (a, Some(b)) => panic!("{a:?} while {b:?} is still on"),
            }
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let t = topo();
        let o = ChaosOptions::default();
        assert_eq!(plan(&t, &o), plan(&t, &o));
        assert_ne!(
            plan(&t, &o),
            plan(
                &t,
                &ChaosOptions {
                    seed: 2,
                    ..o.clone()
                }
            )
        );
    }

    #[test]
    fn without_daemons_no_daemon_faults() {
        let t = topo();
        let p = plan(
            &t,
            &ChaosOptions {
                daemons: false,
                ..ChaosOptions::default()
            },
        );
        assert!(!p.iter().any(|f| matches!(
            f.action,
            Action::NodeCrash(_) | Action::NodeRestart(_) | Action::ControllerRestart(_)
        )));
    }

    #[test]
    fn partitions_are_a_connected_minority() {
        let t = topo();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50 {
            let g = partition_group(&t, &mut rng);
            assert!(!g.is_empty() && g.len() < t.nodes.len());
            assert!(g.len() <= t.nodes.len() / 3);
        }
    }
}
