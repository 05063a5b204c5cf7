//! Sink: counts every frame that arrives, then drops it.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

#[map]
static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(c) = SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU cell.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}
