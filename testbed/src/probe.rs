//! Sequence-numbered probe flows between clients, and what they tell: delivery ratio,
//! every outage and its length, hop counts (a packet that crossed more routers than the
//! mesh has looped), and where probes whose TTL ran out died.
//!
//! A probe is a UDP datagram to [`PROBE_PORT`] carrying `"DCMP"`, the flow id (u16), the
//! sequence number (u64) and the send time (u64 ns since the run's start), big-endian.
//! Every flow runs over one address family: IPv4 probes leave with TTL 64 and the
//! receiver reads the TTL left (`IP_RECVTTL`); IPv6 probes leave with hop limit 64
//! (`IPV6_UNICAST_HOPS`) and the receiver reads the hop limit left
//! (`IPV6_RECVHOPLIMIT`). Senders pace each flow at its rate from one thread; one
//! receiver thread reads every client's sockets and notes arrival time and TTL / hop
//! limit left. Raw ICMP and ICMPv6 listeners in the source clients catch the
//! time-exceeded errors routers send about our probes. Analysis functions are pure and
//! take the records.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

/// UDP port probes go to.
pub const PROBE_PORT: u16 = 47_474;
/// TTL (IPv4) or hop limit (IPv6) probes leave with.
pub const INITIAL_TTL: u8 = 64;
const MAGIC: [u8; 4] = *b"DCMP";
const LEN: usize = 4 + 2 + 8 + 8;

/// The address family a flow runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        })
    }
}

/// Which families every configured flow runs over. With `Both`, each flow gets an IPv4
/// and an IPv6 twin, each at the flow's configured rate: a client's probe traffic is
/// twice what one family alone sends (the report's header says so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Families {
    V4,
    V6,
    #[default]
    Both,
}

impl Families {
    /// The families, IPv4 first.
    pub fn members(self) -> &'static [Family] {
        match self {
            Families::V4 => &[Family::V4],
            Families::V6 => &[Family::V6],
            Families::Both => &[Family::V4, Family::V6],
        }
    }
}

impl std::fmt::Display for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Families::V4 => "IPv4 only",
            Families::V6 => "IPv6 only",
            Families::Both => "IPv4 and IPv6",
        })
    }
}

/// One flow: from a socket in the source client to the destination address (whose
/// family is the flow's).
#[derive(Clone, Debug)]
pub struct FlowSpec {
    pub from: usize,
    pub to: usize,
    /// Probes per second.
    pub rate: u32,
    pub dst: SocketAddr,
}

impl FlowSpec {
    pub fn family(&self) -> Family {
        match self.dst {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }
}

/// One received probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rx {
    /// Arrival, ns since the run's start.
    pub ns: u64,
    /// IPv4 TTL or IPv6 hop limit left on arrival (`None` if the kernel did not report
    /// it).
    pub ttl: Option<u8>,
}

impl Rx {
    /// Routers crossed.
    pub fn hops(&self) -> Option<u8> {
        self.ttl.map(|t| INITIAL_TTL.saturating_sub(t))
    }
}

/// Everything one flow sent and received.
#[derive(Clone, Debug, Default)]
pub struct FlowRec {
    /// Send time (ns since start) by sequence number.
    pub sent: Vec<u64>,
    /// Arrival by sequence number (may be shorter than `sent`).
    pub recv: Vec<Option<Rx>>,
    /// Probes that arrived more than once.
    pub dups: u64,
    /// `send` calls that failed (e.g. no route on the client); the probe counts as lost.
    pub send_errors: u64,
    /// Probes whose TTL / hop limit ran out in the mesh (a loop), as the ICMP or ICMPv6
    /// time-exceeded errors routers sent back tell. Diagnostic detail only: routers
    /// rate-limit those errors and they can be lost, so the datapath's TTL counters
    /// remain the measure.
    pub expired: Vec<Expiry>,
}

/// A probe whose TTL / hop limit ran out, from the router's time-exceeded error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Expiry {
    pub seq: u64,
    /// Send time of the probe, ns since the run's start.
    pub sent_ns: u64,
    /// Arrival of the error at the sender, ns since the run's start.
    pub at_ns: u64,
    /// The router that dropped it (source of the ICMP / ICMPv6 error).
    pub router: IpAddr,
}

impl FlowRec {
    fn rx(&self, seq: usize) -> Option<Rx> {
        self.recv.get(seq).copied().flatten()
    }
}

fn encode(flow: u16, seq: u64, ns: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&flow.to_be_bytes());
    b[6..14].copy_from_slice(&seq.to_be_bytes());
    b[14..22].copy_from_slice(&ns.to_be_bytes());
    b
}

/// (flow, seq, send ns) of a probe, or `None` for anything else.
fn decode(b: &[u8]) -> Option<(u16, u64, u64)> {
    if b.len() != LEN || b[..4] != MAGIC {
        return None;
    }
    Some((
        u16::from_be_bytes(b[4..6].try_into().ok()?),
        u64::from_be_bytes(b[6..14].try_into().ok()?),
        u64::from_be_bytes(b[14..22].try_into().ok()?),
    ))
}

/// (flow, seq, send ns) of the probe a quoted UDP header (and what follows) carries, if
/// it went to [`PROBE_PORT`] and the whole payload is quoted.
fn decode_quoted_udp(udp: &[u8]) -> Option<(u16, u64, u64)> {
    let dport = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    if dport != PROBE_PORT {
        return None;
    }
    decode(udp.get(8..8 + LEN)?)
}

/// (router, flow, seq, send ns) of an IPv4 packet (as a raw ICMP socket reads it: IP
/// header first) that is an ICMP time-exceeded error quoting one of our probes whole
/// (Linux quotes up to 576 bytes), or `None` for anything else.
pub fn decode_time_exceeded(p: &[u8]) -> Option<(Ipv4Addr, u16, u64, u64)> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p[0] >> 4 != 4 || ihl < 20 || p.len() < ihl + 8 || p[9] != 1 {
        return None;
    }
    let router = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let icmp = &p[ihl..];
    if icmp[0] != 11 || icmp[1] != 0 {
        return None;
    }
    let inner = &icmp[8..];
    let ihl2 = usize::from(*inner.first()? & 0x0f) * 4;
    if inner[0] >> 4 != 4 || ihl2 < 20 || inner.len() < ihl2 + 8 + LEN || inner[9] != 17 {
        return None;
    }
    let (flow, seq, ns) = decode_quoted_udp(&inner[ihl2..])?;
    Some((router, flow, seq, ns))
}

/// ICMPv6 type of a time-exceeded error (RFC 4443 §3.3); code 0 is "hop limit exceeded
/// in transit" (code 1, fragment reassembly, is not about loops).
const ICMP6_TIME_EXCEEDED: u8 = 3;
/// Extension headers walked to reach the quoted UDP header: hop-by-hop options,
/// routing, destination options (all `(next header, length in 8-byte units - 1)`).
const IPV6_EXT_HEADERS: [u8; 3] = [0, 43, 60];

/// (router, flow, seq, send ns) of an ICMPv6 message (as a raw ICMPv6 socket reads it:
/// the ICMPv6 header first, no IPv6 header) from `src` that is a time-exceeded error
/// (hop limit exceeded in transit) quoting one of our probes whole (Linux quotes up to
/// 1280 bytes), or `None` for anything else. `src` is the router that sent the error.
pub fn decode_time_exceeded6(src: Ipv6Addr, icmp: &[u8]) -> Option<(Ipv6Addr, u16, u64, u64)> {
    if icmp.len() < 8 || icmp[0] != ICMP6_TIME_EXCEEDED || icmp[1] != 0 {
        return None;
    }
    let inner = &icmp[8..];
    if inner.len() < 40 || inner[0] >> 4 != 6 {
        return None;
    }
    let mut next = inner[6];
    let mut at = 40;
    // A bounded walk: a quote holds at most a few extension headers.
    for _ in 0..8 {
        if next == 17 {
            let (flow, seq, ns) = decode_quoted_udp(inner.get(at..)?)?;
            return Some((src, flow, seq, ns));
        }
        if !IPV6_EXT_HEADERS.contains(&next) {
            return None;
        }
        let h = inner.get(at..at + 2)?;
        next = h[0];
        at += (usize::from(h[1]) + 1) * 8;
    }
    None
}

/// A raw ICMPv4 socket in the calling thread's namespace (every ICMP message arriving
/// there is copied to it; nothing is sent).
pub fn icmp_listener() -> std::io::Result<OwnedFd> {
    raw_socket(libc::AF_INET, libc::IPPROTO_ICMP)
}

/// `ICMP6_FILTER` from linux/icmpv6.h (level `IPPROTO_ICMPV6`; libc does not export it).
const ICMP6_FILTER: libc::c_int = 1;

/// A raw ICMPv6 socket in the calling thread's namespace that receives only
/// time-exceeded errors (a kernel filter keeps neighbour discovery and the rest out;
/// nothing is sent).
pub fn icmp6_listener() -> std::io::Result<OwnedFd> {
    let fd = raw_socket(libc::AF_INET6, libc::IPPROTO_ICMPV6)?;
    // struct icmp6_filter: 256 bits, a set bit blocks that type.
    let mut filter = [u32::MAX; 8];
    let t = usize::from(ICMP6_TIME_EXCEEDED);
    filter[t / 32] &= !(1u32 << (t % 32));
    // SAFETY: valid fd; the option value is the 32-byte filter.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast(),
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn raw_socket(domain: libc::c_int, proto: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned by the returned value.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The time-exceeded listener of `family` in the calling thread's namespace.
pub fn listener(family: Family) -> std::io::Result<OwnedFd> {
    match family {
        Family::V4 => icmp_listener(),
        Family::V6 => icmp6_listener(),
    }
}

/// A probe sender socket of `family` in the calling thread's namespace: bound to an
/// ephemeral port, probes leave with TTL / hop limit [`INITIAL_TTL`].
pub fn sender(family: Family) -> std::io::Result<UdpSocket> {
    match family {
        Family::V4 => {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.set_ttl(u32::from(INITIAL_TTL))?;
            Ok(s)
        }
        Family::V6 => {
            let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
            setsockopt_int(
                &s,
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                INITIAL_TTL.into(),
            )?;
            Ok(s)
        }
    }
}

/// Running probe flows. Stop with [`Probes::stop`] (also on drop).
pub struct Probes {
    flows: Vec<FlowSpec>,
    recs: Arc<Vec<Mutex<FlowRec>>>,
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    stray: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

fn setsockopt_int(
    s: &impl AsRawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to report the TTL (IPv4) or hop limit (IPv6) of every datagram.
fn enable_ttl(s: &UdpSocket) -> std::io::Result<()> {
    match s.local_addr()? {
        SocketAddr::V4(_) => setsockopt_int(s, libc::IPPROTO_IP, libc::IP_RECVTTL, 1),
        SocketAddr::V6(_) => setsockopt_int(s, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1),
    }
}

/// One datagram and the TTL / hop limit it arrived with.
fn recv_ttl(s: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Option<u8>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points at valid buffers.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, ttl))
}

impl Probes {
    /// Starts the flows. `senders[i]` is flow i's socket (bound inside its source
    /// client, of the flow's family, e.g. from [`sender`]); `receivers` are (client
    /// index, socket bound to [`PROBE_PORT`] on its address of a family there); `icmp`
    /// are time-exceeded listeners (from [`listener`]) in the source clients, with their
    /// family. Times are measured from `t0`.
    pub fn start(
        flows: Vec<FlowSpec>,
        senders: Vec<UdpSocket>,
        receivers: Vec<(usize, UdpSocket)>,
        icmp: Vec<(Family, OwnedFd)>,
        t0: Instant,
    ) -> std::io::Result<Self> {
        assert_eq!(flows.len(), senders.len(), "one sender socket per flow");
        let recs: Arc<Vec<Mutex<FlowRec>>> =
            Arc::new(flows.iter().map(|_| Mutex::default()).collect());
        let stop_send = Arc::new(AtomicBool::new(false));
        let stop_recv = Arc::new(AtomicBool::new(false));
        let stray = Arc::new(AtomicU64::new(0));
        for (_, s) in &receivers {
            enable_ttl(s)?;
        }
        let rx_thread = {
            let (recs, stop, stray, flows) = (
                recs.clone(),
                stop_recv.clone(),
                stray.clone(),
                flows.clone(),
            );
            std::thread::Builder::new()
                .name("probe-rx".into())
                .spawn(move || receive(&flows, &receivers, &icmp, &recs, &stop, &stray, t0))?
        };
        let tx_thread = {
            let (recs, stop, flows) = (recs.clone(), stop_send.clone(), flows.clone());
            std::thread::Builder::new()
                .name("probe-tx".into())
                .spawn(move || send(&flows, &senders, &recs, &stop, t0))?
        };
        Ok(Self {
            flows,
            recs,
            stop_send,
            stop_recv,
            stray,
            threads: vec![tx_thread, rx_thread],
        })
    }

    pub fn flows(&self) -> &[FlowSpec] {
        &self.flows
    }

    /// A copy of every flow's records so far.
    pub fn records(&self) -> Vec<FlowRec> {
        self.recs
            .iter()
            .map(|m| m.lock().map(|r| r.clone()).unwrap_or_default())
            .collect()
    }

    /// Applies `f` to flow `i`'s records without copying them.
    pub fn with<T>(&self, i: usize, f: impl FnOnce(&FlowRec) -> T) -> T {
        let g = self.recs[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&g)
    }

    /// Datagrams on the probe port that were not ours, or reached the wrong client.
    pub fn stray(&self) -> u64 {
        self.stray.load(Ordering::Relaxed)
    }

    /// Stops sending, waits `drain` for probes in flight, stops receiving; returns the
    /// records.
    pub fn stop(mut self, drain: Duration) -> Vec<FlowRec> {
        self.shutdown(drain);
        self.records()
    }

    fn shutdown(&mut self, drain: Duration) {
        if self.threads.is_empty() {
            return;
        }
        self.stop_send.store(true, Ordering::SeqCst);
        std::thread::sleep(drain);
        self.stop_recv.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

fn ns_since(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

fn send(
    flows: &[FlowSpec],
    socks: &[UdpSocket],
    recs: &[Mutex<FlowRec>],
    stop: &AtomicBool,
    t0: Instant,
) {
    let start = ns_since(t0);
    let period: Vec<u64> = flows
        .iter()
        .map(|f| 1_000_000_000 / u64::from(f.rate.max(1)))
        .collect();
    // Stagger flows so they do not all fire in the same instant.
    let mut due: Vec<u64> = (0..flows.len())
        .map(|i| start + period[i] * i as u64 / flows.len().max(1) as u64)
        .collect();
    let mut seq = vec![0u64; flows.len()];
    while !stop.load(Ordering::Relaxed) {
        let Some((i, &next)) = due.iter().enumerate().min_by_key(|(_, d)| **d) else {
            return;
        };
        let now = ns_since(t0);
        if next > now {
            std::thread::sleep(Duration::from_nanos((next - now).min(5_000_000)));
            continue;
        }
        let ns = ns_since(t0);
        let ok = socks[i]
            .send_to(&encode(i as u16, seq[i], ns), flows[i].dst)
            .is_ok();
        if let Ok(mut r) = recs[i].lock() {
            r.sent.push(ns);
            if !ok {
                r.send_errors += 1;
            }
        }
        seq[i] += 1;
        // Fell far behind (e.g. descheduled): skip ahead rather than burst.
        due[i] = (next + period[i]).max(now.saturating_sub(100_000_000));
    }
}

fn receive(
    flows: &[FlowSpec],
    socks: &[(usize, UdpSocket)],
    icmp: &[(Family, OwnedFd)],
    recs: &[Mutex<FlowRec>],
    stop: &AtomicBool,
    stray: &AtomicU64,
    t0: Instant,
) {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|(_, s)| s.as_raw_fd())
        .chain(icmp.iter().map(|(_, f)| f.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: fds is a valid array of pollfd for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        if n <= 0 {
            continue;
        }
        for (k, (family, fd)) in icmp.iter().enumerate() {
            if fds[socks.len() + k].revents != 0 {
                read_icmp(*family, fd, flows, recs, t0);
            }
        }
        for (k, (client, s)) in socks.iter().enumerate() {
            if fds[k].revents == 0 {
                continue;
            }
            while let Ok((len, ttl)) = recv_ttl(s, &mut buf) {
                let ns = ns_since(t0);
                let Some((flow, seq, _)) = decode(&buf[..len]) else {
                    stray.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let f = flow as usize;
                if f >= flows.len() || flows[f].to != *client {
                    stray.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Ok(mut r) = recs[f].lock() else { continue };
                let seq = seq as usize;
                if seq > r.sent.len() + 1_000_000 {
                    stray.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if r.recv.len() <= seq {
                    r.recv.resize(seq + 1, None);
                }
                if r.recv[seq].is_some() {
                    r.dups += 1;
                } else {
                    r.recv[seq] = Some(Rx { ns, ttl });
                }
            }
        }
    }
}

/// One datagram from a raw socket and its source address.
fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, IpAddr)> {
    // SAFETY: sockaddr_storage is plain data.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut sa_len = std::mem::size_of_val(&sa) as libc::socklen_t;
    // SAFETY: buf and sa are valid for their lengths; non-blocking socket.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut sa as *mut libc::sockaddr_storage).cast(),
            &mut sa_len,
        )
    };
    if n <= 0 {
        return None;
    }
    let src = match i32::from(sa.ss_family) {
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (ss_family says so).
            let s6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&sa as *const libc::sockaddr_storage).cast()) };
            IpAddr::V6(Ipv6Addr::from(s6.sin6_addr.s6_addr))
        }
        // IPv4 raw sockets carry the IP header, which names the source itself.
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    Some((n as usize, src))
}

/// Drains a raw ICMP or ICMPv6 socket, noting time-exceeded errors about our probes
/// of that family.
fn read_icmp(
    family: Family,
    fd: &OwnedFd,
    flows: &[FlowSpec],
    recs: &[Mutex<FlowRec>],
    t0: Instant,
) {
    let mut buf = [0u8; 1500];
    while let Some((n, src)) = recv_from(fd, &mut buf) {
        let at_ns = ns_since(t0);
        let p = &buf[..n];
        let decoded = match (family, src) {
            (Family::V4, _) => {
                decode_time_exceeded(p).map(|(r, f, s, ns)| (IpAddr::V4(r), f, s, ns))
            }
            (Family::V6, IpAddr::V6(src)) => {
                decode_time_exceeded6(src, p).map(|(r, f, s, ns)| (IpAddr::V6(r), f, s, ns))
            }
            (Family::V6, IpAddr::V4(_)) => None,
        };
        let Some((router, flow, seq, sent_ns)) = decoded else {
            continue;
        };
        let f = usize::from(flow);
        if f >= flows.len() || flows[f].family() != family {
            continue;
        }
        if let Ok(mut r) = recs[f].lock() {
            r.expired.push(Expiry {
                seq,
                sent_ns,
                at_ns,
                router,
            });
        }
    }
}

// ---------------------------------------------------------------- analysis (pure)

/// A run of consecutive lost probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// Sequence number of the first lost probe.
    pub first_seq: u64,
    /// Probes lost in a row.
    pub lost: u64,
    /// Send time of the first lost probe (ns since start).
    pub start_ns: u64,
    /// Send time of the first probe delivered after it; `None` if none was.
    pub end_ns: Option<u64>,
}

impl Outage {
    /// Length in ns: from the first lost probe to the next delivered one (to `last_ns`
    /// when the flow never recovered).
    pub fn len_ns(&self, last_ns: u64) -> u64 {
        self.end_ns.unwrap_or(last_ns).saturating_sub(self.start_ns)
    }
}

/// Every run of at least `min_lost` consecutive lost probes.
pub fn outages(r: &FlowRec, min_lost: u64) -> Vec<Outage> {
    let mut out = Vec::new();
    let mut run: Option<(usize, u64)> = None;
    for (seq, &ns) in r.sent.iter().enumerate() {
        match (r.rx(seq).is_some(), run) {
            (false, None) => run = Some((seq, ns)),
            (false, Some(_)) => {}
            (true, Some((first, start))) => {
                let lost = (seq - first) as u64;
                if lost >= min_lost {
                    out.push(Outage {
                        first_seq: first as u64,
                        lost,
                        start_ns: start,
                        end_ns: Some(ns),
                    });
                }
                run = None;
            }
            (true, None) => {}
        }
    }
    if let Some((first, start)) = run {
        let lost = (r.sent.len() - first) as u64;
        if lost >= min_lost {
            out.push(Outage {
                first_seq: first as u64,
                lost,
                start_ns: start,
                end_ns: None,
            });
        }
    }
    out
}

/// Probes sent and delivered, counting only those sent inside (`inside = true`) or
/// outside (`false`) the half-open windows `[start, end)` (ns).
pub fn delivery(r: &FlowRec, windows: &[(u64, u64)], inside: bool) -> (u64, u64) {
    let (mut sent, mut got) = (0, 0);
    for (seq, &ns) in r.sent.iter().enumerate() {
        let within = windows.iter().any(|&(a, b)| ns >= a && ns < b);
        if within == inside {
            sent += 1;
            if r.rx(seq).is_some() {
                got += 1;
            }
        }
    }
    (sent, got)
}

/// Probes that crossed more than `max_hops` routers (only possible through a loop).
pub fn looped(r: &FlowRec, max_hops: u8) -> u64 {
    r.recv
        .iter()
        .flatten()
        .filter(|x| x.hops().is_some_and(|h| h > max_hops))
        .count() as u64
}

/// Summary of the probes sent in `[from, to)` ns: sent, delivered, median latency (ns),
/// and the hop count of the last delivered one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    pub sent: u64,
    pub delivered: u64,
    pub latency_p50_ns: Option<u64>,
    pub hops: Option<u8>,
}

pub fn window(r: &FlowRec, from: u64, to: u64) -> Window {
    let lo = r.sent.partition_point(|&ns| ns < from);
    let hi = r.sent.partition_point(|&ns| ns < to);
    let mut lat = Vec::new();
    let mut w = Window::default();
    for seq in lo..hi {
        w.sent += 1;
        if let Some(x) = r.rx(seq) {
            w.delivered += 1;
            lat.push(x.ns.saturating_sub(r.sent[seq]));
            w.hops = x.hops().or(w.hops);
        }
    }
    lat.sort_unstable();
    w.latency_p50_ns = lat.get(lat.len() / 2).copied();
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow at 1 probe per ms whose probes in `lost` never arrived.
    fn rec(n: usize, lost: &[(usize, usize)]) -> FlowRec {
        let mut r = FlowRec::default();
        for seq in 0..n {
            let ns = seq as u64 * 1_000_000;
            r.sent.push(ns);
            let gone = lost.iter().any(|&(a, b)| (a..b).contains(&seq));
            r.recv.push((!gone).then_some(Rx {
                ns: ns + 200_000,
                ttl: Some(61),
            }));
        }
        r
    }

    #[test]
    fn wire_format_round_trips_and_rejects_strangers() {
        let b = encode(7, 123_456_789, 42);
        assert_eq!(decode(&b), Some((7, 123_456_789, 42)));
        assert_eq!(decode(&b[..LEN - 1]), None);
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(decode(&bad), None);
    }

    /// A quoted UDP probe datagram: header to [`PROBE_PORT`] and payload.
    fn udp_probe(flow: u16, seq: u64, ns: u64) -> Vec<u8> {
        let mut u = vec![0xc3, 0x50];
        u.extend_from_slice(&PROBE_PORT.to_be_bytes());
        u.extend_from_slice(&((8 + LEN) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(&encode(flow, seq, ns));
        u
    }

    /// An ICMPv6 time-exceeded message (no IPv6 header, as a raw socket reads it)
    /// quoting an IPv6 packet whose headers after the fixed one are `ext` (each
    /// `(next header, bytes)`), then `udp`.
    fn icmp6(ext: &[(u8, Vec<u8>)], udp: &[u8]) -> Vec<u8> {
        let mut m = vec![3, 0, 0x12, 0x34, 0, 0, 0, 0];
        let first = ext.first().map_or(17, |e| e.0);
        let payload: usize = ext.iter().map(|e| e.1.len()).sum::<usize>() + udp.len();
        m.extend_from_slice(&[0x60, 0, 0, 0]);
        m.extend_from_slice(&(payload as u16).to_be_bytes());
        m.extend_from_slice(&[first, 1]);
        m.extend_from_slice(&"fd00:100:1::2".parse::<Ipv6Addr>().unwrap().octets());
        m.extend_from_slice(&"fd00:100:2::2".parse::<Ipv6Addr>().unwrap().octets());
        for e in ext {
            m.extend_from_slice(&e.1);
        }
        m.extend_from_slice(udp);
        m
    }

    /// An extension header of `len` bytes (a multiple of 8) followed by `next`.
    fn ext_header(next: u8, len: usize) -> Vec<u8> {
        let mut h = vec![0u8; len];
        h[0] = next;
        h[1] = (len / 8 - 1) as u8;
        h
    }

    /// An IPv4 packet from `router` carrying an ICMP time-exceeded error that quotes
    /// the IPv4 header of a probe and `udp`.
    fn icmp4(router: Ipv4Addr, udp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&router.octets());
        p.extend_from_slice(&[10, 100, 1, 2]);
        p.extend_from_slice(&[11, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 1, 17, 0, 0]);
        p.extend_from_slice(&[10, 100, 1, 2, 10, 100, 2, 2]);
        p.extend_from_slice(udp);
        p
    }

    #[test]
    fn icmp6_time_exceeded_names_router_and_probe() {
        let r: Ipv6Addr = "fd00:ff::3".parse().unwrap();
        let m = icmp6(&[], &udp_probe(5, 77, 1_234));
        assert_eq!(decode_time_exceeded6(r, &m), Some((r, 5, 77, 1_234)));
        // Past hop-by-hop and destination options headers too.
        let ext = [(0, ext_header(60, 8)), (60, ext_header(17, 16))];
        let m = icmp6(&ext, &udp_probe(1, 2, 3));
        assert_eq!(decode_time_exceeded6(r, &m), Some((r, 1, 2, 3)));
        // Bytes after the quoted probe (padding) do not matter.
        let mut m = icmp6(&[], &udp_probe(5, 77, 1_234));
        m.extend_from_slice(&[0; 4]);
        assert_eq!(decode_time_exceeded6(r, &m), Some((r, 5, 77, 1_234)));
    }

    #[test]
    fn icmp6_foreign_malformed_and_truncated_messages_are_none() {
        let r: Ipv6Addr = "fd00:ff::3".parse().unwrap();
        let good = icmp6(&[], &udp_probe(5, 77, 1_234));
        for len in 0..good.len() {
            assert_eq!(decode_time_exceeded6(r, &good[..len]), None, "cut at {len}");
        }
        let mutate = |at: usize, v: u8| {
            let mut m = good.clone();
            m[at] = v;
            decode_time_exceeded6(r, &m)
        };
        assert_eq!(mutate(0, 1), None, "destination unreachable");
        assert_eq!(mutate(0, 129), None, "echo reply");
        assert_eq!(mutate(1, 1), None, "reassembly time exceeded");
        assert_eq!(mutate(8, 0x40), None, "quoted packet is not IPv6");
        assert_eq!(mutate(8 + 6, 6), None, "quoted packet is TCP");
        assert_eq!(mutate(8 + 6, 44), None, "fragment header (not walked)");
        assert_eq!(mutate(8 + 40 + 3, 53), None, "UDP to another port");
        assert_eq!(mutate(8 + 40 + 8, b'X'), None, "not our magic");
        // An extension header claiming more bytes than were quoted.
        let mut m = icmp6(&[(0, ext_header(17, 8))], &udp_probe(1, 2, 3));
        m[8 + 40 + 1] = 200;
        assert_eq!(decode_time_exceeded6(r, &m), None);
        // A chain of extension headers longer than the walk allows.
        let chain: Vec<(u8, Vec<u8>)> = (0..9).map(|_| (60, ext_header(60, 8))).collect();
        assert_eq!(decode_time_exceeded6(r, &icmp6(&chain, &[])), None);
    }

    #[test]
    fn icmp_decoders_never_panic_on_random_bytes() {
        let r: Ipv6Addr = "fd00:ff::3".parse().unwrap();
        let mut rng = fastrand::Rng::with_seed(4);
        let good6 = icmp6(&[(0, ext_header(17, 8))], &udp_probe(5, 77, 1_234));
        let good4 = icmp4(Ipv4Addr::new(10, 255, 0, 3), &udp_probe(5, 77, 1_234));
        for _ in 0..20_000 {
            let len = rng.usize(0..120);
            let noise: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = decode_time_exceeded6(r, &noise);
            let _ = decode_time_exceeded(&noise);
            // Valid messages with a few bytes flipped reach the deeper checks.
            let (mut m6, mut m4) = (good6.clone(), good4.clone());
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..m6.len());
                m6[i] = rng.u8(..);
                let i = rng.usize(..m4.len());
                m4[i] = rng.u8(..);
            }
            let _ = decode_time_exceeded6(r, &m6);
            let _ = decode_time_exceeded(&m4);
        }
    }

    #[test]
    fn icmp4_time_exceeded_names_router_and_probe() {
        let router = Ipv4Addr::new(10, 255, 0, 3);
        let good = icmp4(router, &udp_probe(9, 8, 7));
        assert_eq!(decode_time_exceeded(&good), Some((router, 9, 8, 7)));
        for len in 0..good.len() {
            assert_eq!(decode_time_exceeded(&good[..len]), None, "cut at {len}");
        }
        let mut m = good.clone();
        m[20] = 3; // destination unreachable
        assert_eq!(decode_time_exceeded(&m), None);
        let mut m = good.clone();
        m[20 + 8 + 20 + 3] = 53; // UDP to another port
        assert_eq!(decode_time_exceeded(&m), None);
    }

    #[test]
    fn families_expand_in_order() {
        assert_eq!(Families::Both.members(), &[Family::V4, Family::V6]);
        assert_eq!(Families::V6.members(), &[Family::V6]);
        assert_eq!(Families::default(), Families::Both);
        assert_eq!(format!("{}", Family::V6), "v6");
        let f = FlowSpec {
            from: 0,
            to: 1,
            rate: 1,
            dst: "[fd00::1]:1".parse().unwrap(),
        };
        assert_eq!(f.family(), Family::V6);
    }

    #[test]
    fn outages_are_runs_with_their_lengths() {
        let r = rec(100, &[(10, 13), (50, 51), (90, 100)]);
        let o = outages(&r, 1);
        assert_eq!(o.len(), 3);
        assert_eq!((o[0].first_seq, o[0].lost), (10, 3));
        assert_eq!(o[0].len_ns(0), 3_000_000);
        assert_eq!(o[1].lost, 1);
        // The last one never ended.
        assert_eq!(o[2].end_ns, None);
        assert_eq!(o[2].len_ns(99_000_000), 9_000_000);
        // Single losses are not outages at min_lost = 2.
        assert_eq!(outages(&r, 2).len(), 2);
        assert!(outages(&rec(50, &[]), 1).is_empty());
    }

    #[test]
    fn delivery_inside_and_outside_windows() {
        let r = rec(100, &[(10, 20)]);
        assert_eq!(delivery(&r, &[], false), (100, 90));
        let w = [(10_000_000, 25_000_000)];
        assert_eq!(delivery(&r, &w, true), (15, 5));
        assert_eq!(delivery(&r, &w, false), (85, 85));
    }

    #[test]
    fn probes_beyond_the_mesh_diameter_looped() {
        let mut r = rec(10, &[]);
        assert_eq!(looped(&r, 5), 0);
        r.recv[3] = Some(Rx {
            ns: 1,
            ttl: Some(40),
        });
        assert_eq!(looped(&r, 5), 1);
        assert_eq!(r.recv[3].unwrap().hops(), Some(24));
    }

    #[test]
    fn window_summarises_a_time_slice() {
        let r = rec(100, &[(40, 45)]);
        let w = window(&r, 35_000_000, 50_000_000);
        assert_eq!((w.sent, w.delivered), (15, 10));
        assert_eq!(w.latency_p50_ns, Some(200_000));
        assert_eq!(w.hops, Some(3));
        assert_eq!(window(&r, 200_000_000, 300_000_000), Window::default());
    }
}
