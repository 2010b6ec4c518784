//! API errors and their JSON bodies.
//!
//! Every error answers `{"error": "<code>", "message": "…"}`; validation
//! errors (422) add `fields: [{field, message}]` naming what to fix.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// One rejected field. `field` is a dotted path into the request body
/// (`filters[0].ports`) or the name of a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `unsupported_media_type`, `validation` or `internal`.
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

#[derive(Debug)]
pub enum ApiError {
    /// Malformed request (JSON syntax, empty body).
    BadRequest(String),
    /// No or an unknown/expired bearer token.
    Unauthorized {
        message: String,
        invalid_token: bool,
    },
    /// A valid token that may not use the admin API.
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    UnsupportedMediaType(String),
    Validation(Vec<FieldError>),
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn not_found(entity: &str) -> Self {
        Self::NotFound(format!("{entity} not found"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity } => Self::not_found(entity),
            StoreError::Conflict(m) => Self::Conflict(conflict_message(&m)),
            StoreError::Invalid { field, message } => Self::field(field, message),
            StoreError::Reference(m) => Self::field("id", format!("refers to nothing: {m}")),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Database unique-violation texts differ per backend; name the column
/// when it is recognisable and say what happened.
fn conflict_message(db: &str) -> String {
    for column in ["email", "name", "public_key"] {
        if db.contains(&format!(".{column}")) || db.contains(&format!("_{column}_key")) {
            return format!("{column} is already taken");
        }
    }
    format!("already exists: {db}")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let www_authenticate = match &self {
            Self::Unauthorized { invalid_token, .. } => Some(if *invalid_token {
                HeaderValue::from_static("Bearer realm=\"keyhole\", error=\"invalid_token\"")
            } else {
                HeaderValue::from_static("Bearer realm=\"keyhole\"")
            }),
            _ => None,
        };
        let (status, error, message, fields) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m, vec![]),
            Self::Unauthorized { message, .. } => {
                (StatusCode::UNAUTHORIZED, "unauthorized", message, vec![])
            }
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m, vec![]),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m, vec![]),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m, vec![]),
            Self::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m,
                vec![],
            ),
            Self::Validation(fields) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                fields,
            ),
            Self::Internal(detail) => {
                tracing::error!(%detail, "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the portal log".to_owned(),
                    vec![],
                )
            }
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error,
                message,
                fields,
            }),
        )
            .into_response();
        if let Some(v) = www_authenticate {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
