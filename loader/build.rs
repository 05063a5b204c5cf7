//! Builds the eBPF objects (ebpf/ crate) for bpfel-unknown-none with the nightly toolchain
//! and bpf-linker, so `cargo build` of the loader always embeds up-to-date programs.
use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../ebpf").canonicalize()?;
    // `cargo xtask setup` installs bpf-linker here; make it visible without a PATH edit.
    if let Some(home) = env::var_os("HOME") {
        let tools = PathBuf::from(home).join(".local/share/dcmesh/tools/bin");
        let path = env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![tools];
        dirs.extend(env::split_paths(&path));
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("PATH", env::join_paths(dirs)?) };
    }
    println!("cargo:rerun-if-changed=../loader/schema/src");
    println!("cargo:rerun-if-changed=../tsn/src");
    let root = ebpf_dir.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dcmesh-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
