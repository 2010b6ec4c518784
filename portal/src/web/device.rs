//! `/device`: where a signed-in user (admin or not) approves or denies a
//! `keyhole login` request (RFC 8628's verification URI). The user enters
//! the code the terminal shows, or follows `verification_uri_complete`
//! which carries it; the page shows the device's name and public key to
//! compare with the terminal before approving.
//!
//! Codes that match nothing count against per-IP and per-user limits
//! (the sign-in limiters' settings), so codes cannot be guessed.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Extension,
    extract::{ConnectInfo, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    WebExt,
    layout::{WebResult, bare},
    session::CSRF_FIELD,
    user_session::{UserPost, UserSession},
};
use crate::{
    policy::SignInMethod,
    state::AppState,
    store::{DeviceAuthStatus, DeviceAuthorization, normalize_user_code},
};

#[derive(Debug, Default, Deserialize)]
pub struct CodeQuery {
    code: Option<String>,
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn method_name(m: SignInMethod) -> &'static str {
    match m {
        SignInMethod::Password => "password",
        SignInMethod::Oidc => "single sign-on",
        SignInMethod::ServiceToken => "service token",
    }
}

fn view(session: &UserSession, body: Markup) -> Markup {
    bare(
        "Sign in a device",
        html! {
            h1 { "Sign in a device" }
            p.muted #who {
                "Signed in as " strong { (session.user.email) }
                " (" (method_name(session.sign_in_method)) "). "
            }
            form.inline method="post" action="/sign-out" {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                button.link type="submit" { "Sign out" }
            }
            (body)
        },
    )
}

fn enter_code(session: &UserSession, code: &str, error: Option<&str>) -> Markup {
    view(
        session,
        html! {
            p { "Enter the code your terminal shows after " code { "keyhole login" } "." }
            @if let Some(e) = error {
                div.alert role="alert" #device-error { (e) }
            }
            form method="get" action="/device" {
                div.field {
                    label for="code" { "Code" }
                    input #code name="code" value=(code) placeholder="BCDF-GHJK"
                        autocomplete="off" autocapitalize="characters" required autofocus;
                }
                button.primary #continue type="submit" { "Continue" }
            }
        },
    )
}

fn confirm(session: &UserSession, req: &DeviceAuthorization) -> Markup {
    view(
        session,
        html! {
            p { "A device asks to sign in as you. Approve it only if you just ran "
                code { "keyhole login" } " there and the details match your terminal." }
            dl #device {
                dt { "Code" } dd.mono #device-code { (req.user_code) }
                dt { "Device" } dd #device-name { (req.device_name) }
                dt { "Device key" } dd.mono #device-key { (req.public_key) }
                dt { "Request expires" } dd { (req.expires_at.format("%H:%M:%S UTC")) }
            }
            form.inline method="post" action="/device" {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                input type="hidden" name="code" value=(req.user_code);
                input type="hidden" name="decision" value="approve";
                button.primary #approve type="submit" { "Approve" }
            }
            " "
            form.inline method="post" action="/device" {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                input type="hidden" name="code" value=(req.user_code);
                input type="hidden" name="decision" value="deny";
                button.danger #deny type="submit" { "Deny" }
            }
        },
    )
}

fn done(session: &UserSession, message: &str) -> Markup {
    view(
        session,
        html! {
            p #device-result { (message) }
            p { a href="/device" { "Sign in another device" } }
        },
    )
}

/// Looks `code` up, counting misses against the limits. `Err` is the page
/// to show instead.
async fn lookup(
    state: &AppState,
    web: &WebExt,
    peer: &Peer,
    session: &UserSession,
    code: &str,
) -> WebResult<Result<DeviceAuthorization, Response>> {
    let ip = match peer {
        Some(Extension(ConnectInfo(a))) => a.ip().to_canonical().to_string(),
        None => "unknown".into(),
    };
    let ip_key = format!("device-ip:{ip}");
    let user_key = format!("device-user:{}", session.user.id);
    let now = Instant::now();
    if web
        .per_ip
        .check(&ip_key, now)
        .and_then(|()| web.per_account.check(&user_key, now))
        .is_err()
    {
        tracing::warn!(user = %session.user.email, %ip, "web: device code lookups refused by the rate limit");
        let page = enter_code(
            session,
            code,
            Some("Too many wrong codes. Wait a few minutes and try again."),
        );
        return Ok(Err((StatusCode::TOO_MANY_REQUESTS, page).into_response()));
    }
    let found = match normalize_user_code(code) {
        Some(c) => {
            state
                .store
                .device_authorization_by_user_code(&c, crate::api::now())
                .await?
        }
        None => None,
    };
    match found {
        Some(req) => Ok(Ok(req)),
        None => {
            web.per_ip.record_failure(&ip_key, now);
            web.per_account.record_failure(&user_key, now);
            let page = enter_code(
                session,
                code,
                Some(
                    "No pending sign-in has this code. Check it, or run `keyhole login` again (codes expire after a few minutes).",
                ),
            );
            Ok(Err((StatusCode::NOT_FOUND, page).into_response()))
        }
    }
}

fn already(session: &UserSession, status: DeviceAuthStatus) -> Response {
    let m = match status {
        DeviceAuthStatus::Denied => "This sign-in was denied.",
        _ => "This sign-in was already approved.",
    };
    (StatusCode::CONFLICT, done(session, m)).into_response()
}

pub async fn show(
    State(state): State<AppState>,
    web: WebExt,
    peer: Peer,
    session: UserSession,
    Query(q): Query<CodeQuery>,
) -> WebResult {
    let code = q.code.unwrap_or_default();
    if code.trim().is_empty() {
        return Ok(enter_code(&session, "", None).into_response());
    }
    let req = match lookup(&state, &web, &peer, &session, &code).await? {
        Ok(r) => r,
        Err(page) => return Ok(page),
    };
    if req.status != DeviceAuthStatus::Pending {
        return Ok(already(&session, req.status));
    }
    Ok(confirm(&session, &req).into_response())
}

pub async fn decide(
    State(state): State<AppState>,
    web: WebExt,
    peer: Peer,
    post: UserPost,
) -> WebResult {
    let session = &post.session;
    let code = post.form.text("code");
    let approve = match post.form.get("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                enter_code(session, &code, Some("Choose Approve or Deny.")),
            )
                .into_response());
        }
    };
    let req = match lookup(&state, &web, &peer, session, &code).await? {
        Ok(r) => r,
        Err(page) => return Ok(page),
    };
    if req.status != DeviceAuthStatus::Pending {
        return Ok(already(session, req.status));
    }
    let decided = state
        .store
        .decide_device_authorization(
            req.id,
            session.user.id,
            session.sign_in_method,
            approve,
            crate::api::now(),
        )
        .await?;
    if !decided {
        return Ok((
            StatusCode::CONFLICT,
            done(
                session,
                "This sign-in was decided meanwhile or has expired.",
            ),
        )
            .into_response());
    }
    tracing::info!(user = %session.user.email, device = %req.device_name, key = %req.public_key, approve, "web: device sign-in decided");
    let message = if approve {
        format!(
            "Approved. {} is signing in; you can close this page and return to your terminal.",
            req.device_name
        )
    } else {
        "Denied. The device was not signed in.".to_owned()
    };
    Ok(done(session, &message).into_response())
}
