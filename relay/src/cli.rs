//! Command-line options, named like coturn's where they mean the same.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;

use crate::xdp::XdpMode;

/// Keyhole relay: STUN/TURN server (RFC 8489, RFC 8656) with long-term
/// credentials derived from a shared secret (coturn's `use-auth-secret`).
#[derive(Debug, Parser)]
#[command(name = "keyhole-relay", version)]
pub struct Args {
    /// UDP and TCP address to listen on. The IPv6 wildcard (the default)
    /// takes IPv4 clients too; on a host without IPv6 it falls back to
    /// 0.0.0.0.
    #[arg(long, env = "KEYHOLE_RELAY_LISTEN", default_value = "[::]:3478")]
    pub listen: SocketAddr,
    /// Public address(es) put in XOR-RELAYED-ADDRESS, at most one per family.
    /// Defaults to the listen address, or the outbound address if that is unspecified.
    #[arg(
        long = "public-ip",
        env = "KEYHOLE_RELAY_PUBLIC_IP",
        value_delimiter = ','
    )]
    pub public_ip: Vec<IpAddr>,
    /// Local address(es) relay sockets bind to (default: the listen IP, or any).
    #[arg(
        long = "relay-ip",
        env = "KEYHOLE_RELAY_RELAY_IP",
        value_delimiter = ','
    )]
    pub relay_ip: Vec<IpAddr>,
    #[arg(long, env = "KEYHOLE_RELAY_REALM", default_value = "keyhole")]
    pub realm: String,
    /// Shared secret TURN passwords are derived from. Not needed with
    /// `--portal-url`: the portal hands the relay its secret.
    #[arg(
        long = "static-auth-secret",
        env = "KEYHOLE_RELAY_SECRET",
        hide_env_values = true,
        required_unless_present = "portal_url"
    )]
    pub static_auth_secret: Option<String>,
    /// Register with this portal (http(s):// or ws(s)://), receive the TURN
    /// secret from it and report load to it.
    #[arg(long = "portal-url", env = "KEYHOLE_PORTAL_URL", requires = "token")]
    pub portal_url: Option<String>,
    /// Relay token issued by the portal (with `--portal-url`).
    #[arg(long, env = "KEYHOLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How often load is reported to the portal.
    #[arg(long = "heartbeat-secs", default_value_t = 30)]
    pub heartbeat_secs: u64,
    #[arg(
        long = "min-port",
        env = "KEYHOLE_RELAY_MIN_PORT",
        default_value_t = 49152
    )]
    pub min_port: u16,
    #[arg(
        long = "max-port",
        env = "KEYHOLE_RELAY_MAX_PORT",
        default_value_t = 65535
    )]
    pub max_port: u16,
    /// Allow peers on loopback and on the relay's own addresses.
    #[arg(
        long = "allow-loopback-peers",
        env = "KEYHOLE_RELAY_ALLOW_LOOPBACK_PEERS"
    )]
    pub allow_loopback_peers: bool,
    /// Allocations one username may hold at once.
    #[arg(long = "user-quota", default_value_t = 32)]
    pub user_quota: usize,
    /// Allocations the relay holds at once.
    #[arg(long = "total-quota", default_value_t = 10_000)]
    pub total_quota: usize,
    /// Do not listen on TCP.
    #[arg(long = "no-tcp")]
    pub no_tcp: bool,
    /// Send and receive UDP datagram by datagram: no UDP GSO for runs of
    /// equal-size datagrams to one destination, no UDP GRO on the listener.
    #[arg(long = "no-udp-offload", env = "KEYHOLE_RELAY_NO_UDP_OFFLOAD")]
    pub no_udp_offload: bool,
    /// Interface(s) to attach the XDP ChannelData fast path to (those
    /// client and peer traffic arrive on). None: userspace only.
    #[arg(
        long = "xdp-iface",
        env = "KEYHOLE_RELAY_XDP_IFACE",
        value_delimiter = ','
    )]
    pub xdp_iface: Vec<String>,
    /// XDP attach mode: native, generic, off, or auto (native, else generic).
    #[arg(
        long = "xdp-mode",
        env = "KEYHOLE_RELAY_XDP_MODE",
        default_value = "auto"
    )]
    pub xdp_mode: XdpMode,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long = "metrics-listen", env = "KEYHOLE_RELAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}
