//! Gateway selection: health, stickiness, load, random ties.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use keyhole_proto::GatewayId;
use rand::{SeedableRng, rngs::StdRng};

use super::*;

const MAX_AGE: TimeDelta = TimeDelta::seconds(30);

fn gw(id: u128, site: u128, load: u32, heartbeat: DateTime<Utc>) -> GatewayStatus {
    GatewayStatus {
        id: GatewayId::from_u128(id),
        site_id: SiteId::from_u128(site),
        connected: true,
        last_heartbeat: heartbeat,
        load,
    }
}

fn pick(
    gws: &[GatewayStatus],
    r: &Resource,
    connected: &[u128],
    now: DateTime<Utc>,
    seed: u64,
) -> Option<u128> {
    let connected: Vec<_> = connected.iter().map(|c| GatewayId::from_u128(*c)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    select_gateway(gws, r, &connected, now, MAX_AGE, &mut rng).map(|g| g.0.as_u128())
}

#[test]
fn least_loaded_healthy_gateway_of_the_resources_sites() {
    let now = utc("2026-05-18T10:00:00Z");
    let r = resource(1, &[1, 2]);
    let gws = [
        gw(1, 1, 5, now),
        gw(2, 2, 3, now),
        gw(3, 3, 0, now), // other site
        GatewayStatus {
            connected: false,
            ..gw(4, 1, 0, now)
        },
        gw(5, 1, 1, now - MAX_AGE - TimeDelta::milliseconds(1)), // missed heartbeats
    ];
    assert_eq!(pick(&gws, &r, &[], now, 1), Some(2));
    // Exactly at the age limit still counts as healthy.
    let mut gws = gws.to_vec();
    gws[4].last_heartbeat = now - MAX_AGE;
    assert_eq!(pick(&gws, &r, &[], now, 1), Some(5));
}

#[test]
fn prefers_a_gateway_the_client_is_connected_to() {
    let now = utc("2026-05-18T10:00:00Z");
    let r = resource(1, &[1]);
    let gws = [gw(1, 1, 50, now), gw(2, 1, 0, now), gw(3, 1, 10, now)];
    assert_eq!(pick(&gws, &r, &[1], now, 1), Some(1));
    // Among several connected ones, the least loaded.
    assert_eq!(pick(&gws, &r, &[1, 3], now, 1), Some(3));
    // A connected gateway of another site or an unhealthy one is ignored.
    let stale = [
        gw(1, 1, 50, now - TimeDelta::minutes(5)),
        gw(2, 1, 0, now),
        gw(9, 7, 0, now),
    ];
    assert_eq!(pick(&stale, &r, &[1, 9], now, 1), Some(2));
}

#[test]
fn ties_are_broken_randomly_by_the_injected_rng() {
    let now = utc("2026-05-18T10:00:00Z");
    let r = resource(1, &[1]);
    let gws = [
        gw(1, 1, 2, now),
        gw(2, 1, 2, now),
        gw(3, 1, 2, now),
        gw(4, 1, 3, now),
    ];
    let mut counts = BTreeMap::new();
    for seed in 0..300 {
        *counts
            .entry(pick(&gws, &r, &[], now, seed).unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{counts:?}"
    );
    assert!(counts.values().all(|c| *c > 50), "{counts:?}");
    // The same seed gives the same choice.
    assert_eq!(pick(&gws, &r, &[], now, 42), pick(&gws, &r, &[], now, 42));
}

#[test]
fn no_healthy_gateway_gives_none() {
    let now = utc("2026-05-18T10:00:00Z");
    assert_eq!(pick(&[], &resource(1, &[1]), &[], now, 1), None);
    assert_eq!(
        pick(&[gw(1, 1, 0, now)], &resource(1, &[]), &[], now, 1),
        None
    );
    assert_eq!(
        pick(
            &[gw(1, 1, 0, now - TimeDelta::hours(1))],
            &resource(1, &[1]),
            &[1],
            now,
            1
        ),
        None
    );
}
