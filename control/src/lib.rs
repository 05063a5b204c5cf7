//! dcmesh control plane.
//!
//! Data flows one way: hellos → link metrics ([`metric`]) → signed adverts ([`wire`],
//! verified by [`lsdb`] against certificates from [`cert`]) → route computation
//! ([`spf`]) → the decision writer (in the daemon) → the loader's BPF maps.
//!
//! The modules here are pure: time is always a parameter (unix seconds or milliseconds
//! of a caller's clock), never read inside, so tests drive them with a fake clock.
pub mod api;
pub mod cert;
pub mod config;
pub mod daemon;
pub mod decision;
pub mod fib;
pub mod identity;
pub mod lanes;
pub mod lsdb;
pub mod metric;
pub mod metrics;
pub mod microloop;
pub mod neighbour;
pub mod snr_nl80211;
pub mod spf;
pub mod wire;
pub use ipnet::IpNet;
