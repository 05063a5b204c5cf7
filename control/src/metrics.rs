//! Prometheus metrics (prometheus-client) and the tiny HTTP server that serves them.
//!
//! Names (all prefixed `dcmesh_`): `link_etx`, `link_snr_db`, `link_cost` (per
//! interface and neighbour), `neighbours`, `routes`, `adverts`, `adverts_sent_total`,
//! `adverts_received_total`, `adverts_duplicate_total`, `adverts_rejected_total{reason}`,
//! `hellos_rejected_total{reason}`, `spf_duration_seconds` (histogram),
//! `own_cert_valid` (0 or 1), `own_cert_expiry_timestamp_seconds`,
//! `datapath_packets_total{counter}` and `datapath_bytes_total{counter}` (the XDP
//! program's verdict counters), `route_write_errors_total`.
//!
//! TSN lanes (per interface with lanes): `lane_packets_total{interface,lane,action}` and
//! `lane_bytes_total{...}` (action: admitted, deferred, demoted, dropped, too_big, as the
//! TC program counts them, by the lane a frame was classified to),
//! `lanes_no_plan_packets_total{interface}` (frames passed while no plan was in force), and
//! `lanes_mode{interface,mode}` (1 for the active mode: admission, edt_fq, edt_etf, or
//! failed when set-up failed; 0 for the others). The lane counters live in pinned maps, so
//! after a daemon restart they resume at the kernel's totals.
use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc},
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub iface: String,
    pub neighbour: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterLabels {
    pub counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    pub interface: String,
    pub lane: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IfaceLabels {
    pub interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub interface: String,
    pub mode: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Every metric the daemon exports.
pub struct Metrics {
    pub registry: Registry,
    pub link_etx: Family<LinkLabels, FGauge>,
    pub link_snr: Family<LinkLabels, FGauge>,
    pub link_cost: Family<LinkLabels, Gauge>,
    pub neighbours: Gauge,
    pub routes: Gauge,
    pub adverts: Gauge,
    pub adverts_sent: Counter,
    pub adverts_received: Counter,
    pub adverts_duplicate: Counter,
    pub adverts_rejected: Family<ReasonLabels, Counter>,
    pub hellos_rejected: Family<ReasonLabels, Counter>,
    pub spf_duration: Histogram,
    pub own_cert_valid: Gauge,
    pub own_cert_expiry: Gauge,
    pub datapath_packets: Family<CounterLabels, Counter>,
    pub datapath_bytes: Family<CounterLabels, Counter>,
    pub route_write_errors: Counter,
    pub lane_packets: Family<LaneLabels, Counter>,
    pub lane_bytes: Family<LaneLabels, Counter>,
    pub lanes_no_plan: Family<IfaceLabels, Counter>,
    pub lanes_mode: Family<ModeLabels, Gauge>,
    last_datapath: HashMap<String, (u64, u64)>,
    last_lanes: HashMap<LaneLabels, (u64, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("dcmesh");
        let m = Self {
            link_etx: Family::default(),
            link_snr: Family::default(),
            link_cost: Family::default(),
            neighbours: Gauge::default(),
            routes: Gauge::default(),
            adverts: Gauge::default(),
            adverts_sent: Counter::default(),
            adverts_received: Counter::default(),
            adverts_duplicate: Counter::default(),
            adverts_rejected: Family::default(),
            hellos_rejected: Family::default(),
            // 50 µs .. ~0.8 s
            spf_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 15),
            ),
            own_cert_valid: Gauge::default(),
            own_cert_expiry: Gauge::default(),
            datapath_packets: Family::default(),
            datapath_bytes: Family::default(),
            route_write_errors: Counter::default(),
            lane_packets: Family::default(),
            lane_bytes: Family::default(),
            lanes_no_plan: Family::default(),
            lanes_mode: Family::default(),
            last_datapath: HashMap::new(),
            last_lanes: HashMap::new(),
            registry: Registry::default(),
        };
        r.register(
            "link_etx",
            "Expected transmission count per link",
            m.link_etx.clone(),
        );
        r.register(
            "link_snr_db",
            "Signal-to-noise ratio per link, dB",
            m.link_snr.clone(),
        );
        r.register(
            "link_cost",
            "Link cost in 1/256 ETX units (ETX with SNR penalties)",
            m.link_cost.clone(),
        );
        r.register(
            "neighbours",
            "Neighbours over all mesh interfaces",
            m.neighbours.clone(),
        );
        r.register("routes", "Routes computed", m.routes.clone());
        r.register(
            "adverts",
            "Adverts in the link-state database",
            m.adverts.clone(),
        );
        r.register(
            "adverts_sent",
            "Adverts sent (originated or flooded), per interface copy",
            m.adverts_sent.clone(),
        );
        r.register(
            "adverts_received",
            "Adverts received",
            m.adverts_received.clone(),
        );
        r.register(
            "adverts_duplicate",
            "Adverts received that were already known",
            m.adverts_duplicate.clone(),
        );
        r.register(
            "adverts_rejected",
            "Adverts rejected, by reason",
            m.adverts_rejected.clone(),
        );
        r.register(
            "hellos_rejected",
            "Hellos rejected, by reason",
            m.hellos_rejected.clone(),
        );
        r.register(
            "spf_duration_seconds",
            "Route computation time",
            m.spf_duration.clone(),
        );
        r.register(
            "own_cert_valid",
            "1 while this node's certificate is valid",
            m.own_cert_valid.clone(),
        );
        r.register(
            "own_cert_expiry_timestamp_seconds",
            "Unix time at which this node's certificate expires",
            m.own_cert_expiry.clone(),
        );
        r.register(
            "datapath_packets",
            "XDP datapath packets by verdict counter",
            m.datapath_packets.clone(),
        );
        r.register(
            "datapath_bytes",
            "XDP datapath bytes by verdict counter",
            m.datapath_bytes.clone(),
        );
        r.register(
            "route_write_errors",
            "Failed datapath table updates",
            m.route_write_errors.clone(),
        );
        r.register(
            "lane_packets",
            "TSN lane packets by interface, lane (classified) and action",
            m.lane_packets.clone(),
        );
        r.register(
            "lane_bytes",
            "TSN lane bytes by interface, lane (classified) and action",
            m.lane_bytes.clone(),
        );
        r.register(
            "lanes_no_plan_packets",
            "Packets the lanes program passed untouched for want of a plan",
            m.lanes_no_plan.clone(),
        );
        r.register(
            "lanes_mode",
            "1 for the active TSN lanes mode of an interface (admission, edt_fq, edt_etf, failed)",
            m.lanes_mode.clone(),
        );
        Self { registry: r, ..m }
    }

    /// Moves `iface`'s lane counters to the kernel's totals and sets its mode.
    pub fn set_lanes(
        &mut self,
        iface: &str,
        mode: crate::lanes::ModeName,
        c: Option<&dcmesh_loader::lanes::LaneCounters>,
    ) {
        for m in crate::lanes::ModeName::ALL {
            self.lanes_mode
                .get_or_create(&ModeLabels {
                    interface: iface.into(),
                    mode: m.name().into(),
                })
                .set(i64::from(m == mode));
        }
        let Some(c) = c else { return };
        let rows = c
            .named()
            .map(|(lane, action, v)| (Some((lane, action)), v))
            .chain(std::iter::once((None, c.no_plan)));
        for (key, v) in rows {
            let labels = LaneLabels {
                interface: iface.into(),
                lane: key.map(|k| k.0.to_string()).unwrap_or_default(),
                action: key.map(|k| k.1.to_string()).unwrap_or_default(),
            };
            let last = self.last_lanes.entry(labels.clone()).or_insert((0, 0));
            let (dp, db) = (
                v.packets.saturating_sub(last.0),
                v.bytes.saturating_sub(last.1),
            );
            *last = (v.packets.max(last.0), v.bytes.max(last.1));
            if key.is_none() {
                self.lanes_no_plan
                    .get_or_create(&IfaceLabels {
                        interface: iface.into(),
                    })
                    .inc_by(dp);
                continue;
            }
            self.lane_packets.get_or_create(&labels).inc_by(dp);
            self.lane_bytes.get_or_create(&labels).inc_by(db);
        }
    }

    /// Moves the datapath counters to the kernel's totals (they only grow; a reset of
    /// the pinned maps starts the deltas again).
    pub fn set_datapath(&mut self, c: &dcmesh_loader::Counters) {
        for (ctr, v) in c.named() {
            let name = ctr.name().to_string();
            let last = self.last_datapath.entry(name.clone()).or_insert((0, 0));
            let labels = CounterLabels { counter: name };
            self.datapath_packets
                .get_or_create(&labels)
                .inc_by(v.packets.saturating_sub(last.0));
            self.datapath_bytes
                .get_or_create(&labels)
                .inc_by(v.bytes.saturating_sub(last.1));
            *last = (v.packets.max(last.0), v.bytes.max(last.1));
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

/// Serves `GET /metrics` on `addr` until the process ends. Requests are read up to
/// 8 KiB; anything else gets 404.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<std::sync::Mutex<Metrics>>,
) -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics_listen {addr}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let m = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while n < buf.len() {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        s.read(&mut buf[n..]),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                        Ok(Ok(k)) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]);
                let resp = if req.starts_with("GET /metrics ") || req.starts_with("GET /metrics?") {
                    let body = m.lock().map(|m| m.render()).unwrap_or_default();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lanes::ModeName;
    use dcmesh_loader::lanes::LaneCounters;
    use dcmesh_schema::CounterValue;
    use dcmesh_tsn::Action;

    fn sample(text: &str, key: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().parse().unwrap())
    }

    #[test]
    fn lane_counters_follow_the_kernel_totals() {
        let mut m = Metrics::new();
        let mut c = LaneCounters::default();
        c.lanes[0][Action::Admitted as usize] = CounterValue {
            packets: 5,
            bytes: 500,
        };
        c.no_plan.packets = 2;
        m.set_lanes("mesh0", ModeName::Admission, Some(&c));
        c.lanes[0][Action::Admitted as usize].packets = 8;
        c.lanes[3][Action::Dropped as usize].packets = 1;
        m.set_lanes("mesh0", ModeName::Admission, Some(&c));
        let t = m.render();
        let k = |lane: u8, a: &str| {
            format!(
                "dcmesh_lane_packets_total{{interface=\"mesh0\",lane=\"{lane}\",action=\"{a}\"}} "
            )
        };
        assert_eq!(sample(&t, &k(0, "admitted")), Some(8.0), "{t}");
        assert_eq!(sample(&t, &k(3, "dropped")), Some(1.0));
        assert_eq!(sample(&t, &k(1, "demoted")), Some(0.0));
        assert_eq!(
            sample(
                &t,
                "dcmesh_lane_bytes_total{interface=\"mesh0\",lane=\"0\",action=\"admitted\"} "
            ),
            Some(500.0)
        );
        assert_eq!(
            sample(
                &t,
                "dcmesh_lanes_no_plan_packets_total{interface=\"mesh0\"} "
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                "dcmesh_lanes_mode{interface=\"mesh0\",mode=\"admission\"} "
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                "dcmesh_lanes_mode{interface=\"mesh0\",mode=\"failed\"} "
            ),
            Some(0.0)
        );
        // A failed interface: mode only, no counters.
        m.set_lanes("mesh1", ModeName::Failed, None);
        let t = m.render();
        assert_eq!(
            sample(
                &t,
                "dcmesh_lanes_mode{interface=\"mesh1\",mode=\"failed\"} "
            ),
            Some(1.0)
        );
        assert!(!t.contains("interface=\"mesh1\",lane="));
    }
}
