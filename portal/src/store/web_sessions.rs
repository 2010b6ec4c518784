//! Admin web UI sessions (see `migrations/*/0002_web_sessions.sql`).
//!
//! The browser holds a random secret in a cookie; the table holds only its
//! SHA-256, so a database leak yields no usable session. Each session has
//! its own CSRF token that every state-changing form must echo.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::{Result, Store, StoreError, User, ms};
use crate::policy::{SignInMethod, UserId};

/// A new session; `secret` goes into the cookie and is not stored.
#[derive(Debug, Clone)]
pub struct NewWebSession {
    pub secret: String,
    pub csrf: String,
}

/// A live session and its (enabled or not) user.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub user: User,
    pub csrf: String,
    pub sign_in_method: SignInMethod,
    pub expires_at: DateTime<Utc>,
}

/// 32 random bytes, URL-safe base64.
pub fn random_secret() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
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

impl Store {
    /// Starts a session for `user` lasting `ttl`.
    pub async fn create_web_session(
        &self,
        user: UserId,
        method: SignInMethod,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<NewWebSession> {
        let session = NewWebSession {
            secret: random_secret(),
            csrf: random_secret(),
        };
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, csrf, sign_in_method, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash(&session.secret))
        .bind(user.to_string())
        .bind(&session.csrf)
        .bind(method_str(method))
        .bind(ms(now))
        .bind(ms(now + ttl))
        .execute(&self.pool)
        .await?;
        Ok(session)
    }

    /// The session the cookie `secret` names, unless unknown or expired.
    pub async fn web_session(
        &self,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<WebSession>> {
        let row: Option<(String, String, String, i64)> = sqlx::query_as(
            "SELECT user_id, csrf, sign_in_method, expires_at FROM web_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(hash(secret))
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        let Some((user_id, csrf, method, expires)) = row else {
            return Ok(None);
        };
        let user = match self.get_user(UserId(super::parse_uuid(&user_id)?)).await {
            Ok(u) => u,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let sign_in_method = match method.as_str() {
            "password" => SignInMethod::Password,
            "oidc" => SignInMethod::Oidc,
            other => return Err(StoreError::Corrupt(format!("web session method `{other}`"))),
        };
        Ok(Some(WebSession {
            user,
            csrf,
            sign_in_method,
            expires_at: super::from_ms(expires),
        }))
    }

    /// Ends the session (sign-out); unknown secrets are fine.
    pub async fn delete_web_session(&self, secret: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(hash(secret))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of `user` (password change, demotion).
    pub async fn delete_web_sessions_of(&self, user: UserId) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets expired sessions; returns how many.
    pub async fn prune_web_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
