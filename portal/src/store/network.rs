//! Sites, gateways, relays, and the tunnel address pool.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use keyhole_proto::{
    GatewayId, PublicKey, RelayId, SiteId, TUNNEL_PEER_IPV4_RANGE, TunnelAddresses,
    messages::connect::WireguardBackend,
};
use rand::Rng as _;
use sqlx::{Any, Transaction};

use super::{Result, Store, StoreError, actors::check_name, flag, from_ms, ms, parse_uuid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// What a gateway says about itself when it connects.
#[derive(Debug, Clone)]
pub struct GatewayRegistration {
    pub site_id: SiteId,
    pub name: String,
    pub public_key: PublicKey,
    pub version: String,
    pub backend: WireguardBackend,
    pub remote_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRecord {
    pub id: GatewayId,
    pub site_id: SiteId,
    pub name: String,
    pub public_key: PublicKey,
    pub tunnel: TunnelAddresses,
    pub version: String,
    pub backend: WireguardBackend,
    pub online: bool,
    pub remote_ip: Option<IpAddr>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRecord {
    pub id: RelayId,
    pub public_ipv4: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub port: u16,
    pub online: bool,
}

/// How many random picks before declaring the pool full.
const ALLOCATION_ATTEMPTS: usize = 64;

fn backend_str(b: WireguardBackend) -> &'static str {
    match b {
        WireguardBackend::Kernel => "kernel",
        WireguardBackend::Userspace => "userspace",
    }
}

pub(super) fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad {what} `{s}` in database")))
}

pub(super) type GatewayRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
);

pub(super) const GATEWAY_COLUMNS: &str = "id, site_id, name, public_key, ipv4, ipv6, version, backend, \
                               online, remote_ip, last_seen_at";

pub(super) fn gateway_from_row(r: GatewayRow) -> Result<GatewayRecord> {
    let (id, site, name, key, v4, v6, version, backend, online, remote, seen) = r;
    Ok(GatewayRecord {
        id: GatewayId(parse_uuid(&id)?),
        site_id: SiteId(parse_uuid(&site)?),
        name,
        public_key: parse("public key", &key)?,
        tunnel: TunnelAddresses::new(parse("ipv4", &v4)?, parse("ipv6", &v6)?)
            .map_err(StoreError::Corrupt)?,
        version,
        backend: match backend.as_str() {
            "kernel" => WireguardBackend::Kernel,
            "userspace" => WireguardBackend::Userspace,
            other => return Err(StoreError::Corrupt(format!("backend `{other}`"))),
        },
        online: online != 0,
        remote_ip: remote
            .as_deref()
            .map(|r| parse("remote ip", r))
            .transpose()?,
        last_seen_at: seen.map(from_ms),
    })
}

impl Store {
    pub async fn create_site(&self, name: &str, now: DateTime<Utc>) -> Result<Site> {
        check_name("name", name)?;
        let site = Site {
            id: SiteId::new_random(),
            name: name.to_owned(),
            created_at: from_ms(ms(now)),
        };
        sqlx::query("INSERT INTO sites (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(site.id.to_string())
            .bind(&site.name)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(site)
    }

    pub async fn list_sites(&self) -> Result<Vec<Site>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, name, created_at FROM sites ORDER BY name")
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

    /// Deletes the site with its gateways and gateway tokens.
    pub async fn delete_site(&self, id: SiteId) -> Result<()> {
        let r = sqlx::query("DELETE FROM sites WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("site"));
        }
        Ok(())
    }

    /// A connecting gateway: known by its public key, or new (then it gets
    /// tunnel addresses). Marks it online.
    pub async fn register_gateway(
        &self,
        reg: &GatewayRegistration,
        now: DateTime<Utc>,
    ) -> Result<GatewayRecord> {
        check_name("name", &reg.name)?;
        let mut tx = self.pool.begin().await?;
        let existing: Option<(String, String)> =
            sqlx::query_as("SELECT id, site_id FROM gateways WHERE public_key = $1")
                .bind(reg.public_key.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let id = match existing {
            Some((id, site)) => {
                if site != reg.site_id.to_string() {
                    return Err(StoreError::Conflict(
                        "this public key belongs to a gateway of another site".into(),
                    ));
                }
                sqlx::query(
                    "UPDATE gateways SET name = $1, version = $2, backend = $3, online = 1, \
                     remote_ip = $4, last_seen_at = $5 WHERE id = $6",
                )
                .bind(&reg.name)
                .bind(&reg.version)
                .bind(backend_str(reg.backend))
                .bind(reg.remote_ip.map(|ip| ip.to_string()))
                .bind(ms(now))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                let tunnel = allocate_tunnel_addresses(&mut tx, now).await?;
                let id = GatewayId::new_random().to_string();
                sqlx::query(
                    "INSERT INTO gateways (id, site_id, name, public_key, ipv4, ipv6, version, \
                     backend, online, remote_ip, last_seen_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $10)",
                )
                .bind(&id)
                .bind(reg.site_id.to_string())
                .bind(&reg.name)
                .bind(reg.public_key.to_string())
                .bind(tunnel.ipv4.to_string())
                .bind(tunnel.ipv6.to_string())
                .bind(&reg.version)
                .bind(backend_str(reg.backend))
                .bind(reg.remote_ip.map(|ip| ip.to_string()))
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let row: GatewayRow = sqlx::query_as(&format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1"
        ))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        gateway_from_row(row)
    }

    /// Heartbeat (`online`) or disconnect (`!online`).
    pub async fn set_gateway_presence(
        &self,
        id: GatewayId,
        online: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let r = sqlx::query("UPDATE gateways SET online = $1, last_seen_at = $2 WHERE id = $3")
            .bind(flag(online))
            .bind(ms(now))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("gateway"));
        }
        Ok(())
    }

    pub async fn list_gateways(&self, site: SiteId) -> Result<Vec<GatewayRecord>> {
        let rows: Vec<GatewayRow> = sqlx::query_as(&format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE site_id = $1 ORDER BY name, id"
        ))
        .bind(site.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(gateway_from_row).collect()
    }

    /// A relay's control connection ended (`!online`).
    pub async fn set_relay_presence(
        &self,
        id: RelayId,
        online: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let r = sqlx::query("UPDATE relays SET online = $1, last_seen_at = $2 WHERE id = $3")
            .bind(flag(online))
            .bind(ms(now))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("relay"));
        }
        Ok(())
    }

    /// A registering relay, known by its addresses; marks it online.
    pub async fn register_relay(
        &self,
        public_ipv4: Option<Ipv4Addr>,
        public_ipv6: Option<Ipv6Addr>,
        port: u16,
        now: DateTime<Utc>,
    ) -> Result<RelayRecord> {
        if public_ipv4.is_none() && public_ipv6.is_none() {
            return Err(StoreError::invalid(
                "public_ipv4",
                "a relay needs an address",
            ));
        }
        let v4 = public_ipv4.map(|a| a.to_string());
        let v6 = public_ipv6.map(|a| a.to_string());
        let mut tx = self.pool.begin().await?;
        // NULLs never compare equal in SQL, so match them explicitly.
        let existing: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM relays WHERE port = $1 \
             AND COALESCE(public_ipv4, '') = $2 AND COALESCE(public_ipv6, '') = $3",
        )
        .bind(i64::from(port))
        .bind(v4.clone().unwrap_or_default())
        .bind(v6.clone().unwrap_or_default())
        .fetch_optional(&mut *tx)
        .await?;
        let id = match existing {
            Some((id,)) => {
                sqlx::query("UPDATE relays SET online = 1, last_seen_at = $1 WHERE id = $2")
                    .bind(ms(now))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                RelayId(parse_uuid(&id)?)
            }
            None => {
                let id = RelayId::new_random();
                sqlx::query(
                    "INSERT INTO relays (id, public_ipv4, public_ipv6, port, online, last_seen_at, \
                     created_at) VALUES ($1, $2, $3, $4, 1, $5, $5)",
                )
                .bind(id.to_string())
                .bind(v4)
                .bind(v6)
                .bind(i64::from(port))
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        tx.commit().await?;
        Ok(RelayRecord {
            id,
            public_ipv4,
            public_ipv6,
            port,
            online: true,
        })
    }

    /// The deployment's tunnel IPv6 /48, created on first use.
    pub async fn tunnel_ipv6_prefix(&self) -> Result<Ipv6Addr> {
        let mut tx = self.pool.begin().await?;
        let p = ipv6_prefix(&mut tx).await?;
        tx.commit().await?;
        Ok(p)
    }
}

async fn ipv6_prefix(tx: &mut Transaction<'static, Any>) -> Result<Ipv6Addr> {
    // RFC 4193: fd00::/8 plus a random 40-bit global id.
    // The thread RNG is not Send; keep it out of the future's state.
    let candidate = {
        let mut rng = rand::rng();
        Ipv6Addr::new(
            0xfd00 | rng.random_range(0..=0xff),
            rng.random(),
            rng.random(),
            0,
            0,
            0,
            0,
            0,
        )
    };
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ('tunnel_ipv6_prefix', $1) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(candidate.to_string())
    .execute(&mut **tx)
    .await?;
    let (value,): (String,) =
        sqlx::query_as("SELECT value FROM settings WHERE key = 'tunnel_ipv6_prefix'")
            .fetch_one(&mut **tx)
            .await?;
    parse("ipv6 prefix", &value)
}

/// A fresh, never used pair of tunnel addresses. The IPv6 address is the
/// deployment prefix with the IPv4 offset in its last 32 bits, so the two
/// are unique together.
pub(super) async fn allocate_tunnel_addresses(
    tx: &mut Transaction<'static, Any>,
    now: DateTime<Utc>,
) -> Result<TunnelAddresses> {
    let prefix = ipv6_prefix(tx).await?.segments();
    // Only the lower half: clients use the upper half for DNS proxy IPs.
    let base = u32::from(TUNNEL_PEER_IPV4_RANGE.network());
    let size = 1u32 << (32 - TUNNEL_PEER_IPV4_RANGE.prefix_len());
    for _ in 0..ALLOCATION_ATTEMPTS {
        // Skip the network and broadcast addresses.
        let offset = rand::rng().random_range(1..size - 1);
        let ipv4 = Ipv4Addr::from(base + offset);
        let ipv6 = Ipv6Addr::new(
            prefix[0],
            prefix[1],
            prefix[2],
            0,
            0,
            0,
            (offset >> 16) as u16,
            offset as u16,
        );
        let taken: Option<(i64,)> =
            sqlx::query_as("SELECT 1 FROM tunnel_addresses WHERE ipv4 = $1")
                .bind(ipv4.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        if taken.is_some() {
            continue;
        }
        sqlx::query("INSERT INTO tunnel_addresses (ipv4, ipv6, allocated_at) VALUES ($1, $2, $3)")
            .bind(ipv4.to_string())
            .bind(ipv6.to_string())
            .bind(ms(now))
            .execute(&mut **tx)
            .await?;
        return TunnelAddresses::new(ipv4, ipv6).map_err(StoreError::Corrupt);
    }
    Err(StoreError::AddressesExhausted)
}
