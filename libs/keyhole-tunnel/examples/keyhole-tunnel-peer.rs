//! A Keyhole tunnel endpoint without a portal: keys, peer, addresses and
//! remote candidates come from flags (or `@FILE`, one argument per line),
//! so tests can run two real processes, or one against wireguard-go.
//!
//! ```text
//! keyhole-tunnel-peer --private-key B64 --peer-public-key B64 \
//!     --listen 10.0.0.1:51820 --tun kh0 --tun-addr 100.64.0.1/24 \
//!     --route 100.64.0.2/32 --role initiator \
//!     (--static-peer 10.0.0.2:51820 | --ice-local U:P --ice-remote U:P \
//!      --remote-candidate "candidate:1 1 udp 2130706431 10.0.0.2 51820 typ host")
//! ```
//!
//! Prints `READY` once the TUN and socket are up, then `EVENT <secs>
//! <event>` lines on stdout (candidates to signal, connection up/down)
//! until it is killed.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipnet::IpNet;
use keyhole_proto::{IceCandidate, IceCredentials, PresharedKey, PublicKey};
use keyhole_tunnel::io::{ShellConfig, TunOptions, create_tun, spawn_multi};
use keyhole_tunnel::turn::TurnConfig;
use keyhole_tunnel::{ConnectionConfig, Node, NodeConfig, Path, PathKind, Role};
use rand::RngCore;

#[derive(Parser, Debug)]
#[command(name = "keyhole-tunnel-peer")]
struct Args {
    /// This side's WireGuard private key (base64, as `wg genkey` prints).
    #[arg(long)]
    private_key: String,
    #[arg(long)]
    peer_public_key: String,
    #[arg(long)]
    psk: Option<String>,
    /// UDP socket to bind (also this side's host candidate).
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long, default_value = "kh0")]
    tun: String,
    /// Address of the TUN device, with its prefix (repeatable: IPv4 and
    /// IPv6).
    #[arg(long = "tun-addr", required = true)]
    tun_addrs: Vec<IpNet>,
    #[arg(long, default_value_t = 1420)]
    mtu: u16,
    /// Networks routed to the peer (cryptokey routing: also the sources
    /// accepted from it).
    #[arg(long = "route", required = true)]
    routes: Vec<IpNet>,
    #[arg(long, value_parser = ["initiator", "responder"], default_value = "initiator")]
    role: String,
    /// ICE off: the peer's WireGuard endpoint (roams like WireGuard).
    #[arg(long)]
    static_peer: Option<SocketAddr>,
    /// ICE credentials `ufrag:password` of this side and of the peer.
    #[arg(long)]
    ice_local: Option<String>,
    #[arg(long)]
    ice_remote: Option<String>,
    /// A candidate of the peer (SDP `candidate:` line), repeatable.
    #[arg(long = "remote-candidate")]
    remote_candidates: Vec<String>,
    /// A TURN relay: `server:port,username,password`.
    #[arg(long = "relay")]
    relays: Vec<String>,
    /// A TURN relay reached over TCP (for networks that block UDP):
    /// `server:port,username,password`.
    #[arg(long = "relay-tcp")]
    tcp_relays: Vec<String>,
    #[arg(long)]
    keepalive: Option<u16>,
    /// TUN without the virtio-net header offloads (one packet per read).
    #[arg(long)]
    no_offload: bool,
    /// TUN queues (IFF_MULTI_QUEUE when > 1), one thread each.
    #[arg(long, default_value_t = 1)]
    queues: usize,
}

fn creds(s: &str) -> Result<IceCredentials> {
    let (u, p) = s
        .split_once(':')
        .context("ICE credentials are ufrag:password")?;
    IceCredentials::new(u.into(), p.into()).map_err(anyhow::Error::msg)
}

fn key32(b64: &str) -> Result<[u8; 32]> {
    let k: PublicKey = b64.parse().map_err(|e| anyhow::anyhow!("bad key: {e}"))?;
    Ok(*k.as_bytes())
}

fn args() -> Result<Args> {
    let mut argv: Vec<String> = std::env::args().collect();
    if let Some(file) = argv.get(1).and_then(|a| a.strip_prefix('@')) {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let rest: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        argv.splice(1..2, rest);
    }
    Ok(Args::parse_from(argv))
}

/// `server:port,username,password`.
fn relay(spec: &str) -> Result<TurnConfig> {
    let mut parts = spec.splitn(3, ',');
    let (Some(server), Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("a relay is server:port,username,password");
    };
    let server: SocketAddr = server.parse().context("relay address")?;
    Ok(TurnConfig::new(server, user.into(), pass.into()))
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = args()?;
    let started = Instant::now();

    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut config = NodeConfig::new(key32(&args.private_key)?, seed);
    config.failure_timeout = Duration::from_secs(3600);
    let mut node: Node<u8> = Node::new(config);
    let now = Instant::now();
    node.add_host_candidate(args.listen)?;
    for r in &args.relays {
        node.add_relay(now, args.listen, relay(r)?)?;
    }
    let (local_credentials, remote_credentials) = match (&args.ice_local, &args.ice_remote) {
        (Some(l), Some(r)) => (creds(l)?, creds(r)?),
        _ if args.static_peer.is_some() => (node.new_ice_credentials(), node.new_ice_credentials()),
        _ => bail!("give --static-peer, or --ice-local and --ice-remote"),
    };
    let psk = args
        .psk
        .as_deref()
        .map(|p| p.parse::<PresharedKey>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("bad psk: {e}"))?;
    let conn = ConnectionConfig {
        role: if args.role == "initiator" {
            Role::Initiator
        } else {
            Role::Responder
        },
        peer_public_key: args
            .peer_public_key
            .parse()
            .map_err(|e| anyhow::anyhow!("bad peer key: {e}"))?,
        preshared_key: psk,
        local_credentials,
        remote_credentials,
        persistent_keepalive: args.keepalive,
        static_path: args.static_peer.map(|remote| Path {
            local: args.listen,
            remote,
            kind: PathKind::Direct,
        }),
    };
    node.add_connection(now, 1, conn)?;
    for c in &args.remote_candidates {
        let c = IceCandidate::try_from(c.clone()).map_err(anyhow::Error::msg)?;
        node.add_remote_candidate(&1, &c)?;
    }
    for r in &args.routes {
        node.add_route(now, *r, &1)?;
    }

    let mut options = TunOptions::new(&args.tun, args.mtu);
    options.offload = !args.no_offload;
    options.queues = args.queues;
    let tuns = create_tun(&options).context("creating TUN")?;
    for a in &args.tun_addrs {
        let a = a.to_string();
        let mut cmd = vec!["addr", "add", &a, "dev", &args.tun];
        if a.contains(':') {
            // Usable at once, without duplicate address detection.
            cmd.push("nodad");
        }
        ip(&cmd)?;
    }
    ip(&["link", "set", &args.tun, "up"])?;
    for r in &args.routes {
        if !args.tun_addrs.iter().any(|a| a.contains(r)) {
            ip(&["route", "add", &r.to_string(), "dev", &args.tun])?;
        }
    }
    let udp = UdpSocket::bind(args.listen).context("binding UDP")?;
    let handle = spawn_multi(node, udp, tuns, ShellConfig::default())?;
    for r in &args.tcp_relays {
        handle.add_tcp_relay(relay(r)?)?;
    }
    println!("READY {}", args.listen);

    // Events until the process is killed.
    while let Ok(e) = handle.events.recv() {
        println!("EVENT {:.3} {e:?}", started.elapsed().as_secs_f64());
    }
    let stats = handle.stop()?;
    println!("STATS {stats:?}");
    Ok(())
}
