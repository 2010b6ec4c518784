//! Drives the REST API in-process: the real router nested at `/api/v1`
//! like the binary does, over a real store (a temp SQLite file or a fresh
//! database in a throwaway PostgreSQL cluster).

#![allow(dead_code)]

#[path = "../support/postgres.rs"]
pub mod postgres;

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use http_body_util::BodyExt as _;
use keyhole_portal::{
    api,
    state::{AppState, Change},
    store::Store,
};
use serde_json::Value;
use tokio::sync::broadcast;
use tower::ServiceExt as _;

pub struct Api {
    pub state: AppState,
    pub app: Router,
    /// An admin API token of `admin_id`.
    pub token: String,
    pub admin_id: String,
    pub changes: broadcast::Receiver<Change>,
    _dir: Option<TempDir>,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    /// The field names of a 422 validation error.
    pub fn fields(&self) -> Vec<String> {
        self.body["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        self.body
    }
}

impl Api {
    pub async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("keyhole-api-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open_sqlite(&dir).await.unwrap();
        Self::with_store(store, Some(TempDir(dir))).await
    }

    pub async fn postgres(pg: &postgres::TempPostgres, db: &str) -> Self {
        let url = pg.fresh_database(db).await;
        let store = Store::connect(&url).await.unwrap();
        Self::with_store(store, None).await
    }

    async fn with_store(store: Store, dir: Option<TempDir>) -> Self {
        let now = std::time::SystemTime::now().into();
        let admin = store
            .create_user("admin@example.com", "Admin", true, now)
            .await
            .unwrap();
        let token = store
            .create_admin_api_token(admin.id, None, now)
            .await
            .unwrap();
        let state = AppState::new(store);
        let changes = state.changes.subscribe();
        let app = Router::new()
            .nest("/api/v1", api::router())
            .with_state(state.clone());
        Self {
            state,
            app,
            token: token.secret,
            admin_id: admin.id.to_string(),
            changes,
            _dir: dir,
        }
    }

    /// Sends a request with `auth` as the bearer token (if any).
    pub async fn send_as(
        &self,
        auth: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"));
        if let Some(t) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(b).unwrap())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.raw(req).await
    }

    pub async fn raw(&self, req: Request<Body>) -> Response {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send_as(Some(&self.token), Method::GET, path, None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send_as(Some(&self.token), Method::POST, path, Some(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.send_as(Some(&self.token), Method::PUT, path, Some(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.send_as(Some(&self.token), Method::PATCH, path, Some(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send_as(Some(&self.token), Method::DELETE, path, None)
            .await
    }

    /// Creates and returns the id of an entity.
    pub async fn create(&self, path: &str, body: Value) -> String {
        let v = self.post(path, body).await.expect(StatusCode::CREATED);
        v["id"].as_str().expect("id in created entity").to_owned()
    }

    /// Every change published so far (and drains them).
    pub fn drain_changes(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        while let Ok(c) = self.changes.try_recv() {
            out.push(c);
        }
        out
    }
}
