//! The flow log: every authorisation decision, for audit.

use chrono::{DateTime, Utc};
use keyhole_proto::{ClientId, GatewayId, ResourceId};

use super::{FlowLogFilter, Result, Store};
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

impl Store {
    /// Appends one entry: the one-row case of [`Store::append_flow_log_batch`].
    pub async fn append_flow_log(&self, e: &FlowLogEntry) -> Result<()> {
        self.append_flow_log_batch(std::slice::from_ref(e)).await
    }

    /// The newest `limit` entries, newest first: the unfiltered case of
    /// [`Store::query_flow_log`].
    pub async fn recent_flow_log(&self, limit: i64) -> Result<Vec<FlowLogEntry>> {
        self.query_flow_log(FlowLogFilter::default(), limit, 0)
            .await
    }
}
