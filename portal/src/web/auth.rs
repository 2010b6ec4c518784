//! Sign-in (password or one-time link), sign-out.

use std::{net::SocketAddr, sync::OnceLock, time::Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier as _};
use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    WebExt,
    form::FormData,
    layout::{WebResult, bare, error_page},
    session::{
        CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE, Session, cookie, is_https, same_secret,
        set_cookie,
    },
    user_session::UserPost,
};
use crate::{
    policy::SignInMethod,
    server_bootstrap::hash_password,
    state::AppState,
    store::{User, random_secret},
};

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only local paths, so the sign-in form is no open redirect.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn form(token: &str, next: &str, email: &str, error: Option<&str>, sso: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            @if is_user_page(next) {
                h1 { "Sign in to approve a device" }
            } @else {
                h1 { "Sign in" }
            }
            @if let Some(e) = error {
                div.alert role="alert" id="sign-in-error" { (e) }
            }
            form method="post" action="/sign-in" {
                input type="hidden" name=(CSRF_FIELD) value=(token);
                input type="hidden" name="next" value=(next);
                div.field {
                    label for="email" { "E-mail" }
                    input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
                }
                div.field {
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                }
                button.primary type="submit" { "Sign in" }
            }
            @if let Some(provider) = sso {
                p { a.button #sso href={ "/sign-in/oidc?next=" (form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()) } { "Sign in with " (provider) } }
            }
            // Filled from the `#token=…` of the first-start link by app.js:
            // the fragment never reaches server logs.
            form #link-form method="post" action="/sign-in/link" hidden {
                input type="hidden" name=(CSRF_FIELD) value=(token);
                input type="hidden" name="next" value=(next);
                input type="hidden" name="token" value="";
            }
        },
    )
}

/// The sign-in page, with a fresh double-submit token in a cookie.
pub(super) fn sign_in_response(
    status: StatusCode,
    headers: &HeaderMap,
    web: &WebExt,
    next: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    let token = random_secret();
    let cookie = set_cookie(SIGN_IN_COOKIE, &token, 3600, is_https(headers, web));
    (
        status,
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        form(
            &token,
            next,
            email,
            error,
            web.oidc.as_ref().map(|o| o.display_name()),
        ),
    )
        .into_response()
}

pub async fn sign_in_page(
    session: Result<Session, super::session::Rejection>,
    headers: HeaderMap,
    web: WebExt,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if session.is_ok() {
        return Redirect::to(&next).into_response();
    }
    sign_in_response(StatusCode::OK, &headers, &web, &next, "", None)
}

/// The form body of a sign-in post, after the double-submit check.
async fn sign_in_form(
    req: Request,
    state: &AppState,
) -> Result<(HeaderMap, String, FormData), Response> {
    let headers = req.headers().clone();
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical().to_string())
        .unwrap_or_else(|| "unknown".into());
    let body = Bytes::from_request(req, state)
        .await
        .map_err(|e| e.into_response())?;
    let form = FormData::parse(&body);
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    let sent = form.get(CSRF_FIELD).unwrap_or("");
    if expected.is_empty() || !same_secret(sent, expected) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "The sign-in form's security token is missing or does not match \
             (CSRF protection). Reload the sign-in page and try again.",
        ));
    }
    Ok((headers, ip, form))
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_secret()).unwrap_or_default())
}

async fn verify(phc: String, password: String) -> bool {
    // argon2 is deliberately slow; keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

fn wait_message(wait: std::time::Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    format!(
        "Too many failed sign-ins. Try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    )
}

/// Whether `user` may sign in on the way to `next`: admins anywhere,
/// other users only to approve a device (`/device`).
pub(super) fn may_sign_in(user: &User, next: &str) -> bool {
    user.is_admin || is_user_page(next)
}

/// Pages a non-admin's session may open.
fn is_user_page(next: &str) -> bool {
    let path = next.split(['?', '#']).next().unwrap_or("");
    path == "/device"
}

/// Starts a session and sends the browser on.
pub(super) async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    web: &WebExt,
    user: &User,
    method: SignInMethod,
    next: &str,
) -> WebResult {
    let s = state
        .store
        .create_web_session(user.id, method, web.config.session_ttl, crate::api::now())
        .await?;
    // Sign-ins are rare; forgetting expired sessions here needs no timer.
    if let Err(e) = state.store.prune_web_sessions(crate::api::now()).await {
        tracing::warn!(error = %e, "web: pruning expired sessions failed");
    }
    let secure = is_https(headers, web);
    tracing::info!(user = %user.email, "web: signed in");
    let mut response = Redirect::to(next).into_response();
    let h = response.headers_mut();
    let session_cookie = set_cookie(
        SESSION_COOKIE,
        &s.secret,
        web.config.session_ttl.num_seconds(),
        secure,
    );
    if let Ok(v) = session_cookie.parse() {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = set_cookie(SIGN_IN_COOKIE, "", 0, secure).parse() {
        h.append(header::SET_COOKIE, v);
    }
    Ok(response)
}

pub async fn sign_in(State(state): State<AppState>, web: WebExt, req: Request) -> WebResult {
    let (headers, ip, form) = match sign_in_form(req, &state).await {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    let next = safe_next(form.get("next"));
    let email = form.text("email").to_ascii_lowercase();
    let password = form.get("password").unwrap_or("").to_owned();
    let account_key = format!("account:{email}");
    let ip_key = format!("ip:{ip}");
    let now = Instant::now();
    if let Err(wait) = web
        .per_ip
        .check(&ip_key, now)
        .and_then(|()| web.per_account.check(&account_key, now))
    {
        tracing::warn!(%email, %ip, "web: sign-in refused by the rate limit");
        return Ok(sign_in_response(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            &web,
            &next,
            &email,
            Some(&wait_message(wait)),
        ));
    }
    let user = state.store.user_by_email(&email).await?;
    let phc = match &user {
        Some(u) => state.store.password_hash(u).await?,
        None => None,
    };
    // Unknown accounts cost the same time as wrong passwords.
    let known = phc.is_some();
    let ok = verify(phc.unwrap_or_else(|| dummy_hash().to_owned()), password).await && known;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            web.per_ip.record_failure(&ip_key, now);
            web.per_account.record_failure(&account_key, now);
            tracing::info!(%email, %ip, "web: failed sign-in");
            return Ok(sign_in_response(
                StatusCode::UNAUTHORIZED,
                &headers,
                &web,
                &next,
                &email,
                Some("Wrong e-mail or password."),
            ));
        }
    };
    if user.disabled || !may_sign_in(&user, &next) {
        return Ok(sign_in_response(
            StatusCode::FORBIDDEN,
            &headers,
            &web,
            &next,
            &email,
            Some("This account may not use the admin portal."),
        ));
    }
    web.per_account.reset(&account_key);
    start_session(&state, &headers, &web, &user, SignInMethod::Password, &next).await
}

/// The one-time link printed at first start (`/sign-in#token=…`).
pub async fn sign_in_link(State(state): State<AppState>, web: WebExt, req: Request) -> WebResult {
    let (headers, ip, form) = match sign_in_form(req, &state).await {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    let next = safe_next(form.get("next"));
    let ip_key = format!("ip:{ip}");
    let now = Instant::now();
    if let Err(wait) = web.per_ip.check(&ip_key, now) {
        return Ok(sign_in_response(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            &web,
            &next,
            "",
            Some(&wait_message(wait)),
        ));
    }
    let user = match state
        .store
        .consume_sign_in_link(&form.text("token"), crate::api::now())
        .await?
    {
        Some(id) => Some(state.store.get_user(id).await?),
        None => None,
    };
    match user {
        Some(u) if u.is_admin && !u.disabled => {
            start_session(&state, &headers, &web, &u, SignInMethod::Password, &next).await
        }
        _ => {
            web.per_ip.record_failure(&ip_key, now);
            Ok(sign_in_response(
                StatusCode::UNAUTHORIZED,
                &headers,
                &web,
                &next,
                "",
                Some("This sign-in link is invalid, used or expired. Sign in with your password."),
            ))
        }
    }
}

pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    web: WebExt,
    post: UserPost,
) -> WebResult {
    state.store.delete_web_session(&post.session.secret).await?;
    let cookie = set_cookie(SESSION_COOKIE, "", 0, is_https(&headers, &web));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/sign-in")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/sites?x=1")), "/sites?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn only_the_device_page_is_open_to_users() {
        assert!(is_user_page("/device"));
        assert!(is_user_page("/device?code=BCDF-GHJK"));
        assert!(!is_user_page("/devices"));
        assert!(!is_user_page("/device/../sites"));
        assert!(!is_user_page("/sites?x=/device"));
        assert!(!is_user_page("/"));
    }
}
