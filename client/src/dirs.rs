//! Where the client keeps its key (state) and its socket and crash record
//! (runtime), following the platform's conventions.

use std::path::PathBuf;

fn is_root() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `/var/lib/keyhole` as root, else `$XDG_STATE_HOME/keyhole`
/// (`~/.local/state/keyhole`).
pub fn default_state_dir() -> PathBuf {
    if cfg!(target_os = "linux") && is_root() {
        return PathBuf::from("/var/lib/keyhole");
    }
    if let Some(d) = env_dir("XDG_STATE_HOME") {
        return d.join("keyhole");
    }
    if let Some(h) = env_dir("HOME") {
        return h.join(".local/state/keyhole");
    }
    std::env::temp_dir().join("keyhole-state")
}

/// `/run/keyhole` as root, else `$XDG_RUNTIME_DIR/keyhole`.
pub fn default_runtime_dir() -> PathBuf {
    if cfg!(target_os = "linux") && is_root() {
        return PathBuf::from("/run/keyhole");
    }
    if let Some(d) = env_dir("XDG_RUNTIME_DIR") {
        return d.join("keyhole");
    }
    std::env::temp_dir().join("keyhole-run")
}
