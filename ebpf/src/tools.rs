//! Programs the benchmark and testbed use; never loaded on a production router.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod bench_gen;
#[cfg(target_arch = "bpf")]
mod bench_sink;
#[cfg(target_arch = "bpf")]
mod link_emu;
#[cfg(target_arch = "bpf")]
mod redirect_only;

#[cfg(target_arch = "bpf")]
use dcmesh_ebpf as _; // the shared panic handler

#[cfg(not(target_arch = "bpf"))]
fn main() {}
