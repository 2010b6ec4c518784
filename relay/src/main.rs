//! `keyhole-relay`: STUN/TURN relay.

mod cli;
mod event_loop;
mod ports;
mod tcp;

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use clap::Parser;
use keyhole_stun::server::ServerConfig;
use tokio::net::{TcpListener, UdpSocket};

use cli::Args;

/// The address this host would use toward the internet (no packet is sent).
fn outbound_ip(v6: bool) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v6 {
        ("[::]:0".parse().ok()?, "[2001:db8::1]:9".parse().ok()?)
    } else {
        ("0.0.0.0:0".parse().ok()?, "192.0.2.1:9".parse().ok()?)
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(probe).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn random_secret() -> anyhow::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("reading /dev/urandom")?;
    Ok(secret)
}

fn config(args: &Args) -> anyhow::Result<ServerConfig> {
    if args.min_port > args.max_port {
        bail!(
            "--min-port {} is above --max-port {}",
            args.min_port,
            args.max_port
        );
    }
    let mut public: Vec<IpAddr> = args.public_ip.clone();
    if public.is_empty() {
        let listen = args.listen.ip();
        if listen.is_unspecified() {
            let ip = outbound_ip(listen.is_ipv6()).context(
                "listening on an unspecified address and no route to guess the public IP from: pass --public-ip",
            )?;
            tracing::warn!(%ip, "no --public-ip given, using the outbound address");
            public.push(ip);
        } else {
            public.push(listen);
        }
    }
    let mut c = ServerConfig::new(
        &args.realm,
        args.static_auth_secret.as_bytes(),
        random_secret()?,
    );
    for ip in &public {
        match ip {
            IpAddr::V4(v4) if c.relay_ipv4.is_none() => c.relay_ipv4 = Some(*v4),
            IpAddr::V6(v6) if c.relay_ipv6.is_none() => c.relay_ipv6 = Some(*v6),
            _ => bail!("--public-ip takes at most one address per family"),
        }
    }
    c.own_addrs = [args.listen.ip()]
        .into_iter()
        .chain(args.relay_ip.iter().copied())
        .collect();
    c.allow_loopback_peers = args.allow_loopback_peers;
    c.user_quota = args.user_quota;
    c.total_quota = args.total_quota;
    Ok(c)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = config(&args)?;
    let listener = UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("binding UDP {}", args.listen))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    if !args.no_tcp {
        let tcp = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding TCP {}", args.listen))?;
        tokio::spawn(tcp::accept(tcp, tx.clone()));
    }
    let mut bind = args.relay_ip.clone();
    if bind.is_empty() && !args.listen.ip().is_unspecified() {
        bind.push(args.listen.ip());
    }
    let ports = ports::SocketPorts::new(
        args.min_port..=args.max_port,
        &bind,
        config.relay_ipv4.map(IpAddr::V4),
        config.relay_ipv6.map(IpAddr::V6),
        tx,
    );
    tracing::info!(
        listen = %args.listen,
        realm = %args.realm,
        relay_v4 = ?config.relay_ipv4,
        relay_v6 = ?config.relay_ipv6,
        ports = %format!("{}-{}", args.min_port, args.max_port),
        "keyhole-relay listening"
    );
    event_loop::run(config, listener, ports, rx).await
}
