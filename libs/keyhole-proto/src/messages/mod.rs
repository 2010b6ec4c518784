//! Message families, one per direction of each connection kind, and the
//! payload types they share.
//!
//! | connection | portal → peer | peer → portal |
//! | --- | --- | --- |
//! | gateway | [`PortalToGateway`] | [`GatewayToPortal`] |
//! | client | [`PortalToClient`] | [`ClientToPortal`] |
//! | relay | [`PortalToRelay`] | [`RelayToPortal`] |
//!
//! Who the peer is, its WireGuard public key and version travel in the
//! WebSocket upgrade request (see [`connect`]), the secret in an
//! `Authorization: Bearer` header; the first frame is the portal's `init`.
//! The portal re-sends `relays_presence` with fresh TURN credentials before
//! the previous ones expire.

mod client;
mod common;
pub mod connect;
mod gateway;
mod relay;

pub use client::*;
pub use common::*;
pub use gateway::*;
pub use relay::*;
