//! Pinned lanes (`lanes::setup_pinned`), the way the daemon runs them: they outlive their
//! process, a second set-up takes them over (same maps, program swapped in the pinned
//! link, queues kept, a changed plan switched at a cycle boundary of the new schedule, an
//! unchanged plan left alone), and `lanes::remove` takes everything away. Counts only.

mod common;

use std::net::UdpSocket;

use dcmesh_loader::lanes::{self, LaneAttach, LanesError, DEFAULT_MAJOR};
use dcmesh_testbed::{netns::veth, Netns};
use dcmesh_tsn::{
    config::{EntryConfig, LanesConfig, PortRange, Proto, RuleConfig, ScheduleConfig},
    Action,
};

const PORT: u16 = 7000;

fn config(lane0_ns: u64) -> LanesConfig {
    let mut c = LanesConfig::new(100_000_000);
    c.rules.push(RuleConfig {
        lane: 0,
        proto: Some(Proto::Name("udp".into())),
        dst_ports: Some(PortRange::One(PORT)),
        ..RuleConfig::default()
    });
    c.schedule = Some(ScheduleConfig {
        base_time_ns: 0,
        cycle_ns: None,
        entries: vec![
            EntryConfig {
                gates: vec![0],
                interval_ns: lane0_ns,
            },
            EntryConfig {
                gates: (0..8).collect(),
                interval_ns: 500_000,
            },
        ],
    });
    c
}

/// Sends `n` datagrams to lane 0 out of `la`.
fn send(a: &Netns, n: usize) {
    a.enter(move || {
        let s = UdpSocket::bind("10.78.0.1:0").unwrap();
        for _ in 0..n {
            s.send_to(b"lane zero", ("10.78.0.2", PORT)).unwrap();
        }
    })
    .unwrap();
}

fn lanes_programs(a: &Netns) -> Vec<u32> {
    a.enter(|| lanes::egress_programs("la"))
        .unwrap()
        .unwrap()
        .into_iter()
        .filter(|(_, n)| n == dcmesh_schema::lanes::PROGRAM)
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn pinned_lanes_are_taken_over_and_removed() {
    common::require_root();
    let fs = common::Bpffs::mount("lanes");
    let dir = lanes::pin_dir_for(&fs.0, "la");
    let a = Netns::create("lpa").unwrap();
    let b = Netns::create("lpb").unwrap();
    veth(&a, "la", &b, "lb").unwrap();
    a.ip(&["addr", "add", "10.78.0.1/24", "dev", "la"]).unwrap();
    b.ip(&["addr", "add", "10.78.0.2/24", "dev", "lb"]).unwrap();
    a.ip(&[
        "neigh",
        "replace",
        "10.78.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "la",
        "nud",
        "permanent",
    ])
    .unwrap();

    // First run: new maps, a pinned link, the plan in force at once.
    let first = a
        .enter(|| lanes::setup_pinned("la", &config(500_000), &dir))
        .unwrap()
        .expect("set-up");
    assert_eq!(first.attach, LaneAttach::Pinned);
    assert!(!first.lanes.reused());
    assert_eq!(first.applied.map(|x| x.at_tai_ns), Some(0));
    send(&a, 30);
    let counted = first.lanes.counters().unwrap();
    let sent = counted.get(0, Action::Admitted).packets + counted.get(0, Action::Dropped).packets;
    assert_eq!(sent, 30, "{counted:?}");
    let prog1 = lanes_programs(&a);
    assert_eq!(prog1.len(), 1);
    // The process "exits": the pinned link keeps the program, which keeps counting.
    drop(first);
    assert_eq!(lanes_programs(&a), prog1, "still attached");
    send(&a, 10);

    // Second run with a changed schedule: taken over.
    let second = a
        .enter(|| lanes::setup_pinned("la", &config(250_000), &dir))
        .unwrap()
        .expect("take-over");
    assert_eq!(second.attach, LaneAttach::Replaced);
    assert!(second.lanes.reused());
    let at = second.applied.expect("a changed plan is applied").at_tai_ns;
    assert!(at > 0, "switched later, not at once");
    assert_eq!(
        at % 750_000,
        0,
        "at a cycle boundary of the new 750 µs cycle"
    );
    let c = second.lanes.counters().unwrap();
    assert_eq!(
        c.get(0, Action::Admitted).packets + c.get(0, Action::Dropped).packets,
        40,
        "counters carried on, with the 10 sent in between: {c:?}"
    );
    let prog2 = lanes_programs(&a);
    assert_eq!(prog2.len(), 1, "one program, swapped in the link");
    assert_ne!(prog2, prog1);
    let q = String::from_utf8(
        a.exec("tc", &["qdisc", "show", "dev", "la"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(q.contains("qdisc htb 1: root"), "{q}");
    drop(second);

    // Third run, same configuration: nothing to switch.
    let third = a
        .enter(|| lanes::setup_pinned("la", &config(250_000), &dir))
        .unwrap()
        .expect("take-over");
    assert_eq!(third.applied, None, "an unchanged plan is left alone");
    assert_eq!(third.lanes.active_plan().unwrap(), Some(third.plan));
    drop(third);

    // Removal: link, maps and queues go; a second removal finds nothing.
    let r = a
        .enter(|| lanes::remove(&dir, "la", DEFAULT_MAJOR))
        .unwrap()
        .unwrap();
    assert!(r.link && r.maps && r.queues, "{r:?}");
    assert!(lanes_programs(&a).is_empty(), "detached");
    assert!(!dir.exists());
    let q = String::from_utf8(
        a.exec("tc", &["qdisc", "show", "dev", "la"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!q.contains("htb"), "{q}");
    let again = a
        .enter(|| lanes::remove(&dir, "la", DEFAULT_MAJOR))
        .unwrap();
    assert!(
        matches!(again, Err(LanesError::NotInstalled { .. })),
        "{again:?}"
    );
}

/// The interface goes away and comes back under the same name (a re-plugged radio): the
/// pinned link is stale, and the next set-up attaches afresh instead of failing.
#[test]
fn a_stale_pin_after_the_interface_came_back_is_replaced() {
    common::require_root();
    let fs = common::Bpffs::mount("lanes-stale");
    let dir = lanes::pin_dir_for(&fs.0, "la");
    let a = Netns::create("lsa").unwrap();
    let b = Netns::create("lsb").unwrap();
    veth(&a, "la", &b, "lb").unwrap();
    let first = a
        .enter(|| lanes::setup_pinned("la", &config(500_000), &dir))
        .unwrap()
        .expect("set-up");
    assert_eq!(first.attach, LaneAttach::Pinned);
    drop(first);
    a.ip(&["link", "del", "la"]).unwrap();
    assert!(dir.join("link").exists(), "the pin outlives the interface");
    veth(&a, "la", &b, "lb").unwrap();
    assert!(
        lanes_programs(&a).is_empty(),
        "a new interface has no program"
    );
    let again = a
        .enter(|| lanes::setup_pinned("la", &config(500_000), &dir))
        .unwrap()
        .expect("set-up on the new interface");
    assert_eq!(again.attach, LaneAttach::Pinned, "attached afresh");
    assert!(again.lanes.reused(), "the maps are kept");
    assert_eq!(lanes_programs(&a).len(), 1);
}
