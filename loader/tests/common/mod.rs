//! Shared helpers for the loader's kernel tests: frame builders, independent checksum
//! arithmetic, and a `BPF_PROG_TEST_RUN` wrapper.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use std::{path::PathBuf, process::Command};

use aya::programs::{TestRun, TestRunOptions, Xdp};

/// A bpffs mounted in the root mount namespace, so pins made from `ip netns exec` outlive
/// the process that made them. Unmounted (releasing every pin) on drop, also on panic.
pub struct Bpffs(pub PathBuf);

impl Bpffs {
    pub fn mount(label: &str) -> Self {
        let dir = PathBuf::from(format!("/run/dcm-test-bpf-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount bpffs at {}", dir.display());
        Self(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// Fails loudly (rather than passing silently) when the tests are not run as root.
pub fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs and need root; run them with `cargo xtask test` as root"
    );
}

pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// One's-complement sum of 16-bit big-endian words (odd tail padded), not folded.
pub fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// IPv4 header checksum computed from scratch over `hdr` (checksum field treated as zero).
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut h = hdr.to_vec();
    h[10] = 0;
    h[11] = 0;
    !fold(sum16(&h))
}

/// Builds Ethernet + IPv4 (+ options) + UDP frames.
#[derive(Clone, Debug)]
pub struct V4 {
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// Option bytes (padded to a multiple of 4 with End-of-Options).
    pub options: Vec<u8>,
    /// Flags + fragment offset word.
    pub frag: u16,
    pub payload: usize,
}

impl V4 {
    pub fn to(dst: [u8; 4]) -> Self {
        Self {
            dst_mac: ROUTER_MAC,
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::from(dst),
            ttl: 64,
            options: vec![],
            frag: 0x4000,
            payload: 18,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let ihl = 20 + opts.len();
        let udp_len = 8 + self.payload;
        let tot = ihl + udp_len;
        let mut f = Vec::with_capacity(14 + tot);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&HOST_MAC);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&(tot as u16).to_be_bytes());
        f.extend_from_slice(&0x1234u16.to_be_bytes());
        f.extend_from_slice(&self.frag.to_be_bytes());
        f.push(self.ttl);
        f.push(17);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&opts);
        let c = ipv4_checksum(&f[14..14 + ihl]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&4000u16.to_be_bytes());
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..self.payload).map(|i| i as u8));
        f
    }
}

/// Builds Ethernet + IPv6 + UDP frames.
#[derive(Clone, Debug)]
pub struct V6 {
    pub dst_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub next_hdr: u8,
    pub payload: usize,
}

impl V6 {
    pub fn to(dst: Ipv6Addr) -> Self {
        Self {
            dst_mac: ROUTER_MAC,
            src: "2001:db8:ffff::1".parse().unwrap(),
            dst,
            hop_limit: 64,
            next_hdr: 17,
            payload: 18,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let plen = 8 + self.payload;
        let mut f = Vec::with_capacity(54 + plen);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&HOST_MAC);
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(plen as u16).to_be_bytes());
        f.push(self.next_hdr);
        f.push(self.hop_limit);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&4000u16.to_be_bytes());
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&(plen as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..self.payload).map(|i| i as u8));
        f
    }
}

/// Runs `frame` through `prog` once; returns the verdict and the frame as the program left it.
pub fn run(prog: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// What a correct router makes of `frame` when forwarding it: MACs rewritten, TTL or hop
/// limit lowered by one, IPv4 checksum recomputed from scratch.
pub fn forwarded(frame: &[u8], src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            f[22] -= 1;
            let c = ipv4_checksum(&f[14..14 + ihl]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        0x86dd => f[21] -= 1,
        _ => panic!("not IP"),
    }
    f
}

/// A UDP receiver that records the TTL (IPv4) or hop limit (IPv6) of every datagram.
pub mod udp {
    use std::{mem, net::SocketAddr, os::fd::RawFd, time::Duration};

    fn check(rc: libc::c_int, what: &str) -> RawFd {
        assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
        rc
    }

    fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: zeroed sockaddr_storage is a valid initial value; we fill the family's fields.
        unsafe {
            let mut ss: libc::sockaddr_storage = mem::zeroed();
            let len = match addr {
                SocketAddr::V4(a) => {
                    let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in);
                    sin.sin_family = libc::AF_INET as _;
                    sin.sin_port = a.port().to_be();
                    sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                    mem::size_of::<libc::sockaddr_in>()
                }
                SocketAddr::V6(a) => {
                    let sin6 = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6);
                    sin6.sin6_family = libc::AF_INET6 as _;
                    sin6.sin6_port = a.port().to_be();
                    sin6.sin6_addr.s6_addr = a.ip().octets();
                    mem::size_of::<libc::sockaddr_in6>()
                }
            };
            (ss, len as libc::socklen_t)
        }
    }

    /// Bound receiving socket (call inside the receiver's namespace).
    pub struct Receiver {
        fd: RawFd,
        v6: bool,
    }

    impl Receiver {
        pub fn bind(addr: SocketAddr) -> Self {
            let v6 = addr.is_ipv6();
            let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET };
            // SAFETY: plain socket calls with valid arguments.
            unsafe {
                let fd = check(libc::socket(fam, libc::SOCK_DGRAM, 0), "socket");
                let one: libc::c_int = 1;
                let (lvl, opt) = if v6 {
                    (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
                } else {
                    (libc::IPPROTO_IP, libc::IP_RECVTTL)
                };
                check(
                    libc::setsockopt(fd, lvl, opt, &one as *const _ as *const _, 4),
                    "setsockopt recv ttl",
                );
                let buf: libc::c_int = 8 << 20;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &buf as *const _ as *const _,
                    4,
                );
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 200_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const _,
                    mem::size_of::<libc::timeval>() as _,
                );
                let (ss, len) = sockaddr(&addr);
                check(libc::bind(fd, &ss as *const _ as *const _, len), "bind");
                Self { fd, v6 }
            }
        }

        /// Receives until `idle` passes without a datagram; returns each datagram's
        /// (first 8 payload bytes as a sequence number, TTL/hop limit).
        pub fn collect(&self, idle: Duration) -> Vec<(u64, u8)> {
            let mut got = Vec::new();
            let mut quiet = Duration::ZERO;
            while quiet < idle {
                match self.recv() {
                    Some(x) => {
                        got.push(x);
                        quiet = Duration::ZERO;
                    }
                    None => quiet += Duration::from_millis(200),
                }
            }
            got
        }

        fn recv(&self) -> Option<(u64, u8)> {
            let mut data = [0u8; 2048];
            let mut cbuf = [0u64; 16];
            // SAFETY: msghdr points at live local buffers of the given sizes.
            unsafe {
                let mut iov = libc::iovec {
                    iov_base: data.as_mut_ptr() as *mut _,
                    iov_len: data.len(),
                };
                let mut msg: libc::msghdr = mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cbuf.as_mut_ptr() as *mut _;
                msg.msg_controllen = mem::size_of_val(&cbuf) as _;
                let n = libc::recvmsg(self.fd, &mut msg, 0);
                if n < 8 {
                    return None;
                }
                let seq = u64::from_be_bytes(data[..8].try_into().unwrap());
                let mut ttl = None;
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    let want = if self.v6 {
                        ((*c).cmsg_level, (*c).cmsg_type)
                            == (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
                    } else {
                        ((*c).cmsg_level, (*c).cmsg_type) == (libc::IPPROTO_IP, libc::IP_TTL)
                    };
                    if want {
                        ttl = Some(*(libc::CMSG_DATA(c) as *const libc::c_int) as u8);
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
                Some((seq, ttl.expect("TTL control message")))
            }
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            // SAFETY: we own the fd.
            unsafe { libc::close(self.fd) };
        }
    }

    /// Sends `count` datagrams numbered `first..` to `to`, at about `pps` per second
    /// (call inside the sender's namespace).
    pub fn send(to: SocketAddr, first: u64, count: u64, pps: u64) {
        let s = std::net::UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
            .expect("bind sender");
        let start = std::time::Instant::now();
        for i in 0..count {
            let mut payload = [0u8; 64];
            payload[..8].copy_from_slice(&(first + i).to_be_bytes());
            s.send_to(&payload, to).expect("send");
            let due = start + Duration::from_micros(i * 1_000_000 / pps.max(1));
            if let Some(d) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }
}
