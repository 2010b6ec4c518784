//! `/service-accounts`: headless identities signing in with service tokens.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
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
    policy::ServiceAccountId,
    state::{AppState, Change},
    store::{ServiceAccount, TokenKind, TokenOwner},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceAccountOut {
    pub id: Uuid,
    pub name: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<ServiceAccount> for ServiceAccountOut {
    fn from(s: ServiceAccount) -> Self {
        Self {
            id: s.id.0,
            name: s.name,
            disabled: s.disabled,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServiceAccount {
    /// Unique.
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountPatch {
    pub name: Option<String>,
    pub disabled: Option<bool>,
}

page_schema!(ServiceAccountPage, ServiceAccountOut);

fn sa_id(raw: &str) -> ApiResult<ServiceAccountId> {
    Ok(ServiceAccountId(path_id(raw, "service account")?))
}

/// Service accounts, ordered by name.
#[utoipa::path(get, path = "/service-accounts", tag = "service-accounts", params(PageParams),
    responses((status = 200, description = "A page of service accounts", body = ServiceAccountPage)))]
pub async fn list_service_accounts(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ServiceAccountOut>>> {
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_service_accounts(limit, offset).await?;
    Ok(Json(page.page(rows, ServiceAccountOut::from)))
}

#[utoipa::path(post, path = "/service-accounts", tag = "service-accounts",
    request_body = NewServiceAccount,
    responses((status = 201, description = "Created", body = ServiceAccountOut),
              (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create_service_account(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewServiceAccount>,
) -> ApiResult<(StatusCode, Json<ServiceAccountOut>)> {
    let sa = state
        .store
        .create_service_account(&new.name, super::now())
        .await?;
    state.publish(Change::ActorChanged(sa.id.0));
    Ok((StatusCode::CREATED, Json(sa.into())))
}

#[utoipa::path(get, path = "/service-accounts/{id}", tag = "service-accounts",
    params(("id" = Uuid, Path, description = "Service account id")),
    responses((status = 200, description = "The service account", body = ServiceAccountOut)))]
pub async fn get_service_account(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ServiceAccountOut>> {
    Ok(Json(
        state.store.get_service_account(sa_id(&id)?).await?.into(),
    ))
}

#[utoipa::path(patch, path = "/service-accounts/{id}", tag = "service-accounts",
    request_body = ServiceAccountPatch,
    params(("id" = Uuid, Path, description = "Service account id")),
    responses((status = 200, description = "Updated", body = ServiceAccountOut),
              (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn update_service_account(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ServiceAccountPatch>,
) -> ApiResult<Json<ServiceAccountOut>> {
    let id = sa_id(&id)?;
    let sa = state
        .store
        .update_service_account(id, patch.name, patch.disabled)
        .await?;
    state.publish(Change::ActorChanged(id.0));
    Ok(Json(sa.into()))
}

/// Deletes the service account with its memberships, clients and tokens.
#[utoipa::path(delete, path = "/service-accounts/{id}", tag = "service-accounts",
    params(("id" = Uuid, Path, description = "Service account id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_service_account(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = sa_id(&id)?;
    state.store.delete_service_account(id).await?;
    state.publish(Change::ActorDeleted(id.0));
    Ok(StatusCode::NO_CONTENT)
}

/// Service tokens of the account, oldest first (no secrets).
#[utoipa::path(get, path = "/service-accounts/{id}/tokens", tag = "service-accounts",
    params(("id" = Uuid, Path, description = "Service account id"), PageParams),
    responses((status = 200, description = "A page of tokens", body = TokenPage)))]
pub async fn list_service_account_tokens(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<TokenOut>>> {
    let id = sa_id(&id)?;
    state.store.get_service_account(id).await?;
    tokens::list(
        &state,
        TokenOwner::ServiceAccount(id),
        TokenKind::ServiceAccount,
        &params,
    )
    .await
}

/// A new service token (headless client sign-in); the secret is shown once.
#[utoipa::path(post, path = "/service-accounts/{id}/tokens", tag = "service-accounts",
    request_body = NewToken,
    params(("id" = Uuid, Path, description = "Service account id")),
    responses((status = 201, description = "Created; `token` is shown only now", body = CreatedToken)))]
pub async fn create_service_account_token(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let id = sa_id(&id)?;
    state.store.get_service_account(id).await?;
    tokens::create(
        &state,
        TokenOwner::ServiceAccount(id),
        TokenKind::ServiceAccount,
        new,
    )
    .await
}

#[utoipa::path(delete, path = "/service-accounts/{id}/tokens/{token_id}", tag = "service-accounts",
    params(("id" = Uuid, Path, description = "Service account id"),
           ("token_id" = Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_service_account_token(
    _admin: Admin,
    State(state): State<AppState>,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = sa_id(&id)?;
    tokens::revoke(
        &state,
        TokenOwner::ServiceAccount(id),
        TokenKind::ServiceAccount,
        &token_id,
    )
    .await
}
