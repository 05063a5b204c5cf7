//! Making sure a pin directory sits on a BPF filesystem.
use std::path::{Path, PathBuf};

use crate::LoaderError;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs on a valid C string with a zeroed out-struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Where to mount bpffs for `dir`: `/sys/fs/bpf` for paths under it, else `dir`'s top
/// component below an existing non-bpffs parent (the directory itself).
fn mount_point(dir: &Path) -> PathBuf {
    let sys = Path::new("/sys/fs/bpf");
    if dir.starts_with(sys) {
        sys.to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Creates `dir` on a bpffs, mounting one if no ancestor is bpffs.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), LoaderError> {
    let on_bpffs = dir.ancestors().any(|a| a.exists() && is_bpffs(a));
    if !on_bpffs {
        let mp = mount_point(dir.parent().unwrap_or(dir));
        std::fs::create_dir_all(&mp).map_err(|e| LoaderError::Io {
            what: format!("create {}", mp.display()),
            source: e,
        })?;
        if !is_bpffs(&mp) {
            mount_bpffs(&mp)?;
            log::info!("mounted bpffs on {}", mp.display());
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| LoaderError::Io {
        what: format!("create pin directory {}", dir.display()),
        source: e,
    })
}

fn mount_bpffs(at: &Path) -> Result<(), LoaderError> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| LoaderError::Bpffs(format!("bad path {}", at.display())))?;
    // SAFETY: valid C strings; a plain bpf mount with no data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(LoaderError::Bpffs(format!(
            "no BPF filesystem at {} and mounting one failed ({e}); mount it with \"mount -t bpf bpf {}\"",
            at.display(),
            at.display()
        )));
    }
    Ok(())
}
