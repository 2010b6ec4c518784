//! Liveness over real WebSockets: a relay whose socket dies is announced
//! gone and stored offline; a gateway that stops answering pings is closed
//! and stored offline, and gets its live flows again when it reconnects; a
//! client that stays away past the grace period loses its flows; a gateway
//! that stays away past its grace period is reported offline to clients.

mod control_common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use control_common::*;
use futures_util::StreamExt as _;
use keyhole_portal::{
    control::{ControlConfig, tasks::reload_snapshot},
    policy::{ActorId, Conditions},
    store::{NewPolicy, NewResource, TokenKind, TokenOwner},
};
use keyhole_proto::{
    Envelope, RequestId, ResourceAddress, ResourceName,
    messages::{
        ClientToPortal, FlowAuthorized, GatewayToPortal, PortalToClient, PortalToGateway,
        PortalToRelay, RelayLoad, RelayRegister, RelayToPortal, RequestFlow, RevokeTarget,
    },
};

fn config() -> ControlConfig {
    ControlConfig {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(300),
        client_grace: TimeDelta::seconds(1),
        // The gateway below reconnects well within it.
        gateway_grace: TimeDelta::seconds(2),
        ..ControlConfig::default()
    }
}

/// Read (and so answer pings on) `ws` for `wait`; return what arrived.
async fn pump<M: keyhole_proto::Message + std::fmt::Debug>(
    ws: &mut Ws,
    wait: Duration,
) -> Vec<Envelope<M>> {
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(end, ws.next()).await {
        if let Ok(tokio_tungstenite::tungstenite::Message::Text(t)) = msg
            && let Ok(keyhole_proto::Decoded::Known(env)) = keyhole_proto::decode::<M>(t.as_bytes())
        {
            got.push(env);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peers_are_detected_and_flows_survive_a_gateway_reconnect() {
    let dir = temp_dir("control-liveness");
    let portal = start_portal(dir.clone(), None, config()).await;
    let store = portal.app.store.clone();
    let addr = portal.addr;
    let now = Utc::now();
    let site = portal
        .first_start
        .as_ref()
        .and_then(|f| f.default_site.clone())
        .unwrap();
    let sa = store.create_service_account("ci", now).await.unwrap();
    let group = store.create_group("eng", now).await.unwrap();
    store
        .add_member(group.id, ActorId::ServiceAccount(sa.id))
        .await
        .unwrap();
    let resource = store
        .create_resource(
            NewResource {
                name: ResourceName::try_from("wiki".to_owned()).unwrap(),
                address: ResourceAddress::Cidr {
                    cidr: "10.0.1.0/24".parse().unwrap(),
                },
                filters: vec![],
                site_ids: vec![site.id],
            },
            now,
        )
        .await
        .unwrap();
    store
        .create_policy(
            NewPolicy {
                group_id: group.id,
                resource_id: resource.id,
                enabled: true,
                conditions: Conditions::default(),
                description: String::new(),
            },
            now,
        )
        .await
        .unwrap();
    let token = |kind, owner| store.create_token(kind, owner, None, None, now);
    let gw_token = token(TokenKind::Gateway, TokenOwner::Site(site.id))
        .await
        .unwrap();
    let sa_token = token(TokenKind::ServiceAccount, TokenOwner::ServiceAccount(sa.id))
        .await
        .unwrap();
    let relay_token = token(TokenKind::Relay, TokenOwner::Deployment)
        .await
        .unwrap();
    reload_snapshot(&store, &portal.hub).await;

    let mut gw = connect_gateway(addr, &gw_token.secret, key(1)).await;
    let gw_init = frame::<PortalToGateway>(&mut gw).await;
    let PortalToGateway::Init(gw_init) = gw_init.message else {
        panic!("{gw_init:?}");
    };
    let gateway_id = gw_init.gateway_id;
    let mut cl = connect_client(addr, &sa_token.secret, key(2)).await;
    let _ = frame::<PortalToClient>(&mut cl).await;

    // A relay registers; clients and gateways hear of it.
    let mut relay = connect(addr, "/api/v1/relay/ws", &relay_token.secret)
        .await
        .unwrap();
    send(
        &mut relay,
        &Envelope::request(
            RequestId(1),
            RelayToPortal::Register(RelayRegister {
                public_ipv4: Some("192.0.2.50".parse().unwrap()),
                public_ipv6: None,
                port: 3478,
                load: RelayLoad::default(),
            }),
        ),
    )
    .await;
    let PortalToRelay::Init(relay_init) = frame::<PortalToRelay>(&mut relay).await.message else {
        panic!("expected init");
    };
    let relay_id = relay_init.relay_id;
    for msg in [
        frame::<PortalToClient>(&mut cl).await.message,
        match frame::<PortalToGateway>(&mut gw).await.message {
            PortalToGateway::RelaysPresence(p) => PortalToClient::RelaysPresence(p),
            other => panic!("{other:?}"),
        },
    ] {
        let PortalToClient::RelaysPresence(p) = msg else {
            panic!("{msg:?}");
        };
        assert_eq!(p.connected.len(), 1);
        assert_eq!(p.connected[0].id, relay_id);
    }

    // A flow through the gateway.
    send(
        &mut cl,
        &request(
            1,
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: resource.id,
                connected_gateway_ids: vec![],
                dns: vec![],
            }),
        ),
    )
    .await;
    let env = frame::<PortalToGateway>(&mut gw).await;
    let PortalToGateway::AuthorizeFlow(first) = env.message else {
        panic!("{env:?}");
    };
    send(
        &mut gw,
        &gateway_reply(
            env.id.unwrap(),
            GatewayToPortal::FlowAuthorized(FlowAuthorized {
                flow_id: first.flow_id,
            }),
        ),
    )
    .await;
    let created = frame::<PortalToClient>(&mut cl).await;
    assert!(matches!(created.message, PortalToClient::FlowCreated(_)));

    // The relay's socket dies: both peers are told, the store says offline.
    drop(relay);
    let (cl_got, gw_got) = tokio::join!(
        pump::<PortalToClient>(&mut cl, Duration::from_secs(1)),
        pump::<PortalToGateway>(&mut gw, Duration::from_secs(1)),
    );
    assert!(cl_got.iter().any(|e| matches!(&e.message,
        PortalToClient::RelaysPresence(p) if p.disconnected_ids == vec![relay_id])));
    assert!(gw_got.iter().any(|e| matches!(&e.message,
        PortalToGateway::RelaysPresence(p) if p.disconnected_ids == vec![relay_id])));
    let relays = store.list_relays(10, 0).await.unwrap();
    assert!(
        relays.iter().any(|r| r.id == relay_id && !r.online),
        "{relays:?}"
    );

    // The gateway stops reading (so answers no pings): the portal closes
    // it within interval + timeout (+ close grace) and stores it offline,
    // while the client, which reads, stays connected.
    let mut offline = false;
    for _ in 0..30 {
        pump::<PortalToClient>(&mut cl, Duration::from_millis(100)).await;
        if !store.get_gateway(gateway_id).await.unwrap().online {
            offline = true;
            break;
        }
    }
    assert!(offline, "a gateway that answers no pings is shown offline");
    drop(gw);

    // It reconnects: the live flow is asked of it again, unchanged.
    let mut gw = connect_gateway(addr, &gw_token.secret, key(1)).await;
    assert!(matches!(
        frame::<PortalToGateway>(&mut gw).await.message,
        PortalToGateway::Init(_)
    ));
    let env = frame::<PortalToGateway>(&mut gw).await;
    let PortalToGateway::AuthorizeFlow(again) = env.message else {
        panic!("{env:?}");
    };
    assert_eq!(again, first);
    send(
        &mut gw,
        &gateway_reply(
            env.id.unwrap(),
            GatewayToPortal::FlowAuthorized(FlowAuthorized {
                flow_id: again.flow_id,
            }),
        ),
    )
    .await;
    assert!(store.get_gateway(gateway_id).await.unwrap().online);
    // The client hears nothing about it (its flow never changed).
    let cl_got = pump::<PortalToClient>(&mut cl, Duration::from_millis(500)).await;
    assert!(
        cl_got
            .iter()
            .all(|e| matches!(e.message, PortalToClient::RelaysPresence(_))),
        "{cl_got:?}"
    );

    // The client leaves for good: after the grace period (1 s here) the
    // gateway is told to drop the flow.
    drop(cl);
    let gw_got = pump::<PortalToGateway>(&mut gw, Duration::from_millis(2500)).await;
    assert!(
        gw_got.iter().any(|e| matches!(&e.message,
            PortalToGateway::Revoke(r) if r.target == RevokeTarget::Flow { flow_id: first.flow_id })),
        "{gw_got:?}"
    );
    assert_eq!(portal.hub.with_core(|c, _| c.live_flows()), 0);

    // The client is back with a new flow; then the gateway's socket closes
    // for good: past the gateway grace (2 s here) the client is told, and
    // the portal forgets the flow.
    let mut cl = connect_client(addr, &sa_token.secret, key(2)).await;
    let _ = frame::<PortalToClient>(&mut cl).await;
    send(
        &mut cl,
        &request(
            2,
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: resource.id,
                connected_gateway_ids: vec![],
                dns: vec![],
            }),
        ),
    )
    .await;
    let env = frame::<PortalToGateway>(&mut gw).await;
    let PortalToGateway::AuthorizeFlow(second) = env.message else {
        panic!("{env:?}");
    };
    send(
        &mut gw,
        &gateway_reply(
            env.id.unwrap(),
            GatewayToPortal::FlowAuthorized(FlowAuthorized {
                flow_id: second.flow_id,
            }),
        ),
    )
    .await;
    let created = frame::<PortalToClient>(&mut cl).await;
    assert!(matches!(created.message, PortalToClient::FlowCreated(_)));
    drop(gw);
    let early = pump::<PortalToClient>(&mut cl, Duration::from_millis(1000)).await;
    assert!(
        !early
            .iter()
            .any(|e| matches!(e.message, PortalToClient::GatewayOffline(_))),
        "reported within the grace period: {early:?}"
    );
    let cl_got = pump::<PortalToClient>(&mut cl, Duration::from_millis(2500)).await;
    assert!(
        cl_got.iter().any(|e| matches!(&e.message,
            PortalToClient::GatewayOffline(o) if o.gateway_id == gateway_id)),
        "{cl_got:?}"
    );
    assert_eq!(portal.hub.with_core(|c, _| c.live_flows()), 0);
    portal.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
