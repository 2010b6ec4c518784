//! Device authorization for `keyhole login` (RFC 8628), see
//! `migrations/*/0003_device_auth.sql`.
//!
//! A request is bound at its start to the device's WireGuard public key and
//! name. The device code is stored only as its SHA-256; the user code is
//! short (8 letters) and only lives for the request's few minutes. Polling
//! is answered from one transaction, so an approved request yields exactly
//! one `client_session` token, which is bound to the device key in
//! `client_session_keys`.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use keyhole_proto::PublicKey;
use rand::{Rng as _, RngCore as _};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::{
    IssuedToken, Result, Store, StoreError, TokenKind, from_ms, ms, parse_uuid,
    tokens::TOKEN_PREFIX,
};
use crate::policy::{SignInMethod, UserId};

/// Letters a user code is drawn from: no vowels (no words), no lookalikes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// What the device keeps from a new request.
#[derive(Debug, Clone)]
pub struct NewDeviceAuthorization {
    /// The polling secret; not stored.
    pub device_code: String,
    /// `ABCD-EFGH`, typed or confirmed by the user.
    pub user_code: String,
    pub expires_at: DateTime<Utc>,
    pub interval_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAuthStatus {
    Pending,
    Approved,
    Denied,
    /// Approved and its token handed out.
    Consumed,
}

impl DeviceAuthStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Consumed => "consumed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "consumed" => Self::Consumed,
            other => return Err(StoreError::Corrupt(format!("device status `{other}`"))),
        })
    }
}

/// A request as the approval page shows it.
#[derive(Debug, Clone)]
pub struct DeviceAuthorization {
    pub id: Uuid,
    pub user_code: String,
    pub public_key: PublicKey,
    pub device_name: String,
    pub status: DeviceAuthStatus,
    pub expires_at: DateTime<Utc>,
}

/// The answer to one poll (RFC 8628 section 3.5).
#[derive(Debug)]
pub enum DevicePoll {
    /// Unknown device code, or its token was already handed out.
    Invalid,
    Expired,
    Pending,
    /// Polled faster than allowed; the interval is now this many seconds.
    SlowDown {
        interval_secs: u32,
    },
    Denied,
    /// The token, shown once, bound to `public_key`.
    Approved {
        token: IssuedToken,
        user: UserId,
        public_key: PublicKey,
        expires_at: DateTime<Utc>,
    },
}

/// A live token from a device sign-in, for the admin's clients page.
#[derive(Debug, Clone)]
pub struct DeviceSignIn {
    pub token_id: Uuid,
    pub public_key: PublicKey,
    pub device_name: String,
    pub user: Option<UserId>,
    pub sign_in_method: Option<SignInMethod>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn method_str(m: SignInMethod) -> &'static str {
    match m {
        SignInMethod::Password => "password",
        SignInMethod::Oidc => "oidc",
        SignInMethod::ServiceToken => "service_token",
    }
}

fn parse_method(s: &str) -> Result<SignInMethod> {
    Ok(match s {
        "password" => SignInMethod::Password,
        "oidc" => SignInMethod::Oidc,
        "service_token" => SignInMethod::ServiceToken,
        other => return Err(StoreError::Corrupt(format!("sign-in method `{other}`"))),
    })
}

fn parse_key(s: &str) -> Result<PublicKey> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad public key `{s}` in database")))
}

fn new_user_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())] as char);
    }
    code
}

/// What the user typed, in stored form: case, spaces and dashes don't
/// matter; `None` if it cannot be a user code at all.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let letters: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() != 8 || !letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)) {
        return None;
    }
    Some(format!("{}-{}", &letters[..4], &letters[4..]))
}

/// A device name as shown to admins: trimmed, 1..=64 printable characters.
fn check_device_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "device_name",
            "must be 1 to 64 printable characters",
        ));
    }
    Ok(name.to_owned())
}

type AuthRow = (String, String, String, String, String, i64);

fn auth_from_row(
    (id, user_code, key, name, status, expires): AuthRow,
) -> Result<DeviceAuthorization> {
    Ok(DeviceAuthorization {
        id: parse_uuid(&id)?,
        user_code,
        public_key: parse_key(&key)?,
        device_name: name,
        status: DeviceAuthStatus::parse(&status)?,
        expires_at: from_ms(expires),
    })
}

type PollRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
);

impl Store {
    /// Starts a request for the device with `public_key`, valid for `ttl`.
    /// Expired requests are forgotten here (no timer needed).
    pub async fn start_device_authorization(
        &self,
        public_key: PublicKey,
        device_name: &str,
        ttl: TimeDelta,
        interval_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<NewDeviceAuthorization> {
        let device_name = check_device_name(device_name)?;
        sqlx::query("DELETE FROM device_authorizations WHERE expires_at <= $1")
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let device_code = URL_SAFE_NO_PAD.encode(raw);
        let expires_at = now + ttl;
        // 20^8 codes: a clash among the few live ones is rare; try again.
        let mut attempts = 0;
        loop {
            let user_code = new_user_code();
            let r = sqlx::query(
                "INSERT INTO device_authorizations (id, device_code_hash, user_code, public_key, \
                 device_name, status, interval_secs, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8)",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(hash(&device_code))
            .bind(&user_code)
            .bind(public_key.to_string())
            .bind(&device_name)
            .bind(i64::from(interval_secs))
            .bind(ms(now))
            .bind(ms(expires_at))
            .execute(&self.pool)
            .await;
            match r.map_err(StoreError::from) {
                Ok(_) => {
                    return Ok(NewDeviceAuthorization {
                        device_code,
                        user_code,
                        expires_at,
                        interval_secs,
                    });
                }
                Err(StoreError::Conflict(_)) if attempts < 5 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The live (unexpired) request with this user code.
    pub async fn device_authorization_by_user_code(
        &self,
        user_code: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DeviceAuthorization>> {
        let Some(code) = normalize_user_code(user_code) else {
            return Ok(None);
        };
        let row: Option<AuthRow> = sqlx::query_as(
            "SELECT id, user_code, public_key, device_name, status, expires_at \
             FROM device_authorizations WHERE user_code = $1 AND expires_at > $2",
        )
        .bind(code)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(auth_from_row).transpose()
    }

    /// Approves or denies a pending, unexpired request as `user`. Returns
    /// false if it was no longer pending (decided elsewhere, or expired).
    pub async fn decide_device_authorization(
        &self,
        id: Uuid,
        user: UserId,
        method: SignInMethod,
        approve: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let status = if approve {
            DeviceAuthStatus::Approved
        } else {
            DeviceAuthStatus::Denied
        };
        let r = sqlx::query(
            "UPDATE device_authorizations SET status = $1, user_id = $2, sign_in_method = $3 \
             WHERE id = $4 AND status = 'pending' AND expires_at > $5",
        )
        .bind(status.as_str())
        .bind(user.to_string())
        .bind(method_str(method))
        .bind(id.to_string())
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// One poll with `device_code`. Polls closer together than the
    /// interval (with a second of slack for network jitter) get
    /// `SlowDown` and a 5 s longer interval, as RFC 8628 asks. An approved
    /// request yields its token once; the token lasts `token_ttl`.
    pub async fn poll_device_authorization(
        &self,
        device_code: &str,
        token_ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<DevicePoll> {
        if device_code.is_empty() || device_code.len() > 128 {
            return Ok(DevicePoll::Invalid);
        }
        let mut tx = self.pool.begin().await?;
        let row: Option<PollRow> = sqlx::query_as(
            "SELECT id, public_key, device_name, status, interval_secs, last_polled_at, \
             user_id, sign_in_method, expires_at \
             FROM device_authorizations WHERE device_code_hash = $1",
        )
        .bind(hash(device_code))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, key, name, status, interval, last_polled, user, method, expires)) = row
        else {
            return Ok(DevicePoll::Invalid);
        };
        let status = DeviceAuthStatus::parse(&status)?;
        if status == DeviceAuthStatus::Consumed {
            return Ok(DevicePoll::Invalid);
        }
        if from_ms(expires) <= now {
            return Ok(DevicePoll::Expired);
        }
        let too_soon = last_polled.is_some_and(|t| ms(now) - t + 1000 < interval * 1000);
        if too_soon {
            let interval = interval + 5;
            sqlx::query(
                "UPDATE device_authorizations SET interval_secs = $1, last_polled_at = $2 \
                 WHERE id = $3",
            )
            .bind(interval)
            .bind(ms(now))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(DevicePoll::SlowDown {
                interval_secs: u32::try_from(interval).unwrap_or(u32::MAX),
            });
        }
        sqlx::query("UPDATE device_authorizations SET last_polled_at = $1 WHERE id = $2")
            .bind(ms(now))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let answer = match status {
            DeviceAuthStatus::Pending => DevicePoll::Pending,
            DeviceAuthStatus::Denied => DevicePoll::Denied,
            DeviceAuthStatus::Consumed => DevicePoll::Invalid,
            DeviceAuthStatus::Approved => {
                let user = UserId(parse_uuid(user.as_deref().unwrap_or(""))?);
                let method = method.as_deref().map(parse_method).transpose()?;
                let public_key = parse_key(&key)?;
                let expires_at = now + token_ttl;
                let mut raw = [0u8; 32];
                rand::rng().fill_bytes(&mut raw);
                let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
                let token_id = Uuid::new_v4();
                let consumed = sqlx::query(
                    "UPDATE device_authorizations SET status = 'consumed' \
                     WHERE id = $1 AND status = 'approved'",
                )
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                if consumed.rows_affected() != 1 {
                    // A concurrent poll took it.
                    return Ok(DevicePoll::Invalid);
                }
                sqlx::query(
                    "INSERT INTO tokens (id, kind, token_hash, user_id, sign_in_method, \
                     expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(token_id.to_string())
                .bind(TokenKind::ClientSession.as_str())
                .bind(hash(&secret))
                .bind(user.to_string())
                .bind(method.map(method_str))
                .bind(ms(expires_at))
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO client_session_keys (token_id, public_key, device_name, \
                     created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(token_id.to_string())
                .bind(public_key.to_string())
                .bind(&name)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
                DevicePoll::Approved {
                    token: IssuedToken {
                        id: token_id,
                        secret,
                    },
                    user,
                    public_key,
                    expires_at,
                }
            }
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// The device key a `client_session` token is bound to, if any.
    pub async fn client_session_key(&self, token_id: Uuid) -> Result<Option<PublicKey>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT public_key FROM client_session_keys WHERE token_id = $1")
                .bind(token_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(k,)| parse_key(&k)).transpose()
    }

    /// Every live token from a device sign-in.
    pub async fn list_device_sign_ins(&self, now: DateTime<Utc>) -> Result<Vec<DeviceSignIn>> {
        type Row = (
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT k.token_id, k.public_key, k.device_name, t.user_id, t.sign_in_method, \
             k.created_at, t.expires_at FROM client_session_keys k \
             JOIN tokens t ON t.id = k.token_id \
             WHERE t.expires_at IS NULL OR t.expires_at > $1 ORDER BY k.created_at",
        )
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, key, name, user, method, created, expires)| {
                Ok(DeviceSignIn {
                    token_id: parse_uuid(&id)?,
                    public_key: parse_key(&key)?,
                    device_name: name,
                    user: user.as_deref().map(parse_uuid).transpose()?.map(UserId),
                    sign_in_method: method.as_deref().map(parse_method).transpose()?,
                    created_at: from_ms(created),
                    expires_at: expires.map(from_ms),
                })
            })
            .collect()
    }

    /// Deletes one device sign-in token (and no other kind of token).
    pub async fn revoke_device_sign_in(&self, token_id: Uuid) -> Result<()> {
        let r = sqlx::query(
            "DELETE FROM tokens WHERE id = $1 \
             AND id IN (SELECT token_id FROM client_session_keys WHERE token_id = $1)",
        )
        .bind(token_id.to_string())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("device sign-in"));
        }
        Ok(())
    }

    /// Deletes every device sign-in token bound to `public_key`; returns
    /// their ids (for `Change::TokenRevoked`).
    pub async fn revoke_device_sign_ins(&self, public_key: PublicKey) -> Result<Vec<Uuid>> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT token_id FROM client_session_keys WHERE public_key = $1")
                .bind(public_key.to_string())
                .fetch_all(&mut *tx)
                .await?;
        for (id,) in &ids {
            sqlx::query("DELETE FROM tokens WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        ids.iter().map(|(id,)| parse_uuid(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_letters_from_the_alphabet() {
        for _ in 0..100 {
            let c = new_user_code();
            assert_eq!(c.len(), 9);
            assert_eq!(&c[4..5], "-");
            assert_eq!(normalize_user_code(&c).as_deref(), Some(c.as_str()));
        }
    }

    #[test]
    fn typed_codes_are_normalised_or_refused() {
        assert_eq!(
            normalize_user_code("bcdf ghjk").as_deref(),
            Some("BCDF-GHJK")
        );
        assert_eq!(
            normalize_user_code(" BCDFGHJK ").as_deref(),
            Some("BCDF-GHJK")
        );
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(
            normalize_user_code("ABCD-EFGH"),
            None,
            "vowels are not used"
        );
        assert_eq!(normalize_user_code("BCDF-GHJKL"), None);
        assert_eq!(normalize_user_code("ÄBCD-FGHJ"), None);
        assert_eq!(normalize_user_code(""), None);
    }

    #[tokio::test]
    async fn only_the_device_codes_hash_is_stored() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let now = crate::api::now();
        let new = store
            .start_device_authorization(
                PublicKey::from_bytes([1; 32]),
                "pc",
                TimeDelta::minutes(10),
                5,
                now,
            )
            .await
            .unwrap();
        let (stored,): (String,) = sqlx::query_as(
            "SELECT device_code_hash FROM device_authorizations WHERE user_code = $1",
        )
        .bind(&new.user_code)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_ne!(stored, new.device_code);
        assert_eq!(stored, hash(&new.device_code));
    }

    #[test]
    fn device_names_are_checked() {
        assert_eq!(check_device_name("  laptop ").unwrap(), "laptop");
        assert!(check_device_name("").is_err());
        assert!(check_device_name("a\nb").is_err());
        assert!(check_device_name(&"x".repeat(65)).is_err());
    }
}
