//! `keyhole-relay --portal-url` against a real portal: the relay process
//! registers its address, the TURN secret it receives validates the
//! credentials the portal hands a client (and only those), and the portal
//! stores it offline once the process dies.

#[path = "support/turn_client.rs"]
mod turn_client;

use std::{
    net::{SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    time::Duration,
};

use chrono::Utc;
use futures_util::StreamExt as _;
use keyhole_portal::{
    control::ControlConfig,
    server::{self, ServerConfig},
    store::{Store, TokenKind, TokenOwner},
};
use keyhole_proto::{
    Decoded, PublicKey, decode,
    messages::{PortalToClient, RelaysPresence},
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
use turn_client::TurnClient;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls the store until a relay on `port` has the wanted presence.
async fn wait_relay(store: &Store, port: u16, online: bool) -> keyhole_proto::RelayId {
    for _ in 0..100 {
        let relays = store.list_relays(10, 0).await.unwrap();
        if let Some(r) = relays.iter().find(|r| r.port == port && r.online == online) {
            return r.id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no relay on port {port} with online = {online}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_registers_and_its_secret_validates_portal_credentials() {
    let dir = std::env::temp_dir().join(format!("keyhole-relay-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let portal = server::start(
        ServerConfig {
            control: ControlConfig::default(),
            ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.clone())
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    let store = portal.app.store.clone();
    let now = Utc::now();
    let relay_token = store
        .create_token(TokenKind::Relay, TokenOwner::Deployment, None, None, now)
        .await
        .unwrap();
    let sa = store.create_service_account("ci", now).await.unwrap();
    let sa_token = store
        .create_token(
            TokenKind::ServiceAccount,
            TokenOwner::ServiceAccount(sa.id),
            None,
            None,
            now,
        )
        .await
        .unwrap();

    let port = free_udp_port();
    let relay = Guard(
        Command::new(env!("CARGO_BIN_EXE_keyhole-relay"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--portal-url",
                &format!("http://{}", portal.addr),
                "--xdp-mode",
                "off",
                "--no-tcp",
                "--allow-loopback-peers",
                "--heartbeat-secs",
                "1",
            ])
            .env("KEYHOLE_TOKEN", &relay_token.secret)
            .env_remove("KEYHOLE_RELAY_SECRET")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning keyhole-relay"),
    );
    let relay_id = wait_relay(&store, port, true).await;
    let record = store
        .list_relays(10, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == relay_id)
        .unwrap();
    assert_eq!(record.public_ipv4, Some("127.0.0.1".parse().unwrap()));

    // A client connects and is handed credentials for that relay.
    let key = PublicKey::from_bytes([3; 32]).to_base64();
    let url = format!(
        "ws://{}/api/v1/client/ws?public_key={}&version=0.1.0",
        portal.addr,
        key.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", sa_token.secret).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let init = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("client init")
            .unwrap()
            .unwrap();
        if let tungstenite::Message::Text(t) = msg
            && let Ok(Decoded::Known(env)) = decode::<PortalToClient>(t.as_bytes())
            && let PortalToClient::Init(init) = env.message
        {
            break init;
        }
    };
    let info = init
        .relays
        .iter()
        .find(|r| r.id == relay_id)
        .expect("the registered relay is in the client's init");
    let server = SocketAddr::V4(info.ipv4.expect("an IPv4 address"));
    assert_eq!(server.port(), port);

    // The relay accepts the portal's credentials and refuses forged ones.
    let creds = info.credentials.clone();
    let (u, p) = (creds.username.clone(), creds.password.clone());
    let alloc = tokio::task::spawn_blocking(move || {
        TurnClient::allocate_as("127.0.0.1:0".parse().unwrap(), server, u, &p)
    })
    .await
    .unwrap();
    let alloc = alloc.expect("the relay accepts credentials issued by the portal");
    assert_eq!(
        alloc.relayed.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    let u = creds.username.clone();
    let forged = tokio::task::spawn_blocking(move || {
        TurnClient::allocate_as(
            "127.0.0.1:0".parse().unwrap(),
            server,
            u,
            "not-the-password-from-the-secret",
        )
    })
    .await
    .unwrap();
    assert!(
        forged.is_err(),
        "a password not derived from the secret is refused"
    );

    // The relay process dies: the portal stores it offline and tells the
    // client.
    drop(relay);
    wait_relay(&store, port, false).await;
    let gone = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("relays_presence after the relay died")
            .unwrap()
            .unwrap();
        if let tungstenite::Message::Text(t) = msg
            && let Ok(Decoded::Known(env)) = decode::<PortalToClient>(t.as_bytes())
            && let PortalToClient::RelaysPresence(p) = env.message
        {
            break p;
        }
    };
    assert_eq!(
        gone,
        RelaysPresence {
            connected: vec![],
            disconnected_ids: vec![relay_id],
        }
    );
    drop(alloc);
    portal.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
