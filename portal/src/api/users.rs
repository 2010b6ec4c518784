//! `/users`: people who sign in; admins may hold admin API tokens.

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
    policy::UserId,
    state::{AppState, Change},
    store::{TokenKind, TokenOwner, User, UserUpdate},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        Self {
            id: u.id.0,
            email: u.email,
            name: u.name,
            is_admin: u.is_admin,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Unique, case-insensitive; stored lowercase.
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub is_admin: bool,
}

/// Fields to change; absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub is_admin: Option<bool>,
    /// A disabled user's sessions end and new ones are refused.
    pub disabled: Option<bool>,
}

page_schema!(UserPage, UserOut);

fn user_id(raw: &str) -> ApiResult<UserId> {
    Ok(UserId(path_id(raw, "user")?))
}

/// The admin the bearer token belongs to.
#[utoipa::path(get, path = "/me", tag = "users",
    responses((status = 200, description = "The caller", body = UserOut)))]
pub async fn me(admin: Admin) -> Json<UserOut> {
    Json(admin.user.into())
}

/// Users, ordered by email.
#[utoipa::path(get, path = "/users", tag = "users", params(PageParams),
    responses((status = 200, description = "A page of users", body = UserPage)))]
pub async fn list_users(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<UserOut>>> {
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_users(limit, offset).await?;
    Ok(Json(page.page(rows, UserOut::from)))
}

#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses((status = 201, description = "Created", body = UserOut),
              (status = 409, description = "Email taken", body = ErrorBody)))]
pub async fn create_user(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<UserOut>)> {
    let user = state
        .store
        .create_user(&new.email, &new.name, new.is_admin, super::now())
        .await?;
    state.publish(Change::ActorChanged(user.id.0));
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserOut)))]
pub async fn get_user(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserOut>> {
    Ok(Json(state.store.get_user(user_id(&id)?).await?.into()))
}

#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "Updated", body = UserOut)))]
pub async fn update_user(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> ApiResult<Json<UserOut>> {
    let id = user_id(&id)?;
    let user = state
        .store
        .update_user(
            id,
            UserUpdate {
                name: patch.name,
                is_admin: patch.is_admin,
                disabled: patch.disabled,
            },
        )
        .await?;
    state.publish(Change::ActorChanged(id.0));
    Ok(Json(user.into()))
}

/// Deletes the user with their memberships, clients and tokens.
#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_user(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = user_id(&id)?;
    state.store.delete_user(id).await?;
    state.publish(Change::ActorDeleted(id.0));
    Ok(StatusCode::NO_CONTENT)
}

/// Admin API tokens of an admin user, oldest first (no secrets).
#[utoipa::path(get, path = "/users/{id}/tokens", tag = "users",
    params(("id" = Uuid, Path, description = "User id"), PageParams),
    responses((status = 200, description = "A page of tokens", body = TokenPage)))]
pub async fn list_user_tokens(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<TokenOut>>> {
    let id = user_id(&id)?;
    state.store.get_user(id).await?;
    tokens::list(&state, TokenOwner::User(id), TokenKind::AdminApi, &params).await
}

/// A new admin API token for an enabled admin user; the secret is shown once.
#[utoipa::path(post, path = "/users/{id}/tokens", tag = "users", request_body = NewToken,
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 201, description = "Created; `token` is shown only now", body = CreatedToken)))]
pub async fn create_user_token(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let id = user_id(&id)?;
    tokens::create(&state, TokenOwner::User(id), TokenKind::AdminApi, new).await
}

#[utoipa::path(delete, path = "/users/{id}/tokens/{token_id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id"),
           ("token_id" = Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_user_token(
    _admin: Admin,
    State(state): State<AppState>,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = user_id(&id)?;
    tokens::revoke(&state, TokenOwner::User(id), TokenKind::AdminApi, &token_id).await
}
