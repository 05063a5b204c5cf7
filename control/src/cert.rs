//! Node certificates: which key may announce which prefixes, for how long, on whose word.
//!
//! A certificate binds a node key to the IPv4/IPv6 prefixes it may announce, for at most
//! [`MAX_VALIDITY_SECS`] (4 hours: a stolen key is useless soon, without revocation lists).
//! It is valid at `now` when `not_before <= now < not_after` and at least `k` distinct
//! authorities out of the configured `n` signed it (distributed validation: no single
//! authority key can mint nodes). Signatures by unknown keys are ignored, not fatal, so
//! authority sets can be rotated one key at a time.
//!
//! The byte layout is in [`crate::wire`]; the file form is one line,
//! `dcmesh-cert-v1 <hex of those bytes>`.
use std::path::Path;

use ipnet::IpNet;

use crate::{
    identity::{self, Identity, NodeId},
    wire::{Reader, WireError, Writer, MAX_CERT_SIGS, MAX_PREFIXES},
};

/// Longest certificate lifetime, in seconds.
pub const MAX_VALIDITY_SECS: u64 = 4 * 3600;
/// Domain tag prefixed to the certificate bytes an authority signs.
pub const SIGN_DOMAIN: &[u8; 4] = b"DMC1";
/// First word of a certificate file.
pub const CERT_FILE_TAG: &str = "dcmesh-cert-v1";

/// A certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub node: NodeId,
    /// Unix seconds, inclusive.
    pub not_before: u64,
    /// Unix seconds, exclusive.
    pub not_after: u64,
    pub prefixes: Vec<IpNet>,
    /// (authority, signature) pairs.
    pub sigs: Vec<(NodeId, [u8; 64])>,
}

/// Why a certificate is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("malformed certificate: {0}")]
    Malformed(#[from] WireError),
    #[error("validity of {secs} s exceeds the 4 h limit ({MAX_VALIDITY_SECS} s)")]
    TooLong { secs: u64 },
    #[error("not_after ({not_after}) is not after not_before ({not_before})")]
    EmptyWindow { not_before: u64, not_after: u64 },
    #[error("not valid before {not_before} (now {now}); check the clocks")]
    NotYetValid { not_before: u64, now: u64 },
    #[error("expired at {not_after} (now {now}); renew it with \"dcmesh authority issue\"")]
    Expired { not_after: u64, now: u64 },
    #[error("{valid} valid signatures from distinct listed authorities, {needed} needed")]
    Signatures { valid: usize, needed: usize },
    #[error("certificate grants no prefixes")]
    NoPrefixes,
}

/// The authorities a node trusts: `n` keys and the threshold `k`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorities {
    keys: Vec<NodeId>,
    threshold: usize,
}

/// Bad authority set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthoritiesError {
    #[error("threshold {k} must be between 1 and the number of authority keys ({n})")]
    Threshold { k: usize, n: usize },
    #[error("authority key {0} is listed twice")]
    Duplicate(NodeId),
}

impl Authorities {
    pub fn new(keys: Vec<NodeId>, threshold: usize) -> Result<Self, AuthoritiesError> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(AuthoritiesError::Duplicate(*k));
            }
        }
        if threshold == 0 || threshold > keys.len() {
            return Err(AuthoritiesError::Threshold {
                k: threshold,
                n: keys.len(),
            });
        }
        Ok(Self { keys, threshold })
    }
    pub fn keys(&self) -> &[NodeId] {
        &self.keys
    }
    pub fn threshold(&self) -> usize {
        self.threshold
    }
}

impl Certificate {
    /// An unsigned certificate; refuses windows above 4 h, empty windows and no prefixes.
    pub fn new(
        node: NodeId,
        prefixes: Vec<IpNet>,
        not_before: u64,
        not_after: u64,
    ) -> Result<Self, CertError> {
        if prefixes.len() > MAX_PREFIXES {
            return Err(WireError::TooMany {
                what: "prefixes",
                count: prefixes.len(),
                max: MAX_PREFIXES,
            }
            .into());
        }
        let c = Self {
            node,
            not_before,
            not_after,
            prefixes: prefixes.into_iter().map(|p| p.trunc()).collect(),
            sigs: Vec::new(),
        };
        c.check_shape()?;
        Ok(c)
    }

    fn check_shape(&self) -> Result<(), CertError> {
        if self.not_after <= self.not_before {
            return Err(CertError::EmptyWindow {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        let secs = self.not_after - self.not_before;
        if secs > MAX_VALIDITY_SECS {
            return Err(CertError::TooLong { secs });
        }
        if self.prefixes.is_empty() {
            return Err(CertError::NoPrefixes);
        }
        Ok(())
    }

    /// The bytes authorities sign: the domain tag, then everything before the signatures.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(SIGN_DOMAIN);
        self.write_tbs(&mut w);
        w.buf
    }

    fn write_tbs(&self, w: &mut Writer) {
        w.bytes(&self.node.0);
        w.u64(self.not_before);
        w.u64(self.not_after);
        w.prefixes(&self.prefixes);
    }

    /// Adds (or replaces) `authority`'s signature.
    pub fn sign(&mut self, authority: &Identity) -> Result<(), CertError> {
        let sig = authority.sign(&self.signed_bytes());
        let id = authority.id();
        self.sigs.retain(|(a, _)| *a != id);
        if self.sigs.len() >= MAX_CERT_SIGS {
            return Err(WireError::TooMany {
                what: "certificate signatures",
                count: self.sigs.len() + 1,
                max: MAX_CERT_SIGS,
            }
            .into());
        }
        self.sigs.push((id, sig));
        Ok(())
    }

    /// Byte form (see [`crate::wire`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write_tbs(&mut w);
        w.u8(self.sigs.len() as u8);
        for (a, s) in &self.sigs {
            w.bytes(&a.0);
            w.bytes(s);
        }
        w.buf
    }

    /// Parses the byte form; never panics.
    pub fn decode(buf: &[u8]) -> Result<Self, CertError> {
        let mut r = Reader::new(buf);
        let node = r.node("certificate node")?;
        let not_before = r.u64("not_before")?;
        let not_after = r.u64("not_after")?;
        let prefixes = r.prefixes()?;
        let n = r.count(false, "certificate signatures", MAX_CERT_SIGS)?;
        let sigs = (0..n)
            .map(|_| Ok((r.node("authority")?, r.array("authority signature")?)))
            .collect::<Result<_, WireError>>()?;
        r.finish()?;
        Ok(Self {
            node,
            not_before,
            not_after,
            prefixes,
            sigs,
        })
    }

    /// Checks shape and time window only (cheap; no signatures).
    pub fn check_window(&self, now: u64) -> Result<(), CertError> {
        self.check_shape()?;
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now >= self.not_after {
            return Err(CertError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// Counts valid signatures from distinct listed authorities and requires `k`.
    pub fn check_signatures(&self, auth: &Authorities) -> Result<(), CertError> {
        let msg = self.signed_bytes();
        let mut seen: Vec<NodeId> = Vec::new();
        for (a, s) in &self.sigs {
            if auth.keys.contains(a) && !seen.contains(a) && identity::verify(a, &msg, s) {
                seen.push(*a);
                if seen.len() >= auth.threshold {
                    return Ok(());
                }
            }
        }
        Err(CertError::Signatures {
            valid: seen.len(),
            needed: auth.threshold,
        })
    }

    /// Full check at `now`: shape, window, then k-of-n signatures.
    pub fn verify(&self, auth: &Authorities, now: u64) -> Result<(), CertError> {
        self.check_window(now)?;
        self.check_signatures(auth)
    }

    /// Whether `prefix` lies inside a granted prefix.
    pub fn grants(&self, prefix: &IpNet) -> bool {
        self.prefixes.iter().any(|g| g.contains(prefix))
    }

    /// The file form.
    pub fn to_file_text(&self) -> String {
        format!("{CERT_FILE_TAG} {}\n", hex::encode(self.encode()))
    }

    /// Parses the file form.
    pub fn from_file_text(text: &str) -> Result<Self, CertError> {
        let mut w = text.split_whitespace();
        let bad = || CertError::Malformed(WireError::Truncated("\"dcmesh-cert-v1 <hex>\""));
        match (w.next(), w.next(), w.next()) {
            (Some(CERT_FILE_TAG), Some(h), None) => {
                Self::decode(&hex::decode(h).map_err(|_| bad())?)
            }
            _ => Err(bad()),
        }
    }

    /// Reads a certificate file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read certificate {}", path.display()))?;
        Self::from_file_text(&text).with_context(|| format!("certificate {}", path.display()))
    }
}

/// Remembers, per node, the certificate whose signatures last checked out, so a flood of
/// adverts from one node costs one signature check per advert, not k + 1. Only
/// signatures are cached: the time window is checked on every use. Keyed by node, so a
/// renewal replaces the old entry and memory stays one certificate per node.
#[derive(Default)]
pub struct CertCache {
    ok: std::collections::HashMap<NodeId, (Vec<u8>, u64)>,
}

/// Entries above which the cache is emptied (bounds memory under a flood of certificates
/// for distinct keys; refilling costs only signature checks).
pub const CERT_CACHE_MAX: usize = 262_144;

impl CertCache {
    /// Decodes and fully verifies `bytes` at `now`.
    pub fn verify(
        &mut self,
        bytes: &[u8],
        auth: &Authorities,
        now: u64,
    ) -> Result<Certificate, CertError> {
        let c = Certificate::decode(bytes)?;
        self.check(&c, bytes, auth, now)?;
        Ok(c)
    }

    /// Fully verifies `c`, already decoded from `bytes`, at `now`.
    pub fn check(
        &mut self,
        c: &Certificate,
        bytes: &[u8],
        auth: &Authorities,
        now: u64,
    ) -> Result<(), CertError> {
        c.check_window(now)?;
        if self.ok.get(&c.node).is_some_and(|(b, _)| b == bytes) {
            return Ok(());
        }
        c.check_signatures(auth)?;
        if self.ok.len() >= CERT_CACHE_MAX {
            self.ok.clear();
        }
        self.ok.insert(c.node, (bytes.to_vec(), c.not_after));
        Ok(())
    }

    /// Forgets certificates expired at `now`.
    pub fn purge(&mut self, now: u64) {
        self.ok.retain(|_, (_, na)| *na > now);
    }

    pub fn len(&self) -> usize {
        self.ok.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ok.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn auths(n: u8) -> Vec<Identity> {
        (0..n).map(|i| Identity::from_seed([100 + i; 32])).collect()
    }

    fn cert(nb: u64, na: u64) -> Certificate {
        Certificate::new(
            Identity::from_seed([1; 32]).id(),
            vec![
                "10.1.0.0/16".parse().unwrap(),
                "fd00:1::/48".parse().unwrap(),
            ],
            nb,
            na,
        )
        .unwrap()
    }

    #[test]
    fn validity_boundaries() {
        assert!(Certificate::new(
            NodeId([1; 32]),
            vec!["10.0.0.0/8".parse().unwrap()],
            0,
            MAX_VALIDITY_SECS
        )
        .is_ok());
        assert_eq!(
            Certificate::new(
                NodeId([1; 32]),
                vec!["10.0.0.0/8".parse().unwrap()],
                0,
                MAX_VALIDITY_SECS + 1
            ),
            Err(CertError::TooLong {
                secs: MAX_VALIDITY_SECS + 1
            })
        );
        assert!(matches!(
            Certificate::new(NodeId([1; 32]), vec!["10.0.0.0/8".parse().unwrap()], 5, 5),
            Err(CertError::EmptyWindow { .. })
        ));
        let c = cert(1000, 2000);
        assert!(matches!(
            c.check_window(999),
            Err(CertError::NotYetValid { .. })
        ));
        assert!(c.check_window(1000).is_ok());
        assert!(c.check_window(1999).is_ok());
        assert!(matches!(
            c.check_window(2000),
            Err(CertError::Expired { .. })
        ));
    }

    #[test]
    fn k_of_n_counts_distinct_listed_authorities() {
        let a = auths(3);
        let set = Authorities::new(a.iter().map(|x| x.id()).collect(), 2).unwrap();
        let mut c = cert(0, 100);
        assert_eq!(
            c.verify(&set, 50),
            Err(CertError::Signatures {
                valid: 0,
                needed: 2
            })
        );
        c.sign(&a[0]).unwrap();
        assert_eq!(
            c.verify(&set, 50),
            Err(CertError::Signatures {
                valid: 1,
                needed: 2
            })
        );
        // The same authority twice still counts once.
        let dup = c.sigs[0];
        c.sigs.push(dup);
        assert_eq!(
            c.verify(&set, 50),
            Err(CertError::Signatures {
                valid: 1,
                needed: 2
            })
        );
        c.sigs.pop();
        // An unlisted authority does not count.
        c.sign(&Identity::from_seed([9; 32])).unwrap();
        assert_eq!(
            c.verify(&set, 50),
            Err(CertError::Signatures {
                valid: 1,
                needed: 2
            })
        );
        c.sign(&a[2]).unwrap();
        assert_eq!(c.verify(&set, 50), Ok(()));
        // Tampering with a granted prefix breaks every signature.
        let mut t = c.clone();
        t.prefixes[0] = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            t.verify(&set, 50),
            Err(CertError::Signatures {
                valid: 0,
                needed: 2
            })
        );
        // An expired certificate fails before signatures are looked at.
        assert!(matches!(
            c.verify(&set, 100),
            Err(CertError::Expired { .. })
        ));
    }

    #[test]
    fn authority_set_validation() {
        let ids: Vec<NodeId> = auths(2).iter().map(|a| a.id()).collect();
        assert!(matches!(
            Authorities::new(ids.clone(), 0),
            Err(AuthoritiesError::Threshold { .. })
        ));
        assert!(matches!(
            Authorities::new(ids.clone(), 3),
            Err(AuthoritiesError::Threshold { .. })
        ));
        assert!(matches!(
            Authorities::new(vec![ids[0], ids[0]], 1),
            Err(AuthoritiesError::Duplicate(_))
        ));
    }

    #[test]
    fn grants_only_contained_prefixes() {
        let c = cert(0, 10);
        assert!(c.grants(&"10.1.2.0/24".parse().unwrap()));
        assert!(c.grants(&"10.1.0.0/16".parse().unwrap()));
        assert!(!c.grants(&"10.0.0.0/8".parse().unwrap()));
        assert!(!c.grants(&"10.2.0.0/24".parse().unwrap()));
        assert!(c.grants(&"fd00:1:0:5::/64".parse().unwrap()));
        assert!(!c.grants(&"fd00:2::/64".parse().unwrap()));
    }

    #[test]
    fn file_form_round_trips() {
        let mut c = cert(0, 10);
        c.sign(&auths(1)[0]).unwrap();
        assert_eq!(Certificate::from_file_text(&c.to_file_text()).unwrap(), c);
        assert!(Certificate::from_file_text("nonsense").is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Certificate::decode(&bytes);
        }
    }
}
