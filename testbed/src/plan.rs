//! Names and addresses a topology gets when it is built: pure functions, so the mesh
//! builder, the static route writer and the reports agree on them.
//!
//! - Node `i` (0-based) owns `10.255.x.y/32` and `fd00:ff::<i+1>/128` (`x.y` = i+1), on
//!   its loopback: its router address.
//! - Client `k` sits behind its node on a veth: node side `c-<client>` (the prefix's first
//!   address), client side `eth0` (the second), default route via the node.
//! - Link `l` between nodes a and b: node interfaces `m-<b>` in a and `m-<a>` in b, each
//!   connected to one end of a two-port bridge in the wire namespace: `w<l>a` faces a,
//!   `w<l>b` faces b, bridge `wb<l>`. Loss is emulated on the wire ends' ingress and rates
//!   are shaped on their egress, so each direction is set on its own.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Block of node router addresses (IPv4).
pub const NODE_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 255, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("valid prefix"),
};

/// Node `i`'s IPv4 router address.
pub fn node_v4(i: usize) -> Ipv4Addr {
    let n = i as u32 + 1;
    Ipv4Addr::from(u32::from(NODE_V4.network()) | (n & 0xffff))
}

/// Node `i`'s IPv6 router address.
pub fn node_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, (i + 1) as u16)
}

/// The node-side name of the mesh interface toward `peer`.
pub fn mesh_if(peer: &str) -> String {
    format!("m-{peer}")
}

/// The node-side name of the access interface toward `client`.
pub fn access_if(client: &str) -> String {
    format!("c-{client}")
}

/// The client-side access interface.
pub const CLIENT_IF: &str = "eth0";

/// Wire-namespace interface of link `l` facing its first (`a`) or second node.
pub fn wire_if(l: usize, first: bool) -> String {
    format!("w{l}{}", if first { 'a' } else { 'b' })
}

/// Wire-namespace bridge of link `l`.
pub fn wire_bridge(l: usize) -> String {
    format!("wb{l}")
}

/// Gateway (node side) and host (client side) addresses in an access prefix.
pub fn access_v4(p: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(p.network());
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// Gateway and host addresses in an IPv6 access prefix.
pub fn access_v6(p: Ipv6Net) -> (Ipv6Addr, Ipv6Addr) {
    let base = u128::from(p.network());
    (Ipv6Addr::from(base + 1), Ipv6Addr::from(base + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_are_distinct_and_in_the_block() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            assert!(NODE_V4.contains(&node_v4(i)));
            assert!(seen.insert(node_v4(i)));
        }
        assert_eq!(node_v4(0), Ipv4Addr::new(10, 255, 0, 1));
        assert_eq!(node_v4(299), Ipv4Addr::new(10, 255, 1, 44));
        assert_eq!(node_v6(4).to_string(), "fd00:ff::5");
    }

    #[test]
    fn interface_names_fit_linux_limits() {
        let long = "abcdefghijkl"; // MAX_NAME characters
        assert!(mesh_if(long).len() <= 15);
        assert!(access_if(long).len() <= 15);
        assert!(wire_if(99_999, true).len() <= 15);
        assert!(wire_bridge(99_999).len() <= 15);
    }

    #[test]
    fn access_addresses_are_first_and_second_host() {
        let (g, h) = access_v4("10.100.3.0/24".parse().unwrap());
        assert_eq!(
            (g.to_string(), h.to_string()),
            ("10.100.3.1".into(), "10.100.3.2".into())
        );
        let (g, h) = access_v6("fd00:100:3::/64".parse().unwrap());
        assert_eq!(
            (g.to_string(), h.to_string()),
            ("fd00:100:3::1".into(), "fd00:100:3::2".into())
        );
    }
}
