//! The signed-in admin ([`Session`]) and CSRF-checked form posts ([`Post`]).
//! Non-admin users' sessions are only good for `user_session`'s extractors.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};

use super::{Web, error_page, form::FormData};
use crate::{
    api::error::ApiError,
    state::AppState,
    store::{User, WebSession},
};

pub const SESSION_COOKIE: &str = "kh_session";
/// Double-submit token of the sign-in form (no session exists yet).
pub const SIGN_IN_COOKIE: &str = "kh_signin";
pub const CSRF_FIELD: &str = "_csrf";

/// The value of cookie `name`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser talks https to us (directly or via a proxy that
/// says so); decides the cookies' Secure attribute.
pub fn is_https(headers: &HeaderMap, web: &Web) -> bool {
    if let Some(url) = &web.config.public_url {
        return url.starts_with("https://");
    }
    let header_says = |name: &str, needle: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains(needle))
    };
    header_says("x-forwarded-proto", "https") || header_says("forwarded", "proto=https")
}

/// A `Set-Cookie` value with the attributes every Keyhole cookie gets.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Constant-time comparison, so the CSRF check leaks no prefix length.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A signed-in, enabled admin.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub secret: String,
}

/// Why a request is refused before its handler runs.
pub enum Rejection {
    SignIn {
        next: String,
    },
    /// Signed in, but not as an admin (users sign in only to approve
    /// devices, see `device.rs`).
    NotAdmin,
    Csrf,
    Api(ApiError),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn { next } => {
                let next = form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>();
                Redirect::to(&format!("/sign-in?next={next}")).into_response()
            }
            Self::NotAdmin => error_page(
                axum::http::StatusCode::FORBIDDEN,
                "Administrators only",
                "You are signed in, but this account may not use the admin portal.",
            ),
            Self::Csrf => error_page(
                axum::http::StatusCode::FORBIDDEN,
                "Request refused",
                "The form's security token is missing or does not match your session \
                 (CSRF protection). Reload the page and try again.",
            ),
            Self::Api(e) => super::api_error_page(e),
        }
    }
}

async fn session_from(parts: &Parts, state: &AppState) -> Result<Session, Rejection> {
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
    // Disabled since signing in: the session no longer counts.
    if s.user.disabled {
        return Err(sign_in());
    }
    // A user's session (device approval) or an admin demoted since.
    if !s.user.is_admin {
        return Err(Rejection::NotAdmin);
    }
    Ok(Session {
        user: s.user,
        csrf: s.csrf,
        secret: secret.to_owned(),
    })
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Rejection> {
        session_from(parts, state).await
    }
}

/// A state-changing request: a signed-in admin's form whose `_csrf` field
/// matches their session. Every POST handler but sign-in takes this, so
/// none can skip the check.
pub struct Post {
    pub session: Session,
    pub form: FormData,
}

impl FromRequest<AppState> for Post {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejection> {
        let (parts, body) = req.into_parts();
        let session = session_from(&parts, state).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_finds_the_named_one() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; kh_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "kh_session"), Some("xyz"));
        assert_eq!(cookie(&h, "kh"), None);
    }

    #[test]
    fn same_secret_compares_whole_values() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }
}
