//! Wire layouts of the headers the programs touch, and one bounds-checked accessor.

/// Ethernet header length in bytes.
pub const ETH_LEN: usize = 14;
/// Fixed IPv4 header length in bytes (IHL = 5).
pub const IPV4_LEN: usize = 20;
/// IPv6 header length in bytes.
pub const IPV6_LEN: usize = 40;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;

/// IPv6 next-header value of hop-by-hop options.
pub const IPPROTO_HOPOPTS: u8 = 0;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub ver_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Pointer to a `T` at `offset` from `start`, or `None` if it does not end before `end`.
///
/// The one place bounds are checked, in the shape the verifier understands.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, offset: usize) -> Option<*mut T> {
    let len = core::mem::size_of::<T>();
    if start + offset + len > end {
        return None;
    }
    Some((start + offset) as *mut T)
}
