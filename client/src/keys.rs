//! The device's WireGuard private key: generated here on first run, kept
//! in the state directory readable by its owner only, never logged.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use rand::RngCore as _;
use zeroize::Zeroizing;

pub const KEY_FILE: &str = "private_key";

/// Reads the key, or creates it (0600, in a 0700 directory).
pub fn load_or_create(dir: &Path) -> Result<Zeroizing<[u8; 32]>> {
    create_private_dir(dir)?;
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            restrict(&path)?;
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(text.trim())
                    .with_context(|| format!("{} is not base64", path.display()))?,
            );
            let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                bail!("{} does not hold a 32-byte key", path.display());
            };
            Ok(Zeroizing::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(key.as_mut());
            let text = Zeroizing::new(STANDARD.encode(key.as_ref()));
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "generated a new device key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// Owner-only permissions (a key copied in by hand may be too open).
fn restrict(path: &Path) -> Result<()> {
    #[cfg(not(unix))]
    let _ = path;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "key was readable by others; now 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("keyhole-keytest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(*a, *b);
        assert_ne!(*a, [0u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let m = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        std::fs::write(dir.join(KEY_FILE), "not base64!").unwrap();
        assert!(load_or_create(&dir).is_err());
        std::fs::write(dir.join(KEY_FILE), STANDARD.encode([1u8; 16])).unwrap();
        assert!(load_or_create(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
