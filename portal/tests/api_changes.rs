//! Writes that may withdraw access publish a `Change` after committing,
//! so the control plane can revoke; failed writes publish nothing.

mod api_support;

use api_support::Api;
use axum::http::StatusCode;
use keyhole_portal::{
    policy::{ActorId, UserId},
    state::Change,
};
use keyhole_proto::PublicKey;
use serde_json::json;

fn uuid(s: &str) -> uuid::Uuid {
    s.parse().unwrap()
}

#[tokio::test]
async fn revoking_writes_publish_changes() {
    let mut api = Api::sqlite().await;
    let site = api.create("/sites", json!({"name": "hq"})).await;
    let group = api.create("/groups", json!({"name": "ops"})).await;
    let user = api
        .create("/users", json!({"email": "u@example.com", "name": "U"}))
        .await;
    let sa = api
        .create("/service-accounts", json!({"name": "bot"}))
        .await;
    let resource = api
        .create(
            "/resources",
            json!({"name": "db", "address": {"kind": "ip", "ip": "10.0.0.5"}, "site_ids": [site]}),
        )
        .await;
    let policy = api
        .create(
            "/policies",
            json!({"group_id": group, "resource_id": resource}),
        )
        .await;
    api.drain_changes();

    // Membership.
    api.post(
        &format!("/groups/{group}/members"),
        json!({"kind": "user", "id": user}),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    api.delete(&format!("/groups/{group}/members/{user}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    let membership = Change::MembershipChanged {
        group: uuid(&group),
        actor: uuid(&user),
    };
    assert_eq!(api.drain_changes(), [membership.clone(), membership]);

    // Policy update and deletion.
    api.put(
        &format!("/policies/{policy}"),
        json!({"group_id": group, "resource_id": resource, "enabled": false}),
    )
    .await
    .expect(StatusCode::OK);
    api.delete(&format!("/policies/{policy}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.drain_changes(),
        [
            Change::PolicyChanged(uuid(&policy)),
            Change::PolicyDeleted(uuid(&policy))
        ]
    );

    // Resource update and deletion.
    api.put(
        &format!("/resources/{resource}"),
        json!({"name": "db", "address": {"kind": "ip", "ip": "10.0.0.6"}}),
    )
    .await
    .expect(StatusCode::OK);
    api.delete(&format!("/resources/{resource}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.drain_changes(),
        [
            Change::ResourceUpserted(uuid(&resource)),
            Change::ResourceDeleted(uuid(&resource))
        ]
    );

    // Clients: disable, delete.
    let client = api
        .state
        .store
        .register_client(
            ActorId::User(UserId(uuid(&user))),
            "laptop",
            PublicKey::from_bytes([9; 32]),
            std::time::SystemTime::now().into(),
        )
        .await
        .unwrap();
    api.patch(
        &format!("/clients/{}", client.id),
        json!({"disabled": true}),
    )
    .await
    .expect(StatusCode::OK);
    api.delete(&format!("/clients/{}", client.id))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.drain_changes(),
        [
            Change::ClientChanged(client.id.0),
            Change::ClientDeleted(client.id.0)
        ]
    );

    // Tokens: service-account and site tokens revoked.
    let t1 = api
        .post(&format!("/service-accounts/{sa}/tokens"), json!({}))
        .await
        .expect(StatusCode::CREATED)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t2 = api
        .post(&format!("/sites/{site}/tokens"), json!({}))
        .await
        .expect(StatusCode::CREATED)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.drain_changes();
    api.delete(&format!("/service-accounts/{sa}/tokens/{t1}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&format!("/sites/{site}/tokens/{t2}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.drain_changes(),
        [
            Change::TokenRevoked(uuid(&t1)),
            Change::TokenRevoked(uuid(&t2))
        ]
    );

    // Actors: disable, delete; group and site deletion.
    api.patch(&format!("/users/{user}"), json!({"disabled": true}))
        .await
        .expect(StatusCode::OK);
    api.delete(&format!("/users/{user}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.patch(
        &format!("/service-accounts/{sa}"),
        json!({"disabled": true}),
    )
    .await
    .expect(StatusCode::OK);
    api.delete(&format!("/service-accounts/{sa}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&format!("/groups/{group}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&format!("/sites/{site}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.drain_changes(),
        [
            Change::ActorChanged(uuid(&user)),
            Change::ActorDeleted(uuid(&user)),
            Change::ActorChanged(uuid(&sa)),
            Change::ActorDeleted(uuid(&sa)),
            Change::GroupDeleted(uuid(&group)),
            Change::SiteDeleted(uuid(&site)),
        ]
    );
}

#[tokio::test]
async fn failed_writes_publish_nothing() {
    let mut api = Api::sqlite().await;
    let missing = uuid::Uuid::new_v4();
    api.delete(&format!("/resources/{missing}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.delete(&format!("/clients/{missing}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.post(
        "/resources",
        json!({"name": "x", "address": {"kind": "cidr", "cidr": "10.0.0.1/8"}}),
    )
    .await
    .expect(StatusCode::UNPROCESSABLE_ENTITY);
    api.patch(&format!("/users/{missing}"), json!({"disabled": true}))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(api.drain_changes(), []);
}
