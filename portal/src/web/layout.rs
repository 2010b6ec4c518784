//! The page shell, shared form widgets and error pages.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::{
    form::Errors,
    session::{CSRF_FIELD, Session},
};
use crate::{api::error::ApiError, store::StoreError};

const NAV: &[(&str, &str)] = &[
    ("/gateways", "Gateways"),
    ("/sites", "Sites"),
    ("/resources", "Resources"),
    ("/policies", "Policies"),
    ("/groups", "Groups"),
    ("/users", "Users"),
    ("/service-accounts", "Service accounts"),
    ("/clients", "Clients"),
    ("/relays", "Relays"),
    ("/flow-log", "Flow log"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Keyhole" }
            link rel="stylesheet" href="/assets/app.css";
            script src="/assets/app.js" defer {}
        }
    }
}

/// A signed-in page: the navigation (with `active` marked), the title and
/// `body`.
pub fn page(session: &Session, active: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { "Keyhole" }
                    input #nav-toggle type="checkbox" aria-label="Menu";
                    label.nav-toggle for="nav-toggle" { "Menu" }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(*href == active).then_some("active")] { (label) }
                        }
                    }
                    form.signout method="post" action="/sign-out" {
                        (csrf(session))
                        span.who { (session.user.email) }
                        button.link type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page outside the session (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main.narrow {
                    p.brand-big { "Keyhole" }
                    (body)
                }
            }
        }
    }
}

pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// A labelled input with its errors underneath.
pub fn field(errors: &Errors, name: &str, label: &str, input: Markup) -> Markup {
    let msgs = errors.for_field(name);
    html! {
        div.field.invalid[!msgs.is_empty()] {
            label for=(name) { (label) }
            (input)
            @for m in &msgs {
                p.error id={ (name) "-error" } { (m) }
            }
        }
    }
}

/// Errors not tied to one field, above a form.
pub fn general_errors(errors: &Errors) -> Markup {
    html! {
        @if !errors.general.is_empty() || !errors.fields.is_empty() {
            div.alert role="alert" {
                @if errors.general.is_empty() {
                    "Please correct the fields marked below."
                }
                @for m in &errors.general { p { (m) } }
            }
        }
    }
}

/// A one-button form posting to `action` (delete, revoke, …).
pub fn post_button(
    session: &Session,
    action: &str,
    label: &str,
    class: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf(session))
            button type="submit" class=(class) { (label) }
        }
    }
}

pub fn time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) data-sort=(t.timestamp_millis()) {
                (t.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        },
        None => html! { span.muted data-sort="0" { "never" } },
    }
}

pub fn badge(on: bool, yes: &str, no: &str) -> Markup {
    html! {
        @if on { span.badge.ok { (yes) } } @else { span.badge.off { (no) } }
    }
}

/// HTML that must not be cached (it shows a secret once).
pub fn no_store(markup: Markup) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], markup).into_response()
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        bare(
            title,
            html! {
                h1 { (title) }
                p { (message) }
                p { a href="/" { "Back to the portal" } }
            },
        ),
    )
        .into_response()
}

pub fn api_error_page(e: ApiError) -> Response {
    match e {
        ApiError::NotFound(m) => error_page(StatusCode::NOT_FOUND, "Not found", &m),
        ApiError::Validation(fields) => {
            let m = fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ");
            error_page(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request", &m)
        }
        ApiError::Conflict(m) => error_page(StatusCode::CONFLICT, "Conflict", &m),
        ApiError::BadRequest(m) | ApiError::UnsupportedMediaType(m) => {
            error_page(StatusCode::BAD_REQUEST, "Bad request", &m)
        }
        ApiError::Forbidden(m) => error_page(StatusCode::FORBIDDEN, "Forbidden", &m),
        ApiError::Unauthorized { message, .. } => {
            error_page(StatusCode::UNAUTHORIZED, "Sign-in required", &message)
        }
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "web request failed");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Internal error; see the portal log.",
            )
        }
    }
}

/// Any handler failure, shown as a page.
pub struct WebError(pub ApiError);

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        api_error_page(self.0)
    }
}

pub type WebResult<T = Response> = Result<T, WebError>;
