//! First start: the admin, a default site, the secrets shown once.

use argon2::{Argon2, PasswordHasher as _, password_hash::SaltString};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use keyhole_proto::TurnSecret;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::store::{Site, Store, StoreError, TokenKind, TokenOwner, User};

/// Settings key of the TURN secret shared with relays.
const TURN_SECRET_KEY: &str = "turn_secret";

/// How long the one-time sign-in link stays valid.
const SIGN_IN_LINK_TTL: TimeDelta = TimeDelta::hours(24);

/// What the operator supplies for the first start.
#[derive(Debug, Clone, Default)]
pub struct BootstrapOptions {
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    /// Base URL for the sign-in link, e.g. `https://portal.example.com`.
    pub public_url: String,
}

/// What the first start created; the secrets exist only here.
pub struct FirstStart {
    pub admin: User,
    pub admin_api_token: String,
    /// Set when no admin password was given.
    pub sign_in_link: Option<String>,
    pub default_site: Option<Site>,
}

/// Settings key of a user's argon2id password hash (PHC string).
pub fn password_hash_key(user: &User) -> String {
    format!("password_hash:{}", user.id)
}

/// Settings key of a one-time sign-in token (by its SHA-256): its value
/// is `<user id> <expiry unix ms>`.
pub fn sign_in_link_key(token: &str) -> String {
    let digest: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sign_in_link:{digest}")
}

/// argon2id with the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| StoreError::invalid("password", e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::invalid("password", e.to_string()))
}

/// Creates the admin (and its API token) when the store has no user yet,
/// and a default site when it has none. `None` when nothing was created.
pub async fn first_start(
    store: &Store,
    opts: &BootstrapOptions,
    now: DateTime<Utc>,
) -> Result<Option<FirstStart>, StoreError> {
    let default_site = if store.has_any_site().await? {
        None
    } else {
        Some(store.create_site("default", now).await?)
    };
    if store.has_any_user().await? {
        return Ok(None);
    }
    let email = opts
        .admin_email
        .clone()
        .unwrap_or_else(|| "admin@keyhole.local".to_owned());
    let admin = store
        .create_user(&email, "Administrator", true, now)
        .await?;
    let sign_in_link = match &opts.admin_password {
        Some(pw) => {
            if pw.len() < 8 {
                return Err(StoreError::invalid(
                    "KEYHOLE_ADMIN_PASSWORD",
                    "must be at least 8 characters",
                ));
            }
            let hash = hash_password(pw)?;
            store
                .insert_setting_if_absent(&password_hash_key(&admin), &hash)
                .await?;
            None
        }
        None => {
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let token = URL_SAFE_NO_PAD.encode(raw);
            let expires = (now + SIGN_IN_LINK_TTL).timestamp_millis();
            store
                .insert_setting_if_absent(
                    &sign_in_link_key(&token),
                    &format!("{} {expires}", admin.id),
                )
                .await?;
            Some(format!(
                "{}/sign-in#token={token}",
                opts.public_url.trim_end_matches('/')
            ))
        }
    };
    let api = store
        .create_token(
            TokenKind::AdminApi,
            TokenOwner::User(admin.id),
            None,
            None,
            now,
        )
        .await?;
    Ok(Some(FirstStart {
        admin,
        admin_api_token: api.secret,
        sign_in_link,
        default_site,
    }))
}

/// The TURN secret: `given` (stored for next time if none is), else the
/// stored one, else a new random one (stored).
pub async fn turn_secret(store: &Store, given: Option<String>) -> Result<TurnSecret, StoreError> {
    if let Some(s) = given {
        return TurnSecret::try_from(s).map_err(|e| StoreError::invalid("turn_secret", e));
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    store
        .insert_setting_if_absent(TURN_SECRET_KEY, &URL_SAFE_NO_PAD.encode(raw))
        .await?;
    let stored = store
        .get_setting(TURN_SECRET_KEY)
        .await?
        .ok_or_else(|| StoreError::Corrupt("turn secret vanished".into()))?;
    TurnSecret::try_from(stored).map_err(StoreError::Corrupt)
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHash, PasswordVerifier as _};

    use super::*;

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
    }
}
