//! The OpenAPI document: it parses, is served without a token, names
//! every route the router serves (each documented operation reaches a real
//! handler, each documented path refuses undocumented methods), and every
//! `$ref` resolves.

mod api_support;

use std::collections::BTreeSet;

use api_support::Api;
use axum::http::{Method, StatusCode};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The API's contract: every route, as (method, path under /api/v1).
const EXPECTED: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("get", "/me"),
    ("get", "/users"),
    ("post", "/users"),
    ("get", "/users/{id}"),
    ("patch", "/users/{id}"),
    ("delete", "/users/{id}"),
    ("get", "/users/{id}/tokens"),
    ("post", "/users/{id}/tokens"),
    ("delete", "/users/{id}/tokens/{token_id}"),
    ("get", "/service-accounts"),
    ("post", "/service-accounts"),
    ("get", "/service-accounts/{id}"),
    ("patch", "/service-accounts/{id}"),
    ("delete", "/service-accounts/{id}"),
    ("get", "/service-accounts/{id}/tokens"),
    ("post", "/service-accounts/{id}/tokens"),
    ("delete", "/service-accounts/{id}/tokens/{token_id}"),
    ("get", "/groups"),
    ("post", "/groups"),
    ("get", "/groups/{id}"),
    ("patch", "/groups/{id}"),
    ("delete", "/groups/{id}"),
    ("get", "/groups/{id}/members"),
    ("post", "/groups/{id}/members"),
    ("delete", "/groups/{id}/members/{member_id}"),
    ("get", "/sites"),
    ("post", "/sites"),
    ("get", "/sites/{id}"),
    ("patch", "/sites/{id}"),
    ("delete", "/sites/{id}"),
    ("get", "/sites/{id}/tokens"),
    ("post", "/sites/{id}/tokens"),
    ("delete", "/sites/{id}/tokens/{token_id}"),
    ("get", "/gateways"),
    ("get", "/gateways/{id}"),
    ("delete", "/gateways/{id}"),
    ("get", "/relays"),
    ("get", "/resources"),
    ("post", "/resources"),
    ("get", "/resources/{id}"),
    ("put", "/resources/{id}"),
    ("delete", "/resources/{id}"),
    ("get", "/policies"),
    ("post", "/policies"),
    ("get", "/policies/{id}"),
    ("put", "/policies/{id}"),
    ("delete", "/policies/{id}"),
    ("get", "/clients"),
    ("get", "/clients/{id}"),
    ("patch", "/clients/{id}"),
    ("delete", "/clients/{id}"),
    ("get", "/flow-log"),
    ("post", "/device/authorize"),
    ("post", "/device/token"),
    ("post", "/device/revoke"),
];

async fn served_document(api: &Api) -> Value {
    let r = api.send_as(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK, "served without a token");
    r.body
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_owned(), path.clone()));
            }
        }
    }
    ops
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                uuid::Uuid::new_v4().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn document_parses_and_lists_the_contract() {
    let api = Api::sqlite().await;
    let doc = served_document(&api).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    assert_eq!(
        doc,
        serde_json::to_value(keyhole_portal::api::openapi()).unwrap()
    );
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&doc), expected);
}

/// Each documented operation reaches a handler (an unrouted request would
/// get the fallback's 404 instead) that demands a token; each documented
/// path answers 405 to methods the document does not list for it.
#[tokio::test]
async fn router_serves_exactly_the_documented_operations() {
    let api = Api::sqlite().await;
    let doc = served_document(&api).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = concrete(path);
        for m in METHODS {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = api.send_as(None, method, &url, None).await;
            match item.get(m) {
                Some(op) => {
                    let public = op["security"] == serde_json::json!([{}]);
                    let want = if public && op.get("requestBody").is_some() {
                        // Public, so the handler ran: it wants a JSON body.
                        StatusCode::UNSUPPORTED_MEDIA_TYPE
                    } else if public {
                        StatusCode::OK
                    } else {
                        StatusCode::UNAUTHORIZED
                    };
                    assert_eq!(r.status, want, "{m} {path}: {}", r.body);
                    let documented = op["responses"]
                        .as_object()
                        .unwrap()
                        .contains_key(r.status.as_str());
                    assert!(documented, "{m} {path} does not document {}", r.status);
                }
                None => assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} is served but not documented"
                ),
            }
        }
    }
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(s)) => out.push(s.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn operations_are_complete_and_refs_resolve() {
    let api = Api::sqlite().await;
    let doc = served_document(&api).await;
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in &found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling {r}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()));
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|k| k.starts_with('2')), "{m} {path}");
            assert!(responses.contains_key("500"), "{m} {path} lacks 500");
            if op["security"] != serde_json::json!([{}]) {
                for code in ["401", "403"] {
                    assert!(responses.contains_key(code), "{m} {path} lacks {code}");
                }
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{m} {path} lacks 404");
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "422"] {
                    assert!(responses.contains_key(code), "{m} {path} lacks {code}");
                }
            }
        }
    }
    // The domain types are described, not left opaque.
    let schemas = &doc["components"]["schemas"];
    for name in [
        "Resource",
        "ResourceInput",
        "ResourceAddress",
        "Filter",
        "PolicyInput",
        "Conditions",
        "Schedule",
        "ErrorBody",
    ] {
        assert!(schemas.get(name).is_some(), "schema {name} missing");
    }
}
