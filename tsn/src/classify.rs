//! Classification rules: which lane a frame travels on.
//!
//! Rules are tried in order; the first whose every given condition holds picks the lane,
//! and a frame no rule matches takes the default lane. Conditions: address family, source
//! and destination prefix, DSCP (a set), VLAN PCP (a set, only for tagged frames), IP
//! protocol, and source and destination L4 port ranges (only when the ports were read:
//! not for later fragments or unknown protocols).

use bytemuck::{Pod, Zeroable};

use crate::MAX_RULES;

/// Rule condition bits ([`Rule::matches`]).
pub mod cond {
    /// `Rule::src`/`src_mask` apply.
    pub const SRC: u16 = 1 << 0;
    /// `Rule::dst`/`dst_mask` apply.
    pub const DST: u16 = 1 << 1;
    /// `Rule::dscp` (a bitmap of DSCP values) applies.
    pub const DSCP: u16 = 1 << 2;
    /// `Rule::pcp` (a bitmap of PCP values) applies; untagged frames never match.
    pub const PCP: u16 = 1 << 3;
    /// `Rule::proto` applies.
    pub const PROTO: u16 = 1 << 4;
    /// `Rule::sport` applies; frames without readable ports never match.
    pub const SPORT: u16 = 1 << 5;
    /// `Rule::dport` applies; frames without readable ports never match.
    pub const DPORT: u16 = 1 << 6;
}

/// One classification rule in the fixed-size form the datapath reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Rule {
    /// Source prefix, already masked; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub src_mask: [u8; 16],
    /// Destination prefix, already masked; IPv4 in the first 4 bytes.
    pub dst: [u8; 16],
    pub dst_mask: [u8; 16],
    /// Bit `d` set: DSCP `d` matches.
    pub dscp: u64,
    /// Inclusive source port range `[lo, hi]`.
    pub sport: [u16; 2],
    /// Inclusive destination port range `[lo, hi]`.
    pub dport: [u16; 2],
    /// `cond::*` bits: the conditions this rule has.
    pub conds: u16,
    /// IP protocol number (with `cond::PROTO`).
    pub proto: u8,
    /// Bit `p` set: PCP `p` matches.
    pub pcp: u8,
    /// Lane of matching frames.
    pub lane: u8,
    /// 4 or 6 to match only that family; 0 for both (no address condition).
    pub family: u8,
    pub _pad: [u8; 2],
}

/// The rules in order, and the default lane.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RuleTable {
    /// Rules in use (`rules[..len]`).
    pub len: u32,
    /// Lane of frames no rule matches.
    pub default_lane: u32,
    pub rules: [Rule; MAX_RULES],
}

impl Default for RuleTable {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// The fields of a frame that rules look at, as the datapath parsed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketKey {
    /// 4, 6, or 0 when the frame is not IP.
    pub family: u8,
    /// DSCP (upper six bits of TOS / traffic class).
    pub dscp: u8,
    /// IP protocol (IPv6: the upper-layer header after the extension headers read).
    pub proto: u8,
    /// Whether the frame carries an 802.1Q tag.
    pub tagged: bool,
    /// PCP of the outer tag.
    pub pcp: u8,
    /// Whether `sport`/`dport` were read (TCP, UDP, UDP-Lite, SCTP; first fragment).
    pub has_ports: bool,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 addresses occupy the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

#[inline(always)]
fn prefix_match(addr: &[u8; 16], net: &[u8; 16], mask: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if addr[i] & mask[i] != net[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Rule {
    /// Whether every condition of this rule holds for `k`.
    #[inline(always)]
    pub fn matches(&self, k: &PacketKey) -> bool {
        let c = self.conds;
        if self.family != 0 && self.family != k.family {
            return false;
        }
        let ip = k.family != 0;
        if c & cond::SRC != 0 && !(ip && prefix_match(&k.src, &self.src, &self.src_mask)) {
            return false;
        }
        if c & cond::DST != 0 && !(ip && prefix_match(&k.dst, &self.dst, &self.dst_mask)) {
            return false;
        }
        if c & cond::DSCP != 0 && !(ip && (self.dscp >> (k.dscp & 63)) & 1 != 0) {
            return false;
        }
        if c & cond::PCP != 0 && !(k.tagged && (self.pcp >> (k.pcp & 7)) & 1 != 0) {
            return false;
        }
        if c & cond::PROTO != 0 && !(ip && k.proto == self.proto) {
            return false;
        }
        if c & cond::SPORT != 0
            && !(k.has_ports && self.sport[0] <= k.sport && k.sport <= self.sport[1])
        {
            return false;
        }
        if c & cond::DPORT != 0
            && !(k.has_ports && self.dport[0] <= k.dport && k.dport <= self.dport[1])
        {
            return false;
        }
        true
    }
}

impl RuleTable {
    /// The lane of a frame: the first matching rule's, else the default lane.
    #[inline(always)]
    pub fn classify(&self, k: &PacketKey) -> u8 {
        let n = self.len as usize;
        let mut i = 0;
        while i < MAX_RULES {
            if i >= n {
                break;
            }
            let r = &self.rules[i];
            if r.matches(k) {
                return r.lane & 7;
            }
            i += 1;
        }
        (self.default_lane & 7) as u8
    }

    /// The rules in use.
    pub fn rules(&self) -> &[Rule] {
        &self.rules[..(self.len as usize).min(MAX_RULES)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    fn key() -> PacketKey {
        PacketKey {
            family: 4,
            dscp: 46,
            proto: 17,
            tagged: false,
            pcp: 0,
            has_ports: true,
            sport: 40000,
            dport: 319,
            src: v4([10, 1, 2, 3]),
            dst: v4([10, 9, 9, 9]),
        }
    }

    fn table(rules: &[Rule], default_lane: u32) -> RuleTable {
        let mut t = RuleTable::default();
        t.rules[..rules.len()].copy_from_slice(rules);
        t.len = rules.len() as u32;
        t.default_lane = default_lane;
        t
    }

    #[test]
    fn each_condition_can_reject() {
        let k = key();
        let base = Rule {
            lane: 2,
            ..Rule::default()
        };
        let yes_no: [(Rule, Rule); 6] = [
            (
                Rule {
                    conds: cond::DSCP,
                    dscp: 1 << 46,
                    ..base
                },
                Rule {
                    conds: cond::DSCP,
                    dscp: 1 << 34,
                    ..base
                },
            ),
            (
                Rule {
                    conds: cond::PROTO,
                    proto: 17,
                    ..base
                },
                Rule {
                    conds: cond::PROTO,
                    proto: 6,
                    ..base
                },
            ),
            (
                Rule {
                    conds: cond::DPORT,
                    dport: [319, 320],
                    ..base
                },
                Rule {
                    conds: cond::DPORT,
                    dport: [320, 400],
                    ..base
                },
            ),
            (
                Rule {
                    conds: cond::SPORT,
                    sport: [40000, 40000],
                    ..base
                },
                Rule {
                    conds: cond::SPORT,
                    sport: [0, 39999],
                    ..base
                },
            ),
            (
                Rule {
                    conds: cond::SRC,
                    family: 4,
                    src: v4([10, 1, 0, 0]),
                    src_mask: v4([255, 255, 0, 0]),
                    ..base
                },
                Rule {
                    conds: cond::SRC,
                    family: 4,
                    src: v4([10, 2, 0, 0]),
                    src_mask: v4([255, 255, 0, 0]),
                    ..base
                },
            ),
            (Rule { family: 4, ..base }, Rule { family: 6, ..base }),
        ];
        for (i, (yes, no)) in yes_no.iter().enumerate() {
            assert!(yes.matches(&k), "case {i}: should match");
            assert!(!no.matches(&k), "case {i}: should not match");
        }
        // PCP only matches tagged frames.
        let pcp = Rule {
            conds: cond::PCP,
            pcp: 1 << 5,
            ..base
        };
        assert!(!pcp.matches(&k));
        assert!(pcp.matches(&PacketKey {
            tagged: true,
            pcp: 5,
            ..k
        }));
        // Port conditions never match frames whose ports were not read.
        let port = Rule {
            conds: cond::DPORT,
            dport: [0, 65535],
            ..base
        };
        assert!(!port.matches(&PacketKey {
            has_ports: false,
            ..k
        }));
        // Non-IP frames match only rules without IP conditions.
        let arp = PacketKey {
            family: 0,
            ..PacketKey::default()
        };
        assert!(base.matches(&arp));
        assert!(!Rule {
            conds: cond::DSCP,
            dscp: 1,
            ..base
        }
        .matches(&arp));
    }

    #[test]
    fn first_match_wins_then_default() {
        let a = Rule {
            conds: cond::DSCP,
            dscp: 1 << 46,
            lane: 0,
            ..Rule::default()
        };
        let b = Rule {
            conds: cond::PROTO,
            proto: 17,
            lane: 3,
            ..Rule::default()
        };
        assert_eq!(table(&[a, b], 7).classify(&key()), 0);
        assert_eq!(table(&[b, a], 7).classify(&key()), 3);
        assert_eq!(table(&[], 6).classify(&key()), 6);
        let other = PacketKey {
            dscp: 0,
            proto: 6,
            ..key()
        };
        assert_eq!(table(&[a, b], 5).classify(&other), 5);
    }

    proptest! {
        /// A rule built from a frame's own fields (with any prefix lengths and enclosing
        /// port ranges) matches that frame.
        #[test]
        fn a_rule_made_from_a_frame_matches_it(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), sl in 0u32..=32, dl in 0u32..=32,
            dscp in 0u8..64, sport in any::<u16>(), dport in any::<u16>(), proto in any::<u8>(),
            slack in 0u16..100,
        ) {
            let mask = |len: u32| v4(u32::MAX.checked_shl(32 - len).unwrap_or(0).to_be_bytes());
            let and = |a: [u8; 16], m: [u8; 16]| core::array::from_fn(|i| a[i] & m[i]);
            let k = PacketKey { family: 4, dscp, proto, has_ports: true, sport, dport,
                src: v4(src), dst: v4(dst), ..PacketKey::default() };
            let r = Rule {
                conds: cond::SRC | cond::DST | cond::DSCP | cond::PROTO | cond::SPORT | cond::DPORT,
                family: 4, src: and(v4(src), mask(sl)), src_mask: mask(sl),
                dst: and(v4(dst), mask(dl)), dst_mask: mask(dl), dscp: 1 << dscp, proto,
                sport: [sport.saturating_sub(slack), sport.saturating_add(slack)],
                dport: [dport, dport], lane: 1, ..Rule::default()
            };
            prop_assert!(r.matches(&k));
            prop_assert_eq!(table(&[r], 7).classify(&k), 1);
        }
    }
}
