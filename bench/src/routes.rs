//! A large, reproducible IPv4 route table and destinations that hit it.
//!
//! The prefix-length mix roughly follows a public BGP table (most prefixes /24, the rest
//! /16–/23), so the LPM trie the forwarder walks has a realistic depth. Everything comes
//! from a seeded generator: two runs of the benchmark load the very same table.
use std::{collections::HashSet, net::Ipv4Addr};

use ipnet::Ipv4Net;

/// Prefix lengths and their weights in percent (sum 100).
const LENGTH_MIX: [(u8, u32); 9] = [
    (16, 2),
    (17, 1),
    (18, 2),
    (19, 4),
    (20, 6),
    (21, 6),
    (22, 10),
    (23, 9),
    (24, 60),
];

/// Ranges no generated route may touch: this-network, the benchmark's own links (10/8),
/// loopback, link-local (the forwarder hands those to the kernel), the benchmarking range
/// 198.18/15 used by the one-route cases, and multicast/reserved (224/3).
pub fn reserved() -> Vec<Ipv4Net> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/3",
    ]
    .iter()
    .map(|s| s.parse().expect("valid literal"))
    .collect()
}

/// A route table and the destinations the generator cycles through.
#[derive(Clone, Debug)]
pub struct RouteSet {
    /// Distinct prefixes, host bits clear, none overlapping [`reserved`].
    pub prefixes: Vec<Ipv4Net>,
    /// Distinct host addresses, each inside at least one of `prefixes`.
    pub destinations: Vec<Ipv4Addr>,
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn pick_length(rng: &mut fastrand::Rng) -> u8 {
    let mut x = rng.u32(0..100);
    for (len, w) in LENGTH_MIX {
        if x < w {
            return len;
        }
        x -= w;
    }
    24
}

/// `routes` distinct random prefixes and `destinations` distinct addresses inside them
/// (each in a different, randomly chosen prefix), from `seed`.
///
/// Panics if `destinations > routes` (a programming error, not input).
pub fn generate(routes: usize, destinations: usize, seed: u64) -> RouteSet {
    assert!(destinations <= routes, "more destinations than routes");
    let mut rng = fastrand::Rng::with_seed(seed);
    let reserved = reserved();
    let mut seen = HashSet::with_capacity(routes);
    let mut prefixes = Vec::with_capacity(routes);
    while prefixes.len() < routes {
        let len = pick_length(&mut rng);
        let net = Ipv4Net::new(Ipv4Addr::from(rng.u32(..)), len)
            .expect("length ≤ 32")
            .trunc();
        if reserved.iter().any(|r| overlaps(r, &net)) || !seen.insert(net) {
            continue;
        }
        prefixes.push(net);
    }
    let mut order: Vec<usize> = (0..routes).collect();
    rng.shuffle(&mut order);
    let mut taken = HashSet::with_capacity(destinations);
    let mut dests = Vec::with_capacity(destinations);
    for i in order {
        if dests.len() == destinations {
            break;
        }
        let net = prefixes[i];
        // A host address: neither the all-zeros nor the all-ones host part (len ≤ 24 here).
        let hosts = (1u64 << (32 - net.prefix_len())) - 2;
        let addr = Ipv4Addr::from(u32::from(net.network()) + 1 + rng.u64(..hosts) as u32);
        if taken.insert(addr) {
            dests.push(addr);
        }
    }
    RouteSet {
        prefixes,
        destinations: dests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_distinct_and_clear_of_reserved_ranges() {
        let s = generate(20_000, 4_000, 7);
        assert_eq!(s.prefixes.len(), 20_000);
        assert_eq!(s.destinations.len(), 4_000);
        let unique: HashSet<_> = s.prefixes.iter().collect();
        assert_eq!(unique.len(), s.prefixes.len());
        let unique: HashSet<_> = s.destinations.iter().collect();
        assert_eq!(unique.len(), s.destinations.len());
        for p in &s.prefixes {
            assert_eq!(*p, p.trunc(), "{p} has host bits");
            for r in reserved() {
                assert!(!overlaps(p, &r), "{p} overlaps reserved {r}");
            }
        }
    }

    #[test]
    fn every_destination_hits_a_route() {
        let s = generate(5_000, 1_000, 42);
        for d in &s.destinations {
            assert!(
                s.prefixes.iter().any(|p| p.contains(d)),
                "{d} matches no route"
            );
            assert!(!reserved().iter().any(|r| r.contains(d)), "{d} reserved");
        }
    }

    #[test]
    fn reproducible_and_seed_dependent() {
        let a = generate(1_000, 100, 1);
        let b = generate(1_000, 100, 1);
        let c = generate(1_000, 100, 2);
        assert_eq!(a.prefixes, b.prefixes);
        assert_eq!(a.destinations, b.destinations);
        assert_ne!(a.prefixes, c.prefixes);
    }

    #[test]
    fn length_mix_is_mostly_slash_24() {
        assert_eq!(LENGTH_MIX.iter().map(|(_, w)| w).sum::<u32>(), 100);
        let s = generate(10_000, 10, 3);
        let n24 = s.prefixes.iter().filter(|p| p.prefix_len() == 24).count();
        // 60 % expected; a wide band keeps this deterministic test honest, not flaky.
        assert!((5_000..7_000).contains(&n24), "{n24} /24s of 10000");
        assert!(s
            .prefixes
            .iter()
            .all(|p| (16..=24).contains(&p.prefix_len())));
    }
}
