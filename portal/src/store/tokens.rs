//! Bearer tokens: random secrets shown once, stored as SHA-256 hashes.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use keyhole_proto::SiteId;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Result, Store, StoreError, from_ms, ms, parse_uuid};
use crate::policy::{ServiceAccountId, SignInMethod, UserId};

/// Prefix of every token, so leaked ones are easy to grep for.
pub const TOKEN_PREFIX: &str = "kh_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// REST API access for an admin user.
    AdminApi,
    /// Headless client sign-in for a service account.
    ServiceAccount,
    /// A signed-in client's session (user or service account).
    ClientSession,
    /// Lets gateways join a site.
    Gateway,
    /// Lets relays register.
    Relay,
}

impl TokenKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::AdminApi => "admin_api",
            Self::ServiceAccount => "service_account",
            Self::ClientSession => "client_session",
            Self::Gateway => "gateway",
            Self::Relay => "relay",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "admin_api" => Self::AdminApi,
            "service_account" => Self::ServiceAccount,
            "client_session" => Self::ClientSession,
            "gateway" => Self::Gateway,
            "relay" => Self::Relay,
            other => return Err(StoreError::Corrupt(format!("token kind `{other}`"))),
        })
    }
}

/// Whom a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOwner {
    User(UserId),
    ServiceAccount(ServiceAccountId),
    Site(SiteId),
    /// Relay tokens belong to the deployment.
    Deployment,
}

/// A freshly created token: the secret is only ever available here.
pub struct IssuedToken {
    pub id: Uuid,
    pub secret: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: Uuid,
    pub kind: TokenKind,
    pub owner: TokenOwner,
    pub sign_in_method: Option<SignInMethod>,
    pub expires_at: Option<DateTime<Utc>>,
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sign_in_str(m: SignInMethod) -> &'static str {
    match m {
        SignInMethod::Password => "password",
        SignInMethod::Oidc => "oidc",
        SignInMethod::ServiceToken => "service_token",
    }
}

fn parse_sign_in(s: &str) -> Result<SignInMethod> {
    Ok(match s {
        "password" => SignInMethod::Password,
        "oidc" => SignInMethod::Oidc,
        "service_token" => SignInMethod::ServiceToken,
        other => return Err(StoreError::Corrupt(format!("sign-in method `{other}`"))),
    })
}

type TokenRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

impl Store {
    /// Create a token; the returned secret is not stored anywhere.
    pub async fn create_token(
        &self,
        kind: TokenKind,
        owner: TokenOwner,
        sign_in_method: Option<SignInMethod>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken> {
        let (user, sa, site) = match (kind, owner) {
            (TokenKind::AdminApi, TokenOwner::User(u)) => (Some(u.0), None, None),
            (TokenKind::ServiceAccount, TokenOwner::ServiceAccount(s)) => (None, Some(s.0), None),
            (TokenKind::ClientSession, TokenOwner::User(u)) => (Some(u.0), None, None),
            (TokenKind::ClientSession, TokenOwner::ServiceAccount(s)) => (None, Some(s.0), None),
            (TokenKind::Gateway, TokenOwner::Site(s)) => (None, None, Some(s.0)),
            (TokenKind::Relay, TokenOwner::Deployment) => (None, None, None),
            _ => return Err(StoreError::invalid("owner", "does not fit the token kind")),
        };
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO tokens (id, kind, token_hash, user_id, service_account_id, site_id, \
             sign_in_method, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.to_string())
        .bind(kind.as_str())
        .bind(hash(&secret))
        .bind(user.map(|u| u.to_string()))
        .bind(sa.map(|u| u.to_string()))
        .bind(site.map(|u| u.to_string()))
        .bind(sign_in_method.map(sign_in_str))
        .bind(expires_at.map(ms))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(IssuedToken { id, secret })
    }

    /// The grant of a presented secret, or `None` if unknown or expired.
    pub async fn verify_token(
        &self,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenInfo>> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, kind, user_id, service_account_id, site_id, sign_in_method, expires_at \
             FROM tokens WHERE token_hash = $1",
        )
        .bind(hash(secret))
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, kind, user, sa, site, method, expires)) = row else {
            return Ok(None);
        };
        let expires_at = expires.map(from_ms);
        if expires_at.is_some_and(|t| t <= now) {
            return Ok(None);
        }
        let owner = match (user, sa, site) {
            (Some(u), None, None) => TokenOwner::User(UserId(parse_uuid(&u)?)),
            (None, Some(s), None) => TokenOwner::ServiceAccount(ServiceAccountId(parse_uuid(&s)?)),
            (None, None, Some(s)) => TokenOwner::Site(SiteId(parse_uuid(&s)?)),
            (None, None, None) => TokenOwner::Deployment,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "token {id} has several owners"
                )));
            }
        };
        Ok(Some(TokenInfo {
            id: parse_uuid(&id)?,
            kind: TokenKind::parse(&kind)?,
            owner,
            sign_in_method: method.as_deref().map(parse_sign_in).transpose()?,
            expires_at,
        }))
    }

    pub async fn delete_token(&self, id: Uuid) -> Result<()> {
        let r = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("token"));
        }
        Ok(())
    }
}
