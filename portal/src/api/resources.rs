//! `/resources`: what admins publish (DNS names/patterns, IPs, CIDRs, the
//! Internet) with traffic filters, attached to sites.
//!
//! Requests are parsed straight into `keyhole_proto`'s validated types, so
//! a bad DNS pattern, CIDR with host bits or inverted port range is a 422
//! naming the field. The `*Doc` types only describe those types in the
//! OpenAPI document.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use keyhole_proto::{Filter, Resource, ResourceAddress, ResourceId, ResourceName, SiteId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    auth::Admin,
    error::ApiResult,
    extract::{ApiJson, ApiQuery, path_id},
    page::{Page, PageParams, page_schema},
};
use crate::{
    state::{AppState, Change},
    store::NewResource,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceIn {
    pub name: ResourceName,
    pub address: ResourceAddress,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub site_ids: Vec<SiteId>,
}

impl From<ResourceIn> for NewResource {
    fn from(r: ResourceIn) -> Self {
        Self {
            name: r.name,
            address: r.address,
            filters: r.filters,
            site_ids: r.site_ids,
        }
    }
}

/// What a resource points at, tagged by `kind`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[schema(as = ResourceAddress)]
#[allow(dead_code)]
pub enum AddressDoc {
    /// `app.corp` (exactly), `*.corp` (one label below), `**.corp` (the
    /// apex and any depth below). Labels: a-z 0-9 - _, 1–63 characters.
    Dns {
        #[schema(max_length = 253, example = "**.wiki.corp")]
        pattern: String,
    },
    Ip {
        #[schema(example = "10.0.0.5")]
        ip: String,
    },
    /// Host bits must be zero (`10.1.0.0/16`).
    Cidr {
        #[schema(example = "10.1.0.0/16")]
        cidr: String,
    },
    /// Everything not covered by a more specific resource.
    Internet,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Protocol)]
#[allow(dead_code)]
pub enum ProtocolDoc {
    Tcp,
    Udp,
    Icmp,
}

/// Inclusive, `1 <= start <= end`.
#[derive(Serialize, ToSchema)]
#[schema(as = PortRange)]
#[allow(dead_code)]
pub struct PortRangeDoc {
    #[schema(minimum = 1, maximum = 65535)]
    start: u16,
    #[schema(minimum = 1, maximum = 65535)]
    end: u16,
}

/// Allow `protocol`, optionally only to `ports` (not for ICMP).
#[derive(Serialize, ToSchema)]
#[schema(as = Filter)]
#[allow(dead_code)]
pub struct FilterDoc {
    protocol: ProtocolDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    ports: Option<PortRangeDoc>,
}

/// A resource. No filters: all traffic to it is allowed.
#[derive(Serialize, ToSchema)]
#[schema(as = Resource)]
#[allow(dead_code)]
pub struct ResourceDoc {
    id: Uuid,
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    address: AddressDoc,
    filters: Vec<FilterDoc>,
    site_ids: Vec<Uuid>,
}

/// A resource to create or the full replacement of one.
#[derive(Serialize, ToSchema)]
#[schema(as = ResourceInput)]
#[allow(dead_code)]
pub struct ResourceInDoc {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    address: AddressDoc,
    #[serde(default)]
    filters: Vec<FilterDoc>,
    /// Sites whose gateways serve the resource; each must exist.
    #[serde(default)]
    site_ids: Vec<Uuid>,
}

page_schema!(ResourcePage, ResourceDoc);

fn resource_id(raw: &str) -> ApiResult<ResourceId> {
    Ok(ResourceId(path_id(raw, "resource")?))
}

/// Resources, ordered by name then id.
#[utoipa::path(get, path = "/resources", tag = "resources", params(PageParams),
    responses((status = 200, description = "A page of resources", body = ResourcePage)))]
pub async fn list_resources(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Resource>>> {
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_resources(limit, offset).await?;
    Ok(Json(page.page(rows, |r| r)))
}

#[utoipa::path(post, path = "/resources", tag = "resources", request_body = ResourceInDoc,
    responses((status = 201, description = "Created", body = ResourceDoc)))]
pub async fn create_resource(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<ResourceIn>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    let r = state
        .store
        .create_resource(new.into(), super::now())
        .await?;
    state.publish(Change::ResourceUpserted(r.id.0));
    Ok((StatusCode::CREATED, Json(r)))
}

#[utoipa::path(get, path = "/resources/{id}", tag = "resources",
    params(("id" = Uuid, Path, description = "Resource id")),
    responses((status = 200, description = "The resource", body = ResourceDoc)))]
pub async fn get_resource(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Resource>> {
    Ok(Json(state.store.get_resource(resource_id(&id)?).await?))
}

/// Replaces a resource (name, address, filters and sites).
#[utoipa::path(put, path = "/resources/{id}", tag = "resources", request_body = ResourceInDoc,
    params(("id" = Uuid, Path, description = "Resource id")),
    responses((status = 200, description = "Updated", body = ResourceDoc)))]
pub async fn update_resource(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<ResourceIn>,
) -> ApiResult<Json<Resource>> {
    let id = resource_id(&id)?;
    let r = state.store.update_resource(id, new.into()).await?;
    state.publish(Change::ResourceUpserted(id.0));
    Ok(Json(r))
}

/// Deletes the resource with its policies; access to it is revoked.
#[utoipa::path(delete, path = "/resources/{id}", tag = "resources",
    params(("id" = Uuid, Path, description = "Resource id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_resource(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = resource_id(&id)?;
    state.store.delete_resource(id).await?;
    state.publish(Change::ResourceDeleted(id.0));
    Ok(StatusCode::NO_CONTENT)
}
