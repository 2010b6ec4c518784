//! Server configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Token-bucket limit for replies to unauthenticated requests, per source IP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests a source may send at once.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub realm: String,
    /// The shared secret passwords are derived from (`static-auth-secret`).
    pub auth_secret: Vec<u8>,
    /// Keys nonces; random per process is fine (nonces just go stale on restart).
    pub nonce_secret: [u8; 32],
    /// SOFTWARE attribute added to responses, if any.
    pub software: Option<String>,
    /// Public IPv4 address of relayed transport addresses; `None` refuses IPv4 allocations.
    pub relay_ipv4: Option<Ipv4Addr>,
    /// Public IPv6 address of relayed transport addresses; `None` refuses IPv6 allocations.
    pub relay_ipv6: Option<Ipv6Addr>,
    /// Other addresses of this relay (listeners, local relay IPs), refused as peers.
    pub own_addrs: Vec<IpAddr>,
    /// Permit peers on loopback and on the relay's own addresses (coturn's flag).
    pub allow_loopback_peers: bool,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid before requests get 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    /// Allocations one username may hold at once.
    pub user_quota: usize,
    /// Allocations the server holds at once.
    pub total_quota: usize,
    pub rate_limit: RateLimit,
    /// Accept ChannelBind for RFC 5766's 0x5000–0x7FFF too (coturn's
    /// `turnutils_uclient` picks channels there); RFC 8656 says 400.
    pub legacy_channel_numbers: bool,
}

impl ServerConfig {
    /// RFC defaults: 10-minute allocations (at most 1 hour), 5-minute
    /// permissions, 10-minute channels.
    pub fn new(
        realm: impl Into<String>,
        auth_secret: impl Into<Vec<u8>>,
        nonce_secret: [u8; 32],
    ) -> Self {
        ServerConfig {
            realm: realm.into(),
            auth_secret: auth_secret.into(),
            nonce_secret,
            software: Some(concat!("keyhole-relay ", env!("CARGO_PKG_VERSION")).to_string()),
            relay_ipv4: None,
            relay_ipv6: None,
            own_addrs: Vec::new(),
            allow_loopback_peers: false,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            user_quota: 32,
            total_quota: 10_000,
            rate_limit: RateLimit {
                burst: 32,
                per_second: 16.0,
            },
            legacy_channel_numbers: true,
        }
    }
}
