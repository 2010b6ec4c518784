//! The system's binaries as the netns scenarios find them: each has an
//! environment variable that names the exact file to run (see
//! keyhole-tests-netns' `built_binary`). Setting them pins a profile, so
//! a stale release build never stands in for a fresh debug one (or the
//! other way round).

use std::path::PathBuf;

use crate::cmd::workspace_root;

/// (package, binary, variable naming its path).
pub const BINARIES: [(&str, &str, &str); 4] = [
    ("keyhole-portal", "keyhole-portal", "KEYHOLE_PORTAL_BIN"),
    ("keyhole-relay", "keyhole-relay", "KEYHOLE_RELAY_BIN"),
    ("keyhole-gateway", "keyhole-gateway", "KEYHOLE_GATEWAY_BIN"),
    ("keyhole-client", "keyhole", "KEYHOLE_CLIENT_BIN"),
];

/// CARGO_TARGET_DIR, or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// (variable, path) of every binary built with `profile` ("debug" or
/// "release"), for a child's environment; variables already set win.
pub fn env_for(profile: &str) -> Vec<(&'static str, PathBuf)> {
    let dir = target_dir().join(profile);
    BINARIES
        .iter()
        .filter(|(_, _, var)| std::env::var_os(var).is_none())
        .map(|(_, bin, var)| (*var, dir.join(bin)))
        .collect()
}
