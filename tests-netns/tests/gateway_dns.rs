//! DNS resources end to end: the real `keyhole-gateway` binary (userspace
//! backend) with a scripted portal sends `authorize_flow` with proxy-IP
//! assignments; the gateway resolves the names at a DNS server this test
//! runs (hand-rolled, real UDP packets) and translates proxy IP → real IP
//! for that client with nftables. The client is a real keyhole-tunnel-peer.
//!
//! ```text
//!  client 10.10.0.1 ── 10.10.0.2 gateway 10.20.0.1 ── 10.20.0.10/.11 res, DNS on .53
//!  tunnel 100.64.0.5, proxy IPs 100.96.0.0/24 routed into the tunnel
//! ```
//!
//! Needs root, `cargo build -p keyhole-gateway` and `cargo build -p
//! keyhole-tunnel --features io --example keyhole-tunnel-peer`.

#[path = "tunnel_common.rs"]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use common::*;
use keyhole_proto::messages::{
    AuthorizeFlow, ClientCandidates, GatewayInit, GatewayToPortal, PortalToGateway, Revoke,
    RevokeTarget,
};
use keyhole_proto::{
    ClientId, Decoded, DnsProxyAssignment, Envelope, FlowId, GatewayId, IceCredentials,
    PresharedKey, PublicKey, RequestId, Resource, ResourceId, SiteId, TunnelAddresses, decode,
};
use keyhole_tests_netns::{Netns, veth};
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

const CLIENT_ICE: &str = "cliufrag:clientpasswordclientpassword";
const GATEWAY_ICE: &str = "gwufragg:gatewaypasswordgatewaypassword";

fn creds(s: &str) -> IceCredentials {
    let (u, p) = s.split_once(':').unwrap();
    IceCredentials::new(u.into(), p.into()).unwrap()
}

fn now() -> DateTime<Utc> {
    SystemTime::now().into()
}

/// A scripted portal for one gateway connection.
struct Portal {
    ws: WebSocket<TcpStream>,
    query: String,
    next_id: u64,
}

impl Portal {
    fn accept(listener: &TcpListener) -> Portal {
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed() < Duration::from_secs(20), "no gateway");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut query = String::new();
        #[allow(clippy::result_large_err)]
        let cb = |req: &tungstenite::handshake::server::Request,
                  resp: tungstenite::handshake::server::Response| {
            query = req.uri().query().unwrap_or_default().to_owned();
            Ok(resp)
        };
        let ws = tungstenite::accept_hdr(stream, cb).unwrap();
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Portal {
            ws,
            query,
            next_id: 0,
        }
    }

    fn gateway_public_key(&self) -> PublicKey {
        let v = self
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("public_key="))
            .unwrap();
        v.replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=")
            .parse()
            .unwrap()
    }

    fn send(&mut self, env: Envelope<PortalToGateway>) {
        self.ws.send(Message::text(env.encode().unwrap())).unwrap();
    }

    fn request(&mut self, msg: PortalToGateway) {
        self.next_id += 1;
        self.send(Envelope::request(RequestId(self.next_id), msg));
    }

    fn expect(&mut self, what: &str, mut pred: impl FnMut(&GatewayToPortal) -> bool) {
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < Duration::from_secs(10), "no {what}");
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    if let Decoded::Known(env) = decode::<GatewayToPortal>(t.as_bytes()).unwrap()
                        && pred(&env.message)
                    {
                        return;
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

/// A minimal authoritative DNS server: A records from `records` (TTL
/// `ttl`), NOERROR with no answer for other types, NXDOMAIN for unknown
/// names. Counts the A queries per name.
struct DnsServer {
    records: Arc<Mutex<HashMap<String, Ipv4Addr>>>,
    queries: Arc<Mutex<HashMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    fn start(ns: &Netns, addr: SocketAddr, ttl: u32) -> DnsServer {
        let sock = ns.enter(|| UdpSocket::bind(addr)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let records: Arc<Mutex<HashMap<String, Ipv4Addr>>> = Arc::default();
        let queries: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, q, s) = (records.clone(), queries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &r, &q, ttl) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            records,
            queries,
            stop,
        }
    }

    fn set(&self, name: &str, ip: Ipv4Addr) {
        self.records.lock().unwrap().insert(name.into(), ip);
    }

    fn queries(&self, name: &str) -> u64 {
        self.queries.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Builds the reply to one query packet (`None` if it is not one).
fn answer(
    q: &[u8],
    records: &Mutex<HashMap<String, Ipv4Addr>>,
    queries: &Mutex<HashMap<String, u64>>,
    ttl: u32,
) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    // QNAME labels.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let record = records.lock().unwrap().get(&name).copied();
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[0..2]); // id
    let rcode = if record.is_some() { 0 } else { 3 };
    r.extend_from_slice(&[0x84 | (q[2] & 0x01), rcode]); // QR AA RD, rcode
    let an = u16::from(record.is_some() && qtype == 1);
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&an.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..question_end)?);
    if let (Some(ip), 1) = (record, qtype) {
        *queries.lock().unwrap().entry(name).or_default() += 1;
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// A TCP listener in `ns` at `addr` that answers each connection with the
/// peer address it saw.
fn tcp_who(ns: &Netns, addr: SocketAddr) -> Arc<AtomicU64> {
    let listener = ns.enter(|| TcpListener::bind(addr)).unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            a.fetch_add(1, Ordering::Relaxed);
            let peer = s
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = s.write_all(peer.as_bytes());
        }
    });
    accepted
}

fn tcp_ask(ns: &Netns, addr: SocketAddr) -> Option<String> {
    let mut s = ns
        .enter(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn forward_drops(gw: &Netns) -> u64 {
    let out = gw
        .run("nft", ["list", "chain", "inet", "keyhole_gw", "forward"])
        .unwrap();
    out.lines()
        .filter(|l| l.contains("@dns_proxy_v4"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|w| *w == "packets");
            w.next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn dns_resource_reaches_the_resolved_address_through_its_proxy_ip() {
    let client = Netns::new("gdc").unwrap();
    let gw = Netns::new("gdg").unwrap();
    let res = Netns::new("gdr").unwrap();
    veth(&client, "eth0", "10.10.0.1/24", &gw, "eth0", "10.10.0.2/24").unwrap();
    veth(&gw, "eth1", "10.20.0.1/24", &res, "eth0", "10.20.0.10/24").unwrap();
    res.add_addr("eth0", "10.20.0.11/24").unwrap();
    res.add_addr("eth0", "10.20.0.53/24").unwrap();
    res.run_with_stdin(
        "nft",
        ["-f", "-"],
        b"table inet probe {\n chain input {\n type filter hook input priority 0;\n \
          ip daddr 10.20.0.10 counter\n ip daddr 10.20.0.11 counter\n }\n}\n",
    )
    .unwrap();
    let dns = DnsServer::start(&res, "10.20.0.53:53".parse().unwrap(), 2);
    dns.set("wiki.corp", "10.20.0.10".parse().unwrap());
    let accepted10 = tcp_who(&res, "10.20.0.10:7000".parse().unwrap());
    let accepted11 = tcp_who(&res, "10.20.0.11:7000".parse().unwrap());

    let listener = gw.enter(|| TcpListener::bind("127.0.0.1:0")).unwrap();
    let portal_addr = listener.local_addr().unwrap();
    let gw_bin = built_binary(
        "keyhole-gateway",
        Some("KEYHOLE_GATEWAY_BIN"),
        "`cargo build -p keyhole-gateway`",
    );
    let state = std::env::temp_dir().join(format!("keyhole-gwdns-state-{}", std::process::id()));
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
            "--dns-server",
            "10.20.0.53:53",
            "--state-dir",
            &state.to_string_lossy(),
        ]
        .map(String::from),
    );
    cmd.env("KEYHOLE_TOKEN", "t")
        .env("RUST_LOG", "info,keyhole_gateway=debug");
    let mut gateway = gw.spawn_command(cmd).unwrap();
    let mut portal = Portal::accept(&listener);
    let gw_key = portal.gateway_public_key();

    let r: Resource = serde_json::from_str(&format!(
        r#"{{"id":"{}","name":"wiki","address":{{"kind":"dns","pattern":"*.corp"}},"filters":[{{"protocol":"icmp"}},{{"protocol":"tcp","ports":{{"start":7000,"end":7000}}}}]}}"#,
        ResourceId::from_u128(1)
    ))
    .unwrap();
    portal.send(Envelope::new(PortalToGateway::Init(GatewayInit {
        gateway_id: GatewayId::from_u128(7),
        site_id: SiteId::from_u128(1),
        tunnel_addresses: TunnelAddresses::new(
            "100.64.0.1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
        )
        .unwrap(),
        resources: vec![r.clone()],
        relays: vec![],
    })));

    let (client_key, client_pub) = keypair(&client);
    let psk = client.run("wg", ["genpsk"]).unwrap().trim().to_string();
    let client_tunnel =
        TunnelAddresses::new("100.64.0.5".parse().unwrap(), "fd00::5".parse().unwrap()).unwrap();
    let client_id = ClientId::from_u128(5);
    let flow_id = FlowId::from_u128(100);
    let assign = |name: &str, ip: &str| DnsProxyAssignment {
        name: name.into(),
        proxy_ips: vec![ip.parse().unwrap()],
    };
    portal.request(PortalToGateway::AuthorizeFlow(AuthorizeFlow {
        flow_id,
        client_id,
        client_public_key: client_pub.parse().unwrap(),
        preshared_key: psk.parse::<PresharedKey>().unwrap(),
        client_tunnel_addresses: client_tunnel,
        resource: r,
        client_ice: creds(CLIENT_ICE),
        gateway_ice: creds(GATEWAY_ICE),
        expires_at: now() + chrono::TimeDelta::seconds(300),
        // 100.96.0.3's name does not exist; 100.96.0.2 is nobody's.
        dns: vec![
            assign("wiki.corp", "100.96.0.1"),
            assign("missing.corp", "100.96.0.3"),
        ],
    }));
    portal.expect("flow_authorized", |m| {
        matches!(m, GatewayToPortal::FlowAuthorized(_))
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
        "100.96.0.0/24",
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
    let peer = spawn_peer(&client, &peer_args);
    wait_up(&peer, Duration::from_secs(20));

    // The proxy IP leads to the name's address, NATed on the way.
    let t0 = Instant::now();
    wait_until(Duration::from_secs(10), "ping via the proxy IP", || {
        ping_ok(&client, "100.96.0.1")
    });
    eprintln!("first ping through the proxy IP after {:?}", t0.elapsed());
    assert!(received(&res, "10.20.0.10") > 0);
    assert_eq!(
        tcp_ask(&client, "100.96.0.1:7000".parse().unwrap()).as_deref(),
        Some("10.20.0.1"),
        "TCP via the proxy IP should reach 10.20.0.10 from the gateway's address"
    );
    assert_eq!(accepted10.load(Ordering::Relaxed), 1);
    let map = gw
        .run("nft", ["list", "map", "inet", "keyhole_gw", "dns_v4"])
        .unwrap();
    assert!(
        map.contains("100.64.0.5 . 100.96.0.1 : 10.20.0.10"),
        "{map}"
    );

    // Unassigned: the filter has no authorisation for it. Assigned but
    // unresolvable: dropped in forward, never routed as a proxy IP.
    let drops = forward_drops(&gw);
    assert!(!ping_ok(&client, "100.96.0.2"));
    assert!(!ping_ok(&client, "100.96.0.3"));
    assert!(tcp_ask(&client, "100.96.0.3:7000".parse().unwrap()).is_none());
    assert!(
        forward_drops(&gw) > drops,
        "the untranslated pair was not dropped"
    );
    assert!(dns.queries("wiki.corp") >= 1);

    // TTL 2 s: the gateway asks again and picks up a changed address for
    // new connections.
    let q = dns.queries("wiki.corp");
    dns.set("wiki.corp", "10.20.0.11".parse().unwrap());
    wait_until(Duration::from_secs(10), "a refresh at the TTL", || {
        dns.queries("wiki.corp") > q
    });
    wait_until(Duration::from_secs(10), "the new address in use", || {
        tcp_ask(&client, "100.96.0.1:7000".parse().unwrap()).is_some()
            && accepted11.load(Ordering::Relaxed) > 0
    });
    let before10 = received(&res, "10.20.0.10");
    assert!(ping_ok(&client, "100.96.0.1"));
    assert!(received(&res, "10.20.0.11") > 0);
    assert_eq!(received(&res, "10.20.0.10"), before10);

    // Revocation takes the translation away.
    portal.send(Envelope::new(PortalToGateway::Revoke(Revoke {
        target: RevokeTarget::Flow { flow_id },
    })));
    wait_until(Duration::from_secs(5), "revocation", || {
        !ping_ok(&client, "100.96.0.1")
    });
    wait_until(Duration::from_secs(5), "the map to empty", || {
        !gw.run("nft", ["list", "map", "inet", "keyhole_gw", "dns_v4"])
            .unwrap()
            .contains("100.96.0.1")
    });

    drop(peer);
    gateway.signal(Signal::SIGTERM).unwrap();
    let status = gateway.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        gateway.output_so_far()
    );
    let _ = std::fs::remove_dir_all(&state);
}
