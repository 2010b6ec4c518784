//! The WebSocket endpoints: `GET /api/v1/{gateway,client,relay}/ws`.
//!
//! The upgrade request carries the peer's secret (`Authorization: Bearer`)
//! and what it says about itself (query string, see
//! `keyhole_proto::messages::connect`). Authentication and registration in
//! the store happen before the upgrade, so a refused peer gets a plain HTTP
//! 401/403/409 and never a socket.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, Query, State, WebSocketUpgrade, ws::WebSocket},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::Utc;
use futures_util::StreamExt as _;
use keyhole_proto::{
    Decoded, MAX_FRAME_BYTES, decode,
    messages::{
        ClientToPortal, GatewayToPortal, RelayToPortal,
        connect::{ClientConnect, GatewayConnect},
    },
};
use uuid::Uuid;

use super::{
    core::{ClientHello, GatewayHello, RelayHello, relay_addresses},
    hub::Hub,
    socket::{Liveness, Reader, handle_undecoded, write_loop},
};
use crate::{
    policy::{ActorId, SignInMethod},
    state::AppState,
    store::{GatewayRegistration, StoreError, TokenInfo, TokenKind, TokenOwner},
};

/// What the endpoints share.
#[derive(Clone)]
pub struct ControlState {
    pub app: AppState,
    pub hub: Arc<Hub>,
    /// Relays may register with this shared secret instead of a token.
    pub relay_secret: Option<Arc<str>>,
    pub liveness: Liveness,
}

/// Frames queued per connection before it counts as a slow consumer.
/// Gateways receive every flow of their site, so they get more room.
const GATEWAY_QUEUE: usize = 65_536;
const CLIENT_QUEUE: usize = 1024;
const RELAY_QUEUE: usize = 64;

/// Socket-level message limit. Frames between [`MAX_FRAME_BYTES`] and this
/// are read whole and refused by the protocol decoder with a clean close
/// (1009); beyond it tungstenite stops reading and we close the same way.
const SOCKET_MESSAGE_LIMIT: usize = 4 * MAX_FRAME_BYTES;

/// Gateways' `last_seen_at` is written at most this often.
const PRESENCE_WRITE_INTERVAL: Duration = Duration::from_secs(60);

/// The endpoints, relative to where the server nests them (`/api/v1`).
pub fn router<S: Clone + Send + Sync + 'static>(state: ControlState) -> Router<S> {
    Router::new()
        .route("/gateway/ws", get(gateway_ws))
        .route("/client/ws", get(client_ws))
        .route("/relay/ws", get(relay_ws))
        .with_state(state)
}

fn configure(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(SOCKET_MESSAGE_LIMIT)
        .max_frame_size(SOCKET_MESSAGE_LIMIT)
        // Small buffers: 10,000 idle clients must stay cheap.
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn authenticate(state: &ControlState, headers: &HeaderMap) -> Result<TokenInfo, Response> {
    let Some(secret) = bearer(headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`",
        ));
    };
    match state.app.store.verify_token(secret, Utc::now()).await {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err(refuse(StatusCode::UNAUTHORIZED, "unknown or expired token")),
        Err(e) => Err(store_error(e)),
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Conflict(m) => refuse(StatusCode::CONFLICT, m),
        e @ (StoreError::Invalid { .. } | StoreError::Reference(_)) => {
            refuse(StatusCode::BAD_REQUEST, e.to_string())
        }
        e => {
            tracing::error!(error = %e, "store error on connect");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn default_name(prefix: &str, key: &keyhole_proto::PublicKey) -> String {
    let b64 = key.to_base64();
    format!("{prefix}-{}", &b64[..8])
}

async fn gateway_ws(
    State(state): State<ControlState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<GatewayConnect>,
    ws: WebSocketUpgrade,
) -> Response {
    let info = match authenticate(&state, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let (TokenKind::Gateway, TokenOwner::Site(site_id)) = (info.kind, info.owner) else {
        return refuse(StatusCode::FORBIDDEN, "not a gateway (site) token");
    };
    let reg = GatewayRegistration {
        site_id,
        name: q
            .name
            .clone()
            .unwrap_or_else(|| default_name("gateway", &q.public_key)),
        public_key: q.public_key,
        version: q.version.clone(),
        backend: q.backend,
        remote_ip: Some(addr.ip().to_canonical()),
    };
    let record = match state.app.store.register_gateway(&reg, Utc::now()).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    tracing::info!(gateway = %record.id, site = %site_id, version = %q.version, remote = %addr, "gateway connected");
    let hello = GatewayHello {
        id: record.id,
        site_id,
        public_key: record.public_key,
        tunnel: record.tunnel,
        token_id: info.id,
    };
    configure(ws).on_upgrade(move |socket| serve_gateway(socket, state, hello))
}

async fn serve_gateway(socket: WebSocket, state: ControlState, hello: GatewayHello) {
    let hub = &state.hub;
    let gateway_id = hello.id;
    let (mut reader, conn) = start(socket, &state, GATEWAY_QUEUE);
    hub.with_core(|core, now| core.gateway_connected(now, conn, hello));
    let mut last_presence = tokio::time::Instant::now();
    while let Some(frame) = reader.next_frame().await {
        match decode::<GatewayToPortal>(&frame) {
            Ok(Decoded::Known(env)) => {
                let heartbeat = matches!(env.message, GatewayToPortal::Heartbeat(_));
                hub.with_core_open(|core, now| core.gateway_message(now, conn, env));
                if heartbeat && last_presence.elapsed() >= PRESENCE_WRITE_INTERVAL {
                    last_presence = tokio::time::Instant::now();
                    let store = state.app.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store
                            .set_gateway_presence(gateway_id, true, Utc::now())
                            .await
                        {
                            tracing::warn!(error = %e, "recording gateway presence");
                        }
                    });
                }
            }
            other => handle_undecoded(hub, conn, &reader, other),
        }
    }
    reader.finish().await;
    hub.unregister(conn);
    if !hub.with_core(|core, _| core.is_gateway_connected(gateway_id))
        && let Err(e) = state
            .app
            .store
            .set_gateway_presence(gateway_id, false, Utc::now())
            .await
    {
        tracing::warn!(error = %e, "recording gateway presence");
    }
    tracing::info!(gateway = %gateway_id, "gateway disconnected");
}

async fn client_ws(
    State(state): State<ControlState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ClientConnect>,
    ws: WebSocketUpgrade,
) -> Response {
    let info = match authenticate(&state, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let actor = match (info.kind, info.owner) {
        (TokenKind::ServiceAccount | TokenKind::ClientSession, TokenOwner::User(u)) => {
            ActorId::User(u)
        }
        (TokenKind::ServiceAccount | TokenKind::ClientSession, TokenOwner::ServiceAccount(s)) => {
            ActorId::ServiceAccount(s)
        }
        _ => {
            return refuse(
                StatusCode::FORBIDDEN,
                "not a client or service-account token",
            );
        }
    };
    if info.kind == TokenKind::ClientSession
        && let Err(r) = check_device_key(&state, &info, &q.public_key).await
    {
        return r;
    }
    let sign_in = info.sign_in_method.unwrap_or(match info.kind {
        TokenKind::ServiceAccount => SignInMethod::ServiceToken,
        _ => SignInMethod::Password,
    });
    let name = q
        .name
        .clone()
        .unwrap_or_else(|| default_name("client", &q.public_key));
    let record = match state
        .app
        .store
        .register_client(actor, &name, q.public_key, Utc::now())
        .await
    {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    if record.disabled {
        return refuse(StatusCode::FORBIDDEN, "this client is disabled");
    }
    tracing::debug!(client = %record.id, version = %q.version, remote = %addr, "client connected");
    let hello = ClientHello {
        id: record.id,
        actor,
        public_key: record.public_key,
        tunnel: record.tunnel,
        remote_ip: addr.ip().to_canonical(),
        sign_in,
        token_id: info.id,
        token_expiry: info.expires_at,
    };
    configure(ws).on_upgrade(move |socket| serve_client(socket, state, hello))
}

/// A `client_session` token (from `keyhole login`) works only with the
/// device key it was issued to, so a copied token is useless elsewhere.
async fn check_device_key(
    state: &ControlState,
    info: &TokenInfo,
    key: &keyhole_proto::PublicKey,
) -> Result<(), Response> {
    match state.app.store.client_session_key(info.id).await {
        Ok(Some(bound)) if bound == *key => Ok(()),
        Ok(Some(_)) => {
            tracing::warn!(token = %info.id, presented = %key, "client session token used with another device key");
            Err(refuse(
                StatusCode::FORBIDDEN,
                "this sign-in belongs to another device key; run `keyhole login` on this device",
            ))
        }
        Ok(None) => Err(refuse(
            StatusCode::FORBIDDEN,
            "this client session is bound to no device key; run `keyhole login`",
        )),
        Err(e) => Err(store_error(e)),
    }
}

async fn serve_client(socket: WebSocket, state: ControlState, hello: ClientHello) {
    let hub = &state.hub;
    let (mut reader, conn) = start(socket, &state, CLIENT_QUEUE);
    hub.with_core(|core, now| core.client_connected(now, conn, hello));
    while let Some(frame) = reader.next_frame().await {
        match decode::<ClientToPortal>(&frame) {
            Ok(Decoded::Known(env)) => {
                hub.with_core_open(|core, now| core.client_message(now, conn, env));
            }
            other => handle_undecoded(hub, conn, &reader, other),
        }
    }
    reader.finish().await;
    hub.unregister(conn);
}

/// Constant-time comparison, so the relay secret cannot be guessed byte by
/// byte from response times.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn relay_ws(
    State(state): State<ControlState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let shared = match (bearer(&headers), &state.relay_secret) {
        (Some(given), Some(secret)) => same_secret(given.as_bytes(), secret.as_bytes()),
        _ => false,
    };
    let token_id: Option<Uuid> = if shared {
        None
    } else {
        match authenticate(&state, &headers).await {
            Ok(TokenInfo {
                kind: TokenKind::Relay,
                id,
                ..
            }) => Some(id),
            Ok(_) => return refuse(StatusCode::FORBIDDEN, "not a relay token"),
            Err(r) => return r,
        }
    };
    configure(ws).on_upgrade(move |socket| serve_relay(socket, state, token_id))
}

async fn serve_relay(socket: WebSocket, state: ControlState, token_id: Option<Uuid>) {
    let hub = &state.hub;
    let (mut reader, conn) = start(socket, &state, RELAY_QUEUE);
    hub.with_core(|core, _| core.relay_connected(conn, token_id));
    let mut registered = None;
    while let Some(frame) = reader.next_frame().await {
        match decode::<RelayToPortal>(&frame) {
            Ok(Decoded::Known(env)) => match env.message {
                RelayToPortal::Register(reg) => {
                    let stored = state
                        .app
                        .store
                        .register_relay(reg.public_ipv4, reg.public_ipv6, reg.port, Utc::now())
                        .await;
                    match stored {
                        Ok(record) => {
                            let (ipv4, ipv6) = relay_addresses(
                                record.public_ipv4,
                                record.public_ipv6,
                                record.port,
                            );
                            let hello = RelayHello {
                                id: record.id,
                                ipv4,
                                ipv6,
                                load: reg.load,
                            };
                            tracing::info!(relay = %record.id, "relay registered");
                            registered = Some(record.id);
                            hub.with_core(|core, now| {
                                core.relay_registered(now, conn, env.id, hello)
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "relay registration failed");
                            hub.with_core(|core, _| core.bad_request(conn, env.id, e.to_string()));
                        }
                    }
                }
                _ => hub.with_core(|core, _| core.relay_message(conn, env)),
            },
            other => handle_undecoded(hub, conn, &reader, other),
        }
    }
    reader.finish().await;
    // The core announces the relay gone to clients and gateways.
    hub.unregister(conn);
    // A relay that already reconnected stays online.
    if let Some(id) =
        registered.filter(|id| !hub.with_core(|core, _| core.is_relay_registered(*id)))
    {
        tracing::info!(relay = %id, "relay disconnected");
        if let Err(e) = state
            .app
            .store
            .set_relay_presence(id, false, Utc::now())
            .await
        {
            tracing::warn!(error = %e, "recording relay presence");
        }
    }
}

/// Register the connection with the hub and start its writer.
fn start(socket: WebSocket, state: &ControlState, queue: usize) -> (Reader, super::core::ConnId) {
    let hub = &state.hub;
    let reg = hub.register(queue);
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(
        sink,
        reg.rx,
        reg.kill.clone(),
        hub.metrics().clone(),
        state.liveness,
    ));
    (
        Reader::new(stream, writer, reg.kill, hub.metrics().clone()),
        reg.conn,
    )
}
