//! Tunables of the control channel.

use chrono::TimeDelta;
use keyhole_proto::TurnSecret;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// How long a gateway has to answer `authorize_flow` before the portal
    /// tries another gateway (or answers `flow_failed`).
    pub gateway_ack_timeout: TimeDelta,
    /// Cap on an authorisation's lifetime when policies and token set none.
    pub max_flow_lifetime: TimeDelta,
    /// Gateways whose last heartbeat is older than this get no new flows.
    pub max_heartbeat_age: TimeDelta,
    /// Lifetime of the TURN credentials handed to clients and gateways;
    /// they are re-issued at half of it.
    pub turn_credentials_ttl: TimeDelta,
    /// Answers remembered per client connection, so a repeated request id
    /// gets the same answer.
    pub answers_per_client: usize,
    /// The secret shared with relays; without it relays cannot register.
    pub turn_secret: Option<TurnSecret>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            gateway_ack_timeout: TimeDelta::seconds(5),
            max_flow_lifetime: TimeDelta::hours(8),
            max_heartbeat_age: TimeDelta::seconds(90),
            turn_credentials_ttl: TimeDelta::hours(12),
            answers_per_client: 256,
            turn_secret: None,
        }
    }
}
