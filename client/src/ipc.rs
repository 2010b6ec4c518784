//! The running `keyhole up` answers `status` and `down` on a unix socket
//! in the runtime directory (0600), one request line, one JSON answer.
//! It also keeps a record of what it changed there, so `keyhole down` or
//! the next `keyhole up` can undo it after a SIGKILL.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const SOCKET: &str = "keyhole.sock";
pub const RECORD: &str = "up.json";

pub fn socket_path(runtime: &Path) -> PathBuf {
    runtime.join(SOCKET)
}

/// What a running `up` changed on the system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    pub tun: String,
    /// The resolver file `up` rewrote and where its original is kept.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    #[serde(default)]
    pub resolv_backup: Option<PathBuf>,
    /// The link `up` pointed systemd-resolved at the stub on.
    #[serde(default)]
    pub resolved_link: Option<String>,
}

impl Record {
    pub fn write(&self, runtime: &Path) -> Result<()> {
        let path = runtime.join(RECORD);
        let tmp = runtime.join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// The record left by an earlier run, if any (an unreadable one is
    /// treated as absent and reported).
    pub fn read(runtime: &Path) -> Option<Self> {
        let path = runtime.join(RECORD);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a corrupt record");
                None
            }
        }
    }

    pub fn remove(runtime: &Path) {
        let _ = std::fs::remove_file(runtime.join(RECORD));
    }
}

/// Whether process `pid` is alive.
pub fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Sends one request to the running `up` and returns its answer.
#[cfg(unix)]
pub fn request(runtime: &Path, what: &str) -> Result<String> {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::time::Duration;
    let path = socket_path(runtime);
    let mut s = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "connecting to {} (is `keyhole up` running?)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{what}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line)
}

#[cfg(not(unix))]
pub fn request(_runtime: &Path, _what: &str) -> Result<String> {
    anyhow::bail!("the status socket is not implemented on this platform yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_garbage_reads_as_none() {
        let dir = std::env::temp_dir().join(format!("keyhole-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Record::read(&dir), None);
        let r = Record {
            pid: 42,
            tun: "kh0".into(),
            ..Record::default()
        };
        r.write(&dir).unwrap();
        assert_eq!(Record::read(&dir), Some(r));
        std::fs::write(dir.join(RECORD), b"{garbage").unwrap();
        assert_eq!(Record::read(&dir), None);
        Record::remove(&dir);
        assert!(!dir.join(RECORD).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
