//! Idempotent machine set-up: says what it installs, skips what is present, and names what
//! cannot be had.
use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// Debian packages the build, tests, demo and benchmarks use, with the command each provides.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip, tc: namespaces, veth, routes, qdiscs"),
    ("iputils-ping", "ping: end-to-end checks"),
    ("ethtool", "ethtool: GRO and checksum offload on veth"),
    ("procps", "sysctl"),
    ("util-linux", "mount (bpffs)"),
    (
        "fonts-dejavu-core",
        "font for the benchmark histogram pictures",
    ),
];

/// The bpf-linker version known to build against the nightly's LLVM here.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM major version of the nightly toolchain (bpf-linker feature `llvm-NN`).
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Where the project keeps tools it builds (outside the work tree, reused across clones).
pub fn tools_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/dcmesh/tools")
}

/// `PATH` with the project's tool directory first.
pub fn path_with_tools() -> OsString {
    let mut dirs = vec![tools_dir().join("bin")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap_or_default()
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn step(what: &str, cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

pub fn setup() -> Result<()> {
    println!("xtask setup: checking the machine");
    packages()?;
    nightly()?;
    bpf_linker()?;
    kernel();
    println!("xtask setup: done");
    Ok(())
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(p, _)| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .map(|(p, _)| *p)
        .collect();
    for (p, why) in PACKAGES {
        if !missing.contains(p) {
            println!("  present: {p} ({why})");
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "missing Debian packages: {}; install them as root: apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("  installing: {}", missing.join(" "));
    step(
        "apt-get update",
        Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null()),
    )?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null());
    step(&format!("apt-get install {}", missing.join(" ")), &mut cmd).with_context(|| {
        format!(
            "could not install {}; check that Debian's package mirror is reachable",
            missing.join(" ")
        )
    })?;
    println!("  installed: {}", missing.join(" "));
    Ok(())
}

fn nightly_sysroot() -> Option<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .map(|s| PathBuf::from(s.trim()))
}

fn nightly() -> Result<()> {
    if nightly_sysroot().is_none() {
        println!("  installing: rust nightly toolchain (eBPF needs -Z build-std)");
        step(
            "rustup toolchain install nightly",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )
        .context("the nightly toolchain cannot be had; eBPF programs cannot be built without it")?;
    } else {
        println!("  present: rust nightly toolchain");
    }
    let sysroot = nightly_sysroot().context("nightly toolchain still missing after install")?;
    if sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        println!("  present: rust-src (nightly)");
    } else {
        println!("  installing: rust-src for nightly");
        step(
            "rustup component add rust-src --toolchain nightly",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )
        .context("rust-src cannot be had; eBPF programs cannot be built without it")?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let bin = tools_dir().join("bin/bpf-linker");
    let have = output(Command::new(&bin).arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        println!(
            "  present: bpf-linker {BPF_LINKER_VERSION} ({})",
            bin.display()
        );
        return Ok(());
    }
    println!(
        "  installing: bpf-linker {BPF_LINKER_VERSION} into {} (built against the nightly's own libLLVM; about 2 minutes)",
        tools_dir().display()
    );
    let sysroot = nightly_sysroot().context("nightly toolchain missing")?;
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("read {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: the nightly toolchain ships no LLVM to build bpf-linker against",
                lib.display()
            )
        })?;
    let llvm_lib = tools_dir().join("llvm/lib");
    std::fs::create_dir_all(&llvm_lib)?;
    for name in [
        OsString::from("libLLVM.so"),
        llvm.file_name().unwrap_or_default().to_os_string(),
    ] {
        let link = llvm_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    step(
        "cargo install bpf-linker",
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
                "--locked",
                "--force",
            ])
            .arg("--root")
            .arg(tools_dir())
            .env("LLVM_PREFIX", tools_dir().join("llvm")),
    )
    .context(
        "bpf-linker could not be built from crates.io; eBPF programs cannot be linked without it",
    )?;
    println!("  installed: bpf-linker {BPF_LINKER_VERSION}");
    Ok(())
}

/// Reports (does not fail on) kernel features; the tests and the loader give precise errors.
fn kernel() {
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    println!(
        "  kernel: {} BTF {}",
        output(Command::new("uname").arg("-r"))
            .unwrap_or_default()
            .trim(),
        if btf {
            "present"
        } else {
            "MISSING (eBPF loading will fail)"
        }
    );
    if !crate::is_root() {
        return;
    }
    // Probe qdiscs in a throw-away namespace, never on the host's own interfaces.
    let ns = format!("dcm-probe-{}", std::process::id());
    let _ = quiet(Command::new("ip").args(["netns", "add", &ns]));
    let qdiscs: Vec<&str> = ["fq", "etf", "taprio", "mqprio"]
        .into_iter()
        .filter(|q| {
            quiet(Command::new("ip").args([
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", q,
            ]))
        })
        .collect();
    let _ = quiet(Command::new("ip").args(["netns", "del", &ns]));
    println!(
        "  kernel qdiscs for TSN lanes: {}",
        if qdiscs.is_empty() {
            "none of fq/etf/taprio/mqprio (lanes run in gate-admission mode)".to_string()
        } else {
            qdiscs.join(", ")
        }
    );
}
