//! The dcmesh eBPF object a router loads.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod xdp_forward;

#[cfg(target_arch = "bpf")]
use dcmesh_ebpf as _; // the shared panic handler

#[cfg(not(target_arch = "bpf"))]
fn main() {}
