//! The link-emulation XDP program drops the configured share of frames, counts what it
//! passes and drops, and takes a new loss at run time. Needs root.
use std::{net::UdpSocket, time::Duration};

use dcmesh_testbed::{linkemu::LinkEmu, netns, Netns};

fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF and creates namespaces; run it as root (`cargo xtask test`)"
    );
}

fn mac(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-br", "link", "show", dev]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string()
}

/// Sends `n` datagrams a → b and returns how many arrived (read concurrently, so the
/// receive buffer never overflows).
fn blast(tx: &UdpSocket, rx: &UdpSocket, n: usize) -> usize {
    // Room for the whole blast in the receiver, so a reader thread descheduled on a busy
    // machine cannot lose frames the emulator passed (seen once in CI: 840 of 1000).
    let v: libc::c_int = 4 << 20;
    // SAFETY: a valid socket and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(rx),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut got = 0;
            let mut buf = [0u8; 16];
            // The read timeout (set by the caller) ends the count once traffic stops.
            while rx.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        });
        for i in 0..n {
            tx.send_to(&(i as u32).to_be_bytes(), "10.9.0.2:9000")
                .unwrap();
            if i % 16 == 15 {
                // Pace: a veth with XDP queues at most 256 frames for its peer.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        reader.join().unwrap()
    })
}

#[test]
fn loss_is_applied_counted_and_changed_at_run_time() {
    require_root();
    let a = Netns::create("emu-a").unwrap();
    let b = Netns::create("emu-b").unwrap();
    // No IPv6: router solicitations and the like would add frames to the counters.
    for ns in [&a, &b] {
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            .unwrap();
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    }
    netns::veth(&a, "a0", &b, "b0").unwrap();
    a.ip(&["addr", "add", "10.9.0.1/24", "dev", "a0"]).unwrap();
    b.ip(&["addr", "add", "10.9.0.2/24", "dev", "b0"]).unwrap();
    // Static neighbours: ARP must not depend on the emulated loss.
    a.ip(&[
        "neigh",
        "replace",
        "10.9.0.2",
        "lladdr",
        &mac(&b, "b0"),
        "dev",
        "a0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let mut emu = LinkEmu::load().unwrap();
    let idx = emu.attach(&b, "b0").unwrap();
    let tx = a.enter(|| UdpSocket::bind("10.9.0.1:0").unwrap()).unwrap();
    let rx = b
        .enter(|| UdpSocket::bind("10.9.0.2:9000").unwrap())
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();

    assert_eq!(blast(&tx, &rx, 1000), 1000, "loss 0 lost frames");
    let s0 = emu.stats(idx).unwrap();
    assert_eq!((s0.passed, s0.dropped), (1000, 0), "{s0:?}");

    emu.set_loss(idx, 1.0).unwrap();
    assert_eq!(emu.loss(idx), 1.0);
    assert_eq!(blast(&tx, &rx, 1000), 0, "loss 1 let frames through");
    let s1 = emu.stats(idx).unwrap().since(&s0);
    assert_eq!((s1.passed, s1.dropped), (0, 1000), "{s1:?}");

    emu.set_loss(idx, 0.3).unwrap();
    let got = blast(&tx, &rx, 4000);
    let s2 = emu.stats(idx).unwrap().since(&emu_total(&s0, &s1));
    // 4000 Bernoulli(0.7) trials: mean 2800, sd 29; ±8 sd.
    assert!(
        (2570..=3030).contains(&got),
        "loss 0.3 delivered {got}/4000"
    );
    assert_eq!(
        s2.passed as usize, got,
        "passed counter disagrees with deliveries: {s2:?}"
    );
    assert_eq!((s2.passed + s2.dropped) as usize, 4000, "{s2:?}");
}

fn emu_total(
    a: &dcmesh_testbed::linkemu::IfStats,
    b: &dcmesh_testbed::linkemu::IfStats,
) -> dcmesh_testbed::linkemu::IfStats {
    dcmesh_testbed::linkemu::IfStats {
        passed: a.passed + b.passed,
        passed_bytes: a.passed_bytes + b.passed_bytes,
        dropped: a.dropped + b.dropped,
        dropped_bytes: a.dropped_bytes + b.dropped_bytes,
    }
}
