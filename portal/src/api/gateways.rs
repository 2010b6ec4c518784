//! `/gateways` (registered by gateways themselves; presence is read-only)
//! and `/relays`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use keyhole_proto::{GatewayId, SiteId, messages::connect::WireguardBackend};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    auth::Admin,
    error::ApiResult,
    extract::{ApiQuery, parse_param, path_id},
    page::{Page, PageParams, page_schema},
};
use crate::{
    state::{AppState, Change},
    store::{GatewayRecord, RelayRecord},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayOut {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    /// Tunnel IPv4 address (from 100.64.0.0/10).
    pub ipv4: String,
    /// Tunnel IPv6 address (from the deployment's fd00::/48).
    pub ipv6: String,
    pub version: String,
    /// `kernel` or `userspace`.
    pub backend: String,
    pub online: bool,
    pub remote_ip: Option<String>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl From<GatewayRecord> for GatewayOut {
    fn from(g: GatewayRecord) -> Self {
        Self {
            id: g.id.0,
            site_id: g.site_id.0,
            name: g.name,
            public_key: g.public_key.to_string(),
            ipv4: g.tunnel.ipv4.to_string(),
            ipv6: g.tunnel.ipv6.to_string(),
            version: g.version,
            backend: match g.backend {
                WireguardBackend::Kernel => "kernel",
                WireguardBackend::Userspace => "userspace",
            }
            .to_owned(),
            online: g.online,
            remote_ip: g.remote_ip.map(|ip| ip.to_string()),
            last_seen_at: g.last_seen_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RelayOut {
    pub id: Uuid,
    pub public_ipv4: Option<String>,
    pub public_ipv6: Option<String>,
    pub port: u16,
    pub online: bool,
}

impl From<RelayRecord> for RelayOut {
    fn from(r: RelayRecord) -> Self {
        Self {
            id: r.id.0,
            public_ipv4: r.public_ipv4.map(|a| a.to_string()),
            public_ipv6: r.public_ipv6.map(|a| a.to_string()),
            port: r.port,
            online: r.online,
        }
    }
}

page_schema!(GatewayPage, GatewayOut);
page_schema!(RelayPage, RelayOut);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GatewayFilter {
    /// Only gateways of this site.
    #[param(value_type = Option<Uuid>)]
    pub site_id: Option<String>,
}

fn gateway_id(raw: &str) -> ApiResult<GatewayId> {
    Ok(GatewayId(path_id(raw, "gateway")?))
}

/// Gateways, ordered by name then id.
#[utoipa::path(get, path = "/gateways", tag = "gateways", params(GatewayFilter, PageParams),
    responses((status = 200, description = "A page of gateways", body = GatewayPage)))]
pub async fn list_gateways(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<GatewayFilter>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<GatewayOut>>> {
    let site = parse_param::<Uuid>(q.site_id.as_deref(), "site_id", "a UUID")?.map(SiteId);
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_gateways_page(site, limit, offset).await?;
    Ok(Json(page.page(rows, GatewayOut::from)))
}

#[utoipa::path(get, path = "/gateways/{id}", tag = "gateways",
    params(("id" = Uuid, Path, description = "Gateway id")),
    responses((status = 200, description = "The gateway", body = GatewayOut)))]
pub async fn get_gateway(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<GatewayOut>> {
    Ok(Json(
        state.store.get_gateway(gateway_id(&id)?).await?.into(),
    ))
}

/// Forgets a gateway. A gateway that still holds its site token registers
/// again when it reconnects; revoke the site token to keep it out.
#[utoipa::path(delete, path = "/gateways/{id}", tag = "gateways",
    params(("id" = Uuid, Path, description = "Gateway id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_gateway(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = gateway_id(&id)?;
    let gw = state.store.get_gateway(id).await?;
    state.store.delete_gateway(id).await?;
    // No gateway-specific change exists; the site's gateways changed.
    state.publish(Change::SiteChanged(gw.site_id.0));
    Ok(StatusCode::NO_CONTENT)
}

/// Relays, ordered by registration time then id.
#[utoipa::path(get, path = "/relays", tag = "relays", params(PageParams),
    responses((status = 200, description = "A page of relays", body = RelayPage)))]
pub async fn list_relays(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<RelayOut>>> {
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_relays(limit, offset).await?;
    Ok(Json(page.page(rows, RelayOut::from)))
}
