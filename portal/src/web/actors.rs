//! Users (with admin passwords) and service accounts (tokens shown once).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};
use maud::{Markup, html};

use super::{
    form::{Errors, FormData},
    layout::{WebResult, badge, csrf, field, general_errors, no_store, page, post_button, time},
    session::{Post, Session},
};
use crate::{
    api::{
        error::ApiError,
        extract::path_id,
        tokens::{self, NewToken},
    },
    policy::{ServiceAccountId, UserId},
    server_bootstrap::hash_password,
    state::{AppState, Change},
    store::{ServiceAccount, TokenKind, TokenOwner, User, UserUpdate},
};

const MIN_PASSWORD: usize = 8;

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    Ok(UserId(path_id(raw, "user")?))
}

fn sa_id(raw: &str) -> Result<ServiceAccountId, ApiError> {
    Ok(ServiceAccountId(path_id(raw, "service account")?))
}

/// Checks and hashes a new password (argon2id, off the async workers).
async fn new_password_hash(password: &str, errors: &mut Errors) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD {
        errors.add(
            "password",
            format!("must be at least {MIN_PASSWORD} characters"),
        );
        return None;
    }
    let pw = password.to_owned();
    match tokio::task::spawn_blocking(move || hash_password(&pw)).await {
        Ok(Ok(h)) => Some(h),
        _ => {
            errors.add("password", "could not be hashed");
            None
        }
    }
}

// ---- users ----

struct UserInput {
    email: String,
    name: String,
    is_admin: bool,
}

fn users_page(session: &Session, users: &[User], input: &UserInput, errors: &Errors) -> Markup {
    page(
        session,
        "/users",
        "Users",
        html! {
            div.table-wrap {
                table.sortable #users {
                    thead { tr { th { "E-mail" } th { "Name" } th { "Role" } th { "Status" } th { "Created" } } }
                    tbody {
                        @for u in users {
                            tr {
                                td { a href={ "/users/" (u.id) } { (u.email) } }
                                td { (u.name) }
                                td { @if u.is_admin { "admin" } @else { "user" } }
                                td { (badge(!u.disabled, "enabled", "disabled")) }
                                td { (time(Some(u.created_at))) }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "New user" }
                (general_errors(errors))
                form method="post" action="/users" {
                    (csrf(session))
                    (field(errors, "email", "E-mail", html! { input #email type="email" name="email" value=(input.email) required; }))
                    (field(errors, "name", "Name", html! { input #name name="name" value=(input.name) required maxlength="255"; }))
                    (field(errors, "is_admin", "Role", html! {
                        label.check { input #is_admin type="checkbox" name="is_admin" checked[input.is_admin]; " Admin (may use this portal and the admin API)" }
                    }))
                    (field(errors, "password", "Password (admins)", html! {
                        input #password type="password" name="password" autocomplete="new-password";
                        p.hint { "Optional; at least 8 characters. Users without one sign in through OIDC." }
                    }))
                    button.primary type="submit" { "Create user" }
                }
            }
        },
    )
}

pub async fn users(State(state): State<AppState>, session: Session) -> WebResult {
    let users = state.store.list_users(10_000, 0).await?;
    let input = UserInput {
        email: String::new(),
        name: String::new(),
        is_admin: false,
    };
    Ok(users_page(&session, &users, &input, &Errors::default()).into_response())
}

pub async fn create_user(State(state): State<AppState>, Post { session, form }: Post) -> WebResult {
    let input = UserInput {
        email: form.text("email"),
        name: form.text("name"),
        is_admin: form.checked("is_admin"),
    };
    let mut errors = Errors::default();
    let password = form.get("password").unwrap_or("");
    let hash = if password.is_empty() {
        None
    } else {
        new_password_hash(password, &mut errors).await
    };
    if errors.is_empty() {
        match state
            .store
            .create_user(&input.email, &input.name, input.is_admin, crate::api::now())
            .await
        {
            Ok(u) => {
                if let Some(h) = hash {
                    state.store.set_password_hash(&u, &h).await?;
                }
                state.publish(Change::ActorChanged(u.id.0));
                return Ok(Redirect::to("/users").into_response());
            }
            Err(e) => errors = Errors::from_api(e.into(), |f| f.to_owned())?,
        }
    }
    let users = state.store.list_users(10_000, 0).await?;
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        users_page(&session, &users, &input, &errors),
    )
        .into_response())
}

fn user_page(session: &Session, u: &User, has_password: bool, errors: &Errors) -> Markup {
    let uid = u.id.to_string();
    page(
        session,
        "/users",
        &u.email,
        html! {
            section.card {
                (general_errors(errors))
                form method="post" action={ "/users/" (uid) } {
                    (csrf(session))
                    (field(errors, "name", "Name", html! { input #name name="name" value=(u.name) required maxlength="255"; }))
                    (field(errors, "is_admin", "Role", html! {
                        label.check { input #is_admin type="checkbox" name="is_admin" checked[u.is_admin]; " Admin" }
                    }))
                    (field(errors, "disabled", "Status", html! {
                        label.check { input #disabled type="checkbox" name="disabled" checked[u.disabled]; " Disabled (signs out and disconnects the user's devices)" }
                    }))
                    (field(errors, "password", "New password", html! {
                        input #password type="password" name="password" autocomplete="new-password";
                        p.hint { @if has_password { "Has a password. " } @else { "No password set. " } "Leave empty to keep it; a new one ends the user's web sessions." }
                    }))
                    button.primary type="submit" { "Save" }
                }
            }
            section.card.danger-zone {
                h2 { "Delete" }
                p { "Deletes the user with their memberships, devices and tokens." }
                (post_button(session, &format!("/users/{uid}/delete"), "Delete user", "danger", Some("Delete this user?")))
            }
        },
    )
}

pub async fn user(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> WebResult {
    let u = state.store.get_user(user_id(&id)?).await?;
    let has = state.store.password_hash(&u).await?.is_some();
    Ok(user_page(&session, &u, has, &Errors::default()).into_response())
}

async fn apply_user_update(state: &AppState, id: UserId, form: &FormData) -> Result<User, Errors> {
    let mut errors = Errors::default();
    let password = form.get("password").unwrap_or("");
    let hash = if password.is_empty() {
        None
    } else {
        new_password_hash(password, &mut errors).await
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let update = UserUpdate {
        name: Some(form.text("name")),
        is_admin: Some(form.checked("is_admin")),
        disabled: Some(form.checked("disabled")),
    };
    let fail = |e: crate::store::StoreError| {
        Errors::from_api(e.into(), |f| f.to_owned()).unwrap_or_else(|e| {
            let mut errors = Errors::default();
            errors.general.push(format!("{e:?}"));
            errors
        })
    };
    let u = state.store.update_user(id, update).await.map_err(fail)?;
    if let Some(h) = hash {
        state.store.set_password_hash(&u, &h).await.map_err(fail)?;
        state.store.delete_web_sessions_of(id).await.map_err(fail)?;
    }
    Ok(u)
}

pub async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { session, form }: Post,
) -> WebResult {
    let id = user_id(&id)?;
    match apply_user_update(&state, id, &form).await {
        Ok(_) => {
            state.publish(Change::ActorChanged(id.0));
            Ok(Redirect::to("/users").into_response())
        }
        Err(errors) => {
            let u = state.store.get_user(id).await?;
            let has = state.store.password_hash(&u).await?.is_some();
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                user_page(&session, &u, has, &errors),
            )
                .into_response())
        }
    }
}

pub async fn delete_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: Post,
) -> WebResult {
    let id = user_id(&id)?;
    state.store.delete_user(id).await?;
    state.publish(Change::ActorDeleted(id.0));
    Ok(Redirect::to("/users").into_response())
}

// ---- service accounts ----

fn service_accounts_page(
    session: &Session,
    sas: &[ServiceAccount],
    name: &str,
    errors: &Errors,
) -> Markup {
    page(
        session,
        "/service-accounts",
        "Service accounts",
        html! {
            p.lead { "Headless clients (servers, CI) sign in with a service account's token." }
            div.table-wrap {
                table.sortable #service-accounts {
                    thead { tr { th { "Name" } th { "Status" } th { "Created" } } }
                    tbody {
                        @for s in sas {
                            tr {
                                td { a href={ "/service-accounts/" (s.id) } { (s.name) } }
                                td { (badge(!s.disabled, "enabled", "disabled")) }
                                td { (time(Some(s.created_at))) }
                            }
                        }
                        @if sas.is_empty() { tr { td colspan="3" .muted { "No service accounts yet." } } }
                    }
                }
            }
            section.card {
                h2 { "New service account" }
                (general_errors(errors))
                form method="post" action="/service-accounts" {
                    (csrf(session))
                    (field(errors, "name", "Name", html! { input #name name="name" value=(name) required maxlength="255"; }))
                    button.primary type="submit" { "Create and issue a token" }
                }
            }
        },
    )
}

pub async fn service_accounts(State(state): State<AppState>, session: Session) -> WebResult {
    let sas = state.store.list_service_accounts(10_000, 0).await?;
    Ok(service_accounts_page(&session, &sas, "", &Errors::default()).into_response())
}

fn token_once(session: &Session, sa: &ServiceAccount, token: &str) -> axum::response::Response {
    no_store(page(
        session,
        "/service-accounts",
        &sa.name,
        html! {
            section.card.secret {
                h2 { "Service token" }
                p { strong { "Shown only now" } "; store it in the client's secret store." }
                pre.command #service-token { (token) }
                p { "Use it with " code { "KEYHOLE_TOKEN=… keyhole up" } "." }
                p { a href={ "/service-accounts/" (sa.id) } { "Continue" } }
            }
        },
    ))
}

pub async fn create_service_account(
    State(state): State<AppState>,
    Post { session, form }: Post,
) -> WebResult {
    let name = form.text("name");
    match state
        .store
        .create_service_account(&name, crate::api::now())
        .await
    {
        Ok(sa) => {
            state.publish(Change::ActorChanged(sa.id.0));
            let (_, created) = tokens::create(
                &state,
                TokenOwner::ServiceAccount(sa.id),
                TokenKind::ServiceAccount,
                NewToken::default(),
            )
            .await?;
            Ok(token_once(&session, &sa, &created.0.token))
        }
        Err(e) => {
            let errors = Errors::from_api(e.into(), |f| f.to_owned())?;
            let sas = state.store.list_service_accounts(10_000, 0).await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                service_accounts_page(&session, &sas, &name, &errors),
            )
                .into_response())
        }
    }
}

pub async fn service_account(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> WebResult {
    let sa = state.store.get_service_account(sa_id(&id)?).await?;
    let toks = state
        .store
        .list_tokens(
            TokenOwner::ServiceAccount(sa.id),
            TokenKind::ServiceAccount,
            1000,
            0,
        )
        .await?;
    let sid = sa.id.to_string();
    Ok(page(
        &session,
        "/service-accounts",
        &sa.name,
        html! {
            section.card {
                h2 { "Tokens" }
                div.table-wrap {
                    table.sortable {
                        thead { tr { th { "Id" } th { "Created" } th { "Last used" } th { "Expires" } th { "" } } }
                        tbody {
                            @for t in &toks {
                                tr {
                                    td { code { (t.id) } }
                                    td { (time(Some(t.created_at))) }
                                    td { (time(t.last_used_at)) }
                                    td { (time(t.expires_at)) }
                                    td { (post_button(&session, &format!("/service-accounts/{sid}/tokens/{}/revoke", t.id), "Revoke", "danger small", Some("Revoke this token?"))) }
                                }
                            }
                            @if toks.is_empty() { tr { td colspan="5" .muted { "No tokens." } } }
                        }
                    }
                }
                (post_button(&session, &format!("/service-accounts/{sid}/tokens"), "New token", "primary", None))
            }
            section.card {
                h2 { "Status" }
                p { (badge(!sa.disabled, "enabled", "disabled")) }
                form.inline method="post" action={ "/service-accounts/" (sid) "/disabled" } {
                    (csrf(&session))
                    input type="hidden" name="disabled" value=(if sa.disabled { "0" } else { "1" });
                    button type="submit" { @if sa.disabled { "Enable" } @else { "Disable" } }
                }
            }
            section.card.danger-zone {
                h2 { "Delete" }
                (post_button(&session, &format!("/service-accounts/{sid}/delete"), "Delete service account", "danger", Some("Delete this service account?")))
            }
        },
    )
    .into_response())
}

pub async fn set_service_account_disabled(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { form, .. }: Post,
) -> WebResult {
    let id = sa_id(&id)?;
    state
        .store
        .update_service_account(id, None, Some(form.text("disabled") == "1"))
        .await?;
    state.publish(Change::ActorChanged(id.0));
    Ok(Redirect::to(&format!("/service-accounts/{id}")).into_response())
}

pub async fn delete_service_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: Post,
) -> WebResult {
    let id = sa_id(&id)?;
    state.store.delete_service_account(id).await?;
    state.publish(Change::ActorDeleted(id.0));
    Ok(Redirect::to("/service-accounts").into_response())
}

pub async fn create_service_account_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { session, .. }: Post,
) -> WebResult {
    let sa = state.store.get_service_account(sa_id(&id)?).await?;
    let (_, created) = tokens::create(
        &state,
        TokenOwner::ServiceAccount(sa.id),
        TokenKind::ServiceAccount,
        NewToken::default(),
    )
    .await?;
    Ok(token_once(&session, &sa, &created.0.token))
}

pub async fn revoke_service_account_token(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    _post: Post,
) -> WebResult {
    let id = sa_id(&id)?;
    tokens::revoke(
        &state,
        TokenOwner::ServiceAccount(id),
        TokenKind::ServiceAccount,
        &token,
    )
    .await?;
    Ok(Redirect::to(&format!("/service-accounts/{id}")).into_response())
}
