//! SNR source `nl80211`: each peer station's received signal and the channel's noise
//! floor, read from the kernel's wireless stack (cfg80211) over generic netlink.
//!
//! # What is read
//! Every hello interval, per interface configured with `snr = { source = "nl80211" }`,
//! a background task (never the daemon's event loop) asks the kernel for
//! - a station dump (`NL80211_CMD_GET_STATION` with `NLM_F_DUMP` for the interface's
//!   ifindex): per peer station its MAC and its received signal, dBm: the driver's
//!   moving average `NL80211_STA_INFO_SIGNAL_AVG` when present and plausible, else the
//!   last frame's `NL80211_STA_INFO_SIGNAL`;
//! - a survey dump (`NL80211_CMD_GET_SURVEY`): the entry flagged
//!   `NL80211_SURVEY_INFO_IN_USE` (the channel the interface is on) gives the noise
//!   floor `NL80211_SURVEY_INFO_NOISE`, dBm.
//!
//! Each dump must answer within [`poll_timeout`] (half the hello interval, 100 ms to
//! 1 s); a dump that does not is counted as a `timeout` failure and the socket is
//! opened afresh on the next poll.
//!
//! # The formula
//! ```text
//! snr_db = signal_dbm − noise_dbm
//! ```
//! - When the driver reports no noise (no survey support, no entry marked in use, or an
//!   implausible value), `noise_dbm` is the interface's `default_noise_dbm` (default
//!   −95 dBm), and the log says so once per interface. −95 dBm is the thermal noise of a
//!   20 MHz channel (kTB = −174 dBm/Hz + 10·log10(20 MHz) ≈ −101 dBm) plus the 5–7 dB
//!   noise figure of a typical 802.11 receiver. Wider channels collect more noise: use
//!   −92 dBm for 40 MHz and −89 dBm for 80 MHz, or the SNR reads 3–6 dB too high.
//! - A signal of 0 dBm or more is not a measurement (drivers that do not measure report
//!   0), nor is one below −120 dBm (beneath any 802.11 receiver's sensitivity): the
//!   average is then replaced by the last frame's signal, and a station with neither
//!   gives no reading (counted as `no_signal`).
//! - A noise value of 0 dBm or more, or below −120 dBm, is treated as not reported.
//! - Noise at or above the signal (SNR ≤ 0 dB): the frame was decoded, but the link has
//!   no margin left, so the reading is 0 dB (counted as `noise_above_signal`); that
//!   already gives the metric's largest margin penalty, and a miscalibrated noise value
//!   does not swing the SNR trend far below zero.
//! - A station inactive for longer than the dead interval gives no reading
//!   (`inactive`): its signal average describes a link we no longer hear.
//!
//! Readings go to [`Neighbours::set_snr`] keyed by the station's MAC, exactly like the
//! file source; the neighbour table matches them to the MAC in each neighbour's hellos.
//! A neighbour with no fresh reading for `dead_interval_ms` loses its SNR
//! ([`Neighbours::expire_snr`]): its cost falls back to plain ETX rather than keep a
//! stale value.
//!
//! # Failures
//! At start ([`check_start`]) the generic netlink family "nl80211" must resolve and
//! every nl80211 interface must answer a station dump, or the daemon refuses to start
//! with an error naming the interface. While running, a failed poll is a log line
//! (when the failure starts and when it ends, not every poll) and a count in
//! `dcmesh_snr_nl80211_polls_failed_total{iface,reason}`; its interface gets no
//! readings until polls succeed again.
//!
//! Metrics: `dcmesh_snr_nl80211_polls_failed_total{iface,reason}` (reasons
//! `family_absent`, `not_wireless`, `permission`, `timeout`, `netlink`, `socket`,
//! `decode`), `dcmesh_snr_nl80211_stations_skipped_total{iface,reason}` (`no_signal`,
//! `inactive`), `dcmesh_snr_nl80211_noise_above_signal_total{iface}`,
//! `dcmesh_snr_nl80211_noise_floor_dbm{iface}` (the floor in use, measured or
//! default) and `dcmesh_snr_nl80211_noise_defaulted{iface}` (1 while the default is in
//! use).
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::TryStreamExt;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use wl_nl80211::{
    packet_core::Nla, Nl80211Attr, Nl80211Handle, Nl80211Message, Nl80211StationInfo,
    Nl80211Survey, Nl80211SurveyInfo,
};

use crate::{
    config::{Config, SnrSource},
    neighbour::{Neighbours, SnrReading},
};

/// Noise floor assumed when the driver reports none, dBm (20 MHz channel, see the
/// module docs).
pub const DEFAULT_NOISE_DBM: f64 = -95.0;

/// Lowest plausible signal or noise value, dBm.
pub const MIN_PLAUSIBLE_DBM: i8 = -120;

/// `NL80211_SURVEY_INFO_IN_USE` (include/uapi/linux/nl80211.h): a flag attribute the
/// crate passes through as an unparsed attribute of this kind.
const NL80211_SURVEY_INFO_IN_USE: u16 = 3;

/// One peer station as nl80211 reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Station {
    pub mac: [u8; 6],
    /// `NL80211_STA_INFO_SIGNAL_AVG`, dBm.
    pub signal_avg_dbm: Option<i8>,
    /// `NL80211_STA_INFO_SIGNAL` (last frame), dBm.
    pub signal_dbm: Option<i8>,
    /// `NL80211_STA_INFO_INACTIVE_TIME`: time since the station was last heard, ms.
    pub inactive_ms: Option<u32>,
}

/// One channel of a survey dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SurveyEntry {
    /// The interface operates on this channel.
    pub in_use: bool,
    /// `NL80211_SURVEY_INFO_NOISE`, dBm.
    pub noise_dbm: Option<i8>,
}

/// The station described by one station-dump message (`None`: it names no station).
pub fn station(msg: &Nl80211Message) -> Option<Station> {
    let mut s = Station::default();
    let mut mac = None;
    for a in &msg.attributes {
        match a {
            Nl80211Attr::Mac(m) => mac = Some(*m),
            Nl80211Attr::StationInfo(info) => {
                for i in info {
                    match i {
                        Nl80211StationInfo::SignalAvg(v) => s.signal_avg_dbm = Some(*v),
                        Nl80211StationInfo::Signal(v) => s.signal_dbm = Some(*v),
                        Nl80211StationInfo::InactiveTime(v) => s.inactive_ms = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s.mac = mac?;
    Some(s)
}

/// The channel described by one survey-dump message (`None`: it carries no survey).
pub fn survey_entry(msg: &Nl80211Message) -> Option<SurveyEntry> {
    msg.attributes.iter().find_map(|a| match a {
        Nl80211Attr::SurveyInfo(info) => {
            let mut e = SurveyEntry::default();
            for i in info {
                match i {
                    Nl80211SurveyInfo::Noise(v) => e.noise_dbm = Some(*v),
                    other if other.kind() == NL80211_SURVEY_INFO_IN_USE => e.in_use = true,
                    _ => {}
                }
            }
            Some(e)
        }
        _ => None,
    })
}

fn plausible(dbm: i8) -> bool {
    (MIN_PLAUSIBLE_DBM..0).contains(&dbm)
}

/// The noise floor of the channel in use, if the driver measured a plausible one.
pub fn channel_noise(entries: &[SurveyEntry]) -> Option<i8> {
    entries
        .iter()
        .find(|e| e.in_use)
        .and_then(|e| e.noise_dbm)
        .filter(|n| plausible(*n))
}

/// How readings are made from one interface's dumps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Noise floor used when the driver reports none, dBm.
    pub default_noise_dbm: f64,
    /// Stations silent for longer than this give no reading, ms.
    pub max_inactive_ms: u64,
}

/// Why a station gave no reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Neither signal value is a plausible measurement.
    NoSignal,
    /// Not heard for longer than [`Params::max_inactive_ms`].
    Inactive,
}

impl Skip {
    pub fn name(self) -> &'static str {
        match self {
            Skip::NoSignal => "no_signal",
            Skip::Inactive => "inactive",
        }
    }
}

/// The readings one poll of one interface gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assessment {
    /// One per usable station, `mac` always set.
    pub readings: Vec<SnrReading>,
    pub skipped: Vec<([u8; 6], Skip)>,
    /// The noise floor used, dBm.
    pub noise_dbm: f64,
    /// `noise_dbm` is the configured default (the driver reported none).
    pub noise_defaulted: bool,
    /// Readings clamped to 0 dB because the noise was at or above the signal.
    pub noise_above_signal: usize,
}

/// Turns station and survey records into SNR readings (the formula in the module docs).
pub fn assess(stations: &[Station], surveys: &[SurveyEntry], p: &Params) -> Assessment {
    let measured = channel_noise(surveys);
    let mut a = Assessment {
        noise_dbm: measured.map_or(p.default_noise_dbm, f64::from),
        noise_defaulted: measured.is_none(),
        ..Assessment::default()
    };
    for s in stations {
        if s.inactive_ms
            .is_some_and(|t| u64::from(t) > p.max_inactive_ms)
        {
            a.skipped.push((s.mac, Skip::Inactive));
            continue;
        }
        let Some(signal) = s
            .signal_avg_dbm
            .filter(|v| plausible(*v))
            .or(s.signal_dbm.filter(|v| plausible(*v)))
        else {
            a.skipped.push((s.mac, Skip::NoSignal));
            continue;
        };
        let mut db = f64::from(signal) - a.noise_dbm;
        if db <= 0.0 {
            db = 0.0;
            a.noise_above_signal += 1;
        }
        a.readings.push(SnrReading {
            mac: Some(s.mac),
            db,
        });
    }
    a
}

/// What went wrong talking to nl80211.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Nl80211Error {
    #[error("the kernel has no generic netlink family \"nl80211\": {}", std::io::Error::from_raw_os_error(*errno))]
    FamilyAbsent { errno: i32 },
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { what: &'static str, errno: i32 },
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("netlink socket: {0}")]
    Socket(String),
    #[error("undecodable nl80211 message: {0}")]
    Decode(String),
}

/// Metric label of a failure class of a kernel error (errno, positive).
pub fn errno_reason(errno: i32) -> &'static str {
    match errno {
        // No wireless device with this ifindex, or one whose driver cannot dump.
        libc::ENODEV | libc::EINVAL | libc::EOPNOTSUPP => "not_wireless",
        libc::EPERM | libc::EACCES => "permission",
        _ => "netlink",
    }
}

impl Nl80211Error {
    /// Metric label (`reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::FamilyAbsent { .. } => "family_absent",
            Self::Kernel { errno, .. } => errno_reason(*errno),
            Self::Timeout(_) => "timeout",
            Self::Socket(_) => "socket",
            Self::Decode(_) => "decode",
        }
    }

    /// The socket may be unusable: open a new one for the next poll.
    fn needs_reconnect(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Socket(_) | Self::Decode(_))
    }

    fn from_crate(what: &'static str, e: wl_nl80211::Nl80211Error) -> Self {
        use wl_nl80211::Nl80211Error as E;
        match e {
            E::NetlinkError(m) => Self::Kernel {
                what,
                errno: m.raw_code().abs(),
            },
            E::RequestFailed(s) => Self::Socket(s),
            E::DecodeFailed(d) => Self::Decode(d.to_string()),
            E::UnexpectedMessage(m) => Self::Decode(format!("{m:?}")),
            E::Bug(s) => Self::Decode(s),
        }
    }
}

/// How long one dump may take: half the hello interval, within 100 ms ..= 1 s.
pub fn poll_timeout(hello_interval_ms: u64) -> Duration {
    Duration::from_millis((hello_interval_ms / 2).clamp(100, 1000))
}

async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, Nl80211Error>>,
) -> Result<T, Nl80211Error> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or(Err(Nl80211Error::Timeout(limit.as_millis())))
}

/// Opens a generic netlink socket and resolves the "nl80211" family.
async fn connect(limit: Duration) -> Result<Nl80211Handle, Nl80211Error> {
    use genetlink::GenetlinkError as G;
    let (conn, handle, _) =
        wl_nl80211::new_connection().map_err(|e| Nl80211Error::Socket(e.to_string()))?;
    tokio::spawn(conn);
    within(limit, async {
        handle
            .handle
            .resolve_family::<Nl80211Message>()
            .await
            .map_err(|e| match e {
                G::NetlinkError(io) if io.raw_os_error() == Some(libc::ENOENT) => {
                    Nl80211Error::FamilyAbsent {
                        errno: libc::ENOENT,
                    }
                }
                G::NetlinkError(io) => Nl80211Error::Kernel {
                    what: "resolve the nl80211 family",
                    errno: io.raw_os_error().unwrap_or(libc::EIO),
                },
                G::ProtocolError(p) => Nl80211Error::Socket(p.to_string()),
                other => Nl80211Error::Decode(other.to_string()),
            })
    })
    .await?;
    Ok(handle)
}

/// Whether this kernel has nl80211 (the generic netlink family resolves).
pub async fn family_present() -> Result<bool, Nl80211Error> {
    match connect(Duration::from_secs(2)).await {
        Ok(_) => Ok(true),
        Err(Nl80211Error::FamilyAbsent { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One interface's station and survey dumps.
async fn dump(
    handle: &Nl80211Handle,
    ifindex: u32,
) -> Result<(Vec<Station>, Vec<SurveyEntry>), Nl80211Error> {
    let mut stations = Vec::new();
    let mut s = handle.station().dump(ifindex).execute().await;
    loop {
        match s.try_next().await {
            Ok(Some(m)) => stations.extend(station(&m.payload)),
            Ok(None) => break,
            Err(e) => return Err(Nl80211Error::from_crate("station dump", e)),
        }
    }
    let mut surveys = Vec::new();
    let mut s = handle
        .survey()
        .dump(Nl80211Survey::new(ifindex).build())
        .execute()
        .await;
    loop {
        match s.try_next().await {
            Ok(Some(m)) => surveys.extend(survey_entry(&m.payload)),
            Ok(None) => break,
            // A driver without survey support: no noise, so the default applies.
            Err(wl_nl80211::Nl80211Error::NetlinkError(m))
                if m.raw_code().abs() == libc::EOPNOTSUPP =>
            {
                surveys.clear();
                break;
            }
            Err(e) => return Err(Nl80211Error::from_crate("survey dump", e)),
        }
    }
    Ok((stations, surveys))
}

/// Why the daemon cannot use nl80211 on an interface (start-up check).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("interface \"{iface}\": snr source \"nl80211\" needs cfg80211, which this kernel lacks ({source}); use \"file\" or \"static\"")]
    NoCfg80211 {
        iface: String,
        #[source]
        source: Nl80211Error,
    },
    #[error("interface \"{iface}\" not found; run \"ip link\" to list interfaces")]
    NoInterface { iface: String },
    #[error("interface \"{iface}\": snr source \"nl80211\": nl80211 does not serve this interface ({source}); is it a wireless (mesh point or ad-hoc) interface? Otherwise use \"file\" or \"static\"")]
    NotWireless {
        iface: String,
        #[source]
        source: Nl80211Error,
    },
    #[error("interface \"{iface}\": snr source \"nl80211\": the kernel refused the station dump ({source}); run dcmesh as root or with CAP_NET_ADMIN")]
    Permission {
        iface: String,
        #[source]
        source: Nl80211Error,
    },
    #[error("interface \"{iface}\": snr source \"nl80211\": {source}")]
    Other {
        iface: String,
        #[source]
        source: Nl80211Error,
    },
}

impl StartError {
    fn new(iface: &str, e: Nl80211Error) -> Self {
        let iface = iface.to_string();
        match e.reason() {
            "family_absent" => Self::NoCfg80211 { iface, source: e },
            "not_wireless" => Self::NotWireless { iface, source: e },
            "permission" => Self::Permission { iface, source: e },
            _ => Self::Other { iface, source: e },
        }
    }
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Refuses to start unless every interface with `snr = { source = "nl80211" }` can be
/// served: the kernel has the nl80211 family, the interface exists, and it answers a
/// station and a survey dump.
pub async fn check_start(cfg: &Config) -> Result<(), StartError> {
    let names: Vec<&str> = cfg
        .interfaces
        .iter()
        .filter(|i| matches!(i.snr, SnrSource::Nl80211 { .. }))
        .map(|i| i.name.as_str())
        .collect();
    let Some(first) = names.first() else {
        return Ok(());
    };
    let limit = poll_timeout(cfg.hello_interval_ms) * 2;
    let handle = connect(limit)
        .await
        .map_err(|e| StartError::new(first, e))?;
    for name in names {
        let Some(index) = ifindex(name) else {
            return Err(StartError::NoInterface {
                iface: name.to_string(),
            });
        };
        within(limit, dump(&handle, index))
            .await
            .map_err(|e| StartError::new(name, e))?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceLabels {
    iface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceReasonLabels {
    iface: String,
    reason: String,
}

type FGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Default)]
struct Counters {
    polls_failed: Family<IfaceReasonLabels, Counter>,
    skipped: Family<IfaceReasonLabels, Counter>,
    noise_above_signal: Family<IfaceLabels, Counter>,
    noise_floor: Family<IfaceLabels, FGauge>,
    noise_defaulted: Family<IfaceLabels, Gauge>,
}

impl Counters {
    fn register(&self, r: &mut Registry) {
        r.register(
            "snr_nl80211_polls_failed",
            "nl80211 station/survey polls that failed, by interface and reason",
            self.polls_failed.clone(),
        );
        r.register(
            "snr_nl80211_stations_skipped",
            "nl80211 stations that gave no SNR reading, by interface and reason",
            self.skipped.clone(),
        );
        r.register(
            "snr_nl80211_noise_above_signal",
            "nl80211 SNR readings clamped to 0 dB because noise was at or above the signal",
            self.noise_above_signal.clone(),
        );
        r.register(
            "snr_nl80211_noise_floor_dbm",
            "Noise floor used for nl80211 SNR readings, dBm (measured or default)",
            self.noise_floor.clone(),
        );
        r.register(
            "snr_nl80211_noise_defaulted",
            "1 while the driver reports no noise floor and default_noise_dbm is used",
            self.noise_defaulted.clone(),
        );
    }
}

/// One interface the poller serves.
#[derive(Clone, Debug)]
struct Target {
    /// Index into the configured interface list.
    iface: usize,
    name: String,
    ifindex: u32,
    params: Params,
}

/// What the poller last learnt per target, taken by [`Nl80211Snr::feed`].
type Latest = Arc<Mutex<Vec<Option<Vec<SnrReading>>>>>;

/// The running nl80211 SNR source: a background task polls the kernel, the daemon's
/// tick feeds what it found into the neighbour table. Dropping it stops the task.
pub struct Nl80211Snr {
    targets: Vec<usize>,
    latest: Latest,
    max_age_ms: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Nl80211Snr {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Nl80211Snr {
    /// Starts polling every interface of `cfg` with the nl80211 source (`ifindexes` in
    /// `cfg.interfaces` order), registering the metrics in `registry`. `None` when no
    /// interface uses nl80211. Must run inside a tokio runtime.
    pub fn start(cfg: &Config, ifindexes: &[u32], registry: &mut Registry) -> Option<Self> {
        let targets: Vec<Target> = cfg
            .interfaces
            .iter()
            .zip(ifindexes)
            .enumerate()
            .filter_map(|(i, (ic, idx))| match ic.snr {
                SnrSource::Nl80211 { default_noise_dbm } => Some(Target {
                    iface: i,
                    name: ic.name.clone(),
                    ifindex: *idx,
                    params: Params {
                        default_noise_dbm,
                        max_inactive_ms: cfg.dead_interval_ms,
                    },
                }),
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return None;
        }
        let counters = Counters::default();
        counters.register(registry);
        let latest: Latest = Arc::new(Mutex::new(vec![None; targets.len()]));
        let period = Duration::from_millis(cfg.hello_interval_ms);
        let task = tokio::spawn(poll_loop(
            targets.clone(),
            Arc::downgrade(&latest),
            period,
            poll_timeout(cfg.hello_interval_ms),
            counters,
        ));
        Some(Self {
            targets: targets.iter().map(|t| t.iface).collect(),
            latest,
            max_age_ms: cfg.dead_interval_ms,
            task,
        })
    }

    /// Feeds the readings of polls finished since the last call into `nbrs`, and drops
    /// SNR samples older than the dead interval on the nl80211 interfaces.
    pub fn feed(&self, nbrs: &mut Neighbours, now_ms: u64) {
        let fresh: Vec<Option<Vec<SnrReading>>> = match self.latest.lock() {
            Ok(mut l) => l.iter_mut().map(Option::take).collect(),
            Err(_) => return,
        };
        for (iface, readings) in self.targets.iter().zip(fresh) {
            for r in readings.into_iter().flatten() {
                nbrs.set_snr(*iface, r.mac, r.db, now_ms);
            }
            nbrs.expire_snr(*iface, self.max_age_ms, now_ms);
        }
    }
}

/// Per interface, what the log last said (so it speaks on changes, not every poll).
#[derive(Clone, Debug, Default)]
struct LogState {
    failing: Option<&'static str>,
    defaulted_said: bool,
}

async fn poll_loop(
    targets: Vec<Target>,
    latest: std::sync::Weak<Mutex<Vec<Option<Vec<SnrReading>>>>>,
    period: Duration,
    limit: Duration,
    counters: Counters,
) {
    let mut handle: Option<Nl80211Handle> = None;
    let mut logs = vec![LogState::default(); targets.len()];
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(latest) = latest.upgrade() else {
            return;
        };
        let h = match &handle {
            Some(h) => Ok(h.clone()),
            None => connect(limit).await.inspect(|h| handle = Some(h.clone())),
        };
        for (k, t) in targets.iter().enumerate() {
            let result = match &h {
                Ok(h) => within(limit, dump(h, t.ifindex)).await,
                Err(e) => Err(e.clone()),
            };
            match result {
                Ok((stations, surveys)) => {
                    let a = assess(&stations, &surveys, &t.params);
                    record(&t.name, &a, &counters, &mut logs[k]);
                    if let Ok(mut l) = latest.lock() {
                        l[k] = Some(a.readings);
                    }
                }
                Err(e) => {
                    let reason = e.reason();
                    counters
                        .polls_failed
                        .get_or_create(&IfaceReasonLabels {
                            iface: t.name.clone(),
                            reason: reason.into(),
                        })
                        .inc();
                    if logs[k].failing != Some(reason) {
                        log::warn!(
                            "{}: nl80211 SNR poll failed ({e}); no SNR readings from nl80211 until it works again",
                            t.name
                        );
                        logs[k].failing = Some(reason);
                    }
                    if e.needs_reconnect() {
                        handle = None;
                    }
                }
            }
        }
    }
}

/// Counts and logs one successful poll.
fn record(name: &str, a: &Assessment, c: &Counters, log: &mut LogState) {
    if log.failing.take().is_some() {
        log::info!("{name}: nl80211 SNR polls work again");
    }
    let iface = IfaceLabels {
        iface: name.to_string(),
    };
    for (_, why) in &a.skipped {
        c.skipped
            .get_or_create(&IfaceReasonLabels {
                iface: name.to_string(),
                reason: why.name().into(),
            })
            .inc();
    }
    if a.noise_above_signal > 0 {
        c.noise_above_signal
            .get_or_create(&iface)
            .inc_by(a.noise_above_signal as u64);
    }
    c.noise_floor.get_or_create(&iface).set(a.noise_dbm);
    c.noise_defaulted
        .get_or_create(&iface)
        .set(i64::from(a.noise_defaulted));
    if a.noise_defaulted && !log.defaulted_said {
        log::info!(
            "{name}: the driver reports no noise floor for the channel in use; SNR readings assume {} dBm (interface snr.default_noise_dbm)",
            a.noise_dbm
        );
        log.defaulted_said = true;
    }
}
