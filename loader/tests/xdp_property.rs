//! Property: random and mutated frames never make the forwarder return XDP_ABORTED (or any
//! verdict but pass, drop, redirect), and every redirected frame has a valid IPv4 header
//! checksum and a TTL / hop limit exactly one lower than it came in with.

mod common;

use common::*;
use dcmesh_loader::{Datapath, NextHopSpec, RouteTarget};
use proptest::prelude::*;

fn datapath() -> Datapath {
    require_root();
    let mut dp = Datapath::load(None).expect("load");
    let t = dp.tables();
    t.set_nexthop(
        1,
        NextHopSpec {
            ifindex: 1,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
        },
    )
    .unwrap();
    for p in ["0.0.0.0/1", "128.0.0.0/2", "::/1", "8000::/2"] {
        t.set_route(p.parse().unwrap(), RouteTarget::Via { id: 1, alt: None })
            .unwrap();
    }
    t.set_route("10.9.0.0/16".parse().unwrap(), RouteTarget::Local)
        .unwrap();
    dp
}

/// A well-formed IPv4 or IPv6 frame with random addresses, TTL, options and payload.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let v4 = (
        any::<[u8; 4]>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..=40),
        0usize..300,
        any::<u16>(),
    )
        .prop_map(|(dst, ttl, options, payload, frag)| {
            V4 {
                ttl,
                options,
                payload,
                frag,
                ..V4::to(dst)
            }
            .build()
        });
    let v6 = (any::<[u8; 16]>(), any::<u8>(), any::<u8>(), 0usize..300).prop_map(
        |(dst, hop_limit, next_hdr, payload)| {
            V6 {
                hop_limit,
                next_hdr,
                payload,
                ..V6::to(dst.into())
            }
            .build()
        },
    );
    prop_oneof![v4, v6]
}

/// A frame with some bytes overwritten and maybe truncated or extended.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        frame(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(mut f, edits, cut)| {
            for (i, b) in edits {
                let at = i.index(f.len());
                f[at] = b;
            }
            if let Some(c) = cut {
                f.truncate(14.max(c.index(f.len() + 1)));
            }
            f
        })
}

fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 14..200)
}

fn check_one(dp: &mut Datapath, input: &[u8]) -> Result<(), TestCaseError> {
    let (verdict, out) = run(dp.program().unwrap(), input);
    prop_assert!(
        [XDP_PASS, XDP_DROP, XDP_REDIRECT].contains(&verdict),
        "verdict {verdict} for {input:02x?}"
    );
    if verdict != XDP_REDIRECT {
        prop_assert_eq!(&out, &input.to_vec(), "pass/drop must not modify the frame");
        return Ok(());
    }
    prop_assert_eq!(out.len(), input.len());
    prop_assert_eq!(&out[0..6], &[2, 0, 0, 0, 0, 2]);
    prop_assert_eq!(&out[6..12], &[2, 0, 0, 0, 0, 1]);
    match u16::from_be_bytes([out[12], out[13]]) {
        0x0800 => {
            let ihl = usize::from(out[14] & 0x0f) * 4;
            prop_assert!(ihl >= 20);
            prop_assert_eq!(fold(sum16(&out[14..14 + ihl])), 0xffff, "bad checksum out");
            prop_assert_eq!(
                fold(sum16(&input[14..14 + ihl])),
                0xffff,
                "forwarded a bad checksum"
            );
            prop_assert_eq!(out[22], input[22] - 1, "TTL");
            prop_assert!(input[22] >= 2);
        }
        0x86dd => {
            prop_assert_eq!(out[21], input[21] - 1, "hop limit");
            prop_assert!(input[21] >= 2);
        }
        t => prop_assert!(false, "redirected ethertype {t:#x}"),
    }
    Ok(())
}

/// Runs `strategy`'s cases through one loaded program (loading per case would dominate).
fn property(strategy: impl Strategy<Value = Vec<u8>>) {
    let dp = std::cell::RefCell::new(datapath());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&strategy, |f| check_one(&mut dp.borrow_mut(), &f)) {
        panic!("{e}");
    }
}

#[test]
fn well_formed_frames() {
    property(frame());
}

#[test]
fn mutated_frames() {
    property(mutated());
}

#[test]
fn random_frames() {
    property(random_bytes());
}
