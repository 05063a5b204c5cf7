//! dcmesh testbed: network namespaces, veth links and the processes in them.
//!
//! Everything created here carries the `dcm-` prefix and the creating process's pid, so a
//! rerun after a crash can find and remove its own leftovers ([`netns::clear_stale`]) and
//! nothing else.

pub mod netns;

pub use netns::{run, Netns};
