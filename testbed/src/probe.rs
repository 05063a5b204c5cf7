//! Sequence-numbered probe flows between clients, and what they tell: delivery ratio,
//! every outage and its length, hop counts (a packet that crossed more routers than the
//! mesh has looped).
//!
//! A probe is a UDP datagram to [`PROBE_PORT`] carrying `"DCMP"`, the flow id (u16), the
//! sequence number (u64) and the send time (u64 ns since the run's start), big-endian.
//! Senders pace each flow at its rate from one thread; one receiver thread reads every
//! client's socket and notes arrival time and the IP TTL left (sent with TTL 64).
//! Analysis functions are pure and take the records.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
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
/// TTL probes leave with.
pub const INITIAL_TTL: u8 = 64;
const MAGIC: [u8; 4] = *b"DCMP";
const LEN: usize = 4 + 2 + 8 + 8;

/// One flow: from a socket in the source client to the destination address.
#[derive(Clone, Debug)]
pub struct FlowSpec {
    pub from: usize,
    pub to: usize,
    /// Probes per second.
    pub rate: u32,
    pub dst: SocketAddr,
}

/// One received probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rx {
    /// Arrival, ns since the run's start.
    pub ns: u64,
    /// IP TTL left on arrival (`None` if the kernel did not report it).
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
    /// Probes whose TTL ran out in the mesh (a loop), as the ICMP time-exceeded errors
    /// routers sent back tell. Diagnostic detail only: routers rate-limit those errors
    /// and they can be lost, so the datapath's TTL counters remain the measure.
    pub expired: Vec<Expiry>,
}

/// A probe whose TTL ran out, from the router's ICMP time-exceeded error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Expiry {
    pub seq: u64,
    /// Send time of the probe, ns since the run's start.
    pub sent_ns: u64,
    /// Arrival of the error at the sender, ns since the run's start.
    pub at_ns: u64,
    /// The router that dropped it (source of the ICMP error).
    pub router: std::net::Ipv4Addr,
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

/// (router, flow, seq, send ns) of an IPv4 packet (as a raw ICMP socket reads it: IP
/// header first) that is an ICMP time-exceeded error quoting one of our probes whole
/// (Linux quotes up to 576 bytes), or `None` for anything else.
pub fn decode_time_exceeded(p: &[u8]) -> Option<(std::net::Ipv4Addr, u16, u64, u64)> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p[0] >> 4 != 4 || ihl < 20 || p.len() < ihl + 8 || p[9] != 1 {
        return None;
    }
    let router = std::net::Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let icmp = &p[ihl..];
    if icmp[0] != 11 || icmp[1] != 0 {
        return None;
    }
    let inner = &icmp[8..];
    let ihl2 = usize::from(*inner.first()? & 0x0f) * 4;
    if inner[0] >> 4 != 4 || ihl2 < 20 || inner.len() < ihl2 + 8 + LEN || inner[9] != 17 {
        return None;
    }
    let (flow, seq, ns) = decode(&inner[ihl2 + 8..ihl2 + 8 + LEN])?;
    Some((router, flow, seq, ns))
}

/// A raw ICMPv4 socket in the calling thread's namespace (every ICMP message arriving
/// there is copied to it; nothing is sent).
pub fn icmp_listener() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call; the fd is owned by the returned value.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
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

fn enable_ttl(s: &UdpSocket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram and the TTL it arrived with.
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
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TTL {
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
    /// client); `receivers` are (client index, socket bound to [`PROBE_PORT`] there).
    /// Times are measured from `t0`.
    pub fn start(
        flows: Vec<FlowSpec>,
        senders: Vec<UdpSocket>,
        receivers: Vec<(usize, UdpSocket)>,
        icmp: Vec<std::os::fd::OwnedFd>,
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
    icmp: &[std::os::fd::OwnedFd],
    recs: &[Mutex<FlowRec>],
    stop: &AtomicBool,
    stray: &AtomicU64,
    t0: Instant,
) {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|(_, s)| s.as_raw_fd())
        .chain(icmp.iter().map(|f| f.as_raw_fd()))
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
        for (k, fd) in icmp.iter().enumerate() {
            if fds[socks.len() + k].revents != 0 {
                read_icmp(fd, flows, recs, t0);
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

/// Drains a raw ICMP socket, noting time-exceeded errors about our probes.
fn read_icmp(fd: &std::os::fd::OwnedFd, flows: &[FlowSpec], recs: &[Mutex<FlowRec>], t0: Instant) {
    let mut buf = [0u8; 1500];
    loop {
        // SAFETY: buf is valid for its length; non-blocking socket.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return;
        }
        let at_ns = ns_since(t0);
        let Some((router, flow, seq, sent_ns)) = decode_time_exceeded(&buf[..n as usize]) else {
            continue;
        };
        if usize::from(flow) >= flows.len() {
            continue;
        }
        if let Ok(mut r) = recs[usize::from(flow)].lock() {
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
