//! The gateway's data plane behind one type: kernel WireGuard or the
//! userspace tunnel, plus what the session needs beyond [`WgBackend`]
//! (ICE credentials and candidates, relays, tunnel events).
//!
//! - userspace ([`UserspaceWg`]): keyhole-tunnel's node does ICE and
//!   WireGuard on one socket, packets go through a TUN.
//! - kernel ([`KernelPlane`]): kernel WireGuard carries the traffic; an
//!   ICE-only node ([`kernel_ice`]) runs the checks and TURN on a
//!   userspace socket that shares the WireGuard port through STUN steering
//!   on the uplinks ([`crate::steering`]), and sets each client's kernel
//!   endpoint to the nominated path (through a local proxy when our
//!   relayed address is its local end). See the README, "Kernel backend +
//!   ICE", for the design and its trade-offs.

pub mod kernel;
pub mod kernel_ice;
pub mod userspace;

use keyhole_proto::{ClientId, IceCandidate, PublicKey, RelayId, RelayInfo};

use crate::session::PeerSetup;
use crate::wg::{WgBackend, WgError};
pub use kernel::KernelPlane;
pub use userspace::{TunnelEvent, UserspaceWg};

#[derive(Debug)]
pub enum DataPlane {
    Kernel(KernelPlane),
    Userspace(UserspaceWg),
}

impl DataPlane {
    pub fn backend(&mut self) -> &mut dyn WgBackend {
        match self {
            DataPlane::Kernel(k) => &mut k.wg,
            DataPlane::Userspace(u) => u,
        }
    }

    pub fn interface(&self) -> &str {
        match self {
            DataPlane::Kernel(k) => k.wg.interface(),
            DataPlane::Userspace(u) => u.interface(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            DataPlane::Kernel(k) => k.wg.public_key(),
            DataPlane::Userspace(u) => u.public_key(),
        }
    }

    pub fn add_peer(&mut self, setup: &PeerSetup) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(k) => k.add_peer(
                setup.client_id,
                &setup.peer,
                setup.local_ice.clone(),
                setup.remote_ice.clone(),
            ),
            DataPlane::Userspace(u) => u.add_ice_peer(
                setup.client_id,
                &setup.peer,
                setup.local_ice.clone(),
                setup.remote_ice.clone(),
            ),
        }
    }

    pub fn remove_peer(&mut self, client_id: ClientId, key: &PublicKey) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(k) => k.remove_peer(client_id, key),
            DataPlane::Userspace(u) => u.remove_client(client_id),
        }
    }

    pub fn add_remote_candidates(
        &mut self,
        client_id: ClientId,
        candidates: Vec<IceCandidate>,
    ) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(k) => k.add_remote_candidates(client_id, candidates),
            DataPlane::Userspace(u) => u.add_remote_candidates(client_id, candidates),
        }
    }

    pub fn add_relays(&mut self, relays: &[RelayInfo]) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(k) => k.add_relays(relays),
            DataPlane::Userspace(u) => u.add_relays(relays),
        }
    }

    pub fn remove_relays(&mut self, ids: &[RelayId]) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(k) => k.remove_relays(ids),
            DataPlane::Userspace(u) => u.remove_relays(ids),
        }
    }

    pub fn poll_events(&mut self) -> Vec<TunnelEvent> {
        match self {
            DataPlane::Kernel(k) => k.poll_events(),
            DataPlane::Userspace(u) => u.poll_events(),
        }
    }
}
