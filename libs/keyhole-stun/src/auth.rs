//! Long-term credentials (RFC 8489 §9.2) with time-limited usernames and
//! HMAC passwords from a shared secret (coturn's `use-auth-secret`, the
//! "TURN REST API" scheme), and stateless nonces.

use std::net::IpAddr;

use base64::Engine;
use md5::{Digest, Md5};

use crate::integrity::{ct_eq, hmac_sha1, hmac_sha256};

/// The password for `username` under the shared `secret`:
/// base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha1(secret, &[username.as_bytes()]))
}

/// A time-limited username: `expiry:user` (expiry in Unix seconds).
pub fn rest_username(expiry_unix: u64, user: &str) -> String {
    format!("{expiry_unix}:{user}")
}

/// The expiry of a `expiry[:user]` username, or `None` if it has no
/// leading Unix timestamp.
pub fn rest_username_expiry(username: &str) -> Option<u64> {
    let ts = username.split_once(':').map_or(username, |(ts, _)| ts);
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok()
}

/// The long-term key MD5(username ":" realm ":" password). The password
/// must already be SASLprep'd (this crate does not implement SASLprep; the
/// REST scheme's base64 passwords are ASCII and unaffected by it).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Outcome of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but older than the nonce lifetime: answer 438.
    Stale,
    /// Not one we issued (or for another client address).
    Invalid,
}

const NONCE_PREFIX: &str = "khn1";
const NONCE_MAC_LEN: usize = 12;
const NONCE_LEN: usize = NONCE_PREFIX.len() + 16 + 2 * NONCE_MAC_LEN;

/// Issues and checks stateless nonces: a timestamp and an HMAC over it and
/// the client address, so the server keeps no per-client nonce state.
#[derive(Clone)]
pub struct NonceIssuer {
    secret: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl NonceIssuer {
    pub fn new(secret: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer {
            secret,
            lifetime_secs,
        }
    }

    fn mac(&self, ts: u64, client: IpAddr) -> [u8; NONCE_MAC_LEN] {
        let ip = match client {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let full = hmac_sha256(&self.secret, &[b"keyhole-nonce", &ts.to_be_bytes(), &ip]);
        let mut out = [0u8; NONCE_MAC_LEN];
        out.copy_from_slice(&full[..NONCE_MAC_LEN]);
        out
    }

    /// A fresh nonce for `client` at time `now_secs` (any monotonic seconds
    /// count the checker shares).
    pub fn issue(&self, now_secs: u64, client: IpAddr) -> String {
        let mut s = String::with_capacity(NONCE_LEN);
        s.push_str(NONCE_PREFIX);
        s.push_str(&format!("{now_secs:016x}"));
        for b in self.mac(now_secs, client) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn check(&self, nonce: &str, now_secs: u64, client: IpAddr) -> NonceCheck {
        let Some(rest) = nonce.strip_prefix(NONCE_PREFIX) else {
            return NonceCheck::Invalid;
        };
        if nonce.len() != NONCE_LEN || !rest.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (ts_hex, mac_hex) = rest.split_at(16);
        let Ok(ts) = u64::from_str_radix(ts_hex, 16) else {
            return NonceCheck::Invalid;
        };
        let mut mac = [0u8; NONCE_MAC_LEN];
        for (i, b) in mac.iter_mut().enumerate() {
            match u8::from_str_radix(&mac_hex[2 * i..2 * i + 2], 16) {
                Ok(v) => *b = v,
                Err(_) => return NonceCheck::Invalid,
            }
        }
        if !ct_eq(&mac, &self.mac(ts, client)) || ts > now_secs {
            return NonceCheck::Invalid;
        }
        if now_secs - ts >= self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_username_expiry_parses_coturn_forms() {
        assert_eq!(
            rest_username_expiry("1700000000:alice"),
            Some(1_700_000_000)
        );
        assert_eq!(rest_username_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(rest_username_expiry("alice:1700000000"), None);
        assert_eq!(rest_username_expiry(":alice"), None);
        assert_eq!(rest_username_expiry("99999999999999999999999:x"), None);
    }

    #[test]
    fn rest_password_matches_coturn_formula() {
        // base64(HMAC-SHA1("secret", "1700000000:alice")), computed with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let pw = rest_password(b"secret", "1700000000:alice");
        assert_eq!(pw.len(), 28);
        assert_eq!(pw, OPENSSL_PW);
    }
    const OPENSSL_PW: &str = "d8soP47RbdIKLDUOpnJPVQyq5Ts=";

    #[test]
    fn nonce_lifecycle() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let n = NonceIssuer::new([7; 32], 600);
        let nonce = n.issue(1000, ip);
        assert_eq!(n.check(&nonce, 1000, ip), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1599, ip), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1600, ip), NonceCheck::Stale);
        assert_eq!(n.check(&nonce, 1000, other), NonceCheck::Invalid);
        assert_eq!(n.check(&nonce, 999, ip), NonceCheck::Invalid);
        let forged = NonceIssuer::new([8; 32], 600).issue(1000, ip);
        assert_eq!(n.check(&forged, 1000, ip), NonceCheck::Invalid);
        let mut tampered = nonce.clone();
        tampered.replace_range(4..20, &format!("{:016x}", 1500u64));
        assert_eq!(n.check(&tampered, 1500, ip), NonceCheck::Invalid);
        assert_eq!(n.check("khn1é", 1000, ip), NonceCheck::Invalid);
        assert_eq!(n.check("", 1000, ip), NonceCheck::Invalid);
    }
}
