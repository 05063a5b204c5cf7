//! Traffic generator for XDP live-frames mode (`BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES`): writes one of N header templates into the frame and
//! redirects it out of the generator's interface.
//!
//! The kernel recycles frame pages between batches without re-initialising them, and the
//! router under test rewrites headers in place, so the template is written on every run.

use aya_ebpf::{
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
};
use dcmesh_ebpf::hdr::ptr_at;
use dcmesh_schema::bench::{GenConfig, Template, GEN_MAX_TEMPLATES};

#[map]
static GEN_TEMPLATES: Array<Template> = Array::with_max_entries(GEN_MAX_TEMPLATES, 0);
#[map]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);
#[map]
static GEN_TX: DevMap = DevMap::with_max_entries(1, 0);
/// Per-CPU sequence used to walk the templates round robin.
#[map]
static GEN_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let n = GEN_CONFIG.get(0).map_or(1, |c| c.templates).max(1);
    let idx = match GEN_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU cell.
        Some(seq) => unsafe {
            let i = *seq;
            *seq = if i + 1 >= n { 0 } else { i + 1 };
            i
        },
        None => 0,
    };
    let Some(t) = GEN_TEMPLATES.get(idx) else {
        return aya_ebpf::bindings::xdp_action::XDP_ABORTED;
    };
    let Some(frame) = ptr_at::<[u8; 64]>(ctx.data(), ctx.data_end(), 0) else {
        return aya_ebpf::bindings::xdp_action::XDP_ABORTED;
    };
    // Eight 64-bit words (a 64-byte array assignment would compile to a byte-wise memcpy
    // call). Live frames start on an aligned headroom; the map value is 8-aligned.
    let from = t.bytes.as_ptr() as *const u64;
    let to = frame as *mut u64;
    // SAFETY: 64 bytes inside the checked frame and inside the template.
    unsafe {
        for i in 0..8 {
            *to.add(i) = *from.add(i);
        }
    }
    GEN_TX
        .redirect(0, 0)
        .unwrap_or(aya_ebpf::bindings::xdp_action::XDP_ABORTED)
}
