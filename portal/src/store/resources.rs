//! Resources (with their sites) and policies.

use chrono::{DateTime, Utc};
use keyhole_proto::{
    DnsPattern, Filter, Resource, ResourceAddress, ResourceId, ResourceName, SiteId,
};
use sqlx::{Any, Transaction};

use super::{Result, Store, StoreError, flag, from_ms, ms, parse_uuid};
use crate::policy::{Conditions, GroupId, Policy, PolicyId};

/// A resource as created or updated through the API.
#[derive(Debug, Clone)]
pub struct NewResource {
    pub name: ResourceName,
    pub address: ResourceAddress,
    pub filters: Vec<Filter>,
    pub site_ids: Vec<SiteId>,
}

#[derive(Debug, Clone)]
pub struct NewPolicy {
    pub group_id: GroupId,
    pub resource_id: ResourceId,
    pub enabled: bool,
    pub conditions: Conditions,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub policy: Policy,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

fn address_columns(a: &ResourceAddress) -> (&'static str, Option<String>) {
    match a {
        ResourceAddress::Dns { pattern } => ("dns", Some(pattern.to_string())),
        ResourceAddress::Ip { ip } => ("ip", Some(ip.to_string())),
        ResourceAddress::Cidr { cidr } => ("cidr", Some(cidr.to_string())),
        ResourceAddress::Internet => ("internet", None),
    }
}

fn address_from_columns(kind: &str, value: Option<&str>) -> Result<ResourceAddress> {
    let bad = || StoreError::Corrupt(format!("resource address {kind} {value:?}"));
    Ok(match (kind, value) {
        ("dns", Some(v)) => ResourceAddress::Dns {
            pattern: DnsPattern::parse(v).map_err(|_| bad())?,
        },
        ("ip", Some(v)) => ResourceAddress::Ip {
            ip: v.parse().map_err(|_| bad())?,
        },
        ("cidr", Some(v)) => ResourceAddress::Cidr {
            cidr: v.parse().map_err(|_| bad())?,
        },
        ("internet", None) => ResourceAddress::Internet,
        _ => return Err(bad()),
    })
}

pub(super) type ResourceRow = (String, String, String, Option<String>, String);

pub(super) async fn site_ids_of(
    tx: &mut Transaction<'static, Any>,
    id: &str,
) -> Result<Vec<SiteId>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT site_id FROM resource_sites WHERE resource_id = $1 ORDER BY site_id",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(|(s,)| Ok(SiteId(parse_uuid(s)?))).collect()
}

pub(super) fn resource_from_row(
    (id, name, kind, address, filters): ResourceRow,
    site_ids: Vec<SiteId>,
) -> Result<Resource> {
    Ok(Resource {
        id: ResourceId(parse_uuid(&id)?),
        name: ResourceName::try_from(name).map_err(StoreError::Corrupt)?,
        address: address_from_columns(&kind, address.as_deref())?,
        filters: serde_json::from_str(&filters)
            .map_err(|e| StoreError::Corrupt(format!("filters of resource {id}: {e}")))?,
        site_ids,
    })
}

pub(super) const RESOURCE_COLUMNS: &str = "id, name, address_kind, address, filters";

/// Replace a resource's site links; an unknown site is a 4xx, not a 500.
async fn set_sites(tx: &mut Transaction<'static, Any>, id: &str, sites: &[SiteId]) -> Result<()> {
    sqlx::query("DELETE FROM resource_sites WHERE resource_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let mut seen = std::collections::BTreeSet::new();
    for site in sites.iter().filter(|s| seen.insert(**s)) {
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM sites WHERE id = $1")
            .bind(site.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::invalid("site_ids", format!("no site {site}")));
        }
        sqlx::query("INSERT INTO resource_sites (resource_id, site_id) VALUES ($1, $2)")
            .bind(id)
            .bind(site.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn filters_json(filters: &[Filter]) -> Result<String> {
    serde_json::to_string(filters).map_err(|e| StoreError::invalid("filters", e.to_string()))
}

impl Store {
    pub async fn create_resource(&self, new: NewResource, now: DateTime<Utc>) -> Result<Resource> {
        let id = ResourceId::new_random();
        let (kind, address) = address_columns(&new.address);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO resources (id, name, address_kind, address, filters, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(new.name.as_str())
        .bind(kind)
        .bind(address)
        .bind(filters_json(&new.filters)?)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        set_sites(&mut tx, &id.to_string(), &new.site_ids).await?;
        let sites = site_ids_of(&mut tx, &id.to_string()).await?;
        tx.commit().await?;
        Ok(Resource {
            id,
            name: new.name,
            address: new.address,
            filters: new.filters,
            site_ids: sites,
        })
    }

    pub async fn update_resource(&self, id: ResourceId, new: NewResource) -> Result<Resource> {
        let (kind, address) = address_columns(&new.address);
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE resources SET name = $1, address_kind = $2, address = $3, filters = $4 \
             WHERE id = $5",
        )
        .bind(new.name.as_str())
        .bind(kind)
        .bind(address)
        .bind(filters_json(&new.filters)?)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("resource"));
        }
        set_sites(&mut tx, &id.to_string(), &new.site_ids).await?;
        let sites = site_ids_of(&mut tx, &id.to_string()).await?;
        tx.commit().await?;
        Ok(Resource {
            id,
            name: new.name,
            address: new.address,
            filters: new.filters,
            site_ids: sites,
        })
    }

    pub async fn get_resource(&self, id: ResourceId) -> Result<Resource> {
        let mut tx = self.pool.begin().await?;
        let row: Option<ResourceRow> = sqlx::query_as(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(StoreError::not_found("resource"))?;
        let sites = site_ids_of(&mut tx, &row.0).await?;
        tx.commit().await?;
        resource_from_row(row, sites)
    }

    /// Deletes the resource with its policies and site links.
    pub async fn delete_resource(&self, id: ResourceId) -> Result<()> {
        let r = sqlx::query("DELETE FROM resources WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("resource"));
        }
        Ok(())
    }

    pub async fn create_policy(&self, new: NewPolicy, now: DateTime<Utc>) -> Result<PolicyRecord> {
        let id = PolicyId::new_random();
        let conditions = serde_json::to_string(&new.conditions)
            .map_err(|e| StoreError::invalid("conditions", e.to_string()))?;
        let mut tx = self.pool.begin().await?;
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
            "INSERT INTO policies (id, group_id, resource_id, enabled, conditions, description, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(new.group_id.to_string())
        .bind(new.resource_id.to_string())
        .bind(flag(new.enabled))
        .bind(conditions)
        .bind(&new.description)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PolicyRecord {
            policy: Policy {
                id,
                group_id: new.group_id,
                resource_id: new.resource_id,
                enabled: new.enabled,
                conditions: new.conditions,
            },
            description: new.description,
            created_at: from_ms(ms(now)),
        })
    }

    pub async fn set_policy_enabled(&self, id: PolicyId, enabled: bool) -> Result<()> {
        let r = sqlx::query("UPDATE policies SET enabled = $1 WHERE id = $2")
            .bind(flag(enabled))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("policy"));
        }
        Ok(())
    }

    pub async fn delete_policy(&self, id: PolicyId) -> Result<()> {
        let r = sqlx::query("DELETE FROM policies WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("policy"));
        }
        Ok(())
    }
}
