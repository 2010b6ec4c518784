//! Keyhole's sans-IO tunnel core.
//!
//! A [`Node`] owns every connection of a client or a gateway. Each
//! connection pairs an ICE agent (str0m's, published as the `is` crate)
//! that finds a path through NATs with a boringtun WireGuard tunnel that
//! encrypts over it. The node demultiplexes incoming UDP between STUN and
//! WireGuard, routes outgoing IP packets by destination (longest prefix
//! wins), buffers packets for connections that are not up yet, and tells
//! its owner what to signal through the portal.
//!
//! No sockets, no clocks, no runtime: time comes in as `now`, randomness
//! from a seed in [`NodeConfig`]. One caveat: boringtun 0.7 reads the
//! system clock for its own timers (rekey, keepalive, session expiry) and
//! the OS RNG for ephemeral keys; the node drives handshake retries on its
//! own clock so connection setup does not depend on them.

mod buffer;
mod connection;
#[cfg(feature = "io")]
pub mod io;
mod node;
mod packet;
mod relay;
mod routes;
pub mod turn;
mod types;

pub use connection::ConnectionId;
pub use node::Node;
pub use types::{
    ConnectionConfig, ConnectionInfo, Error, Event, IceConnectionConfig, Input, NodeConfig, Output,
    Path, PathKind, Role, Stats, Transmit,
};
