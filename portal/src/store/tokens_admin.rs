//! Listing and revoking tokens, and the admin API token the binary prints
//! at first start. Secrets never leave `create_token`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    IssuedToken, Result, Store, StoreError, from_ms, parse_uuid,
    tokens::{TokenKind, TokenOwner},
};

/// A stored token without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub kind: TokenKind,
    pub owner: TokenOwner,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

fn owner_column(owner: TokenOwner) -> Result<(&'static str, String)> {
    Ok(match owner {
        TokenOwner::User(u) => ("user_id", u.to_string()),
        TokenOwner::ServiceAccount(s) => ("service_account_id", s.to_string()),
        TokenOwner::Site(s) => ("site_id", s.to_string()),
        TokenOwner::Deployment => {
            return Err(StoreError::invalid(
                "owner",
                "deployment tokens are not listed",
            ));
        }
    })
}

type Row = (String, String, i64, Option<i64>, Option<i64>);

impl Store {
    /// Tokens of `kind` owned by `owner`, oldest first, without secrets.
    pub async fn list_tokens(
        &self,
        owner: TokenOwner,
        kind: TokenKind,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TokenRecord>> {
        let (column, value) = owner_column(owner)?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT id, kind, created_at, expires_at, last_used_at FROM tokens \
             WHERE {column} = $1 AND kind = $2 ORDER BY created_at, id LIMIT $3 OFFSET $4"
        ))
        .bind(value)
        .bind(kind.as_str())
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, kind, created, expires, used)| {
                Ok(TokenRecord {
                    id: parse_uuid(&id)?,
                    kind: TokenKind::parse(&kind)?,
                    owner,
                    expires_at: expires.map(from_ms),
                    created_at: from_ms(created),
                    last_used_at: used.map(from_ms),
                })
            })
            .collect()
    }

    /// Deletes token `id` only if `owner` holds it with `kind`; otherwise
    /// `NotFound`, so one owner's path cannot revoke another's token.
    pub async fn revoke_token_of(
        &self,
        owner: TokenOwner,
        kind: TokenKind,
        id: Uuid,
    ) -> Result<()> {
        let (column, value) = owner_column(owner)?;
        let r = sqlx::query(&format!(
            "DELETE FROM tokens WHERE id = $1 AND {column} = $2 AND kind = $3"
        ))
        .bind(id.to_string())
        .bind(value)
        .bind(kind.as_str())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("token"));
        }
        Ok(())
    }

    /// An admin API token for `user`, who must exist and be an admin. The
    /// binary calls this at first start and prints the secret once.
    pub async fn create_admin_api_token(
        &self,
        user: crate::policy::UserId,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken> {
        let u = self.get_user(user).await?;
        if !u.is_admin {
            return Err(StoreError::invalid("user", "is not an admin"));
        }
        if u.disabled {
            return Err(StoreError::invalid("user", "is disabled"));
        }
        if expires_at.is_some_and(|t| t <= now) {
            return Err(StoreError::invalid("expires_at", "is in the past"));
        }
        self.create_token(
            TokenKind::AdminApi,
            TokenOwner::User(user),
            None,
            expires_at,
            now,
        )
        .await
    }
}
