//! The admin web UI: server-rendered pages (maud) with a little vendored
//! JavaScript (`portal/assets/app.js`: table sorting, live gateway rows
//! over SSE, the sign-in link). No build step.
//!
//! - Sign-in: e-mail + password (argon2id, see `server_bootstrap`) or the
//!   one-time link printed at first start; rate-limited per IP and per
//!   account ([`rate_limit`]).
//! - Sessions: a random secret in an HttpOnly, SameSite=Lax cookie (Secure
//!   over https), stored hashed (`store::web_sessions`).
//! - CSRF: every POST goes through [`session::Post`], which checks the
//!   session's token; the sign-in form uses a double-submit cookie.
//! - Writes reuse the REST API's validation (`api::…`) and publish the same
//!   [`crate::state::Change`]s after committing.
//!
//! - End users sign in only for `/device` (approving `keyhole login`):
//!   their sessions pass [`user_session::UserSession`], never
//!   [`session::Session`], so every admin page answers them 403.
//!
//! The binary mounts [`router`] at `/`.

mod actors;
mod assets;
mod auth;
mod clients;
mod device;
mod flow_log;
mod form;
mod gateways;
mod groups;
mod layout;
mod oidc;
mod policies;
pub mod rate_limit;
mod resources;
mod session;
mod sites;
mod user_session;

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    response::Redirect,
    routing::{get, post},
};

use crate::state::AppState;
pub use oidc::OidcConfig;
use rate_limit::Limiter;

/// Settings of the web UI.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where users and gateways reach the portal (`https://…`); used in
    /// the gateway deploy command, and `https` here makes cookies Secure.
    /// Without it both follow the request (`Host`, `X-Forwarded-Proto`).
    pub public_url: Option<String>,
    /// How long a sign-in lasts.
    pub session_ttl: chrono::TimeDelta,
    /// Failed sign-ins allowed per account within `rate_window`.
    pub failures_per_account: u32,
    /// Failed sign-ins allowed per client IP within `rate_window`.
    pub failures_per_ip: u32,
    pub rate_window: Duration,
    /// How often the live gateway table re-reads presence from the store
    /// (presence changes are store writes without a Change event).
    pub live_interval: Duration,
    /// Sign-in through an OIDC provider, besides e-mail and password.
    pub oidc: Option<OidcConfig>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            session_ttl: chrono::TimeDelta::hours(12),
            failures_per_account: 5,
            failures_per_ip: 20,
            rate_window: Duration::from_secs(15 * 60),
            live_interval: Duration::from_secs(1),
            oidc: None,
        }
    }
}

/// What the web handlers share besides [`AppState`].
pub(crate) struct Web {
    pub config: WebConfig,
    pub per_account: Limiter,
    pub per_ip: Limiter,
    pub oidc: Option<oidc::Oidc>,
}

pub(crate) type WebExt = Extension<Arc<Web>>;

/// The admin UI with default settings, to be mounted at `/`.
pub fn router() -> Router<AppState> {
    router_with(WebConfig::default())
}

pub fn router_with(config: WebConfig) -> Router<AppState> {
    let oidc = config.oidc.clone().and_then(|c| match oidc::Oidc::new(c) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::error!(error = %e, "web: OIDC sign-in disabled: bad configuration");
            None
        }
    });
    let web = Arc::new(Web {
        oidc,
        per_account: Limiter::new(config.failures_per_account, config.rate_window),
        per_ip: Limiter::new(config.failures_per_ip, config.rate_window),
        config,
    });
    Router::new()
        .route("/", get(|| async { Redirect::to("/gateways") }))
        .route("/assets/{file}", get(assets::serve))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-in/link", post(auth::sign_in_link))
        .route("/sign-in/oidc", get(oidc::start))
        .route("/sign-in/oidc/callback", get(oidc::callback))
        .route("/sign-out", post(auth::sign_out))
        // End users (not only admins) approve `keyhole login` here.
        .route("/device", get(device::show).post(device::decide))
        .route("/sites", get(sites::list).post(sites::create))
        .route("/sites/{id}", get(sites::show))
        .route("/sites/{id}/rename", post(sites::rename))
        .route("/sites/{id}/delete", post(sites::delete))
        .route("/sites/{id}/tokens", post(sites::create_token))
        .route(
            "/sites/{id}/tokens/{token}/revoke",
            post(sites::revoke_token),
        )
        .route("/gateways", get(gateways::list))
        .route("/gateways/events", get(gateways::events))
        .route("/gateways/{id}/delete", post(gateways::delete))
        .route("/resources", get(resources::list).post(resources::create))
        .route("/resources/new", get(resources::new))
        .route(
            "/resources/{id}",
            get(resources::edit).post(resources::update),
        )
        .route("/resources/{id}/delete", post(resources::delete))
        .route("/users", get(actors::users).post(actors::create_user))
        .route("/users/{id}", get(actors::user).post(actors::update_user))
        .route("/users/{id}/delete", post(actors::delete_user))
        .route(
            "/service-accounts",
            get(actors::service_accounts).post(actors::create_service_account),
        )
        .route("/service-accounts/{id}", get(actors::service_account))
        .route(
            "/service-accounts/{id}/disabled",
            post(actors::set_service_account_disabled),
        )
        .route(
            "/service-accounts/{id}/delete",
            post(actors::delete_service_account),
        )
        .route(
            "/service-accounts/{id}/tokens",
            post(actors::create_service_account_token),
        )
        .route(
            "/service-accounts/{id}/tokens/{token}/revoke",
            post(actors::revoke_service_account_token),
        )
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{id}", get(groups::show))
        .route("/groups/{id}/rename", post(groups::rename))
        .route("/groups/{id}/delete", post(groups::delete))
        .route("/groups/{id}/members", post(groups::add_member))
        .route(
            "/groups/{id}/members/{member}/remove",
            post(groups::remove_member),
        )
        .route("/policies", get(policies::list).post(policies::create))
        .route("/policies/new", get(policies::new))
        .route("/policies/{id}", get(policies::edit).post(policies::update))
        .route("/policies/{id}/delete", post(policies::delete))
        .route("/clients", get(clients::list))
        .route("/clients/{id}/revoke", post(clients::revoke))
        .route("/clients/{id}/delete", post(clients::delete))
        .route(
            "/clients/sign-ins/{token}/revoke",
            post(clients::revoke_sign_in),
        )
        .route("/relays", get(clients::relays))
        .route("/flow-log", get(flow_log::list))
        .layer(Extension(web))
}

pub(crate) use layout::{api_error_page, error_page};
