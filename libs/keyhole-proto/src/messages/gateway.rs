//! Portal ↔ gateway messages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ClientCandidates, ErrorReply, RelaysPresence, ResourceChange, ResourceDeleted, Revoke,
};
use crate::{
    ClientId, DnsProxyAssignment, FlowId, GatewayId, IceCredentials, PresharedKey, PublicKey,
    RelayInfo, Resource, SiteId, TunnelAddresses, envelope::messages,
};

/// First frame on a gateway connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInit {
    pub gateway_id: GatewayId,
    pub site_id: SiteId,
    pub tunnel_addresses: TunnelAddresses,
    /// The resources of the gateway's site.
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub relays: Vec<RelayInfo>,
}

/// Let a client reach a resource through this gateway until `expires_at`.
/// A request: the gateway answers `flow_authorized` once the peer and the
/// policy-map entry are installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeFlow {
    pub flow_id: FlowId,
    pub client_id: ClientId,
    pub client_public_key: PublicKey,
    pub preshared_key: PresharedKey,
    pub client_tunnel_addresses: TunnelAddresses,
    pub resource: Resource,
    pub client_ice: IceCredentials,
    pub gateway_ice: IceCredentials,
    pub expires_at: DateTime<Utc>,
    /// DNS resources only: proxy IP ↔ name assignments of this client. The
    /// gateway resolves each name and translates proxy ↔ real addresses for
    /// this client; a later `authorize_flow` for the same client and
    /// resource replaces the set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsProxyAssignment>,
}

/// Reply to `authorize_flow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAuthorized {
    pub flow_id: FlowId,
}

/// How busy a gateway is; the portal balances new flows by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLoad {
    pub active_flows: u32,
    pub connected_clients: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayHeartbeat {
    pub load: GatewayLoad,
}

messages! {
    /// Portal → gateway.
    pub enum PortalToGateway {
        "init" => Init(GatewayInit),
        "authorize_flow" => AuthorizeFlow(AuthorizeFlow),
        "ice_candidates" => IceCandidates(ClientCandidates),
        "invalidate_ice_candidates" => InvalidateIceCandidates(ClientCandidates),
        "revoke" => Revoke(Revoke),
        "resource_updated" => ResourceUpdated(ResourceChange),
        "resource_deleted" => ResourceDeleted(ResourceDeleted),
        "relays_presence" => RelaysPresence(RelaysPresence),
        "error" => Error(ErrorReply),
    }
}

messages! {
    /// Gateway → portal.
    pub enum GatewayToPortal {
        "flow_authorized" => FlowAuthorized(FlowAuthorized),
        "ice_candidates" => IceCandidates(ClientCandidates),
        "invalidate_ice_candidates" => InvalidateIceCandidates(ClientCandidates),
        "heartbeat" => Heartbeat(GatewayHeartbeat),
    }
}
