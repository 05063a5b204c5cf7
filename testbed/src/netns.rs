//! Network namespaces with guaranteed teardown.
use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace the testbed creates.
pub const PREFIX: &str = "dcm-";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run(cmd: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}; is it installed? (`cargo xtask setup`)"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace, deleted (with everything in it) when dropped — also on panic.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `dcm-<role>-<pid>-<seq>` with loopback up. `role` is a short label.
    pub fn create(role: &str) -> Result<Self> {
        let name = format!(
            "{PREFIX}{role}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `cmd args` inside the namespace (`ip netns exec`).
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<Output> {
        let mut a = vec!["netns", "exec", &self.name, cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs `ip args` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result.
    /// Sockets, netlink and ifindex look-ups inside `f` see this namespace; BPF objects
    /// and file descriptors are not per-namespace and may cross freely.
    pub fn enter<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("open {path}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a namespace fd affects only this (scoped) thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            log::warn!("cleanup: {e}");
        }
    }
}

/// Connects `a` (interface `a_if`) and `b` (`b_if`) with a veth pair, both ends up.
///
/// TX checksum offload is turned off on both ends: veth would otherwise hand over packets
/// with partial checksums, and a frame forwarded by XDP carries no offload state, so it
/// would arrive corrupt. Real NICs deliver complete checksums; this makes veth do the same.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    run(
        "ip",
        &[
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ],
    )?;
    for (ns, dev) in [(a, a_if), (b, b_if)] {
        ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// Deletes `dcm-*` namespaces whose creating process is gone (leftovers of a crash).
/// Returns the names removed. Namespaces of live processes are left alone.
pub fn clear_stale() -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                run("ip", &["netns", "del", name])?;
                removed.push(name.to_string());
            }
        }
    }
    Ok(removed)
}
