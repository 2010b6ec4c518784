//! Portal ↔ client messages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ErrorReply, GatewayCandidates, RelaysPresence, ResourceChange, ResourceDeleted, Revoke,
};
use crate::{
    ClientId, DnsProxyAssignment, FlowId, GatewayId, IceCredentials, PresharedKey, PublicKey,
    RelayInfo, Resource, ResourceId, SiteId, TunnelAddresses, envelope::messages,
};

/// First frame on a client connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInit {
    pub client_id: ClientId,
    pub tunnel_addresses: TunnelAddresses,
    /// The resources the client's owner may see.
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub relays: Vec<RelayInfo>,
}

/// Ask for a flow to a resource. A request; answered by `flow_created` or
/// `flow_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFlow {
    pub resource_id: ResourceId,
    /// Gateways the client already has tunnels to; the portal prefers them.
    #[serde(default)]
    pub connected_gateway_ids: Vec<GatewayId>,
    /// DNS resources only: the proxy IPs the client answered with, per
    /// name. A new name under the resource is a new request carrying the
    /// whole set; the gateway replaces what it had for this client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsProxyAssignment>,
}

/// Reply to `request_flow`: the gateway to connect to and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCreated {
    pub flow_id: FlowId,
    pub resource_id: ResourceId,
    pub gateway_id: GatewayId,
    pub site_id: SiteId,
    pub gateway_public_key: PublicKey,
    pub preshared_key: PresharedKey,
    pub gateway_tunnel_addresses: TunnelAddresses,
    pub client_ice: IceCredentials,
    pub gateway_ice: IceCredentials,
    pub expires_at: DateTime<Utc>,
}

/// Why no flow was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowFailReason {
    /// No policy lets this client reach the resource now.
    NotAllowed,
    /// None of the resource's sites has a healthy gateway.
    NoGatewayOnline,
    /// The resource does not exist (any more).
    ResourceGone,
    /// The chosen gateway did not confirm in time; retrying may work.
    GatewayTimeout,
    /// A reason added by a newer portal.
    #[serde(other)]
    Unknown,
}

/// Reply to `request_flow` when no flow was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFailed {
    pub resource_id: ResourceId,
    pub reason: FlowFailReason,
}

/// A gateway's control connection closed and it did not come back within
/// the portal's grace period. The portal has forgotten the client's flows
/// through it; the client drops its connection to it and asks again on the
/// next packet, which the portal answers with another gateway of the site.
/// Older clients ignore it (unknown type) and find out from ICE instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayOffline {
    pub gateway_id: GatewayId,
}

messages! {
    /// Portal → client.
    pub enum PortalToClient {
        "init" => Init(ClientInit),
        "flow_created" => FlowCreated(FlowCreated),
        "flow_failed" => FlowFailed(FlowFailed),
        "ice_candidates" => IceCandidates(GatewayCandidates),
        "invalidate_ice_candidates" => InvalidateIceCandidates(GatewayCandidates),
        "resource_created" => ResourceCreated(ResourceChange),
        "resource_updated" => ResourceUpdated(ResourceChange),
        "resource_deleted" => ResourceDeleted(ResourceDeleted),
        "revoked" => Revoked(Revoke),
        "relays_presence" => RelaysPresence(RelaysPresence),
        "gateway_offline" => GatewayOffline(GatewayOffline),
        "error" => Error(ErrorReply),
    }
}

messages! {
    /// Client → portal.
    pub enum ClientToPortal {
        "request_flow" => RequestFlow(RequestFlow),
        "ice_candidates" => IceCandidates(GatewayCandidates),
        "invalidate_ice_candidates" => InvalidateIceCandidates(GatewayCandidates),
    }
}
