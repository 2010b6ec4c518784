//! Payloads used by more than one message family.

use serde::{Deserialize, Serialize};

use crate::{ClientId, FlowId, GatewayId, IceCandidate, RelayId, RelayInfo, Resource, ResourceId};

/// ICE candidates of/for a client (on a gateway connection the peer is a
/// client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCandidates {
    pub client_id: ClientId,
    pub candidates: Vec<IceCandidate>,
}

/// ICE candidates of/for a gateway (on a client connection the peer is a
/// gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCandidates {
    pub gateway_id: GatewayId,
    pub candidates: Vec<IceCandidate>,
}

/// A resource was created or changed; carries its full new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub resource: Resource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDeleted {
    pub resource_id: ResourceId,
}

/// Relays that came up (with credentials to use) and relays that went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaysPresence {
    #[serde(default)]
    pub connected: Vec<RelayInfo>,
    #[serde(default)]
    pub disconnected_ids: Vec<RelayId>,
}

/// What access is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RevokeTarget {
    /// One flow.
    Flow { flow_id: FlowId },
    /// Every flow of a client.
    Client { client_id: ClientId },
    /// Every flow to a resource.
    Resource { resource_id: ResourceId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    pub target: RevokeTarget,
}

/// Machine-readable class of an [`ErrorReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed (the message says which field).
    BadRequest,
    /// The request names something that does not exist.
    NotFound,
    /// The portal failed; retrying later may work.
    Internal,
    /// A code added by a newer portal.
    #[serde(other)]
    Unknown,
}

/// Answer to a request that could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}
