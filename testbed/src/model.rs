//! Radio path-loss model: distance → SNR → frame loss.
//!
//! The testbed has no radios, so links get their SNR and loss from a model that is simple
//! enough to check by hand and shaped like what community meshes see outdoors:
//!
//! 1. **Path loss** (log-distance model, the textbook form of e.g. Rappaport ch. 4):
//!    `PL(d) = FSPL(d0) + 10·n·log10(d / d0)` dB for `d ≥ d0`, with the reference distance
//!    `d0 = 1 m`, free-space loss at the reference `FSPL(d0) = 20·log10(4π·d0·f / c)`, and the
//!    path-loss exponent `n` (2 in free space, about 2.7–3.5 outdoors with obstructions).
//!    Closer than `d0` the loss is `FSPL(d0)`.
//! 2. **SNR**: `SNR = P_tx + G_tx + G_rx − PL(d) − N`, where the noise floor
//!    `N = −174 dBm/Hz + 10·log10(B) + NF` (thermal noise over bandwidth `B` plus the
//!    receiver's noise figure).
//! 3. **Frame loss** from SNR: the waterfall curve of one fixed modulation and coding rate,
//!    approximated by a logistic function, `loss(SNR) = 1 / (1 + exp((SNR − SNR50) / w))`:
//!    half the frames are lost at `SNR50`, and each `w` dB more divides the odds of a loss by
//!    e. With the defaults (SNR50 = 6 dB, w = 1 dB) a 10 dB link loses 1.8 % of frames,
//!    12 dB 0.25 %, 15 dB 0.012 %.
//!
//! Defaults (5.8 GHz, 20 dBm, two 10 dBi antennas, 20 MHz, NF 7 dB, n = 3) give
//! `SNR(d) ≈ 86.3 − 30·log10(d / 1 m)` dB: 26 dB at 100 m, 10 dB at 350 m — the scale of a
//! neighbourhood mesh on rooftops.
use serde::{Deserialize, Serialize};

/// Speed of light in m/s.
const C: f64 = 299_792_458.0;

/// Parameters of the path-loss model. Every field has a documented default.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RadioModel {
    /// Carrier frequency in MHz.
    pub freq_mhz: f64,
    /// Transmit power in dBm.
    pub tx_power_dbm: f64,
    /// Sum of both antenna gains in dBi.
    pub antenna_gain_dbi: f64,
    /// Channel bandwidth in MHz (sets the thermal noise).
    pub bandwidth_mhz: f64,
    /// Receiver noise figure in dB.
    pub noise_figure_db: f64,
    /// Path-loss exponent `n` (2 = free space).
    pub exponent: f64,
    /// SNR in dB at which half the frames are lost.
    pub snr50_db: f64,
    /// Width of the loss waterfall in dB (see the module docs).
    pub width_db: f64,
}

impl Default for RadioModel {
    fn default() -> Self {
        Self {
            freq_mhz: 5800.0,
            tx_power_dbm: 20.0,
            antenna_gain_dbi: 20.0,
            bandwidth_mhz: 20.0,
            noise_figure_db: 7.0,
            exponent: 3.0,
            snr50_db: 6.0,
            width_db: 1.0,
        }
    }
}

/// Why model parameters were refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("radio.{field} = {value}: {why}")]
    Bad {
        field: &'static str,
        value: f64,
        why: &'static str,
    },
}

impl RadioModel {
    /// Checks every parameter is finite and physically meaningful.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("freq_mhz", self.freq_mhz),
            ("bandwidth_mhz", self.bandwidth_mhz),
            ("exponent", self.exponent),
            ("width_db", self.width_db),
        ];
        for (field, value) in positive {
            if !value.is_finite() || value <= 0.0 {
                return Err(ModelError::Bad {
                    field,
                    value,
                    why: "must be a positive number",
                });
            }
        }
        for (field, value) in [
            ("tx_power_dbm", self.tx_power_dbm),
            ("antenna_gain_dbi", self.antenna_gain_dbi),
            ("noise_figure_db", self.noise_figure_db),
            ("snr50_db", self.snr50_db),
        ] {
            if !value.is_finite() {
                return Err(ModelError::Bad {
                    field,
                    value,
                    why: "must be a finite number",
                });
            }
        }
        Ok(())
    }

    /// Path loss in dB at `distance_m` metres.
    pub fn path_loss_db(&self, distance_m: f64) -> f64 {
        let d0 = 1.0;
        let f = self.freq_mhz * 1e6;
        let fspl_d0 = 20.0 * (4.0 * std::f64::consts::PI * d0 * f / C).log10();
        fspl_d0 + 10.0 * self.exponent * (distance_m.max(d0) / d0).log10()
    }

    /// Noise floor in dBm.
    pub fn noise_dbm(&self) -> f64 {
        -174.0 + 10.0 * (self.bandwidth_mhz * 1e6).log10() + self.noise_figure_db
    }

    /// SNR in dB at `distance_m` metres.
    pub fn snr_db(&self, distance_m: f64) -> f64 {
        self.tx_power_dbm + self.antenna_gain_dbi - self.path_loss_db(distance_m) - self.noise_dbm()
    }

    /// Frame loss probability (0..=1) at `snr_db`.
    pub fn loss(&self, snr_db: f64) -> f64 {
        let x = (snr_db - self.snr50_db) / self.width_db;
        1.0 / (1.0 + x.exp())
    }

    /// The SNR (dB) at which frame loss equals `loss` (0 < loss < 1): the inverse of
    /// [`RadioModel::loss`].
    pub fn snr_for_loss(&self, loss: f64) -> f64 {
        self.snr50_db + self.width_db * ((1.0 - loss) / loss).ln()
    }

    /// The largest distance in metres at which frame loss is at most `loss`.
    pub fn range_m(&self, loss: f64) -> f64 {
        let snr = self.snr_for_loss(loss);
        let budget = self.tx_power_dbm + self.antenna_gain_dbi - self.noise_dbm() - snr;
        let over = budget - self.path_loss_db(1.0);
        10f64.powf(over / (10.0 * self.exponent)).max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    #[test]
    fn free_space_reference_matches_the_textbook_value() {
        // FSPL at 1 m, 5.8 GHz: 20·log10(4π·5.8e9/c) = 47.71 dB.
        let m = RadioModel::default();
        assert!(
            close(m.path_loss_db(1.0), 47.71, 0.01),
            "{}",
            m.path_loss_db(1.0)
        );
        // 2.4 GHz: 40.05 dB.
        let m24 = RadioModel {
            freq_mhz: 2400.0,
            ..m
        };
        assert!(close(m24.path_loss_db(1.0), 40.05, 0.01));
    }

    #[test]
    fn path_loss_grows_by_10n_db_per_decade() {
        let m = RadioModel::default();
        let step = m.path_loss_db(1000.0) - m.path_loss_db(100.0);
        assert!(close(step, 30.0, 1e-9), "{step}");
        // Below the reference distance the loss stays at the reference value.
        assert_eq!(m.path_loss_db(0.1), m.path_loss_db(1.0));
    }

    #[test]
    fn noise_floor_of_a_20_mhz_channel() {
        // −174 + 73.01 + 7 = −93.99 dBm.
        assert!(close(RadioModel::default().noise_dbm(), -93.99, 0.01));
    }

    #[test]
    fn default_snr_matches_the_documented_figures() {
        let m = RadioModel::default();
        assert!(close(m.snr_db(100.0), 26.3, 0.1), "{}", m.snr_db(100.0));
        assert!(close(m.snr_db(350.0), 10.0, 0.2), "{}", m.snr_db(350.0));
    }

    #[test]
    fn loss_curve_matches_the_documented_figures() {
        let m = RadioModel::default();
        assert!(close(m.loss(6.0), 0.5, 1e-12));
        assert!(close(m.loss(10.0), 0.0180, 0.0001));
        assert!(close(m.loss(12.0), 0.00247, 0.00001));
        assert!(close(m.loss(15.0), 0.000123, 0.000001));
    }

    #[test]
    fn loss_falls_as_snr_rises_and_stays_a_probability() {
        let m = RadioModel::default();
        let mut last = 1.0;
        for tenth in -300..600 {
            let l = m.loss(tenth as f64 / 10.0);
            assert!((0.0..=1.0).contains(&l));
            assert!(l <= last, "loss rose at {tenth}");
            last = l;
        }
    }

    #[test]
    fn snr_for_loss_inverts_loss() {
        let m = RadioModel::default();
        for l in [0.001, 0.01, 0.1, 0.5, 0.9] {
            assert!(close(m.loss(m.snr_for_loss(l)), l, 1e-9));
        }
    }

    #[test]
    fn range_is_where_loss_reaches_the_bound() {
        let m = RadioModel::default();
        let r = m.range_m(0.1);
        assert!(close(m.loss(m.snr_db(r)), 0.1, 1e-6));
        assert!(m.loss(m.snr_db(r * 0.9)) < 0.1);
        assert!(m.loss(m.snr_db(r * 1.1)) > 0.1);
    }

    #[test]
    fn validation_names_the_field() {
        let m = RadioModel {
            exponent: 0.0,
            ..RadioModel::default()
        };
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("radio.exponent"));
        let m = RadioModel {
            tx_power_dbm: f64::NAN,
            ..RadioModel::default()
        };
        assert!(m.validate().is_err());
        assert!(RadioModel::default().validate().is_ok());
    }
}
