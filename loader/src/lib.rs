//! dcmesh loader: loads the XDP forwarding program, attaches and pins it, and offers typed
//! handles on the maps it shares with userspace.
//!
//! Two ways in:
//! - [`Datapath::load`] loads the program (reusing pinned maps when a pin directory is given,
//!   so a restart never empties the tables) and attaches it to interfaces; links are pinned
//!   so forwarding continues after the process exits.
//! - [`Tables::open_pinned`] opens the pinned maps of a running datapath without loading
//!   anything, for route writers and the CLI.
//!
//! Route computation lives in `control/`; this crate only writes what it is told.

mod bpffs;
mod error;
mod iface;
pub mod lanes;
mod tables;

pub use error::LoaderError;
pub use iface::{format_mac, ifname, parse_mac};
pub use iface::{ifindex, interface_info, InterfaceInfo};
pub use tables::{Counters, IpNet, NextHopSpec, RouteTarget, Tables};

use std::path::{Path, PathBuf};

use aya::{
    programs::{links::FdLink, links::PinnedLink, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use dcmesh_schema::{maps, programs};

/// The production eBPF object (built by build.rs from ebpf/).
pub static DCMESH_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcmesh-xdp"));
/// Bench and testbed helper programs (generator, sink, bare redirect).
pub static TOOLS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcmesh-tools"));

/// Default pin directory on a real router.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/dcmesh";

/// How to attach XDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode; fall back to generic with a warning if the driver lacks it.
    #[default]
    Auto,
    /// Native only: fail if the driver cannot.
    Native,
    /// Generic (skb) mode: slower, works on every interface.
    Generic,
}

/// What [`Datapath::attach`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Attached fresh, in this mode.
    New { native: bool },
    /// The interface already ran a dcmesh program: replaced it atomically (no gap).
    Replaced,
}

/// A loaded forwarding program and its tables.
pub struct Datapath {
    ebpf: Ebpf,
    tables: Tables,
    pin_dir: Option<PathBuf>,
    links: Vec<aya::programs::xdp::XdpLink>,
}

impl Datapath {
    /// Loads the forwarding program. With `pin_dir`, maps are pinned there (and reused if
    /// already pinned, keeping every route across restarts); bpffs is mounted if needed.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, LoaderError> {
        error::require_root()?;
        let mut loader = EbpfLoader::new();
        let map_paths: Vec<(&str, PathBuf)>;
        if let Some(dir) = pin_dir {
            bpffs::ensure_dir(&dir.join("maps"))?;
            bpffs::ensure_dir(&dir.join("links"))?;
            map_paths = maps::FORWARDING
                .iter()
                .map(|name| (*name, dir.join("maps").join(name)))
                .collect();
            for (name, path) in &map_paths {
                check_pinned_shape(dir, name, path)?;
                loader.map_pin_path(name, path.as_path());
            }
        }
        let mut ebpf = loader.load(DCMESH_OBJ).map_err(LoaderError::load)?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load().map_err(LoaderError::program)?;
        let tables = Tables::take_from(&mut ebpf)?;
        Ok(Self {
            ebpf,
            tables,
            pin_dir: pin_dir.map(Path::to_path_buf),
            links: Vec::new(),
        })
    }

    /// The tables (routes, next hops, counters) this program reads.
    pub fn tables(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// The forwarding program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> Result<&mut Xdp, LoaderError> {
        program(&mut self.ebpf)
    }

    /// Attaches to `iface`. If a pinned dcmesh link exists there, the program is swapped in
    /// atomically; otherwise a new link is created (and pinned when a pin dir is set).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<Attached, LoaderError> {
        let index = iface::ifindex(iface)?;
        let link_pin = self.link_pin(iface);
        let prog = program(&mut self.ebpf)?;
        if let Some(path) = link_pin.as_ref().filter(|p| p.exists()) {
            let pinned = PinnedLink::from_pin(path).map_err(|e| LoaderError::Link {
                iface: iface.into(),
                reason: e.to_string(),
            })?;
            let fd: FdLink = pinned.into();
            let link = aya::programs::xdp::XdpLink::try_from(fd).map_err(LoaderError::program)?;
            let id = prog.attach_to_link(link).map_err(LoaderError::program)?;
            // The pin keeps the link (now running the new program); our handle can go.
            let link = prog.take_link(id).map_err(LoaderError::program)?;
            drop(link);
            return Ok(Attached::Replaced);
        }
        let (id, native) = match mode {
            AttachMode::Generic => (attach_mode(prog, iface, index, XdpMode::Skb)?, false),
            AttachMode::Native => (attach_mode(prog, iface, index, XdpMode::Driver)?, true),
            AttachMode::Auto => match attach_mode(prog, iface, index, XdpMode::Driver) {
                Ok(id) => (id, true),
                Err(e) => {
                    log::warn!(
                        "{iface}: native XDP unavailable ({e}); using generic XDP, which is slower"
                    );
                    (attach_mode(prog, iface, index, XdpMode::Skb)?, false)
                }
            },
        };
        let link = prog.take_link(id).map_err(LoaderError::program)?;
        if let Some(path) = link_pin {
            let fd: FdLink = link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| LoaderError::Link {
                    iface: iface.into(),
                    reason: format!("kernel gave no bpf_link (needs Linux ≥ 5.9): {e}"),
                })?;
            fd.pin(&path).map_err(|e| LoaderError::Link {
                iface: iface.into(),
                reason: format!("pin {}: {e}", path.display()),
            })?;
        } else {
            // Unpinned: the link lives (and the program stays attached) as long as we do.
            self.links.push(link);
        }
        Ok(Attached::New { native })
    }

    fn link_pin(&self, iface: &str) -> Option<PathBuf> {
        self.pin_dir.as_ref().map(|d| link_pin_path(d, iface))
    }
}

/// Key size, value size and capacity this build's program expects of a forwarding map.
fn expected_shape(name: &str) -> Option<(u32, u32, u32)> {
    use core::mem::size_of;
    use dcmesh_schema::*;
    let v = |n: usize| n as u32;
    Some(match name {
        maps::ROUTES_V4 => (4 + 4, v(size_of::<Route>()), MAX_ROUTES_V4),
        maps::ROUTES_V6 => (4 + 16, v(size_of::<Route>()), MAX_ROUTES_V6),
        maps::NEXTHOPS => (4, v(size_of::<NextHop>()), MAX_NEXTHOPS),
        // `bpf_devmap_val`: ifindex and a program fd/id.
        maps::TX_PORTS => (4, 8, MAX_TX_PORTS),
        maps::CONFIG => (4, v(size_of::<DatapathConfig>()), 1),
        maps::COUNTERS => (4, v(size_of::<CounterValue>()), NUM_COUNTERS),
        _ => return None,
    })
}

/// Refuses a pinned map whose shape differs from what this build expects (left by another
/// dcmesh version): the kernel would reuse it silently and the program would misread it.
fn check_pinned_shape(pin_dir: &Path, name: &str, path: &Path) -> Result<(), LoaderError> {
    let (Some(want), true) = (expected_shape(name), path.exists()) else {
        return Ok(());
    };
    let info = aya::maps::MapInfo::from_pin(path).map_err(LoaderError::map(maps_name(name)))?;
    let found = (info.key_size(), info.value_size(), info.max_entries());
    if found == want {
        return Ok(());
    }
    let show = |(k, v, n): (u32, u32, u32)| format!("key {k} B, value {v} B, {n} entries");
    Err(LoaderError::PinnedMapMismatch {
        path: path.to_path_buf(),
        pin_dir: pin_dir.to_path_buf(),
        found: show(found),
        expected: show(want),
    })
}

/// The schema's `'static` name for a forwarding map name.
fn maps_name(name: &str) -> &'static str {
    maps::FORWARDING
        .iter()
        .find(|m| **m == name)
        .copied()
        .unwrap_or("pinned map")
}

fn link_pin_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join("links").join(format!("xdp-{iface}"))
}

/// Detaches dcmesh from `iface` by removing its pinned link.
pub fn detach(pin_dir: &Path, iface: &str) -> Result<(), LoaderError> {
    error::require_root()?;
    let path = link_pin_path(pin_dir, iface);
    if !path.exists() {
        return Err(LoaderError::NotAttached {
            iface: iface.into(),
            pin: path,
        });
    }
    std::fs::remove_file(&path).map_err(|e| LoaderError::Io {
        what: format!("remove {}", path.display()),
        source: e,
    })
}

/// Interfaces with a pinned dcmesh link under `pin_dir`.
pub fn attached_interfaces(pin_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("xdp-"))
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// Detaches every interface and removes the pinned maps: forwarding stops, tables go.
pub fn teardown(pin_dir: &Path) -> Result<(), LoaderError> {
    for iface in attached_interfaces(pin_dir) {
        detach(pin_dir, &iface)?;
    }
    let maps = pin_dir.join("maps");
    if maps.exists() {
        std::fs::remove_dir_all(&maps).map_err(|e| LoaderError::Io {
            what: format!("remove {}", maps.display()),
            source: e,
        })?;
    }
    let _ = std::fs::remove_dir(pin_dir.join("links"));
    Ok(())
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoaderError> {
    ebpf.program_mut(programs::XDP_FORWARD)
        .ok_or(LoaderError::MissingInObject(programs::XDP_FORWARD))?
        .try_into()
        .map_err(LoaderError::program)
}

fn attach_mode(
    prog: &mut Xdp,
    iface: &str,
    index: u32,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, LoaderError> {
    prog.attach_to_if_index(index, mode)
        .map_err(|e| LoaderError::Attach {
            iface: iface.into(),
            mode: format!("{mode:?}"),
            reason: error::chain(&e),
        })
}
