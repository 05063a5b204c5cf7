//! The on-the-wire format of hellos and adverts (version 1).
//!
//! Every integer is big-endian. A datagram is one message:
//!
//! ```text
//! header (8 bytes)
//!   magic    2  "DM" (0x44 0x4d)
//!   version  1  1
//!   kind     1  1 = hello, 2 = advert
//!   length   2  bytes after the header, signature included; must match the datagram
//!   flags    2  0 (receivers refuse other values, so a future meaning cannot be ignored)
//! hello body
//!   node     32 sender's Ed25519 public key
//!   mac      6  sender's MAC on this interface (next-hop rewrite target)
//!   seq      2  hello sequence number, +1 per hello on this interface (wraps)
//!   interval 2  milliseconds until the next hello (receivers derive loss from it)
//!   cert_len 2, cert  the sender's certificate (see below)
//!   count    1  neighbours heard on this interface, then per neighbour:
//!     node 32, rx 2  fraction of that neighbour's hellos received, in 1/65535
//!   sig      64 Ed25519 signature by `node` over header and body before `sig`
//! advert body
//!   origin   32 originator's public key
//!   seq      8  sequence number, strictly increasing per origin (persisted)
//!   expires  8  unix seconds after which the advert is void
//!   cert_len 2, cert  the originator's certificate
//!   links    2  count, then per bidirectional link: neighbour 32, cost 4 (1/256 ETX units)
//!   prefixes 1  count, then per prefix (see below)
//!   sig      64 Ed25519 signature by `origin` over header and body before `sig`
//! certificate
//!   node       32
//!   not_before 8, not_after 8  unix seconds
//!   prefixes   1 count, then per prefix: family 1 (4 or 6), length 1, address 4 or 16
//!   sigs       1 count, then per signature: authority key 32, signature 64 over
//!              "DMC1" followed by the certificate bytes before `sigs`
//! ```
//!
//! Counts are bounded ([`MAX_HEARD`], [`MAX_LINKS`], [`MAX_PREFIXES`], [`MAX_CERT_SIGS`]),
//! prefixes must have their host bits clear, and nothing may follow the last field: the
//! decoder refuses anything else with a [`WireError`] and never panics.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::identity::NodeId;

pub const MAGIC: [u8; 2] = *b"DM";
pub const VERSION: u8 = 1;
pub const KIND_HELLO: u8 = 1;
pub const KIND_ADVERT: u8 = 2;
pub const HEADER_LEN: usize = 8;
pub const SIG_LEN: usize = 64;
/// Most neighbours one hello reports.
pub const MAX_HEARD: usize = 255;
/// Most links one advert carries.
pub const MAX_LINKS: usize = 1024;
/// Most prefixes a certificate grants or an advert announces.
pub const MAX_PREFIXES: usize = 32;
/// Most authority signatures on one certificate.
pub const MAX_CERT_SIGS: usize = 16;
/// Largest datagram: an IPv6 UDP payload that needs no jumbogram.
pub const MAX_DATAGRAM: usize = 65_000;

/// Why bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: {0} missing")]
    Truncated(&'static str),
    #[error("bad magic (not a dcmesh message)")]
    BadMagic,
    #[error("unsupported version {0} (this build speaks {VERSION})")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("unknown flags {0:#06x}")]
    Flags(u16),
    #[error("header says {header} body bytes, datagram has {actual}")]
    Length { header: usize, actual: usize },
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("bad prefix: {0}")]
    Prefix(&'static str),
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("message of {0} bytes exceeds the datagram limit")]
    TooLarge(usize),
}

/// Bounds-checked reader: every read either returns the bytes or a `Truncated` error.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }
    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn node(&mut self, what: &'static str) -> Result<NodeId, WireError> {
        Ok(NodeId(self.array(what)?))
    }
    pub(crate) fn count(
        &mut self,
        wide: bool,
        what: &'static str,
        max: usize,
    ) -> Result<usize, WireError> {
        let n = if wide {
            self.u16(what)? as usize
        } else {
            self.u8(what)? as usize
        };
        if n > max {
            return Err(WireError::TooMany {
                what,
                count: n,
                max,
            });
        }
        Ok(n)
    }
    pub(crate) fn prefix(&mut self) -> Result<IpNet, WireError> {
        let family = self.u8("prefix family")?;
        let len = self.u8("prefix length")?;
        let net = match family {
            4 => {
                let a: [u8; 4] = self.array("IPv4 prefix")?;
                IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(a), len)
                        .map_err(|_| WireError::Prefix("IPv4 length above 32"))?,
                )
            }
            6 => {
                let a: [u8; 16] = self.array("IPv6 prefix")?;
                IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(a), len)
                        .map_err(|_| WireError::Prefix("IPv6 length above 128"))?,
                )
            }
            _ => return Err(WireError::Prefix("family is neither 4 nor 6")),
        };
        if net.trunc() != net {
            return Err(WireError::Prefix("host bits set"));
        }
        Ok(net)
    }
    pub(crate) fn prefixes(&mut self) -> Result<Vec<IpNet>, WireError> {
        let n = self.count(false, "prefixes", MAX_PREFIXES)?;
        (0..n).map(|_| self.prefix()).collect()
    }
    pub(crate) fn rest(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// Appending writer (encoding cannot fail once counts are checked by the caller).
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn prefix(&mut self, p: &IpNet) {
        match p.trunc() {
            IpNet::V4(n) => {
                self.u8(4);
                self.u8(n.prefix_len());
                self.bytes(&n.addr().octets());
            }
            IpNet::V6(n) => {
                self.u8(6);
                self.u8(n.prefix_len());
                self.bytes(&n.addr().octets());
            }
        }
    }
    pub(crate) fn prefixes(&mut self, ps: &[IpNet]) {
        self.u8(ps.len() as u8);
        for p in ps {
            self.prefix(p);
        }
    }
}

/// What a neighbour reports about one of its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub node: NodeId,
    /// Fraction of `node`'s hellos the sender received, in 1/65535.
    pub rx: u16,
}

/// A hello's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub node: NodeId,
    pub mac: [u8; 6],
    pub seq: u16,
    pub interval_ms: u16,
    /// The sender's encoded certificate.
    pub cert: Vec<u8>,
    pub heard: Vec<Heard>,
}

/// One link in an advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AdvLink {
    pub neighbour: NodeId,
    /// Cost towards `neighbour` in 1/256 ETX units (see [`crate::metric`]).
    pub cost: u32,
}

/// An advert's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub origin: NodeId,
    pub seq: u64,
    /// Unix seconds.
    pub expires: u64,
    pub cert: Vec<u8>,
    pub links: Vec<AdvLink>,
    pub prefixes: Vec<IpNet>,
}

/// A decoded message with the exact bytes it came in (signature at the end), so the
/// signature can be checked and the message re-flooded byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<T> {
    pub body: T,
    pub raw: Vec<u8>,
}

impl<T> Signed<T> {
    /// The bytes the signature covers.
    pub fn signed_part(&self) -> &[u8] {
        &self.raw[..self.raw.len() - SIG_LEN]
    }
    /// The signature.
    pub fn signature(&self) -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(&self.raw[self.raw.len() - SIG_LEN..]);
        s
    }
}

/// Any message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Signed<Hello>),
    Advert(Signed<Advert>),
}

fn cert_field(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let n = r.u16("certificate length")? as usize;
    Ok(r.take(n, "certificate")?.to_vec())
}

/// Decodes one datagram. Signatures are not checked here (see [`crate::lsdb`]).
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader::new(buf);
    if r.array::<2>("magic")? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = r.u8("kind")?;
    let len = r.u16("length")? as usize;
    let flags = r.u16("flags")?;
    if flags != 0 {
        return Err(WireError::Flags(flags));
    }
    if len != r.rest() {
        return Err(WireError::Length {
            header: len,
            actual: r.rest(),
        });
    }
    if len < SIG_LEN {
        return Err(WireError::Truncated("signature"));
    }
    let mut r = Reader::new(&buf[HEADER_LEN..buf.len() - SIG_LEN]);
    let msg = match kind {
        KIND_HELLO => {
            let node = r.node("hello node")?;
            let mac = r.array("hello mac")?;
            let seq = r.u16("hello seq")?;
            let interval_ms = r.u16("hello interval")?;
            let cert = cert_field(&mut r)?;
            let n = r.count(false, "heard neighbours", MAX_HEARD)?;
            let heard = (0..n)
                .map(|_| {
                    Ok(Heard {
                        node: r.node("heard node")?,
                        rx: r.u16("heard rx")?,
                    })
                })
                .collect::<Result<_, WireError>>()?;
            Message::Hello(Signed {
                body: Hello {
                    node,
                    mac,
                    seq,
                    interval_ms,
                    cert,
                    heard,
                },
                raw: buf.to_vec(),
            })
        }
        KIND_ADVERT => {
            let origin = r.node("advert origin")?;
            let seq = r.u64("advert seq")?;
            let expires = r.u64("advert expiry")?;
            let cert = cert_field(&mut r)?;
            let n = r.count(true, "links", MAX_LINKS)?;
            let links = (0..n)
                .map(|_| {
                    Ok(AdvLink {
                        neighbour: r.node("link neighbour")?,
                        cost: r.u32("link cost")?,
                    })
                })
                .collect::<Result<_, WireError>>()?;
            let prefixes = r.prefixes()?;
            Message::Advert(Signed {
                body: Advert {
                    origin,
                    seq,
                    expires,
                    cert,
                    links,
                    prefixes,
                },
                raw: buf.to_vec(),
            })
        }
        k => return Err(WireError::Kind(k)),
    };
    r.finish()?;
    Ok(msg)
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), WireError> {
    if count > max {
        return Err(WireError::TooMany { what, count, max });
    }
    Ok(())
}

/// Frames `body` with a header and appends the signature computed by `sign`.
fn frame(
    kind: u8,
    body: Writer,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<Vec<u8>, WireError> {
    let total = HEADER_LEN + body.buf.len() + SIG_LEN;
    if total > MAX_DATAGRAM {
        return Err(WireError::TooLarge(total));
    }
    let mut w = Writer::default();
    w.bytes(&MAGIC);
    w.u8(VERSION);
    w.u8(kind);
    w.u16((body.buf.len() + SIG_LEN) as u16);
    w.u16(0);
    w.bytes(&body.buf);
    let sig = sign(&w.buf);
    w.bytes(&sig);
    Ok(w.buf)
}

impl Hello {
    /// Encodes and signs (`sign` gets the bytes to sign, e.g. `|m| identity.sign(m)`).
    pub fn encode(&self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<Vec<u8>, WireError> {
        check_count("heard neighbours", self.heard.len(), MAX_HEARD)?;
        check_count("certificate bytes", self.cert.len(), u16::MAX as usize)?;
        let mut w = Writer::default();
        w.bytes(&self.node.0);
        w.bytes(&self.mac);
        w.u16(self.seq);
        w.u16(self.interval_ms);
        w.u16(self.cert.len() as u16);
        w.bytes(&self.cert);
        w.u8(self.heard.len() as u8);
        for h in &self.heard {
            w.bytes(&h.node.0);
            w.u16(h.rx);
        }
        frame(KIND_HELLO, w, sign)
    }
}

impl Advert {
    /// Encodes and signs.
    pub fn encode(&self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<Vec<u8>, WireError> {
        check_count("links", self.links.len(), MAX_LINKS)?;
        check_count("prefixes", self.prefixes.len(), MAX_PREFIXES)?;
        check_count("certificate bytes", self.cert.len(), u16::MAX as usize)?;
        let mut w = Writer::default();
        w.bytes(&self.origin.0);
        w.u64(self.seq);
        w.u64(self.expires);
        w.u16(self.cert.len() as u16);
        w.bytes(&self.cert);
        w.u16(self.links.len() as u16);
        for l in &self.links {
            w.bytes(&l.neighbour.0);
            w.u32(l.cost);
        }
        w.prefixes(&self.prefixes);
        frame(KIND_ADVERT, w, sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn advert() -> Advert {
        Advert {
            origin: NodeId([1; 32]),
            seq: 42,
            expires: 1_000_000,
            cert: vec![9; 100],
            links: vec![AdvLink {
                neighbour: NodeId([2; 32]),
                cost: 256,
            }],
            prefixes: vec!["10.1.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()],
        }
    }

    fn hello() -> Hello {
        Hello {
            node: NodeId([3; 32]),
            mac: [2, 0, 0, 0, 0, 1],
            seq: 65535,
            interval_ms: 1000,
            cert: vec![1, 2, 3],
            heard: vec![Heard {
                node: NodeId([4; 32]),
                rx: 40000,
            }],
        }
    }

    #[test]
    fn round_trips() {
        let raw = advert().encode(|_| [7; 64]).unwrap();
        let Message::Advert(s) = decode(&raw).unwrap() else {
            panic!("not an advert")
        };
        assert_eq!(s.body, advert());
        assert_eq!(s.signature(), [7; 64]);
        assert_eq!(s.signed_part(), &raw[..raw.len() - 64]);
        let raw = hello().encode(|_| [8; 64]).unwrap();
        assert!(matches!(decode(&raw).unwrap(), Message::Hello(s) if s.body == hello()));
    }

    #[test]
    fn every_truncation_is_refused() {
        let raw = advert().encode(|_| [7; 64]).unwrap();
        for n in 0..raw.len() {
            assert!(
                decode(&raw[..n]).is_err(),
                "accepted {n} of {} bytes",
                raw.len()
            );
        }
    }

    #[test]
    fn header_checks() {
        let raw = hello().encode(|_| [0; 64]).unwrap();
        let mut b = raw.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), Err(WireError::BadMagic));
        let mut b = raw.clone();
        b[2] = 2;
        assert_eq!(decode(&b), Err(WireError::Version(2)));
        let mut b = raw.clone();
        b[3] = 9;
        assert_eq!(decode(&b), Err(WireError::Kind(9)));
        let mut b = raw.clone();
        b[7] = 1;
        assert_eq!(decode(&b), Err(WireError::Flags(1)));
        let mut b = raw.clone();
        b.push(0);
        assert!(matches!(decode(&b), Err(WireError::Length { .. })));
    }

    #[test]
    fn host_bits_and_bad_families_are_refused() {
        let mut a = advert();
        a.prefixes = vec![];
        let raw = a.encode(|_| [0; 64]).unwrap();
        // Replace the empty prefix list by one prefix with host bits set: fix the length.
        let mut b = raw[..raw.len() - 64 - 1].to_vec();
        b.extend_from_slice(&[1, 4, 24, 10, 0, 0, 1]);
        b.extend_from_slice(&[0; 64]);
        let body = (b.len() - HEADER_LEN) as u16;
        b[4..6].copy_from_slice(&body.to_be_bytes());
        assert_eq!(decode(&b), Err(WireError::Prefix("host bits set")));
        let at = b.len() - 64 - 7;
        b[at] = 5;
        assert!(matches!(decode(&b), Err(WireError::Prefix(_))));
    }

    #[test]
    fn limits_are_enforced_on_encode() {
        let mut a = advert();
        a.prefixes = vec!["10.0.0.0/8".parse().unwrap(); MAX_PREFIXES + 1];
        assert!(matches!(
            a.encode(|_| [0; 64]),
            Err(WireError::TooMany { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(idx in any::<prop::sample::Index>(), val in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut raw = advert().encode(|_| [7; 64]).unwrap();
            let i = idx.index(raw.len());
            raw[i] = val;
            let _ = decode(&raw);
            let n = cut.index(raw.len());
            let _ = decode(&raw[..n]);
        }
    }
}
