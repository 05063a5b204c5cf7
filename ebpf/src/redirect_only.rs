//! The forwarding ceiling: redirect every frame to one port, touching nothing.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::DevMap,
    programs::XdpContext,
};

#[map]
static REDIRECT_TX: DevMap = DevMap::with_max_entries(1, 0);

#[xdp]
pub fn redirect_only(_ctx: XdpContext) -> u32 {
    REDIRECT_TX.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}
