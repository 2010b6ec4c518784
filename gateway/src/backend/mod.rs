//! The gateway's data plane behind one type: kernel WireGuard or the
//! userspace tunnel, plus what the session needs beyond [`WgBackend`]
//! (ICE credentials and candidates, relays, tunnel events).
//!
//! With the kernel backend, ICE is not wired up yet (the eBPF port
//! sharing is future work, see the README): peers get WireGuard only and
//! reach the gateway by roaming to its listen port.

pub mod userspace;

use keyhole_proto::{ClientId, IceCandidate, PublicKey, RelayId, RelayInfo};

use crate::session::PeerSetup;
use crate::wg::{KernelWg, WgBackend, WgError};
pub use userspace::{TunnelEvent, UserspaceWg};

#[derive(Debug)]
pub enum DataPlane {
    Kernel(KernelWg),
    Userspace(UserspaceWg),
}

impl DataPlane {
    pub fn backend(&mut self) -> &mut dyn WgBackend {
        match self {
            DataPlane::Kernel(k) => k,
            DataPlane::Userspace(u) => u,
        }
    }

    pub fn interface(&self) -> &str {
        match self {
            DataPlane::Kernel(k) => k.interface(),
            DataPlane::Userspace(u) => u.interface(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            DataPlane::Kernel(k) => k.public_key(),
            DataPlane::Userspace(u) => u.public_key(),
        }
    }

    pub fn add_peer(&mut self, setup: &PeerSetup) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(k) => k.upsert_peer(&setup.peer),
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
            DataPlane::Kernel(k) => k.remove_peer(key),
            DataPlane::Userspace(u) => u.remove_client(client_id),
        }
    }

    pub fn add_remote_candidates(
        &mut self,
        client_id: ClientId,
        candidates: Vec<IceCandidate>,
    ) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(_) => Ok(()),
            DataPlane::Userspace(u) => u.add_remote_candidates(client_id, candidates),
        }
    }

    pub fn add_relays(&mut self, relays: &[RelayInfo]) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(_) => Ok(()),
            DataPlane::Userspace(u) => u.add_relays(relays),
        }
    }

    pub fn remove_relays(&mut self, ids: &[RelayId]) -> Result<(), WgError> {
        match self {
            DataPlane::Kernel(_) => Ok(()),
            DataPlane::Userspace(u) => u.remove_relays(ids),
        }
    }

    pub fn poll_events(&mut self) -> Vec<TunnelEvent> {
        match self {
            DataPlane::Kernel(_) => Vec::new(),
            DataPlane::Userspace(u) => u.poll_events(),
        }
    }
}
