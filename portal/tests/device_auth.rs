//! `keyhole login`'s device flow (RFC 8628) on SQLite and PostgreSQL: the
//! store's state machine with controlled clocks (pending, slow_down,
//! expiry, denial, single use, hashed device codes), the REST endpoints
//! (validation, the RFC's error codes, the token shown once, rate limits,
//! self-revocation), and the control channel accepting the token only with
//! the device key it was bound to, with policies seeing the sign-in method
//! the user approved with.

mod api_support;
mod control_common;

use std::time::Duration;

use api_support::{Api, postgres::TempPostgres};
use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use chrono::{DateTime, TimeDelta, Utc};
use keyhole_portal::{
    api::{self, device::DeviceConfig},
    control::ControlConfig,
    policy::SignInMethod,
    state::Change,
    store::{DevicePoll, Store, TokenKind, TokenOwner},
};
use keyhole_portal::{
    control::tasks::reload_snapshot,
    policy::{ActorId, Conditions},
    store::{NewPolicy, NewResource},
};
use keyhole_proto::{
    Envelope, PublicKey, ResourceAddress, ResourceName,
    messages::{ClientToPortal, FlowFailReason, PortalToClient, RequestFlow},
};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    std::time::SystemTime::now().into()
}

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

const TTL: TimeDelta = TimeDelta::minutes(10);
const SESSION: TimeDelta = TimeDelta::days(90);

async fn store_flow(store: Store) {
    let t0 = now();
    let user = store
        .create_user("ann@example.com", "Ann", false, t0)
        .await
        .unwrap();
    let new = store
        .start_device_authorization(key(1), " ann-laptop ", TTL, 5, t0)
        .await
        .unwrap();
    assert_eq!(new.interval_secs, 5);
    assert_eq!(new.expires_at, t0 + TTL);
    assert_eq!(new.user_code.len(), 9);
    let s = |secs: i64| t0 + TimeDelta::seconds(secs);
    let poll = |code: String, at| {
        let store = store.clone();
        async move {
            store
                .poll_device_authorization(&code, SESSION, at)
                .await
                .unwrap()
        }
    };
    let code = new.device_code.clone();
    assert!(matches!(
        poll(code.clone(), s(0)).await,
        DevicePoll::Pending
    ));
    // Again after one second: too fast, the interval grows by 5 s.
    assert!(matches!(
        poll(code.clone(), s(1)).await,
        DevicePoll::SlowDown { interval_secs: 10 }
    ));
    // 6 s later is now too soon as well (the interval is 10 s) …
    assert!(matches!(
        poll(code.clone(), s(7)).await,
        DevicePoll::SlowDown { interval_secs: 15 }
    ));
    // … 15 s later is fine.
    assert!(matches!(
        poll(code.clone(), s(22)).await,
        DevicePoll::Pending
    ));
    assert!(matches!(
        poll("not-a-code".into(), s(22)).await,
        DevicePoll::Invalid
    ));

    // The page finds it by the user code, typed in any case and spacing.
    let typed = new.user_code.to_lowercase().replace('-', " ");
    let found = store
        .device_authorization_by_user_code(&typed, s(30))
        .await
        .unwrap()
        .expect("found by user code");
    assert_eq!(found.device_name, "ann-laptop");
    assert_eq!(found.public_key, key(1));
    assert!(
        store
            .decide_device_authorization(found.id, user.id, SignInMethod::Oidc, true, s(30))
            .await
            .unwrap()
    );
    // Decided once only.
    assert!(
        !store
            .decide_device_authorization(found.id, user.id, SignInMethod::Oidc, false, s(31))
            .await
            .unwrap()
    );
    let DevicePoll::Approved {
        token,
        user: owner,
        public_key,
        expires_at,
    } = poll(code.clone(), s(40)).await
    else {
        panic!("approved request yields a token");
    };
    assert_eq!(owner, user.id);
    assert_eq!(public_key, key(1));
    assert_eq!(expires_at, s(40) + SESSION);
    // Single use.
    assert!(matches!(
        poll(code.clone(), s(60)).await,
        DevicePoll::Invalid
    ));
    let info = store
        .verify_token(&token.secret, s(61))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.kind, TokenKind::ClientSession);
    assert_eq!(info.owner, TokenOwner::User(user.id));
    assert_eq!(info.sign_in_method, Some(SignInMethod::Oidc));
    assert_eq!(
        store.client_session_key(token.id).await.unwrap(),
        Some(key(1))
    );
    let listed = store.list_device_sign_ins(s(61)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user, Some(user.id));
    assert_eq!(listed[0].sign_in_method, Some(SignInMethod::Oidc));
    assert_eq!(listed[0].device_name, "ann-laptop");

    // Denied and expired requests.
    let denied = store
        .start_device_authorization(key(2), "phone", TTL, 5, t0)
        .await
        .unwrap();
    let d = store
        .device_authorization_by_user_code(&denied.user_code, t0)
        .await
        .unwrap()
        .unwrap();
    store
        .decide_device_authorization(d.id, user.id, SignInMethod::Password, false, t0)
        .await
        .unwrap();
    assert!(matches!(
        poll(denied.device_code.clone(), s(5)).await,
        DevicePoll::Denied
    ));
    let late = store
        .start_device_authorization(key(3), "tablet", TTL, 5, t0)
        .await
        .unwrap();
    let after = t0 + TTL + TimeDelta::seconds(1);
    assert!(matches!(
        poll(late.device_code.clone(), after).await,
        DevicePoll::Expired
    ));
    assert!(
        store
            .device_authorization_by_user_code(&late.user_code, after)
            .await
            .unwrap()
            .is_none(),
        "expired codes are not shown"
    );
    let l = store
        .device_authorization_by_user_code(&late.user_code, t0)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !store
            .decide_device_authorization(l.id, user.id, SignInMethod::Password, true, after)
            .await
            .unwrap(),
        "an expired request cannot be approved"
    );
    // Bad input.
    assert!(
        store
            .start_device_authorization(key(4), "  ", TTL, 5, t0)
            .await
            .is_err()
    );
    assert!(
        store
            .start_device_authorization(key(4), "a\u{7}b", TTL, 5, t0)
            .await
            .is_err()
    );

    // One sign-in revoked by its token id (the admin page's button); no
    // other kind of token can be ended that way.
    let second = store
        .start_device_authorization(key(1), "ann-laptop", TTL, 5, t0)
        .await
        .unwrap();
    let r = store
        .device_authorization_by_user_code(&second.user_code, t0)
        .await
        .unwrap()
        .unwrap();
    store
        .decide_device_authorization(r.id, user.id, SignInMethod::Password, true, t0)
        .await
        .unwrap();
    let DevicePoll::Approved { token: second, .. } = poll(second.device_code, s(1)).await else {
        panic!("second approval");
    };
    let sa = store.create_service_account("ci", t0).await.unwrap();
    let sa_token = store
        .create_token(
            TokenKind::ServiceAccount,
            TokenOwner::ServiceAccount(sa.id),
            None,
            None,
            t0,
        )
        .await
        .unwrap();
    assert!(store.revoke_device_sign_in(sa_token.id).await.is_err());
    assert!(
        store
            .verify_token(&sa_token.secret, s(2))
            .await
            .unwrap()
            .is_some()
    );
    store.revoke_device_sign_in(second.id).await.unwrap();
    assert!(
        store
            .verify_token(&second.secret, s(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.revoke_device_sign_in(second.id).await.is_err());

    // Revocation by device key removes the token and its binding.
    let revoked = store.revoke_device_sign_ins(key(1)).await.unwrap();
    assert_eq!(revoked, vec![token.id]);
    assert!(
        store
            .verify_token(&token.secret, s(70))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.client_session_key(token.id).await.unwrap(), None);
    assert!(store.list_device_sign_ins(s(70)).await.unwrap().is_empty());
}

#[tokio::test]
async fn store_flow_on_sqlite() {
    let api = Api::sqlite().await;
    store_flow(api.state.store.clone()).await;
}

#[tokio::test]
async fn store_flow_on_postgres() {
    let pg = TempPostgres::start();
    let api = Api::postgres(&pg, "keyhole_device_store").await;
    store_flow(api.state.store.clone()).await;
}

async fn call(app: &Router, path: &str, body: Value) -> (StatusCode, Value, Option<String>) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "portal.test:8080")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v, retry)
}

async fn api_flow(mut api: Api) {
    let store = api.state.store.clone();
    let app = Router::new()
        .nest(
            "/api/v1",
            api::router_with(DeviceConfig {
                starts_per_ip: 5,
                ..DeviceConfig::default()
            }),
        )
        .with_state(api.state.clone());
    let pk = key(9).to_base64();

    // Validation: a bad key or name is 422 naming the field.
    let (st, body, _) = call(
        &app,
        "/device/authorize",
        json!({"public_key": "nope", "device_name": "x"}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["field"], "public_key");
    let (st, body, _) = call(
        &app,
        "/device/authorize",
        json!({"public_key": pk, "device_name": ""}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (st, auth, _) = call(
        &app,
        "/device/authorize",
        json!({"public_key": pk, "device_name": "ci-box"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{auth}");
    let user_code = auth["user_code"].as_str().unwrap().to_owned();
    let device_code = auth["device_code"].as_str().unwrap().to_owned();
    assert_eq!(auth["verification_uri"], "http://portal.test:8080/device");
    assert_eq!(
        auth["verification_uri_complete"],
        format!("http://portal.test:8080/device?code={user_code}")
    );
    assert_eq!(auth["interval"], 5);
    assert_eq!(auth["expires_in"], 600);

    let poll = |code: &str| json!({"device_code": code, "grant_type": "urn:ietf:params:oauth:grant-type:device_code"});
    let (st, body, _) = call(&app, "/device/token", poll(&device_code)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "authorization_pending");
    let (st, body, _) = call(&app, "/device/token", poll(&device_code)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "slow_down");
    assert_eq!(body["interval"], 10);
    let (_, body, _) = call(&app, "/device/token", poll("unknown")).await;
    assert_eq!(body["error"], "invalid_grant");
    let (_, body, _) = call(
        &app,
        "/device/token",
        json!({"device_code": device_code, "grant_type": "password"}),
    )
    .await;
    assert_eq!(body["error"], "unsupported_grant_type");

    // Approve (as the web page does), on a fresh request so the first
    // poll is not too soon.
    let (_, auth2, _) = call(
        &app,
        "/device/authorize",
        json!({"public_key": pk, "device_name": "ci-box"}),
    )
    .await;
    let user = store
        .create_user("bob@example.com", "Bob", false, now())
        .await
        .unwrap();
    let req = store
        .device_authorization_by_user_code(auth2["user_code"].as_str().unwrap(), now())
        .await
        .unwrap()
        .unwrap();
    store
        .decide_device_authorization(req.id, user.id, SignInMethod::Password, true, now())
        .await
        .unwrap();
    let code2 = auth2["device_code"].as_str().unwrap();
    let (st, tok, _) = call(&app, "/device/token", poll(code2)).await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["public_key"], pk);
    let token = tok["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kh_"));
    let secs = tok["expires_in"].as_i64().unwrap();
    assert!((SESSION.num_seconds() - 5..=SESSION.num_seconds()).contains(&secs));
    // Shown once.
    let (_, again, _) = call(&app, "/device/token", poll(code2)).await;
    assert_eq!(again["error"], "invalid_grant");
    // The token is no admin API token.
    let r = api.send_as(Some(&token), Method::GET, "/users", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Deleting the device's client through the API also ends its
    // sign-in (else it would come back as a new client).
    let (_, auth3, _) = call(
        &app,
        "/device/authorize",
        json!({"public_key": key(10).to_base64(), "device_name": "spare"}),
    )
    .await;
    let req = store
        .device_authorization_by_user_code(auth3["user_code"].as_str().unwrap(), now())
        .await
        .unwrap()
        .unwrap();
    store
        .decide_device_authorization(req.id, user.id, SignInMethod::Password, true, now())
        .await
        .unwrap();
    let (_, tok3, _) = call(
        &app,
        "/device/token",
        poll(auth3["device_code"].as_str().unwrap()),
    )
    .await;
    let token3 = tok3["access_token"].as_str().unwrap().to_owned();
    let client = store
        .register_client(ActorId::User(user.id), "spare", key(10), now())
        .await
        .unwrap();
    api.drain_changes();
    api.delete(&format!("/clients/{}", client.id))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(store.verify_token(&token3, now()).await.unwrap().is_none());
    assert!(
        api.drain_changes()
            .iter()
            .any(|c| matches!(c, Change::TokenRevoked(_)))
    );
    assert!(
        store.verify_token(&token, now()).await.unwrap().is_some(),
        "other devices keep theirs"
    );

    // Rate limit: the sixth start from this address within the window.
    let (st, _, _) = call(
        &app,
        "/device/authorize",
        json!({"public_key": pk, "device_name": "x"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body, retry) = call(
        &app,
        "/device/authorize",
        json!({"public_key": pk, "device_name": "x"}),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(retry.unwrap().parse::<u64>().unwrap() > 0);

    // Self-revocation (keyhole logout): the token stops working and the
    // control plane hears of it. Unknown tokens are no error.
    api.drain_changes();
    let (st, _, _) = call(&app, "/device/revoke", json!({"token": token})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(store.verify_token(&token, now()).await.unwrap().is_none());
    assert!(
        api.drain_changes()
            .iter()
            .any(|c| matches!(c, Change::TokenRevoked(_)))
    );
    let (st, _, _) = call(&app, "/device/revoke", json!({"token": "kh_unknown"})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // An admin API token cannot be ended this way.
    let (st, _, _) = call(&app, "/device/revoke", json!({"token": api.token})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(
        store
            .verify_token(&api.token, now())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn api_flow_on_sqlite() {
    api_flow(Api::sqlite().await).await;
}

#[tokio::test]
async fn api_flow_on_postgres() {
    let pg = TempPostgres::start();
    api_flow(Api::postgres(&pg, "keyhole_device_api").await).await;
}

/// A device token over the real control WebSocket: refused with another
/// key (403 and a reason), accepted with its own, and the connection ends
/// when the token is revoked.
async fn control_binding(database_url: Option<String>) {
    use control_common::{Next, connect, next, start_portal, temp_dir};
    let dir = temp_dir("device-control");
    let portal = start_portal(dir.clone(), database_url, ControlConfig::default()).await;
    let store = portal.app.store.clone();
    let user = store
        .create_user("cat@example.com", "Cat", false, now())
        .await
        .unwrap();
    let new = store
        .start_device_authorization(key(5), "cat-laptop", TTL, 5, now())
        .await
        .unwrap();
    let req = store
        .device_authorization_by_user_code(&new.user_code, now())
        .await
        .unwrap()
        .unwrap();
    store
        .decide_device_authorization(req.id, user.id, SignInMethod::Password, true, now())
        .await
        .unwrap();
    let DevicePoll::Approved { token, .. } = store
        .poll_device_authorization(&new.device_code, SESSION, now())
        .await
        .unwrap()
    else {
        panic!("approved");
    };
    let q = |k: PublicKey| {
        format!(
            "/api/v1/client/ws?public_key={}&version=0.1.0&name=cat-laptop",
            k.to_base64()
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        )
    };
    // Another key: refused before the upgrade, with a reason.
    assert_eq!(
        connect(portal.addr, &q(key(6)), &token.secret).await.err(),
        Some(403)
    );
    let body = http_body(portal.addr, &q(key(6)), &token.secret).await;
    assert!(body.contains("another device key"), "{body}");
    // Policies see how the device signed in (password here): an
    // oidc-only policy does not allow it, a password one does (its site
    // has no gateway, so that flow fails later, for that reason).
    let site = portal
        .first_start
        .as_ref()
        .and_then(|f| f.default_site.clone())
        .expect("default site");
    let eng = store.create_group("eng", now()).await.unwrap();
    store
        .add_member(eng.id, ActorId::User(user.id))
        .await
        .unwrap();
    let resource = |name: &str, cidr: &str| NewResource {
        name: ResourceName::try_from(name.to_owned()).unwrap(),
        address: ResourceAddress::Cidr {
            cidr: cidr.parse().unwrap(),
        },
        filters: vec![],
        site_ids: vec![site.id],
    };
    let sso_only = store
        .create_resource(resource("sso-only", "10.0.1.0/24"), now())
        .await
        .unwrap();
    let any_pw = store
        .create_resource(resource("password-ok", "10.0.2.0/24"), now())
        .await
        .unwrap();
    for (r, method) in [
        (&sso_only, SignInMethod::Oidc),
        (&any_pw, SignInMethod::Password),
    ] {
        let conditions = Conditions {
            sign_in_methods: [method].into(),
            ..Conditions::default()
        };
        store
            .create_policy(
                NewPolicy {
                    group_id: eng.id,
                    resource_id: r.id,
                    enabled: true,
                    conditions,
                    description: String::new(),
                },
                now(),
            )
            .await
            .unwrap();
    }
    reload_snapshot(&store, &portal.hub).await;

    // Its own key: connected and registered as the user's client.
    let mut ws = connect(portal.addr, &q(key(5)), &token.secret)
        .await
        .expect("own key connects");
    let clients = store.list_clients(None, 100, 0).await.unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].public_key, key(5));
    let ask = |id: u64, r: &keyhole_proto::Resource| {
        control_common::request(
            id,
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: r.id,
                connected_gateway_ids: vec![],
                dns: vec![],
            }),
        )
    };
    let failure = |env: Envelope<PortalToClient>| match env.message {
        PortalToClient::FlowFailed(f) => f.reason,
        other => panic!("expected flow_failed, got {other:?}"),
    };
    let _init = control_common::frame::<PortalToClient>(&mut ws).await;
    control_common::send(&mut ws, &ask(1, &sso_only)).await;
    assert_eq!(
        failure(control_common::frame(&mut ws).await),
        FlowFailReason::NotAllowed
    );
    control_common::send(&mut ws, &ask(2, &any_pw)).await;
    assert_eq!(
        failure(control_common::frame(&mut ws).await),
        FlowFailReason::NoGatewayOnline
    );
    // Revoked (as the admin page does): the connection is closed.
    for id in store.revoke_device_sign_ins(key(5)).await.unwrap() {
        portal.app.publish(Change::TokenRevoked(id));
    }
    let closed = loop {
        match next::<keyhole_proto::messages::PortalToClient>(&mut ws, Duration::from_secs(5)).await
        {
            Next::Closed(c) => break c,
            Next::Frame(_) => continue,
        }
    };
    assert!(closed.is_some(), "closed with a code");
    assert_eq!(
        connect(portal.addr, &q(key(5)), &token.secret).await.err(),
        Some(401)
    );
    portal.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The body of a refused upgrade.
async fn http_body(addr: std::net::SocketAddr, path: &str, token: &str) -> String {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tungstenite::Error::Http(resp)) => {
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned()
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_accepts_the_token_only_with_its_key_on_sqlite() {
    control_binding(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_accepts_the_token_only_with_its_key_on_postgres() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database("keyhole_device_control").await;
    control_binding(Some(url)).await;
}
