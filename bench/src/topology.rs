//! Namespaces gen — R — sink joined by veth pairs (g0–r0, r1–s0), plus a direct pair
//! gd–sd from gen to sink; and the Linux forwarding set-up of R.
use std::net::Ipv4Addr;

use anyhow::Result;
use dcmesh_loader::{format_mac, interface_info};
use dcmesh_testbed::{netns, Netns};

use crate::frames::{UdpV4, FRAME_LEN};

pub const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const GEN_CIDR: &str = "10.0.1.2/24";
const R_IN_CIDR: &str = "10.0.1.1/24";
const R_OUT_CIDR: &str = "10.0.2.1/24";
const SINK_CIDR: &str = "10.0.2.2/24";
const SINK_ADDR: &str = "10.0.2.2";

/// An interface as seen inside its namespace.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: &'static str,
    pub index: u32,
    pub mac: [u8; 6],
}

/// The three namespaces and their links. Dropping it deletes the namespaces, and with
/// them the veths, their XDP attachments and every route in R.
pub struct Topology {
    pub gen: Netns,
    pub r: Netns,
    pub sink: Netns,
    /// gen's end of gen–R.
    pub g0: Iface,
    /// gen's end of gen–sink.
    pub gd: Iface,
    /// R's ingress.
    pub r0: Iface,
    /// R's egress.
    pub r1: Iface,
    /// sink's end of R–sink.
    pub s0: Iface,
    /// sink's end of gen–sink.
    pub sd: Iface,
}

fn iface(ns: &Netns, name: &'static str) -> Result<Iface> {
    let info = ns.enter(|| interface_info(name))??;
    Ok(Iface {
        name,
        index: info.index,
        mac: info.mac,
    })
}

impl Topology {
    /// Creates the namespaces and links; R does not forward in the kernel yet.
    pub fn build() -> Result<Self> {
        let gen = Netns::create("gen")?;
        let r = Netns::create("r")?;
        let sink = Netns::create("sink")?;
        for ns in [&gen, &r, &sink] {
            // No IPv6 autoconfiguration, DAD or MLD frames: the sink counts every frame.
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        }
        r.sysctl("net.ipv4.ip_forward", "0")?;
        netns::veth(&gen, "g0", &r, "r0")?;
        netns::veth(&r, "r1", &sink, "s0")?;
        netns::veth(&gen, "gd", &sink, "sd")?;
        gen.ip(&["addr", "add", GEN_CIDR, "dev", "g0"])?;
        r.ip(&["addr", "add", R_IN_CIDR, "dev", "r0"])?;
        r.ip(&["addr", "add", R_OUT_CIDR, "dev", "r1"])?;
        sink.ip(&["addr", "add", SINK_CIDR, "dev", "s0"])?;
        Ok(Self {
            g0: iface(&gen, "g0")?,
            gd: iface(&gen, "gd")?,
            r0: iface(&r, "r0")?,
            r1: iface(&r, "r1")?,
            s0: iface(&sink, "s0")?,
            sd: iface(&sink, "sd")?,
            gen,
            r,
            sink,
        })
    }

    /// A chain frame to `dst`, addressed to R's ingress.
    pub fn chain_frame(&self, dst: Ipv4Addr, ttl: u8) -> [u8; FRAME_LEN] {
        UdpV4 {
            dst_mac: self.r0.mac,
            src_mac: self.g0.mac,
            src: GEN_ADDR,
            dst,
            ttl,
        }
        .build()
    }

    /// A frame for the direct pair, addressed to the sink.
    pub fn direct_frame(&self, dst: Ipv4Addr, ttl: u8) -> [u8; FRAME_LEN] {
        UdpV4 {
            dst_mac: self.sd.mac,
            src_mac: self.gd.mac,
            src: GEN_ADDR,
            dst,
            ttl,
        }
        .build()
    }

    /// Turns on Linux forwarding in R (detach XDP from r0 first): `ip_forward`, GRO on the
    /// ingress veth (so redirected frames are taken without an XDP program), a permanent
    /// neighbour entry for the sink, and `route` via the sink.
    pub fn kernel_forwarding(&self, route: &str) -> Result<()> {
        let r = &self.r;
        r.sysctl("net.ipv4.ip_forward", "1")?;
        r.exec("ethtool", &["-K", self.r0.name, "gro", "on"])?;
        let mac = format_mac(&self.s0.mac);
        r.ip(&[
            "neigh",
            "replace",
            SINK_ADDR,
            "lladdr",
            &mac,
            "dev",
            self.r1.name,
            "nud",
            "permanent",
        ])?;
        r.ip(&[
            "route",
            "replace",
            route,
            "via",
            SINK_ADDR,
            "dev",
            self.r1.name,
        ])?;
        Ok(())
    }

    /// Installs `prefixes` via the sink into R's FIB in one `ip -batch` (fed on stdin).
    pub fn kernel_routes(&self, prefixes: &[ipnet::Ipv4Net]) -> Result<()> {
        let lines: Vec<String> = prefixes
            .iter()
            .map(|p| format!("route replace {p} via {SINK_ADDR} dev {}", self.r1.name))
            .collect();
        self.r.ip_batch(&lines)
    }
}
