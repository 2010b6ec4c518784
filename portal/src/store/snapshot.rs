//! Building the policy engine's snapshot from the store.

use std::collections::HashMap;

use keyhole_proto::SiteId;

use super::{
    Result, Store, StoreError,
    actors::actor_from_columns,
    clients::{CLIENT_COLUMNS, ClientRow, client_from_row},
    parse_uuid,
    resources::{RESOURCE_COLUMNS, resource_from_row},
};
use crate::policy::{
    Actor, ActorId, Client, GroupId, Policy, PolicyId, ServiceAccountId, Snapshot, UserId,
};

impl Store {
    /// Everything the policy engine needs, read in one transaction so it
    /// is consistent.
    pub async fn load_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.pool.begin().await?;
        let mut s = Snapshot::default();

        let users: Vec<(String, i64)> = sqlx::query_as("SELECT id, disabled FROM users")
            .fetch_all(&mut *tx)
            .await?;
        for (id, disabled) in users {
            s.upsert_actor(Actor {
                id: ActorId::User(UserId(parse_uuid(&id)?)),
                disabled: disabled != 0,
            });
        }
        let sas: Vec<(String, i64)> = sqlx::query_as("SELECT id, disabled FROM service_accounts")
            .fetch_all(&mut *tx)
            .await?;
        for (id, disabled) in sas {
            s.upsert_actor(Actor {
                id: ActorId::ServiceAccount(ServiceAccountId(parse_uuid(&id)?)),
                disabled: disabled != 0,
            });
        }
        let groups: Vec<(String,)> = sqlx::query_as("SELECT id FROM actor_groups")
            .fetch_all(&mut *tx)
            .await?;
        for (id,) in groups {
            s.upsert_group(GroupId(parse_uuid(&id)?));
        }
        let members: Vec<(String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT group_id, user_id, service_account_id FROM memberships")
                .fetch_all(&mut *tx)
                .await?;
        for (group, user, sa) in members {
            let actor = actor_from_columns(user, sa)?;
            s.add_membership(actor, GroupId(parse_uuid(&group)?));
        }

        let links: Vec<(String, String)> =
            sqlx::query_as("SELECT resource_id, site_id FROM resource_sites ORDER BY site_id")
                .fetch_all(&mut *tx)
                .await?;
        let mut sites: HashMap<String, Vec<SiteId>> = HashMap::new();
        for (resource, site) in links {
            sites
                .entry(resource)
                .or_default()
                .push(SiteId(parse_uuid(&site)?));
        }
        let resources: Vec<(String, String, String, Option<String>, String)> =
            sqlx::query_as(&format!("SELECT {RESOURCE_COLUMNS} FROM resources"))
                .fetch_all(&mut *tx)
                .await?;
        for row in resources {
            let site_ids = sites.remove(&row.0).unwrap_or_default();
            s.upsert_resource(resource_from_row(row, site_ids)?);
        }

        let policies: Vec<(String, String, String, i64, String)> =
            sqlx::query_as("SELECT id, group_id, resource_id, enabled, conditions FROM policies")
                .fetch_all(&mut *tx)
                .await?;
        for (id, group, resource, enabled, conditions) in policies {
            s.upsert_policy(Policy {
                id: PolicyId(parse_uuid(&id)?),
                group_id: GroupId(parse_uuid(&group)?),
                resource_id: keyhole_proto::ResourceId(parse_uuid(&resource)?),
                enabled: enabled != 0,
                conditions: serde_json::from_str(&conditions)
                    .map_err(|e| StoreError::Corrupt(format!("conditions of policy {id}: {e}")))?,
            });
        }

        let clients: Vec<ClientRow> =
            sqlx::query_as(&format!("SELECT {CLIENT_COLUMNS} FROM clients"))
                .fetch_all(&mut *tx)
                .await?;
        for row in clients {
            let c = client_from_row(row)?;
            s.upsert_client(Client {
                id: c.id,
                owner: c.owner,
                disabled: c.disabled,
            });
        }
        tx.commit().await?;
        Ok(s)
    }
}
