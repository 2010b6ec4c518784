//! Users, service accounts, groups and memberships.

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreError, flag, from_ms, ms, parse_uuid};
use crate::policy::{ActorId, GroupId, ServiceAccountId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: ServiceAccountId,
    pub name: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub(super) fn check_name(field: &'static str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if name.chars().count() > 255 {
        return Err(StoreError::invalid(field, "must be at most 255 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// (user_id, service_account_id) columns for an actor.
pub(super) fn actor_columns(actor: ActorId) -> (Option<String>, Option<String>) {
    match actor {
        ActorId::User(u) => (Some(u.to_string()), None),
        ActorId::ServiceAccount(s) => (None, Some(s.to_string())),
    }
}

pub(super) fn actor_from_columns(user: Option<String>, sa: Option<String>) -> Result<ActorId> {
    match (user, sa) {
        (Some(u), None) => Ok(ActorId::User(UserId(parse_uuid(&u)?))),
        (None, Some(s)) => Ok(ActorId::ServiceAccount(ServiceAccountId(parse_uuid(&s)?))),
        _ => Err(StoreError::Corrupt("row with zero or two owners".into())),
    }
}

type UserRow = (String, String, String, i64, i64, i64);

fn user_from_row((id, email, name, admin, disabled, created): UserRow) -> Result<User> {
    Ok(User {
        id: UserId(parse_uuid(&id)?),
        email,
        name,
        is_admin: admin != 0,
        disabled: disabled != 0,
        created_at: from_ms(created),
    })
}

impl Store {
    pub async fn create_user(
        &self,
        email: &str,
        name: &str,
        is_admin: bool,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let email = email.trim().to_ascii_lowercase();
        if email.len() > 254
            || !email.contains('@')
            || email.starts_with('@')
            || email.ends_with('@')
        {
            return Err(StoreError::invalid("email", "is not an email address"));
        }
        check_name("name", name)?;
        let user = User {
            id: UserId::new_random(),
            email,
            name: name.to_owned(),
            is_admin,
            disabled: false,
            created_at: from_ms(ms(now)),
        };
        sqlx::query(
            "INSERT INTO users (id, email, name, is_admin, disabled, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(user.id.to_string())
        .bind(&user.email)
        .bind(&user.name)
        .bind(flag(is_admin))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(user)
    }

    pub async fn get_user(&self, id: UserId) -> Result<User> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, email, name, is_admin, disabled, created_at FROM users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        user_from_row(row.ok_or(StoreError::not_found("user"))?)
    }

    /// Users ordered by email, `limit` at a time after `offset`.
    pub async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT id, email, name, is_admin, disabled, created_at FROM users \
             ORDER BY email LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(user_from_row).collect()
    }

    pub async fn set_user_disabled(&self, id: UserId, disabled: bool) -> Result<()> {
        let r = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(flag(disabled))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("user"));
        }
        Ok(())
    }

    /// Deletes the user with its memberships, clients and tokens.
    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let r = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("user"));
        }
        Ok(())
    }

    pub async fn create_service_account(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<ServiceAccount> {
        check_name("name", name)?;
        let sa = ServiceAccount {
            id: ServiceAccountId::new_random(),
            name: name.to_owned(),
            disabled: false,
            created_at: from_ms(ms(now)),
        };
        sqlx::query(
            "INSERT INTO service_accounts (id, name, disabled, created_at) VALUES ($1, $2, 0, $3)",
        )
        .bind(sa.id.to_string())
        .bind(&sa.name)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(sa)
    }

    pub async fn set_service_account_disabled(
        &self,
        id: ServiceAccountId,
        disabled: bool,
    ) -> Result<()> {
        let r = sqlx::query("UPDATE service_accounts SET disabled = $1 WHERE id = $2")
            .bind(flag(disabled))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("service account"));
        }
        Ok(())
    }

    pub async fn delete_service_account(&self, id: ServiceAccountId) -> Result<()> {
        let r = sqlx::query("DELETE FROM service_accounts WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("service account"));
        }
        Ok(())
    }

    pub async fn create_group(&self, name: &str, now: DateTime<Utc>) -> Result<Group> {
        check_name("name", name)?;
        let g = Group {
            id: GroupId::new_random(),
            name: name.to_owned(),
            created_at: from_ms(ms(now)),
        };
        sqlx::query("INSERT INTO actor_groups (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(g.id.to_string())
            .bind(&g.name)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(g)
    }

    /// Deletes the group with its memberships and policies.
    pub async fn delete_group(&self, id: GroupId) -> Result<()> {
        let r = sqlx::query("DELETE FROM actor_groups WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("group"));
        }
        Ok(())
    }

    /// Adds a member; adding one twice is not an error.
    pub async fn add_member(&self, group: GroupId, actor: ActorId) -> Result<()> {
        let (user, sa) = actor_columns(actor);
        let mut tx = self.pool.begin().await?;
        let exists: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM memberships WHERE group_id = $1 \
             AND (user_id = $2 OR service_account_id = $3)",
        )
        .bind(group.to_string())
        .bind(user.clone())
        .bind(sa.clone())
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            sqlx::query(
                "INSERT INTO memberships (group_id, user_id, service_account_id) VALUES ($1, $2, $3)",
            )
            .bind(group.to_string())
            .bind(user)
            .bind(sa)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn remove_member(&self, group: GroupId, actor: ActorId) -> Result<()> {
        let (user, sa) = actor_columns(actor);
        let r = sqlx::query(
            "DELETE FROM memberships WHERE group_id = $1 AND (user_id = $2 OR service_account_id = $3)",
        )
        .bind(group.to_string())
        .bind(user)
        .bind(sa)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("membership"));
        }
        Ok(())
    }
}
