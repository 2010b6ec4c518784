//! The real `keyhole-gateway` binary (userspace backend) in a namespace,
//! driven by `fake_portal`: a scripted WebSocket server in this test that
//! speaks keyhole-proto's gateway messages (init, authorize_flow,
//! ice_candidates, revoke) and checks the gateway's answers. The client is a
//! real keyhole-tunnel-peer process doing ICE + WireGuard to the gateway;
//! the resources are a namespace with no route back to the tunnel range.
//!
//! ```text
//!  client 10.10.0.1 ── 10.10.0.2 gateway 10.20.0.1 ── 10.20.0.10/.11 res
//! ```
//!
//! Needs root, the gateway binary (`cargo build -p keyhole-gateway`) and
//! the tunnel peer (`cargo build -p keyhole-tunnel --features io --example
//! keyhole-tunnel-peer`).

#[path = "tunnel_common.rs"]
mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use common::*;
use keyhole_proto::messages::{
    AuthorizeFlow, ClientCandidates, GatewayInit, GatewayToPortal, PortalToGateway, Revoke,
    RevokeTarget,
};
use keyhole_proto::{
    ClientId, Decoded, Envelope, FlowId, GatewayId, IceCredentials, PresharedKey, PublicKey,
    RequestId, Resource, ResourceId, SiteId, TunnelAddresses, decode,
};
use keyhole_tests_netns::{Netns, Proc, veth};
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::{
    self, Message, WebSocket,
    handshake::server::{Request, Response},
};

const TOKEN: &str = "site-token-for-the-e2e-test";
const CLIENT_ICE: &str = "cliufrag:clientpasswordclientpassword";
const GATEWAY_ICE: &str = "gwufragg:gatewaypasswordgatewaypassword";

fn now() -> DateTime<Utc> {
    SystemTime::now().into()
}

fn creds(s: &str) -> IceCredentials {
    let (u, p) = s.split_once(':').unwrap();
    IceCredentials::new(u.into(), p.into()).unwrap()
}

fn resource(id: u128, json_address: &str, filters: &str) -> Resource {
    serde_json::from_str(&format!(
        r#"{{"id":"{}","name":"r{id}","address":{json_address},"filters":{filters}}}"#,
        ResourceId::from_u128(id)
    ))
    .unwrap()
}

/// A scripted portal: one gateway connection at a time.
struct FakePortal {
    listener: TcpListener,
    ws: Option<WebSocket<std::net::TcpStream>>,
    /// Query string and Authorization header of the last upgrade.
    query: String,
    auth: String,
    next_id: u64,
}

impl FakePortal {
    // tungstenite's handshake callback type fixes the large error.
    #[allow(clippy::result_large_err)]
    fn accept(&mut self, timeout: Duration) {
        self.listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed() < timeout, "gateway did not connect");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut query = String::new();
        let mut auth = String::new();
        let ws = tungstenite::accept_hdr(stream, |req: &Request, resp: Response| {
            assert_eq!(req.uri().path(), "/api/v1/gateway/ws");
            query = req.uri().query().unwrap_or_default().to_owned();
            auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            Ok(resp)
        })
        .unwrap();
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        self.ws = Some(ws);
        self.query = query;
        self.auth = auth;
    }

    fn gateway_public_key(&self) -> PublicKey {
        let v = self
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("public_key="))
            .unwrap();
        let decoded = v
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=");
        decoded.parse().unwrap()
    }

    fn send(&mut self, env: Envelope<PortalToGateway>) {
        let text = env.encode().unwrap();
        self.ws.as_mut().unwrap().send(Message::text(text)).unwrap();
    }

    fn request(&mut self, msg: PortalToGateway) -> RequestId {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.send(Envelope::request(id, msg));
        id
    }

    /// Frames until `pred` matches one; panics after `timeout`.
    fn expect(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Envelope<GatewayToPortal>) -> bool,
    ) -> Envelope<GatewayToPortal> {
        let start = Instant::now();
        let ws = self.ws.as_mut().unwrap();
        loop {
            assert!(start.elapsed() < timeout, "no {what} within {timeout:?}");
            match ws.read() {
                Ok(Message::Text(t)) => match decode::<GatewayToPortal>(t.as_bytes()).unwrap() {
                    Decoded::Known(env) if pred(&env) => return env,
                    _ => {}
                },
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
}

#[test]
fn gateway_forwards_only_authorised_flows_and_revocation_cuts_them() {
    let client = Netns::new("gec").unwrap();
    let gw = Netns::new("geg").unwrap();
    let res = Netns::new("ger").unwrap();
    veth(&client, "eth0", "10.10.0.1/24", &gw, "eth0", "10.10.0.2/24").unwrap();
    veth(&gw, "eth1", "10.20.0.1/24", &res, "eth0", "10.20.0.10/24").unwrap();
    // The resources have no route to the tunnel range: replies work only
    // through the gateway's NAT.
    res.add_addr("eth0", "10.20.0.11/24").unwrap();
    res.run_with_stdin(
        "nft",
        ["-f", "-"],
        b"table inet probe {\n chain input {\n type filter hook input priority 0;\n \
          ip daddr 10.20.0.10 counter\n ip daddr 10.20.0.11 counter\n }\n}\n",
    )
    .unwrap();

    let listener = gw.enter(|| TcpListener::bind("127.0.0.1:0")).unwrap();
    let portal_addr = listener.local_addr().unwrap();
    let mut portal = FakePortal {
        listener,
        ws: None,
        query: String::new(),
        auth: String::new(),
        next_id: 0,
    };
    let gw_bin = built_binary(
        "keyhole-gateway",
        Some("KEYHOLE_GATEWAY_BIN"),
        "`cargo build -p keyhole-gateway`",
    );
    let mut cmd = gw.command(
        gw_bin.to_str().unwrap(),
        [
            "--portal-url",
            &format!("http://{portal_addr}"),
            "--backend",
            "userspace",
            "--interface",
            "kh-gw",
            "--advertise",
            "10.10.0.2",
            "--heartbeat-secs",
            "1",
            "--max-backoff-secs",
            "2",
        ]
        .map(String::from),
    );
    // The secret travels in the environment, as in production.
    cmd.env("KEYHOLE_TOKEN", TOKEN);
    // A throwaway key dir, not the host's /var/lib.
    let state = std::env::temp_dir().join(format!("keyhole-gwe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    cmd.env("KEYHOLE_STATE_DIR", &state);
    let mut gateway: Proc = gw.spawn_command(cmd).unwrap();

    portal.accept(Duration::from_secs(20));
    assert_eq!(portal.auth, format!("Bearer {TOKEN}"));
    assert!(
        portal.query.contains("backend=userspace"),
        "{}",
        portal.query
    );
    let gw_key = portal.gateway_public_key();
    gw.ip(["link", "show", "kh-gw"]).unwrap();

    let r_ok = resource(
        1,
        r#"{"kind":"ip","ip":"10.20.0.10"}"#,
        r#"[{"protocol":"icmp"},{"protocol":"tcp","ports":{"start":7000,"end":7000}}]"#,
    );
    let r_other = resource(2, r#"{"kind":"ip","ip":"10.20.0.11"}"#, "[]");
    portal.send(Envelope::new(PortalToGateway::Init(GatewayInit {
        gateway_id: GatewayId::from_u128(7),
        site_id: SiteId::from_u128(1),
        tunnel_addresses: TunnelAddresses::new(
            "100.64.0.1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
        )
        .unwrap(),
        resources: vec![r_ok.clone(), r_other],
        relays: vec![],
    })));
    portal.expect(Duration::from_secs(5), "heartbeat", |e| {
        matches!(e.message, GatewayToPortal::Heartbeat(_))
    });

    // The client: a real tunnel peer with both resources routed into the
    // tunnel, so only the gateway's filter keeps .11 out.
    let (client_key, client_pub) = keypair(&client);
    let psk = client.run("wg", ["genpsk"]).unwrap().trim().to_string();
    let client_tunnel =
        TunnelAddresses::new("100.64.0.5".parse().unwrap(), "fd00::5".parse().unwrap()).unwrap();
    let peer_args: Vec<String> = [
        "--private-key",
        &client_key,
        "--peer-public-key",
        &gw_key.to_string(),
        "--psk",
        &psk,
        "--listen",
        "10.10.0.1:51820",
        "--tun",
        "kh0",
        "--tun-addr",
        "100.64.0.5/32",
        "--route",
        "10.20.0.10/32",
        "--route",
        "10.20.0.11/32",
        "--role",
        "initiator",
        "--ice-local",
        CLIENT_ICE,
        "--ice-remote",
        GATEWAY_ICE,
        "--remote-candidate",
        "candidate:1 1 udp 2130706431 10.10.0.2 51820 typ host",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let flow_id = FlowId::from_u128(100);
    let client_id = ClientId::from_u128(5);
    let asked = Instant::now();
    let req = portal.request(PortalToGateway::AuthorizeFlow(AuthorizeFlow {
        flow_id,
        client_id,
        client_public_key: client_pub.parse().unwrap(),
        preshared_key: psk.parse::<PresharedKey>().unwrap(),
        client_tunnel_addresses: client_tunnel,
        resource: r_ok,
        client_ice: creds(CLIENT_ICE),
        gateway_ice: creds(GATEWAY_ICE),
        expires_at: now() + chrono::TimeDelta::seconds(300),
        dns: vec![],
    }));
    let reply = portal.expect(Duration::from_secs(10), "flow_authorized", |e| {
        matches!(e.message, GatewayToPortal::FlowAuthorized(_))
    });
    eprintln!("flow_authorized after {:?}", asked.elapsed());
    assert_eq!(reply.reply_to, Some(req));
    // The gateway trickles its host candidate for the client.
    portal.expect(Duration::from_secs(5), "gateway ice_candidates", |e| {
        matches!(&e.message, GatewayToPortal::IceCandidates(c)
            if c.client_id == client_id && c.candidates.iter().any(|c| c.as_str().contains("10.10.0.2")))
    });
    portal.send(Envelope::new(PortalToGateway::IceCandidates(
        ClientCandidates {
            client_id,
            candidates: vec![
                "candidate:1 1 udp 2130706431 10.10.0.1 51820 typ host"
                    .to_string()
                    .try_into()
                    .unwrap(),
            ],
        },
    )));
    let peer = spawn_peer(&client, &peer_args);
    let up = wait_up(&peer, Duration::from_secs(20));
    eprintln!("client ConnectionUp at {up:.3} s");

    // Authorised: ICMP and TCP 7000 to .10 (through NAT: .10 has no route back).
    wait_until(Duration::from_secs(10), "ping to the resource", || {
        ping_ok(&client, "10.20.0.10")
    });
    tcp_transfer(&res, &client, "10.20.0.10:7000".parse().unwrap(), 1 << 20);
    // Not authorised: another resource gets nothing at all.
    for _ in 0..3 {
        assert!(!ping_ok(&client, "10.20.0.11"));
    }
    assert_eq!(
        received(&res, "10.20.0.11"),
        0,
        "unauthorised resource saw packets"
    );
    assert!(received(&res, "10.20.0.10") > 0);

    // Revocation cuts traffic at once.
    portal.send(Envelope::new(PortalToGateway::Revoke(Revoke {
        target: RevokeTarget::Flow { flow_id },
    })));
    wait_until(Duration::from_secs(5), "revocation", || {
        !ping_ok(&client, "10.20.0.10")
    });
    let before = received(&res, "10.20.0.10");
    assert!(!ping_ok(&client, "10.20.0.10"));
    assert_eq!(
        received(&res, "10.20.0.10"),
        before,
        "revoked flow still reaches the resource"
    );

    // A flow that expires on its own, with the portal gone meanwhile; a
    // fresh client process (its old connection died with the revocation).
    drop(peer);
    let flow2 = FlowId::from_u128(101);
    let r_again = resource(
        1,
        r#"{"kind":"ip","ip":"10.20.0.10"}"#,
        r#"[{"protocol":"icmp"}]"#,
    );
    portal.request(PortalToGateway::AuthorizeFlow(AuthorizeFlow {
        flow_id: flow2,
        client_id,
        client_public_key: client_pub.parse().unwrap(),
        preshared_key: psk.parse::<PresharedKey>().unwrap(),
        client_tunnel_addresses: client_tunnel,
        resource: r_again,
        client_ice: creds(CLIENT_ICE),
        gateway_ice: creds(GATEWAY_ICE),
        expires_at: now() + chrono::TimeDelta::seconds(12),
        dns: vec![],
    }));
    portal.expect(
        Duration::from_secs(10),
        "flow_authorized 2",
        |e| matches!(&e.message, GatewayToPortal::FlowAuthorized(f) if f.flow_id == flow2),
    );
    portal.send(Envelope::new(PortalToGateway::IceCandidates(
        ClientCandidates {
            client_id,
            candidates: vec![
                "candidate:1 1 udp 2130706431 10.10.0.1 51820 typ host"
                    .to_string()
                    .try_into()
                    .unwrap(),
            ],
        },
    )));
    let peer = spawn_peer(&client, &peer_args);
    wait_up(&peer, Duration::from_secs(20));
    wait_until(Duration::from_secs(15), "ping on the second flow", || {
        ping_ok(&client, "10.20.0.10")
    });
    // The portal goes away: the flow keeps forwarding until it expires.
    portal.ws = None;
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        ping_ok(&client, "10.20.0.10"),
        "flow stopped when the portal went away"
    );
    wait_until(Duration::from_secs(20), "expiry without the portal", || {
        !ping_ok(&client, "10.20.0.10")
    });
    // It reconnects on its own.
    portal.accept(Duration::from_secs(30));

    // Clean shutdown: interface, filter and NAT table gone.
    gateway.signal(Signal::SIGTERM).unwrap();
    let status = gateway.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        gateway.output_so_far()
    );
    assert!(gw.ip(["link", "show", "kh-gw"]).is_err());
    let tables = gw.run("nft", ["list", "tables"]).unwrap();
    assert!(!tables.contains("keyhole_gw"), "{tables}");
    let _ = std::fs::remove_dir_all(&state);
}
