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
