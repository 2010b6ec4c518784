//! A graceful shutdown loses no flow-log entry: the log is written in the
//! background, so the portal must drain its queue before `wait` returns.
//!
//! The test holds SQLite's write lock from a second connection while
//! flows are authorised, so every entry is still queued when shutdown
//! starts; the lock is released shortly after. `wait` must return only
//! once all of them are in the database.

mod control_common;

use std::time::Duration;

use chrono::Utc;
use control_common::*;
use futures_util::StreamExt as _;
use keyhole_portal::{
    control::{ControlConfig, tasks::reload_snapshot},
    policy::{ActorId, Conditions},
    server::{self, ServerConfig},
    store::{NewPolicy, NewResource, SQLITE_FILE, TokenKind, TokenOwner},
};
use keyhole_proto::{
    ResourceAddress, ResourceName,
    messages::{
        ClientToPortal, FlowAuthorized, GatewayToPortal, PortalToClient, PortalToGateway,
        RequestFlow,
    },
};
use sqlx::Connection as _;
use tokio_tungstenite::tungstenite;

const FLOWS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_writes_the_queued_flow_log() {
    let dir = temp_dir("control-shutdown");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = ServerConfig {
        control: ControlConfig::default(),
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.clone())
    };
    let portal = server::start(cfg, async {
        let _ = stop_rx.await;
    })
    .await
    .unwrap();
    let store = portal.app.store.clone();
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
    let mut gw = connect_gateway(portal.addr, &gw_token.secret, key(1)).await;
    let _ = frame::<PortalToGateway>(&mut gw).await;
    let mut cl = connect_client(portal.addr, &sa_token.secret, key(2)).await;
    let _ = frame::<PortalToClient>(&mut cl).await;

    // Hold the write lock: the flow-log writer now waits (busy timeout).
    let url = format!("sqlite://{}", dir.join(SQLITE_FILE).display());
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();

    for id in 1..=FLOWS {
        let req = request(
            id,
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: resource.id,
                connected_gateway_ids: vec![],
                dns: vec![],
            }),
        );
        send(&mut cl, &req).await;
        let env = frame::<PortalToGateway>(&mut gw).await;
        let PortalToGateway::AuthorizeFlow(a) = env.message else {
            panic!("expected authorize_flow, got {env:?}");
        };
        send(
            &mut gw,
            &gateway_reply(
                env.id.unwrap(),
                GatewayToPortal::FlowAuthorized(FlowAuthorized { flow_id: a.flow_id }),
            ),
        )
        .await;
        let answer = frame::<PortalToClient>(&mut cl).await;
        assert!(
            matches!(answer.message, PortalToClient::FlowCreated(_)),
            "{answer:?}"
        );
    }
    let count = |store: keyhole_portal::store::Store| async move {
        store.recent_flow_log(1000).await.unwrap().len() as u64
    };

    // Shut down, and let the writer through a moment later.
    stop_tx.send(()).unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
        blocker.close().await.unwrap();
    });
    tokio::time::timeout(Duration::from_secs(20), portal.wait())
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert_eq!(
        count(store.clone()).await,
        FLOWS,
        "every authorisation is in the flow log when wait returns"
    );
    release.await.unwrap();

    // The control connections were closed as "going away".
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match cl.next().await {
                Some(Ok(tungstenite::Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some(1001));
    let _ = std::fs::remove_dir_all(&dir);
}
