//! Link metrics: delivery ratios from hellos, ETX, and the SNR penalties.
//!
//! # Delivery ratios and ETX
//! Each node sends a hello every `interval` on each mesh interface, numbered by a 16-bit
//! sequence number. For every neighbour, [`HelloWindow`] remembers which of the last
//! [`WINDOW`] (16) sequence numbers arrived. Only hellos known lost count: those
//! skipped by a later one. A neighbour that falls silent keeps its ratio until the dead
//! timer declares it lost, so its loss reaches the mesh as one event. Had the ratio
//! decayed with each overdue hello, a silent link would first be advertised as costlier
//! (nodes move some routes) and then as gone (they move them again); in a partition
//! every node does both at slightly different times, two rounds of disagreement in
//! which microloops form. Losses on a working link still count as soon as the next
//! hello arrives. The reverse ratio `dr` is what we measure from the neighbour; the forward
//! ratio `df` is what the neighbour measured from us and reported in its own hello.
//! Senders number hellos from a random start, so a jump forward by more than
//! [`MAX_GAP`] or backwards past the window means the sender restarted: the window
//! starts afresh instead of counting the jump as losses.
//!
//! `ETX = 1 / (df · dr)` is the expected number of transmissions (with link-layer
//! acknowledgement) to get one frame across; a perfect link has ETX 1.
//!
//! # The cost
//! ```text
//! cost = 256 · ETX · P_margin · P_trend           (1/256 ETX units, rounded, ≤ MAX_COST)
//! P_margin = 1 + 3 · clamp((snr_good − snr) / (snr_good − snr_min), 0, 1)
//! P_trend  = 1 + clamp((horizon − t_floor) / horizon, 0, 1)   when SNR is falling,
//!            t_floor = (snr − snr_min) / (−slope) seconds until the SNR reaches snr_min
//! ```
//! Reasoning: ETX only sees losses that already happened, averaged over 16 s. SNR tells
//! where the link is on the modulation cliff: with a comfortable margin (≥ `snr_good`,
//! default 25 dB) a fade costs nothing, so there is no penalty; at `snr_min` (default
//! 10 dB, where the lowest rate starts to fail) a small fade loses frames, so the link
//! costs up to 4× (an otherwise perfect but marginal link then loses against a path of
//! up to three good hops). A falling SNR that will reach `snr_min` within `horizon`
//! (default 30 s) doubles the cost at worst, which moves traffic *before* ETX degrades;
//! a steady or rising SNR adds nothing. Without an SNR reading both factors are 1.
//! The cost never decreases when df, dr or snr decrease or the SNR falls faster
//! (property-tested below).

/// Hellos remembered per neighbour.
pub const WINDOW: u32 = 16;
/// A forward jump in hello numbers larger than this is taken as a restart of the sender.
pub const MAX_GAP: u32 = 64;
/// Cost of a perfect link.
pub const UNIT_COST: u32 = 256;
/// Largest finite cost (a route of many such links still fits in a u64 sum).
pub const MAX_COST: u32 = 0x00ff_ffff;

/// Which recent hellos of one neighbour arrived, by sequence number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelloWindow {
    /// Bit i set: hello `last_seq - i` arrived.
    bits: u32,
    last_seq: u16,
    /// Sequence numbers covered so far (≤ WINDOW), so a new neighbour is not penalised
    /// for hellos sent before it was heard.
    span: u32,
    /// When the newest hello arrived, in milliseconds of the caller's clock.
    last_at_ms: u64,
}

impl HelloWindow {
    /// Records hello `seq` received at `now_ms`. Returns true when the numbering jumped
    /// so far that the sender must have restarted (the window then starts afresh).
    pub fn record(&mut self, seq: u16, now_ms: u64) -> bool {
        if self.span == 0 {
            self.bits = 1;
            self.last_seq = seq;
            self.span = 1;
            self.last_at_ms = now_ms;
            return false;
        }
        let ahead = seq.wrapping_sub(self.last_seq);
        if ahead == 0 {
            return false; // duplicate
        }
        let back = self.last_seq.wrapping_sub(seq);
        if (ahead < 0x8000 && u32::from(ahead) > MAX_GAP)
            || (ahead >= 0x8000 && u32::from(back) >= WINDOW)
        {
            // The sender restarted (its numbering starts at random) or we missed far
            // more than a neighbour's lifetime of hellos: start a fresh window rather
            // than count the jump as losses or ignore everything as old.
            *self = Self::default();
            self.record(seq, now_ms);
            return true;
        }
        if ahead < 0x8000 {
            let ahead = u32::from(ahead);
            self.bits = if ahead >= 32 { 0 } else { self.bits << ahead };
            self.bits |= 1;
            self.span = (self.span + ahead).min(WINDOW);
            self.last_seq = seq;
            self.last_at_ms = now_ms;
        } else if u32::from(back) < self.span {
            // Reordered, and within what we have counted (`back` < WINDOW here); one
            // from before we first heard the neighbour is ignored.
            self.bits |= 1 << u32::from(back);
        }
        false
    }

    /// Fraction of the window's hellos received (0..=1), counting as lost only those a
    /// later hello skipped (see the module docs).
    pub fn ratio(&self) -> f64 {
        if self.span == 0 {
            return 0.0;
        }
        let mask = (1u64 << WINDOW) - 1;
        let got = (u64::from(self.bits) & mask).count_ones();
        f64::from(got) / f64::from(self.span)
    }

    /// When the newest hello arrived (caller's clock, ms).
    pub fn last_heard_ms(&self) -> u64 {
        self.last_at_ms
    }
}

/// A ratio in (0, 1] to the 1/65535 wire form.
pub fn ratio_to_wire(r: f64) -> u16 {
    (r.clamp(0.0, 1.0) * 65535.0).round() as u16
}

/// The wire form back to a ratio.
pub fn ratio_from_wire(r: u16) -> f64 {
    f64::from(r) / 65535.0
}

/// ETX from both delivery ratios; `None` when either is zero (no usable link).
pub fn etx(df: f64, dr: f64) -> Option<f64> {
    let p = df.clamp(0.0, 1.0) * dr.clamp(0.0, 1.0);
    (p > 0.0).then(|| 1.0 / p)
}

/// SNR thresholds and trend horizon (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnrPolicy {
    /// dB at and above which there is no margin penalty.
    pub good_db: f64,
    /// dB at which the margin penalty is full (4×).
    pub min_db: f64,
    /// Seconds: a falling SNR expected to reach `min_db` within this time is penalised.
    pub horizon_s: f64,
}

impl Default for SnrPolicy {
    fn default() -> Self {
        Self {
            good_db: 25.0,
            min_db: 10.0,
            horizon_s: 30.0,
        }
    }
}

/// The SNR state of a link: current value (dB) and slope (dB/s).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snr {
    pub db: f64,
    pub slope_db_s: f64,
}

/// Margin penalty factor in [1, 4].
pub fn margin_penalty(snr_db: f64, p: &SnrPolicy) -> f64 {
    let span = (p.good_db - p.min_db).max(f64::EPSILON);
    1.0 + 3.0 * ((p.good_db - snr_db) / span).clamp(0.0, 1.0)
}

/// Trend penalty factor in [1, 2].
pub fn trend_penalty(snr: Snr, p: &SnrPolicy) -> f64 {
    if snr.slope_db_s >= 0.0 || p.horizon_s <= 0.0 {
        return 1.0;
    }
    let t_floor = ((snr.db - p.min_db) / -snr.slope_db_s).max(0.0);
    1.0 + ((p.horizon_s - t_floor) / p.horizon_s).clamp(0.0, 1.0)
}

/// The link cost in 1/256 ETX units; `None` when the link is unusable.
pub fn cost(df: f64, dr: f64, snr: Option<Snr>, p: &SnrPolicy) -> Option<u32> {
    let e = etx(df, dr)?;
    let f = snr.map_or(1.0, |s| margin_penalty(s.db, p) * trend_penalty(s, p));
    let c = (f64::from(UNIT_COST) * e * f).round();
    Some(if c >= f64::from(MAX_COST) {
        MAX_COST
    } else {
        c as u32
    })
}

/// Least-squares slope (dB/s) of SNR samples `(seconds, dB)`; 0 with fewer than two
/// distinct times. The daemon keeps the samples of the last 10 s.
pub fn snr_slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mt = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, y) in samples {
        num += (t - mt) * (y - my);
        den += (t - mt) * (t - mt);
    }
    if den <= f64::EPSILON {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_counts_received_hellos() {
        let mut w = HelloWindow::default();
        assert_eq!(w.ratio(), 0.0);
        w.record(10, 0);
        assert_eq!(w.ratio(), 1.0, "a new neighbour starts perfect");
        // Every other hello lost.
        let mut t = 0;
        for s in (12..12 + 2 * WINDOW as u16).step_by(2) {
            t += 2000;
            w.record(s, t);
        }
        assert_eq!(w.ratio(), 0.5);
        // Reordered late hello fills its hole.
        let last = 10 + 2 * WINDOW as u16;
        w.record(last - 1, t);
        assert_eq!(w.ratio(), 9.0 / 16.0);
        // Duplicates change nothing.
        w.record(last, t);
        assert_eq!(w.ratio(), 9.0 / 16.0);
    }

    #[test]
    fn a_restarted_sender_starts_a_fresh_window() {
        for restart_seq in [1000u16, 0, 65000] {
            let mut w = HelloWindow::default();
            for (i, s) in (100u16..110).enumerate() {
                w.record(s, i as u64 * 1000);
            }
            assert!(w.record(restart_seq, 10_000), "restart at {restart_seq}");
            assert_eq!(w.ratio(), 1.0, "restart at {restart_seq}");
            w.record(restart_seq.wrapping_add(1), 11_000);
            assert_eq!(w.ratio(), 1.0);
        }
        // A real gap of lost hellos still counts as losses.
        let mut w = HelloWindow::default();
        w.record(10, 0);
        assert!(!w.record(14, 4000));
        assert_eq!(w.ratio(), 2.0 / 5.0);
    }

    #[test]
    fn silence_is_not_loss_and_wraps_are_handled() {
        let mut w = HelloWindow::default();
        let mut t = 0;
        for i in 0..WINDOW as u16 {
            w.record(65530u16.wrapping_add(i), t);
            t += 1000;
        }
        assert_eq!(w.ratio(), 1.0);
        // However long it is silent (the dead timer handles that), nothing is lost yet;
        // the hellos a later one skips are.
        assert_eq!(w.last_heard_ms(), t - 1000);
        w.record(65530u16.wrapping_add(WINDOW as u16 + 3), t + 3000);
        assert_eq!(w.ratio(), 13.0 / 16.0);
    }

    #[test]
    fn a_reordered_hello_from_before_the_first_is_ignored() {
        let mut w = HelloWindow::default();
        w.record(10, 0);
        w.record(9, 10);
        assert_eq!(w.ratio(), 1.0);
        w.record(12, 2000);
        w.record(11, 2010);
        assert_eq!(w.ratio(), 1.0);
    }

    #[test]
    fn etx_and_cost_of_known_links() {
        let p = SnrPolicy::default();
        assert_eq!(cost(1.0, 1.0, None, &p), Some(256));
        assert_eq!(cost(0.5, 1.0, None, &p), Some(512));
        assert_eq!(cost(0.5, 0.5, None, &p), Some(1024));
        assert_eq!(cost(0.0, 1.0, None, &p), None);
        let good = Snr {
            db: 30.0,
            slope_db_s: 0.0,
        };
        assert_eq!(cost(1.0, 1.0, Some(good), &p), Some(256));
        let floor = Snr {
            db: 10.0,
            slope_db_s: 0.0,
        };
        assert_eq!(cost(1.0, 1.0, Some(floor), &p), Some(1024));
        let mid = Snr {
            db: 17.5,
            slope_db_s: 0.0,
        };
        assert_eq!(cost(1.0, 1.0, Some(mid), &p), Some(640));
        // 20 dB falling 1 dB/s: floor in 10 s, penalty 1 + 20/30.
        let falling = Snr {
            db: 20.0,
            slope_db_s: -1.0,
        };
        let expect = 256.0 * margin_penalty(20.0, &p) * (1.0 + 20.0 / 30.0);
        assert_eq!(
            cost(1.0, 1.0, Some(falling), &p),
            Some(expect.round() as u32)
        );
    }

    #[test]
    fn slope_of_a_line() {
        let s: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 30.0 - 0.5 * f64::from(i)))
            .collect();
        assert!((snr_slope(&s) + 0.5).abs() < 1e-9);
        assert_eq!(snr_slope(&s[..1]), 0.0);
    }

    proptest! {
        #[test]
        fn cost_never_improves_as_the_link_worsens(
            df in 0.01f64..1.0, dr in 0.01f64..1.0, d1 in 0.0f64..0.5, d2 in 0.0f64..0.5,
            snr in -5.0f64..40.0, dsnr in 0.0f64..20.0,
            slope in -5.0f64..2.0, dslope in 0.0f64..3.0,
        ) {
            let p = SnrPolicy::default();
            let base = cost(df, dr, Some(Snr { db: snr, slope_db_s: slope }), &p).unwrap();
            let worse_df = cost((df - d1).max(0.001), dr, Some(Snr { db: snr, slope_db_s: slope }), &p).unwrap();
            let worse_dr = cost(df, (dr - d2).max(0.001), Some(Snr { db: snr, slope_db_s: slope }), &p).unwrap();
            let worse_snr = cost(df, dr, Some(Snr { db: snr - dsnr, slope_db_s: slope }), &p).unwrap();
            let worse_trend = cost(df, dr, Some(Snr { db: snr, slope_db_s: slope - dslope }), &p).unwrap();
            prop_assert!(worse_df >= base);
            prop_assert!(worse_dr >= base);
            prop_assert!(worse_snr >= base, "snr {} -> {}: {} < {}", snr, snr - dsnr, worse_snr, base);
            prop_assert!(worse_trend >= base);
            prop_assert!(base >= UNIT_COST);
        }

        #[test]
        fn ratio_is_a_fraction(
            start in any::<u16>(),
            steps in proptest::collection::vec((-20i16..40, 0u64..5000), 0..64),
        ) {
            // Small steps both ways: reordering, duplicates, gaps and restarts.
            let mut w = HelloWindow::default();
            let (mut s, mut t) = (start, 0);
            for (d, dt) in steps {
                s = s.wrapping_add_signed(d);
                t += dt;
                w.record(s, t);
                let r = w.ratio();
                prop_assert!((0.0..=1.0).contains(&r), "ratio {}", r);
            }
        }
    }
}
