//! The loader's typed errors: each says what was wanted, what was found, and what to do.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("dcmesh needs root (CAP_BPF and CAP_NET_ADMIN) to load XDP programs; run it as root")]
    NotRoot,
    #[error("interface \"{0}\" not found; run \"ip link\" to list interfaces")]
    UnknownInterface(String),
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error("the kernel refused to load the dcmesh object: {0} (dcmesh needs BPF, BTF and XDP: Linux ≥ 5.15)")]
    Load(String),
    #[error("the kernel refused the XDP program: {0}")]
    Program(String),
    #[error("program or map \"{0}\" missing from the eBPF object (loader and ebpf/ out of step; rebuild)")]
    MissingInObject(&'static str),
    #[error("cannot attach XDP to \"{iface}\" in {mode} mode: {reason}")]
    Attach {
        iface: String,
        mode: String,
        reason: String,
    },
    #[error("XDP link on \"{iface}\": {reason}")]
    Link { iface: String, reason: String },
    #[error("dcmesh is not attached to \"{iface}\" (no pinned link at {pin})")]
    NotAttached { iface: String, pin: PathBuf },
    #[error("next hop {0} does not exist; add it first (\"dcmesh-loader nexthop add\")")]
    NoSuchNextHop(u32),
    #[error("next hop id {id} out of range 1..{max}")]
    NextHopRange { id: u32, max: u32 },
    #[error("no free egress port slot (all {0} in use)")]
    PortsFull(u32),
    #[error("no route for {0}")]
    NoSuchRoute(String),
    #[error("invalid prefix \"{0}\": {1}")]
    BadPrefix(String, String),
    #[error("map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("pinned map {path} was made by another dcmesh version: it has {found}, this one needs {expected}; remove the old datapath with \"dcmesh-loader --pin-dir {pin_dir} teardown\" (forwarding stops until the new one is attached) and start again")]
    PinnedMapMismatch {
        path: PathBuf,
        pin_dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error("pinned maps not found under {0}; is the datapath loaded (\"dcmesh-loader attach\")?")]
    NotLoaded(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl LoaderError {
    pub(crate) fn load(e: aya::EbpfError) -> Self {
        Self::Load(chain(&e))
    }
    pub(crate) fn program(e: impl std::error::Error) -> Self {
        Self::Program(chain(&e))
    }
    pub(crate) fn map(map: &'static str) -> impl Fn(aya::maps::MapError) -> Self {
        move |e| Self::Map {
            map,
            reason: chain(&e),
        }
    }
}

/// An error and its causes on one line (aya nests the verifier log and errno in sources).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(crate) fn require_root() -> Result<(), LoaderError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LoaderError::NotRoot);
    }
    Ok(())
}
