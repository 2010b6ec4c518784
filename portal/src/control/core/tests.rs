//! The control core without sockets: inputs with a chosen time, outputs
//! read from `poll_transmit`.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use keyhole_proto::{
    ClientId, Envelope, GatewayId, PublicKey, RequestId, Resource, ResourceAddress, ResourceId,
    SiteId, TunnelAddresses,
    messages::{
        ClientToPortal, FlowAuthorized, FlowFailReason, GatewayHeartbeat, GatewayLoad,
        GatewayToPortal, PortalToClient, PortalToGateway, RequestFlow, RevokeTarget,
    },
};
use rand::SeedableRng as _;
use uuid::Uuid;

use super::*;
use crate::{
    control::ControlConfig,
    policy::{Actor, Client, Conditions, GroupId, Policy, ServiceAccountId},
};

mod liveness;

const SITE: SiteId = SiteId::from_u128(1);
const RES: ResourceId = ResourceId::from_u128(2);
const GROUP: GroupId = GroupId::from_u128(3);
const POLICY: PolicyId = PolicyId::from_u128(4);
const ACTOR: ActorId = ActorId::ServiceAccount(ServiceAccountId::from_u128(5));
const CLIENT: ClientId = ClientId::from_u128(6);
const GW_A: GatewayId = GatewayId::from_u128(7);
const GW_B: GatewayId = GatewayId::from_u128(8);
const CLIENT_CONN: ConnId = ConnId(10);

fn t0() -> DateTime<Utc> {
    "2026-05-18T10:00:00Z".parse().unwrap()
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    s.upsert_actor(Actor {
        id: ACTOR,
        disabled: false,
    });
    s.upsert_group(GROUP);
    assert!(s.add_membership(ACTOR, GROUP));
    s.upsert_resource(Resource {
        id: RES,
        name: keyhole_proto::ResourceName::try_from("db".to_owned()).unwrap(),
        address: ResourceAddress::Cidr {
            cidr: "10.0.0.0/24".parse().unwrap(),
        },
        filters: vec![],
        site_ids: vec![SITE],
    });
    s.upsert_policy(Policy {
        id: POLICY,
        group_id: GROUP,
        resource_id: RES,
        enabled: true,
        conditions: Conditions::default(),
    });
    s.upsert_client(Client {
        id: CLIENT,
        owner: ACTOR,
        disabled: false,
    });
    s
}

fn tunnel(n: u8) -> TunnelAddresses {
    TunnelAddresses::new(
        std::net::Ipv4Addr::new(100, 64, 0, n),
        format!("fd00::{n}").parse().unwrap(),
    )
    .unwrap()
}

fn core_with(config: ControlConfig, gateways: &[GatewayId]) -> ControlCore {
    let mut core = ControlCore::with_rng(
        config,
        snapshot(),
        Arc::new(Metrics::default()),
        StdRng::seed_from_u64(7),
    );
    for (i, g) in gateways.iter().enumerate() {
        core.gateway_connected(
            t0(),
            ConnId(i as u64 + 1),
            GatewayHello {
                id: *g,
                site_id: SITE,
                public_key: PublicKey::from_bytes([i as u8 + 1; 32]),
                tunnel: tunnel(i as u8 + 1),
                token_id: Uuid::from_u128(100),
            },
        );
    }
    core.client_connected(
        t0(),
        CLIENT_CONN,
        ClientHello {
            id: CLIENT,
            actor: ACTOR,
            public_key: PublicKey::from_bytes([9; 32]),
            tunnel: tunnel(9),
            remote_ip: "192.0.2.9".parse().unwrap(),
            sign_in: SignInMethod::ServiceToken,
            token_id: Uuid::from_u128(200),
            token_expiry: None,
        },
    );
    drain(&mut core);
    core
}

fn drain(core: &mut ControlCore) -> Vec<Transmit> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

fn request(core: &mut ControlCore, now: DateTime<Utc>, id: u64) {
    core.client_message(
        now,
        CLIENT_CONN,
        Envelope::request(
            RequestId(id),
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: RES,
                connected_gateway_ids: vec![],
                dns: vec![],
            }),
        ),
    );
}

/// The single `authorize_flow` in `out`: (gateway conn, request id, flow).
fn authorize_in(out: &[Transmit]) -> (ConnId, RequestId, FlowId) {
    let found: Vec<_> = out
        .iter()
        .filter_map(|t| match &t.msg {
            Outbound::Gateway(Envelope {
                id: Some(id),
                message: PortalToGateway::AuthorizeFlow(a),
                ..
            }) => Some((t.conn, *id, a.flow_id)),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{out:?}");
    found[0]
}

fn client_msgs(out: &[Transmit]) -> Vec<Envelope<PortalToClient>> {
    out.iter()
        .filter_map(|t| match &t.msg {
            Outbound::Client(e) if t.conn == CLIENT_CONN => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn confirm(core: &mut ControlCore, now: DateTime<Utc>, conn: ConnId, flow_id: FlowId) {
    core.gateway_message(
        now,
        conn,
        Envelope::new(GatewayToPortal::FlowAuthorized(FlowAuthorized { flow_id })),
    );
}

#[test]
fn flow_is_created_once_the_gateway_confirms_and_repeats_get_the_same_answer() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    request(&mut core, t0(), 1);
    let out = drain(&mut core);
    let (conn, _, flow) = authorize_in(&out);
    assert_eq!(conn, ConnId(1));
    assert!(
        client_msgs(&out).is_empty(),
        "no answer before the gateway confirms"
    );

    // Repeating while pending neither asks again nor answers twice.
    request(&mut core, t0(), 1);
    assert!(drain(&mut core).is_empty());

    confirm(&mut core, t0() + TimeDelta::milliseconds(3), conn, flow);
    let answer = client_msgs(&drain(&mut core));
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].reply_to, Some(RequestId(1)));
    let PortalToClient::FlowCreated(fc) = &answer[0].message else {
        panic!("{answer:?}");
    };
    assert_eq!((fc.flow_id, fc.gateway_id), (flow, GW_A));
    assert_eq!(
        fc.expires_at,
        t0() + ControlConfig::default().max_flow_lifetime
    );
    assert_eq!(core.live_flows(), 1);

    request(&mut core, t0() + TimeDelta::seconds(1), 1);
    let again = drain(&mut core);
    assert_eq!(client_msgs(&again), answer, "same answer, nothing else");
    assert_eq!(again.len(), 1);
}

#[test]
fn unconfirmed_flow_moves_to_the_next_gateway_then_fails_with_timeout() {
    let config = ControlConfig::default();
    let mut core = core_with(config.clone(), &[GW_A, GW_B]);
    request(&mut core, t0(), 1);
    let (first_conn, _, first_flow) = authorize_in(&drain(&mut core));
    assert_eq!(core.poll_timeout(), Some(t0() + config.gateway_ack_timeout));

    let t1 = t0() + config.gateway_ack_timeout;
    core.handle_timeout(t1);
    let out = drain(&mut core);
    let (second_conn, _, second_flow) = authorize_in(&out);
    assert_ne!(first_conn, second_conn, "the other gateway is tried");
    assert_ne!(first_flow, second_flow);
    assert!(out.iter().any(|t| t.conn == first_conn
        && matches!(&t.msg, Outbound::Gateway(Envelope { message: PortalToGateway::Revoke(r), .. })
            if r.target == RevokeTarget::Flow { flow_id: first_flow })));

    // A late confirmation from the first gateway is refused with a revoke.
    confirm(&mut core, t1, first_conn, first_flow);
    let out = drain(&mut core);
    assert!(client_msgs(&out).is_empty());
    assert!(
        matches!(&out[..], [Transmit { conn, msg: Outbound::Gateway(Envelope { message: PortalToGateway::Revoke(_), .. }) }] if *conn == first_conn)
    );

    core.handle_timeout(t1 + config.gateway_ack_timeout);
    let answer = client_msgs(&drain(&mut core));
    assert!(
        matches!(&answer[..], [Envelope { message: PortalToClient::FlowFailed(f), .. }] if f.reason == FlowFailReason::GatewayTimeout),
        "{answer:?}"
    );
    assert_eq!(core.live_flows(), 0);
}

#[test]
fn expiry_revokes_on_both_sides() {
    let config = ControlConfig {
        max_flow_lifetime: TimeDelta::minutes(1),
        ..ControlConfig::default()
    };
    let mut core = core_with(config, &[GW_A]);
    request(&mut core, t0(), 1);
    let (conn, _, flow) = authorize_in(&drain(&mut core));
    confirm(&mut core, t0(), conn, flow);
    drain(&mut core);
    let expiry = t0() + TimeDelta::minutes(1);
    assert_eq!(core.poll_timeout(), Some(expiry));
    core.handle_timeout(expiry - TimeDelta::milliseconds(1));
    assert!(drain(&mut core).is_empty());
    core.handle_timeout(expiry);
    let out = drain(&mut core);
    let target = RevokeTarget::Flow { flow_id: flow };
    assert!(out.iter().any(|t| matches!(&t.msg,
        Outbound::Gateway(Envelope { message: PortalToGateway::Revoke(r), .. }) if r.target == target)));
    assert!(client_msgs(&out).iter().any(|e| matches!(&e.message,
        PortalToClient::Revoked(r) if r.target == target)));
    assert_eq!(core.live_flows(), 0);
}

#[test]
fn gateways_missing_heartbeats_are_skipped() {
    let config = ControlConfig::default();
    let mut core = core_with(config.clone(), &[GW_A]);
    let late = t0() + config.max_heartbeat_age + TimeDelta::seconds(1);
    request(&mut core, late, 1);
    let answer = client_msgs(&drain(&mut core));
    assert!(
        matches!(&answer[..], [Envelope { message: PortalToClient::FlowFailed(f), .. }] if f.reason == FlowFailReason::NoGatewayOnline),
        "{answer:?}"
    );
    core.gateway_message(
        late,
        ConnId(1),
        Envelope::new(GatewayToPortal::Heartbeat(GatewayHeartbeat {
            load: GatewayLoad::default(),
        })),
    );
    request(&mut core, late, 2);
    authorize_in(&drain(&mut core));
}

#[test]
fn withdrawn_policy_revokes_live_flows_and_disabled_client_is_disconnected() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    request(&mut core, t0(), 1);
    let (conn, _, flow) = authorize_in(&drain(&mut core));
    confirm(&mut core, t0(), conn, flow);
    drain(&mut core);

    let mut s = snapshot();
    s.remove_policy(POLICY);
    let epoch = core.epoch();
    core.replace_snapshot(t0(), s, epoch);
    let out = drain(&mut core);
    let target = RevokeTarget::Flow { flow_id: flow };
    assert!(out.iter().any(|t| matches!(&t.msg,
        Outbound::Gateway(Envelope { message: PortalToGateway::Revoke(r), .. }) if r.target == target)));
    let to_client = client_msgs(&out);
    assert!(
        to_client
            .iter()
            .any(|e| matches!(&e.message, PortalToClient::Revoked(r) if r.target == target))
    );
    assert!(
        to_client.iter().any(
            |e| matches!(&e.message, PortalToClient::ResourceDeleted(d) if d.resource_id == RES)
        ),
        "the resource is no longer visible: {to_client:?}"
    );

    let mut s = snapshot();
    s.upsert_client(Client {
        id: CLIENT,
        owner: ACTOR,
        disabled: true,
    });
    core.replace_snapshot(t0(), s, epoch);
    let out = drain(&mut core);
    assert!(out.iter().any(|t| t.conn == CLIENT_CONN
        && matches!(
            t.msg,
            Outbound::Close {
                code: keyhole_proto::CLOSE_POLICY_VIOLATION,
                ..
            }
        )));
}

#[test]
fn client_registered_during_a_snapshot_load_is_kept() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    let epoch_before_load = core.epoch() - 1; // the load started before the client connected
    let mut s = snapshot();
    s.remove_client(CLIENT);
    core.replace_snapshot(t0(), s, epoch_before_load);
    assert!(core.snapshot().client(CLIENT).is_some());
    request(&mut core, t0(), 1);
    authorize_in(&drain(&mut core));
}

#[test]
fn ice_candidates_only_flow_between_peers_with_a_flow() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    let cand = keyhole_proto::IceCandidate::try_from(
        "candidate:1 1 udp 2130706431 192.0.2.1 51820 typ host".to_owned(),
    )
    .unwrap();
    let send = |core: &mut ControlCore| {
        core.client_message(
            t0(),
            CLIENT_CONN,
            Envelope::new(ClientToPortal::IceCandidates(
                keyhole_proto::messages::GatewayCandidates {
                    gateway_id: GW_A,
                    candidates: vec![cand.clone()],
                },
            )),
        );
    };
    send(&mut core);
    assert!(drain(&mut core).is_empty(), "no flow, no relaying");
    request(&mut core, t0(), 1);
    drain(&mut core);
    send(&mut core);
    let out = drain(&mut core);
    assert!(
        matches!(&out[..], [Transmit { conn: ConnId(1), msg: Outbound::Gateway(Envelope { message: PortalToGateway::IceCandidates(c), .. }) }] if c.client_id == CLIENT)
    );
}

fn request_dns(core: &mut ControlCore, id: u64, dns: Vec<DnsProxyAssignment>) {
    core.client_message(
        t0(),
        CLIENT_CONN,
        Envelope::request(
            RequestId(id),
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: RES,
                connected_gateway_ids: vec![],
                dns,
            }),
        ),
    );
}

fn wiki(ip: &str) -> Vec<DnsProxyAssignment> {
    vec![DnsProxyAssignment {
        name: "docs.wiki.corp".into(),
        proxy_ips: vec![ip.parse().unwrap()],
    }]
}

#[test]
fn proxy_ips_for_a_non_dns_resource_are_a_bad_request_and_nothing_is_asked() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    request_dns(&mut core, 1, wiki("100.96.0.1"));
    let out = drain(&mut core);
    let answer = client_msgs(&out);
    assert_eq!(answer.len(), 1, "{out:?}");
    assert_eq!(answer[0].reply_to, Some(RequestId(1)));
    assert!(
        matches!(&answer[0].message, PortalToClient::Error(e) if e.code == ErrorCode::BadRequest),
        "{answer:?}"
    );
    assert_eq!(core.live_flows(), 0);
    assert!(out.iter().all(|t| !matches!(t.msg, Outbound::Gateway(_))));
}

#[test]
fn proxy_ips_under_the_pattern_reach_the_gateway_and_outside_it_do_not() {
    let mut core = core_with(ControlConfig::default(), &[GW_A]);
    let mut r = core.snapshot.resource(RES).cloned().unwrap();
    r.address = ResourceAddress::Dns {
        pattern: keyhole_proto::DnsPattern::parse("**.wiki.corp").unwrap(),
    };
    core.snapshot.upsert_resource(r);

    let outside = vec![DnsProxyAssignment {
        name: "evil.example".into(),
        proxy_ips: vec!["100.96.0.9".parse().unwrap()],
    }];
    request_dns(&mut core, 1, outside);
    let out = drain(&mut core);
    assert!(out.iter().all(|t| !matches!(t.msg, Outbound::Gateway(_))));

    request_dns(&mut core, 2, wiki("100.96.0.1"));
    let out = drain(&mut core);
    let sent: Vec<_> = out
        .iter()
        .filter_map(|t| match &t.msg {
            Outbound::Gateway(Envelope {
                message: PortalToGateway::AuthorizeFlow(a),
                ..
            }) => Some(a.dns.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![wiki("100.96.0.1")]);
}
