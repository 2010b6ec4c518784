//! Admin reads of resources and policies, and policy updates.

use keyhole_proto::{Resource, ResourceId};

use super::{
    NewPolicy, PolicyRecord, Result, Store, StoreError, flag, from_ms, parse_uuid,
    resources::{RESOURCE_COLUMNS, ResourceRow, resource_from_row, site_ids_of},
};
use crate::policy::{GroupId, Policy, PolicyId};

type PolicyRow = (String, String, String, i64, String, String, i64);

const POLICY_COLUMNS: &str =
    "id, group_id, resource_id, enabled, conditions, description, created_at";

fn policy_from_row(
    (id, group, resource, enabled, conditions, description, created): PolicyRow,
) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        policy: Policy {
            id: PolicyId(parse_uuid(&id)?),
            group_id: GroupId(parse_uuid(&group)?),
            resource_id: ResourceId(parse_uuid(&resource)?),
            enabled: enabled != 0,
            conditions: serde_json::from_str(&conditions)
                .map_err(|e| StoreError::Corrupt(format!("conditions of policy {id}: {e}")))?,
        },
        description,
        created_at: from_ms(created),
    })
}

/// Which policies to list; `None` matches any.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyFilter {
    pub group_id: Option<GroupId>,
    pub resource_id: Option<ResourceId>,
}

impl Store {
    /// Resources ordered by name then id, with their sites, read in one
    /// transaction.
    pub async fn list_resources(&self, limit: i64, offset: i64) -> Result<Vec<Resource>> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<ResourceRow> = sqlx::query_as(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY name, id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let sites = site_ids_of(&mut tx, &row.0).await?;
            out.push(resource_from_row(row, sites)?);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn get_policy(&self, id: PolicyId) -> Result<PolicyRecord> {
        let row: Option<PolicyRow> = sqlx::query_as(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        policy_from_row(row.ok_or(StoreError::not_found("policy"))?)
    }

    /// Policies ordered by creation then id.
    pub async fn list_policies(
        &self,
        filter: PolicyFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<PolicyRecord>> {
        let rows: Vec<PolicyRow> = sqlx::query_as(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies \
             WHERE ($1 IS NULL OR group_id = $1) AND ($2 IS NULL OR resource_id = $2) \
             ORDER BY created_at, id LIMIT $3 OFFSET $4"
        ))
        .bind(filter.group_id.map(|g| g.to_string()))
        .bind(filter.resource_id.map(|r| r.to_string()))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(policy_from_row).collect()
    }

    /// Replaces a policy; the group and resource must exist.
    pub async fn update_policy(&self, id: PolicyId, new: NewPolicy) -> Result<PolicyRecord> {
        let conditions = serde_json::to_string(&new.conditions)
            .map_err(|e| StoreError::invalid("conditions", e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM policies WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found("policy"));
        }
        for (table, field, value) in [
            ("actor_groups", "group_id", new.group_id.to_string()),
            ("resources", "resource_id", new.resource_id.to_string()),
        ] {
            let exists: Option<(i64,)> =
                sqlx::query_as(&format!("SELECT 1 FROM {table} WHERE id = $1"))
                    .bind(&value)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::invalid(field, format!("no such id {value}")));
            }
        }
        sqlx::query(
            "UPDATE policies SET group_id = $1, resource_id = $2, enabled = $3, conditions = $4, \
             description = $5 WHERE id = $6",
        )
        .bind(new.group_id.to_string())
        .bind(new.resource_id.to_string())
        .bind(flag(new.enabled))
        .bind(conditions)
        .bind(&new.description)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        let row: PolicyRow = sqlx::query_as(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        policy_from_row(row)
    }
}
