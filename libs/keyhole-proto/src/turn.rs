//! Relays and the short-lived TURN credentials the portal hands out.
//!
//! The scheme is the "TURN REST API" one coturn calls
//! `--use-auth-secret`: the portal and every relay share a secret; the
//! portal issues `username = "<expiry unix seconds>:<subject>"` and
//! `password = base64(HMAC-SHA1(secret, username))`; a relay recomputes the
//! password from the username and refuses expired usernames. No per-user
//! state lives on the relay.

use std::{
    fmt,
    net::{SocketAddrV4, SocketAddrV6},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::RelayId;

/// Shortest shared secret accepted.
pub const MIN_TURN_SECRET_LEN: usize = 16;

/// The secret shared by the portal and the relays (never logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(try_from = "String", into = "String")]
pub struct TurnSecret(String);

impl TurnSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TurnSecret {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() < MIN_TURN_SECRET_LEN {
            return Err(format!(
                "TURN secret must be at least {MIN_TURN_SECRET_LEN} bytes"
            ));
        }
        Ok(Self(s))
    }
}

impl From<TurnSecret> for String {
    fn from(s: TurnSecret) -> String {
        s.0.clone()
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

/// TURN long-term credentials valid until `expires_at`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnCredentials {
    /// `"<expiry unix seconds>:<subject>"`.
    pub username: String,
    pub password: String,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl TurnCredentials {
    /// Credentials for `subject` (a client or gateway id) valid until
    /// `expires_at`, rounded down to whole seconds.
    pub fn issue(secret: &TurnSecret, subject: &str, expires_at: DateTime<Utc>) -> Self {
        let secs = expires_at.timestamp();
        let username = format!("{secs}:{subject}");
        let password = turn_password(secret, &username);
        Self {
            username,
            password,
            expires_at: DateTime::from_timestamp(secs, 0).unwrap_or(expires_at),
        }
    }
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn turn_password(secret: &TurnSecret, username: &str) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Why a TURN username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnUsernameError {
    #[error("TURN username is not `<expiry>:<subject>`")]
    Malformed,
    #[error("TURN username expired at unix time {0}")]
    Expired(i64),
}

/// Check a TURN username's shape and expiry; returns the subject. A relay
/// calls this, then derives the long-term key from [`turn_password`].
pub fn check_turn_username(username: &str, now: DateTime<Utc>) -> Result<&str, TurnUsernameError> {
    let (expiry, subject) = username
        .split_once(':')
        .ok_or(TurnUsernameError::Malformed)?;
    let expiry: i64 = expiry.parse().map_err(|_| TurnUsernameError::Malformed)?;
    if subject.is_empty() {
        return Err(TurnUsernameError::Malformed);
    }
    if now.timestamp() >= expiry {
        return Err(TurnUsernameError::Expired(expiry));
    }
    Ok(subject)
}

/// A relay as clients and gateways see it: where to reach it and the
/// credentials to use with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    pub id: RelayId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<SocketAddrV4>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<SocketAddrV6>,
    pub credentials: TurnCredentials,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> TurnSecret {
        TurnSecret::try_from("north-wind-secret-0123456789".to_owned()).unwrap()
    }

    #[test]
    fn password_matches_coturn_rest_scheme() {
        // Expected value computed independently:
        // printf %s "$USER" | openssl dgst -sha1 -hmac "$SECRET" -binary | base64
        let expires = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let c = TurnCredentials::issue(&secret(), "01234567-89ab-cdef-0123-456789abcdef", expires);
        assert_eq!(
            c.username,
            "1700000000:01234567-89ab-cdef-0123-456789abcdef"
        );
        assert_eq!(c.password, "njtYx7fmM/E3ZyJJvWMZqXRIBKE=");
        assert_eq!(c.expires_at, expires);
        assert!(!format!("{c:?}").contains(&c.password));
    }

    #[test]
    fn usernames_expire() {
        let t = |s| DateTime::from_timestamp(s, 0).unwrap();
        assert_eq!(check_turn_username("100:gw", t(99)), Ok("gw"));
        assert_eq!(
            check_turn_username("100:gw", t(100)),
            Err(TurnUsernameError::Expired(100))
        );
        assert_eq!(
            check_turn_username("gw", t(1)),
            Err(TurnUsernameError::Malformed)
        );
        assert_eq!(
            check_turn_username("x:gw", t(1)),
            Err(TurnUsernameError::Malformed)
        );
        assert_eq!(
            check_turn_username("100:", t(1)),
            Err(TurnUsernameError::Malformed)
        );
    }

    #[test]
    fn short_secret_is_rejected_and_secret_is_redacted() {
        assert!(TurnSecret::try_from("short".to_owned()).is_err());
        assert!(!format!("{:?}", secret()).contains("north"));
    }
}
