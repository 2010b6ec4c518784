//! `session.json` in the state directory: the portal URL and the token
//! `keyhole up` signs in with, written by `keyhole login` (0600, replaced
//! atomically), deleted by `keyhole logout`. The token is a secret: it is
//! never logged and `Debug` hides it.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const SESSION_FILE: &str = "session.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// From the browser/device flow, bound to this device's key.
    Device,
    /// A service-account token given with `--token`.
    ServiceAccount,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub portal_url: String,
    pub token: String,
    pub kind: Kind,
    /// The device key the token is bound to (device sign-ins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("portal_url", &self.portal_url)
            .field("token", &"<redacted>")
            .field("kind", &self.kind)
            .field("public_key", &self.public_key)
            .finish()
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(SESSION_FILE)
}

/// The stored session, `None` if there is none.
pub fn read(state_dir: &Path) -> Result<Option<Session>> {
    let p = path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged; run `keyhole login` again", p.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Replaces the stored session: a 0600 temp file renamed over the old one,
/// so a crash leaves either the old or the new session, never half of one.
pub fn write(state_dir: &Path, session: &Session) -> Result<()> {
    crate::keys::create_private_dir(state_dir)?;
    let p = path(state_dir);
    let tmp = state_dir.join(format!(".{SESSION_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| -> Result<()> {
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(session)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Deletes the stored session; true if there was one.
pub fn remove(state_dir: &Path) -> Result<bool> {
    let p = path(state_dir);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("deleting {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_private_read_back_and_removed() {
        let dir = std::env::temp_dir().join(format!("keyhole-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read(&dir).unwrap(), None);
        let s = Session {
            portal_url: "http://portal.test".into(),
            token: "kh_secret".into(),
            kind: Kind::Device,
            public_key: Some("key".into()),
        };
        write(&dir, &s).unwrap();
        write(&dir, &s).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(s.clone()));
        assert!(!format!("{s:?}").contains("kh_secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let m = std::fs::metadata(path(&dir)).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600);
        }
        // Only the session file is left (no temp files).
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::write(path(&dir), "{not json").unwrap();
        assert!(read(&dir).is_err());
        assert!(remove(&dir).unwrap());
        assert!(!remove(&dir).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
