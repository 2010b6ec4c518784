//! The data a [`Node`](crate::Node) takes in and hands out.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use keyhole_proto::{IceCandidate, IceCredentials, PresharedKey, PublicKey};

/// A datagram to send: from the local socket `source`, to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: P,
}

/// Something that arrived for the node.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A UDP datagram received on the local socket `local` from `from`.
    Network {
        local: SocketAddr,
        from: SocketAddr,
        datagram: &'a [u8],
    },
    /// An IP packet read from the TUN device.
    Tun(&'a [u8]),
}

/// The immediate result of one input, written into the caller's buffer
/// (the hot path: no allocation, no queue).
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'b, K> {
    /// Send this datagram now.
    Transmit(Transmit<&'b [u8]>),
    /// Write this decrypted IP packet, received on connection `conn`, to TUN.
    Tun { conn: K, packet: &'b [u8] },
    /// A datagram the peer of ICE-only connection `conn` sent to our
    /// relayed address, unwrapped from TURN: hand it to whatever carries
    /// that connection's traffic (the kernel's WireGuard).
    Relayed { conn: K, datagram: &'b [u8] },
}

/// Whether traffic goes straight to the peer or through a TURN relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    Direct,
    Relayed,
}

/// The pair of sockets ICE nominated for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub kind: PathKind,
}

/// Something the node tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<K> {
    /// A local candidate for `conn`: signal it to the peer.
    LocalCandidate { conn: K, candidate: IceCandidate },
    /// This side restarted ICE for `conn` with new credentials: signal them
    /// to the peer (its candidates follow as `LocalCandidate`s).
    IceRestart {
        conn: K,
        credentials: IceCredentials,
    },
    /// `conn` carries traffic over `path` (again, or over a new path).
    ConnectionUp { conn: K, path: Path },
    /// `conn` lost its path; packets are buffered while ICE recovers.
    ConnectionDown { conn: K },
    /// `conn` could not be (re)established in time and has been removed
    /// with its routes; a later packet to its destinations asks for
    /// authorisation again.
    ConnectionFailed { conn: K },
    /// A packet to `dst` has no route: ask the portal for an authorisation.
    /// Repeated at most every [`NodeConfig::authorization_retry`] per
    /// destination while packets keep coming.
    NeedAuthorization { dst: IpAddr },
}

/// Which end of a connection this node is. The initiator (client) is ICE
/// controlling and starts the WireGuard handshake; the responder (gateway)
/// is ICE controlled and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// What the authorisation says about one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub role: Role,
    pub peer_public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub local_credentials: IceCredentials,
    pub remote_credentials: IceCredentials,
    /// WireGuard persistent keepalive in seconds (boringtun's own timer).
    pub persistent_keepalive: Option<u16>,
    /// Skip ICE and use this path from the start, roaming to wherever
    /// authenticated WireGuard packets come from (plain WireGuard
    /// behaviour, for peers that do not speak ICE, e.g. wireguard-go).
    pub static_path: Option<Path>,
}

/// An ICE-only connection ([`Node::add_ice_connection`](crate::Node::add_ice_connection)):
/// ICE finds and keeps a path, nothing is encrypted. For a gateway whose
/// WireGuard runs in the kernel: it points the kernel peer's endpoint at
/// the path `ConnectionUp` reports.
#[derive(Debug, Clone)]
pub struct IceConnectionConfig {
    pub role: Role,
    pub local_credentials: IceCredentials,
    pub remote_credentials: IceCredentials,
}

/// Node-wide settings. Durations are on the caller's clock (`now`).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's WireGuard static private key.
    pub private_key: [u8; 32],
    /// Seed of the node's RNG (ICE credentials on restart, tie-breakers,
    /// WireGuard indices). Production passes OS randomness.
    pub rng_seed: [u8; 32],
    /// Packets held per connection while it is not up.
    pub buffer_packets: usize,
    /// Destinations without a route whose packets are held, and packets
    /// held per such destination.
    pub pending_destinations: usize,
    pub pending_packets: usize,
    /// How long packets without a route are held.
    pub pending_timeout: Duration,
    /// Minimum gap between two `NeedAuthorization` for one destination.
    pub authorization_retry: Duration,
    /// WireGuard handshake retransmission while the connection is not up.
    pub handshake_retry: Duration,
    /// How long a connection may take to come up, or stay down, before it
    /// fails and is removed.
    pub failure_timeout: Duration,
    /// Gap between ICE restarts the initiator tries while a path is dead.
    pub ice_restart_interval: Duration,
    /// How often boringtun's timers (rekey, keepalive) are driven.
    pub wireguard_tick: Duration,
    /// Handshakes per second across all peers before cookies are demanded.
    pub handshake_rate_limit: u64,
}

impl NodeConfig {
    pub fn new(private_key: [u8; 32], rng_seed: [u8; 32]) -> Self {
        Self {
            private_key,
            rng_seed,
            buffer_packets: 128,
            pending_destinations: 256,
            pending_packets: 16,
            pending_timeout: Duration::from_secs(10),
            authorization_retry: Duration::from_secs(2),
            handshake_retry: Duration::from_secs(5),
            failure_timeout: Duration::from_secs(60),
            ice_restart_interval: Duration::from_secs(10),
            wireguard_tick: Duration::from_secs(1),
            handshake_rate_limit: 100,
        }
    }
}

/// What the node knows about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub up: bool,
    pub path: Option<Path>,
    pub wireguard_established: bool,
    pub buffered: usize,
    /// Packets dropped because the buffer was full.
    pub buffer_dropped: u64,
    /// WireGuard payload bytes sent and received (0 for ICE-only).
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Time since the last completed WireGuard handshake, if any.
    pub since_handshake: Option<std::time::Duration>,
}

/// Counters of everything the node dropped or did not recognise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// TUN input that is not an IPv4/IPv6 packet.
    pub malformed_ip: u64,
    /// Datagrams that are neither STUN nor WireGuard (nor ChannelData).
    pub unknown_datagrams: u64,
    /// STUN no connection accepted (wrong credentials, stale transaction).
    pub unmatched_stun: u64,
    /// TURN ChannelData received before the TURN client exists.
    pub unhandled_channel_data: u64,
    /// WireGuard datagrams for no known connection.
    pub unknown_peer: u64,
    /// WireGuard datagrams boringtun rejected.
    pub wireguard_errors: u64,
    /// Decrypted packets whose source does not route back to the
    /// connection they came from (cryptokey routing).
    pub bad_source: u64,
    /// Packets dropped from full connection buffers.
    pub buffer_dropped: u64,
    /// Packets without a route dropped (pending table or queue full, or
    /// held too long).
    pub pending_dropped: u64,
    /// Buffered packets sent once their connection came up.
    pub flushed: u64,
    /// Caller buffers too small for the packet.
    pub short_buffer: u64,
}

/// Errors of the control-side API (never of the data path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no connection with this id")]
    UnknownConnection,
    #[error("a connection with this id exists")]
    DuplicateConnection,
    #[error("another connection already uses this peer public key")]
    DuplicatePeerKey,
    #[error("this relay is already in use")]
    DuplicateRelay,
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    #[error("an ICE-only connection carries no WireGuard (no routes, no packets)")]
    IceOnly,
    #[error("the connection has no path yet")]
    NoPath,
}
