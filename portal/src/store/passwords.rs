//! Admin passwords and one-time sign-in links, kept in `settings` under
//! the keys `server_bootstrap` defines (argon2id PHC strings; links by
//! SHA-256).

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreError, User, ms, parse_uuid};
use crate::{
    policy::UserId,
    server_bootstrap::{password_hash_key, sign_in_link_key},
};

impl Store {
    /// The user with this e-mail (compared lower-cased, as stored).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE email = $1")
            .bind(email.trim().to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some((id,)) => match self.get_user(UserId(parse_uuid(&id)?)).await {
                Ok(u) => Ok(Some(u)),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// The user's argon2id hash, if they have a password.
    pub async fn password_hash(&self, user: &User) -> Result<Option<String>> {
        self.get_setting(&password_hash_key(user)).await
    }

    /// Sets (or replaces) the user's password hash.
    pub async fn set_password_hash(&self, user: &User, phc: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(password_hash_key(user))
        .bind(phc)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses up a one-time sign-in link: the user it was for, if it exists
    /// and has not expired. A link works once, expired or not.
    pub async fn consume_sign_in_link(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>> {
        let key = sign_in_link_key(token);
        let mut tx = self.pool.begin().await?;
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((value,)) = row else {
            return Ok(None);
        };
        let deleted = sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // A concurrent use got there first.
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        let (user, expires) = value
            .split_once(' ')
            .ok_or_else(|| StoreError::Corrupt("sign-in link value".into()))?;
        let expires: i64 = expires
            .parse()
            .map_err(|_| StoreError::Corrupt("sign-in link expiry".into()))?;
        if expires <= ms(now) {
            return Ok(None);
        }
        Ok(Some(UserId(parse_uuid(user)?)))
    }
}
