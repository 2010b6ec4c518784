//! The OpenAPI document: built from the same `routes!` registrations as
//! the router (so they cannot drift), then completed with what every
//! operation shares: bearer security and the error responses.

use std::sync::OnceLock;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, OpenApi as Doc, Ref, RefOr, ResponseBuilder,
        path::{Operation, PathItem},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use super::error::{ErrorBody, FieldError};

pub const SECURITY_SCHEME: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyhole admin API",
        description = "Administer a Keyhole deployment. Authenticate with an admin API token: \
            `Authorization: Bearer kh_…`.\n\n\
            Errors: 400 malformed JSON; 401 no or an unknown/expired token; 403 a valid token \
            that may not use this API; 404 unknown id (also for ids that are not UUIDs); \
            409 a unique value is taken; 415 the body is not `application/json`; 422 the \
            request parses but is invalid, with `fields` naming each problem.\n\n\
            Lists are paginated with `limit` (1–200, default 50) and `offset`; follow \
            `next_offset` until it is null. Every list has a stable order on unique columns.",
    ),
    servers((url = "/api/v1")),
    components(schemas(ErrorBody, FieldError)),
    modifiers(&Security),
    tags(
        (name = "users"), (name = "service-accounts"), (name = "groups"), (name = "sites"),
        (name = "gateways"), (name = "relays"), (name = "resources"), (name = "policies"),
        (name = "clients"), (name = "flow-log"), (name = "device"), (name = "meta"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kh_ token")
                    .build(),
            ),
        );
    }
}

/// Paths served without authentication.
pub const PUBLIC_PATHS: &[&str] = &[
    "/openapi.json",
    // The device flow (`keyhole login`): the client has no token yet.
    "/device/authorize",
    "/device/token",
    "/device/revoke",
];

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build(),
    )
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds security and the shared error responses to every operation.
pub fn complete(doc: &mut Doc) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = PUBLIC_PATHS.contains(&path.as_str());
        let has_path_id = path.contains('{');
        for op in operations(item) {
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error_response(description));
            };
            add("500", "Internal error");
            if public {
                op.security = Some(vec![SecurityRequirement::default()]);
            } else {
                op.security = Some(vec![SecurityRequirement::new(
                    SECURITY_SCHEME,
                    Vec::<String>::new(),
                )]);
                add(
                    "401",
                    "No bearer token, or an unknown, revoked or expired one",
                );
                add("403", "The token may not use the admin API");
            }
            if has_path_id {
                add("404", "No such id");
            }
            let has_query = op.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
            });
            if op.request_body.is_some() {
                add("400", "Malformed JSON");
                add("415", "The body is not application/json");
                add("422", "Invalid fields");
            } else if has_query {
                add("422", "Invalid query parameters");
            }
        }
    }
}

static DOCUMENT: OnceLock<String> = OnceLock::new();

/// The serialized document (built once).
pub fn document_json() -> &'static str {
    DOCUMENT.get_or_init(|| {
        serde_json::to_string_pretty(&super::openapi()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "serializing the OpenAPI document");
            "{}".to_owned()
        })
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
               content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}
