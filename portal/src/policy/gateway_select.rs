//! Choosing the gateway for a new flow.

use chrono::{DateTime, TimeDelta, Utc};
use keyhole_proto::{GatewayId, Resource, SiteId};
use rand::Rng;

/// What the portal knows about a gateway's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    pub id: GatewayId,
    pub site_id: SiteId,
    /// Its control connection is up.
    pub connected: bool,
    pub last_heartbeat: DateTime<Utc>,
    /// Lower is less busy (active flows).
    pub load: u32,
}

/// Pick a gateway for `resource`: a connected gateway of one of its sites
/// whose last heartbeat is at most `max_heartbeat_age` old; among those,
/// one the client already has a tunnel to (`client_connected`) if any;
/// then the least loaded, ties broken by `rng`. `None` if no gateway is
/// healthy.
pub fn select_gateway<R: Rng + ?Sized>(
    gateways: &[GatewayStatus],
    resource: &Resource,
    client_connected: &[GatewayId],
    now: DateTime<Utc>,
    max_heartbeat_age: TimeDelta,
    rng: &mut R,
) -> Option<GatewayId> {
    let healthy: Vec<&GatewayStatus> = gateways
        .iter()
        .filter(|g| g.connected && resource.site_ids.contains(&g.site_id))
        .filter(|g| now.signed_duration_since(g.last_heartbeat) <= max_heartbeat_age)
        .collect();
    let preferred: Vec<&GatewayStatus> = healthy
        .iter()
        .copied()
        .filter(|g| client_connected.contains(&g.id))
        .collect();
    let pool = if preferred.is_empty() {
        healthy
    } else {
        preferred
    };
    let min_load = pool.iter().map(|g| g.load).min()?;
    let least: Vec<&GatewayStatus> = pool.into_iter().filter(|g| g.load == min_load).collect();
    let pick = rng.random_range(0..least.len());
    Some(least[pick].id)
}
