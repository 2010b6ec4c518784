//! The backend trait and the choice between kernel and userspace.

use keyhole_proto::PublicKey;

use super::{PeerConfig, PeerStats, WgError, link};

/// One change to a backend's peer set.
#[derive(Debug, Clone, Copy)]
pub enum PeerUpdate<'a> {
    /// Add the peer, or make an existing one exactly this (allowed IPs,
    /// preshared key and keepalive are replaced, not merged).
    Upsert(&'a PeerConfig),
    /// Remove the peer; removing an absent peer is not an error.
    Remove(&'a PublicKey),
}

/// A WireGuard data plane the gateway programs. Calls are short and
/// synchronous (a netlink round trip for the kernel, a command to the
/// tunnel task for userspace), so the trait stays object safe and usable
/// from any thread.
pub trait WgBackend: Send {
    fn kind(&self) -> BackendKind;

    /// The tunnel interface's name (a WireGuard link or a TUN device).
    fn interface(&self) -> &str;

    fn public_key(&self) -> PublicKey;

    /// Applies a batch of peer changes. The cost is proportional to the
    /// batch, never to the number of peers already configured.
    fn apply(&mut self, updates: &[PeerUpdate<'_>]) -> Result<(), WgError>;

    fn upsert_peer(&mut self, peer: &PeerConfig) -> Result<(), WgError> {
        self.apply(&[PeerUpdate::Upsert(peer)])
    }

    fn remove_peer(&mut self, key: &PublicKey) -> Result<(), WgError> {
        self.apply(&[PeerUpdate::Remove(key)])
    }

    /// Statistics of every configured peer.
    fn peer_stats(&self) -> Result<Vec<PeerStats>, WgError>;

    /// Removes the interface and everything configured on it. Later calls
    /// fail with [`WgError::TornDown`]; tearing down twice is a no-op.
    fn teardown(&mut self) -> Result<(), WgError>;
}

/// What the operator asked for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Kernel,
    Userspace,
    /// Kernel WireGuard when the kernel can make a link, else userspace.
    Auto,
}

/// The backend actually in use (reported to the portal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Kernel,
    Userspace,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Kernel => "kernel",
            BackendKind::Userspace => "userspace",
        }
    }
}

/// Resolves a choice against this kernel. `Kernel` fails with
/// [`WgError::KernelUnsupported`] when the kernel cannot create a WireGuard
/// link; `Auto` then falls back to userspace. Probing creates and deletes a
/// scratch link in the current network namespace.
pub async fn resolve(
    choice: BackendChoice,
    rtnl: &rtnetlink::Handle,
) -> Result<BackendKind, WgError> {
    match choice {
        BackendChoice::Userspace => Ok(BackendKind::Userspace),
        BackendChoice::Kernel => match link::probe_kernel_wireguard(rtnl).await? {
            Ok(()) => Ok(BackendKind::Kernel),
            Err(why) => Err(WgError::KernelUnsupported(why)),
        },
        BackendChoice::Auto => match link::probe_kernel_wireguard(rtnl).await? {
            Ok(()) => Ok(BackendKind::Kernel),
            Err(why) => {
                tracing::info!(%why, "no kernel WireGuard, using the userspace backend");
                Ok(BackendKind::Userspace)
            }
        },
    }
}
