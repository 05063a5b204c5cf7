//! Topology files: nodes, links, client hosts, probe flows and a fault script, in TOML.
//!
//! ```toml
//! name = "diamond"
//! seed = 1                      # drives random choices (power-outage picks); default 1
//!
//! [radio]                       # optional: path-loss model (see `model.rs` for defaults)
//! exponent = 3.0
//!
//! [link_defaults]               # optional
//! rate = "100mbit"              # shaping per direction; absent = unshaped
//! snr_db = 30.0                 # SNR of links with neither snr_db nor positions
//!
//! [daemon]                      # optional: copied into every node's dcmesh.toml
//! hello_interval_ms = 100
//!
//! [[node]]
//! name = "n1"                   # [A-Za-z0-9_], at most 12 characters
//! pos = [0.0, 0.0]              # metres; optional, used for SNR by distance
//!
//! [[link]]
//! nodes = ["n1", "n2"]
//! rate = "20mbit"               # overrides link_defaults.rate
//! snr_db = 25.0                 # else from positions through the model, else the default
//! loss = 0.01                   # frame loss per direction (or [a→b, b→a]);
//!                               # else the model's loss at this SNR
//! schedule = [ { at = "20s", snr_db = 9.0 }, { at = "40s", loss = 0.0 } ]
//!
//! [[client]]
//! name = "c1"
//! node = "n1"
//! prefix = "10.100.1.0/24"      # optional access prefixes; assigned when absent
//! prefix6 = "fd00:100:1::/64"
//!
//! [[probe]]                     # optional; default: every ordered pair of clients
//! from = "c1"
//! to = "c2"
//! rate = 200                    # probes per second
//!
//! [[fault]]                     # see `Action` for every action and its fields
//! at = "30s"
//! action = "link-down"
//! link = "n1-n2"
//! ```
//!
//! [`Topology::parse`] validates everything and names the offending field in its error.
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{
    model::{ModelError, RadioModel},
    units::{Dur, Rate},
};

/// Longest node or client name: interface names are `m-<peer>` / `c-<client>` and Linux
/// allows 15 characters.
pub const MAX_NAME: usize = 12;
/// Default probe rate in packets per second (5 ms resolution for outage lengths).
pub const DEFAULT_PROBE_RATE: u32 = 200;
/// Highest probe rate accepted, per flow.
pub const MAX_PROBE_RATE: u32 = 5000;

/// A whole topology file. Build it with [`Topology::parse`] or a generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub radio: RadioModel,
    #[serde(default)]
    pub link_defaults: LinkDefaults,
    /// Extra settings copied verbatim into every node's daemon config.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub daemon: toml::Table,
    #[serde(rename = "node", default)]
    pub nodes: Vec<Node>,
    #[serde(rename = "link", default)]
    pub links: Vec<Link>,
    #[serde(rename = "client", default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<Client>,
    #[serde(rename = "probe", default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    #[serde(rename = "fault", default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultSpec>,
}

fn default_seed() -> u64 {
    1
}

/// Defaults for links that do not say.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkDefaults {
    /// Rate per direction; `None` leaves links unshaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// SNR in dB of links with neither an explicit SNR nor both node positions.
    pub snr_db: f64,
}

impl Default for LinkDefaults {
    fn default() -> Self {
        Self {
            rate: None,
            snr_db: 30.0,
        }
    }
}

/// A mesh router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// Position in metres, for SNR by distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos: Option<[f64; 2]>,
}

/// Frame loss probability: one value for both directions, or `[a→b, b→a]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Loss {
    Both(f64),
    Each([f64; 2]),
}

impl Loss {
    /// (a→b, b→a).
    pub fn pair(self) -> (f64, f64) {
        match self {
            Self::Both(x) => (x, x),
            Self::Each([a, b]) => (a, b),
        }
    }
}

/// A radio (or cable) link between two nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub nodes: [String; 2],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snr_db: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    /// Changes over time, applied at `at` after the start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<LinkChange>,
}

impl Link {
    /// `"a-b"`, the name faults use.
    pub fn name(&self) -> String {
        format!("{}-{}", self.nodes[0], self.nodes[1])
    }
}

/// One scheduled change of a link's radio conditions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkChange {
    pub at: Dur,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snr_db: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// A host behind a node, owning an access prefix (where probe traffic starts and ends).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub name: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix6: Option<Ipv6Net>,
}

/// A sequence-numbered probe flow between two clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub from: String,
    pub to: String,
    /// Probes per second.
    #[serde(default = "default_rate")]
    pub rate: u32,
}

fn default_rate() -> u32 {
    DEFAULT_PROBE_RATE
}

/// A fault as written in the file: `at`, `action`, and the fields that action needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub at: Dur,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snr_db: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// What a fault does. Links are indexes into [`Topology::links`], nodes into
/// [`Topology::nodes`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Carrier loss on both ends (a cable pulled): the interfaces see NO-CARRIER at once.
    LinkDown(usize),
    /// Carrier back.
    LinkUp(usize),
    /// Silent death: every frame lost in both directions, carrier stays up (a radio
    /// link that fades out). Only missed hellos can tell.
    LinkSilent(usize),
    /// Undo `LinkSilent`: the link's current loss again.
    LinkRestore(usize),
    /// Change loss, SNR and/or rate. A new SNR without a new loss sets the model's loss.
    SetLink {
        link: usize,
        loss: Option<Loss>,
        snr_db: Option<f64>,
        rate: Option<Rate>,
    },
    /// SIGKILL the node's daemon; its datapath keeps forwarding with the tables it has.
    NodeCrash(usize),
    /// Start the node's daemon again (after `NodeCrash`).
    NodeRestart(usize),
    /// Stop the node's daemon and start it again at once, datapath left running.
    ControllerRestart(usize),
    /// Power off: daemon killed, datapath detached, interfaces down. Neighbours keep their
    /// carrier (radio), so they notice only by missed hellos.
    PowerOff(Vec<usize>),
    /// Power back on: interfaces up, daemon started.
    PowerOn(Vec<usize>),
    /// A share of nodes (chosen with the topology seed among nodes without clients) off
    /// for `duration`; expanded into `PowerOff` and `PowerOn`.
    PowerOutage { share: f64, duration: Duration },
    /// Every link between `nodes` and the rest goes silent.
    Partition(Vec<usize>),
    /// Every partition ends.
    Heal,
}

/// A fault at a time after the start.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub action: Action,
}

/// Why a topology was refused. Each message names the field.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> TopologyError {
    TopologyError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

fn check_name(field: &str, name: &str) -> Result<(), TopologyError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(
            field,
            format!(
                "\"{name}\" must be 1..={MAX_NAME} characters of A-Z, a-z, 0-9 or _ \
                 (it becomes part of interface names)"
            ),
        ));
    }
    Ok(())
}

fn check_loss(field: &str, loss: Loss) -> Result<(), TopologyError> {
    let (a, b) = loss.pair();
    for x in [a, b] {
        if !(0.0..=1.0).contains(&x) {
            return Err(invalid(field, format!("{x} is not a probability in 0..=1")));
        }
    }
    Ok(())
}

fn check_snr(field: &str, snr: f64) -> Result<(), TopologyError> {
    if !snr.is_finite() || !(-50.0..=100.0).contains(&snr) {
        return Err(invalid(field, format!("{snr} dB is outside -50..=100 dB")));
    }
    Ok(())
}

/// A link's radio conditions at one moment: what the emulation applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkState {
    /// Frame loss a→b and b→a.
    pub loss: (f64, f64),
    /// SNR in dB (both directions see the same path).
    pub snr_db: f64,
    pub rate: Option<Rate>,
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        let t: Topology = toml::from_str(text)?;
        t.validate()?;
        Ok(t)
    }

    /// The file form (TOML) of this topology.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a topology always serialises")
    }

    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Index of the client called `name`.
    pub fn client_index(&self, name: &str) -> Option<usize> {
        self.clients.iter().position(|c| c.name == name)
    }

    /// Index of the link `"a-b"` (either order).
    pub fn link_index(&self, name: &str) -> Option<usize> {
        let (a, b) = name.split_once('-')?;
        self.links.iter().position(|l| {
            (l.nodes[0] == a && l.nodes[1] == b) || (l.nodes[0] == b && l.nodes[1] == a)
        })
    }

    /// Node indexes of link `i`'s ends.
    pub fn link_ends(&self, i: usize) -> (usize, usize) {
        let l = &self.links[i];
        (
            self.node_index(&l.nodes[0]).expect("validated"),
            self.node_index(&l.nodes[1]).expect("validated"),
        )
    }

    /// Distance in metres between two nodes, when both have positions.
    pub fn distance(&self, a: usize, b: usize) -> Option<f64> {
        let (p, q) = (self.nodes[a].pos?, self.nodes[b].pos?);
        Some(((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt())
    }

    /// Link `i`'s conditions at the start: explicit values first, then the model.
    pub fn initial_state(&self, i: usize) -> LinkState {
        let l = &self.links[i];
        let (a, b) = self.link_ends(i);
        let snr = l
            .snr_db
            .or_else(|| self.distance(a, b).map(|d| self.radio.snr_db(d)))
            .unwrap_or(self.link_defaults.snr_db);
        let loss = match l.loss {
            Some(x) => x.pair(),
            None => {
                let x = self.radio.loss(snr);
                (x, x)
            }
        };
        LinkState {
            loss,
            snr_db: snr,
            rate: l.rate.or(self.link_defaults.rate),
        }
    }

    /// A link's state after a change: a new SNR without a new loss takes the model's loss.
    pub fn apply_change(
        &self,
        s: LinkState,
        loss: Option<Loss>,
        snr_db: Option<f64>,
        rate: Option<Rate>,
    ) -> LinkState {
        let mut s = s;
        if let Some(snr) = snr_db {
            s.snr_db = snr;
            let x = self.radio.loss(snr);
            s.loss = (x, x);
        }
        if let Some(l) = loss {
            s.loss = l.pair();
        }
        if rate.is_some() {
            s.rate = rate;
        }
        s
    }

    /// The probe flows: the listed ones, or every ordered pair of clients.
    pub fn probe_flows(&self) -> Vec<Probe> {
        if !self.probes.is_empty() {
            return self.probes.clone();
        }
        let mut out = Vec::new();
        for a in &self.clients {
            for b in &self.clients {
                if a.name != b.name {
                    out.push(Probe {
                        from: a.name.clone(),
                        to: b.name.clone(),
                        rate: DEFAULT_PROBE_RATE,
                    });
                }
            }
        }
        out
    }

    /// Client `i`'s access prefixes (assigned ones: 10.100.<i+1>.0/24, fd00:100:<i+1>::/64).
    pub fn client_prefixes(&self, i: usize) -> (Ipv4Net, Ipv6Net) {
        let c = &self.clients[i];
        let n = i as u32 + 1;
        let v4 = c.prefix.unwrap_or_else(|| {
            Ipv4Net::new(Ipv4Addr::from(0x0a64_0000 | (n << 8)), 24).expect("valid")
        });
        let v6 = c.prefix6.unwrap_or_else(|| {
            Ipv6Net::new(
                std::net::Ipv6Addr::new(0xfd00, 0x100, n as u16, 0, 0, 0, 0, 0),
                64,
            )
            .expect("valid")
        });
        (v4.trunc(), v6.trunc())
    }

    /// Validates names, references, ranges and prefixes.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        self.radio.validate()?;
        check_snr("link_defaults.snr_db", self.link_defaults.snr_db)?;
        if self.nodes.is_empty() {
            return Err(invalid("node", "a topology needs at least one [[node]]"));
        }
        let mut names = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let f = format!("node[{i}].name");
            check_name(&f, &n.name)?;
            if names.insert(n.name.as_str(), "node").is_some() {
                return Err(invalid(f, format!("\"{}\" is used twice", n.name)));
            }
            if let Some(p) = n.pos {
                if !p.iter().all(|x| x.is_finite()) {
                    return Err(invalid(format!("node[{i}].pos"), "must be finite metres"));
                }
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            let f = format!("link[{i}]");
            for end in &l.nodes {
                if self.node_index(end).is_none() {
                    return Err(invalid(
                        format!("{f}.nodes"),
                        format!("no node called \"{end}\""),
                    ));
                }
            }
            if l.nodes[0] == l.nodes[1] {
                return Err(invalid(
                    format!("{f}.nodes"),
                    "a link needs two different nodes",
                ));
            }
            if self.links[..i]
                .iter()
                .any(|o| self.link_index(&o.name()) == self.link_index(&l.name()))
            {
                return Err(invalid(
                    format!("{f}.nodes"),
                    format!(
                        "{} is listed twice (parallel links are not supported)",
                        l.name()
                    ),
                ));
            }
            if let Some(s) = l.snr_db {
                check_snr(&format!("{f}.snr_db"), s)?;
            }
            if let Some(x) = l.loss {
                check_loss(&format!("{f}.loss"), x)?;
            }
            let mut last = Duration::ZERO;
            for (j, c) in l.schedule.iter().enumerate() {
                let g = format!("{f}.schedule[{j}]");
                if c.at.0 < last {
                    return Err(invalid(
                        format!("{g}.at"),
                        "schedule times must not decrease",
                    ));
                }
                last = c.at.0;
                if c.snr_db.is_none() && c.loss.is_none() && c.rate.is_none() {
                    return Err(invalid(g, "changes nothing: give snr_db, loss or rate"));
                }
                if let Some(s) = c.snr_db {
                    check_snr(&format!("{g}.snr_db"), s)?;
                }
                if let Some(x) = c.loss {
                    check_loss(&format!("{g}.loss"), x)?;
                }
            }
        }
        let mut v4: Vec<(Ipv4Net, String)> = Vec::new();
        let mut v6: Vec<(Ipv6Net, String)> = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            let f = format!("client[{i}]");
            check_name(&format!("{f}.name"), &c.name)?;
            if names.insert(c.name.as_str(), "client").is_some() {
                return Err(invalid(
                    format!("{f}.name"),
                    format!("\"{}\" is already a node or client name", c.name),
                ));
            }
            if self.node_index(&c.node).is_none() {
                return Err(invalid(
                    format!("{f}.node"),
                    format!("no node called \"{}\"", c.node),
                ));
            }
            let (p4, p6) = self.client_prefixes(i);
            if p4.prefix_len() > 30 {
                return Err(invalid(
                    format!("{f}.prefix"),
                    "needs room for a gateway and a host: /30 or shorter",
                ));
            }
            if p6.prefix_len() > 126 {
                return Err(invalid(format!("{f}.prefix6"), "/126 or shorter"));
            }
            if crate::plan::NODE_V4.contains(&p4.network())
                || p4.contains(&crate::plan::NODE_V4.network())
            {
                return Err(invalid(
                    format!("{f}.prefix"),
                    format!(
                        "{p4} overlaps the node address block {}",
                        crate::plan::NODE_V4
                    ),
                ));
            }
            for (o, who) in &v4 {
                if o.contains(&p4.network()) || p4.contains(&o.network()) {
                    return Err(invalid(
                        format!("{f}.prefix"),
                        format!("{p4} overlaps {o} of {who}"),
                    ));
                }
            }
            for (o, who) in &v6 {
                if o.contains(&p6.network()) || p6.contains(&o.network()) {
                    return Err(invalid(
                        format!("{f}.prefix6"),
                        format!("{p6} overlaps {o} of {who}"),
                    ));
                }
            }
            v4.push((p4, c.name.clone()));
            v6.push((p6, c.name.clone()));
        }
        for (i, p) in self.probes.iter().enumerate() {
            let f = format!("probe[{i}]");
            for (k, end) in [("from", &p.from), ("to", &p.to)] {
                if self.client_index(end).is_none() {
                    return Err(invalid(
                        format!("{f}.{k}"),
                        format!("no client called \"{end}\" (probes run between clients)"),
                    ));
                }
            }
            if p.from == p.to {
                return Err(invalid(&f, "from and to must differ"));
            }
            if p.rate == 0 || p.rate > MAX_PROBE_RATE {
                return Err(invalid(
                    format!("{f}.rate"),
                    format!("{} is outside 1..={MAX_PROBE_RATE} probes/s", p.rate),
                ));
            }
        }
        self.faults()?;
        Ok(())
    }

    /// The fault script, typed and checked (power outages not yet expanded; see
    /// [`Topology::timeline`]).
    pub fn faults(&self) -> Result<Vec<Fault>, TopologyError> {
        self.faults
            .iter()
            .enumerate()
            .map(|(i, f)| self.fault(i, f))
            .collect()
    }

    fn fault(&self, i: usize, f: &FaultSpec) -> Result<Fault, TopologyError> {
        let field = format!("fault[{i}]");
        let need_link = || -> Result<usize, TopologyError> {
            let name = f.link.as_deref().ok_or_else(|| {
                invalid(
                    &field,
                    format!("action \"{}\" needs link = \"a-b\"", f.action),
                )
            })?;
            self.link_index(name).ok_or_else(|| {
                invalid(
                    format!("{field}.link"),
                    format!("no link \"{name}\" (write it as \"nodeA-nodeB\")"),
                )
            })
        };
        let need_node = || -> Result<usize, TopologyError> {
            let name = f.node.as_deref().ok_or_else(|| {
                invalid(
                    &field,
                    format!("action \"{}\" needs node = \"name\"", f.action),
                )
            })?;
            self.node_index(name)
                .ok_or_else(|| invalid(format!("{field}.node"), format!("no node \"{name}\"")))
        };
        let need_nodes = || -> Result<Vec<usize>, TopologyError> {
            let names = f.nodes.as_ref().ok_or_else(|| {
                invalid(
                    &field,
                    format!("action \"{}\" needs nodes = [...]", f.action),
                )
            })?;
            if names.is_empty() {
                return Err(invalid(format!("{field}.nodes"), "must not be empty"));
            }
            names
                .iter()
                .map(|n| {
                    self.node_index(n).ok_or_else(|| {
                        invalid(format!("{field}.nodes"), format!("no node \"{n}\""))
                    })
                })
                .collect()
        };
        // Fields an action does not use are refused, so a typo'd action cannot pass silently.
        let used: &[&str] = match f.action.as_str() {
            "link-down" | "link-up" | "link-silent" | "link-restore" => &["link"],
            "set-link" => &["link", "loss", "snr_db", "rate"],
            "node-crash" | "node-restart" | "controller-restart" => &["node"],
            "power-off" | "power-on" | "partition" => &["nodes"],
            "power-outage" => &["share", "duration"],
            "heal" => &[],
            other => {
                return Err(invalid(
                    format!("{field}.action"),
                    format!(
                        "unknown action \"{other}\"; use link-down, link-up, link-silent, \
                         link-restore, set-link, node-crash, node-restart, controller-restart, \
                         power-off, power-on, power-outage, partition or heal"
                    ),
                ))
            }
        };
        let present = [
            ("link", f.link.is_some()),
            ("node", f.node.is_some()),
            ("nodes", f.nodes.is_some()),
            ("share", f.share.is_some()),
            ("duration", f.duration.is_some()),
            ("loss", f.loss.is_some()),
            ("snr_db", f.snr_db.is_some()),
            ("rate", f.rate.is_some()),
        ];
        for (k, there) in present {
            if there && !used.contains(&k) {
                return Err(invalid(
                    format!("{field}.{k}"),
                    format!("action \"{}\" does not use {k}", f.action),
                ));
            }
        }
        let action = match f.action.as_str() {
            "link-down" => Action::LinkDown(need_link()?),
            "link-up" => Action::LinkUp(need_link()?),
            "link-silent" => Action::LinkSilent(need_link()?),
            "link-restore" => Action::LinkRestore(need_link()?),
            "set-link" => {
                if f.loss.is_none() && f.snr_db.is_none() && f.rate.is_none() {
                    return Err(invalid(
                        &field,
                        "set-link changes nothing: give loss, snr_db or rate",
                    ));
                }
                if let Some(x) = f.loss {
                    check_loss(&format!("{field}.loss"), x)?;
                }
                if let Some(s) = f.snr_db {
                    check_snr(&format!("{field}.snr_db"), s)?;
                }
                Action::SetLink {
                    link: need_link()?,
                    loss: f.loss,
                    snr_db: f.snr_db,
                    rate: f.rate,
                }
            }
            "node-crash" => Action::NodeCrash(need_node()?),
            "node-restart" => Action::NodeRestart(need_node()?),
            "controller-restart" => Action::ControllerRestart(need_node()?),
            "power-off" => Action::PowerOff(need_nodes()?),
            "power-on" => Action::PowerOn(need_nodes()?),
            "partition" => Action::Partition(need_nodes()?),
            "heal" => Action::Heal,
            "power-outage" => {
                let share = f
                    .share
                    .ok_or_else(|| invalid(&field, "power-outage needs share = 0..1"))?;
                if !(share > 0.0 && share <= 1.0) {
                    return Err(invalid(
                        format!("{field}.share"),
                        format!("{share} is not in (0, 1]"),
                    ));
                }
                let duration = f
                    .duration
                    .ok_or_else(|| invalid(&field, "power-outage needs duration (e.g. \"10s\")"))?
                    .0;
                Action::PowerOutage { share, duration }
            }
            _ => unreachable!("checked above"),
        };
        Ok(Fault { at: f.at.0, action })
    }

    /// Every scheduled event in time order: the fault script (power outages expanded with
    /// the topology seed) and the links' schedules (as `SetLink`). Ties keep file order,
    /// link schedules before faults.
    pub fn timeline(&self) -> Result<Vec<Fault>, TopologyError> {
        let mut out = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            for c in &l.schedule {
                out.push(Fault {
                    at: c.at.0,
                    action: Action::SetLink {
                        link: i,
                        loss: c.loss,
                        snr_db: c.snr_db,
                        rate: c.rate,
                    },
                });
            }
        }
        let mut rng = fastrand::Rng::with_seed(self.seed);
        for f in self.faults()? {
            match f.action {
                Action::PowerOutage { share, duration } => {
                    let nodes = self.outage_pick(share, &mut rng);
                    out.push(Fault {
                        at: f.at,
                        action: Action::PowerOff(nodes.clone()),
                    });
                    out.push(Fault {
                        at: f.at + duration,
                        action: Action::PowerOn(nodes),
                    });
                }
                _ => out.push(f),
            }
        }
        out.sort_by_key(|f| f.at);
        Ok(out)
    }

    /// Nodes for a power outage: `ceil(share · candidates)` of the nodes without clients
    /// (so probe endpoints stay up and delivery stays measurable), at least one.
    pub fn outage_pick(&self, share: f64, rng: &mut fastrand::Rng) -> Vec<usize> {
        let mut cand: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.clients.iter().any(|c| c.node == self.nodes[i].name))
            .collect();
        if cand.is_empty() {
            return Vec::new();
        }
        let k = ((share * cand.len() as f64).ceil() as usize).clamp(1, cand.len());
        rng.shuffle(&mut cand);
        let mut pick = cand[..k].to_vec();
        pick.sort_unstable();
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAMOND: &str = r#"
        name = "diamond"
        [link_defaults]
        rate = "50mbit"
        [[node]]
        name = "n1"
        [[node]]
        name = "n2"
        [[node]]
        name = "n3"
        [[node]]
        name = "n4"
        [[link]]
        nodes = ["n1", "n2"]
        [[link]]
        nodes = ["n1", "n3"]
        loss = [0.01, 0.02]
        [[link]]
        nodes = ["n2", "n4"]
        snr_db = 12.0
        schedule = [{ at = "10s", snr_db = 20.0 }, { at = "20s", loss = 0.5 }]
        [[link]]
        nodes = ["n3", "n4"]
        [[client]]
        name = "c1"
        node = "n1"
        [[client]]
        name = "c2"
        node = "n4"
        prefix = "192.168.7.0/24"
        [[fault]]
        at = "5s"
        action = "link-down"
        link = "n2-n1"
        [[fault]]
        at = "6s"
        action = "power-outage"
        share = 0.5
        duration = "3s"
    "#;

    fn err(text: &str) -> String {
        Topology::parse(text).unwrap_err().to_string()
    }

    fn with(extra: &str) -> String {
        format!("{DIAMOND}\n{extra}")
    }

    #[test]
    fn a_full_file_parses() {
        let t = Topology::parse(DIAMOND).unwrap();
        assert_eq!(t.nodes.len(), 4);
        assert_eq!(t.links.len(), 4);
        assert_eq!(t.seed, 1);
        assert_eq!(t.link_index("n2-n1"), Some(0));
        assert_eq!(t.link_index("n1-n4"), None);
        // Defaults and explicit values.
        let s0 = t.initial_state(0);
        assert_eq!(s0.rate, Some(Rate(50_000_000)));
        assert_eq!(s0.snr_db, 30.0);
        assert!(s0.loss.0 < 1e-9);
        assert_eq!(t.initial_state(1).loss, (0.01, 0.02));
        let s2 = t.initial_state(2);
        assert_eq!(s2.snr_db, 12.0);
        assert!((s2.loss.0 - t.radio.loss(12.0)).abs() < 1e-12);
        // Prefixes: assigned and given.
        assert_eq!(t.client_prefixes(0).0.to_string(), "10.100.1.0/24");
        assert_eq!(t.client_prefixes(0).1.to_string(), "fd00:100:1::/64");
        assert_eq!(t.client_prefixes(1).0.to_string(), "192.168.7.0/24");
        // Default probes: both directions between the two clients.
        assert_eq!(t.probe_flows().len(), 2);
    }

    #[test]
    fn timeline_merges_schedules_and_expands_outages() {
        let t = Topology::parse(DIAMOND).unwrap();
        let tl = t.timeline().unwrap();
        let at: Vec<u64> = tl.iter().map(|f| f.at.as_secs()).collect();
        assert_eq!(at, vec![5, 6, 9, 10, 20]);
        assert_eq!(tl[0].action, Action::LinkDown(0));
        let Action::PowerOff(off) = &tl[1].action else {
            panic!("{:?}", tl[1].action)
        };
        // Half of the two client-less nodes (n2, n3) rounded up: one of them.
        assert_eq!(off.len(), 1);
        assert!(off[0] == 1 || off[0] == 2);
        assert_eq!(tl[2].action, Action::PowerOn(off.clone()));
        // Same seed, same pick.
        assert_eq!(t.timeline().unwrap(), tl);
    }

    #[test]
    fn snr_change_moves_loss_along_the_model() {
        let t = Topology::parse(DIAMOND).unwrap();
        let s = t.initial_state(1);
        let s2 = t.apply_change(s, None, Some(8.0), None);
        assert_eq!(s2.snr_db, 8.0);
        assert_eq!(s2.loss.0, t.radio.loss(8.0));
        let s3 = t.apply_change(s2, Some(Loss::Both(0.2)), None, None);
        assert_eq!(s3.loss, (0.2, 0.2));
        assert_eq!(s3.snr_db, 8.0);
        assert_eq!(s3.rate, s.rate);
    }

    #[test]
    fn positions_give_snr_through_the_model() {
        let t = Topology::parse(
            r#"
            name = "p"
            [[node]]
            name = "a"
            pos = [0.0, 0.0]
            [[node]]
            name = "b"
            pos = [300.0, 400.0]
            [[link]]
            nodes = ["a", "b"]
        "#,
        )
        .unwrap();
        let s = t.initial_state(0);
        assert!((s.snr_db - t.radio.snr_db(500.0)).abs() < 1e-9);
        assert!((s.loss.0 - t.radio.loss(s.snr_db)).abs() < 1e-12);
    }

    #[test]
    fn the_file_form_round_trips() {
        let t = Topology::parse(DIAMOND).unwrap();
        let again = Topology::parse(&t.to_toml()).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("name = \"x\"\nbogus = 1", "bogus"),
            ("name = \"x\"", "at least one [[node]]"),
            ("name = \"x\"\n[[node]]\nname = \"a-b\"", "node[0].name"),
            (
                "name = \"x\"\n[[node]]\nname = \"abcdefghijklm\"",
                "node[0].name",
            ),
            (
                "name = \"x\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"",
                "used twice",
            ),
            (
                "name = \"x\"\n[[node]]\nname = \"a\"\n[[link]]\nnodes = [\"a\", \"z\"]",
                "link[0].nodes: no node called \"z\"",
            ),
            (
                "name = \"x\"\n[[node]]\nname = \"a\"\n[[link]]\nnodes = [\"a\", \"a\"]",
                "two different nodes",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
        for (extra, want) in [
            ("[[link]]\nnodes = [\"n4\", \"n3\"]", "listed twice"),
            ("[[link]]\nnodes = [\"n1\", \"n4\"]\nloss = 1.5", "link[4].loss"),
            ("[[link]]\nnodes = [\"n1\", \"n4\"]\nsnr_db = 1000.0", "link[4].snr_db"),
            (
                "[[link]]\nnodes = [\"n1\", \"n4\"]\nschedule = [{ at = \"5s\", loss = 0.1 }, { at = \"1s\", loss = 0.1 }]",
                "must not decrease",
            ),
            (
                "[[link]]\nnodes = [\"n1\", \"n4\"]\nschedule = [{ at = \"5s\" }]",
                "changes nothing",
            ),
            ("[[client]]\nname = \"n1\"\nnode = \"n1\"", "already a node"),
            ("[[client]]\nname = \"c3\"\nnode = \"n9\"", "client[2].node"),
            (
                "[[client]]\nname = \"c3\"\nnode = \"n2\"\nprefix = \"192.168.0.0/16\"",
                "overlaps 192.168.7.0/24",
            ),
            (
                "[[client]]\nname = \"c3\"\nnode = \"n2\"\nprefix = \"10.255.0.0/16\"",
                "node address block",
            ),
            (
                "[[client]]\nname = \"c3\"\nnode = \"n2\"\nprefix = \"10.9.0.1/32\"",
                "/30 or shorter",
            ),
            ("[[probe]]\nfrom = \"c1\"\nto = \"c9\"", "probe[0].to"),
            ("[[probe]]\nfrom = \"c1\"\nto = \"c1\"", "must differ"),
            ("[[probe]]\nfrom = \"c1\"\nto = \"c2\"\nrate = 0", "probe[0].rate"),
            ("[[fault]]\nat = 1\naction = \"explode\"", "unknown action"),
            ("[[fault]]\nat = 1\naction = \"link-down\"", "needs link"),
            ("[[fault]]\nat = 1\naction = \"link-down\"\nlink = \"n1-n4\"", "no link \"n1-n4\""),
            (
                "[[fault]]\nat = 1\naction = \"link-down\"\nlink = \"n1-n2\"\nnode = \"n1\"",
                "does not use node",
            ),
            ("[[fault]]\nat = 1\naction = \"node-crash\"\nnode = \"x\"", "fault[2].node"),
            ("[[fault]]\nat = 1\naction = \"partition\"\nnodes = []", "must not be empty"),
            (
                "[[fault]]\nat = 1\naction = \"power-outage\"\nshare = 1.5\nduration = 1",
                "fault[2].share",
            ),
            ("[[fault]]\nat = 1\naction = \"power-outage\"\nshare = 0.5", "needs duration"),
            ("[[fault]]\nat = 1\naction = \"set-link\"\nlink = \"n1-n2\"", "changes nothing"),
            ("[[fault]]\nat = \"soon\"\naction = \"heal\"", "not a duration"),
            ("[radio]\nexponent = -1.0", "radio.exponent"),
        ] {
            let e = err(&with(extra));
            assert!(e.contains(want), "{extra:?}: {e}");
        }
    }

    #[test]
    fn outage_picks_only_client_less_nodes() {
        let t = Topology::parse(DIAMOND).unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..50 {
            let p = t.outage_pick(1.0, &mut rng);
            assert_eq!(p, vec![1, 2]);
            let p = t.outage_pick(0.01, &mut rng);
            assert_eq!(p.len(), 1);
            assert!(p[0] == 1 || p[0] == 2);
        }
    }
}
