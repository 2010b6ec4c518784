//! Keyhole control protocol: the JSON messages the portal exchanges with
//! gateways, clients and relays over WebSocket, and the domain types they
//! carry.
//!
//! Pure data and codecs: no IO, no clocks. See [`envelope`] for the frame
//! format, [`messages`] for who sends what.
//!
//! Conventions on the wire:
//! - ids are UUID strings;
//! - timestamps (`expires_at`) are RFC 3339 in UTC
//!   (`"2026-05-20T17:00:00Z"`), readable in logs and unambiguous;
//! - keys are standard base64 of 32 bytes, as `wg` prints them;
//! - enums are snake_case strings, tagged objects use a `kind` field.

pub mod dns;
pub mod dns_proxy;
pub mod envelope;
pub mod ice;
pub mod ids;
pub mod keys;
pub mod messages;
pub mod resource;
pub mod tunnel;
pub mod turn;

pub use dns::{DnsPattern, DnsPatternError, DnsPatternKind};
pub use dns_proxy::{DnsProxyAssignment, DnsProxyError, check_dns_assignments};
pub use envelope::{
    CLOSE_MESSAGE_TOO_BIG, CLOSE_POLICY_VIOLATION, CLOSE_PROTOCOL_ERROR, DecodeError, Decoded,
    Envelope, MAX_FRAME_BYTES, Message, PROTOCOL_VERSION, PayloadError, RequestId, decode,
};
pub use ice::{IceCandidate, IceCredentials};
pub use ids::{ClientId, FlowId, GatewayId, RelayId, ResourceId, SiteId};
pub use keys::{KeyError, PresharedKey, PublicKey};
pub use resource::{Filter, PortRange, Protocol, Resource, ResourceAddress, ResourceName};
pub use tunnel::{
    DNS_PROXY_IPV4_RANGE, TUNNEL_IPV4_RANGE, TUNNEL_IPV6_RANGE, TUNNEL_PEER_IPV4_RANGE,
    TunnelAddresses,
};
pub use turn::{RelayInfo, TurnCredentials, TurnSecret, check_turn_username, turn_password};
