//! The daemon's configuration file (TOML) and its validation.
//!
//! ```toml
//! key = "/etc/dcmesh/node.key"            # from `dcmesh keygen` (mode 0600)
//! certificate = "/etc/dcmesh/node.cert"   # from `dcmesh authority issue`; re-read when it changes
//! state_dir = "/var/lib/dcmesh"           # advert sequence number survives restarts here
//! control_socket = "/run/dcmesh.sock"     # JSON API for `dcmesh status|neighbors|routes|adverts`
//! metrics_listen = "127.0.0.1:9477"       # Prometheus /metrics; omit to disable
//! pin_dir = "/sys/fs/bpf/dcmesh"          # bpffs directory of the XDP datapath's pins
//! prefixes = ["10.77.1.0/24"]             # announced; each must be granted by the certificate
//! port = 6699                             # UDP port of hellos and adverts
//! hello_interval_ms = 1000                # hello period per interface
//! dead_interval_ms = 4000                 # neighbour lost after this much silence (≥ 2 hellos;
//!                                         # plus the loss stagger, see below)
//! local_convergence_delay_ms = 1000       # microloop avoidance, see below (0 = off, ≤ 60000)
//! loss_stagger_ms = 50                    # ordered loss detection, see below (0 = off, ≤ 1000)
//! advert_refresh_s = 30                   # re-originate at least this often
//! advert_lifetime_s = 120                 # validity of our adverts (> 2 × refresh)
//! max_advert_lifetime_s = 3600            # longest lifetime accepted from others
//! kernel_routes = true                    # mirror routes into the kernel FIB
//! route_protocol = 200                    # rtnetlink protocol number of those routes
//! kernel_routes_on_exit = "remove"        # "remove" | "retain" (restarts), see below
//! xdp_mode = "auto"                       # auto | native | generic
//!
//! [authorities]
//! keys = ["<64 hex>", "<64 hex>", "<64 hex>"]  # n authority public keys
//! threshold = 2                                # k: signatures needed on a certificate
//!
//! [snr_policy]                            # see `metric` for the formula
//! good_db = 25.0
//! min_db = 10.0
//! horizon_s = 30.0
//!
//! [[interface]]
//! name = "mesh0"
//! snr = { source = "file", path = "/run/dcmesh/snr-mesh0" }  # or "static" (db = 30), "nl80211", "none"
//! lanes = true                            # TSN lanes here if [lanes] is set (default); false opts
//!                                         # out; { link_rate_bps = 54_000_000 } overrides the rate
//!
//! [lanes]                                 # optional: TSN lanes on every interface above
//! link_rate_bps = 100_000_000             # the egress rate the lanes share, bit/s (HTB root)
//! mode = "auto"                           # auto (EDT if fq/etf exist, else admission) | edt | admission
//! default_lane = 7                        # lane of frames no rule matches
//! [lanes.schedule]                        # 802.1Qbv gate control list; omit for plain strict priority
//! cycle_ns = 1_000_000
//! entries = [
//!   { gates = [0], interval_ns = 250_000 },                        # only lane 0 may send
//!   { gates = [0, 1, 2, 3, 4, 5, 6, 7], interval_ns = 750_000 },   # everyone, lane 0 first
//! ]
//! [[lanes.rules]]                         # first match picks the lane
//! name = "control"
//! lane = 0
//! proto = "udp"
//! dst_ports = "5000-5010"
//! [[lanes.lane]]
//! lane = 3
//! on_closed = { demote = 7 }              # or "drop" (default)
//! ```
//!
//! `[lanes]` is the `dcmesh_tsn::config::LanesConfig` schema (every key is documented
//! there, and in control/README.md); it is validated at start by the very code that
//! compiles it for the datapath, and every problem is reported with the entry, rule or
//! lane it concerns. On start the daemon builds each interface's queues (HTB, eight
//! strict-priority leaves), attaches the TC egress program and puts the plan in force,
//! pinned under `<pin_dir>/lanes/<interface>/` so the gates stay enforced across
//! restarts; a changed schedule takes over at a cycle boundary. Lanes stay in place when
//! the daemon stops; `dcmesh lanes remove --interface IF` takes them away.
//!
//! `local_convergence_delay_ms` (RFC 8333): when a neighbour this node forwards through
//! is lost, traffic moves at once to the loop-free alternates, and this node's new routes
//! wait this long, so the rest of the mesh (which installs at once) converges first and
//! no neighbour still routing back through us sees a transient loop. It must cover
//! flooding the advert across the mesh plus one route computation on the slowest node:
//! tens of ms per hop on a busy radio mesh, so 1 s suits meshes of a dozen hops. Routes
//! with no alternate are dropped meanwhile rather than looped; any other change in the
//! mesh ends the wait at once. See `microloop`.
//!
//! `loss_stagger_ms`: when a node dies, all its neighbours stop hearing it at once. Each
//! waits this long per rank among the dead node's neighbours (sorted by node id, at most
//! 8 ranks) beyond `dead_interval_ms` before it declares the loss, so they declare one
//! after another and each repairs knowing the earlier ones' losses; declared together,
//! their repairs can loop. It must cover one advert crossing one hop plus a route
//! computation on a busy router: 50 ms suits a small radio mesh; raise it on slow links.
//! A silent link death is detected up to 8 × this later. See `neighbour`.
//!
//! `kernel_routes_on_exit`: what a clean stop (SIGTERM, SIGINT) does with the kernel
//! routes this node installed. `"remove"` (the default) leaves the FIB as it was before
//! dcmesh. `"retain"` keeps them, as FRR's `zebra -r` or BIRD's graceful restart do, so
//! traffic the kernel forwards (locally originated, from client access interfaces) keeps
//! flowing through a restart: the next daemon adopts every route of `route_protocol` and
//! replaces or removes them only after its start-up wait, once it has recomputed. Use it
//! where the daemon is restarted under load; for a final stop with `"retain"`, remove
//! the routes with `ip -4 route flush proto <route_protocol>` and `ip -6 route flush
//! proto <route_protocol>` (or stop with `"remove"`).
//!
//! SNR sources (per interface, `source` selects one), for example
//! `snr = { source = "nl80211", default_noise_dbm = -92.0 }` on a 40 MHz radio:
//! - `none` (default): cost is plain ETX.
//! - `static`, `db`: one SNR for every neighbour on the interface.
//! - `file`, `path`: lines `<neighbour MAC or *> <SNR dB>`, re-read every hello interval
//!   (the testbed's radio model writes it); while the file is missing the last readings
//!   stand.
//! - `nl80211`: every hello interval, the kernel's station dump gives each peer's signal
//!   (`SIGNAL_AVG`, else `SIGNAL`, dBm) and the survey dump the noise floor of the
//!   channel in use; `SNR = signal − noise` dB, keyed by the station's MAC.
//!   `default_noise_dbm` (default −95, within −120 ..= −50) is the noise floor assumed
//!   when the driver reports none: thermal noise of a 20 MHz channel plus a typical
//!   receiver noise figure; use −92 for 40 MHz and −89 for 80 MHz channels. A neighbour
//!   without a fresh reading for `dead_interval_ms` loses its SNR. The daemon refuses
//!   to start when the kernel has no nl80211 (no cfg80211) or the interface is not a
//!   wireless one. Details, plausibility rules and metrics: `snr_nl80211`.
use std::{net::SocketAddr, path::PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::{cert::Authorities, identity::NodeId, metric::SnrPolicy};
use dcmesh_tsn::config::{ConfigErrors as LanesErrors, LanesConfig};

fn d_state_dir() -> PathBuf {
    "/var/lib/dcmesh".into()
}
fn d_socket() -> PathBuf {
    "/run/dcmesh.sock".into()
}
fn d_pin_dir() -> PathBuf {
    dcmesh_loader::DEFAULT_PIN_DIR.into()
}
fn d_port() -> u16 {
    6699
}
fn d_hello() -> u64 {
    1000
}
fn d_dead() -> u64 {
    4000
}
fn d_lcd() -> u64 {
    1000
}
fn d_stagger() -> u64 {
    50
}
fn d_refresh() -> u64 {
    30
}
fn d_lifetime() -> u64 {
    120
}
fn d_max_lifetime() -> u64 {
    3600
}
fn d_true() -> bool {
    true
}
fn d_proto() -> u8 {
    200
}
fn d_noise() -> f64 {
    crate::snr_nl80211::DEFAULT_NOISE_DBM
}

/// Where a link's SNR comes from.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum SnrSource {
    /// No SNR: cost is plain ETX.
    #[default]
    None,
    /// One value for every neighbour on the interface.
    Static { db: f64 },
    /// A file of lines `<neighbour MAC or *> <SNR dB>` (`#` comments), re-read every
    /// hello interval (the testbed's radio model writes it). While the file is missing
    /// the last readings stand.
    File { path: PathBuf },
    /// nl80211 station signal minus the channel's noise floor (needs cfg80211 in the
    /// kernel; see `snr_nl80211`).
    Nl80211 {
        /// Noise floor assumed when the driver reports none, dBm.
        #[serde(default = "d_noise")]
        default_noise_dbm: f64,
    },
}

/// One mesh interface.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: String,
    #[serde(default)]
    pub snr: SnrSource,
    /// TSN lanes on this interface (only with a `[lanes]` section).
    #[serde(default)]
    pub lanes: InterfaceLanes,
}

/// An interface's use of the `[lanes]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum InterfaceLanes {
    /// `true` (the default): the section as written; `false`: no lanes here.
    Enabled(bool),
    /// The section with this interface's own link rate (radios differ), bit/s.
    Override {
        #[serde(rename = "link_rate_bps")]
        link_rate_bps: u64,
    },
}

impl Default for InterfaceLanes {
    fn default() -> Self {
        Self::Enabled(true)
    }
}

/// Lanes to set up on one interface: a validated `[lanes]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneTarget {
    pub iface: String,
    /// Validated: [`LanesConfig::compile`] succeeds.
    pub config: LanesConfig,
}

/// The authority set, as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritiesConfig {
    pub keys: Vec<String>,
    pub threshold: usize,
}

/// What a clean stop does with the kernel routes (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitRoutes {
    #[default]
    Remove,
    Retain,
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Auto,
    Native,
    Generic,
}

/// The file as written (see the module docs for meaning and defaults).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub key: PathBuf,
    pub certificate: PathBuf,
    #[serde(default = "d_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "d_socket")]
    pub control_socket: PathBuf,
    #[serde(default)]
    pub metrics_listen: Option<String>,
    #[serde(default = "d_pin_dir")]
    pub pin_dir: PathBuf,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default = "d_port")]
    pub port: u16,
    #[serde(default = "d_hello")]
    pub hello_interval_ms: u64,
    #[serde(default = "d_dead")]
    pub dead_interval_ms: u64,
    #[serde(default = "d_lcd")]
    pub local_convergence_delay_ms: u64,
    #[serde(default = "d_stagger")]
    pub loss_stagger_ms: u64,
    #[serde(default = "d_refresh")]
    pub advert_refresh_s: u64,
    #[serde(default = "d_lifetime")]
    pub advert_lifetime_s: u64,
    #[serde(default = "d_max_lifetime")]
    pub max_advert_lifetime_s: u64,
    #[serde(default = "d_true")]
    pub kernel_routes: bool,
    #[serde(default = "d_proto")]
    pub route_protocol: u8,
    #[serde(default)]
    pub kernel_routes_on_exit: ExitRoutes,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    pub authorities: AuthoritiesConfig,
    #[serde(default)]
    pub snr_policy: SnrPolicy,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// TSN lanes (see the module docs).
    #[serde(default)]
    pub lanes: Option<LanesConfig>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub key: PathBuf,
    pub certificate: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub pin_dir: PathBuf,
    pub prefixes: Vec<IpNet>,
    pub port: u16,
    pub hello_interval_ms: u64,
    pub dead_interval_ms: u64,
    /// Microloop avoidance hold after losing a next hop, ms (0 = off).
    pub local_convergence_delay_ms: u64,
    /// Extra silence per rank before a dead neighbour is declared lost, ms (0 = off).
    pub loss_stagger_ms: u64,
    pub advert_refresh_s: u64,
    pub advert_lifetime_s: u64,
    pub max_advert_lifetime_s: u64,
    pub kernel_routes: bool,
    pub route_protocol: u8,
    /// What a clean stop does with the kernel routes.
    pub kernel_routes_on_exit: ExitRoutes,
    pub xdp_mode: XdpMode,
    pub authorities: Authorities,
    pub snr_policy: SnrPolicy,
    pub interfaces: Vec<InterfaceConfig>,
    /// The interfaces with TSN lanes, in `interfaces` order.
    pub lanes: Vec<LaneTarget>,
}

/// A configuration error; always names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
    /// Every problem of a `[lanes]` section, one per line, each naming its entry, rule or
    /// lane (`lanes.schedule.entries[1]: ...`).
    #[error("config section `{at}`:\n{errors}")]
    Lanes { at: String, errors: LanesErrors },
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: p.clone(),
            source: e,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: p, message },
            e => e,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        raw.validate()
    }
}

impl RawConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(self) -> Result<Config, ConfigError> {
        if self.key.as_os_str().is_empty() {
            return Err(field(
                "key",
                "must be a path to a key file (\"dcmesh keygen\")",
            ));
        }
        if self.certificate.as_os_str().is_empty() {
            return Err(field("certificate", "must be a path to a certificate file"));
        }
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|e| {
                field(
                    "metrics_listen",
                    format!("\"{s}\" is not address:port ({e})"),
                )
            })?),
        };
        let mut prefixes = Vec::new();
        for (i, s) in self.prefixes.iter().enumerate() {
            let p: IpNet = s
                .parse()
                .map_err(|e| field(format!("prefixes[{i}]"), format!("\"{s}\": {e}")))?;
            if p.trunc() != p {
                return Err(field(
                    format!("prefixes[{i}]"),
                    format!("\"{s}\" has host bits set; did you mean {}?", p.trunc()),
                ));
            }
            prefixes.push(p);
        }
        if prefixes.len() > crate::wire::MAX_PREFIXES {
            return Err(field(
                "prefixes",
                format!("at most {} prefixes", crate::wire::MAX_PREFIXES),
            ));
        }
        if self.port == 0 {
            return Err(field("port", "must be 1..65535"));
        }
        if !(50..=60_000).contains(&self.hello_interval_ms) {
            return Err(field("hello_interval_ms", "must be 50..=60000 ms"));
        }
        if self.dead_interval_ms < 2 * self.hello_interval_ms {
            return Err(field(
                "dead_interval_ms",
                format!(
                    "must be at least twice hello_interval_ms ({} ms), or one lost hello drops the neighbour",
                    2 * self.hello_interval_ms
                ),
            ));
        }
        if self.local_convergence_delay_ms > 60_000 {
            return Err(field("local_convergence_delay_ms", "must be 0..=60000 ms"));
        }
        if self.loss_stagger_ms > 1000 {
            return Err(field("loss_stagger_ms", "must be 0..=1000 ms"));
        }
        if self.advert_refresh_s == 0 {
            return Err(field("advert_refresh_s", "must be at least 1 s"));
        }
        if self.advert_lifetime_s < 2 * self.advert_refresh_s {
            return Err(field(
                "advert_lifetime_s",
                format!(
                    "must be at least twice advert_refresh_s ({} s)",
                    2 * self.advert_refresh_s
                ),
            ));
        }
        if self.max_advert_lifetime_s < self.advert_lifetime_s {
            return Err(field(
                "max_advert_lifetime_s",
                "must be at least advert_lifetime_s",
            ));
        }
        if matches!(self.route_protocol, 0..=4) {
            return Err(field(
                "route_protocol",
                "0..4 are reserved by the kernel (unspec, redirect, kernel, boot, static)",
            ));
        }
        let mut keys = Vec::new();
        for (i, k) in self.authorities.keys.iter().enumerate() {
            keys.push(
                k.parse::<NodeId>()
                    .map_err(|e| field(format!("authorities.keys[{i}]"), e.to_string()))?,
            );
        }
        let authorities = Authorities::new(keys, self.authorities.threshold).map_err(|e| {
            let f = match e {
                crate::cert::AuthoritiesError::Duplicate(_) => "authorities.keys",
                _ => "authorities.threshold",
            };
            field(f, e.to_string())
        })?;
        let p = &self.snr_policy;
        if !(p.good_db.is_finite() && p.min_db.is_finite() && p.good_db > p.min_db) {
            return Err(field(
                "snr_policy",
                "good_db must be finite and above min_db",
            ));
        }
        if !(p.horizon_s.is_finite() && p.horizon_s >= 0.0) {
            return Err(field("snr_policy.horizon_s", "must be ≥ 0 seconds"));
        }
        if self.interfaces.is_empty() {
            return Err(field("interface", "at least one [[interface]] is needed"));
        }
        for (i, ifc) in self.interfaces.iter().enumerate() {
            if ifc.name.is_empty() || ifc.name.len() >= libc::IF_NAMESIZE || ifc.name.contains('/')
            {
                return Err(field(
                    format!("interface[{i}].name"),
                    format!("\"{}\" is not an interface name", ifc.name),
                ));
            }
            if self.interfaces[..i].iter().any(|o| o.name == ifc.name) {
                return Err(field(
                    format!("interface[{i}].name"),
                    format!("\"{}\" listed twice", ifc.name),
                ));
            }
            if let SnrSource::Static { db } = ifc.snr {
                if !db.is_finite() {
                    return Err(field(format!("interface[{i}].snr.db"), "must be a number"));
                }
            }
            if let SnrSource::Nl80211 { default_noise_dbm } = ifc.snr {
                if !(-120.0..=-50.0).contains(&default_noise_dbm) {
                    return Err(field(
                        format!("interface[{i}].snr.default_noise_dbm"),
                        format!("{default_noise_dbm} is not a noise floor: use -120 ..= -50 dBm (-95 suits 20 MHz channels)"),
                    ));
                }
            }
        }
        let lanes = lane_targets(self.lanes.as_ref(), &self.interfaces)?;
        Ok(Config {
            key: self.key,
            certificate: self.certificate,
            state_dir: self.state_dir,
            control_socket: self.control_socket,
            metrics_listen,
            pin_dir: self.pin_dir,
            prefixes,
            port: self.port,
            hello_interval_ms: self.hello_interval_ms,
            dead_interval_ms: self.dead_interval_ms,
            local_convergence_delay_ms: self.local_convergence_delay_ms,
            loss_stagger_ms: self.loss_stagger_ms,
            advert_refresh_s: self.advert_refresh_s,
            advert_lifetime_s: self.advert_lifetime_s,
            max_advert_lifetime_s: self.max_advert_lifetime_s,
            kernel_routes: self.kernel_routes,
            route_protocol: self.route_protocol,
            kernel_routes_on_exit: self.kernel_routes_on_exit,
            xdp_mode: self.xdp_mode,
            authorities,
            snr_policy: self.snr_policy,
            interfaces: self.interfaces,
            lanes,
        })
    }
}

/// Validates the `[lanes]` section (with the tsn crate's own checks) and resolves which
/// interfaces get lanes, with which link rate.
fn lane_targets(
    section: Option<&LanesConfig>,
    interfaces: &[InterfaceConfig],
) -> Result<Vec<LaneTarget>, ConfigError> {
    let Some(lanes) = section else {
        if let Some((i, _)) = interfaces
            .iter()
            .enumerate()
            .find(|(_, f)| matches!(f.lanes, InterfaceLanes::Override { .. }))
        {
            return Err(field(
                format!("interface[{i}].lanes"),
                "overrides the [lanes] section, but there is none; add one or remove this key",
            ));
        }
        return Ok(Vec::new());
    };
    lanes.compile().map_err(|errors| ConfigError::Lanes {
        at: "lanes".into(),
        errors,
    })?;
    let mut out = Vec::new();
    for (i, f) in interfaces.iter().enumerate() {
        let config = match f.lanes {
            InterfaceLanes::Enabled(false) => continue,
            InterfaceLanes::Enabled(true) => lanes.clone(),
            InterfaceLanes::Override { link_rate_bps } => {
                let c = LanesConfig {
                    link_rate_bps,
                    ..lanes.clone()
                };
                // A slower link may not fit the guard bands the schedule needs.
                c.compile().map_err(|errors| ConfigError::Lanes {
                    at: format!(
                        "interface[{i}].lanes (\"{}\", link_rate_bps = {link_rate_bps})",
                        f.name
                    ),
                    errors,
                })?;
                c
            }
        };
        out.push(LaneTarget {
            iface: f.name.clone(),
            config,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn base() -> String {
        let a = Identity::from_seed([1; 32]).id();
        let b = Identity::from_seed([2; 32]).id();
        format!(
            "key = \"/k\"\ncertificate = \"/c\"\nprefixes = [\"10.1.0.0/24\"]\n\
             [authorities]\nkeys = [\"{a}\", \"{b}\"]\nthreshold = 2\n\
             [[interface]]\nname = \"mesh0\"\nsnr = {{ source = \"static\", db = 30.0 }}\n"
        )
    }

    fn err_field(text: &str) -> String {
        match Config::parse(text) {
            Err(ConfigError::Field { field, .. }) => field,
            Err(e) => format!("other: {e}"),
            Ok(_) => "accepted".into(),
        }
    }

    #[test]
    fn defaults_and_a_valid_file() {
        let c = Config::parse(&base()).unwrap();
        assert_eq!(c.port, 6699);
        assert_eq!(c.hello_interval_ms, 1000);
        assert_eq!(c.local_convergence_delay_ms, 1000);
        assert_eq!(c.loss_stagger_ms, 50);
        assert_eq!(c.authorities.threshold(), 2);
        assert_eq!(c.interfaces[0].snr, SnrSource::Static { db: 30.0 });
        assert_eq!(c.kernel_routes_on_exit, ExitRoutes::Remove);
        let r = Config::parse(&format!("kernel_routes_on_exit = \"retain\"\n{}", base())).unwrap();
        assert_eq!(r.kernel_routes_on_exit, ExitRoutes::Retain);
        let e = Config::parse(&format!("kernel_routes_on_exit = \"keep\"\n{}", base()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel_routes_on_exit"), "{e}");
    }

    #[test]
    fn nl80211_source_defaults_and_bounds() {
        let nl = |snr: &str| {
            base().replace(
                "snr = { source = \"static\", db = 30.0 }",
                &format!("snr = {snr}"),
            )
        };
        let c = Config::parse(&nl("{ source = \"nl80211\" }")).unwrap();
        assert_eq!(
            c.interfaces[0].snr,
            SnrSource::Nl80211 {
                default_noise_dbm: -95.0
            }
        );
        let c = Config::parse(&nl("{ source = \"nl80211\", default_noise_dbm = -89.0 }")).unwrap();
        assert_eq!(
            c.interfaces[0].snr,
            SnrSource::Nl80211 {
                default_noise_dbm: -89.0
            }
        );
        for bad in ["0.0", "-40.0", "-121.0", "nan"] {
            assert_eq!(
                err_field(&nl(&format!(
                    "{{ source = \"nl80211\", default_noise_dbm = {bad} }}"
                ))),
                "interface[0].snr.default_noise_dbm",
                "{bad}"
            );
        }
        let e = Config::parse(&nl("{ source = \"nl80211\", noise = -90.0 }"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("noise"), "{e}");
    }

    #[test]
    fn every_bad_field_is_named() {
        let b = base();
        let top = |extra: &str| format!("{extra}\n{b}");
        assert_eq!(
            err_field(&top("metrics_listen = \"nope\"")),
            "metrics_listen"
        );
        assert_eq!(
            err_field(&b.replace("10.1.0.0/24", "10.1.0.1/24")),
            "prefixes[0]"
        );
        assert_eq!(
            err_field(&b.replace("10.1.0.0/24", "banana")),
            "prefixes[0]"
        );
        assert_eq!(err_field(&top("port = 0")), "port");
        assert_eq!(
            err_field(&top("hello_interval_ms = 10")),
            "hello_interval_ms"
        );
        assert_eq!(
            err_field(&top("dead_interval_ms = 1500")),
            "dead_interval_ms"
        );
        assert_eq!(
            err_field(&top("local_convergence_delay_ms = 60001")),
            "local_convergence_delay_ms"
        );
        assert_eq!(err_field(&top("loss_stagger_ms = 1001")), "loss_stagger_ms");
        assert_eq!(err_field(&top("advert_refresh_s = 0")), "advert_refresh_s");
        assert_eq!(
            err_field(&top("advert_lifetime_s = 30")),
            "advert_lifetime_s"
        );
        assert_eq!(
            err_field(&top("max_advert_lifetime_s = 60")),
            "max_advert_lifetime_s"
        );
        assert_eq!(err_field(&top("route_protocol = 4")), "route_protocol");
        assert_eq!(
            err_field(&b.replace("threshold = 2", "threshold = 3")),
            "authorities.threshold"
        );
        assert_eq!(
            err_field(&b.replace("keys = [\"", "keys = [\"00")),
            "authorities.keys[0]"
        );
        assert_eq!(
            err_field(&b.replace("name = \"mesh0\"", "name = \"\"")),
            "interface[0].name"
        );
        assert_eq!(
            err_field(&format!("{b}[[interface]]\nname = \"mesh0\"\n")),
            "interface[1].name"
        );
        assert_eq!(
            err_field(&format!("{b}[snr_policy]\ngood_db = 5.0\n")),
            "snr_policy"
        );
        // Unknown fields and wrong types are parse errors that name the field.
        let e = Config::parse(&top("colour = 1")).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Config::parse(&top("port = \"x\"")).unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
    }

    /// A second interface, then `extra` (TOML tables go last).
    fn with_lanes(extra: &str) -> String {
        format!("{}[[interface]]\nname = \"mesh1\"\n{extra}", base())
    }

    const LANES_OK: &str = "[lanes]\nlink_rate_bps = 100_000_000\n\
        [lanes.schedule]\nentries = [ { gates = [0], interval_ns = 250_000 }, { gates = [0,1,2,3,4,5,6,7], interval_ns = 750_000 } ]\n\
        [[lanes.rules]]\nname = \"ctl\"\nlane = 0\nproto = \"udp\"\ndst_ports = 5999\n";

    fn lanes_err(text: &str) -> String {
        match Config::parse(text) {
            Err(e @ ConfigError::Lanes { .. }) => e.to_string(),
            Err(e) => panic!("not a lanes error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn lanes_default_to_every_interface() {
        let c = Config::parse(&base()).unwrap();
        assert!(c.lanes.is_empty(), "no [lanes], no lanes");
        let c = Config::parse(&with_lanes(LANES_OK)).unwrap();
        let names: Vec<&str> = c.lanes.iter().map(|t| t.iface.as_str()).collect();
        assert_eq!(names, ["mesh0", "mesh1"]);
        assert_eq!(c.lanes[1].config.link_rate_bps, 100_000_000);
        assert_eq!(c.lanes[1].config.rules[0].lane, 0);
    }

    #[test]
    fn lanes_per_interface_opt_out_and_rate() {
        let c = Config::parse(&with_lanes(&format!("lanes = false\n{LANES_OK}"))).unwrap();
        let names: Vec<&str> = c.lanes.iter().map(|t| t.iface.as_str()).collect();
        assert_eq!(names, ["mesh0"]);
        let c = Config::parse(&with_lanes(&format!(
            "lanes = {{ link_rate_bps = 54_000_000 }}\n{LANES_OK}"
        )))
        .unwrap();
        assert_eq!(c.lanes[0].config.link_rate_bps, 100_000_000);
        assert_eq!(c.lanes[1].config.link_rate_bps, 54_000_000);
        // An override without a section to override is a mistake.
        assert_eq!(
            err_field(&with_lanes("lanes = { link_rate_bps = 1_000_000 }\n")),
            "interface[1].lanes"
        );
    }

    #[test]
    fn bad_lanes_name_the_entry_and_the_rule() {
        let bad_gate = LANES_OK.replace("gates = [0], interval_ns", "gates = [0, 9], interval_ns");
        let e = lanes_err(&with_lanes(&bad_gate));
        assert!(e.starts_with("config section `lanes`:"), "{e}");
        assert!(
            e.contains("lanes.schedule.entries[0]: gate of lane 9, which does not exist"),
            "{e}"
        );
        let short = LANES_OK.replace("interval_ns = 250_000", "interval_ns = 1_000");
        let e = lanes_err(&with_lanes(&short));
        assert!(
            e.contains("lanes.schedule: entry 0: interval 1000 ns is shorter than a minimum frame"),
            "{e}"
        );
        let cycle = LANES_OK.replace(
            "[lanes.schedule]\n",
            "[lanes.schedule]\ncycle_ns = 2_000_000\n",
        );
        let e = lanes_err(&with_lanes(&cycle));
        assert!(
            e.contains(
                "lanes.schedule: the intervals sum to 1000000 ns but the cycle is 2000000 ns"
            ),
            "{e}"
        );
        let rule = LANES_OK.replace("dst_ports = 5999", "dst_ports = \"9-3\"\ndscp = [70]");
        let e = lanes_err(&with_lanes(&rule));
        assert!(
            e.contains("lanes.rules[0] (\"ctl\"): DSCP 70 is outside 0..=63"),
            "{e}"
        );
        assert!(
            e.contains("lanes.rules[0] (\"ctl\"): dst_ports: port range \"9-3\" is empty"),
            "{e}"
        );
        // Valid at 100 Mbit/s, but at 5 Mbit/s a full frame (2.5 ms) fits not even the
        // 750 µs window of lane 7 (the default lane): the guard band rule, reported against
        // the interface that overrides.
        let slow = format!("lanes = {{ link_rate_bps = 5_000_000 }}\n{LANES_OK}");
        let e = lanes_err(&with_lanes(&slow));
        assert!(
            e.starts_with("config section `interface[1].lanes (\"mesh1\""),
            "{e}"
        );
        assert!(
            e.contains("lanes.schedule: lane 7 carries traffic but its longest window is 750000 ns, shorter than a maximum frame"),
            "{e}"
        );
        // Unknown keys inside [lanes] are parse errors naming the key.
        let e = Config::parse(&with_lanes(&format!("{LANES_OK}[lanes.schedule.x]\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x"), "{e}");
    }

    /// The first ```toml block of `text` whose lines start with `prefix`, without it.
    fn toml_block(text: &str, prefix: &str) -> String {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.trim_end()))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .skip_while(|l| *l != "```toml")
            .skip(1)
            .take_while(|l| *l != "```")
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_readme_lanes_example_is_valid() {
        let readme = include_str!("../README.md");
        let block = toml_block(&readme[readme.find("## TSN lanes").unwrap()..], "");
        let b = base();
        let head = &b[..b.find("[[interface]]").unwrap()];
        let c = Config::parse(&format!("{head}{block}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lanes.len(), 1);
        let p = c.lanes[0].config.compile().unwrap();
        assert_eq!(p.plan.gcl.cycle_ns, 1_000_000);
        assert_eq!(p.plan.rules.len, 2);
        assert_eq!(p.queue_limits[0], 100);
    }

    #[test]
    fn the_module_example_is_a_valid_config() {
        let doc = toml_block(include_str!("config.rs"), "//! ");
        let a = Identity::from_seed([1; 32]).id();
        let b = Identity::from_seed([2; 32]).id();
        let c = Identity::from_seed([3; 32]).id();
        let doc = doc.replace(
            "[\"<64 hex>\", \"<64 hex>\", \"<64 hex>\"]",
            &format!("[\"{a}\", \"{b}\", \"{c}\"]"),
        );
        let cfg = Config::parse(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        assert_eq!(cfg.lanes.len(), 1);
        assert_eq!(cfg.lanes[0].iface, "mesh0");
    }
}
