//! The whole chain with real parts: a real `keyhole-portal` (SQLite in a
//! temp dir) configured over its REST API, the real `keyhole-gateway`
//! (userspace backend) connecting with a site token, and a client that
//! asks for flows over the portal's client WebSocket (this test speaks
//! the protocol) and carries traffic with a real keyhole-tunnel-peer.
//!
//! ```text
//!  client 10.10.0.1 ── 10.10.0.2 gateway+portal 10.20.0.1 ── 10.20.0.10/.11 res
//! ```
//!
//! Needs root and the binaries: `cargo build -p keyhole-portal -p
//! keyhole-gateway` and `cargo build -p keyhole-tunnel --features io
//! --example keyhole-tunnel-peer`.

#[path = "tunnel_common.rs"]
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use keyhole_proto::messages::{ClientToPortal, GatewayCandidates, PortalToClient, RequestFlow};
use keyhole_proto::{Decoded, Envelope, IceCandidate, RequestId, ResourceId, decode};
use keyhole_tests_netns::{Netns, Proc, veth};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket, client::IntoClientRequest as _};

/// `curl` against the portal's REST API from inside `ns`.
fn api(ns: &Netns, admin: &str, method: &str, path: &str, body: &str) -> Value {
    let out = ns
        .run(
            "curl",
            [
                "-sS",
                "--fail-with-body",
                "-X",
                method,
                "-H",
                &format!("Authorization: Bearer {admin}"),
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("http://127.0.0.1:18080/api/v1{path}"),
            ],
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

struct ClientWs(WebSocket<TcpStream>);

impl ClientWs {
    fn send(&mut self, env: Envelope<ClientToPortal>) {
        self.0.send(Message::text(env.encode().unwrap())).unwrap();
    }

    fn expect(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Envelope<PortalToClient>) -> bool,
    ) -> Envelope<PortalToClient> {
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < timeout, "no {what} within {timeout:?}");
            match self.0.read() {
                Ok(Message::Text(t)) => {
                    if let Decoded::Known(env) = decode::<PortalToClient>(t.as_bytes()).unwrap() {
                        if let PortalToClient::FlowFailed(f) = &env.message {
                            panic!("waiting for {what}: flow failed: {f:?}");
                        }
                        if pred(&env) {
                            return env;
                        }
                    }
                }
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
fn real_portal_gateway_and_client_forward_only_what_policy_allows() {
    let client = Netns::new("gpc").unwrap();
    let gw = Netns::new("gpg").unwrap();
    let res = Netns::new("gpr").unwrap();
    veth(&client, "eth0", "10.10.0.1/24", &gw, "eth0", "10.10.0.2/24").unwrap();
    veth(&gw, "eth1", "10.20.0.1/24", &res, "eth0", "10.20.0.10/24").unwrap();
    res.add_addr("eth0", "10.20.0.11/24").unwrap();
    res.run_with_stdin(
        "nft",
        ["-f", "-"],
        b"table inet probe {\n chain input {\n type filter hook input priority 0;\n \
          ip daddr 10.20.0.10 counter\n ip daddr 10.20.0.11 counter\n }\n}\n",
    )
    .unwrap();
    gw.ip(["link", "set", "lo", "up"]).unwrap();

    // The portal, in the gateway's namespace, on a fresh SQLite store.
    let data = std::env::temp_dir().join(format!("keyhole-gpe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let portal_bin = built_binary("keyhole-portal", None, "`cargo build -p keyhole-portal`");
    let portal: Proc = gw
        .spawn(
            portal_bin.to_str().unwrap(),
            [
                "--listen",
                "127.0.0.1:18080",
                "--data-dir",
                data.to_str().unwrap(),
                "--admin-email",
                "admin@example.com",
                "--admin-password",
                "correct horse battery staple",
            ]
            .map(String::from),
        )
        .unwrap();
    portal
        .wait_for_output("listening on", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", portal.output_so_far()));
    let out = portal.stdout_so_far();
    let admin = out
        .lines()
        .find_map(|l| l.split("store it now): ").nth(1))
        .expect("admin token printed")
        .trim()
        .to_owned();
    let site = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("default site: default ("))
        .and_then(|s| s.strip_suffix(')'))
        .expect("default site printed")
        .to_owned();

    // Configuration through the REST API.
    let site_token = api(&gw, &admin, "POST", &format!("/sites/{site}/tokens"), "{}")["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r_ok = id(&api(
        &gw,
        &admin,
        "POST",
        "/resources",
        &format!(
            r#"{{"name":"web","address":{{"kind":"ip","ip":"10.20.0.10"}},
               "filters":[{{"protocol":"icmp"}},{{"protocol":"tcp","ports":{{"start":7000,"end":7000}}}}],
               "site_ids":["{site}"]}}"#
        ),
    ));
    let r_other = id(&api(
        &gw,
        &admin,
        "POST",
        "/resources",
        &format!(
            r#"{{"name":"other","address":{{"kind":"ip","ip":"10.20.0.11"}},"site_ids":["{site}"]}}"#
        ),
    ));
    let sa = id(&api(
        &gw,
        &admin,
        "POST",
        "/service-accounts",
        r#"{"name":"laptop"}"#,
    ));
    let sa_token = api(
        &gw,
        &admin,
        "POST",
        &format!("/service-accounts/{sa}/tokens"),
        "{}",
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = id(&api(&gw, &admin, "POST", "/groups", r#"{"name":"eng"}"#));
    api(
        &gw,
        &admin,
        "POST",
        &format!("/groups/{group}/members"),
        &format!(r#"{{"kind":"service_account","id":"{sa}"}}"#),
    );
    let policy = id(&api(
        &gw,
        &admin,
        "POST",
        "/policies",
        &format!(r#"{{"group_id":"{group}","resource_id":"{r_ok}"}}"#),
    ));

    // The gateway.
    let mut cmd = gw.command(
        built_binary("keyhole-gateway", None, "`cargo build -p keyhole-gateway`")
            .to_str()
            .unwrap(),
        [
            "--portal-url",
            "http://127.0.0.1:18080",
            "--backend",
            "userspace",
            "--interface",
            "kh-gw",
            "--advertise",
            "10.10.0.2",
        ]
        .map(String::from),
    );
    cmd.env("KEYHOLE_TOKEN", &site_token);
    // Its key goes with the portal's data, not into the host's /var/lib.
    cmd.env("KEYHOLE_STATE_DIR", data.join("gateway-state"));
    let mut gateway = gw.spawn_command(cmd).unwrap();
    gateway
        .wait_for_output("tunnel addresses set", Duration::from_secs(20))
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}\n{}",
                gateway.output_so_far(),
                portal.output_so_far()
            )
        });

    // The client's control connection.
    let (client_key, client_pub) = keypair(&client);
    let mut req = format!(
        "ws://127.0.0.1:18080/api/v1/client/ws?public_key={}&version=0.1.0&name=laptop",
        client_pub
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    )
    .into_client_request()
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {sa_token}").parse().unwrap(),
    );
    let stream = gw.enter(|| TcpStream::connect("127.0.0.1:18080")).unwrap();
    let (ws, _) = tungstenite::client(req, stream).unwrap();
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut cws = ClientWs(ws);
    let init = cws.expect(Duration::from_secs(5), "client init", |e| {
        matches!(e.message, PortalToClient::Init(_))
    });
    let PortalToClient::Init(init) = init.message else {
        unreachable!()
    };
    let tunnel = init.tunnel_addresses;

    let asked = Instant::now();
    cws.send(Envelope::request(
        RequestId(1),
        ClientToPortal::RequestFlow(RequestFlow {
            resource_id: r_ok.parse::<ResourceId>().unwrap(),
            connected_gateway_ids: vec![],
            dns: vec![],
        }),
    ));
    let created = cws.expect(Duration::from_secs(10), "flow_created", |e| {
        matches!(e.message, PortalToClient::FlowCreated(_))
    });
    eprintln!("flow_created after {:?}", asked.elapsed());
    let PortalToClient::FlowCreated(flow) = created.message else {
        unreachable!()
    };
    let gw_cands = cws.expect(Duration::from_secs(5), "gateway candidates", |e| {
        matches!(&e.message, PortalToClient::IceCandidates(c) if c.gateway_id == flow.gateway_id)
    });
    let PortalToClient::IceCandidates(gw_cands) = gw_cands.message else {
        unreachable!()
    };
    let host: IceCandidate = "candidate:1 1 udp 2130706431 10.10.0.1 51820 typ host"
        .to_string()
        .try_into()
        .unwrap();
    cws.send(Envelope::new(ClientToPortal::IceCandidates(
        GatewayCandidates {
            gateway_id: flow.gateway_id,
            candidates: vec![host],
        },
    )));

    let ice = |c: &keyhole_proto::IceCredentials| format!("{}:{}", c.username, c.password);
    let mut peer_args: Vec<String> = [
        "--private-key",
        &client_key,
        "--peer-public-key",
        &flow.gateway_public_key.to_string(),
        "--psk",
        &flow.preshared_key.expose_base64(),
        "--listen",
        "10.10.0.1:51820",
        "--tun",
        "kh0",
        "--tun-addr",
        &format!("{}/32", tunnel.ipv4),
        "--route",
        "10.20.0.10/32",
        "--route",
        "10.20.0.11/32",
        "--role",
        "initiator",
        "--ice-local",
        &ice(&flow.client_ice),
        "--ice-remote",
        &ice(&flow.gateway_ice),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for c in &gw_cands.candidates {
        peer_args.push("--remote-candidate".into());
        peer_args.push(c.as_str().to_owned());
    }
    let peer = spawn_peer(&client, &peer_args);
    let up = wait_up(&peer, Duration::from_secs(20));
    eprintln!("client ConnectionUp at {up:.3} s (process time)");

    wait_until(Duration::from_secs(10), "ping to the resource", || {
        ping_ok(&client, "10.20.0.10")
    });
    tcp_transfer(&res, &client, "10.20.0.10:7000".parse().unwrap(), 1 << 20);

    // No policy for the other resource: the portal refuses the flow, and
    // packets routed into the tunnel anyway never reach it.
    cws.send(Envelope::request(
        RequestId(2),
        ClientToPortal::RequestFlow(RequestFlow {
            resource_id: r_other.parse::<ResourceId>().unwrap(),
            connected_gateway_ids: vec![flow.gateway_id],
            dns: vec![],
        }),
    ));
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(5), "no flow_failed");
        if let Ok(Message::Text(t)) = cws.0.read()
            && let Ok(Decoded::Known(env)) = decode::<PortalToClient>(t.as_bytes())
            && let PortalToClient::FlowFailed(f) = env.message
        {
            eprintln!("other resource: {:?}", f.reason);
            break;
        }
    }
    for _ in 0..3 {
        assert!(!ping_ok(&client, "10.20.0.11"));
    }
    assert_eq!(
        received(&res, "10.20.0.11"),
        0,
        "unauthorised resource saw packets"
    );

    // Deleting the policy revokes the flow at the gateway.
    api(&gw, &admin, "DELETE", &format!("/policies/{policy}"), "");
    let revoked = Instant::now();
    wait_until(Duration::from_secs(10), "revocation", || {
        !ping_ok(&client, "10.20.0.10")
    });
    eprintln!(
        "traffic cut {:?} after the policy was deleted",
        revoked.elapsed()
    );
    let before = received(&res, "10.20.0.10");
    assert!(!ping_ok(&client, "10.20.0.10"));
    assert_eq!(received(&res, "10.20.0.10"), before);

    gateway.signal(Signal::SIGTERM).unwrap();
    let status = gateway.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        gateway.output_so_far()
    );
    assert!(gw.ip(["link", "show", "kh-gw"]).is_err());
    drop(peer);
    drop(portal);
    let _ = std::fs::remove_dir_all(&data);
}
