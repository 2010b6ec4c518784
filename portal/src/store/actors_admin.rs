//! Admin reads and updates of users, service accounts, groups and
//! memberships (what the REST API needs beyond `actors.rs`).

use super::{
    Result, Store, StoreError, User,
    actors::{Group, ServiceAccount, actor_from_columns, check_name},
    flag, from_ms, parse_uuid,
};
use crate::policy::{ActorId, GroupId, ServiceAccountId, UserId};

/// Fields of a user an admin may change; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub is_admin: Option<bool>,
    pub disabled: Option<bool>,
}

type SaRow = (String, String, i64, i64);

fn sa_from_row((id, name, disabled, created): SaRow) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: ServiceAccountId(parse_uuid(&id)?),
        name,
        disabled: disabled != 0,
        created_at: from_ms(created),
    })
}

fn group_from_row((id, name, created): (String, String, i64)) -> Result<Group> {
    Ok(Group {
        id: GroupId(parse_uuid(&id)?),
        name,
        created_at: from_ms(created),
    })
}

impl Store {
    /// Applies `update` in one transaction and returns the user as stored.
    pub async fn update_user(&self, id: UserId, update: UserUpdate) -> Result<User> {
        if let Some(name) = &update.name {
            check_name("name", name)?;
        }
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE users SET name = COALESCE($1, name), is_admin = COALESCE($2, is_admin), \
             disabled = COALESCE($3, disabled) WHERE id = $4",
        )
        .bind(update.name)
        .bind(update.is_admin.map(flag))
        .bind(update.disabled.map(flag))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("user"));
        }
        tx.commit().await?;
        self.get_user(id).await
    }

    pub async fn count_users(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    pub async fn get_service_account(&self, id: ServiceAccountId) -> Result<ServiceAccount> {
        let row: Option<SaRow> = sqlx::query_as(
            "SELECT id, name, disabled, created_at FROM service_accounts WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        sa_from_row(row.ok_or(StoreError::not_found("service account"))?)
    }

    /// Service accounts ordered by name (unique), `limit` after `offset`.
    pub async fn list_service_accounts(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<ServiceAccount>> {
        let rows: Vec<SaRow> = sqlx::query_as(
            "SELECT id, name, disabled, created_at FROM service_accounts \
             ORDER BY name LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(sa_from_row).collect()
    }

    pub async fn update_service_account(
        &self,
        id: ServiceAccountId,
        name: Option<String>,
        disabled: Option<bool>,
    ) -> Result<ServiceAccount> {
        if let Some(name) = &name {
            check_name("name", name)?;
        }
        let r = sqlx::query(
            "UPDATE service_accounts SET name = COALESCE($1, name), \
             disabled = COALESCE($2, disabled) WHERE id = $3",
        )
        .bind(name)
        .bind(disabled.map(flag))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("service account"));
        }
        self.get_service_account(id).await
    }

    pub async fn get_group(&self, id: GroupId) -> Result<Group> {
        let row: Option<(String, String, i64)> =
            sqlx::query_as("SELECT id, name, created_at FROM actor_groups WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        group_from_row(row.ok_or(StoreError::not_found("group"))?)
    }

    /// Groups ordered by name (unique), `limit` after `offset`.
    pub async fn list_groups(&self, limit: i64, offset: i64) -> Result<Vec<Group>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, name, created_at FROM actor_groups ORDER BY name LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(group_from_row).collect()
    }

    pub async fn rename_group(&self, id: GroupId, name: &str) -> Result<Group> {
        check_name("name", name)?;
        let r = sqlx::query("UPDATE actor_groups SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("group"));
        }
        self.get_group(id).await
    }

    /// Members of a group (users first, then service accounts, each by id).
    pub async fn list_members(
        &self,
        group: GroupId,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<ActorId>> {
        let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT user_id, service_account_id FROM memberships WHERE group_id = $1 \
             ORDER BY CASE WHEN user_id IS NULL THEN 1 ELSE 0 END, \
             COALESCE(user_id, service_account_id) \
             LIMIT $2 OFFSET $3",
        )
        .bind(group.to_string())
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(u, s)| actor_from_columns(u, s))
            .collect()
    }

    /// Adds `actor` to `group`, checking both exist first so that an unknown
    /// group is `NotFound` and an unknown actor is `Invalid { field: "id" }`.
    pub async fn add_member_checked(&self, group: GroupId, actor: ActorId) -> Result<()> {
        self.get_group(group).await?;
        let exists = match actor {
            ActorId::User(u) => self.get_user(u).await.map(|_| ()),
            ActorId::ServiceAccount(s) => self.get_service_account(s).await.map(|_| ()),
        };
        match exists {
            Err(StoreError::NotFound { entity }) => {
                Err(StoreError::invalid("id", format!("no such {entity}")))
            }
            other => other,
        }?;
        // A concurrent delete between the checks and the insert still fails
        // cleanly through the foreign keys.
        self.add_member(group, actor).await
    }
}
