//! The `dcmesh` command line: keys, certificates, configuration errors. No root needed.
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
fn keys_certificates_and_config_errors() {
    let dir = std::env::temp_dir().join(format!("dcmesh-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, node, _) = dcmesh(&dir, &["keygen", "--out", "node.key"]);
    assert!(ok);
    let node = node.trim().to_string();
    assert_eq!(node.len(), 64);
    let (ok, _, err) = dcmesh(&dir, &["keygen", "--out", "node.key"]);
    assert!(!ok && err.contains("refusing to overwrite"), "{err}");
    let (_, a1, _) = dcmesh(&dir, &["authority", "init", "--out", "a1.key"]);
    let (_, a2, _) = dcmesh(&dir, &["authority", "init", "--out", "a2.key"]);
    let issue = |validity: &str| {
        let args = [
            "authority",
            "issue",
            "--key",
            "a1.key",
            "--node",
            &node,
            "--prefix",
            "10.1.0.0/24",
            "fd00::/64",
            "--validity",
            validity,
            "--out",
            "node.cert",
        ];
        dcmesh(&dir, &args)
    };
    let (ok, _, err) = issue("5h");
    assert!(
        !ok && err.contains("4 h"),
        "validity above 4 h must be refused: {err}"
    );
    assert!(
        !dir.join("node.cert").exists(),
        "a refused certificate was written"
    );
    let (ok, _, err) = issue("4h");
    assert!(ok, "{err}");
    let (ok, _, err) = dcmesh(
        &dir,
        &[
            "authority",
            "cosign",
            "--key",
            "a2.key",
            "--cert",
            "node.cert",
        ],
    );
    assert!(ok && err.contains("2 signature"), "{err}");
    let (ok, shown, _) = dcmesh(&dir, &["show-cert", "node.cert"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["node"], node.as_str());
    assert_eq!(
        v["not_after"].as_u64().unwrap() - v["not_before"].as_u64().unwrap(),
        4 * 3600
    );
    assert_eq!(v["signed_by"].as_array().unwrap().len(), 2);

    let cfg = format!(
        "key = \"node.key\"\ncertificate = \"node.cert\"\ndead_interval_ms = 1000\n[authorities]\nkeys = [\"{}\", \"{}\"]\nthreshold = 2\n[[interface]]\nname = \"mesh0\"\n",
        a1.trim(),
        a2.trim()
    );
    std::fs::write(dir.join("bad.toml"), cfg).unwrap();
    let (ok, _, err) = dcmesh(&dir, &["run", "--config", "bad.toml"]);
    assert!(!ok && err.contains("`dead_interval_ms`"), "{err}");
    let (ok, _, err) = dcmesh(&dir, &["status", "--socket", "/nonexistent/dcmesh.sock"]);
    assert!(!ok && err.contains("is \"dcmesh run\" running"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `dcmesh run` with `snr = { source = "nl80211" }` where nl80211 cannot serve the
/// interface refuses to start, naming the interface and the reason, before it touches
/// the datapath (so no root is needed).
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
