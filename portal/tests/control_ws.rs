//! The control channel end to end over real WebSockets: a portal started
//! in-process, a test gateway and test clients speaking the protocol.
//! The same scenario runs on SQLite and on a throwaway PostgreSQL cluster.

mod control_common;
mod support;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use control_common::*;
use keyhole_portal::{
    control::{ControlConfig, tasks::reload_snapshot},
    policy::{ActorId, Conditions},
    server::Portal,
    state::Change,
    store::{NewPolicy, NewResource, TokenKind, TokenOwner},
};
use keyhole_proto::{
    CLOSE_MESSAGE_TOO_BIG, IceCandidate, ResourceAddress, ResourceId, ResourceName,
    messages::{
        ClientCandidates, ClientToPortal, FlowAuthorized, FlowFailReason, GatewayCandidates,
        GatewayToPortal, PortalToClient, PortalToGateway, RequestFlow, RevokeTarget,
    },
};

fn config() -> ControlConfig {
    ControlConfig {
        gateway_ack_timeout: TimeDelta::milliseconds(800),
        ..ControlConfig::default()
    }
}

fn cidr_resource(name: &str, cidr: &str, site: keyhole_proto::SiteId) -> NewResource {
    NewResource {
        name: ResourceName::try_from(name.to_owned()).unwrap(),
        address: ResourceAddress::Cidr {
            cidr: cidr.parse().unwrap(),
        },
        filters: vec![],
        site_ids: vec![site],
    }
}

/// Gateway side: answer the next `authorize_flow` and return its flow id.
async fn ack_next(gw: &mut Ws) -> keyhole_proto::FlowId {
    let env = frame::<PortalToGateway>(gw).await;
    let PortalToGateway::AuthorizeFlow(a) = env.message else {
        panic!("expected authorize_flow, got {env:?}");
    };
    send(
        gw,
        &gateway_reply(
            env.id.expect("authorize_flow is a request"),
            GatewayToPortal::FlowAuthorized(FlowAuthorized { flow_id: a.flow_id }),
        ),
    )
    .await;
    a.flow_id
}

async fn scenario(portal: Portal) {
    let store = portal.app.store.clone();
    let now = Utc::now();
    let addr = portal.addr;
    let site = portal
        .first_start
        .as_ref()
        .and_then(|f| f.default_site.clone())
        .expect("first start creates a default site");
    let far = store.create_site("far-away", now).await.unwrap();

    // Access model: service account "ci" in groups "eng" (→ wiki via
    // policy P1) and "ops" (→ db via P2); "secret" has no policy; "remote"
    // is allowed but its site has no gateway.
    let sa = store.create_service_account("ci", now).await.unwrap();
    let actor = ActorId::ServiceAccount(sa.id);
    let eng = store.create_group("eng", now).await.unwrap();
    let ops = store.create_group("ops", now).await.unwrap();
    store.add_member(eng.id, actor).await.unwrap();
    store.add_member(ops.id, actor).await.unwrap();
    let wiki = store
        .create_resource(cidr_resource("wiki", "10.0.1.0/24", site.id), now)
        .await
        .unwrap();
    let db = store
        .create_resource(cidr_resource("db", "10.0.2.0/24", site.id), now)
        .await
        .unwrap();
    let secret = store
        .create_resource(cidr_resource("secret", "10.0.3.0/24", site.id), now)
        .await
        .unwrap();
    let remote = store
        .create_resource(cidr_resource("remote", "10.9.0.0/16", far.id), now)
        .await
        .unwrap();
    let policy = |group, resource: &keyhole_proto::Resource| NewPolicy {
        group_id: group,
        resource_id: resource.id,
        enabled: true,
        conditions: Conditions::default(),
        description: String::new(),
    };
    let p1 = store
        .create_policy(policy(eng.id, &wiki), now)
        .await
        .unwrap();
    store.create_policy(policy(ops.id, &db), now).await.unwrap();
    store
        .create_policy(policy(eng.id, &remote), now)
        .await
        .unwrap();
    let gw_token = store
        .create_token(
            TokenKind::Gateway,
            TokenOwner::Site(site.id),
            None,
            None,
            now,
        )
        .await
        .unwrap();
    let sa_token = store
        .create_token(
            TokenKind::ServiceAccount,
            TokenOwner::ServiceAccount(sa.id),
            None,
            None,
            now,
        )
        .await
        .unwrap();
    reload_snapshot(&store, &portal.hub).await;

    // Refused credentials never get a socket.
    assert_eq!(
        connect(addr, "/api/v1/client/ws?public_key=x&version=1", "kh_nope")
            .await
            .err(),
        Some(400),
        "a malformed public key is a bad request"
    );
    let q = format!(
        "/api/v1/gateway/ws?public_key={}&version=1&backend=kernel",
        key(99)
            .to_base64()
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    assert_eq!(connect(addr, &q, "kh_wrong").await.err(), Some(401));
    assert_eq!(connect(addr, &q, &sa_token.secret).await.err(), Some(403));

    // 1. The gateway connects and gets init with its site's resources.
    let mut gw = connect_gateway(addr, &gw_token.secret, key(1)).await;
    let init = frame::<PortalToGateway>(&mut gw).await;
    let PortalToGateway::Init(gi) = init.message else {
        panic!("expected init, got {init:?}");
    };
    assert_eq!(gi.site_id, site.id);
    let mut site_resources: Vec<ResourceId> = gi.resources.iter().map(|r| r.id).collect();
    site_resources.sort();
    let mut expected = vec![wiki.id, db.id, secret.id];
    expected.sort();
    assert_eq!(site_resources, expected);
    let gateway_id = gi.gateway_id;

    // 2. The client connects: init shows what it may see.
    let mut cl = connect_client(addr, &sa_token.secret, key(2)).await;
    let init = frame::<PortalToClient>(&mut cl).await;
    let PortalToClient::Init(ci) = init.message else {
        panic!("expected init, got {init:?}");
    };
    let mut visible: Vec<ResourceId> = ci.resources.iter().map(|r| r.id).collect();
    visible.sort();
    let mut expected = vec![wiki.id, db.id, remote.id];
    expected.sort();
    assert_eq!(visible, expected);
    let client_id = ci.client_id;

    // 3. A flow: request → authorize_flow → flow_authorized → flow_created.
    let rf = |r: &keyhole_proto::Resource| {
        ClientToPortal::RequestFlow(RequestFlow {
            resource_id: r.id,
            connected_gateway_ids: vec![],
            dns: vec![],
        })
    };
    send(&mut cl, &request(1, rf(&wiki))).await;
    let wiki_flow = ack_next(&mut gw).await;
    let created = frame::<PortalToClient>(&mut cl).await;
    assert_eq!(created.reply_to, Some(keyhole_proto::RequestId(1)));
    let PortalToClient::FlowCreated(fc) = &created.message else {
        panic!("expected flow_created, got {created:?}");
    };
    assert_eq!(fc.flow_id, wiki_flow);
    assert_eq!(fc.gateway_id, gateway_id);
    assert_eq!(fc.gateway_public_key, key(1));
    assert!(fc.expires_at > Utc::now());

    // 4. Repeating the request id gives the same answer, no new flow.
    send(&mut cl, &request(1, rf(&wiki))).await;
    let again = frame::<PortalToClient>(&mut cl).await;
    assert_eq!(again, created);
    assert_quiet(&mut gw, Duration::from_millis(200)).await;

    // 5. ICE candidates are relayed both ways.
    let cand =
        IceCandidate::try_from("candidate:1 1 udp 2130706431 192.0.2.1 51820 typ host".to_owned())
            .unwrap();
    send(
        &mut cl,
        &keyhole_proto::Envelope::new(ClientToPortal::IceCandidates(GatewayCandidates {
            gateway_id,
            candidates: vec![cand.clone()],
        })),
    )
    .await;
    let got = frame::<PortalToGateway>(&mut gw).await;
    assert_eq!(
        got.message,
        PortalToGateway::IceCandidates(ClientCandidates {
            client_id,
            candidates: vec![cand.clone()],
        })
    );
    send(
        &mut gw,
        &keyhole_proto::Envelope::new(GatewayToPortal::IceCandidates(ClientCandidates {
            client_id,
            candidates: vec![cand.clone()],
        })),
    )
    .await;
    let got = frame::<PortalToClient>(&mut cl).await;
    assert_eq!(
        got.message,
        PortalToClient::IceCandidates(GatewayCandidates {
            gateway_id,
            candidates: vec![cand],
        })
    );

    // 6. Not allowed, and no gateway online.
    send(&mut cl, &request(2, rf(&secret))).await;
    let f = frame::<PortalToClient>(&mut cl).await;
    assert!(
        matches!(&f.message, PortalToClient::FlowFailed(x) if x.reason == FlowFailReason::NotAllowed),
        "{f:?}"
    );
    send(&mut cl, &request(3, rf(&remote))).await;
    let f = frame::<PortalToClient>(&mut cl).await;
    assert!(
        matches!(&f.message, PortalToClient::FlowFailed(x) if x.reason == FlowFailReason::NoGatewayOnline),
        "{f:?}"
    );

    // 7. An unknown message type is ignored; the session goes on.
    send_raw(
        &mut cl,
        r#"{"v":1,"type":"from_the_future","id":77,"payload":{"x":1}}"#.to_owned(),
    )
    .await;
    send(&mut cl, &request(4, rf(&db))).await;
    let db_flow = ack_next(&mut gw).await;
    let f = frame::<PortalToClient>(&mut cl).await;
    assert!(
        matches!(&f.message, PortalToClient::FlowCreated(x) if x.flow_id == db_flow),
        "{f:?}"
    );

    // 8. A gateway that never confirms: the client hears gateway_timeout
    //    (this site has one gateway), the gateway is told to drop it.
    send(&mut cl, &request(5, rf(&wiki))).await;
    let env = frame::<PortalToGateway>(&mut gw).await;
    let PortalToGateway::AuthorizeFlow(unanswered) = env.message else {
        panic!("expected authorize_flow, got {env:?}");
    };
    let f = frame::<PortalToClient>(&mut cl).await;
    assert!(
        matches!(&f.message, PortalToClient::FlowFailed(x) if x.reason == FlowFailReason::GatewayTimeout),
        "{f:?}"
    );
    let r = frame::<PortalToGateway>(&mut gw).await;
    assert_eq!(
        r.message,
        PortalToGateway::Revoke(keyhole_proto::messages::Revoke {
            target: RevokeTarget::Flow {
                flow_id: unanswered.flow_id
            }
        })
    );

    // 9. Revocation: deleting the policy (store + publish, as the API
    //    does) reaches gateway and client within 1 s.
    let t0 = Instant::now();
    store.delete_policy(p1.policy.id).await.unwrap();
    portal.app.publish(Change::PolicyDeleted(p1.policy.id.0));
    let revoked = expect_revocation(&mut gw, &mut cl, wiki_flow).await;
    let elapsed = t0.elapsed();
    eprintln!("policy deletion → revoke at gateway and client: {elapsed:?}");
    assert!(revoked, "wiki flow revoked on both sides");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");

    //    ... and removing the membership behind the db flow.
    let t0 = Instant::now();
    store.remove_member(ops.id, actor).await.unwrap();
    portal.app.publish(Change::MembershipChanged {
        group: ops.id.0,
        actor: sa.id.0,
    });
    assert!(expect_revocation(&mut gw, &mut cl, db_flow).await);
    let elapsed = t0.elapsed();
    eprintln!("membership removal → revoke at gateway and client: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");

    // 10. An oversized frame closes the connection with 1009.
    let mut big = connect_client(addr, &sa_token.secret, key(3)).await;
    let _init = frame::<PortalToClient>(&mut big).await;
    let huge = format!(
        r#"{{"v":1,"type":"request_flow","id":1,"payload":{{"pad":"{}"}}}}"#,
        "x".repeat(keyhole_proto::MAX_FRAME_BYTES + 10)
    );
    send_raw(&mut big, huge).await;
    match next::<PortalToClient>(&mut big, Duration::from_secs(5)).await {
        Next::Closed(code) => assert_eq!(code, Some(CLOSE_MESSAGE_TOO_BIG)),
        Next::Frame(f) => panic!("expected close, got {f:?}"),
    }

    // The flow log was written in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = store.recent_flow_log(100).await.unwrap();
        if log.len() >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flow log has {} entries",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = portal.metrics.render();
    assert!(
        metrics.contains("keyhole_flows_total{outcome=\"authorized\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyhole_flows_total{outcome=\"not_allowed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyhole_gateways_connected 1"),
        "{metrics}"
    );
    portal.abort();
}

/// Both sides hear that `flow` is revoked (other frames, e.g. resource
/// changes, may come first).
async fn expect_revocation(gw: &mut Ws, cl: &mut Ws, flow: keyhole_proto::FlowId) -> bool {
    let target = RevokeTarget::Flow { flow_id: flow };
    let gateway_side = async {
        loop {
            let f = frame::<PortalToGateway>(gw).await;
            if matches!(f.message, PortalToGateway::Revoke(r) if r.target == target) {
                return true;
            }
        }
    };
    let client_side = async {
        loop {
            let f = frame::<PortalToClient>(cl).await;
            if matches!(f.message, PortalToClient::Revoked(r) if r.target == target) {
                return true;
            }
        }
    };
    let (a, b) = tokio::join!(gateway_side, client_side);
    a && b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_channel_on_sqlite() {
    let dir = temp_dir("control-sqlite");
    let portal = start_portal(dir.clone(), None, config()).await;
    let health = http_get(portal.addr, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = http_get(portal.addr, "/metrics").await;
    assert!(metrics.contains("# TYPE keyhole_authorization_latency_seconds histogram"));
    scenario(portal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_channel_on_postgres() {
    let pg = support::postgres::TempPostgres::start();
    let url = pg.fresh_database("keyhole_control").await;
    let dir = temp_dir("control-pg");
    let portal = start_portal(dir.clone(), Some(url), config()).await;
    scenario(portal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
