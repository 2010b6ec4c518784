//! Token endpoints shared by users (admin API tokens), service accounts
//! (service tokens) and sites (gateway tokens): secrets are returned once
//! at creation; lists show metadata only; revocation publishes
//! [`Change::TokenRevoked`].

use axum::{Json, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    error::{ApiError, ApiResult},
    page::{Page, PageParams, page_schema},
};
use crate::{
    policy::SignInMethod,
    state::{AppState, Change},
    store::{TokenKind, TokenOwner, TokenRecord},
};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// When the token stops working; absent: never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as listed: never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenOut {
    pub id: Uuid,
    /// `admin_api`, `service_account` or `gateway`.
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A new token; `token` is shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    pub kind: String,
    /// The secret (`kh_…`). It is stored hashed and cannot be shown again.
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

page_schema!(TokenPage, TokenOut);

fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::AdminApi => "admin_api",
        TokenKind::ServiceAccount => "service_account",
        TokenKind::ClientSession => "client_session",
        TokenKind::Gateway => "gateway",
        TokenKind::Relay => "relay",
    }
}

fn token_out(t: TokenRecord) -> TokenOut {
    TokenOut {
        id: t.id,
        kind: kind_name(t.kind).to_owned(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
    }
}

pub async fn create(
    state: &AppState,
    owner: TokenOwner,
    kind: TokenKind,
    new: NewToken,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let now = super::now();
    if new.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::field("expires_at", "must be in the future"));
    }
    let issued = match (kind, owner) {
        (TokenKind::AdminApi, TokenOwner::User(u)) => {
            state
                .store
                .create_admin_api_token(u, new.expires_at, now)
                .await?
        }
        _ => {
            let method = (kind == TokenKind::ServiceAccount).then_some(SignInMethod::ServiceToken);
            state
                .store
                .create_token(kind, owner, method, new.expires_at, now)
                .await?
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: issued.id,
            kind: kind_name(kind).to_owned(),
            token: issued.secret,
            expires_at: new.expires_at,
        }),
    ))
}

pub async fn list(
    state: &AppState,
    owner: TokenOwner,
    kind: TokenKind,
    params: &PageParams,
) -> ApiResult<Json<Page<TokenOut>>> {
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_tokens(owner, kind, limit, offset).await?;
    Ok(Json(page.page(rows, token_out)))
}

pub async fn revoke(
    state: &AppState,
    owner: TokenOwner,
    kind: TokenKind,
    token_id: &str,
) -> ApiResult<StatusCode> {
    let id = super::extract::path_id(token_id, "token")?;
    state.store.revoke_token_of(owner, kind, id).await?;
    state.publish(Change::TokenRevoked(id));
    Ok(StatusCode::NO_CONTENT)
}
