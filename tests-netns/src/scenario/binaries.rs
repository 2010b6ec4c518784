//! Finding the workspace's built binaries.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// A binary the workspace built: `$env_override` if set, else the release
/// or debug build of `name` under `CARGO_TARGET_DIR` or the workspace's
/// `target/`. Fails with `build_hint` when there is none.
pub fn built_binary(name: &str, env_override: &str, build_hint: &str) -> Result<PathBuf> {
    if let Ok(p) = std::env::var(env_override) {
        return Ok(p.into());
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        dirs.push(t.into());
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for d in &dirs {
        for profile in ["release", "debug"] {
            let p = d.join(profile).join(name);
            if p.exists() {
                return Ok(p);
            }
        }
    }
    bail!("{name} not found in {dirs:?} (or set {env_override}): {build_hint}")
}

pub(crate) fn portal_bin() -> Result<PathBuf> {
    built_binary(
        "keyhole-portal",
        "KEYHOLE_PORTAL_BIN",
        "`cargo build -p keyhole-portal`",
    )
}

pub(crate) fn gateway_bin() -> Result<PathBuf> {
    built_binary(
        "keyhole-gateway",
        "KEYHOLE_GATEWAY_BIN",
        "`cargo build -p keyhole-gateway`",
    )
}

pub(crate) fn client_bin() -> Result<PathBuf> {
    built_binary(
        "keyhole",
        "KEYHOLE_CLIENT_BIN",
        "`cargo build -p keyhole-client`",
    )
}

pub(crate) fn relay_bin() -> Result<PathBuf> {
    built_binary(
        "keyhole-relay",
        "KEYHOLE_RELAY_BIN",
        "`cargo build -p keyhole-relay`",
    )
}
