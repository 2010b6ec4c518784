//! Pointing the system resolver at the stub: /etc/resolv.conf rewritten in
//! place (it may be a bind mount), its original kept in the state dir and
//! put back on exit, or by the next `up`/`down` after a crash.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result};

pub const BACKUP: &str = "resolv.conf.keyhole-backup";

/// How `up` points the system resolver at the stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsMode {
    /// systemd-resolved if the resolver file is its symlink and it
    /// answers, else `file`.
    Auto,
    /// Per-link DNS on the TUN through `resolvectl`.
    Resolved,
    /// Rewrite the resolver file, keeping a backup.
    File,
    /// Leave the system resolver alone (no DNS resources then).
    Off,
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Saves `path` to `backup` (unless a backup from a crashed run is there:
/// that one is the original) and points `path` at `stub`.
pub fn switch(path: &Path, backup: &Path, stub: IpAddr) -> Result<()> {
    if !backup.exists() {
        let original =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(backup, original)
            .with_context(|| format!("backing up to {}", backup.display()))?;
    }
    std::fs::write(
        path,
        format!(
            "# written by `keyhole up`; the original is in {}\nnameserver {stub}\n",
            backup.display()
        ),
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Puts the original back and drops the backup. Ok if there is none.
pub fn restore(path: &Path, backup: &Path) -> Result<()> {
    let Ok(original) = std::fs::read(backup) else {
        return Ok(());
    };
    std::fs::write(path, original).with_context(|| format!("restoring {}", path.display()))?;
    std::fs::remove_file(backup).with_context(|| format!("removing {}", backup.display()))?;
    tracing::info!(path = %path.display(), "resolver configuration restored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_and_restore_keep_the_original_even_across_a_crash() {
        let dir = std::env::temp_dir().join(format!("keyhole-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        let backup = dir.join(BACKUP);
        std::fs::write(
            &path,
            "search corp\nnameserver 10.0.0.53\nnameserver ::1 # x\n",
        )
        .unwrap();
        assert_eq!(
            nameservers(&std::fs::read_to_string(&path).unwrap()),
            vec!["10.0.0.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        let stub: IpAddr = "100.100.100.100".parse().unwrap();
        switch(&path, &backup, stub).unwrap();
        // A crashed run switched already: switching again keeps the original.
        switch(&path, &backup, stub).unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            nameservers(&now),
            vec!["100.100.100.100:53".parse().unwrap()]
        );
        restore(&path, &backup).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("10.0.0.53")
        );
        assert!(!backup.exists());
        restore(&path, &backup).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
