//! `/flow-log`: every authorisation decision, newest first.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use keyhole_proto::{ClientId, ResourceId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    auth::Admin,
    error::{ApiError, ApiResult},
    extract::{ApiQuery, parse_param},
    groups::Member,
    page::{Page, PageParams, page_schema},
};
use crate::{
    state::AppState,
    store::{FlowDecision, FlowLogEntry, FlowLogFilter},
};

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlowLogOut {
    pub at: DateTime<Utc>,
    pub actor: Member,
    pub client_id: Uuid,
    pub resource_id: Uuid,
    pub gateway_id: Option<Uuid>,
    pub policy_id: Option<Uuid>,
    pub decision: Decision,
    /// Why a flow was denied or failed, e.g. `outside_time_window`.
    pub reason: Option<String>,
}

impl From<FlowLogEntry> for FlowLogOut {
    fn from(e: FlowLogEntry) -> Self {
        Self {
            at: e.at,
            actor: e.actor.into(),
            client_id: e.client_id.0,
            resource_id: e.resource_id.0,
            gateway_id: e.gateway_id.map(|g| g.0),
            policy_id: e.policy_id.map(|p| p.0),
            decision: match e.decision {
                FlowDecision::Allow => Decision::Allow,
                FlowDecision::Deny => Decision::Deny,
            },
            reason: e.reason,
        }
    }
}

page_schema!(FlowLogPage, FlowLogOut);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlowLogQuery {
    /// Only decisions about this user or service account.
    #[param(value_type = Option<Uuid>)]
    pub actor_id: Option<String>,
    #[param(value_type = Option<Uuid>)]
    pub client_id: Option<String>,
    #[param(value_type = Option<Uuid>)]
    pub resource_id: Option<String>,
    /// `allow` or `deny`.
    #[param(value_type = Option<Decision>)]
    pub decision: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Entries before this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<String>,
}

impl FlowLogQuery {
    fn filter(&self) -> ApiResult<FlowLogFilter> {
        let uuid = |v: &Option<String>, name| parse_param::<Uuid>(v.as_deref(), name, "a UUID");
        let time = |v: &Option<String>, name| {
            parse_param::<DateTime<Utc>>(v.as_deref(), name, "an RFC 3339 time")
        };
        let filter = FlowLogFilter {
            actor_id: uuid(&self.actor_id, "actor_id")?,
            client_id: uuid(&self.client_id, "client_id")?.map(ClientId),
            resource_id: uuid(&self.resource_id, "resource_id")?.map(ResourceId),
            decision: match self.decision.as_deref() {
                None | Some("") => None,
                Some("allow") => Some(FlowDecision::Allow),
                Some("deny") => Some(FlowDecision::Deny),
                Some(other) => {
                    return Err(ApiError::field(
                        "decision",
                        format!("`{other}` is not allow or deny"),
                    ));
                }
            },
            from: time(&self.from, "from")?,
            until: time(&self.until, "until")?,
        };
        if let (Some(from), Some(until)) = (filter.from, filter.until)
            && from > until
        {
            return Err(ApiError::field("until", "is before `from`"));
        }
        Ok(filter)
    }
}

/// Flow decisions matching every given filter, newest first.
#[utoipa::path(get, path = "/flow-log", tag = "flow-log", params(FlowLogQuery, PageParams),
    responses((status = 200, description = "A page of flow-log entries", body = FlowLogPage)))]
pub async fn list_flow_log(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<FlowLogQuery>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<FlowLogOut>>> {
    let filter = q.filter()?;
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.query_flow_log(filter, limit, offset).await?;
    Ok(Json(page.page(rows, FlowLogOut::from)))
}
