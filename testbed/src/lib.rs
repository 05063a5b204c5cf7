//! dcmesh testbed: real meshes of network namespaces on one machine, with faults and
//! measurements.
//!
//! - [`topology`]: the TOML topology format (nodes, links, clients, probes, fault script),
//!   validated; [`generate`] builds line, ring, grid and random geometric ones;
//!   [`model`] is the radio path-loss model (distance → SNR → loss).
//! - [`netns`]: namespaces with guaranteed teardown.
//!
//! Everything created here carries the `dcm-` prefix and the creating process's pid, so a
//! rerun after a crash can find and remove its own leftovers ([`netns::clear_stale`]) and
//! nothing else.

pub mod chaos;
pub mod converge;
pub mod daemons;
pub mod generate;
pub mod linkemu;
pub mod mesh;
pub mod model;
pub mod netns;
pub mod plan;
pub mod probe;
pub mod report;
pub mod routes;
pub mod scenario;
pub mod static_ctl;
pub mod topology;
pub mod units;

pub use netns::{run, Netns};
pub use topology::Topology;
