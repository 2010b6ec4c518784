//! The store against both backends: every scenario runs on a fresh SQLite
//! file and on a fresh database in a throwaway PostgreSQL cluster.

mod support;

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use keyhole_portal::{
    policy::{
        AccessRequest, ActorId, Conditions, Decision, DenyReason, Schedule, SignInMethod,
        TimeWindow, evaluate,
    },
    store::*,
};
use keyhole_proto::{
    Filter, PortRange, Protocol, PublicKey, ResourceAddress, SiteId, TUNNEL_PEER_IPV4_RANGE,
    messages::connect::WireguardBackend,
};
use sqlx::Connection as _;
use support::postgres::TempPostgres;

fn now() -> DateTime<Utc> {
    "2026-05-18T10:00:00Z".parse().unwrap()
}

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

/// Run `scenario` against a fresh store; `url` is the database URL.
type Scenario = fn(Store, String) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[(&str, Scenario)] = &[
            $((stringify!($name), |s, u| Box::pin($name(s, u)))),*
        ];
    };
}

scenarios!(
    migrations_are_idempotent,
    users_and_validation,
    tokens_are_hashed_and_checked,
    resources_and_transactions,
    policies_feed_the_snapshot,
    clients_and_tunnel_addresses,
    gateways_and_relays,
    flow_log,
);

async fn raw(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.unwrap()
}

async fn count(url: &str, table: &str) -> i64 {
    let mut c = raw(url).await;
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut c)
        .await
        .unwrap();
    n
}

async fn migrations_are_idempotent(store: Store, url: String) {
    store.close().await;
    let again = Store::connect(&url).await.expect("second start");
    again.create_site("default", now()).await.unwrap();
}

async fn users_and_validation(store: Store, _url: String) {
    let alice = store
        .create_user("Alice@Example.com", "Alice", true, now())
        .await
        .unwrap();
    assert_eq!(alice.email, "alice@example.com");
    assert!(matches!(
        store
            .create_user("alice@example.com", "Other", false, now())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_user("not-an-email", "X", false, now()).await,
        Err(StoreError::Invalid { field: "email", .. })
    ));
    assert!(matches!(
        store.create_user("x@y.z", " ", false, now()).await,
        Err(StoreError::Invalid { field: "name", .. })
    ));
    for i in 0..5 {
        store
            .create_user(&format!("u{i}@example.com"), "U", false, now())
            .await
            .unwrap();
    }
    let page1 = store.list_users(4, 0).await.unwrap();
    let page2 = store.list_users(4, 4).await.unwrap();
    assert_eq!(page1.len(), 4);
    assert_eq!(page2.len(), 2);
    assert_eq!(page1[0].email, "alice@example.com");
    store.set_user_disabled(alice.id, true).await.unwrap();
    assert!(store.get_user(alice.id).await.unwrap().disabled);
    store.delete_user(alice.id).await.unwrap();
    assert!(matches!(
        store.get_user(alice.id).await,
        Err(StoreError::NotFound { entity: "user" })
    ));
    assert!(matches!(
        store.delete_user(alice.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn tokens_are_hashed_and_checked(store: Store, url: String) {
    let admin = store
        .create_user("admin@example.com", "Admin", true, now())
        .await
        .unwrap();
    let site = store.create_site("hq", now()).await.unwrap();
    let api = store
        .create_token(
            TokenKind::AdminApi,
            TokenOwner::User(admin.id),
            None,
            None,
            now(),
        )
        .await
        .unwrap();
    assert!(!format!("{api:?}").contains(&api.secret));
    let info = store
        .verify_token(&api.secret, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.kind, TokenKind::AdminApi);
    assert_eq!(info.owner, TokenOwner::User(admin.id));

    // Only a hash is stored.
    let mut c = raw(&url).await;
    let hashes: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM tokens")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 1);
    assert_eq!(hashes[0].0.len(), 64);
    assert!(!hashes[0].0.contains(&api.secret[3..]));

    // Wrong, malformed and expired secrets.
    let mut wrong = api.secret.clone();
    wrong.pop();
    wrong.push('x');
    assert_eq!(store.verify_token(&wrong, now()).await.unwrap(), None);
    assert_eq!(store.verify_token("", now()).await.unwrap(), None);
    assert_eq!(
        store
            .verify_token(&"kh_".repeat(1000), now())
            .await
            .unwrap(),
        None
    );
    let expiring = store
        .create_token(
            TokenKind::Gateway,
            TokenOwner::Site(site.id),
            None,
            Some(now() + TimeDelta::hours(1)),
            now(),
        )
        .await
        .unwrap();
    let info = store
        .verify_token(&expiring.secret, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.owner, TokenOwner::Site(site.id));
    assert_eq!(
        store
            .verify_token(&expiring.secret, now() + TimeDelta::hours(1))
            .await
            .unwrap(),
        None
    );
    // Kind and owner must fit.
    assert!(matches!(
        store
            .create_token(
                TokenKind::Gateway,
                TokenOwner::User(admin.id),
                None,
                None,
                now()
            )
            .await,
        Err(StoreError::Invalid { .. })
    ));
    // Deleting the owner deletes its tokens.
    store.delete_user(admin.id).await.unwrap();
    assert_eq!(store.verify_token(&api.secret, now()).await.unwrap(), None);
    store.delete_site(site.id).await.unwrap();
    assert_eq!(count(&url, "tokens").await, 0);
}

fn wiki(sites: Vec<SiteId>) -> NewResource {
    NewResource {
        name: "wiki".to_owned().try_into().unwrap(),
        address: ResourceAddress::Dns {
            pattern: "**.wiki.corp".parse().unwrap(),
        },
        filters: vec![Filter {
            protocol: Protocol::Tcp,
            ports: Some(PortRange::new(443, 443).unwrap()),
        }],
        site_ids: sites,
    }
}

async fn resources_and_transactions(store: Store, url: String) {
    let hq = store.create_site("hq", now()).await.unwrap();
    let lab = store.create_site("lab", now()).await.unwrap();
    let r = store
        .create_resource(wiki(vec![hq.id, hq.id]), now())
        .await
        .unwrap();
    assert_eq!(r.site_ids, vec![hq.id]);
    assert_eq!(store.get_resource(r.id).await.unwrap(), r);

    // An unknown site fails the whole create: no resource row is left.
    let ghost = SiteId::new_random();
    let err = store
        .create_resource(wiki(vec![hq.id, ghost]), now())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "site_ids",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(count(&url, "resources").await, 1);
    assert_eq!(count(&url, "resource_sites").await, 1);

    // Update replaces sites and address; a failed update changes nothing.
    let mut upd = wiki(vec![lab.id]);
    upd.address = ResourceAddress::Cidr {
        cidr: "10.1.0.0/16".parse().unwrap(),
    };
    let updated = store.update_resource(r.id, upd.clone()).await.unwrap();
    assert_eq!(store.get_resource(r.id).await.unwrap(), updated);
    assert_eq!(updated.site_ids, vec![lab.id]);
    let mut bad = upd.clone();
    bad.site_ids = vec![ghost];
    bad.address = ResourceAddress::Internet;
    assert!(store.update_resource(r.id, bad).await.is_err());
    assert_eq!(store.get_resource(r.id).await.unwrap(), updated);

    let mut ip = wiki(vec![]);
    ip.address = ResourceAddress::Ip {
        ip: "fd12::1".parse().unwrap(),
    };
    ip.filters.clear();
    let ip = store.create_resource(ip, now()).await.unwrap();
    assert_eq!(store.get_resource(ip.id).await.unwrap(), ip);
    let mut internet = wiki(vec![hq.id]);
    internet.address = ResourceAddress::Internet;
    let internet = store.create_resource(internet, now()).await.unwrap();
    assert_eq!(store.get_resource(internet.id).await.unwrap(), internet);

    // Deleting a site unlinks it from resources.
    store.delete_site(lab.id).await.unwrap();
    assert!(store.get_resource(r.id).await.unwrap().site_ids.is_empty());
    store.delete_resource(r.id).await.unwrap();
    assert!(matches!(
        store.get_resource(r.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn policies_feed_the_snapshot(store: Store, _url: String) {
    let site = store.create_site("hq", now()).await.unwrap();
    let alice = store
        .create_user("alice@example.com", "Alice", false, now())
        .await
        .unwrap();
    let robot = store.create_service_account("ci", now()).await.unwrap();
    let eng = store.create_group("engineers", now()).await.unwrap();
    let r = store
        .create_resource(wiki(vec![site.id]), now())
        .await
        .unwrap();
    let alice_actor = ActorId::User(alice.id);
    let robot_actor = ActorId::ServiceAccount(robot.id);
    store.add_member(eng.id, alice_actor).await.unwrap();
    store.add_member(eng.id, alice_actor).await.unwrap(); // idempotent
    store.add_member(eng.id, robot_actor).await.unwrap();
    let laptop = store
        .register_client(alice_actor, "laptop", key(1), now())
        .await
        .unwrap();

    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let conditions = Conditions {
        source_cidrs: vec!["198.51.100.0/24".parse().unwrap()],
        sign_in_methods: [SignInMethod::Password].into(),
        schedule: Some(Schedule {
            timezone: tz,
            windows: vec![TimeWindow {
                days: [chrono::Weekday::Mon].into_iter().collect(),
                start: "09:00:00".parse().unwrap(),
                end: "17:00:00".parse().unwrap(),
            }],
        }),
    };
    let p = store
        .create_policy(
            NewPolicy {
                group_id: eng.id,
                resource_id: r.id,
                enabled: true,
                conditions: conditions.clone(),
                description: "office hours".into(),
            },
            now(),
        )
        .await
        .unwrap();
    // Unknown references are field errors.
    let err = store
        .create_policy(
            NewPolicy {
                group_id: eng.id,
                resource_id: keyhole_proto::ResourceId::new_random(),
                enabled: true,
                conditions: Conditions::default(),
                description: String::new(),
            },
            now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "resource_id",
                ..
            }
        ),
        "{err:?}"
    );

    let req = AccessRequest {
        actor: alice_actor,
        client: laptop.id,
        resource: r.id,
        now: now(),
        remote_ip: "198.51.100.7".parse::<IpAddr>().unwrap(),
        sign_in_method: SignInMethod::Password,
        token_expiry: None,
    };
    let snap = store.load_snapshot().await.unwrap();
    assert_eq!(snap.policy(p.policy.id).unwrap().conditions, conditions);
    assert_eq!(snap.resource(r.id).unwrap(), &r);
    assert_eq!(
        evaluate(&snap, &req),
        Decision::Allow {
            policy_id: p.policy.id,
            expires_at: Some("2026-05-18T15:00:00Z".parse().unwrap()),
        }
    );
    assert_eq!(snap.visible_resources(robot_actor), [r.id].into());

    store.set_policy_enabled(p.policy.id, false).await.unwrap();
    let snap = store.load_snapshot().await.unwrap();
    assert_eq!(
        evaluate(&snap, &req),
        Decision::Deny {
            reason: DenyReason::PolicyDisabled {
                policy_id: p.policy.id
            }
        }
    );
    store.set_policy_enabled(p.policy.id, true).await.unwrap();
    store.remove_member(eng.id, alice_actor).await.unwrap();
    let snap = store.load_snapshot().await.unwrap();
    assert_eq!(
        evaluate(&snap, &req),
        Decision::Deny {
            reason: DenyReason::NoPolicy
        }
    );

    // Deleting the group deletes its policies.
    store.delete_group(eng.id).await.unwrap();
    let snap = store.load_snapshot().await.unwrap();
    assert!(snap.policy(p.policy.id).is_none());
    assert!(matches!(
        store.delete_policy(p.policy.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn clients_and_tunnel_addresses(store: Store, url: String) {
    let alice = ActorId::User(
        store
            .create_user("a@example.com", "A", false, now())
            .await
            .unwrap()
            .id,
    );
    let bob = ActorId::User(
        store
            .create_user("b@example.com", "B", false, now())
            .await
            .unwrap()
            .id,
    );
    let prefix = store.tunnel_ipv6_prefix().await.unwrap();
    assert_eq!(prefix.segments()[0] & 0xff00, 0xfd00);
    assert_eq!(store.tunnel_ipv6_prefix().await.unwrap(), prefix, "stable");

    let mut seen = std::collections::HashSet::new();
    for n in 0..20u8 {
        let c = store
            .register_client(alice, "dev", key(n), now())
            .await
            .unwrap();
        assert!(TUNNEL_PEER_IPV4_RANGE.contains(&c.tunnel.ipv4));
        assert!(!keyhole_proto::DNS_PROXY_IPV4_RANGE.contains(&c.tunnel.ipv4));
        assert_eq!(c.tunnel.ipv6.segments()[..3], prefix.segments()[..3]);
        assert!(seen.insert(c.tunnel.ipv4));
    }
    let first = store
        .register_client(alice, "renamed", key(0), now())
        .await
        .unwrap();
    assert_eq!(first.name, "renamed");
    assert_eq!(count(&url, "clients").await, 20, "same key, same client");
    assert!(matches!(
        store.register_client(bob, "stolen", key(0), now()).await,
        Err(StoreError::Conflict(_))
    ));
    store.set_client_disabled(first.id, true).await.unwrap();
    assert!(store.get_client(first.id).await.unwrap().disabled);
    store.delete_client(first.id).await.unwrap();
    // Its addresses are not handed out again.
    let again = store
        .register_client(alice, "new", key(0), now())
        .await
        .unwrap();
    assert_ne!(again.tunnel.ipv4, first.tunnel.ipv4);
    assert_ne!(again.id, first.id);
}

async fn gateways_and_relays(store: Store, url: String) {
    let site = store.create_site("hq", now()).await.unwrap();
    let other = store.create_site("lab", now()).await.unwrap();
    let reg = GatewayRegistration {
        site_id: site.id,
        name: "gw-1".into(),
        public_key: key(9),
        version: "0.1.0".into(),
        backend: WireguardBackend::Userspace,
        remote_ip: Some("203.0.113.9".parse().unwrap()),
    };
    let gw = store.register_gateway(&reg, now()).await.unwrap();
    assert!(gw.online);
    assert_eq!(gw.last_seen_at, Some(now()));
    let later = now() + TimeDelta::minutes(1);
    let again = store
        .register_gateway(
            &GatewayRegistration {
                version: "0.2.0".into(),
                backend: WireguardBackend::Kernel,
                ..reg.clone()
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(again.id, gw.id);
    assert_eq!(again.tunnel, gw.tunnel);
    assert_eq!(again.version, "0.2.0");
    assert_eq!(again.backend, WireguardBackend::Kernel);
    assert!(matches!(
        store
            .register_gateway(
                &GatewayRegistration {
                    site_id: other.id,
                    ..reg.clone()
                },
                later
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .set_gateway_presence(gw.id, false, later)
        .await
        .unwrap();
    let listed = store.list_gateways(site.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].online);
    // A client never gets a gateway's address.
    let alice = ActorId::User(
        store
            .create_user("a@example.com", "A", false, now())
            .await
            .unwrap()
            .id,
    );
    let c = store
        .register_client(alice, "dev", key(1), now())
        .await
        .unwrap();
    assert_ne!(c.tunnel.ipv4, gw.tunnel.ipv4);
    assert_eq!(count(&url, "tunnel_addresses").await, 2);
    store.delete_site(site.id).await.unwrap();
    assert!(store.list_gateways(site.id).await.unwrap().is_empty());

    let r1 = store
        .register_relay(Some("203.0.113.7".parse().unwrap()), None, 3478, now())
        .await
        .unwrap();
    let r2 = store
        .register_relay(Some("203.0.113.7".parse().unwrap()), None, 3478, later)
        .await
        .unwrap();
    assert_eq!(r1.id, r2.id);
    let r3 = store
        .register_relay(
            Some("203.0.113.7".parse().unwrap()),
            Some("2001:db8::7".parse().unwrap()),
            3478,
            later,
        )
        .await
        .unwrap();
    assert_ne!(r1.id, r3.id);
    assert!(store.register_relay(None, None, 3478, now()).await.is_err());
}

async fn flow_log(store: Store, _url: String) {
    let actor = ActorId::User(
        store
            .create_user("a@example.com", "A", false, now())
            .await
            .unwrap()
            .id,
    );
    let e1 = FlowLogEntry {
        at: now(),
        actor,
        client_id: keyhole_proto::ClientId::new_random(),
        resource_id: keyhole_proto::ResourceId::new_random(),
        gateway_id: Some(keyhole_proto::GatewayId::new_random()),
        policy_id: None,
        decision: FlowDecision::Allow,
        reason: None,
    };
    let e2 = FlowLogEntry {
        at: now() + TimeDelta::seconds(1),
        gateway_id: None,
        decision: FlowDecision::Deny,
        reason: Some("outside_time_window".into()),
        ..e1.clone()
    };
    store.append_flow_log(&e1).await.unwrap();
    store.append_flow_log(&e2).await.unwrap();
    // The log outlives the actor.
    if let ActorId::User(u) = actor {
        store.delete_user(u).await.unwrap();
    }
    assert_eq!(store.recent_flow_log(10).await.unwrap(), vec![e2, e1]);
}

async fn run_all(mut fresh: impl AsyncFnMut(&str) -> String) {
    for (name, scenario) in SCENARIOS {
        eprintln!("scenario {name}");
        let url = fresh(name).await;
        let store = Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        scenario(store, url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "keyhole-store-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The data-dir entry point creates the file.
    let s = Store::open_sqlite(&dir).await.unwrap();
    assert_eq!(s.backend(), Backend::Sqlite);
    assert!(dir.join(SQLITE_FILE).is_file());
    // Write-ahead logging: commits append to the -wal file, no rollback
    // journal with an fsync per commit.
    assert!(
        dir.join(format!("{SQLITE_FILE}-wal")).is_file(),
        "SQLite is not in WAL mode"
    );
    s.close().await;
    let d = dir.clone();
    run_all(async |name| format!("sqlite://{}/{name}.db?mode=rwc", d.display())).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_postgres() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database("backend_check").await;
    assert_eq!(
        Store::connect(&url).await.unwrap().backend(),
        Backend::Postgres
    );
    run_all(async |name| pg.fresh_database(name).await).await;
}
