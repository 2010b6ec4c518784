//! `keyhole-relay`: STUN/TURN relay (RFC 8489, RFC 8656) with an XDP
//! ChannelData fast path and Prometheus metrics.

mod batch;
pub mod cli;
mod event_loop;
mod listen;
pub mod metrics;
pub mod portal;
mod ports;
pub mod stats;
mod tcp;
pub mod xdp;

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use keyhole_stun::server::ServerConfig;
use tokio::net::TcpListener;

use cli::Args;
use metrics::MetricsSource;
use stats::Stats;
use xdp::{ChannelMirror, FastPath, FastPathCounters, MirrorConfig, XdpMode};

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

/// The public addresses put in XOR-RELAYED-ADDRESS (and registered with
/// the portal), at most one per family.
fn public_ips(args: &Args) -> anyhow::Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let mut public: Vec<IpAddr> = args.public_ip.clone();
    if public.is_empty() {
        let listen = args.listen.ip();
        if listen.is_unspecified() {
            // The IPv6 wildcard is dual-stack: a relayed address per family
            // this host has a route for.
            let families: &[bool] = if listen.is_ipv6() {
                &[false, true]
            } else {
                &[false]
            };
            for &v6 in families {
                if let Some(ip) = outbound_ip(v6) {
                    tracing::warn!(%ip, "no --public-ip given, using the outbound address");
                    public.push(ip);
                }
            }
            if public.is_empty() {
                bail!(
                    "listening on an unspecified address and no route to guess the public IP from: pass --public-ip"
                );
            }
        } else {
            public.push(listen);
        }
    }
    let (mut v4, mut v6) = (None, None);
    for ip in &public {
        match ip {
            IpAddr::V4(a) if v4.is_none() => v4 = Some(*a),
            IpAddr::V6(a) if v6.is_none() => v6 = Some(*a),
            _ => bail!("--public-ip takes at most one address per family"),
        }
    }
    Ok((v4, v6))
}

fn config(args: &Args, auth_secret: &[u8]) -> anyhow::Result<ServerConfig> {
    if args.min_port > args.max_port {
        bail!(
            "--min-port {} is above --max-port {}",
            args.min_port,
            args.max_port
        );
    }
    let mut c = ServerConfig::new(&args.realm, auth_secret, random_secret()?);
    (c.relay_ipv4, c.relay_ipv6) = public_ips(args)?;
    c.own_addrs = [args.listen.ip()]
        .into_iter()
        .chain(args.relay_ip.iter().copied())
        .collect();
    c.allow_loopback_peers = args.allow_loopback_peers;
    c.user_quota = args.user_quota;
    c.total_quota = args.total_quota;
    Ok(c)
}

/// The local IPv4 addresses rewritten datagrams leave from.
fn mirror_config(args: &Args, bind: &[IpAddr]) -> MirrorConfig {
    let v4 = |ip: &IpAddr| match ip {
        IpAddr::V4(a) if !a.is_unspecified() => Some(*a),
        _ => None,
    };
    MirrorConfig {
        listen_addr: v4(&args.listen.ip()),
        relay_addr: bind.iter().find_map(v4),
    }
}

/// Attaches the fast path if asked to; on failure says so and returns
/// `None` (the relay then runs userspace-only).
fn start_fast_path(args: &Args) -> Option<(FastPath, FastPathCounters)> {
    if args.xdp_mode == XdpMode::Off || args.xdp_iface.is_empty() {
        tracing::info!("XDP fast path off: relaying in userspace only");
        return None;
    }
    match FastPath::attach(&args.xdp_iface, args.xdp_mode, args.listen) {
        Ok(fp) => {
            for iface in &args.xdp_iface {
                // bpf_fib_lookup refuses to route packets that arrive on an
                // interface with forwarding off (per family).
                for family in ["ipv4", "ipv6"] {
                    let path = format!("/proc/sys/net/{family}/conf/{iface}/forwarding");
                    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
                        tracing::warn!(
                            iface,
                            "net.{family}.conf.{iface}.forwarding is 0: the XDP FIB lookup needs \
                             it on, until then every {family} datagram is relayed in userspace"
                        );
                    }
                }
            }
            Some(fp)
        }
        Err(e) => {
            tracing::error!(error = %e, "XDP fast path could not attach: relaying in userspace only");
            None
        }
    }
}

/// Runs the relay until a fatal error.
pub async fn run(mut args: Args) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::default());
    let (listener, listen) = listen::bind_udp_or_v4(args.listen)
        .with_context(|| format!("binding UDP {}", args.listen))?;
    args.listen = listen;
    let secret = match (&args.portal_url, &args.static_auth_secret) {
        (Some(url), _) => {
            let Some(token) = args.token.clone() else {
                bail!("--portal-url needs a relay token (--token or KEYHOLE_TOKEN)");
            };
            let (public_ipv4, public_ipv6) = public_ips(&args)?;
            let reg = portal::Registration {
                portal_url: url.clone(),
                token,
                public_ipv4,
                public_ipv6,
                port: args.listen.port(),
                heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
            };
            let (secret, _keepalive) = portal::start(reg, stats.clone()).await?;
            secret.expose().as_bytes().to_vec()
        }
        (None, Some(s)) => s.as_bytes().to_vec(),
        (None, None) => bail!("pass --portal-url (with KEYHOLE_TOKEN) or --static-auth-secret"),
    };
    let config = config(&args, &secret)?;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    if !args.no_tcp {
        let tcp = listen::bind_tcp(args.listen)
            .with_context(|| format!("binding TCP {}", args.listen))?;
        tokio::spawn(tcp::accept(tcp, tx.clone()));
    }
    let mut bind = args.relay_ip.clone();
    if bind.is_empty() && !args.listen.ip().is_unspecified() {
        bind.push(args.listen.ip());
    }
    let (fast_path, fast_counters) = match start_fast_path(&args) {
        Some((fp, counters)) => (Some(fp), Some(counters)),
        None => (None, None),
    };
    if let Some(addr) = args.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics listener {addr}"))?;
        let source = Arc::new(MetricsSource {
            stats: stats.clone(),
            fast_path: fast_counters,
        });
        tracing::info!(%addr, "metrics at /metrics");
        tokio::spawn(metrics::serve(listener, source));
    }
    let mirror = ChannelMirror::new(mirror_config(&args, &bind));
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
        fast_path = fast_path.is_some(),
        "keyhole-relay listening"
    );
    let fast = event_loop::FastPathSync { fast_path, mirror };
    let offload = !args.no_udp_offload;
    event_loop::run(config, listener, offload, ports, rx, stats, fast).await
}
