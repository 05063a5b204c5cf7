//! The link-state database: the newest verified advert of every origin.
//!
//! Nothing reaches route computation before [`Lsdb::accept`] has checked, in this order
//! (cheap checks first, so junk costs no signature checks):
//! 1. the bytes decode as an advert (`malformed`);
//! 2. its stapled certificate decodes (`cert_malformed`), is for the origin's key
//!    (`cert_mismatch`), lies within 4 h (`cert_too_long`) and is valid now
//!    (`cert_not_yet_valid`, `cert_expired`);
//! 3. the advert itself has not expired (`expired`) and does not claim a lifetime above
//!    [`LsdbConfig::max_lifetime_s`] (`too_far_future`);
//! 4. its sequence number is newer than the stored one (`replayed`; the very same bytes
//!    again are a `duplicate`, which is normal flooding, not a rejection);
//! 5. every announced prefix is granted by the certificate (`prefix_not_granted`);
//! 6. k of n authorities signed the certificate (`cert_signatures`);
//! 7. the origin signed the advert (`bad_signature`).
//!
//! Every rejection increments the counter of its reason and leaves the database as it
//! was. [`Lsdb::accept_batch`] runs steps 1–6 per advert and step 7 as one Ed25519 batch
//! verification, falling back to single checks only when the batch fails. Single checks
//! are strict (`verify_strict`); the batch equation is not, so a signature its own signer
//! deliberately built with a small-order component could pass in a batch and fail alone.
//! That gives the signer nothing it could not sign anyway, and nobody else can produce
//! one; weak (small-order) origin keys are refused on both paths.
use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::{
    cert::{Authorities, CertCache, CertError, Certificate},
    identity::{self, NodeId},
    wire::{self, Advert, Message},
};

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident => $label:literal, )+) => {
        /// Why an advert was refused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reject { $( $(#[$doc])* $name, )+ }
        impl Reject {
            pub const ALL: &'static [Reject] = &[$(Reject::$name,)+];
            /// Stable snake_case name (metric label).
            pub const fn name(self) -> &'static str {
                match self { $(Reject::$name => $label,)+ }
            }
        }
    };
}

reasons! {
    /// Not a decodable advert.
    Malformed => "malformed",
    /// Stapled certificate does not decode.
    CertMalformed => "cert_malformed",
    /// Certificate is for another key than the advert's origin.
    CertMismatch => "cert_mismatch",
    /// Certificate window longer than 4 h.
    CertTooLong => "cert_too_long",
    /// Certificate not valid yet.
    CertNotYetValid => "cert_not_yet_valid",
    /// Certificate expired.
    CertExpired => "cert_expired",
    /// Fewer than k valid signatures from distinct listed authorities.
    CertSignatures => "cert_signatures",
    /// Advert past its expiry.
    Expired => "expired",
    /// Advert lifetime beyond the configured maximum.
    TooFarFuture => "too_far_future",
    /// Sequence number not newer than the stored one.
    Replayed => "replayed",
    /// A prefix outside the certificate's grants.
    PrefixNotGranted => "prefix_not_granted",
    /// Advert signature does not verify against the origin's key.
    BadSignature => "bad_signature",
}

impl From<CertError> for Reject {
    fn from(e: CertError) -> Self {
        match e {
            CertError::Malformed(_) | CertError::NoPrefixes | CertError::EmptyWindow { .. } => {
                Reject::CertMalformed
            }
            CertError::TooLong { .. } => Reject::CertTooLong,
            CertError::NotYetValid { .. } => Reject::CertNotYetValid,
            CertError::Expired { .. } => Reject::CertExpired,
            CertError::Signatures { .. } => Reject::CertSignatures,
        }
    }
}

/// What happened to an accepted advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Newer than what we had: installed; flood it on.
    New,
    /// Exactly what we already have: nothing to do, do not flood.
    Duplicate,
}

/// Database policy.
#[derive(Clone, Debug)]
pub struct LsdbConfig {
    pub authorities: Authorities,
    /// Longest advert lifetime accepted, seconds from now (bounds how long a node that
    /// vanished keeps its routes, and how far a forged clock can reach).
    pub max_lifetime_s: u64,
}

/// A stored advert.
#[derive(Clone, Debug)]
pub struct Entry {
    pub advert: Advert,
    pub cert: Certificate,
    /// The exact bytes received (re-flooded as they are).
    pub raw: Vec<u8>,
    /// When it was installed, unix seconds.
    pub installed_at: u64,
    /// The origin's decompressed public key.
    pub key: VerifyingKey,
}

impl Entry {
    /// When this advert stops counting: its own expiry or its certificate's, if earlier.
    pub fn valid_until(&self) -> u64 {
        self.advert.expires.min(self.cert.not_after)
    }
}

/// Counters of everything [`Lsdb`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub duplicates: u64,
    pub purged: u64,
    rejected: HashMap<Reject, u64>,
}

impl Counts {
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected.get(&r).copied().unwrap_or(0)
    }
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// The database.
pub struct Lsdb {
    cfg: LsdbConfig,
    entries: HashMap<NodeId, Entry>,
    certs: CertCache,
    counts: Counts,
}

/// An advert that passed every check but its signature.
struct Pending {
    advert: Advert,
    cert: Certificate,
    raw: Vec<u8>,
    key: VerifyingKey,
}

impl Lsdb {
    pub fn new(cfg: LsdbConfig) -> Self {
        Self {
            cfg,
            entries: HashMap::new(),
            certs: CertCache::default(),
            counts: Counts::default(),
        }
    }

    /// Replaces the policy (e.g. after a configuration reload). Stored adverts stay.
    pub fn set_config(&mut self, cfg: LsdbConfig) {
        self.cfg = cfg;
        self.certs = CertCache::default();
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn get(&self, origin: &NodeId) -> Option<&Entry> {
        self.entries.get(origin)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every stored advert, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    fn count(&mut self, r: Result<Accepted, Reject>) -> Result<Accepted, Reject> {
        match r {
            Ok(Accepted::New) => self.counts.accepted += 1,
            Ok(Accepted::Duplicate) => self.counts.duplicates += 1,
            Err(e) => *self.counts.rejected.entry(e).or_default() += 1,
        }
        r
    }

    /// Checks 1–6 (see the module docs). `Ok(None)` means a duplicate.
    fn precheck(&mut self, raw: &[u8], now: u64) -> Result<Option<Pending>, Reject> {
        let Ok(Message::Advert(s)) = wire::decode(raw) else {
            return Err(Reject::Malformed);
        };
        let a = s.body;
        let cert = Certificate::decode(&a.cert).map_err(Reject::from)?;
        if cert.node != a.origin {
            return Err(Reject::CertMismatch);
        }
        cert.check_window(now).map_err(Reject::from)?;
        if a.expires <= now {
            return Err(Reject::Expired);
        }
        if a.expires - now > self.cfg.max_lifetime_s {
            return Err(Reject::TooFarFuture);
        }
        if let Some(e) = self.entries.get(&a.origin) {
            if e.advert.seq == a.seq && e.raw == raw {
                return Ok(None);
            }
            if e.advert.seq >= a.seq {
                return Err(Reject::Replayed);
            }
        }
        if !a.prefixes.iter().all(|p| cert.grants(p)) {
            return Err(Reject::PrefixNotGranted);
        }
        self.certs
            .check(&cert, &a.cert, &self.cfg.authorities, now)
            .map_err(Reject::from)?;
        // A known origin's key is already decompressed (that costs about as much as a
        // fifth of a signature check).
        let key = match self.entries.get(&a.origin) {
            Some(e) => e.key,
            None => a
                .origin
                .verifying_key()
                .filter(|k| !k.is_weak())
                .ok_or(Reject::BadSignature)?,
        };
        Ok(Some(Pending {
            advert: a,
            cert,
            raw: s.raw,
            key,
        }))
    }

    fn install(&mut self, p: Pending, now: u64) -> Result<Accepted, Reject> {
        // Re-check freshness: an earlier advert of the same batch may have been newer.
        if let Some(e) = self.entries.get(&p.advert.origin) {
            if e.advert.seq == p.advert.seq && e.raw == p.raw {
                return Ok(Accepted::Duplicate);
            }
            if e.advert.seq >= p.advert.seq {
                return Err(Reject::Replayed);
            }
        }
        self.entries.insert(
            p.advert.origin,
            Entry {
                advert: p.advert,
                cert: p.cert,
                raw: p.raw,
                installed_at: now,
                key: p.key,
            },
        );
        Ok(Accepted::New)
    }

    /// Checks one advert received at `now` (unix seconds) and installs it if it passes.
    pub fn accept(&mut self, raw: &[u8], now: u64) -> Result<Accepted, Reject> {
        let r = match self.precheck(raw, now) {
            Ok(None) => Ok(Accepted::Duplicate),
            Ok(Some(p)) => {
                let sig = Signature::from_bytes(&signature_of(&p.raw));
                if p.key.verify_strict(signed_part(&p.raw), &sig).is_ok() {
                    self.install(p, now)
                } else {
                    Err(Reject::BadSignature)
                }
            }
            Err(e) => Err(e),
        };
        self.count(r)
    }

    /// Checks many adverts at once with one batch signature verification; results are
    /// in input order and identical to calling [`Lsdb::accept`] on each in turn (up to the
    /// signer-made small-order corner case in the module docs).
    pub fn accept_batch(&mut self, raws: &[&[u8]], now: u64) -> Vec<Result<Accepted, Reject>> {
        let mut out: Vec<Option<Result<Accepted, Reject>>> = Vec::with_capacity(raws.len());
        let mut pending: Vec<(usize, Pending)> = Vec::new();
        for (i, raw) in raws.iter().enumerate() {
            match self.precheck(raw, now) {
                Ok(None) => out.push(Some(Ok(Accepted::Duplicate))),
                Ok(Some(p)) => {
                    out.push(None);
                    pending.push((i, p));
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let msgs: Vec<&[u8]> = pending.iter().map(|(_, p)| signed_part(&p.raw)).collect();
        let sigs: Vec<Signature> = pending
            .iter()
            .map(|(_, p)| Signature::from_bytes(&signature_of(&p.raw)))
            .collect();
        let keys: Vec<VerifyingKey> = pending.iter().map(|(_, p)| p.key).collect();
        let all_ok = pending.is_empty() || ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok();
        // The batch equation is not the strict single check; a failed batch tells only
        // that some signature is bad, so each is then checked alone.
        let ok: Vec<bool> = (0..pending.len())
            .map(|k| all_ok || keys[k].verify_strict(msgs[k], &sigs[k]).is_ok())
            .collect();
        drop(msgs);
        for ((i, p), ok) in pending.into_iter().zip(ok) {
            out[i] = Some(if ok {
                self.install(p, now)
            } else {
                Err(Reject::BadSignature)
            });
        }
        out.into_iter()
            .map(|r| {
                let r = r.unwrap_or(Err(Reject::Malformed));
                self.count(r)
            })
            .collect()
    }

    /// Drops adverts (and cached certificates) no longer valid at `now`; returns the
    /// origins removed.
    pub fn purge(&mut self, now: u64) -> Vec<NodeId> {
        let gone: Vec<NodeId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.valid_until() <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.entries.remove(k);
        }
        self.counts.purged += gone.len() as u64;
        self.certs.purge(now);
        gone
    }

    /// The highest sequence number stored for `origin` (to resume past it after a
    /// restart that lost state).
    pub fn seq_of(&self, origin: &NodeId) -> Option<u64> {
        self.entries.get(origin).map(|e| e.advert.seq)
    }
}

fn signed_part(raw: &[u8]) -> &[u8] {
    &raw[..raw.len() - wire::SIG_LEN]
}

fn signature_of(raw: &[u8]) -> [u8; 64] {
    let mut s = [0u8; 64];
    s.copy_from_slice(&raw[raw.len() - wire::SIG_LEN..]);
    s
}

/// Whether `sig` by `origin` over an advert's bytes verifies (used by tests and tools).
pub fn verify_advert_signature(origin: &NodeId, raw: &[u8]) -> bool {
    raw.len() >= wire::SIG_LEN && identity::verify(origin, signed_part(raw), &signature_of(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{identity::Identity, wire::AdvLink};
    use ipnet::IpNet;

    const NOW: u64 = 1_800_000_000;

    struct World {
        auths: Vec<Identity>,
        db: Lsdb,
    }

    fn world() -> World {
        let auths: Vec<Identity> = (0..3).map(|i| Identity::from_seed([200 + i; 32])).collect();
        let set = Authorities::new(auths.iter().map(|a| a.id()).collect(), 2).unwrap();
        World {
            auths,
            db: Lsdb::new(LsdbConfig {
                authorities: set,
                max_lifetime_s: 3600,
            }),
        }
    }

    fn cert_for(
        w: &World,
        node: &Identity,
        grant: &str,
        nb: u64,
        na: u64,
        signers: &[usize],
    ) -> Vec<u8> {
        let mut c = Certificate::new(node.id(), vec![grant.parse().unwrap()], nb, na).unwrap();
        for &i in signers {
            c.sign(&w.auths[i]).unwrap();
        }
        c.encode()
    }

    fn advert(node: &Identity, cert: Vec<u8>, seq: u64, expires: u64, prefix: &str) -> Vec<u8> {
        Advert {
            origin: node.id(),
            seq,
            expires,
            cert,
            links: vec![AdvLink {
                neighbour: NodeId([5; 32]),
                cost: 256,
            }],
            prefixes: vec![prefix.parse::<IpNet>().unwrap()],
        }
        .encode(|m| node.sign(m))
        .unwrap()
    }

    fn good(w: &World, node: &Identity, seq: u64) -> Vec<u8> {
        let c = cert_for(w, node, "10.1.0.0/16", NOW - 10, NOW + 3600, &[0, 1]);
        advert(node, c, seq, NOW + 600, "10.1.2.0/24")
    }

    #[test]
    fn every_rejection_reason_counts_and_changes_nothing() {
        let mut w = world();
        let n = Identity::from_seed([1; 32]);
        let other = Identity::from_seed([2; 32]);
        assert_eq!(w.db.accept(&good(&w, &n, 5), NOW), Ok(Accepted::New));
        let before = w.db.get(&n.id()).unwrap().raw.clone();

        let ok_cert = cert_for(&w, &n, "10.1.0.0/16", NOW - 10, NOW + 3600, &[0, 1]);
        let mut tampered = good(&w, &n, 9);
        let l = tampered.len();
        tampered[l - 72] ^= 1; // the link cost (prefix list is the 7 bytes before the sig)
        let mut forged = good(&w, &n, 9);
        let l = forged.len();
        forged[l - 1] ^= 0x40;
        let cases: Vec<(Reject, Vec<u8>)> = vec![
            (Reject::Malformed, b"DM\x01\x02garbage".to_vec()),
            (
                Reject::CertMalformed,
                advert(&n, vec![1, 2, 3], 9, NOW + 600, "10.1.2.0/24"),
            ),
            (
                Reject::CertMismatch,
                advert(
                    &n,
                    cert_for(&w, &other, "10.1.0.0/16", NOW - 10, NOW + 3600, &[0, 1]),
                    9,
                    NOW + 600,
                    "10.1.2.0/24",
                ),
            ),
            (
                Reject::CertNotYetValid,
                advert(
                    &n,
                    cert_for(&w, &n, "10.1.0.0/16", NOW + 10, NOW + 3600, &[0, 1]),
                    9,
                    NOW + 600,
                    "10.1.2.0/24",
                ),
            ),
            (
                Reject::CertExpired,
                advert(
                    &n,
                    cert_for(&w, &n, "10.1.0.0/16", NOW - 3600, NOW, &[0, 1]),
                    9,
                    NOW + 600,
                    "10.1.2.0/24",
                ),
            ),
            (
                Reject::CertSignatures,
                advert(
                    &n,
                    cert_for(&w, &n, "10.1.0.0/16", NOW - 10, NOW + 3600, &[0]),
                    9,
                    NOW + 600,
                    "10.1.2.0/24",
                ),
            ),
            (
                Reject::Expired,
                advert(&n, ok_cert.clone(), 9, NOW, "10.1.2.0/24"),
            ),
            (
                Reject::TooFarFuture,
                advert(&n, ok_cert.clone(), 9, NOW + 3601, "10.1.2.0/24"),
            ),
            (Reject::Replayed, good(&w, &n, 5 - 1)),
            (
                Reject::Replayed,
                advert(&n, ok_cert.clone(), 5, NOW + 599, "10.1.2.0/24"),
            ),
            (
                Reject::PrefixNotGranted,
                advert(&n, ok_cert.clone(), 9, NOW + 600, "10.2.0.0/24"),
            ),
            (Reject::BadSignature, forged),
            (Reject::BadSignature, tampered),
            (
                Reject::BadSignature,
                advert(&other, ok_cert.clone(), 9, NOW + 600, "10.1.2.0/24")
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| {
                        if (8..40).contains(&i) {
                            n.id().0[i - 8]
                        } else {
                            b
                        }
                    })
                    .collect(),
            ),
        ];
        for (reason, raw) in &cases {
            let before_count = w.db.counts().rejected(*reason);
            assert_eq!(w.db.accept(raw, NOW), Err(*reason), "{reason:?}");
            assert_eq!(w.db.counts().rejected(*reason), before_count + 1);
            assert_eq!(
                w.db.get(&n.id()).unwrap().raw,
                before,
                "{reason:?} changed the database"
            );
            assert_eq!(w.db.len(), 1);
        }
        let mut seen: Vec<Reject> = cases.iter().map(|c| c.0).collect();
        seen.dedup();
        for r in Reject::ALL {
            if *r != Reject::CertTooLong {
                assert!(seen.contains(r), "{r:?} untested");
            }
        }
    }

    #[test]
    fn cert_too_long_is_refused() {
        let mut w = world();
        let n = Identity::from_seed([1; 32]);
        let mut c = Certificate::new(
            n.id(),
            vec!["10.1.0.0/16".parse().unwrap()],
            NOW - 10,
            NOW + 100,
        )
        .unwrap();
        c.not_after = NOW + 5 * 3600; // forged past the 4 h limit, signed anyway
        c.sign(&w.auths[0]).unwrap();
        c.sign(&w.auths[1]).unwrap();
        let raw = advert(&n, c.encode(), 1, NOW + 60, "10.1.0.0/16");
        assert_eq!(w.db.accept(&raw, NOW), Err(Reject::CertTooLong));
    }

    #[test]
    fn duplicates_are_suppressed_and_newer_replaces() {
        let mut w = world();
        let n = Identity::from_seed([1; 32]);
        let a = good(&w, &n, 1);
        assert_eq!(w.db.accept(&a, NOW), Ok(Accepted::New));
        assert_eq!(w.db.accept(&a, NOW), Ok(Accepted::Duplicate));
        assert_eq!(w.db.counts().duplicates, 1);
        assert_eq!(w.db.accept(&good(&w, &n, 2), NOW), Ok(Accepted::New));
        assert_eq!(w.db.seq_of(&n.id()), Some(2));
        assert_eq!(w.db.accept(&a, NOW), Err(Reject::Replayed));
    }

    #[test]
    fn purge_removes_expired_adverts() {
        let mut w = world();
        let n = Identity::from_seed([1; 32]);
        w.db.accept(&good(&w, &n, 1), NOW).unwrap();
        assert!(w.db.purge(NOW + 599).is_empty());
        assert_eq!(w.db.purge(NOW + 600), vec![n.id()]);
        assert!(w.db.is_empty());
    }

    #[test]
    fn batch_matches_single_checks() {
        let mut single = world();
        let mut batched = world();
        let nodes: Vec<Identity> = (0..20).map(|i| Identity::from_seed([i + 1; 32])).collect();
        let mut raws: Vec<Vec<u8>> = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let mut r = good(&single, n, 3);
            if i % 7 == 3 {
                let l = r.len();
                r[l - 5] ^= 1; // forged
            }
            raws.push(r);
            if i % 5 == 0 {
                raws.push(good(&single, n, 2)); // older after newer: replayed
                raws.push(good(&single, n, 3)); // same again: duplicate
            }
        }
        let expect: Vec<_> = raws.iter().map(|r| single.db.accept(r, NOW)).collect();
        let refs: Vec<&[u8]> = raws.iter().map(|r| r.as_slice()).collect();
        let got = batched.db.accept_batch(&refs, NOW);
        assert_eq!(got, expect);
        assert_eq!(batched.db.counts(), single.db.counts());
        assert!(got.contains(&Err(Reject::BadSignature)));
        assert!(got.contains(&Err(Reject::Replayed)));
        assert!(got.contains(&Ok(Accepted::Duplicate)));
        // All good: the batch path itself.
        let mut w = world();
        let raws: Vec<Vec<u8>> = nodes.iter().map(|n| good(&w, n, 1)).collect();
        let refs: Vec<&[u8]> = raws.iter().map(|r| r.as_slice()).collect();
        assert!(w
            .db
            .accept_batch(&refs, NOW)
            .iter()
            .all(|r| *r == Ok(Accepted::New)));
        assert_eq!(w.db.len(), 20);
    }
}
