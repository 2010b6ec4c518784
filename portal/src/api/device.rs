//! `/device/*`: the device authorization grant (RFC 8628) behind
//! `keyhole login`. Unauthenticated by design: the client has nothing yet.
//!
//! - `authorize` starts a request bound to the device's WireGuard public
//!   key and name, and answers the codes and where the user approves it
//!   (the web page `/device`, see `web::device`).
//! - `token` is polled with the device code and answers RFC 8628's errors
//!   (`authorization_pending`, `slow_down`, `expired_token`,
//!   `access_denied`, `invalid_grant`) with status 400, or once, on
//!   approval, a `client_session` token the control channel accepts only
//!   together with that public key.
//! - `revoke` lets `keyhole logout` end its own token (RFC 7009 style: an
//!   unknown token is no error).
//!
//! Each is limited per client IP ([`DeviceConfig`]); over the limit the
//! answer is 429 with `Retry-After`.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Extension, Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::TimeDelta;
use keyhole_proto::PublicKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{error::ApiError, extract::ApiJson};
use crate::{
    state::{AppState, Change},
    store::{DevicePoll, TokenKind},
    web::rate_limit::Limiter,
};

/// Settings of the device flow.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Where users reach the portal; `verification_uri` is built from it.
    /// Without it, from the request (`Host`, `X-Forwarded-Proto`).
    pub public_url: Option<String>,
    /// How long a request waits for the user.
    pub request_ttl: TimeDelta,
    /// Seconds between polls the client is told to keep.
    pub poll_interval_secs: u32,
    /// Lifetime of the token a device receives.
    pub session_ttl: TimeDelta,
    /// Requests started per client IP within `rate_window`.
    pub starts_per_ip: u32,
    /// Polls and revocations per client IP within `rate_window`.
    pub polls_per_ip: u32,
    pub rate_window: Duration,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            request_ttl: TimeDelta::minutes(10),
            poll_interval_secs: 5,
            session_ttl: TimeDelta::days(90),
            starts_per_ip: 30,
            // One device polling every 5 s for 10 minutes is 120; leave
            // room for several behind one NAT.
            polls_per_ip: 600,
            rate_window: Duration::from_secs(600),
        }
    }
}

/// Config and counters the handlers share.
pub struct DeviceApi {
    config: DeviceConfig,
    starts: Limiter,
    polls: Limiter,
}

impl DeviceApi {
    pub fn new(config: DeviceConfig) -> Self {
        Self {
            starts: Limiter::new(config.starts_per_ip, config.rate_window),
            polls: Limiter::new(config.polls_per_ip, config.rate_window),
            config,
        }
    }
}

type DeviceExt = Extension<Arc<DeviceApi>>;
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn ip_key(peer: &Peer) -> String {
    match peer {
        Some(Extension(ConnectInfo(a))) => a.ip().to_canonical().to_string(),
        None => "unknown".into(),
    }
}

/// Counts one request of `ip` against `limiter`; `Some` is the 429.
fn over_limit(limiter: &Limiter, ip: &str) -> Option<Response> {
    let now = Instant::now();
    if let Err(wait) = limiter.check(ip, now) {
        tracing::warn!(%ip, "device flow: rate limit hit");
        let secs = wait.as_secs().max(1);
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(OAuthError {
                error: "rate_limited".into(),
                error_description: format!("too many requests; try again in {secs} s"),
                interval: None,
            }),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Some(r);
    }
    limiter.record_failure(ip, now);
    None
}

fn base_url(headers: &HeaderMap, config: &DeviceConfig) -> String {
    if let Some(u) = &config.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceAuthorizeRequest {
    /// The device's WireGuard public key (base64); the token will only
    /// work together with it.
    #[schema(value_type = String)]
    pub public_key: PublicKey,
    /// Shown to the user approving the request and to admins.
    pub device_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceAuthorizeResponse {
    /// Secret the device polls `/device/token` with.
    pub device_code: String,
    /// Code the user enters or confirms, `BCDF-GHJK`.
    pub user_code: String,
    pub verification_uri: String,
    /// `verification_uri` with the user code filled in.
    pub verification_uri_complete: String,
    /// Seconds the request stays valid.
    pub expires_in: i64,
    /// Seconds to wait between polls.
    pub interval: u32,
}

/// Start signing a device in.
#[utoipa::path(post, path = "/device/authorize", tag = "device",
    request_body = DeviceAuthorizeRequest,
    responses(
        (status = 200, body = DeviceAuthorizeResponse),
        (status = 429, description = "Too many requests from this address", body = OAuthError),
    ))]
pub async fn device_authorize(
    State(state): State<AppState>,
    Extension(api): DeviceExt,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DeviceAuthorizeRequest>,
) -> Result<Response, ApiError> {
    if let Some(r) = over_limit(&api.starts, &ip_key(&peer)) {
        return Ok(r);
    }
    let c = &api.config;
    let new = state
        .store
        .start_device_authorization(
            req.public_key,
            &req.device_name,
            c.request_ttl,
            c.poll_interval_secs,
            super::now(),
        )
        .await?;
    let verification_uri = format!("{}/device", base_url(&headers, c));
    tracing::info!(device = %req.device_name.trim(), key = %req.public_key, "device sign-in started");
    Ok(Json(DeviceAuthorizeResponse {
        device_code: new.device_code,
        verification_uri_complete: format!("{verification_uri}?code={}", new.user_code),
        user_code: new.user_code,
        verification_uri,
        expires_in: c.request_ttl.num_seconds(),
        interval: new.interval_secs,
    })
    .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTokenRequest {
    pub device_code: String,
    /// `urn:ietf:params:oauth:grant-type:device_code` if given.
    #[serde(default)]
    pub grant_type: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceTokenResponse {
    /// The client session token (`kh_…`), shown once; stored hashed.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
    /// The device key the token is bound to.
    pub public_key: String,
}

/// RFC 8628 / RFC 6749 error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    /// `authorization_pending`, `slow_down`, `expired_token`,
    /// `access_denied`, `invalid_grant`, `unsupported_grant_type`,
    /// `rate_limited`.
    pub error: String,
    pub error_description: String,
    /// With `slow_down`: the new polling interval in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
}

fn oauth_error(error: &str, description: &str, interval: Option<u32>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(OAuthError {
            error: error.into(),
            error_description: description.into(),
            interval,
        }),
    )
        .into_response()
}

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Poll for the device's token.
#[utoipa::path(post, path = "/device/token", tag = "device",
    request_body = DeviceTokenRequest,
    responses(
        (status = 200, description = "Approved: the token, shown once", body = DeviceTokenResponse),
        (status = 400, description = "authorization_pending, slow_down, expired_token, \
            access_denied or invalid_grant", body = OAuthError),
        (status = 429, description = "Too many requests from this address", body = OAuthError),
    ))]
pub async fn device_token(
    State(state): State<AppState>,
    Extension(api): DeviceExt,
    peer: Peer,
    ApiJson(req): ApiJson<DeviceTokenRequest>,
) -> Result<Response, ApiError> {
    if let Some(r) = over_limit(&api.polls, &ip_key(&peer)) {
        return Ok(r);
    }
    if req.grant_type.as_deref().is_some_and(|g| g != GRANT_TYPE) {
        return Ok(oauth_error(
            "unsupported_grant_type",
            &format!("grant_type must be {GRANT_TYPE}"),
            None,
        ));
    }
    let poll = state
        .store
        .poll_device_authorization(&req.device_code, api.config.session_ttl, super::now())
        .await?;
    Ok(match poll {
        DevicePoll::Invalid => oauth_error(
            "invalid_grant",
            "unknown device code, or its token was already issued",
            None,
        ),
        DevicePoll::Expired => oauth_error(
            "expired_token",
            "the request expired; run `keyhole login` again",
            None,
        ),
        DevicePoll::Pending => oauth_error(
            "authorization_pending",
            "waiting for the user to approve",
            None,
        ),
        DevicePoll::SlowDown { interval_secs } => {
            oauth_error("slow_down", "polling too fast", Some(interval_secs))
        }
        DevicePoll::Denied => oauth_error("access_denied", "the user denied the request", None),
        DevicePoll::Approved {
            token,
            user,
            public_key,
            expires_at,
        } => {
            tracing::info!(%user, key = %public_key, token = %token.id, "device signed in");
            Json(DeviceTokenResponse {
                access_token: token.secret,
                token_type: "Bearer",
                expires_in: (expires_at - super::now()).num_seconds().max(0),
                public_key: public_key.to_string(),
            })
            .into_response()
        }
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRevokeRequest {
    /// The device's own client session token.
    pub token: String,
}

/// End a device's own sign-in (`keyhole logout`).
#[utoipa::path(post, path = "/device/revoke", tag = "device",
    request_body = DeviceRevokeRequest,
    responses(
        (status = 204, description = "The token no longer works (also if it never did)"),
        (status = 429, description = "Too many requests from this address", body = OAuthError),
    ))]
pub async fn device_revoke(
    State(state): State<AppState>,
    Extension(api): DeviceExt,
    peer: Peer,
    ApiJson(req): ApiJson<DeviceRevokeRequest>,
) -> Result<Response, ApiError> {
    if let Some(r) = over_limit(&api.polls, &ip_key(&peer)) {
        return Ok(r);
    }
    let info = state.store.verify_token(&req.token, super::now()).await?;
    // Only client sessions: this is no way to end other kinds of tokens.
    if let Some(info) = info.filter(|i| i.kind == TokenKind::ClientSession) {
        match state.store.delete_token(info.id).await {
            Ok(()) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        state.publish(Change::TokenRevoked(info.id));
        tracing::info!(token = %info.id, "device signed out");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_prefers_the_configured_one_and_checks_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("portal.test:8080"));
        let c = DeviceConfig::default();
        assert_eq!(base_url(&h, &c), "http://portal.test:8080");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(base_url(&h, &c), "https://portal.test:8080");
        h.insert(header::HOST, HeaderValue::from_static("evil/<x>"));
        assert_eq!(base_url(&h, &c), "https://localhost");
        let c = DeviceConfig {
            public_url: Some("https://keyhole.example/".into()),
            ..DeviceConfig::default()
        };
        assert_eq!(base_url(&h, &c), "https://keyhole.example");
    }
}
