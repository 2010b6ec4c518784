//! Filtered, paginated reads of the flow log.

use chrono::{DateTime, Utc};
use keyhole_proto::{ClientId, GatewayId, ResourceId};
use uuid::Uuid;

use super::{
    FlowDecision, FlowLogEntry, Result, Store, StoreError, actors::actor_from_columns, from_ms, ms,
    parse_uuid,
};
use crate::policy::PolicyId;

/// Which entries to list; every `None` matches all. `from` is inclusive,
/// `until` exclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowLogFilter {
    /// A user or service account id.
    pub actor_id: Option<Uuid>,
    pub client_id: Option<ClientId>,
    pub resource_id: Option<ResourceId>,
    pub decision: Option<FlowDecision>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

type Row = (
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

fn entry_from_row(
    (at, user, sa, client, resource, gateway, policy, decision, reason): Row,
) -> Result<FlowLogEntry> {
    Ok(FlowLogEntry {
        at: from_ms(at),
        actor: actor_from_columns(user, sa)?,
        client_id: ClientId(parse_uuid(&client)?),
        resource_id: ResourceId(parse_uuid(&resource)?),
        gateway_id: gateway
            .as_deref()
            .map(parse_uuid)
            .transpose()?
            .map(GatewayId),
        policy_id: policy.as_deref().map(parse_uuid).transpose()?.map(PolicyId),
        decision: match decision.as_str() {
            "allow" => FlowDecision::Allow,
            "deny" => FlowDecision::Deny,
            other => return Err(StoreError::Corrupt(format!("decision `{other}`"))),
        },
        reason,
    })
}

impl Store {
    /// Matching entries, newest first (ties by entry id, so pages are stable).
    pub async fn query_flow_log(
        &self,
        filter: FlowLogFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<FlowLogEntry>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT at, CASE WHEN actor_kind = 'user' THEN actor_id END, \
             CASE WHEN actor_kind = 'service_account' THEN actor_id END, \
             client_id, resource_id, gateway_id, policy_id, decision, reason \
             FROM flow_log \
             WHERE ($1 IS NULL OR actor_id = $1) AND ($2 IS NULL OR client_id = $2) \
             AND ($3 IS NULL OR resource_id = $3) AND ($4 IS NULL OR decision = $4) \
             AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR at < $6) \
             ORDER BY at DESC, id LIMIT $7 OFFSET $8",
        )
        .bind(filter.actor_id.map(|a| a.to_string()))
        .bind(filter.client_id.map(|c| c.to_string()))
        .bind(filter.resource_id.map(|r| r.to_string()))
        .bind(filter.decision.map(|d| match d {
            FlowDecision::Allow => "allow",
            FlowDecision::Deny => "deny",
        }))
        .bind(filter.from.map(ms))
        .bind(filter.until.map(ms))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(entry_from_row).collect()
    }
}
