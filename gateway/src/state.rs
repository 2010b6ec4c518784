//! The gateway's state directory: its WireGuard private key survives
//! restarts, so clients and the portal keep knowing it by one public key.
//!
//! `private.key` holds the key in `wg genkey` form, mode 0600, in a
//! directory created 0700. A key file readable by group or others, or not
//! a key, is an error: the gateway refuses to start rather than use or
//! overwrite it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use keyhole_proto::PresharedKey;

use crate::wg::PrivateKey;

/// Where the key is kept unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/keyhole-gateway";
const KEY_FILE: &str = "private.key";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable by others (mode {mode:o}); chmod 600 it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} does not hold a WireGuard private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The key in `dir`, made (and saved) on first use. Returns it and whether
/// it is new.
pub fn load_or_create_key(dir: &Path) -> Result<(PrivateKey, bool), StateError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let path = dir.join(KEY_FILE);
    match fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(StateError::TooOpen { path, mode });
            }
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            let key = PrivateKey::from_base64(&text).map_err(|e| StateError::BadKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::generate();
            // Written aside, then linked into place: a crash mid-write leaves
            // no half key, and of two gateways starting at once on one state
            // dir exactly one key wins (the link fails if the name exists).
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.join(format!("{KEY_FILE}.{}.{seq}.tmp", std::process::id()));
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            let text = PresharedKey::from_bytes(*key.as_bytes()).expose_base64();
            let written = f
                .write_all(format!("{text}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io(&tmp));
            let linked = written.and_then(|()| fs::hard_link(&tmp, &path).map_err(io(&path)));
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok((key, true)),
                Err(StateError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    load_or_create_key(dir)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(io(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "keyhole-gw-state-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_key_is_made_once_with_private_modes_and_kept() {
        let dir = scratch("once").join("nested");
        let (k1, new1) = load_or_create_key(&dir).unwrap();
        assert!(new1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let (k2, new2) = load_or_create_key(&dir).unwrap();
        assert!(!new2);
        assert_eq!(k1.public_key(), k2.public_key());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "only the key");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn racing_first_starts_agree_on_one_key() {
        let dir = scratch("race");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (d, b) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    load_or_create_key(&d).unwrap()
                })
            })
            .collect();
        let runs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(runs.iter().filter(|(_, new)| *new).count(), 1);
        let first = runs[0].0.public_key();
        assert!(runs.iter().all(|(k, _)| k.public_key() == first));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "only the key");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_open_or_broken_key_file_is_refused_and_left_alone() {
        let dir = scratch("bad");
        load_or_create_key(&dir).unwrap();
        let path = dir.join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_key(&dir),
            Err(StateError::TooOpen { mode: 0o644, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not a key\n").unwrap();
        let e = load_or_create_key(&dir).unwrap_err();
        assert!(matches!(e, StateError::BadKey { .. }), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a key\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
