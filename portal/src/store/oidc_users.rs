//! Users who sign in through OIDC: created on first sign-in, and their
//! group memberships kept equal to the provider's groups claim.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{Result, Store, User, UserUpdate, parse_uuid};
use crate::policy::GroupId;

/// What an OIDC sign-in changed, so the caller can publish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSync {
    pub user: User,
    pub created: bool,
    /// Groups the user joined or left.
    pub changed_groups: Vec<GroupId>,
}

impl Store {
    /// Finds or creates the user with `email` and makes their memberships
    /// match `groups` (Keyhole groups by name; names without a Keyhole
    /// group are ignored). `admin`: `Some` sets the admin flag (the
    /// deployment maps an admin group), `None` leaves it.
    pub async fn sync_oidc_user(
        &self,
        email: &str,
        name: &str,
        groups: &[String],
        admin: Option<bool>,
        now: DateTime<Utc>,
    ) -> Result<OidcSync> {
        let (mut user, created) = match self.user_by_email(email).await? {
            Some(u) => (u, false),
            None => (
                self.create_user(email, name, admin.unwrap_or(false), now)
                    .await?,
                true,
            ),
        };
        if let Some(a) = admin.filter(|a| *a != user.is_admin) {
            user = self
                .update_user(
                    user.id,
                    UserUpdate {
                        is_admin: Some(a),
                        ..UserUpdate::default()
                    },
                )
                .await?;
        }
        let wanted: BTreeSet<&str> = groups.iter().map(String::as_str).collect();
        let mut tx = self.pool.begin().await?;
        let all: Vec<(String, String)> = sqlx::query_as("SELECT id, name FROM actor_groups")
            .fetch_all(&mut *tx)
            .await?;
        let current: Vec<(String,)> =
            sqlx::query_as("SELECT group_id FROM memberships WHERE user_id = $1")
                .bind(user.id.to_string())
                .fetch_all(&mut *tx)
                .await?;
        let current: BTreeSet<String> = current.into_iter().map(|(g,)| g).collect();
        let target: BTreeSet<String> = all
            .into_iter()
            .filter(|(_, n)| wanted.contains(n.as_str()))
            .map(|(id, _)| id)
            .collect();
        let mut changed_groups = Vec::new();
        for g in current.difference(&target) {
            sqlx::query("DELETE FROM memberships WHERE group_id = $1 AND user_id = $2")
                .bind(g)
                .bind(user.id.to_string())
                .execute(&mut *tx)
                .await?;
            changed_groups.push(GroupId(parse_uuid(g)?));
        }
        for g in target.difference(&current) {
            sqlx::query(
                "INSERT INTO memberships (group_id, user_id, service_account_id) VALUES ($1, $2, NULL)",
            )
            .bind(g)
            .bind(user.id.to_string())
            .execute(&mut *tx)
            .await?;
            changed_groups.push(GroupId(parse_uuid(g)?));
        }
        tx.commit().await?;
        Ok(OidcSync {
            user,
            created,
            changed_groups,
        })
    }
}
