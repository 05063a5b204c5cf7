//! Readings from the kernel's own accounting (nstat, `ip -s -s link`) and facts about the
//! machine, used as evidence that the benchmark's packets really went where it claims.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use dcmesh_testbed::Netns;

/// Value of the SNMP counter `name` in `nstat -asz` output (absolute, zeros shown).
pub fn parse_nstat(output: &str, name: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == name).then(|| f.next()?.parse().ok())?
    })
}

/// An SNMP counter of `ns` (e.g. `IpForwDatagrams`), absolute.
pub fn nstat(ns: &Netns, name: &str) -> Result<u64> {
    // -a absolute, -s keep nstat's history file untouched, -z print zeros.
    let out = ns.exec("nstat", &["-asz", name])?;
    parse_nstat(&String::from_utf8_lossy(&out.stdout), name)
        .with_context(|| format!("nstat printed no {name} in {}", ns.name()))
}

/// Numeric interface statistics from `ip -s -s -j link show` output, keyed
/// `rx.packets`, `rx.dropped`, `rx.otherhost`, `tx.packets`, ... (whatever this iproute2
/// version reports).
pub fn parse_link_stats(json: &str) -> Result<BTreeMap<String, u64>> {
    let v: serde_json::Value = serde_json::from_str(json).context("parse `ip -j` output")?;
    let stats = v
        .get(0)
        .and_then(|l| l.get("stats64"))
        .context("`ip -s -j link` printed no stats64")?;
    let mut out = BTreeMap::new();
    for dir in ["rx", "tx"] {
        if let Some(obj) = stats.get(dir).and_then(|d| d.as_object()) {
            for (k, x) in obj {
                if let Some(n) = x.as_u64() {
                    out.insert(format!("{dir}.{k}"), n);
                }
            }
        }
    }
    Ok(out)
}

/// Interface statistics of `dev` in `ns`.
pub fn link_stats(ns: &Netns, dev: &str) -> Result<BTreeMap<String, u64>> {
    let out = ns.ip(&["-s", "-s", "-j", "link", "show", "dev", dev])?;
    parse_link_stats(&String::from_utf8_lossy(&out.stdout))
}

/// Counters that grew between two readings, as `name +delta` (sorted by name).
pub fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let d = a.saturating_sub(*before.get(k).unwrap_or(&0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Kernel release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU model and count.
pub fn cpu() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {n} CPUs")
}

/// `git describe --always --dirty` of the source tree this binary was built from.
pub fn commit() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    std::process::Command::new("git")
        .args(["-C", dir, "describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nstat_lines() {
        let out =
            "#kernel\nIpForwDatagrams                 1234               0.0\nIpInReceives 9 0.0\n";
        assert_eq!(parse_nstat(out, "IpForwDatagrams"), Some(1234));
        assert_eq!(parse_nstat(out, "IpInReceives"), Some(9));
        assert_eq!(parse_nstat(out, "IpOutRequests"), None);
        assert_eq!(parse_nstat("IpForwDatagrams x", "IpForwDatagrams"), None);
    }

    #[test]
    fn link_stats_json() {
        let j = r#"[{"ifname":"r0","stats64":{"rx":{"bytes":10,"packets":2,"dropped":1,"otherhost":3},
                    "tx":{"bytes":0,"packets":0,"dropped":0}}}]"#;
        let s = parse_link_stats(j).unwrap();
        assert_eq!(s["rx.packets"], 2);
        assert_eq!(s["rx.otherhost"], 3);
        assert_eq!(s["tx.dropped"], 0);
        assert!(parse_link_stats("[]").is_err());
        assert!(parse_link_stats("not json").is_err());
    }

    #[test]
    fn grown_counters() {
        let a: BTreeMap<String, u64> = [("rx.packets".into(), 5), ("rx.dropped".into(), 1)].into();
        let b: BTreeMap<String, u64> = [
            ("rx.packets".into(), 9),
            ("rx.dropped".into(), 1),
            ("tx.packets".into(), 2),
        ]
        .into();
        assert_eq!(
            grown(&a, &b),
            vec![("rx.packets".into(), 4), ("tx.packets".into(), 2)]
        );
    }
}
