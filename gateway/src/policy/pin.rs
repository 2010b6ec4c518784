//! Pinning the filter's TCX link in bpffs, so the filter outlives a
//! crashed gateway (fail closed) and the next start finds and replaces it.
//!
//! The pin is named after the network namespace (its inode) and the
//! interface: `/sys/fs/bpf/keyhole/gw-<netns>-<interface>`. bpffs is
//! mounted there if it is not (once per process).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::programs::links::{FdLink, PinnedLink};

use super::PolicyError;

/// Where pins go unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/keyhole";
const BPF_FS_MAGIC: u64 = 0xcafe4a11;

/// Serialises the mount check so two filters attached at once do not both
/// mount (stacked mounts would hide each other's pins).
static MOUNT: Mutex<()> = Mutex::new(());

/// The pin path for `interface` in the calling thread's network namespace,
/// creating `dir` (and mounting bpffs on `/sys/fs/bpf` if needed).
pub fn pin_path(dir: &Path, interface: &str) -> Result<PathBuf, PolicyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PolicyError::Pin { path, source }
    };
    let netns = Path::new("/proc/thread-self/ns/net");
    let ino = std::fs::metadata(netns).map_err(io(netns))?.ino();
    {
        let _guard = MOUNT.lock().unwrap_or_else(|p| p.into_inner());
        ensure_bpffs(dir).map_err(io(dir))?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    Ok(dir.join(format!("gw-{ino}-{interface}")))
}

/// Mounts bpffs on `/sys/fs/bpf` when `dir` lies below it and it is not
/// mounted yet; a `dir` elsewhere must already be on bpffs.
fn ensure_bpffs(dir: &Path) -> std::io::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if is_bpffs(root)? || !dir.starts_with(root) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(std::io::Error::from)?;
    tracing::info!("mounted bpffs on /sys/fs/bpf");
    Ok(())
}

fn is_bpffs(path: &Path) -> std::io::Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(std::io::Error::from)?;
    Ok(st.filesystem_type().0 as u64 == BPF_FS_MAGIC)
}

/// Takes over a pin a previous run left at `path`: the file is removed, the
/// returned link keeps the old filter attached until it is dropped.
pub fn take_stale(path: &Path) -> Option<FdLink> {
    if !path.exists() {
        return None;
    }
    match PinnedLink::from_pin(path) {
        Ok(old) => match old.unpin() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "removing a stale filter pin");
                None
            }
        },
        Err(e) => {
            // Not a link (or unreadable): clear the name for our own pin.
            tracing::warn!(path = %path.display(), error = %e, "unusable stale filter pin; removing it");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}
