//! `/sites` and their gateway tokens (the `KEYHOLE_TOKEN` a gateway starts
//! with).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use keyhole_proto::SiteId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    auth::Admin,
    error::{ApiResult, ErrorBody},
    extract::{ApiJson, ApiQuery, path_id},
    page::{Page, PageParams, page_schema},
    tokens::{self, CreatedToken, NewToken, TokenOut, TokenPage},
};
use crate::{
    state::{AppState, Change},
    store::{Site, TokenKind, TokenOwner},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteOut {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<Site> for SiteOut {
    fn from(s: Site) -> Self {
        Self {
            id: s.id.0,
            name: s.name,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteIn {
    /// Unique.
    pub name: String,
}

page_schema!(SitePage, SiteOut);

fn site_id(raw: &str) -> ApiResult<SiteId> {
    Ok(SiteId(path_id(raw, "site")?))
}

/// Sites, ordered by name.
#[utoipa::path(get, path = "/sites", tag = "sites", params(PageParams),
    responses((status = 200, description = "A page of sites", body = SitePage)))]
pub async fn list_sites(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<SiteOut>>> {
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_sites_page(limit, offset).await?;
    Ok(Json(page.page(rows, SiteOut::from)))
}

#[utoipa::path(post, path = "/sites", tag = "sites", request_body = SiteIn,
    responses((status = 201, description = "Created", body = SiteOut),
              (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create_site(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<SiteIn>,
) -> ApiResult<(StatusCode, Json<SiteOut>)> {
    let s = state.store.create_site(&new.name, super::now()).await?;
    state.publish(Change::SiteChanged(s.id.0));
    Ok((StatusCode::CREATED, Json(s.into())))
}

#[utoipa::path(get, path = "/sites/{id}", tag = "sites",
    params(("id" = Uuid, Path, description = "Site id")),
    responses((status = 200, description = "The site", body = SiteOut)))]
pub async fn get_site(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SiteOut>> {
    Ok(Json(state.store.get_site(site_id(&id)?).await?.into()))
}

/// Renames a site.
#[utoipa::path(patch, path = "/sites/{id}", tag = "sites", request_body = SiteIn,
    params(("id" = Uuid, Path, description = "Site id")),
    responses((status = 200, description = "Updated", body = SiteOut),
              (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn update_site(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<SiteIn>,
) -> ApiResult<Json<SiteOut>> {
    let id = site_id(&id)?;
    let s = state.store.rename_site(id, &patch.name).await?;
    state.publish(Change::SiteChanged(id.0));
    Ok(Json(s.into()))
}

/// Deletes the site with its gateways, gateway tokens and resource links.
#[utoipa::path(delete, path = "/sites/{id}", tag = "sites",
    params(("id" = Uuid, Path, description = "Site id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_site(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = site_id(&id)?;
    state.store.delete_site(id).await?;
    state.publish(Change::SiteDeleted(id.0));
    Ok(StatusCode::NO_CONTENT)
}

/// Gateway tokens of the site, oldest first (no secrets).
#[utoipa::path(get, path = "/sites/{id}/tokens", tag = "sites",
    params(("id" = Uuid, Path, description = "Site id"), PageParams),
    responses((status = 200, description = "A page of tokens", body = TokenPage)))]
pub async fn list_site_tokens(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<TokenOut>>> {
    let id = site_id(&id)?;
    state.store.get_site(id).await?;
    tokens::list(&state, TokenOwner::Site(id), TokenKind::Gateway, &params).await
}

/// A new gateway token for the site; the secret is shown once.
#[utoipa::path(post, path = "/sites/{id}/tokens", tag = "sites", request_body = NewToken,
    params(("id" = Uuid, Path, description = "Site id")),
    responses((status = 201, description = "Created; `token` is shown only now", body = CreatedToken)))]
pub async fn create_site_token(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let id = site_id(&id)?;
    state.store.get_site(id).await?;
    tokens::create(&state, TokenOwner::Site(id), TokenKind::Gateway, new).await
}

#[utoipa::path(delete, path = "/sites/{id}/tokens/{token_id}", tag = "sites",
    params(("id" = Uuid, Path, description = "Site id"),
           ("token_id" = Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_site_token(
    _admin: Admin,
    State(state): State<AppState>,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = site_id(&id)?;
    tokens::revoke(&state, TokenOwner::Site(id), TokenKind::Gateway, &token_id).await
}
