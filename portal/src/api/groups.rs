//! `/groups` and their members (users and service accounts).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    auth::Admin,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiQuery, path_id},
    page::{Page, PageParams, page_schema},
};
use crate::{
    policy::{ActorId, GroupId, ServiceAccountId, UserId},
    state::{AppState, Change},
    store::{Group, StoreError},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupOut {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<Group> for GroupOut {
    fn from(g: Group) -> Self {
        Self {
            id: g.id.0,
            name: g.name,
            created_at: g.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupIn {
    /// Unique.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    User,
    ServiceAccount,
}

/// A group member: a user or a service account.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub kind: MemberKind,
    pub id: Uuid,
}

impl From<Member> for ActorId {
    fn from(m: Member) -> Self {
        match m.kind {
            MemberKind::User => ActorId::User(UserId(m.id)),
            MemberKind::ServiceAccount => ActorId::ServiceAccount(ServiceAccountId(m.id)),
        }
    }
}

impl From<ActorId> for Member {
    fn from(a: ActorId) -> Self {
        match a {
            ActorId::User(u) => Self {
                kind: MemberKind::User,
                id: u.0,
            },
            ActorId::ServiceAccount(s) => Self {
                kind: MemberKind::ServiceAccount,
                id: s.0,
            },
        }
    }
}

page_schema!(GroupPage, GroupOut);
page_schema!(MemberPage, Member);

fn group_id(raw: &str) -> ApiResult<GroupId> {
    Ok(GroupId(path_id(raw, "group")?))
}

/// Groups, ordered by name.
#[utoipa::path(get, path = "/groups", tag = "groups", params(PageParams),
    responses((status = 200, description = "A page of groups", body = GroupPage)))]
pub async fn list_groups(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<GroupOut>>> {
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_groups(limit, offset).await?;
    Ok(Json(page.page(rows, GroupOut::from)))
}

#[utoipa::path(post, path = "/groups", tag = "groups", request_body = GroupIn,
    responses((status = 201, description = "Created", body = GroupOut),
              (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create_group(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<GroupIn>,
) -> ApiResult<(StatusCode, Json<GroupOut>)> {
    let g = state.store.create_group(&new.name, super::now()).await?;
    state.publish(Change::GroupChanged(g.id.0));
    Ok((StatusCode::CREATED, Json(g.into())))
}

#[utoipa::path(get, path = "/groups/{id}", tag = "groups",
    params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 200, description = "The group", body = GroupOut)))]
pub async fn get_group(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<GroupOut>> {
    Ok(Json(state.store.get_group(group_id(&id)?).await?.into()))
}

/// Renames a group.
#[utoipa::path(patch, path = "/groups/{id}", tag = "groups", request_body = GroupIn,
    params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 200, description = "Updated", body = GroupOut),
              (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn update_group(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<GroupIn>,
) -> ApiResult<Json<GroupOut>> {
    let id = group_id(&id)?;
    let g = state.store.rename_group(id, &patch.name).await?;
    state.publish(Change::GroupChanged(id.0));
    Ok(Json(g.into()))
}

/// Deletes the group with its memberships and policies.
#[utoipa::path(delete, path = "/groups/{id}", tag = "groups",
    params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_group(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = group_id(&id)?;
    state.store.delete_group(id).await?;
    state.publish(Change::GroupDeleted(id.0));
    Ok(StatusCode::NO_CONTENT)
}

/// Members, users first, each kind ordered by id.
#[utoipa::path(get, path = "/groups/{id}/members", tag = "groups",
    params(("id" = Uuid, Path, description = "Group id"), PageParams),
    responses((status = 200, description = "A page of members", body = MemberPage)))]
pub async fn list_members(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Member>>> {
    let id = group_id(&id)?;
    let page = params.validate()?;
    state.store.get_group(id).await?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_members(id, limit, offset).await?;
    Ok(Json(page.page(rows, Member::from)))
}

/// Adds a member; adding an existing member again changes nothing.
#[utoipa::path(post, path = "/groups/{id}/members", tag = "groups", request_body = Member,
    params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 204, description = "The actor is a member")))]
pub async fn add_member(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(member): ApiJson<Member>,
) -> ApiResult<StatusCode> {
    let id = group_id(&id)?;
    state.store.add_member_checked(id, member.into()).await?;
    state.publish(Change::MembershipChanged {
        group: id.0,
        actor: member.id,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a member (a user or service account id).
#[utoipa::path(delete, path = "/groups/{id}/members/{member_id}", tag = "groups",
    params(("id" = Uuid, Path, description = "Group id"),
           ("member_id" = Uuid, Path, description = "User or service account id")),
    responses((status = 204, description = "Removed")))]
pub async fn remove_member(
    _admin: Admin,
    State(state): State<AppState>,
    Path((id, member_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = group_id(&id)?;
    let member = path_id(&member_id, "membership")?;
    state.store.get_group(id).await?;
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
    removed.map_err(ApiError::from)?;
    state.publish(Change::MembershipChanged {
        group: id.0,
        actor: member,
    });
    Ok(StatusCode::NO_CONTENT)
}
