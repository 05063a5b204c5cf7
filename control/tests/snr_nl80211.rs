//! `dcmesh run` with `snr = { source = "nl80211" }` where nl80211 cannot serve the
//! interface: the daemon refuses to start, naming the interface and the reason, before it
//! touches the datapath. No root needed (the refusal comes first).
use std::process::Command;

fn dcmesh(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dcmesh"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn nl80211_source_is_refused_with_the_interface_and_the_reason() {
    let dir = std::env::temp_dir().join(format!("dcmesh-nl80211-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, node, err) = dcmesh(&dir, &["keygen", "--out", "node.key"]);
    assert!(ok, "{err}");
    let (ok, auth, err) = dcmesh(&dir, &["authority", "init", "--out", "a1.key"]);
    assert!(ok, "{err}");
    let (ok, _, err) = dcmesh(
        &dir,
        &[
            "authority",
            "issue",
            "--key",
            "a1.key",
            "--node",
            node.trim(),
            "--prefix",
            "10.1.0.0/24",
            "--validity",
            "1h",
            "--out",
            "node.cert",
        ],
    );
    assert!(ok, "{err}");
    // An interface name no host has: should the check ever let it through, the daemon
    // stops at the missing interface instead of attaching XDP to a real one.
    let iface = "dcmnl80211x";
    let cfg = format!(
        "key = \"node.key\"\ncertificate = \"node.cert\"\nstate_dir = \"{d}/state\"\n\
         control_socket = \"{d}/ctl.sock\"\npin_dir = \"{d}/pins\"\nkernel_routes = false\n\
         prefixes = [\"10.1.0.0/24\"]\n\
         [authorities]\nkeys = [\"{a}\"]\nthreshold = 1\n\
         [[interface]]\nname = \"{iface}\"\nsnr = {{ source = \"nl80211\" }}\n",
        d = dir.display(),
        a = auth.trim(),
    );
    std::fs::write(dir.join("nl.toml"), cfg).unwrap();
    let (ok, _, err) = dcmesh(&dir, &["run", "--config", "nl.toml"]);
    assert!(!ok, "the daemon started: {err}");
    assert!(
        err.contains(&format!("interface \"{iface}\"")),
        "the error names the interface: {err}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let present = rt
        .block_on(dcmesh_control::snr_nl80211::family_present())
        .expect("generic netlink answers");
    if present {
        assert!(err.contains("not found"), "{err}");
    } else {
        assert!(
            err.contains("snr source \"nl80211\" needs cfg80211, which this kernel lacks")
                && err.contains("use \"file\" or \"static\""),
            "the error says why and what to do: {err}"
        );
    }
    assert!(
        !dir.join("state").exists() && !dir.join("ctl.sock").exists(),
        "refused before creating any state"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
