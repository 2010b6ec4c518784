//! The portal side of the bench: a child process running a real portal on
//! SQLite in a temp dir, set up with one service account allowed to one
//! resource, a gateway token for the default site, and nothing else.
//!
//! It prints `READY <addr> <gateway token> <client token> <resource id>`,
//! then answers `stats` lines on stdin with a `STATS ...` line, and shuts
//! down when stdin closes.

use std::io::{BufRead as _, Write as _};

use chrono::Utc;
use keyhole_portal::{
    control::{ControlConfig, tasks::reload_snapshot},
    policy::{ActorId, Conditions},
    store::{NewPolicy, NewResource, TokenKind, TokenOwner},
};
use keyhole_proto::{ResourceAddress, ResourceName};
use std::sync::atomic::Ordering;

use super::control_common::{start_portal, temp_dir};

pub async fn run() {
    let dir = temp_dir("authz-bench");
    let portal = start_portal(dir.clone(), None, ControlConfig::default()).await;
    let store = portal.app.store.clone();
    let now = Utc::now();
    let site = portal
        .first_start
        .as_ref()
        .and_then(|f| f.default_site.clone())
        .expect("first start creates the default site");
    let sa = store.create_service_account("bench", now).await.unwrap();
    let group = store.create_group("bench", now).await.unwrap();
    store
        .add_member(group.id, ActorId::ServiceAccount(sa.id))
        .await
        .unwrap();
    let resource = store
        .create_resource(
            NewResource {
                name: ResourceName::try_from("bench".to_owned()).unwrap(),
                address: ResourceAddress::Cidr {
                    cidr: "10.0.0.0/8".parse().unwrap(),
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
    reload_snapshot(&store, &portal.hub).await;
    println!(
        "READY {} {} {} {}",
        portal.addr, gw_token.secret, sa_token.secret, resource.id.0
    );
    std::io::stdout().flush().unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(cmd) = rx.recv().await {
        if cmd.trim() == "stats" {
            let m = portal.hub.metrics();
            println!(
                "STATS live_flows={} authorised={} flow_log_written={} flow_log_dropped={}",
                portal.hub.with_core(|c, _| c.live_flows()),
                m.flows_authorized.load(Ordering::Relaxed),
                m.flow_log_written.load(Ordering::Relaxed),
                m.flow_log_dropped.load(Ordering::Relaxed),
            );
            std::io::stdout().flush().unwrap();
        }
    }
    portal.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
