//! Request extractors that answer with the API's error bodies: JSON
//! syntax errors are 400, JSON that parses but does not fit (wrong type,
//! missing or unknown field, invalid CIDR/pattern/port range/time zone) is
//! 422 naming the field; malformed ids in paths are 404.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::{ApiError, FieldError};
use crate::state::AppState;

/// A JSON request body, validated by the target type's `Deserialize`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses `bytes` as one JSON value of type `T`: first as any JSON (a
/// syntax error anywhere is 400, even where the shape is also wrong), then
/// into `T` (a mismatch is 422 naming the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| classify("", &e))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        classify(&path, &inner)
    })
}

fn classify(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = strip_position(e);
    match e.classify() {
        Category::Syntax | Category::Io => {
            ApiError::BadRequest(format!("malformed JSON: {message}"))
        }
        Category::Eof => ApiError::BadRequest(if e.line() == 1 && e.column() == 0 {
            "the request body is empty; expected JSON".to_owned()
        } else {
            format!("malformed JSON: {message}")
        }),
        Category::Data => {
            let mut field = if path == "." {
                String::new()
            } else {
                path.to_owned()
            };
            // serde reports a missing field at its parent; point at the field.
            if let Some(name) = message
                .strip_prefix("missing field `")
                .and_then(|r| r.strip_suffix('`'))
            {
                field = join(&field, name);
            }
            if let Some(name) = message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                field = join(&field, name);
            }
            if field.is_empty() {
                field = "body".to_owned();
            }
            ApiError::Validation(vec![FieldError { field, message }])
        }
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == name || parent.ends_with(&format!(".{name}")) {
        parent.to_owned()
    } else if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Query string parameters; the target type holds strings that handlers
/// parse with [`parse_param`], so errors can name the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::field("query", e.body_text()))
    }
}

/// Parses an optional query parameter, naming it on failure.
pub fn parse_param<T: std::str::FromStr>(
    value: Option<&str>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::field(name, format!("`{v}` is not {expected}"))),
    }
}

/// An id from the path; one that is not a UUID cannot name anything: 404.
pub fn path_id(raw: &str, entity: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(entity))
}
