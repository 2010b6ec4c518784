//! The flow log: every authorisation decision, for audit.

use chrono::{DateTime, Utc};
use keyhole_proto::{ClientId, GatewayId, ResourceId};
use uuid::Uuid;

use super::{
    Result, Store, StoreError,
    actors::{actor_columns, actor_from_columns},
    from_ms, ms, parse_uuid,
};
use crate::policy::{ActorId, PolicyId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowDecision {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogEntry {
    pub at: DateTime<Utc>,
    pub actor: ActorId,
    pub client_id: ClientId,
    pub resource_id: ResourceId,
    pub gateway_id: Option<GatewayId>,
    pub policy_id: Option<PolicyId>,
    pub decision: FlowDecision,
    /// Deny reason code or failure, e.g. `outside_time_window`.
    pub reason: Option<String>,
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

impl Store {
    pub async fn append_flow_log(&self, e: &FlowLogEntry) -> Result<()> {
        let (user, sa) = actor_columns(e.actor);
        let (kind, actor_id) = match (user, sa) {
            (Some(u), _) => ("user", u),
            (_, Some(s)) => ("service_account", s),
            _ => unreachable!("actor_columns sets exactly one"),
        };
        sqlx::query(
            "INSERT INTO flow_log (id, at, actor_kind, actor_id, client_id, resource_id, \
             gateway_id, policy_id, decision, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(ms(e.at))
        .bind(kind)
        .bind(actor_id)
        .bind(e.client_id.to_string())
        .bind(e.resource_id.to_string())
        .bind(e.gateway_id.map(|g| g.to_string()))
        .bind(e.policy_id.map(|p| p.to_string()))
        .bind(match e.decision {
            FlowDecision::Allow => "allow",
            FlowDecision::Deny => "deny",
        })
        .bind(e.reason.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub async fn recent_flow_log(&self, limit: i64) -> Result<Vec<FlowLogEntry>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT at, CASE WHEN actor_kind = 'user' THEN actor_id END, \
             CASE WHEN actor_kind = 'service_account' THEN actor_id END, \
             client_id, resource_id, gateway_id, policy_id, decision, reason \
             FROM flow_log ORDER BY at DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(at, user, sa, client, resource, gateway, policy, decision, reason)| {
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
                            other => {
                                return Err(StoreError::Corrupt(format!("decision `{other}`")));
                            }
                        },
                        reason,
                    })
                },
            )
            .collect()
    }
}
