//! Error answers, each demonstrated: 400 malformed JSON, 401 no/bad token
//! (with WWW-Authenticate), 403 valid non-admin token, 404 unknown id,
//! 409 duplicate, 415 not JSON, 422 invalid fields named; and a rejected
//! write leaves nothing behind.

mod api_support;

use api_support::Api;
use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use keyhole_portal::store::{TokenKind, TokenOwner};
use serde_json::json;

fn now() -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::now().into()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let api = Api::sqlite().await;
    for body in [
        "{\"name\": ",
        "{name: 1}",
        "[1,2",
        "{\"name\":\"x\"} trailing",
        "",
    ] {
        let req = Request::post("/api/v1/groups")
            .header(header::AUTHORIZATION, format!("Bearer {}", api.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let r = api.raw(req).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}: {}", r.body);
        assert_eq!(r.body["error"], "bad_request");
        assert!(!r.body["message"].as_str().unwrap().is_empty());
    }
    let req = Request::post("/api/v1/groups")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.token))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"name\":\"x\"}"))
        .unwrap();
    assert_eq!(
        api.raw(req).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let groups = api.get("/groups").await.expect(StatusCode::OK);
    assert_eq!(groups["items"], json!([]), "nothing was created");
}

#[tokio::test]
async fn missing_or_bad_token_is_401_and_wrong_kind_is_403() {
    let api = Api::sqlite().await;
    let r = api.send_as(None, Method::GET, "/users", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"keyhole\""
    );
    for bad in ["kh_not-a-real-token", "garbage"] {
        let r = api.send_as(Some(bad), Method::GET, "/users", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(
            r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
    let basic = Request::get("/api/v1/users")
        .header(header::AUTHORIZATION, "Basic YWRtaW46YWRtaW4=")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(basic).await.status, StatusCode::UNAUTHORIZED);
    // 401 comes before anything else is looked at: unknown ids, bad bodies.
    let r = api
        .send_as(None, Method::DELETE, "/users/not-a-uuid", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let store = &api.state.store;
    // A valid token of another kind: 403, not 401.
    let sa = store.create_service_account("robot", now()).await.unwrap();
    let sa_token = store
        .create_token(
            TokenKind::ServiceAccount,
            TokenOwner::ServiceAccount(sa.id),
            None,
            None,
            now(),
        )
        .await
        .unwrap();
    let r = api
        .send_as(Some(&sa_token.secret), Method::GET, "/users", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"], "forbidden");
    let site = store.create_site("hq", now()).await.unwrap();
    let gw_token = store
        .create_token(
            TokenKind::Gateway,
            TokenOwner::Site(site.id),
            None,
            None,
            now(),
        )
        .await
        .unwrap();
    let r = api
        .send_as(Some(&gw_token.secret), Method::GET, "/sites", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // An admin token whose user was demoted: 403; expired: 401.
    let eve = store
        .create_user("eve@example.com", "Eve", true, now())
        .await
        .unwrap();
    let eve_token = store
        .create_admin_api_token(eve.id, None, now())
        .await
        .unwrap();
    let r = api
        .send_as(Some(&eve_token.secret), Method::GET, "/me", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    api.patch(&format!("/users/{}", eve.id), json!({"is_admin": false}))
        .await
        .expect(StatusCode::OK);
    let r = api
        .send_as(Some(&eve_token.secret), Method::GET, "/me", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let short = store
        .create_token(
            TokenKind::AdminApi,
            TokenOwner::User(api.admin_id.parse::<uuid::Uuid>().unwrap().into_user()),
            None,
            Some(now() + chrono::TimeDelta::milliseconds(50)),
            now(),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    let r = api
        .send_as(Some(&short.secret), Method::GET, "/me", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

trait IntoUser {
    fn into_user(self) -> keyhole_portal::policy::UserId;
}

impl IntoUser for uuid::Uuid {
    fn into_user(self) -> keyhole_portal::policy::UserId {
        keyhole_portal::policy::UserId(self)
    }
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let api = Api::sqlite().await;
    let missing = uuid::Uuid::new_v4();
    for path in [
        format!("/users/{missing}"),
        format!("/service-accounts/{missing}"),
        format!("/groups/{missing}"),
        format!("/groups/{missing}/members"),
        format!("/sites/{missing}"),
        format!("/sites/{missing}/tokens"),
        format!("/gateways/{missing}"),
        format!("/resources/{missing}"),
        format!("/policies/{missing}"),
        format!("/clients/{missing}"),
        "/users/not-a-uuid".to_owned(),
        "/no-such-route".to_owned(),
    ] {
        let r = api.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
        assert_eq!(r.body["error"], "not_found", "{path}");
    }
    for path in [
        format!("/users/{missing}"),
        format!("/groups/{missing}"),
        format!("/resources/{missing}"),
        format!("/policies/{missing}"),
        format!("/clients/{missing}"),
        format!("/gateways/{missing}"),
        format!("/sites/{missing}"),
    ] {
        let r = api.delete(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "DELETE {path}");
    }
    api.patch(&format!("/users/{missing}"), json!({"name": "x"}))
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn duplicates_are_409() {
    let api = Api::sqlite().await;
    api.create("/groups", json!({"name": "ops"})).await;
    let r = api.post("/groups", json!({"name": "ops"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["error"], "conflict");
    assert!(r.body["message"].as_str().unwrap().contains("name"));
    let r = api
        .post(
            "/users",
            json!({"email": "ADMIN@example.com", "name": "Again"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body["message"].as_str().unwrap().contains("email"));
    api.create("/sites", json!({"name": "hq"})).await;
    let lab = api.create("/sites", json!({"name": "lab"})).await;
    api.patch(&format!("/sites/{lab}"), json!({"name": "hq"}))
        .await
        .expect(StatusCode::CONFLICT);
    api.create("/service-accounts", json!({"name": "ci"})).await;
    api.post("/service-accounts", json!({"name": "ci"}))
        .await
        .expect(StatusCode::CONFLICT);
}

#[tokio::test]
async fn semantic_errors_are_422_with_field_names() {
    let api = Api::sqlite().await;
    let site = api.create("/sites", json!({"name": "hq"})).await;
    let group = api.create("/groups", json!({"name": "ops"})).await;
    let resource = api
        .create(
            "/resources",
            json!({"name": "db", "address": {"kind": "ip", "ip": "10.0.0.5"}}),
        )
        .await;
    let cases = [
        (
            "/resources",
            json!({"name": "x", "address": {"kind": "cidr", "cidr": "10.0.0.1/8"}}),
            "address",
            "10.0.0.0/8",
        ),
        (
            "/resources",
            json!({"name": "x", "address": {"kind": "cidr", "cidr": "10.0.0.0/33"}}),
            "address",
            "",
        ),
        (
            "/resources",
            json!({"name": "x", "address": {"kind": "dns", "pattern": "foo.*.corp"}}),
            "address",
            "wildcard",
        ),
        (
            "/resources",
            json!({"name": "x", "address": {"kind": "ip", "ip": "10.0.0.300"}}),
            "address",
            "",
        ),
        (
            "/resources",
            json!({"name": "x", "address": {"kind": "internet"},
                   "filters": [{"protocol": "tcp", "ports": {"start": 90, "end": 80}}]}),
            "filters[0].ports",
            "start 90 is after its end 80",
        ),
        (
            "/resources",
            json!({"name": "x", "address": {"kind": "internet"}, "site_ids": [uuid::Uuid::new_v4()]}),
            "site_ids",
            "no site",
        ),
        (
            "/resources",
            json!({"name": "", "address": {"kind": "internet"}}),
            "name",
            "empty",
        ),
        (
            "/resources",
            json!({"address": {"kind": "internet"}}),
            "name",
            "missing field",
        ),
        (
            "/resources",
            json!({"name": "x", "address": {"kind": "internet"}, "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (
            "/policies",
            json!({"group_id": group, "resource_id": resource,
                   "conditions": {"schedule": {"timezone": "Mars/Olympus_Mons",
                       "windows": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}}}),
            "conditions.schedule.timezone",
            "",
        ),
        (
            "/policies",
            json!({"group_id": group, "resource_id": resource,
                   "conditions": {"source_cidrs": ["203.0.113.0/99"]}}),
            "conditions.source_cidrs[0]",
            "",
        ),
        (
            "/policies",
            json!({"group_id": group, "resource_id": resource,
                   "conditions": {"sign_in_methods": ["carrier_pigeon"]}}),
            "conditions.sign_in_methods[0]",
            "",
        ),
        (
            "/policies",
            json!({"group_id": group, "resource_id": resource,
                   "conditions": {"schedule": {"timezone": "UTC",
                       "windows": [{"days": ["someday"], "start": "09:00", "end": "17:00"}]}}}),
            "conditions.schedule.windows[0].days",
            "",
        ),
        (
            "/policies",
            json!({"group_id": group, "resource_id": resource,
                   "conditions": {"schedule": {"timezone": "UTC",
                       "windows": [{"days": ["mon"], "start": "25:00", "end": "17:00"}]}}}),
            "conditions.schedule.windows[0].start",
            "",
        ),
        (
            "/policies",
            json!({"group_id": group, "resource_id": resource,
                   "conditions": {"schedule": {"timezone": "UTC", "windows": []}}}),
            "conditions.schedule.windows",
            "",
        ),
        (
            "/policies",
            json!({"group_id": uuid::Uuid::new_v4(), "resource_id": resource}),
            "group_id",
            "no such id",
        ),
        (
            "/policies",
            json!({"group_id": group, "resource_id": uuid::Uuid::new_v4()}),
            "resource_id",
            "no such id",
        ),
        (
            "/policies",
            json!({"group_id": "nope", "resource_id": resource}),
            "group_id",
            "",
        ),
        (
            "/users",
            json!({"email": "no-at-sign", "name": "X"}),
            "email",
            "",
        ),
        (
            "/users",
            json!({"email": "x@example.com", "name": "X", "is_admin": "yes"}),
            "is_admin",
            "",
        ),
        (
            &*format!("/sites/{site}/tokens"),
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
            "future",
        ),
        ("/groups", json!({"name": "a\u{7}b"}), "name", "control"),
    ];
    for (path, body, field, needle) in cases {
        let r = api.post(path, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}: {}",
            r.body
        );
        assert_eq!(r.body["error"], "validation");
        assert_eq!(r.fields(), [field], "{path} {body}: {}", r.body);
        let message = r.body["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    // Query parameters are named too.
    let r = api.get("/gateways?site_id=nope").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.fields(), ["site_id"]);
    let r = api.get("/flow-log?decision=maybe&from=yesterday").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = api
        .get("/flow-log?from=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(r.fields(), ["until"]);

    // Nothing half-written: only the resource and policy-free state remain.
    let resources = api.get("/resources").await.expect(StatusCode::OK);
    assert_eq!(resources["items"].as_array().unwrap().len(), 1);
    let policies = api.get("/policies").await.expect(StatusCode::OK);
    assert_eq!(policies["items"], json!([]));
}

/// A rejected update leaves the old row untouched (site links included).
#[tokio::test]
async fn failed_update_changes_nothing() {
    let api = Api::sqlite().await;
    let site = api.create("/sites", json!({"name": "hq"})).await;
    let body =
        json!({"name": "db", "address": {"kind": "ip", "ip": "10.0.0.5"}, "site_ids": [site]});
    let id = api.create("/resources", body.clone()).await;
    let r = api
        .put(
            &format!("/resources/{id}"),
            json!({"name": "db2", "address": {"kind": "ip", "ip": "10.0.0.6"},
                   "site_ids": [site, uuid::Uuid::new_v4()]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let after = api
        .get(&format!("/resources/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(after["name"], "db");
    assert_eq!(after["address"]["ip"], "10.0.0.5");
    assert_eq!(after["site_ids"], json!([site]));
}
