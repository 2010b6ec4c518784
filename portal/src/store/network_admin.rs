//! Admin reads of sites, gateways and relays beyond `network.rs`.

use keyhole_proto::{GatewayId, RelayId, SiteId};

use super::{
    Result, Site, Store, StoreError,
    actors::check_name,
    from_ms,
    network::{GATEWAY_COLUMNS, GatewayRecord, GatewayRow, RelayRecord, gateway_from_row, parse},
    parse_uuid,
};

type RelayRow = (String, Option<String>, Option<String>, i64, i64);

impl Store {
    pub async fn get_site(&self, id: SiteId) -> Result<Site> {
        let row: Option<(String, String, i64)> =
            sqlx::query_as("SELECT id, name, created_at FROM sites WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let (id, name, created) = row.ok_or(StoreError::not_found("site"))?;
        Ok(Site {
            id: SiteId(parse_uuid(&id)?),
            name,
            created_at: from_ms(created),
        })
    }

    /// Sites ordered by name (unique), `limit` after `offset`.
    pub async fn list_sites_page(&self, limit: i64, offset: i64) -> Result<Vec<Site>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, name, created_at FROM sites ORDER BY name LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, name, created)| {
                Ok(Site {
                    id: SiteId(parse_uuid(&id)?),
                    name,
                    created_at: from_ms(created),
                })
            })
            .collect()
    }

    pub async fn rename_site(&self, id: SiteId, name: &str) -> Result<Site> {
        check_name("name", name)?;
        let r = sqlx::query("UPDATE sites SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("site"));
        }
        self.get_site(id).await
    }

    pub async fn get_gateway(&self, id: GatewayId) -> Result<GatewayRecord> {
        let row: Option<GatewayRow> = sqlx::query_as(&format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        gateway_from_row(row.ok_or(StoreError::not_found("gateway"))?)
    }

    /// Gateways (of one site, or all) ordered by name then id.
    pub async fn list_gateways_page(
        &self,
        site: Option<SiteId>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<GatewayRecord>> {
        let rows: Vec<GatewayRow> = sqlx::query_as(&format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE ($1 IS NULL OR site_id = $1) \
             ORDER BY name, id LIMIT $2 OFFSET $3"
        ))
        .bind(site.map(|s| s.to_string()))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(gateway_from_row).collect()
    }

    /// Forgets a gateway; its tunnel addresses stay allocated (never reused).
    pub async fn delete_gateway(&self, id: GatewayId) -> Result<()> {
        let r = sqlx::query("DELETE FROM gateways WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("gateway"));
        }
        Ok(())
    }

    /// Relays ordered by creation then id.
    pub async fn list_relays(&self, limit: i64, offset: i64) -> Result<Vec<RelayRecord>> {
        let rows: Vec<RelayRow> = sqlx::query_as(
            "SELECT id, public_ipv4, public_ipv6, port, online FROM relays \
             ORDER BY created_at, id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, v4, v6, port, online)| {
                Ok(RelayRecord {
                    id: RelayId(parse_uuid(&id)?),
                    public_ipv4: v4.as_deref().map(|a| parse("ipv4", a)).transpose()?,
                    public_ipv6: v6.as_deref().map(|a| parse("ipv6", a)).transpose()?,
                    port: u16::try_from(port)
                        .map_err(|_| StoreError::Corrupt(format!("relay port {port}")))?,
                    online: online != 0,
                })
            })
            .collect()
    }
}
