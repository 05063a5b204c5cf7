//! Small helpers shared by the dcmesh eBPF programs: bounds-checked packet access,
//! header layouts and checksum arithmetic. No policy lives here.
#![no_std]

pub mod csum;
pub mod hdr;

/// The one panic handler of every eBPF object. The verifier rejects any reachable loop-forever
/// path, so this only links; bounds are checked explicitly and nothing panics.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
