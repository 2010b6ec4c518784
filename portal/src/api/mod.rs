//! The REST API under `/api/v1` (the binary nests [`router`] there).
//!
//! One file per entity; each handler is annotated for the OpenAPI
//! document, and routes are registered only through utoipa-axum's
//! `routes!`, which feeds both the router and the document
//! ([`openapi`], served at `/api/v1/openapi.json`).
//!
//! - Auth: bearer admin API tokens ([`auth::Admin`]); 401 vs 403.
//! - Errors: see [`error`]; malformed JSON 400, invalid fields 422 with
//!   names, unknown ids 404, conflicts 409.
//! - Pagination: see [`page`].
//! - Every committed write that may affect sessions publishes a
//!   [`crate::state::Change`].

pub mod auth;
mod clients;
pub mod device;
pub mod error;
pub mod extract;
mod flow_log;
mod gateways;
mod groups;
pub mod openapi;
pub mod page;
pub(crate) mod policies;
pub(crate) mod resources;
mod service_accounts;
mod sites;
pub(crate) mod tokens;
mod users;

use axum::{Router, http::Uri};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;
use error::ApiError;

fn build() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(users::me))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::list_user_tokens, users::create_user_token))
        .routes(routes!(users::revoke_user_token))
        .routes(routes!(
            service_accounts::list_service_accounts,
            service_accounts::create_service_account
        ))
        .routes(routes!(
            service_accounts::get_service_account,
            service_accounts::update_service_account,
            service_accounts::delete_service_account
        ))
        .routes(routes!(
            service_accounts::list_service_account_tokens,
            service_accounts::create_service_account_token
        ))
        .routes(routes!(service_accounts::revoke_service_account_token))
        .routes(routes!(groups::list_groups, groups::create_group))
        .routes(routes!(
            groups::get_group,
            groups::update_group,
            groups::delete_group
        ))
        .routes(routes!(groups::list_members, groups::add_member))
        .routes(routes!(groups::remove_member))
        .routes(routes!(sites::list_sites, sites::create_site))
        .routes(routes!(
            sites::get_site,
            sites::update_site,
            sites::delete_site
        ))
        .routes(routes!(sites::list_site_tokens, sites::create_site_token))
        .routes(routes!(sites::revoke_site_token))
        .routes(routes!(gateways::list_gateways))
        .routes(routes!(gateways::get_gateway, gateways::delete_gateway))
        .routes(routes!(gateways::list_relays))
        .routes(routes!(
            resources::list_resources,
            resources::create_resource
        ))
        .routes(routes!(
            resources::get_resource,
            resources::update_resource,
            resources::delete_resource
        ))
        .routes(routes!(policies::list_policies, policies::create_policy))
        .routes(routes!(
            policies::get_policy,
            policies::update_policy,
            policies::delete_policy
        ))
        .routes(routes!(clients::list_clients))
        .routes(routes!(
            clients::get_client,
            clients::update_client,
            clients::delete_client
        ))
        .routes(routes!(flow_log::list_flow_log))
        .routes(routes!(device::device_authorize))
        .routes(routes!(device::device_token))
        .routes(routes!(device::device_revoke))
}

/// The API's routes, relative to where the binary nests them (`/api/v1`).
pub fn router() -> Router<AppState> {
    router_with(device::DeviceConfig::default())
}

/// [`router`] with the device flow's settings.
pub fn router_with(device: device::DeviceConfig) -> Router<AppState> {
    let (router, _) = build().split_for_parts();
    router
        .layer(axum::Extension(std::sync::Arc::new(
            device::DeviceApi::new(device),
        )))
        .fallback(
            |uri: Uri| async move { ApiError::NotFound(format!("no API route {}", uri.path())) },
        )
}

/// The OpenAPI document of [`router`]'s routes, paths relative to the
/// `/api/v1` server URL it names.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = build().split_for_parts();
    openapi::complete(&mut doc);
    doc
}

/// Wall-clock now (chrono's `clock` feature is off in this workspace).
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::now().into()
}
