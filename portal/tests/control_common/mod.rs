//! A portal started in-process and WebSocket peers speaking the control
//! protocol to it, for the control-channel tests and the benchmark.

#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use keyhole_portal::{
    control::ControlConfig,
    server::{self, Portal, ServerConfig},
};
use keyhole_proto::{
    Decoded, Envelope, Message, PublicKey, decode,
    messages::{ClientToPortal, GatewayToPortal},
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, client::IntoClientRequest as _, protocol::CloseFrame},
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyhole-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Start a portal on 127.0.0.1:0 with SQLite in `dir` or `database_url`.
pub async fn start_portal(
    dir: PathBuf,
    database_url: Option<String>,
    control: ControlConfig,
) -> Portal {
    let cfg = ServerConfig {
        database_url,
        control,
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir)
    };
    server::start(cfg, std::future::pending()).await.unwrap()
}

fn percent(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

pub fn key(n: u32) -> PublicKey {
    let mut b = [7u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    PublicKey::from_bytes(b)
}

/// Open a control WebSocket; `Err` carries the HTTP status of a refusal.
pub async fn connect(addr: SocketAddr, path_and_query: &str, token: &str) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    // No Nagle: like the portal, peers send small frames and flush
    // batches themselves.
    match tokio_tungstenite::connect_async_with_config(req, None, true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

pub async fn connect_gateway(addr: SocketAddr, token: &str, key: PublicKey) -> Ws {
    let q = format!(
        "/api/v1/gateway/ws?public_key={}&version=0.1.0&backend=userspace&name=gw-test",
        percent(&key.to_base64())
    );
    connect(addr, &q, token).await.expect("gateway connect")
}

pub async fn connect_client(addr: SocketAddr, token: &str, key: PublicKey) -> Ws {
    let q = format!(
        "/api/v1/client/ws?public_key={}&version=0.1.0",
        percent(&key.to_base64())
    );
    connect(addr, &q, token).await.expect("client connect")
}

pub async fn send<M: Message>(ws: &mut Ws, env: &Envelope<M>) {
    ws.send(tungstenite::Message::Text(env.encode().unwrap().into()))
        .await
        .unwrap();
}

pub async fn send_raw(ws: &mut Ws, text: String) {
    ws.send(tungstenite::Message::Text(text.into()))
        .await
        .unwrap();
}

/// What arrived next on a socket.
#[derive(Debug)]
pub enum Next<M> {
    Frame(Envelope<M>),
    Closed(Option<u16>),
}

/// The next protocol frame (pings skipped), within `wait`.
pub async fn next<M: Message + std::fmt::Debug>(ws: &mut Ws, wait: Duration) -> Next<M> {
    loop {
        let msg = tokio::time::timeout(wait, ws.next())
            .await
            .expect("timed out waiting for a frame");
        match msg {
            None | Some(Err(_)) => return Next::Closed(None),
            Some(Ok(tungstenite::Message::Close(frame))) => {
                return Next::Closed(frame.map(|f: CloseFrame| u16::from(f.code)));
            }
            Some(Ok(tungstenite::Message::Text(t))) => match decode::<M>(t.as_bytes()) {
                Ok(Decoded::Known(env)) => return Next::Frame(env),
                other => panic!("undecodable frame {t}: {other:?}"),
            },
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn frame<M: Message + std::fmt::Debug>(ws: &mut Ws) -> Envelope<M> {
    match next::<M>(ws, Duration::from_secs(5)).await {
        Next::Frame(f) => f,
        Next::Closed(c) => panic!("connection closed ({c:?}) while waiting for a frame"),
    }
}

/// Nothing arrives within `wait`.
pub async fn assert_quiet(ws: &mut Ws, wait: Duration) {
    if let Ok(m) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected silence, got {m:?}");
    }
}

pub fn request(id: u64, msg: ClientToPortal) -> Envelope<ClientToPortal> {
    Envelope::request(keyhole_proto::RequestId(id), msg)
}

pub fn gateway_reply(
    to: keyhole_proto::RequestId,
    msg: GatewayToPortal,
) -> Envelope<GatewayToPortal> {
    Envelope::reply(to, msg)
}
