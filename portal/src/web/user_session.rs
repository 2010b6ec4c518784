//! Any signed-in, enabled user ([`UserSession`]), admin or not, and their
//! CSRF-checked form posts ([`UserPost`]). Only the pages end users may
//! see take these (device approval, sign-out); every admin page keeps
//! taking [`super::session::Session`], which refuses non-admins with 403.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};

use super::{
    form::FormData,
    session::{CSRF_FIELD, Rejection, SESSION_COOKIE, cookie, same_secret},
};
use crate::{
    api::error::ApiError,
    policy::SignInMethod,
    state::AppState,
    store::{User, WebSession},
};

#[derive(Debug, Clone)]
pub struct UserSession {
    pub user: User,
    pub csrf: String,
    pub secret: String,
    /// How this session signed in; a device approved here gets the same.
    pub sign_in_method: SignInMethod,
}

async fn user_session_from(parts: &Parts, state: &AppState) -> Result<UserSession, Rejection> {
    let next = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let sign_in = || Rejection::SignIn { next: next.clone() };
    let secret = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(sign_in)?;
    let found: Option<WebSession> = state
        .store
        .web_session(secret, crate::api::now())
        .await
        .map_err(|e| Rejection::Api(e.into()))?;
    let s = found.ok_or_else(sign_in)?;
    if s.user.disabled {
        return Err(sign_in());
    }
    Ok(UserSession {
        user: s.user,
        csrf: s.csrf,
        secret: secret.to_owned(),
        sign_in_method: s.sign_in_method,
    })
}

impl FromRequestParts<AppState> for UserSession {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Rejection> {
        user_session_from(parts, state).await
    }
}

/// A signed-in user's form whose `_csrf` matches their session.
pub struct UserPost {
    pub session: UserSession,
    pub form: FormData,
}

impl FromRequest<AppState> for UserPost {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejection> {
        let (parts, body) = req.into_parts();
        let session = user_session_from(&parts, state).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| Rejection::Api(ApiError::BadRequest(e.to_string())))?;
        let form = FormData::parse(&bytes);
        let sent = form.get(CSRF_FIELD).unwrap_or("");
        if !same_secret(sent, &session.csrf) {
            tracing::warn!(user = %session.user.email, "web: CSRF token mismatch, request refused");
            return Err(Rejection::Csrf);
        }
        Ok(Self { session, form })
    }
}
