//! Summaries of repeated measurements and the per-packet cost arithmetic of
//! `shared/notes/bench.md`.

/// Minimum, median and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples or a sample that is not a finite number.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Self {
            min: s[0],
            median,
            max: s[n - 1],
        })
    }
}

/// Nanoseconds per packet at `mpps` million packets per second.
pub fn ns_per_packet(mpps: f64) -> f64 {
    1e3 / mpps
}

/// What a router adds to each packet, in ns: `1/chain − 1/direct`, where `direct` is the
/// rate of the same generator straight into the sink. On one CPU the chain's per-packet
/// time is the sum of its stages, so this isolates the router.
pub fn router_cost_ns(chain_mpps: f64, direct_mpps: f64) -> f64 {
    ns_per_packet(chain_mpps) - ns_per_packet(direct_mpps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_odd_even_and_unordered() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn costs_match_the_reference_figures() {
        // bench.md: direct 7.15 Mpps (~140 ns), redirect-only chain 4.25 Mpps (~235 ns).
        let c = router_cost_ns(4.25, 7.15);
        assert!((c - 95.4).abs() < 0.5, "{c}");
        assert!((ns_per_packet(1.26) - 793.7).abs() < 0.1);
        assert_eq!(router_cost_ns(5.0, 5.0), 0.0);
    }
}
