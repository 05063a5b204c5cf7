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
//! every nl80211 interface must answer a station and a survey dump (a driver without
//! survey support is fine), or the daemon refuses to start with an error naming the
//! interface. While running, a failed poll is a log line
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
    #[error("generic netlink family \"nl80211\" not found: {}", std::io::Error::from_raw_os_error(*errno))]
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
    #[error("interface \"{iface}\": snr source \"nl80211\" needs cfg80211, which this kernel lacks ({cause}); use \"file\" or \"static\"")]
    NoCfg80211 { iface: String, cause: Nl80211Error },
    #[error("interface \"{iface}\" not found; run \"ip link\" to list interfaces")]
    NoInterface { iface: String },
    #[error("interface \"{iface}\": snr source \"nl80211\": nl80211 does not serve this interface ({cause}); is it a wireless (mesh point or ad-hoc) interface? Otherwise use \"file\" or \"static\"")]
    NotWireless { iface: String, cause: Nl80211Error },
    #[error("interface \"{iface}\": snr source \"nl80211\": the kernel refused ({cause}); run dcmesh as root or with CAP_NET_ADMIN")]
    Permission { iface: String, cause: Nl80211Error },
    #[error("interface \"{iface}\": snr source \"nl80211\": {cause}")]
    Other { iface: String, cause: Nl80211Error },
}

impl StartError {
    fn new(iface: &str, e: Nl80211Error) -> Self {
        let iface = iface.to_string();
        match e.reason() {
            "family_absent" => Self::NoCfg80211 { iface, cause: e },
            "not_wireless" => Self::NotWireless { iface, cause: e },
            "permission" => Self::Permission { iface, cause: e },
            _ => Self::Other { iface, cause: e },
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
            Netlink,
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

/// What the poller talks to: the kernel over generic netlink, or a test's stand-in.
trait Kernel: Send + Sync + 'static {
    type Conn: Clone + Send + Sync;
    fn connect(
        &self,
        limit: Duration,
    ) -> impl std::future::Future<Output = Result<Self::Conn, Nl80211Error>> + Send;
    fn dump(
        &self,
        conn: &Self::Conn,
        ifindex: u32,
    ) -> impl std::future::Future<Output = Result<(Vec<Station>, Vec<SurveyEntry>), Nl80211Error>> + Send;
}

/// The kernel's nl80211.
struct Netlink;

impl Kernel for Netlink {
    type Conn = Nl80211Handle;
    async fn connect(&self, limit: Duration) -> Result<Nl80211Handle, Nl80211Error> {
        connect(limit).await
    }
    async fn dump(
        &self,
        conn: &Nl80211Handle,
        ifindex: u32,
    ) -> Result<(Vec<Station>, Vec<SurveyEntry>), Nl80211Error> {
        dump(conn, ifindex).await
    }
}

async fn poll_loop<K: Kernel>(
    kernel: K,
    targets: Vec<Target>,
    latest: std::sync::Weak<Mutex<Vec<Option<Vec<SnrReading>>>>>,
    period: Duration,
    limit: Duration,
    counters: Counters,
) {
    let mut conn: Option<K::Conn> = None;
    let mut logs = vec![LogState::default(); targets.len()];
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(latest) = latest.upgrade() else {
            return;
        };
        let c = match &conn {
            Some(c) => Ok(c.clone()),
            None => within(limit, kernel.connect(limit))
                .await
                .inspect(|c| conn = Some(c.clone())),
        };
        for (k, t) in targets.iter().enumerate() {
            let result = match &c {
                Ok(c) => within(limit, kernel.dump(c, t.ifindex)).await,
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
                        conn = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::NodeId,
        metric::SnrPolicy,
        wire::{Heard, Hello},
    };
    use wl_nl80211::{
        packet_core::{DefaultNla, Emitable, NetlinkMessage, NetlinkPayload, NLA_F_NESTED},
        packet_generic::GenlMessage,
        Nl80211Command,
    };

    /// include/uapi/linux/nl80211.h
    const NL80211_ATTR_SURVEY_INFO: u16 = 84;
    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const P: Params = Params {
        default_noise_dbm: -95.0,
        max_inactive_ms: 4000,
    };

    fn sta(mac: [u8; 6], avg: Option<i8>, last: Option<i8>) -> Station {
        Station {
            mac,
            signal_avg_dbm: avg,
            signal_dbm: last,
            inactive_ms: Some(100),
        }
    }

    fn chan(in_use: bool, noise: Option<i8>) -> SurveyEntry {
        SurveyEntry {
            in_use,
            noise_dbm: noise,
        }
    }

    fn dbs(a: &Assessment) -> Vec<([u8; 6], f64)> {
        a.readings.iter().map(|r| (r.mac.unwrap(), r.db)).collect()
    }

    #[test]
    fn average_signal_minus_the_noise_of_the_channel_in_use() {
        let a = assess(
            &[sta(A, Some(-60), Some(-50)), sta(B, None, Some(-70))],
            &[
                chan(false, Some(-80)),
                chan(true, Some(-92)),
                chan(false, None),
            ],
            &P,
        );
        assert_eq!(dbs(&a), vec![(A, 32.0), (B, 22.0)]);
        assert_eq!(a.noise_dbm, -92.0);
        assert!(!a.noise_defaulted);
        assert!(a.skipped.is_empty());
        assert_eq!(a.noise_above_signal, 0);
    }

    #[test]
    fn implausible_signals_fall_back_or_skip_the_station() {
        let noise = [chan(true, Some(-90))];
        let cases = [
            (Some(0), Some(-70), Some(20.0)),    // average 0 dBm: not measured
            (Some(5), Some(-70), Some(20.0)),    // positive: not a measurement
            (Some(-121), Some(-70), Some(20.0)), // below any receiver's sensitivity
            (Some(-120), Some(-70), Some(0.0)),  // the lowest plausible value is used
            (None, Some(-1), Some(89.0)),
            (Some(0), Some(0), None),
            (None, Some(-128), None),
            (None, None, None),
        ];
        for (avg, last, want) in cases {
            let a = assess(&[sta(A, avg, last)], &noise, &P);
            match want {
                Some(db) => assert_eq!(dbs(&a), vec![(A, db)], "{avg:?} {last:?}"),
                None => {
                    assert!(a.readings.is_empty(), "{avg:?} {last:?}");
                    assert_eq!(a.skipped, vec![(A, Skip::NoSignal)]);
                }
            }
        }
    }

    #[test]
    fn missing_or_implausible_noise_uses_the_configured_default() {
        let p = Params {
            default_noise_dbm: -89.0,
            ..P
        };
        let s = [sta(A, Some(-60), None)];
        for surveys in [
            vec![],
            vec![chan(false, Some(-92))], // no entry marked in use
            vec![chan(true, None)],
            vec![chan(true, Some(0))],
            vec![chan(true, Some(3))],
            vec![chan(true, Some(-121))],
        ] {
            let a = assess(&s, &surveys, &p);
            assert!(a.noise_defaulted, "{surveys:?}");
            assert_eq!(a.noise_dbm, -89.0);
            assert_eq!(dbs(&a), vec![(A, 29.0)], "{surveys:?}");
        }
    }

    #[test]
    fn noise_at_or_above_the_signal_reads_zero_and_is_counted() {
        let a = assess(
            &[
                sta(A, Some(-90), None),
                sta(B, Some(-95), None),
                sta([2, 0, 0, 0, 0, 3], Some(-89), None),
            ],
            &[chan(true, Some(-90))],
            &P,
        );
        assert_eq!(dbs(&a), vec![(A, 0.0), (B, 0.0), ([2, 0, 0, 0, 0, 3], 1.0)]);
        assert_eq!(a.noise_above_signal, 2);
    }

    #[test]
    fn stations_silent_longer_than_the_dead_interval_give_no_reading() {
        let mut quiet = sta(A, Some(-60), None);
        quiet.inactive_ms = Some(4001);
        let mut edge = sta(B, Some(-60), None);
        edge.inactive_ms = Some(4000);
        let mut unknown = sta([2, 0, 0, 0, 0, 3], Some(-60), None);
        unknown.inactive_ms = None;
        let a = assess(&[quiet, edge, unknown], &[], &P);
        assert_eq!(dbs(&a), vec![(B, 35.0), ([2, 0, 0, 0, 0, 3], 35.0)]);
        assert_eq!(a.skipped, vec![(A, Skip::Inactive)]);
    }

    /// Emits `msg` as the kernel would send it and parses it back with the crate.
    fn through_the_wire(cmd: Nl80211Command, attributes: Vec<Nl80211Attr>) -> Nl80211Message {
        let mut g = GenlMessage::from_payload(Nl80211Message { cmd, attributes });
        g.set_resolved_family_id(0x21);
        let mut nl = NetlinkMessage::from(g);
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        match NetlinkMessage::<GenlMessage<Nl80211Message>>::deserialize(&buf)
            .expect("the crate parses what it emitted")
            .payload
        {
            NetlinkPayload::InnerMessage(g) => g.payload,
            other => panic!("not an nl80211 message: {other:?}"),
        }
    }

    #[test]
    fn station_dump_messages_yield_mac_signals_and_inactivity() {
        let m = through_the_wire(
            Nl80211Command::NewStation,
            vec![
                Nl80211Attr::IfIndex(7),
                Nl80211Attr::Mac(A),
                Nl80211Attr::StationInfo(vec![
                    Nl80211StationInfo::InactiveTime(250),
                    Nl80211StationInfo::RxPackets(1000),
                    Nl80211StationInfo::Signal(-58),
                    Nl80211StationInfo::SignalAvg(-61),
                    Nl80211StationInfo::ChainSignal(vec![-60, -63]),
                ]),
            ],
        );
        assert_eq!(
            station(&m),
            Some(Station {
                mac: A,
                signal_avg_dbm: Some(-61),
                signal_dbm: Some(-58),
                inactive_ms: Some(250),
            })
        );
        let m = through_the_wire(
            Nl80211Command::NewStation,
            vec![
                Nl80211Attr::Mac(B),
                Nl80211Attr::StationInfo(vec![Nl80211StationInfo::RxPackets(1)]),
            ],
        );
        assert_eq!(
            station(&m),
            Some(Station {
                mac: B,
                ..Station::default()
            })
        );
        let m = through_the_wire(
            Nl80211Command::NewStation,
            vec![Nl80211Attr::StationInfo(vec![Nl80211StationInfo::Signal(
                -58,
            )])],
        );
        assert_eq!(station(&m), None, "no MAC: no station");
    }

    #[test]
    fn survey_dump_messages_yield_noise_and_the_in_use_flag() {
        // The kernel nests the channel's attributes in NL80211_ATTR_SURVEY_INFO; the
        // in-use flag is an empty attribute. (The crate's own emitter mishandles an
        // unparsed flag, so the nest is emitted as the generic attribute the kernel's
        // bytes amount to; parsing, which the daemon relies on, is the crate's.)
        let entry = |in_use: bool, noise: Option<i8>| {
            let mut info = vec![Nl80211SurveyInfo::Frequency(5180)];
            info.extend(noise.map(Nl80211SurveyInfo::Noise));
            info.push(Nl80211SurveyInfo::BusyTime(12));
            let mut nest = vec![0u8; info.as_slice().buffer_len()];
            info.as_slice().emit(&mut nest);
            if in_use {
                let flag = [DefaultNla::new(NL80211_SURVEY_INFO_IN_USE, vec![])];
                let mut b = vec![0u8; flag.as_slice().buffer_len()];
                flag.as_slice().emit(&mut b);
                nest.extend(b);
            }
            let m = through_the_wire(
                Nl80211Command::NewSurveyResults,
                vec![
                    Nl80211Attr::IfIndex(7),
                    Nl80211Attr::Other(DefaultNla::new(
                        NL80211_ATTR_SURVEY_INFO | NLA_F_NESTED,
                        nest,
                    )),
                ],
            );
            survey_entry(&m).expect("a survey entry")
        };
        let entries = [
            entry(false, Some(-80)),
            entry(true, Some(-93)),
            entry(false, None),
        ];
        assert_eq!(
            entries,
            [
                chan(false, Some(-80)),
                chan(true, Some(-93)),
                chan(false, None)
            ]
        );
        assert_eq!(channel_noise(&entries), Some(-93));
        let m = through_the_wire(
            Nl80211Command::NewSurveyResults,
            vec![Nl80211Attr::IfIndex(7)],
        );
        assert_eq!(survey_entry(&m), None);
    }

    #[test]
    fn kernel_errors_are_classified() {
        assert_eq!(errno_reason(libc::ENODEV), "not_wireless");
        assert_eq!(errno_reason(libc::EOPNOTSUPP), "not_wireless");
        assert_eq!(errno_reason(libc::EPERM), "permission");
        assert_eq!(errno_reason(libc::EACCES), "permission");
        assert_eq!(errno_reason(libc::ENOBUFS), "netlink");
        let e = StartError::new(
            "wlan0",
            Nl80211Error::Kernel {
                what: "station dump",
                errno: libc::ENODEV,
            },
        );
        assert!(matches!(e, StartError::NotWireless { .. }));
        assert!(e.to_string().contains("\"wlan0\""), "{e}");
        let e = StartError::new(
            "wlan0",
            Nl80211Error::FamilyAbsent {
                errno: libc::ENOENT,
            },
        );
        assert!(e.to_string().contains("needs cfg80211"), "{e}");
        assert_eq!(poll_timeout(50), Duration::from_millis(100));
        assert_eq!(poll_timeout(1000), Duration::from_millis(500));
        assert_eq!(poll_timeout(60_000), Duration::from_millis(1000));
    }

    fn hello(mac: [u8; 6]) -> Hello {
        Hello {
            node: NodeId([mac[5]; 32]),
            mac,
            seq: 1,
            interval_ms: 1000,
            cert: vec![],
            heard: vec![Heard {
                node: NodeId([0; 32]),
                rx: 65535,
            }],
        }
    }

    /// The daemon side: readings reach neighbours by MAC, and age out when polls stop.
    #[test]
    fn feed_matches_by_mac_and_forgets_stale_readings() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let src = Nl80211Snr {
            targets: vec![1],
            latest: Arc::new(Mutex::new(vec![Some(vec![SnrReading {
                mac: Some(A),
                db: 31.0,
            }])])),
            max_age_ms: 4000,
            task: tokio::spawn(std::future::pending()),
        };
        let mut n = Neighbours::new(2, 60_000);
        let ll = "fe80::1".parse().unwrap();
        for iface in 0..2 {
            for mac in [A, B] {
                n.on_hello(iface, &hello(mac), ll, u64::MAX, &NodeId([0; 32]), 0);
            }
        }
        src.feed(&mut n, 1000);
        let snr = |n: &Neighbours, t: u64| -> Vec<Option<f64>> {
            n.links(t, &SnrPolicy::default())
                .iter()
                .map(|l| l.snr_db)
                .collect()
        };
        // Links sort by interface, then node (B's id sorts after A's).
        assert_eq!(snr(&n, 1000), vec![None, None, Some(31.0), None]);
        src.feed(&mut n, 5000);
        assert_eq!(snr(&n, 5000), vec![None, None, Some(31.0), None], "4 s old");
        src.feed(&mut n, 5001);
        assert_eq!(snr(&n, 5001), vec![None, None, None, None], "stale");
    }

    /// Starts the poll loop for one interface `name` (index 0 of the readings) every
    /// `every_ms`, each dump bounded by 500 ms.
    fn spawn_poll<K: Kernel + 'static>(
        kernel: K,
        name: &str,
        ifindex: u32,
        every_ms: u64,
        counters: &Counters,
    ) -> (Latest, tokio::task::JoinHandle<()>) {
        let latest: Latest = Arc::new(Mutex::new(vec![None]));
        let target = Target {
            iface: 0,
            name: name.into(),
            ifindex,
            params: P,
        };
        let task = tokio::spawn(poll_loop(
            kernel,
            vec![target],
            Arc::downgrade(&latest),
            Duration::from_millis(every_ms),
            Duration::from_millis(500),
            counters.clone(),
        ));
        (latest, task)
    }

    /// Failed polls counted for `iface` with `reason`.
    fn failures(counters: &Counters, iface: &str, reason: &str) -> u64 {
        counters
            .polls_failed
            .get_or_create(&IfaceReasonLabels {
                iface: iface.into(),
                reason: reason.into(),
            })
            .get()
    }

    /// A poll that cannot work (no nl80211 here; on a wireless kernel, an ifindex no
    /// interface has) is counted by reason and gives no readings; the loop goes on.
    #[test]
    fn failing_polls_are_counted_and_give_no_readings() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let counters = Counters::default();
            let (latest, task) = spawn_poll(Netlink, "nowhere", 0x7fff_fff0, 50, &counters);
            let failed = |reason: &str| failures(&counters, "nowhere", reason);
            let reason = if family_present().await.expect("generic netlink works") {
                "not_wireless"
            } else {
                "family_absent"
            };
            let mut waited = 0;
            while failed(reason) < 3 && waited < 200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += 1;
            }
            assert!(failed(reason) >= 3, "three polls failed with {reason}");
            assert!(!task.is_finished(), "the poller survives failures");
            assert_eq!(*latest.lock().unwrap(), vec![None], "no readings");
            drop(latest);
            // With the daemon's side gone, the poller ends at its next tick.
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("poller ended")
                .unwrap();
        });
    }

    /// One answer of the stand-in kernel.
    enum Step {
        Answer(Vec<Station>, Vec<SurveyEntry>),
        Fail(Nl80211Error),
        /// Never answers (a wedged driver).
        Hang,
    }

    #[derive(Clone, Default)]
    struct Fake {
        script: Arc<Mutex<std::collections::VecDeque<Step>>>,
        connects: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Kernel for Fake {
        type Conn = ();
        async fn connect(&self, _: Duration) -> Result<(), Nl80211Error> {
            self.connects
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        async fn dump(
            &self,
            _: &(),
            ifindex: u32,
        ) -> Result<(Vec<Station>, Vec<SurveyEntry>), Nl80211Error> {
            assert_eq!(ifindex, 9, "the target's ifindex is dumped");
            let step = self.script.lock().unwrap().pop_front();
            match step {
                Some(Step::Answer(s, v)) => Ok((s, v)),
                Some(Step::Fail(e)) => Err(e),
                Some(Step::Hang) => std::future::pending().await,
                None => Ok((vec![], vec![])),
            }
        }
    }

    /// The poll loop over a stand-in kernel, on virtual time: readings reach the
    /// daemon's side, failures are counted by reason, a hung dump times out and the
    /// socket is opened afresh, and the loop ends when the daemon's side is gone.
    #[tokio::test(start_paused = true)]
    async fn the_poller_delivers_readings_and_survives_failures_and_hangs() {
        let fake = Fake::default();
        fake.script.lock().unwrap().extend([
            Step::Answer(vec![sta(A, Some(-60), None)], vec![chan(true, Some(-90))]),
            Step::Fail(Nl80211Error::Kernel {
                what: "station dump",
                errno: libc::ENODEV,
            }),
            Step::Hang,
            Step::Answer(vec![sta(B, None, Some(-70))], vec![]),
        ]);
        let counters = Counters::default();
        let (latest, task) = spawn_poll(fake.clone(), "mesh9", 9, 1000, &counters);
        let failed = |reason: &str| failures(&counters, "mesh9", reason);
        let iface = IfaceLabels {
            iface: "mesh9".into(),
        };
        let take = || latest.lock().unwrap()[0].take();
        let connects = || fake.connects.load(std::sync::atomic::Ordering::SeqCst);
        let dbs = |r: Option<Vec<SnrReading>>| -> Option<Vec<([u8; 6], f64)>> {
            r.map(|v| v.iter().map(|r| (r.mac.unwrap(), r.db)).collect())
        };

        // t = 0: the first poll answers.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(dbs(take()), Some(vec![(A, 30.0)]));
        assert_eq!(counters.noise_floor.get_or_create(&iface).get(), -90.0);
        assert_eq!(counters.noise_defaulted.get_or_create(&iface).get(), 0);
        // t = 1 s: the kernel refuses; counted, nothing delivered, same socket kept.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(take(), None);
        assert_eq!(failed("not_wireless"), 1);
        assert_eq!(connects(), 1);
        // t = 2 s: the dump hangs; at 2.5 s the timeout counts it.
        tokio::time::sleep(Duration::from_millis(1390)).await;
        assert_eq!(failed("timeout"), 0, "2.4 s: the hung dump still has time");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(failed("timeout"), 1, "a hung dump times out");
        assert_eq!(take(), None);
        // t = 3 s: a fresh socket, and readings again (no noise: the default).
        tokio::time::sleep(Duration::from_millis(410)).await;
        assert_eq!(connects(), 2, "a new socket after the timeout");
        assert_eq!(dbs(take()), Some(vec![(B, 25.0)]));
        assert_eq!(counters.noise_defaulted.get_or_create(&iface).get(), 1);
        assert_eq!(counters.noise_floor.get_or_create(&iface).get(), -95.0);
        assert!(!task.is_finished());
        drop(latest);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the poller ends once the daemon's side is gone")
            .unwrap();
    }
}
