//! A scripted portal for the VM scenario `kernel-ice` (xtask/src/vm): it
//! accepts one gateway WebSocket, sends `init` and one `authorize_flow`
//! for a client whose keys and ICE credentials come from flags, passes the
//! client's candidate, and prints what the gateway answers, one line each:
//!
//! ```text
//! connected backend=kernel
//! flow_authorized
//! gateway_candidate candidate:…
//! ```
//!
//! It then keeps the connection (reading heartbeats) until killed. The
//! client itself is a real keyhole-tunnel-peer started by the script.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use keyhole_proto::messages::{
    AuthorizeFlow, ClientCandidates, GatewayInit, GatewayToPortal, PortalToGateway,
};
use keyhole_proto::{
    ClientId, Decoded, Envelope, FlowId, GatewayId, IceCredentials, PresharedKey, PublicKey,
    RelayId, RelayInfo, RequestId, Resource, ResourceId, SiteId, TunnelAddresses, TurnCredentials,
    TurnSecret, decode, turn_password,
};
use tokio_tungstenite::tungstenite::{
    self, Message,
    handshake::server::{Request, Response},
};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    token: String,
    #[arg(long)]
    client_public_key: PublicKey,
    #[arg(long)]
    psk: PresharedKey,
    /// `ufrag:password` of the client and of the gateway.
    #[arg(long)]
    client_ice: String,
    #[arg(long)]
    gateway_ice: String,
    /// The client's tunnel IPv4 address (its IPv6 one is fd00::<last octet>).
    #[arg(long)]
    client_tunnel: std::net::Ipv4Addr,
    /// The resource (an IP) the client may reach, ICMP only.
    #[arg(long)]
    resource: std::net::IpAddr,
    /// Authorise any protocol to the resource instead of ICMP only (the
    /// `backend-throughput` benchmark runs TCP through it).
    #[arg(long)]
    any_protocol: bool,
    /// A client candidate (SDP), repeatable.
    #[arg(long = "client-candidate")]
    client_candidates: Vec<String>,
    /// A TURN relay (IPv4 `ip:port`) announced in `init`, with the shared
    /// secret its REST credentials derive from.
    #[arg(long, requires = "relay_secret")]
    relay: Option<std::net::SocketAddrV4>,
    #[arg(long)]
    relay_secret: Option<String>,
}

fn creds(s: &str) -> Result<IceCredentials> {
    let (u, p) = s
        .split_once(':')
        .context("credentials are ufrag:password")?;
    IceCredentials::new(u.into(), p.into()).map_err(anyhow::Error::msg)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// tungstenite's handshake callback type fixes the large error.
#[allow(clippy::result_large_err)]
fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)?;
    let (stream, _) = listener.accept()?;
    let mut query = String::new();
    let mut auth = String::new();
    let mut ws = tungstenite::accept_hdr(stream, |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or_default().to_owned();
        auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(resp)
    })
    .map_err(|e| anyhow::anyhow!("WebSocket handshake: {e}"))?;
    if auth != format!("Bearer {}", args.token) {
        bail!("wrong bearer token");
    }
    let backend = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("backend="))
        .unwrap_or("?");
    say(&format!("connected backend={backend}"));

    // No filters means any protocol.
    let filters = if args.any_protocol {
        "[]"
    } else {
        r#"[{"protocol":"icmp"}]"#
    };
    let resource: Resource = serde_json::from_str(&format!(
        r#"{{"id":"{}","name":"r1","address":{{"kind":"ip","ip":"{}"}},"filters":{filters}}}"#,
        ResourceId::from_u128(1),
        args.resource
    ))?;
    let now: DateTime<Utc> = SystemTime::now().into();
    let mut relays = Vec::new();
    if let (Some(server), Some(secret)) = (args.relay, &args.relay_secret) {
        let expires_at = now + chrono::TimeDelta::hours(1);
        let username = format!("{}:gateway", expires_at.timestamp());
        let secret = TurnSecret::try_from(secret.clone()).map_err(anyhow::Error::msg)?;
        relays.push(RelayInfo {
            id: RelayId::from_u128(9),
            ipv4: Some(server),
            ipv6: None,
            credentials: TurnCredentials {
                password: turn_password(&secret, &username),
                username,
                expires_at,
            },
        });
    }
    let mut send = |env: Envelope<PortalToGateway>| -> Result<()> {
        ws.send(Message::text(env.encode()?))?;
        Ok(())
    };
    send(Envelope::new(PortalToGateway::Init(GatewayInit {
        gateway_id: GatewayId::from_u128(7),
        site_id: SiteId::from_u128(1),
        tunnel_addresses: TunnelAddresses::new("100.64.0.1".parse()?, "fd00::1".parse()?)
            .map_err(anyhow::Error::msg)?,
        resources: vec![resource.clone()],
        relays,
    })))?;
    let client_id = ClientId::from_u128(5);
    let v4 = args.client_tunnel;
    send(Envelope::request(
        RequestId(1),
        PortalToGateway::AuthorizeFlow(AuthorizeFlow {
            flow_id: FlowId::from_u128(100),
            client_id,
            client_public_key: args.client_public_key,
            preshared_key: args.psk.clone(),
            client_tunnel_addresses: TunnelAddresses::new(
                v4,
                format!("fd00::{}", v4.octets()[3]).parse()?,
            )
            .map_err(anyhow::Error::msg)?,
            resource,
            client_ice: creds(&args.client_ice)?,
            gateway_ice: creds(&args.gateway_ice)?,
            expires_at: now + chrono::TimeDelta::seconds(600),
            dns: vec![],
        }),
    ))?;
    let candidates = args
        .client_candidates
        .iter()
        .map(|c| c.clone().try_into())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    send(Envelope::new(PortalToGateway::IceCandidates(
        ClientCandidates {
            client_id,
            candidates,
        },
    )))?;
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => match decode::<GatewayToPortal>(t.as_bytes()) {
                Ok(Decoded::Known(env)) => match env.message {
                    GatewayToPortal::FlowAuthorized(_) => say("flow_authorized"),
                    GatewayToPortal::IceCandidates(c) => {
                        for c in c.candidates {
                            say(&format!("gateway_candidate {}", c.as_str()));
                        }
                    }
                    GatewayToPortal::Heartbeat(_) => {}
                    other => say(&format!("message {other:?}")),
                },
                Ok(_) => {}
                Err(e) => say(&format!("undecodable {e}")),
            },
            Ok(Message::Close(_)) => {
                say("closed");
                return Ok(());
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                say(&format!("error {e}"));
                return Ok(());
            }
        }
    }
}
