//! TSN lanes run by a real `dcmesh run` daemon in a namespace: the `[lanes]` section builds
//! the HTB tree and attaches the TC program, the lane counters in /metrics follow the
//! traffic, and the lanes survive daemon restarts: after a SIGKILL the program stays
//! attached and keeps classifying and counting, the restarted daemon swaps in its program
//! atomically over the pinned link with the counters carried on, and a changed schedule
//! takes effect. A clean stop leaves the lanes too; `dcmesh lanes remove` takes them away.
//! Counts only, no timing assertions.

mod common;

use std::{process::Command, time::Duration};

use common::Mesh;
use dcmesh_control::api::Query;
use serde_json::Value;

/// Node 0's interface towards node 1, where the lanes run.
const IFACE: &str = "to1";
/// The probe port (`Mesh::udp` sends there); a rule puts it on lane 0.
const PROBE_PORT: u16 = 5999;

/// Every gate open: strict priority only.
fn lanes_a() -> String {
    format!(
        "\n[lanes]\nlink_rate_bps = 100_000_000\nmode = \"admission\"\n\
         [lanes.schedule]\nentries = [ {{ gates = [0, 1, 2, 3, 4, 5, 6, 7], interval_ns = 1_000_000 }} ]\n\
         [[lanes.rules]]\nname = \"probe\"\nlane = 0\nproto = \"udp\"\ndst_ports = {PROBE_PORT}\n"
    )
}

/// Lane 0 open only in the first quarter of each 1 ms cycle; outside it, its frames are
/// demoted to lane 7.
fn lanes_b() -> String {
    format!(
        "\n[lanes]\nlink_rate_bps = 100_000_000\nmode = \"admission\"\n\
         [lanes.schedule]\nentries = [ {{ gates = [0], interval_ns = 250_000 }}, {{ gates = [1, 2, 3, 4, 5, 6, 7], interval_ns = 750_000 }} ]\n\
         [[lanes.rules]]\nname = \"probe\"\nlane = 0\nproto = \"udp\"\ndst_ports = {PROBE_PORT}\n\
         [[lanes.lane]]\nlane = 0\non_closed = {{ demote = 7 }}\n"
    )
}

/// Replaces node `i`'s `[lanes]` section (tables go last in the file, so it is the tail).
fn set_lanes(m: &Mesh, i: usize, section: &str) {
    let p = m.nodes[i].dir.join("dcmesh.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let base = text
        .split("\n[lanes]")
        .next()
        .unwrap()
        .trim_end()
        .to_string();
    std::fs::write(&p, format!("{base}\n{section}")).unwrap();
}

fn tc(m: &Mesh, args: &[&str]) -> String {
    let out = m.nodes[0].ns.exec("tc", args).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(id, name)` of the programs on node 0's TCX egress of `to1`.
fn egress(m: &Mesh) -> Vec<(u32, String)> {
    m.nodes[0]
        .ns
        .enter(|| dcmesh_loader::lanes::egress_programs(IFACE))
        .unwrap()
        .unwrap()
}

/// Ids of the lanes programs on `to1`'s egress.
fn lanes_programs(m: &Mesh) -> Vec<u32> {
    egress(m)
        .into_iter()
        .filter(|(_, n)| n == dcmesh_schema::lanes::PROGRAM)
        .map(|(id, _)| id)
        .collect()
}

/// The id of the lanes program on `to1`'s egress; panics unless there is exactly one.
fn lanes_program(m: &Mesh) -> u32 {
    let ids = lanes_programs(m);
    assert_eq!(
        ids.len(),
        1,
        "exactly one lanes program on {IFACE}'s egress: {:?}",
        egress(m)
    );
    ids[0]
}

/// `dcmesh lanes remove` for `to1` inside node 0's namespace.
fn remove_lanes(m: &Mesh) -> anyhow::Result<std::process::Output> {
    let pin_dir = m.pin_dir(0);
    m.nodes[0].ns.exec(
        env!("CARGO_BIN_EXE_dcmesh"),
        &[
            "lanes",
            "remove",
            "--interface",
            IFACE,
            "--pin-dir",
            pin_dir.to_str().unwrap(),
        ],
    )
}

/// A metric sample of node 0 with exactly these labels (0 when absent).
fn metric(m: &Mesh, name: &str, labels: &str) -> u64 {
    let text = m.metrics(0);
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

fn lane_metric(m: &Mesh, lane: u8, action: &str) -> u64 {
    metric(
        m,
        "dcmesh_lane_packets_total",
        &format!("interface=\"{IFACE}\",lane=\"{lane}\",action=\"{action}\""),
    )
}

/// Node 0's lanes status for `to1` (kernel counters read by the daemon).
fn lanes_status(m: &Mesh) -> Value {
    let st = m.status(0);
    let l = st["lanes"].as_array().cloned().unwrap_or_default();
    assert_eq!(l.len(), 1, "one interface with lanes: {st}");
    l[0].clone()
}

fn lane_count(st: &Value, lane: u8, action: &str) -> u64 {
    st["counters"]["lanes"][lane.to_string()][action]["packets"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits for node 0 to answer with running lanes and to route to node 1.
fn wait_lanes_up(m: &Mesh) {
    m.wait_for(
        "node 0 with lanes and a route to node 1",
        Duration::from_secs(30),
        |m| {
            m.query(0, Query::Status)
                .is_ok_and(|s| s["lanes"][0]["mode"].is_string())
                && m.route_to(0, 1).is_some()
        },
    );
}

fn dcmesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dcmesh"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn daemon_lanes_survive_restarts_and_follow_the_config() {
    let mut m = Mesh::new("lanes", 2, &[(0, 1)]);
    // Node 0 came up without lanes; give it a [lanes] section and start it again.
    m.kill(0);
    set_lanes(&m, 0, &lanes_a());
    m.start(0);
    wait_lanes_up(&m);
    m.wait_converged(&[0, 1]);

    // The queues: an HTB root with eight strict-priority leaves, and the program.
    let qd = tc(&m, &["qdisc", "show", "dev", IFACE]);
    assert!(
        qd.contains("qdisc htb 1: root"),
        "HTB root on {IFACE}:\n{qd}"
    );
    let classes = tc(&m, &["class", "show", "dev", IFACE]);
    for lane in 0..8 {
        let want = format!("class htb 1:1{lane} parent 1:1");
        assert!(classes.contains(&want), "leaf of lane {lane}:\n{classes}");
        assert!(
            classes.contains(&format!("1:1{lane} parent 1:1 leaf")),
            "{classes}"
        );
    }
    let prog_a = lanes_program(&m);
    let st = lanes_status(&m);
    assert_eq!(st["mode"], "admission", "{st}");
    assert_eq!(st["attach"], "pinned", "{st}");
    assert_eq!(st["configured_in_force"], true, "{st}");
    assert_eq!(st["schedule"]["entries"].as_array().unwrap().len(), 1);
    assert_eq!(
        metric(
            &m,
            "dcmesh_lanes_mode",
            &format!("interface=\"{IFACE}\",mode=\"admission\"")
        ),
        1
    );
    let human = dcmesh(&["status", "--socket", m.nodes[0].socket().to_str().unwrap()]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains(&format!(
            "lanes {IFACE}: admission mode, 100000000 bit/s, cycle 1000000 ns in 1 entry"
        )),
        "{human}"
    );
    assert!(m
        .log(0)
        .contains(&format!("{IFACE}: TSN lanes in admission mode")));

    // Traffic moves the lane-0 counters in /metrics (the daemon refreshes them each
    // hello interval).
    let before = lane_metric(&m, 0, "admitted");
    assert_eq!(m.udp(0, 1, 40), 40, "probes arrive");
    m.wait_for(
        "lane 0 counters in /metrics",
        Duration::from_secs(10),
        |m| lane_metric(m, 0, "admitted") >= before + 40,
    );
    assert_eq!(lane_metric(&m, 0, "demoted"), 0, "every gate is open");
    assert!(
        lane_metric(&m, 7, "admitted") > 0,
        "hellos and adverts go to the default lane"
    );
    let bytes = metric(
        &m,
        "dcmesh_lane_bytes_total",
        &format!("interface=\"{IFACE}\",lane=\"0\",action=\"admitted\""),
    );
    assert!(bytes >= 40 * 58, "{bytes} bytes for 40 probes of 58+ bytes");

    // Crash: the pinned link keeps the program attached and counting.
    let counted = lane_count(&lanes_status(&m), 0, "admitted");
    m.kill(0);
    assert_eq!(
        lanes_program(&m),
        prog_a,
        "still attached right after the kill"
    );
    assert!(m.pin_dir(0).join("lanes").join(IFACE).join("link").exists());
    // The kernel routes stay after a crash, so probes still flow, through the lanes.
    assert_eq!(m.udp(0, 1, 20), 20, "probes arrive while no daemon runs");

    // Restart with a changed schedule.
    set_lanes(&m, 0, &lanes_b());
    m.start(0);
    wait_lanes_up(&m);
    let st = lanes_status(&m);
    assert_eq!(st["attach"], "replaced", "{st}");
    assert_eq!(st["reused_pins"], true, "{st}");
    assert!(
        st["plan_switch_tai_ns"].as_u64().is_some_and(|t| t > 0),
        "a changed plan switches at a cycle boundary: {st}"
    );
    let prog_b = lanes_program(&m);
    assert_ne!(
        prog_b, prog_a,
        "the new daemon's program replaced the old one"
    );
    assert!(
        lane_count(&st, 0, "admitted") >= counted + 20,
        "counters carried on, including the {} probes sent while the daemon was down: {st}",
        20
    );
    // The kernel's plan is the new one (status reads the slot in force).
    m.wait_for("the new schedule in force", Duration::from_secs(5), |m| {
        let s = lanes_status(m);
        s["configured_in_force"] == true && s["schedule"]["entries"].as_array().unwrap().len() == 2
    });
    let classes_after = tc(&m, &["class", "show", "dev", IFACE]);
    assert_eq!(
        classes_after.lines().count(),
        classes.lines().count(),
        "queues kept:\n{classes_after}"
    );

    // Lane 0 is now closed three quarters of the time: probes sent at arbitrary phases
    // are demoted to lane 7 then (none were before). A probe that meets neither its own
    // window nor lane 7's with room left (the few µs at a window's end) is dropped, and
    // counted so.
    m.wait_converged(&[0, 1]);
    let lane0 = |m: &Mesh| ["admitted", "demoted", "dropped"].map(|a| lane_metric(m, 0, a));
    let was = lane0(&m);
    let got = m.udp(0, 1, 100);
    m.wait_for("all 100 probes counted", Duration::from_secs(10), |m| {
        let now = lane0(m);
        (0..3).map(|k| now[k] - was[k]).sum::<u64>() >= 100
    });
    let now = lane0(&m);
    let [admitted, demoted, dropped] = [0, 1, 2].map(|k| now[k] - was[k]);
    assert_eq!(admitted + demoted + dropped, 100, "{now:?} - {was:?}");
    assert!(
        demoted > 0,
        "probes outside lane 0's window are demoted: {now:?} - {was:?}"
    );
    assert_eq!(got as u64, 100 - dropped, "every probe not dropped arrives");

    // A clean stop leaves the lanes in place too.
    m.stop(0);
    assert_eq!(lanes_program(&m), prog_b, "still attached after SIGTERM");
    let out = remove_lanes(&m).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("TC program detached, pinned maps removed, HTB queues deleted"),
        "{said}"
    );
    assert!(lanes_programs(&m).is_empty(), "program detached");
    assert!(!tc(&m, &["qdisc", "show", "dev", IFACE]).contains("htb"));
    assert!(!m.pin_dir(0).join("lanes").join(IFACE).exists());
    // Removing again says there is nothing to remove.
    let e = format!("{:?}", remove_lanes(&m));
    assert!(e.contains("no lanes installed"), "{e}");
}

/// A kernel without what the config demands: `mode = "edt"` needs fq or etf, which the
/// development kernel lacks. The daemon says so, reports the interface's lanes as failed,
/// and routes on. (On a kernel with fq or etf the lanes come up in EDT mode instead.)
#[test]
fn missing_kernel_features_degrade_instead_of_crashing() {
    let mut m = Mesh::new("lanes-edt", 2, &[(0, 1)]);
    m.kill(0);
    let edt = lanes_a().replace("mode = \"admission\"", "mode = \"edt\"");
    set_lanes(&m, 0, &edt);
    m.start(0);
    wait_lanes_up(&m);
    let st = lanes_status(&m);
    let mode = st["mode"].as_str().unwrap().to_string();
    if mode == "failed" {
        let e = st["error"].as_str().unwrap();
        assert!(
            e.contains("this kernel has neither the fq nor the etf qdisc"),
            "{st}"
        );
        assert!(m.log(0).contains("TSN lanes NOT active"), "{}", m.log(0));
        assert!(
            lanes_programs(&m).is_empty(),
            "no program without its queues"
        );
    } else {
        assert!(mode.starts_with("edt_"), "{st}");
    }
    assert_eq!(
        metric(
            &m,
            "dcmesh_lanes_mode",
            &format!("interface=\"{IFACE}\",mode=\"{mode}\"")
        ),
        1
    );
    // Routing goes on.
    m.wait_converged(&[0, 1]);
    assert_eq!(m.udp(0, 1, 10), 10);
}
