//! Liveness: gateways that reconnect get their flows again, clients that
//! leave keep their flows for a grace period, silent gateways are closed.

use super::*;

fn hello(id: GatewayId, n: u8) -> GatewayHello {
    GatewayHello {
        id,
        site_id: SITE,
        public_key: PublicKey::from_bytes([n; 32]),
        tunnel: tunnel(n),
        token_id: Uuid::from_u128(100),
    }
}

fn client_hello() -> ClientHello {
    ClientHello {
        id: CLIENT,
        actor: ACTOR,
        public_key: PublicKey::from_bytes([9; 32]),
        tunnel: tunnel(9),
        remote_ip: "192.0.2.9".parse().unwrap(),
        sign_in: SignInMethod::ServiceToken,
        token_id: Uuid::from_u128(200),
        token_expiry: None,
    }
}

/// A live flow through `GW_A` (conn 1); returns its `authorize_flow`.
fn live_flow(core: &mut ControlCore) -> keyhole_proto::messages::AuthorizeFlow {
    request(core, t0(), 1);
    let out = drain(core);
    let first = out
        .iter()
        .find_map(|t| match &t.msg {
            Outbound::Gateway(Envelope {
                message: PortalToGateway::AuthorizeFlow(a),
                ..
            }) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    confirm(core, t0(), ConnId(1), first.flow_id);
    drain(core);
    assert_eq!(core.live_flows(), 1);
    first
}

fn authorizes_to(out: &[Transmit], conn: ConnId) -> Vec<keyhole_proto::messages::AuthorizeFlow> {
    out.iter()
        .filter(|t| t.conn == conn)
        .filter_map(|t| match &t.msg {
            Outbound::Gateway(Envelope {
                id: Some(_),
                message: PortalToGateway::AuthorizeFlow(a),
                ..
            }) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn revokes_to(out: &[Transmit], conn: ConnId) -> usize {
    out.iter()
        .filter(|t| {
            t.conn == conn
                && matches!(
                    &t.msg,
                    Outbound::Gateway(Envelope {
                        message: PortalToGateway::Revoke(_),
                        ..
                    })
                )
        })
        .count()
}

#[test]
fn a_gateway_that_reconnects_gets_its_live_flows_again() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    let first = live_flow(&mut core);
    let t1 = t0() + TimeDelta::seconds(10);

    // The old socket died; the gateway comes back on a new one.
    core.disconnected(t1, ConnId(1));
    assert_eq!(core.live_flows(), 1, "the data plane outlives the socket");
    core.gateway_connected(t1, ConnId(50), hello(GW_A, 1));
    let out = drain(&mut core);
    assert!(matches!(
        &out[0].msg,
        Outbound::Gateway(Envelope {
            message: PortalToGateway::Init(_),
            ..
        })
    ));
    let again = authorizes_to(&out, ConnId(50));
    assert_eq!(again, vec![first.clone()], "the same grant, keys and ICE");

    // Its confirmation changes nothing for the client.
    confirm(&mut core, t1, ConnId(50), first.flow_id);
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.live_flows(), 1);
}

#[test]
fn a_gateway_replacing_its_own_connection_gets_its_flows_on_the_new_one() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    let first = live_flow(&mut core);
    core.gateway_connected(t0(), ConnId(51), hello(GW_A, 1));
    let out = drain(&mut core);
    assert!(out.iter().any(|t| t.conn == ConnId(1)
        && matches!(t.msg, Outbound::Close { code, .. } if code == sessions::CLOSE_REPLACED)));
    assert_eq!(authorizes_to(&out, ConnId(51)), vec![first]);
    assert!(authorizes_to(&out, ConnId(1)).is_empty());
}

#[test]
fn a_client_that_stays_away_loses_its_flows_after_the_grace_period() {
    // Gateways that never heartbeat stay connected for this test.
    let config = ControlConfig {
        max_heartbeat_age: TimeDelta::hours(1),
        ..ControlConfig::default()
    };
    let mut core = core_with(config.clone(), &[GW_A]);
    live_flow(&mut core);
    let t1 = t0() + TimeDelta::seconds(1);
    core.disconnected(t1, CLIENT_CONN);
    assert_eq!(core.poll_timeout(), Some(t1 + config.client_grace));

    core.handle_timeout(t1 + config.client_grace - TimeDelta::milliseconds(1));
    assert_eq!(revokes_to(&drain(&mut core), ConnId(1)), 0);
    assert_eq!(core.live_flows(), 1);

    core.handle_timeout(t1 + config.client_grace);
    assert_eq!(revokes_to(&drain(&mut core), ConnId(1)), 1);
    assert_eq!(core.live_flows(), 0);
}

#[test]
fn a_client_back_within_the_grace_period_keeps_its_flows() {
    let config = ControlConfig::default();
    let mut core = core_with(config.clone(), &[GW_A]);
    live_flow(&mut core);
    core.disconnected(t0(), CLIENT_CONN);
    core.client_connected(t0() + TimeDelta::seconds(30), ConnId(77), client_hello());
    drain(&mut core);
    // Keep the gateway alive past the grace period.
    core.gateway_message(
        t0() + config.client_grace,
        ConnId(1),
        Envelope::new(GatewayToPortal::Heartbeat(GatewayHeartbeat {
            load: GatewayLoad::default(),
        })),
    );
    core.handle_timeout(t0() + config.client_grace + TimeDelta::seconds(1));
    assert_eq!(revokes_to(&drain(&mut core), ConnId(1)), 0);
    assert_eq!(core.live_flows(), 1);
}

#[test]
fn a_silent_gateway_gets_no_flows_and_is_closed() {
    let config = ControlConfig::default();
    let mut core = core_with(config.clone(), &[GW_A, GW_B]);
    let t1 = t0() + config.max_heartbeat_age - TimeDelta::seconds(10);
    core.gateway_message(
        t1,
        ConnId(1),
        Envelope::new(GatewayToPortal::Heartbeat(GatewayHeartbeat {
            load: GatewayLoad::default(),
        })),
    );
    let t2 = t0() + config.max_heartbeat_age + TimeDelta::seconds(1);
    // Selection already skips GW_B (conn 2), before any timer ran.
    for id in 1..=5 {
        request(&mut core, t2, id);
        let (conn, _, _) = authorize_in(&drain(&mut core));
        assert_eq!(conn, ConnId(1));
    }
    assert!(core.poll_timeout().is_some_and(|t| t <= t2));
    core.handle_timeout(t2);
    let out = drain(&mut core);
    assert!(out.iter().any(|t| t.conn == ConnId(2)
        && matches!(t.msg, Outbound::Close { code, .. } if code == sessions::CLOSE_MISSED_HEARTBEATS)));
    assert!(!core.is_gateway_connected(GW_B));
    assert!(core.is_gateway_connected(GW_A));
}

fn gateway_offline_msgs(out: &[Transmit]) -> Vec<GatewayId> {
    client_msgs(out)
        .into_iter()
        .filter_map(|e| match e.message {
            PortalToClient::GatewayOffline(o) => Some(o.gateway_id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_gateway_that_stays_away_is_reported_offline_and_its_clients_move_to_a_sibling() {
    let config = ControlConfig::default();
    let mut core = core_with(config.clone(), &[GW_A, GW_B]);
    request(&mut core, t0(), 1);
    let (used_conn, _, flow_id) = authorize_in(&drain(&mut core));
    confirm(&mut core, t0(), used_conn, flow_id);
    drain(&mut core);
    let (used, other_conn) = if used_conn == ConnId(1) {
        (GW_A, ConnId(2))
    } else {
        (GW_B, ConnId(1))
    };

    let t1 = t0() + TimeDelta::seconds(1);
    core.disconnected(t1, used_conn);
    assert_eq!(core.poll_timeout(), Some(t1 + config.gateway_grace));
    core.handle_timeout(t1 + config.gateway_grace - TimeDelta::milliseconds(1));
    assert!(
        drain(&mut core).is_empty(),
        "nothing within the grace period"
    );
    assert_eq!(core.live_flows(), 1);

    core.handle_timeout(t1 + config.gateway_grace);
    let out = drain(&mut core);
    assert_eq!(gateway_offline_msgs(&out), vec![used], "{out:?}");
    assert_eq!(out.len(), 1, "only the client hears of it: {out:?}");
    assert_eq!(core.live_flows(), 0, "the portal forgets its flows too");

    // The next request goes to the sibling, the dead one is not offered.
    let t2 = t1 + config.gateway_grace + TimeDelta::milliseconds(50);
    request(&mut core, t2, 2);
    let (conn, _, flow_id) = authorize_in(&drain(&mut core));
    assert_eq!(conn, other_conn);
    confirm(&mut core, t2, conn, flow_id);
    assert!(matches!(
        client_msgs(&drain(&mut core))[..],
        [Envelope {
            message: PortalToClient::FlowCreated(keyhole_proto::messages::FlowCreated {
                gateway_id,
                ..
            }),
            ..
        }] if gateway_id != used
    ));

    // It comes back later: nothing of the old flow is asked of it.
    core.gateway_connected(t2, used_conn, hello(used, 1));
    assert!(authorizes_to(&drain(&mut core), used_conn).is_empty());
}

#[test]
fn a_gateway_back_within_the_grace_period_is_not_reported_offline() {
    let config = ControlConfig::default();
    let mut core = core_with(config.clone(), &[GW_A]);
    let first = live_flow(&mut core);
    let t1 = t0() + TimeDelta::seconds(1);
    core.disconnected(t1, ConnId(1));
    core.gateway_connected(t1 + config.gateway_grace / 2, ConnId(50), hello(GW_A, 1));
    assert_eq!(authorizes_to(&drain(&mut core), ConnId(50)), vec![first]);
    core.handle_timeout(t1 + config.gateway_grace * 2);
    assert!(gateway_offline_msgs(&drain(&mut core)).is_empty());
    assert_eq!(core.live_flows(), 1);
}

#[test]
fn a_gateway_without_flows_leaves_no_timer_and_tells_no_one() {
    let config = ControlConfig {
        max_heartbeat_age: TimeDelta::hours(1),
        ..ControlConfig::default()
    };
    let mut core = core_with(config.clone(), &[GW_A]);
    core.disconnected(t0(), ConnId(1));
    assert_eq!(core.poll_timeout(), None, "no gateway, no flow, no timer");
    core.handle_timeout(t0() + config.gateway_grace);
    assert!(drain(&mut core).is_empty());
}
