//! Human units in topology files: durations (`500ms`, `10s`, `2m`) and bit rates
//! (`100mbit`, `1gbit`, as `tc` writes them).
use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `<number><unit>` with unit `ms`, `s`, `m` or `h`; a bare number
/// means seconds. Fractions are allowed (`1.5s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

/// A bit rate in bits per second, written as `<number><unit>` with unit `bit`, `kbit`,
/// `mbit` or `gbit` (decimal multiples, as `tc` uses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(pub u64);

/// Why a unit string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("\"{0}\" is not a duration; write e.g. 500ms, 10s, 2m or 1h")]
    Duration(String),
    #[error("\"{0}\" is not a bit rate; write e.g. 500kbit, 20mbit or 1gbit")]
    Rate(String),
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let idx = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(idx);
    let n: f64 = num.parse().ok()?;
    n.is_finite().then_some((n, unit.trim()))
}

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnitError::Duration(s.to_string());
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let secs = match unit.to_ascii_lowercase().as_str() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        Duration::try_from_secs_f64(secs)
            .map(Dur)
            .map_err(|_| bad())
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) && self.0.subsec_nanos() == 0 {
            let s = ms / 1000;
            if s != 0 && s.is_multiple_of(60) {
                write!(f, "{}m", s / 60)
            } else {
                write!(f, "{s}s")
            }
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnitError::Rate(s.to_string());
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let mult = match unit.to_ascii_lowercase().as_str() {
            "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            _ => return Err(bad()),
        };
        let bits = n * mult;
        if !(1.0..=1e12).contains(&bits) {
            return Err(bad());
        }
        Ok(Rate(bits.round() as u64))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (m, u) in [
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{u}", b / m);
            }
        }
        write!(f, "{b}bit")
    }
}

/// Accepts a string with a unit or a bare number (seconds / bits per second).
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Int(i64),
    Float(f64),
}

impl StrOrNum {
    fn text(self) -> String {
        match self {
            Self::Str(s) => s,
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StrOrNum::deserialize(d)?
            .text()
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = StrOrNum::deserialize(d)?.text();
        // A bare number is bits per second.
        let t = if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            format!("{t}bit")
        } else {
            t
        };
        t.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        let d = |s: &str| s.parse::<Dur>().unwrap().0;
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("10"), Duration::from_secs(10));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("2m"), Duration::from_secs(120));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        for bad in ["", "s", "10x", "-1s", "1e3s", "ten"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_back_to_the_same_value() {
        for s in ["500ms", "10s", "2m", "1500ms", "0s"] {
            let d: Dur = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d, "{s}");
        }
        assert_eq!("120s".parse::<Dur>().unwrap().to_string(), "2m");
    }

    #[test]
    fn rates_parse_and_print() {
        let r = |s: &str| s.parse::<Rate>().unwrap().0;
        assert_eq!(r("100mbit"), 100_000_000);
        assert_eq!(r("1.5Mbit"), 1_500_000);
        assert_eq!(r("64kbit"), 64_000);
        assert_eq!(r("1gbit"), 1_000_000_000);
        assert_eq!(Rate(20_000_000).to_string(), "20mbit");
        assert_eq!(Rate(1_500_000).to_string(), "1500kbit");
        for bad in ["", "100", "100mbps", "0bit", "fastbit"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_accepts_bare_numbers() {
        #[derive(Deserialize)]
        struct T {
            d: Dur,
            r: Rate,
        }
        let t: T = toml::from_str("d = 3\nr = 2000000").unwrap();
        assert_eq!(t.d.0, Duration::from_secs(3));
        assert_eq!(t.r.0, 2_000_000);
    }
}
