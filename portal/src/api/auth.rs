//! Bearer-token authentication for the admin API.
//!
//! 401 (with `WWW-Authenticate`) when no token or an unknown/expired one is
//! presented; 403 when the token is valid but not an admin API token of an
//! enabled admin user (service-account, gateway or relay tokens, demoted
//! or disabled admins).

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use uuid::Uuid;

use super::error::ApiError;
use crate::{
    state::AppState,
    store::{StoreError, TokenKind, TokenOwner, User},
};

/// The authenticated caller. Every protected handler takes it as its first
/// argument, so authentication runs before anything else is parsed (the
/// API tests check every documented route answers 401 without a token).
#[derive(Debug, Clone)]
pub struct Admin {
    pub user: User,
    pub token_id: Uuid,
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let missing = |m: &str| ApiError::Unauthorized {
        message: m.to_owned(),
        invalid_token: false,
    };
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| missing("missing bearer token (Authorization: Bearer kh_…)"))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthorized {
        message: "Authorization header is not ASCII".into(),
        invalid_token: true,
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(missing("missing bearer token: use the Bearer scheme")),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Admin, ApiError> {
    let secret = bearer(parts)?;
    let info = state
        .store
        .verify_token(secret, super::now())
        .await?
        .ok_or_else(|| ApiError::Unauthorized {
            message: "the bearer token is unknown, revoked or expired".into(),
            invalid_token: true,
        })?;
    let (TokenKind::AdminApi, TokenOwner::User(user_id)) = (info.kind, info.owner) else {
        return Err(ApiError::Forbidden(
            "this token may not use the admin API; create an admin API token".into(),
        ));
    };
    let user = match state.store.get_user(user_id).await {
        Ok(u) => u,
        // Deleted between the two reads: the token went with the user.
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::Unauthorized {
                message: "the bearer token is unknown, revoked or expired".into(),
                invalid_token: true,
            });
        }
        Err(e) => return Err(e.into()),
    };
    if !user.is_admin || user.disabled {
        return Err(ApiError::Forbidden(
            "the token's user is not an enabled admin".into(),
        ));
    }
    Ok(Admin {
        user,
        token_id: info.id,
    })
}
