//! `/policies`: members of a group may reach a resource, when enabled and
//! the conditions hold (time windows in a time zone, source CIDRs, sign-in
//! methods).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use keyhole_proto::ResourceId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    auth::Admin,
    error::{ApiError, ApiResult, FieldError},
    extract::{ApiJson, ApiQuery, parse_param, path_id},
    page::{Page, PageParams, page_schema},
};
use crate::{
    policy::{Conditions, GroupId, PolicyId},
    state::{AppState, Change},
    store::{NewPolicy, PolicyFilter, PolicyRecord},
};

/// Longest policy description accepted.
const MAX_DESCRIPTION: usize = 1000;

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    pub group_id: GroupId,
    pub resource_id: ResourceId,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub conditions: Conditions,
}

impl PolicyIn {
    /// Checks serde cannot express; all problems at once.
    pub(crate) fn validate(self) -> ApiResult<NewPolicy> {
        let mut fields = Vec::new();
        if self.description.chars().count() > MAX_DESCRIPTION {
            fields.push(FieldError {
                field: "description".into(),
                message: format!("must be at most {MAX_DESCRIPTION} characters"),
            });
        }
        if let Some(schedule) = &self.conditions.schedule {
            if schedule.windows.is_empty() {
                fields.push(FieldError {
                    field: "conditions.schedule.windows".into(),
                    message: "a schedule needs at least one window (omit it for always)".into(),
                });
            }
            for (i, w) in schedule.windows.iter().enumerate() {
                if w.days.iter().next().is_none() {
                    fields.push(FieldError {
                        field: format!("conditions.schedule.windows[{i}].days"),
                        message: "must name at least one weekday".into(),
                    });
                }
            }
        }
        if !fields.is_empty() {
            return Err(ApiError::Validation(fields));
        }
        Ok(NewPolicy {
            group_id: self.group_id,
            resource_id: self.resource_id,
            enabled: self.enabled,
            conditions: self.conditions,
            description: self.description,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SignInMethod)]
#[allow(dead_code)]
pub enum SignInMethodDoc {
    Password,
    Oidc,
    ServiceToken,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Weekday)]
#[allow(dead_code)]
pub enum WeekdayDoc {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A weekly window, wall-clock time in the schedule's zone; start
/// inclusive, end exclusive; `end <= start` crosses midnight, `start ==
/// end` is a whole day.
#[derive(Serialize, ToSchema)]
#[schema(as = TimeWindow)]
#[allow(dead_code)]
pub struct TimeWindowDoc {
    #[schema(min_items = 1)]
    days: Vec<WeekdayDoc>,
    #[schema(
        example = "09:00",
        pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
    )]
    start: String,
    #[schema(
        example = "17:30",
        pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
    )]
    end: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Schedule)]
#[allow(dead_code)]
pub struct ScheduleDoc {
    /// IANA time zone, e.g. `Europe/Berlin`.
    #[schema(example = "Europe/Berlin")]
    timezone: String,
    #[schema(min_items = 1)]
    windows: Vec<TimeWindowDoc>,
}

/// Extra requirements; empty lists and a null schedule require nothing.
#[derive(Serialize, ToSchema)]
#[schema(as = Conditions)]
#[allow(dead_code)]
pub struct ConditionsDoc {
    /// The client's public address must lie in one of these.
    #[serde(default)]
    #[schema(example = json!(["203.0.113.0/24"]))]
    source_cidrs: Vec<String>,
    /// The session must have been established by one of these.
    #[serde(default)]
    sign_in_methods: Vec<SignInMethodDoc>,
    /// Access only inside these windows.
    #[serde(default)]
    schedule: Option<ScheduleDoc>,
}

/// A policy to create or the full replacement of one.
#[derive(Serialize, ToSchema)]
#[schema(as = PolicyInput)]
#[allow(dead_code)]
pub struct PolicyInDoc {
    group_id: Uuid,
    resource_id: Uuid,
    /// Default true.
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    #[schema(max_length = 1000)]
    description: String,
    #[serde(default)]
    conditions: ConditionsDoc,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyOut {
    pub id: Uuid,
    pub group_id: Uuid,
    pub resource_id: Uuid,
    pub enabled: bool,
    pub description: String,
    #[schema(value_type = ConditionsDoc)]
    pub conditions: Conditions,
    pub created_at: DateTime<Utc>,
}

impl From<PolicyRecord> for PolicyOut {
    fn from(p: PolicyRecord) -> Self {
        Self {
            id: p.policy.id.0,
            group_id: p.policy.group_id.0,
            resource_id: p.policy.resource_id.0,
            enabled: p.policy.enabled,
            description: p.description,
            conditions: p.policy.conditions,
            created_at: p.created_at,
        }
    }
}

page_schema!(PolicyPage, PolicyOut);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// Only policies of this group.
    #[param(value_type = Option<Uuid>)]
    pub group_id: Option<String>,
    /// Only policies of this resource.
    #[param(value_type = Option<Uuid>)]
    pub resource_id: Option<String>,
}

fn policy_id(raw: &str) -> ApiResult<PolicyId> {
    Ok(PolicyId(path_id(raw, "policy")?))
}

/// Policies, ordered by creation then id.
#[utoipa::path(get, path = "/policies", tag = "policies", params(PolicyQuery, PageParams),
    responses((status = 200, description = "A page of policies", body = PolicyPage)))]
pub async fn list_policies(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PolicyQuery>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<PolicyOut>>> {
    let filter = PolicyFilter {
        group_id: parse_param::<Uuid>(q.group_id.as_deref(), "group_id", "a UUID")?.map(GroupId),
        resource_id: parse_param::<Uuid>(q.resource_id.as_deref(), "resource_id", "a UUID")?
            .map(ResourceId),
    };
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_policies(filter, limit, offset).await?;
    Ok(Json(page.page(rows, PolicyOut::from)))
}

#[utoipa::path(post, path = "/policies", tag = "policies", request_body = PolicyInDoc,
    responses((status = 201, description = "Created", body = PolicyOut)))]
pub async fn create_policy(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<PolicyIn>,
) -> ApiResult<(StatusCode, Json<PolicyOut>)> {
    let p = state
        .store
        .create_policy(new.validate()?, super::now())
        .await?;
    state.publish(Change::PolicyChanged(p.policy.id.0));
    Ok((StatusCode::CREATED, Json(p.into())))
}

#[utoipa::path(get, path = "/policies/{id}", tag = "policies",
    params(("id" = Uuid, Path, description = "Policy id")),
    responses((status = 200, description = "The policy", body = PolicyOut)))]
pub async fn get_policy(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyOut>> {
    Ok(Json(state.store.get_policy(policy_id(&id)?).await?.into()))
}

/// Replaces a policy; access it no longer grants is revoked.
#[utoipa::path(put, path = "/policies/{id}", tag = "policies", request_body = PolicyInDoc,
    params(("id" = Uuid, Path, description = "Policy id")),
    responses((status = 200, description = "Updated", body = PolicyOut)))]
pub async fn update_policy(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<PolicyIn>,
) -> ApiResult<Json<PolicyOut>> {
    let id = policy_id(&id)?;
    let p = state.store.update_policy(id, new.validate()?).await?;
    state.publish(Change::PolicyChanged(id.0));
    Ok(Json(p.into()))
}

#[utoipa::path(delete, path = "/policies/{id}", tag = "policies",
    params(("id" = Uuid, Path, description = "Policy id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_policy(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = policy_id(&id)?;
    state.store.delete_policy(id).await?;
    state.publish(Change::PolicyDeleted(id.0));
    Ok(StatusCode::NO_CONTENT)
}
