//! A short chaos run on a 3×3 grid of clean links: random carrier losses, silent link
//! deaths, SNR dips, partitions, power outages and (with daemons) crashes and controller
//! restarts. Asserts correctness only, never timings. Once with the static controller
//! (datapath and testbed on their own): no loops of any kind and at least 99.9 % of the
//! probes sent outside convergence windows (while their endpoints were connected) delivered.
//! Once with the real daemons: no loops either (no TTL expiry anywhere, no probe over the
//! mesh diameter, no check that finds a loop in the tables), and at least 99 % delivered
//! outside convergence windows. Needs root.
mod common;

use std::{sync::atomic::AtomicBool, time::Duration};

use dcmesh_testbed::{
    chaos::{self, ChaosOptions},
    generate::{self, GenOptions},
    mesh::{Controller, Mesh},
    scenario::{self, RunConfig},
};

/// One mesh at a time: two meshes of daemons on two cores would starve each other's
/// hellos and measure the host, not the mesh.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn chaos_run(ctl: Controller) {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let daemons = matches!(ctl, Controller::Daemon { .. });
    let topo = generate::grid(
        3,
        3,
        &GenOptions {
            clients: 3,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let o = ChaosOptions {
        duration: Duration::from_secs(45),
        gap: (Duration::from_secs(2), Duration::from_secs(3)),
        hold: (Duration::from_secs(2), Duration::from_secs(3)),
        daemons,
        seed: 3,
        ..ChaosOptions::default()
    };
    let plan = chaos::plan(&topo, &o);
    assert!(plan.len() >= 8, "only {} events", plan.len());
    let mut mesh = Mesh::build(topo, ctl).unwrap();
    let cfg = RunConfig {
        duration: Some(o.duration),
        poll: Duration::from_millis(50),
        ..RunConfig::default()
    };
    let r = scenario::run(&mut mesh, &plan, &cfg, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", r.summary());
    assert!(
        r.delivery.sent > 10_000,
        "too few probes: {}",
        r.delivery.sent
    );
    common::assert_both_families(&r);
    assert_eq!(r.loops(), 0, "loops:\n{}", r.summary());
    let ratio = r.delivery_outside_windows.ratio.unwrap();
    println!(
        "delivery outside convergence windows: {:.3} %",
        ratio * 100.0
    );
    let want = if daemons { 0.99 } else { 0.999 };
    assert!(
        ratio >= want,
        "delivery outside convergence windows {:.4} %:\n{}",
        ratio * 100.0,
        r.summary()
    );
}

#[test]
fn chaos_with_the_static_controller() {
    common::require_root();
    chaos_run(Controller::Static);
}

#[test]
fn chaos_with_daemons() {
    common::require_root();
    chaos_run(Controller::Daemon {
        bin: common::dcmesh_bin(),
    });
}
