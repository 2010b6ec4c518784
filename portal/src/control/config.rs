//! Tunables of the control channel.

use std::time::Duration;

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
    /// How long a disconnected client's live flows are kept, so a client
    /// that reconnects (network change, restart) keeps its tunnels; after
    /// it they are revoked at the gateways.
    pub client_grace: TimeDelta,
    /// How long a gateway whose control connection closed may take to
    /// come back before its clients are told it is offline and move to a
    /// sibling. Covers a gateway's reconnect (its first retry waits
    /// 250-500 ms, then the upgrade and registration) without eating much
    /// of a failover budget of about 2 s. A blip that does not close the
    /// socket never starts it.
    pub gateway_grace: TimeDelta,
    /// The portal pings every peer this often...
    pub ping_interval: Duration,
    /// ...and closes a connection from which nothing (not even a pong) has
    /// arrived for `ping_interval + ping_timeout`.
    pub ping_timeout: Duration,
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
            client_grace: TimeDelta::minutes(5),
            gateway_grace: TimeDelta::milliseconds(800),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(20),
        }
    }
}
