//! The dcmesh TSN lanes object: a TC egress classifier (see `tc_lanes.rs`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod tc_lanes;

#[cfg(target_arch = "bpf")]
use dcmesh_ebpf as _; // the shared panic handler

#[cfg(not(target_arch = "bpf"))]
fn main() {}
