//! dcmesh control plane.
//!
//! Data flows one way: hellos → link metrics ([`metric`]) → signed adverts ([`wire`],
//! verified by [`lsdb`] against certificates from [`cert`]) → route computation
//! ([`spf`]) → the decision writer (in the daemon) → the loader's BPF maps.
//!
//! The modules here are pure: time is always a parameter (unix seconds or milliseconds
//! of a caller's clock), never read inside, so tests drive them with a fake clock.
pub mod cert;
pub mod identity;
pub mod lsdb;
pub mod metric;
pub mod spf;
pub mod wire;
