//! What the gateway asks of a WireGuard interface and its peers.

use std::{fmt, net::SocketAddr, time::SystemTime};

use ipnet::IpNet;
use keyhole_proto::{PresharedKey, PublicKey, TunnelAddresses};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The interface's Curve25519 private key. Never printed, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (clamped as X25519 wants).
    pub fn generate() -> Self {
        Self(wireguard_control::Key::generate_private().0)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(wireguard_control::Key(self.0).get_public().0)
    }

    /// Parses `wg genkey` output (base64, surrounding whitespace allowed).
    pub fn from_base64(s: &str) -> Result<Self, keyhole_proto::KeyError> {
        // PresharedKey has the same 32-byte base64 format and wipes itself.
        let k: PresharedKey = s.trim().parse()?;
        Ok(Self(*k.as_bytes()))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// The gateway's tunnel interface.
#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    /// Link name, e.g. `keyhole0`.
    pub name: String,
    pub private_key: PrivateKey,
    /// UDP port WireGuard listens on (ICE shares it, see the README).
    pub listen_port: u16,
    /// The gateway's own tunnel addresses, with prefix length.
    pub addresses: Vec<IpNet>,
    /// Networks routed into the tunnel (the deployment's client ranges),
    /// beyond what the addresses' prefixes already cover.
    pub routes: Vec<IpNet>,
    /// Link MTU; WireGuard's usual 1420 when `None`.
    pub mtu: Option<u32>,
}

/// One client as a WireGuard peer of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// The client's tunnel addresses: the peer's allowed IPs are exactly
    /// their /32 and /128, so a client can only speak as itself.
    pub tunnel: TunnelAddresses,
    /// Where to send to the peer; `None` leaves it to roaming (the client
    /// speaks first) or keeps what the backend learnt.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive in seconds; `None` turns it off.
    pub keepalive: Option<u16>,
}

impl PeerConfig {
    /// The peer's allowed IPs: the client's /32 and /128.
    pub fn allowed_ips(&self) -> [IpNet; 2] {
        [
            IpNet::from(std::net::IpAddr::V4(self.tunnel.ipv4)),
            IpNet::from(std::net::IpAddr::V6(self.tunnel.ipv6)),
        ]
    }
}

/// What a backend reports about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub public_key: PublicKey,
    /// `None` before the first handshake.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The peer's current (possibly roamed) endpoint.
    pub endpoint: Option<SocketAddr>,
}
