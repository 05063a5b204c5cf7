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

    /// A command that runs `cmd` inside the namespace (`ip netns exec`, which also gives
    /// it this namespace's view of /sys), for callers that spawn long-lived processes.
    pub fn command(&self, cmd: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(cmd);
        c
    }

    /// Runs several `ip` commands inside the namespace with one process (`ip -batch`).
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        use std::io::Write;
        if lines.is_empty() {
            return Ok(());
        }
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("run ip -batch")?;
        child
            .stdin
            .take()
            .context("ip -batch stdin")?
            .write_all(lines.join("\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "ip -n {} -batch failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
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
    veth_offloads_off(a, a_if, b, b_if, &["tx"])
}

/// Like [`veth`], turning off the listed ethtool features (`tx` always belongs in it).
pub fn veth_offloads_off(
    a: &Netns,
    a_if: &str,
    b: &Netns,
    b_if: &str,
    features: &[&str],
) -> Result<()> {
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
    let mut args = vec!["-K", ""];
    for f in features {
        args.extend([*f, "off"]);
    }
    for (ns, dev) in [(a, a_if), (b, b_if)] {
        args[1] = dev;
        ns.exec("ethtool", &args)?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// The pid in a `dcm-<role>-<pid>-<seq>` name, if it has that shape.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.rsplit('-');
    parts.next()?.parse::<u32>().ok()?;
    parts.next()?.parse().ok()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Where run directories live (on tmpfs, gone at reboot).
pub const RUN_ROOT: &str = "/run";

/// Deletes what a crashed testbed process left behind, and nothing else: `dcm-*`
/// namespaces whose creating process is gone (after killing the processes still inside
/// them, e.g. daemons it started), and `/run/dcm-*` run directories of gone processes
/// (unmounting any bpffs inside first, which releases its pins). Returns what it removed.
pub fn clear_stale() -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = owner_pid(name) else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        if let Ok(p) = run("ip", &["netns", "pids", name]) {
            for victim in String::from_utf8_lossy(&p.stdout).split_whitespace() {
                if let Ok(v) = victim.parse::<i32>() {
                    // SAFETY: plain kill(2) of a process inside our own stale namespace.
                    unsafe { libc::kill(v, libc::SIGKILL) };
                }
            }
        }
        run("ip", &["netns", "del", name])?;
        removed.push(name.to_string());
    }
    for entry in std::fs::read_dir(RUN_ROOT).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if alive(pid) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        unmount_below(&entry.path());
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path().display().to_string());
        }
    }
    Ok(removed)
}

/// Lazily unmounts every mount point at or below `dir` (deepest first).
pub fn unmount_below(dir: &std::path::Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| std::path::Path::new(m).starts_with(dir))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: umount2 on a path string; MNT_DETACH never blocks.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_come_from_the_name_shape_only() {
        assert_eq!(owner_pid("dcm-n1-1234-0"), Some(1234));
        assert_eq!(owner_pid("dcm-emu-a-99-12"), Some(99));
        assert_eq!(owner_pid("dcm-tb-77-3"), Some(77));
        assert_eq!(owner_pid("dcm-n1-1234"), None);
        assert_eq!(owner_pid("dcm-x-abc-1"), None);
        assert_eq!(owner_pid("other-1234-0"), None);
        assert_eq!(owner_pid("dcmesh-test-1234-0"), None);
    }
}
