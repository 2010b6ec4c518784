//! WireGuard backends behind one trait, [`WgBackend`].
//!
//! The gateway drives peers (clients) through the trait and never cares
//! which data plane carries them:
//! - [`KernelWg`]: in-kernel WireGuard. The link, its addresses and routes
//!   are made over rtnetlink ([`link`]); keys, port and peers over the
//!   WireGuard generic-netlink family (wireguard-control). The two crates
//!   use different netlink-packet-route versions, so each stays in its own
//!   file and no netlink type crosses between them.
//! - userspace: the tunnel core (libs/keyhole-tunnel) on TUN, implemented
//!   in the gateway when the kernel has no WireGuard.
//!
//! [`resolve`] turns `--backend kernel|userspace|auto` into a
//! [`BackendKind`] by trying to create a kernel WireGuard link.

mod backend;
mod config;
mod error;
mod kernel;
pub mod link;

pub use backend::{BackendChoice, BackendKind, PeerUpdate, WgBackend, resolve};
pub use config::{InterfaceConfig, PeerConfig, PeerStats, PrivateKey};
pub use error::WgError;
pub use kernel::KernelWg;
