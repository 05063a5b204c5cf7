//! The 64-byte Ethernet/IPv4/UDP frames the generator sends.
//!
//! Pure byte building, so the checksums can be tested without root: a frame with a wrong
//! IPv4 header checksum would be dropped by the kernel (and counted, not forwarded, by
//! dcmesh), and the benchmark would measure nothing.
use std::net::Ipv4Addr;

/// Frame length in bytes as handed to the interface (no FCS): the generator's template size
/// (`dcmesh_schema::bench::Template`). Every case of the benchmark sends this size.
pub const FRAME_LEN: usize = 64;
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// UDP ports of the benchmark flow (arbitrary, unprivileged).
const SRC_PORT: u16 = 9000;
const DST_PORT: u16 = 9001;

/// One IPv4/UDP flow as the generator writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpV4 {
    /// The router's (or the sink's) MAC: the frame must be addressed to the receiver, or
    /// the kernel drops it as "otherhost".
    pub dst_mac: [u8; 6],
    /// The generator interface's MAC.
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
}

impl UdpV4 {
    /// The frame, with a valid IPv4 header checksum and a valid UDP checksum.
    pub fn build(&self) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = FRAME_LEN - ETH_LEN;
        let udp_len = ip_len - IPV4_LEN;
        let ip = &mut f[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        // Identification 0 and DF set: never fragmented.
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let c = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let u = ETH_LEN + IPV4_LEN;
        f[u..u + 2].copy_from_slice(&SRC_PORT.to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&DST_PORT.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        for (i, b) in f[u + UDP_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let c = udp_checksum(self.src, self.dst, &f[u..]);
        f[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
        f
    }
}

/// One's-complement sum of big-endian 16-bit words (an odd tail is padded with zero).
fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// IPv4 header checksum (RFC 791) of `hdr`, its checksum field taken as zero.
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let stored = hdr.get(10..12).map_or(0, sum16);
    // Subtracting the stored field in one's-complement arithmetic = summing it as zero.
    let s = sum16(hdr) + u32::from(!fold(stored));
    !fold(s)
}

/// UDP checksum (RFC 768) over the IPv4 pseudo-header and `udp`, checksum field taken as
/// zero; 0 is sent as 0xffff.
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
    let stored = udp.get(6..8).map_or(0, sum16);
    let s = sum16(&pseudo) + sum16(udp) + u32::from(!fold(stored));
    match !fold(s) {
        0 => 0xffff,
        c => c,
    }
}

/// Whether `frame` is an IPv4 frame whose header checksum verifies (sums to 0xffff).
#[cfg(test)]
fn ipv4_header_ok(frame: &[u8]) -> bool {
    frame.len() >= ETH_LEN + IPV4_LEN
        && frame[12..14] == [0x08, 0x00]
        && fold(sum16(&frame[ETH_LEN..ETH_LEN + IPV4_LEN])) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flow(dst: [u8; 4], ttl: u8) -> UdpV4 {
        UdpV4 {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(10, 0, 1, 2),
            dst: Ipv4Addr::from(dst),
            ttl,
        }
    }

    #[test]
    fn known_header_checksum() {
        // The worked example of RFC 1071 style calculations, as found in many references:
        // 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&hdr), 0xb861);
        let mut with = hdr;
        with[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        // The stored value must not change the result.
        assert_eq!(ipv4_checksum(&with), 0xb861);
    }

    #[test]
    fn frame_layout() {
        let f = flow([198, 18, 0, 10], 64).build();
        assert_eq!(f.len(), 64);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50, "IP total length");
        assert_eq!(f[22], 64, "TTL");
        assert_eq!(f[23], 17, "UDP");
        assert_eq!(&f[30..34], &[198, 18, 0, 10]);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30, "UDP length");
        assert!(ipv4_header_ok(&f));
    }

    #[test]
    fn corrupted_header_is_detected() {
        let mut f = flow([1, 2, 3, 4], 64).build();
        f[22] -= 1; // TTL lowered without a checksum update
        assert!(!ipv4_header_ok(&f));
    }

    proptest! {
        #[test]
        fn checksums_verify(dst in any::<[u8; 4]>(), ttl in 1u8..=255) {
            let f = flow(dst, ttl).build();
            prop_assert!(ipv4_header_ok(&f));
            // UDP: pseudo-header + segment including the checksum sums to 0xffff.
            let mut pseudo = vec![10, 0, 1, 2];
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&[0, 17, 0, 30]);
            prop_assert_eq!(fold(sum16(&pseudo) + sum16(&f[34..])), 0xffff);
        }
    }
}
