//! CRUD through the REST API for every entity, and pagination. Each
//! scenario runs on SQLite; a representative subset also on PostgreSQL.

mod api_support;

use api_support::{Api, postgres::TempPostgres};
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use keyhole_portal::{
    policy::{ActorId, UserId},
    store::{FlowDecision, FlowLogEntry, GatewayRegistration, TokenKind},
};
use keyhole_proto::{ClientId, PublicKey, ResourceId, SiteId, messages::connect::WireguardBackend};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    std::time::SystemTime::now().into()
}

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn uuid(s: &str) -> uuid::Uuid {
    s.parse().unwrap()
}

async fn users_crud(api: Api) {
    let id = api
        .create("/users", json!({"email": "Bob@Example.com", "name": "Bob"}))
        .await;
    let bob = api
        .get(&format!("/users/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(bob["email"], "bob@example.com");
    assert_eq!(bob["is_admin"], false);
    let me = api.get("/me").await.expect(StatusCode::OK);
    assert_eq!(me["id"], api.admin_id.as_str());

    let list = api.get("/users").await.expect(StatusCode::OK);
    let emails: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["admin@example.com", "bob@example.com"]);
    assert_eq!(list["next_offset"], Value::Null);

    let patched = api
        .patch(
            &format!("/users/{id}"),
            json!({"name": "Robert", "disabled": true}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["name"], "Robert");
    assert_eq!(patched["disabled"], true);
    assert_eq!(patched["email"], "bob@example.com");

    // Admin API tokens only for admins.
    api.post(&format!("/users/{id}/tokens"), json!({}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    let admin_tokens = api
        .get(&format!("/users/{}/tokens", api.admin_id))
        .await
        .expect(StatusCode::OK);
    assert_eq!(admin_tokens["items"].as_array().unwrap().len(), 1);

    api.delete(&format!("/users/{id}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/users/{id}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.delete(&format!("/users/{id}"))
        .await
        .expect(StatusCode::NOT_FOUND);
}

async fn service_accounts_and_tokens(api: Api) {
    let sa = api
        .create("/service-accounts", json!({"name": "ci-runner"}))
        .await;
    let created = api
        .post(
            &format!("/service-accounts/{sa}/tokens"),
            json!({"expires_at": (now() + TimeDelta::days(30)).to_rfc3339()}),
        )
        .await
        .expect(StatusCode::CREATED);
    let secret = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kh_"));
    let info = api
        .state
        .store
        .verify_token(&secret, now())
        .await
        .unwrap()
        .expect("the shown secret works");
    assert_eq!(info.kind, TokenKind::ServiceAccount);

    let listed = api
        .get(&format!("/service-accounts/{sa}/tokens"))
        .await
        .expect(StatusCode::OK);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], token_id.as_str());
    assert!(
        !listed.to_string().contains(&secret) && items[0].get("token").is_none(),
        "lists never show secrets: {listed}"
    );

    let renamed = api
        .patch(&format!("/service-accounts/{sa}"), json!({"name": "ci"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(renamed["name"], "ci");
    let page = api.get("/service-accounts").await.expect(StatusCode::OK);
    assert_eq!(page["items"][0]["id"], sa.as_str());

    api.delete(&format!("/service-accounts/{sa}/tokens/{token_id}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(
        api.state
            .store
            .verify_token(&secret, now())
            .await
            .unwrap()
            .is_none()
    );
    api.delete(&format!("/service-accounts/{sa}/tokens/{token_id}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.delete(&format!("/service-accounts/{sa}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/service-accounts/{sa}"))
        .await
        .expect(StatusCode::NOT_FOUND);
}

async fn groups_and_members(api: Api) {
    let g = api.create("/groups", json!({"name": "engineering"})).await;
    let u = api
        .create("/users", json!({"email": "e@example.com", "name": "E"}))
        .await;
    let sa = api
        .create("/service-accounts", json!({"name": "deployer"}))
        .await;
    let members = format!("/groups/{g}/members");
    for body in [
        json!({"kind": "user", "id": u}),
        json!({"kind": "user", "id": u}), // twice: still one membership
        json!({"kind": "service_account", "id": sa}),
    ] {
        api.post(&members, body)
            .await
            .expect(StatusCode::NO_CONTENT);
    }
    let listed = api.get(&members).await.expect(StatusCode::OK);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    assert_eq!(items[0], json!({"kind": "user", "id": u}));
    assert_eq!(items[1], json!({"kind": "service_account", "id": sa}));

    // A member that does not exist is a field error, an unknown group 404.
    let missing = uuid::Uuid::new_v4();
    let r = api
        .post(&members, json!({"kind": "user", "id": missing}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.fields(), ["id"]);
    api.post(
        &format!("/groups/{missing}/members"),
        json!({"kind": "user", "id": u}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);

    api.delete(&format!("{members}/{sa}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&format!("{members}/{sa}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    let listed = api.get(&members).await.expect(StatusCode::OK);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let renamed = api
        .patch(&format!("/groups/{g}"), json!({"name": "eng"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(renamed["name"], "eng");
    api.get(&format!("/groups/{g}"))
        .await
        .expect(StatusCode::OK);
    api.delete(&format!("/groups/{g}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&members).await.expect(StatusCode::NOT_FOUND);
}

async fn sites_gateways_relays(api: Api) {
    let site = api.create("/sites", json!({"name": "hq"})).await;
    let other = api.create("/sites", json!({"name": "lab"})).await;
    let tok = api
        .post(&format!("/sites/{site}/tokens"), json!({}))
        .await
        .expect(StatusCode::CREATED);
    let secret = tok["token"].as_str().unwrap();
    let info = api
        .state
        .store
        .verify_token(secret, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.kind, TokenKind::Gateway);
    let listed = api
        .get(&format!("/sites/{site}/tokens"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(listed["items"][0]["kind"], "gateway");
    // Another site's path cannot revoke this site's token.
    api.delete(&format!(
        "/sites/{other}/tokens/{}",
        tok["id"].as_str().unwrap()
    ))
    .await
    .expect(StatusCode::NOT_FOUND);

    // Gateways register themselves over the control channel.
    let gw = api
        .state
        .store
        .register_gateway(
            &GatewayRegistration {
                site_id: SiteId(uuid(&site)),
                name: "gw-1".into(),
                public_key: key(7),
                version: "0.1.0".into(),
                backend: WireguardBackend::Userspace,
                remote_ip: Some("192.0.2.10".parse().unwrap()),
            },
            now(),
        )
        .await
        .unwrap();
    let all = api.get("/gateways").await.expect(StatusCode::OK);
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let of_other = api
        .get(&format!("/gateways?site_id={other}"))
        .await
        .expect(StatusCode::OK);
    assert!(of_other["items"].as_array().unwrap().is_empty());
    let got = api
        .get(&format!("/gateways/{}", gw.id))
        .await
        .expect(StatusCode::OK);
    assert_eq!(got["online"], true);
    assert_eq!(got["backend"], "userspace");
    assert_eq!(got["remote_ip"], "192.0.2.10");
    assert_eq!(got["public_key"], key(7).to_string());
    assert_eq!(got["ipv4"], gw.tunnel.ipv4.to_string());
    api.delete(&format!("/gateways/{}", gw.id))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/gateways/{}", gw.id))
        .await
        .expect(StatusCode::NOT_FOUND);

    api.state
        .store
        .register_relay(Some("198.51.100.7".parse().unwrap()), None, 3478, now())
        .await
        .unwrap();
    let relays = api.get("/relays").await.expect(StatusCode::OK);
    assert_eq!(relays["items"][0]["public_ipv4"], "198.51.100.7");
    assert_eq!(relays["items"][0]["port"], 3478);

    let renamed = api
        .patch(&format!("/sites/{site}"), json!({"name": "headquarters"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(renamed["name"], "headquarters");
    let sites = api.get("/sites").await.expect(StatusCode::OK);
    let names: Vec<&str> = sites["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["headquarters", "lab"]);
    api.delete(&format!("/sites/{site}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/sites/{site}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert!(
        api.state
            .store
            .verify_token(secret, now())
            .await
            .unwrap()
            .is_none(),
        "site tokens go with the site"
    );
}

async fn resources_crud(api: Api) {
    let site = api.create("/sites", json!({"name": "hq"})).await;
    let bodies = [
        json!({"name": "wiki", "address": {"kind": "dns", "pattern": "**.Wiki.Corp."},
               "filters": [{"protocol": "tcp", "ports": {"start": 443, "end": 443}},
                           {"protocol": "icmp"}],
               "site_ids": [site]}),
        json!({"name": "db", "address": {"kind": "ip", "ip": "10.0.0.5"}, "site_ids": [site]}),
        json!({"name": "lan", "address": {"kind": "cidr", "cidr": "10.1.0.0/16"},
               "filters": [{"protocol": "udp", "ports": {"start": 1000, "end": 2000}}]}),
        json!({"name": "internet", "address": {"kind": "internet"}, "site_ids": [site]}),
    ];
    let mut ids = Vec::new();
    for b in &bodies {
        let r = api
            .post("/resources", b.clone())
            .await
            .expect(StatusCode::CREATED);
        assert_eq!(r["name"], b["name"]);
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    let wiki = api
        .get(&format!("/resources/{}", ids[0]))
        .await
        .expect(StatusCode::OK);
    // Stored in canonical form.
    assert_eq!(
        wiki["address"],
        json!({"kind": "dns", "pattern": "**.wiki.corp"})
    );
    assert_eq!(wiki["filters"], bodies[0]["filters"]);
    assert_eq!(wiki["site_ids"], json!([site]));

    let list = api.get("/resources").await.expect(StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "internet", "lan", "wiki"]);

    let updated = api
        .put(
            &format!("/resources/{}", ids[1]),
            json!({"name": "db-primary", "address": {"kind": "ip", "ip": "fd00::5"},
                   "filters": [{"protocol": "tcp", "ports": {"start": 5432, "end": 5432}}]}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(updated["address"]["ip"], "fd00::5");
    assert_eq!(updated["site_ids"], json!([]));
    let stored = api
        .state
        .store
        .get_resource(ResourceId(uuid(&ids[1])))
        .await
        .unwrap();
    assert_eq!(stored.name.as_str(), "db-primary");

    api.delete(&format!("/resources/{}", ids[2]))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/resources/{}", ids[2]))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.put(&format!("/resources/{}", ids[2]), bodies[2].clone())
        .await
        .expect(StatusCode::NOT_FOUND);
}

async fn policies_crud(api: Api) {
    let g = api.create("/groups", json!({"name": "ops"})).await;
    let g2 = api.create("/groups", json!({"name": "dev"})).await;
    let r = api
        .create(
            "/resources",
            json!({"name": "db", "address": {"kind": "ip", "ip": "10.0.0.5"}}),
        )
        .await;
    let conditions = json!({
        "source_cidrs": ["203.0.113.0/24"],
        "sign_in_methods": ["oidc", "service_token"],
        "schedule": {"timezone": "Europe/Berlin",
                     "windows": [{"days": ["mon", "tue"], "start": "09:00", "end": "17:30"}]}
    });
    let p = api
        .post(
            "/policies",
            json!({"group_id": g, "resource_id": r, "description": "office hours",
                   "conditions": conditions}),
        )
        .await
        .expect(StatusCode::CREATED);
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(p["enabled"], true);
    assert_eq!(p["conditions"], conditions);
    let plain = api
        .create("/policies", json!({"group_id": g2, "resource_id": r}))
        .await;

    let got = api
        .get(&format!("/policies/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(got["description"], "office hours");
    let of_g = api
        .get(&format!("/policies?group_id={g}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(of_g["items"].as_array().unwrap().len(), 1);
    let of_r = api
        .get(&format!("/policies?resource_id={r}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(of_r["items"].as_array().unwrap().len(), 2);

    let disabled = api
        .put(
            &format!("/policies/{id}"),
            json!({"group_id": g2, "resource_id": r, "enabled": false}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["group_id"], g2.as_str());
    assert_eq!(disabled["conditions"]["schedule"], Value::Null);

    // The policy engine sees the stored policy.
    let snapshot = api.state.store.load_snapshot().await.unwrap();
    let stored = snapshot
        .policy(keyhole_portal::policy::PolicyId(uuid(&id)))
        .unwrap();
    assert!(!stored.enabled);

    api.delete(&format!("/policies/{plain}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/policies/{plain}"))
        .await
        .expect(StatusCode::NOT_FOUND);
}

async fn clients_crud(api: Api) {
    let u = api
        .create("/users", json!({"email": "c@example.com", "name": "C"}))
        .await;
    let owner = ActorId::User(UserId(uuid(&u)));
    let admin = ActorId::User(UserId(uuid(&api.admin_id)));
    let c1 = api
        .state
        .store
        .register_client(owner, "laptop", key(1), now())
        .await
        .unwrap();
    api.state
        .store
        .register_client(admin, "phone", key(2), now())
        .await
        .unwrap();
    let all = api.get("/clients").await.expect(StatusCode::OK);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let mine = api
        .get(&format!("/clients?user_id={u}"))
        .await
        .expect(StatusCode::OK);
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["owner"], json!({"kind": "user", "id": u}));
    assert_eq!(items[0]["ipv4"], c1.tunnel.ipv4.to_string());

    let off = api
        .patch(&format!("/clients/{}", c1.id), json!({"disabled": true}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(off["disabled"], true);
    assert!(api.state.store.get_client(c1.id).await.unwrap().disabled);
    api.delete(&format!("/clients/{}", c1.id))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/clients/{}", c1.id))
        .await
        .expect(StatusCode::NOT_FOUND);
}

async fn flow_log_filters(api: Api) {
    let alice = ActorId::User(UserId(uuid::Uuid::new_v4()));
    let bob = ActorId::User(UserId(uuid::Uuid::new_v4()));
    let r1 = ResourceId::new_random();
    let r2 = ResourceId::new_random();
    let t0: DateTime<Utc> = "2026-05-18T10:00:00Z".parse().unwrap();
    for i in 0..6i64 {
        api.state
            .store
            .append_flow_log(&FlowLogEntry {
                at: t0 + TimeDelta::minutes(i),
                actor: if i % 2 == 0 { alice } else { bob },
                client_id: ClientId::new_random(),
                resource_id: if i < 3 { r1 } else { r2 },
                gateway_id: None,
                policy_id: None,
                decision: if i == 4 {
                    FlowDecision::Deny
                } else {
                    FlowDecision::Allow
                },
                reason: (i == 4).then(|| "not_allowed".to_owned()),
            })
            .await
            .unwrap();
    }
    let count = |v: &Value| v["items"].as_array().unwrap().len();
    let all = api.get("/flow-log").await.expect(StatusCode::OK);
    assert_eq!(count(&all), 6);
    assert_eq!(
        all["items"][0]["at"], "2026-05-18T10:05:00Z",
        "newest first"
    );
    let ActorId::User(UserId(a)) = alice else {
        unreachable!()
    };
    let by_actor = api
        .get(&format!("/flow-log?actor_id={a}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(count(&by_actor), 3);
    let by_resource = api
        .get(&format!("/flow-log?resource_id={r2}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(count(&by_resource), 3);
    let denied = api
        .get("/flow-log?decision=deny")
        .await
        .expect(StatusCode::OK);
    assert_eq!(count(&denied), 1);
    assert_eq!(denied["items"][0]["reason"], "not_allowed");
    let window = api
        .get("/flow-log?from=2026-05-18T10:01:00Z&until=2026-05-18T10:03:00Z")
        .await
        .expect(StatusCode::OK);
    assert_eq!(count(&window), 2, "from inclusive, until exclusive");
    let combined = api
        .get(&format!(
            "/flow-log?actor_id={a}&resource_id={r2}&decision=deny"
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(count(&combined), 1);
    let paged = api.get("/flow-log?limit=4").await.expect(StatusCode::OK);
    assert_eq!(count(&paged), 4);
    assert_eq!(paged["next_offset"], 4);
}

/// Walking pages sees every item once, in the documented order.
async fn pagination(api: Api) {
    let mut names: Vec<String> = (0..7).map(|i| format!("group-{i:02}")).collect();
    // Insert out of order; the API orders by name.
    for n in names.iter().rev() {
        api.create("/groups", json!({ "name": n })).await;
    }
    names.sort();
    let mut seen = Vec::new();
    let mut offset = Some(0);
    let mut pages = 0;
    while let Some(o) = offset {
        let page = api
            .get(&format!("/groups?limit=3&offset={o}"))
            .await
            .expect(StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|g| g["name"].as_str().unwrap().to_owned()));
        offset = page["next_offset"].as_i64();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names);
    // Past the end: empty page, no next.
    let past = api
        .get("/groups?limit=3&offset=100")
        .await
        .expect(StatusCode::OK);
    assert_eq!(past, json!({"items": [], "next_offset": null}));
    // Exactly one full page: no next page is announced.
    let exact = api.get("/groups?limit=7").await.expect(StatusCode::OK);
    assert_eq!(exact["next_offset"], Value::Null);
    for bad in ["limit=0", "limit=201", "limit=abc", "offset=-1"] {
        let r = api.get(&format!("/groups?{bad}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(r.fields(), [bad.split('=').next().unwrap()], "{bad}");
    }
}

macro_rules! sqlite_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Api::sqlite().await).await;
                }
            )*
        }
    };
}

sqlite_tests!(
    users_crud,
    service_accounts_and_tokens,
    groups_and_members,
    sites_gateways_relays,
    resources_crud,
    policies_crud,
    clients_crud,
    flow_log_filters,
    pagination,
);

/// The same scenarios that exercise the new SQL (filters with optional
/// parameters, COALESCE updates, joins) against PostgreSQL.
#[tokio::test]
async fn postgres_subset() {
    let pg = TempPostgres::start();
    users_crud(Api::postgres(&pg, "api_users").await).await;
    service_accounts_and_tokens(Api::postgres(&pg, "api_sa").await).await;
    groups_and_members(Api::postgres(&pg, "api_groups").await).await;
    sites_gateways_relays(Api::postgres(&pg, "api_sites").await).await;
    resources_crud(Api::postgres(&pg, "api_resources").await).await;
    policies_crud(Api::postgres(&pg, "api_policies").await).await;
    clients_crud(Api::postgres(&pg, "api_clients").await).await;
    flow_log_filters(Api::postgres(&pg, "api_flow_log").await).await;
    pagination(Api::postgres(&pg, "api_pagination").await).await;
}
