//! Client devices.

use chrono::{DateTime, Utc};
use keyhole_proto::{ClientId, PublicKey, TunnelAddresses};

use super::{
    Result, Store, StoreError,
    actors::{actor_columns, actor_from_columns, check_name},
    flag, from_ms, ms,
    network::allocate_tunnel_addresses,
    parse_uuid,
};
use crate::policy::ActorId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: ClientId,
    pub owner: ActorId,
    pub name: String,
    pub public_key: PublicKey,
    pub tunnel: TunnelAddresses,
    pub disabled: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

pub(super) type ClientRow = (
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

pub(super) const CLIENT_COLUMNS: &str =
    "id, user_id, service_account_id, name, public_key, ipv4, ipv6, disabled, last_seen_at";

pub(super) fn client_from_row(r: ClientRow) -> Result<ClientRecord> {
    let (id, user, sa, name, key, v4, v6, disabled, seen) = r;
    let corrupt = |what: &str| StoreError::Corrupt(format!("client {id}: bad {what}"));
    Ok(ClientRecord {
        id: ClientId(parse_uuid(&id)?),
        owner: actor_from_columns(user, sa)?,
        name,
        public_key: key.parse().map_err(|_| corrupt("public key"))?,
        tunnel: TunnelAddresses::new(
            v4.parse().map_err(|_| corrupt("ipv4"))?,
            v6.parse().map_err(|_| corrupt("ipv6"))?,
        )
        .map_err(StoreError::Corrupt)?,
        disabled: disabled != 0,
        last_seen_at: seen.map(from_ms),
    })
}

impl Store {
    /// A connecting client: known by its public key (then it must belong
    /// to `owner`), or new (then it gets tunnel addresses).
    pub async fn register_client(
        &self,
        owner: ActorId,
        name: &str,
        public_key: PublicKey,
        now: DateTime<Utc>,
    ) -> Result<ClientRecord> {
        check_name("name", name)?;
        let (user, sa) = actor_columns(owner);
        let mut tx = self.pool.begin().await?;
        let existing: Option<ClientRow> = sqlx::query_as(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE public_key = $1"
        ))
        .bind(public_key.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let id = match existing.map(client_from_row).transpose()? {
            Some(c) if c.owner != owner => {
                return Err(StoreError::Conflict(
                    "this public key belongs to another owner's client".into(),
                ));
            }
            Some(c) => {
                sqlx::query("UPDATE clients SET name = $1, last_seen_at = $2 WHERE id = $3")
                    .bind(name)
                    .bind(ms(now))
                    .bind(c.id.to_string())
                    .execute(&mut *tx)
                    .await?;
                c.id
            }
            None => {
                let tunnel = allocate_tunnel_addresses(&mut tx, now).await?;
                let id = ClientId::new_random();
                sqlx::query(
                    "INSERT INTO clients (id, user_id, service_account_id, name, public_key, ipv4, \
                     ipv6, disabled, last_seen_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
                )
                .bind(id.to_string())
                .bind(user)
                .bind(sa)
                .bind(name)
                .bind(public_key.to_string())
                .bind(tunnel.ipv4.to_string())
                .bind(tunnel.ipv6.to_string())
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let row: ClientRow = sqlx::query_as(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        client_from_row(row)
    }

    pub async fn get_client(&self, id: ClientId) -> Result<ClientRecord> {
        let row: Option<ClientRow> = sqlx::query_as(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        client_from_row(row.ok_or(StoreError::not_found("client"))?)
    }

    pub async fn set_client_disabled(&self, id: ClientId, disabled: bool) -> Result<()> {
        let r = sqlx::query("UPDATE clients SET disabled = $1 WHERE id = $2")
            .bind(flag(disabled))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("client"));
        }
        Ok(())
    }

    pub async fn delete_client(&self, id: ClientId) -> Result<()> {
        let r = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("client"));
        }
        Ok(())
    }
}
