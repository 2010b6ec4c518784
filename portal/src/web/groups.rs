//! Groups and their members (users and service accounts).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};
use maud::{Markup, html};
use uuid::Uuid;

use super::{
    form::Errors,
    layout::{WebResult, csrf, field, general_errors, page, post_button, time},
    session::{Post, Session},
};
use crate::{
    api::{error::ApiError, extract::path_id},
    policy::{ActorId, GroupId, ServiceAccountId, UserId},
    state::{AppState, Change},
    store::{Group, StoreError},
};

fn group_id(raw: &str) -> Result<GroupId, ApiError> {
    Ok(GroupId(path_id(raw, "group")?))
}

fn list_page(session: &Session, groups: &[Group], name: &str, errors: &Errors) -> Markup {
    page(
        session,
        "/groups",
        "Groups",
        html! {
            p.lead { "Policies grant groups access to resources." }
            div.table-wrap {
                table.sortable #groups {
                    thead { tr { th { "Name" } th { "Created" } } }
                    tbody {
                        @for g in groups {
                            tr {
                                td { a href={ "/groups/" (g.id) } { (g.name) } }
                                td { (time(Some(g.created_at))) }
                            }
                        }
                        @if groups.is_empty() { tr { td colspan="2" .muted { "No groups yet." } } }
                    }
                }
            }
            section.card {
                h2 { "New group" }
                (general_errors(errors))
                form method="post" action="/groups" {
                    (csrf(session))
                    (field(errors, "name", "Name", html! { input #name name="name" value=(name) required maxlength="255"; }))
                    button.primary type="submit" { "Create group" }
                }
            }
        },
    )
}

pub async fn list(State(state): State<AppState>, session: Session) -> WebResult {
    let groups = state.store.list_groups(10_000, 0).await?;
    Ok(list_page(&session, &groups, "", &Errors::default()).into_response())
}

pub async fn create(State(state): State<AppState>, Post { session, form }: Post) -> WebResult {
    let name = form.text("name");
    match state.store.create_group(&name, crate::api::now()).await {
        Ok(g) => {
            state.publish(Change::GroupChanged(g.id.0));
            Ok(Redirect::to(&format!("/groups/{}", g.id)).into_response())
        }
        Err(e) => {
            let errors = Errors::from_api(e.into(), |f| f.to_owned())?;
            let groups = state.store.list_groups(10_000, 0).await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                list_page(&session, &groups, &name, &errors),
            )
                .into_response())
        }
    }
}

async fn show_page(
    state: &AppState,
    session: &Session,
    g: &Group,
    errors: &Errors,
) -> WebResult<Markup> {
    let members = state.store.list_members(g.id, 100_000, 0).await?;
    let users = state.store.list_users(100_000, 0).await?;
    let sas = state.store.list_service_accounts(100_000, 0).await?;
    let gid = g.id.to_string();
    let describe = |a: &ActorId| -> (String, &'static str, Uuid) {
        match a {
            ActorId::User(u) => (
                users
                    .iter()
                    .find(|x| x.id == *u)
                    .map(|x| x.email.clone())
                    .unwrap_or_default(),
                "user",
                u.0,
            ),
            ActorId::ServiceAccount(s) => (
                sas.iter()
                    .find(|x| x.id == *s)
                    .map(|x| x.name.clone())
                    .unwrap_or_default(),
                "service account",
                s.0,
            ),
        }
    };
    Ok(page(
        session,
        "/groups",
        &g.name,
        html! {
            section.card {
                h2 { "Members" }
                div.table-wrap {
                    table.sortable #members {
                        thead { tr { th { "Member" } th { "Kind" } th { "" } } }
                        tbody {
                            @for m in &members {
                                @let (label, kind, id) = describe(m);
                                tr {
                                    td { (label) }
                                    td { (kind) }
                                    td { (post_button(session, &format!("/groups/{gid}/members/{id}/remove"), "Remove", "danger small", None)) }
                                }
                            }
                            @if members.is_empty() { tr { td colspan="3" .muted { "No members." } } }
                        }
                    }
                }
                (general_errors(errors))
                form.row method="post" action={ "/groups/" (gid) "/members" } {
                    (csrf(session))
                    (field(errors, "member", "Add member", html! {
                        select #member name="member" {
                            optgroup label="Users" {
                                @for u in &users {
                                    @if !members.contains(&ActorId::User(u.id)) {
                                        option value={ "user:" (u.id) } { (u.email) }
                                    }
                                }
                            }
                            optgroup label="Service accounts" {
                                @for s in &sas {
                                    @if !members.contains(&ActorId::ServiceAccount(s.id)) {
                                        option value={ "sa:" (s.id) } { (s.name) }
                                    }
                                }
                            }
                        }
                    }))
                    button.primary type="submit" { "Add" }
                }
            }
            section.card {
                h2 { "Rename" }
                form method="post" action={ "/groups/" (gid) "/rename" } {
                    (csrf(session))
                    (field(errors, "name", "Name", html! { input #name name="name" value=(g.name) required maxlength="255"; }))
                    button type="submit" { "Save" }
                }
            }
            section.card.danger-zone {
                h2 { "Delete" }
                p { "Deletes the group and its policies; access it granted is revoked." }
                (post_button(session, &format!("/groups/{gid}/delete"), "Delete group", "danger", Some("Delete this group?")))
            }
        },
    ))
}

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> WebResult {
    let g = state.store.get_group(group_id(&id)?).await?;
    Ok(show_page(&state, &session, &g, &Errors::default())
        .await?
        .into_response())
}

async fn redisplay(
    state: &AppState,
    session: &Session,
    id: GroupId,
    e: StoreError,
    field: &str,
) -> WebResult {
    let mut errors = Errors::from_api(e.into(), |_| field.to_owned())?;
    if errors.fields.is_empty() && errors.general.is_empty() {
        errors.add(field, "is invalid");
    }
    let g = state.store.get_group(id).await?;
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        show_page(state, session, &g, &errors).await?,
    )
        .into_response())
}

pub async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { session, form }: Post,
) -> WebResult {
    let id = group_id(&id)?;
    match state.store.rename_group(id, &form.text("name")).await {
        Ok(_) => {
            state.publish(Change::GroupChanged(id.0));
            Ok(Redirect::to(&format!("/groups/{id}")).into_response())
        }
        Err(e) => redisplay(&state, &session, id, e, "name").await,
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: Post,
) -> WebResult {
    let id = group_id(&id)?;
    state.store.delete_group(id).await?;
    state.publish(Change::GroupDeleted(id.0));
    Ok(Redirect::to("/groups").into_response())
}

fn parse_member(v: &str) -> Option<ActorId> {
    let (kind, id) = v.split_once(':')?;
    let id = Uuid::parse_str(id).ok()?;
    match kind {
        "user" => Some(ActorId::User(UserId(id))),
        "sa" => Some(ActorId::ServiceAccount(ServiceAccountId(id))),
        _ => None,
    }
}

pub async fn add_member(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { session, form }: Post,
) -> WebResult {
    let id = group_id(&id)?;
    let Some(actor) = parse_member(&form.text("member")) else {
        return redisplay(
            &state,
            &session,
            id,
            StoreError::invalid("member", "choose a user or service account"),
            "member",
        )
        .await;
    };
    match state.store.add_member_checked(id, actor).await {
        Ok(()) => {
            let actor_id = match actor {
                ActorId::User(u) => u.0,
                ActorId::ServiceAccount(s) => s.0,
            };
            state.publish(Change::MembershipChanged {
                group: id.0,
                actor: actor_id,
            });
            Ok(Redirect::to(&format!("/groups/{id}")).into_response())
        }
        Err(e) => redisplay(&state, &session, id, e, "member").await,
    }
}

pub async fn remove_member(
    State(state): State<AppState>,
    Path((id, member)): Path<(String, String)>,
    _post: Post,
) -> WebResult {
    let id = group_id(&id)?;
    let member = path_id(&member, "membership")?;
    // Ids are UUIDs, unique across both kinds: try one, then the other.
    let removed = match state
        .store
        .remove_member(id, ActorId::User(UserId(member)))
        .await
    {
        Err(StoreError::NotFound { .. }) => {
            state
                .store
                .remove_member(id, ActorId::ServiceAccount(ServiceAccountId(member)))
                .await
        }
        other => other,
    };
    removed?;
    state.publish(Change::MembershipChanged {
        group: id.0,
        actor: member,
    });
    Ok(Redirect::to(&format!("/groups/{id}")).into_response())
}
