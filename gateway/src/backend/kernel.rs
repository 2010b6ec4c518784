//! The kernel backend with ICE: kernel WireGuard ([`KernelWg`]) for the
//! traffic, an ICE-only tunnel node on a userspace socket
//! ([`KernelIce`]) for connectivity checks and TURN, and the STUN
//! steering programs ([`StunSteering`]) on the uplinks so both share the
//! WireGuard port. When ICE nominates a path, the client's kernel peer gets
//! its endpoint over netlink.

use std::collections::HashMap;
use std::net::SocketAddr;

use keyhole_proto::{ClientId, IceCandidate, IceCredentials, RelayId, RelayInfo};
use keyhole_tunnel::turn::TurnConfig;
use keyhole_tunnel::{IceConnectionConfig, Node, NodeConfig, Role};
use rand::RngCore as _;

use super::TunnelEvent;
use super::kernel_ice::{IceEvent, KernelIce};
use crate::steering::{SteeringCounters, SteeringPorts, StunSteering};
use crate::wg::{InterfaceConfig, KernelWg, PeerConfig, WgBackend, WgError};

/// Fields drop in order: ICE thread, then steering, then the link.
#[derive(Debug)]
pub struct KernelPlane {
    ice: KernelIce,
    steering: Vec<StunSteering>,
    pub wg: KernelWg,
    /// Each client's peer as configured, to re-send with an endpoint.
    peers: HashMap<ClientId, PeerConfig>,
    relays: HashMap<RelayId, SocketAddr>,
    /// Source of relay allocations (the first advertised address).
    relay_local: SocketAddr,
}

fn other(what: impl Into<String>) -> WgError {
    WgError::Io {
        what: what.into(),
        source: std::io::ErrorKind::Other.into(),
    }
}

impl KernelPlane {
    /// Creates the WireGuard link, starts ICE on `advertised`
    /// (`ip:listen_port` each) and attaches steering to every uplink.
    pub async fn create(
        rtnl: &rtnetlink::Handle,
        cfg: &InterfaceConfig,
        advertised: &[SocketAddr],
        uplinks: &[String],
    ) -> Result<Self, WgError> {
        let wg = KernelWg::create(rtnl, cfg).await?;
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        // The node runs ICE-only connections; its key is never used.
        let node = Node::new(NodeConfig::new(*cfg.private_key.as_bytes(), seed));
        let advertised: Vec<SocketAddr> = advertised
            .iter()
            .map(|a| SocketAddr::new(a.ip(), cfg.listen_port))
            .collect();
        let ice = KernelIce::start(node, &advertised, cfg.listen_port)?;
        let ports = SteeringPorts {
            wg_port: cfg.listen_port,
            ice_port: ice.ice_port(),
            channel_data: true,
        };
        let local_ips: Vec<std::net::IpAddr> = advertised.iter().map(SocketAddr::ip).collect();
        let mut steering = Vec::new();
        for uplink in uplinks {
            let s = StunSteering::attach(uplink, ports, &local_ips)
                .map_err(|e| other(format!("STUN steering on {uplink}: {e}")))?;
            steering.push(s);
        }
        let relay_local = advertised
            .iter()
            .copied()
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| other("no IPv4 address to advertise"))?;
        tracing::info!(
            ice_port = ice.ice_port(),
            ?advertised,
            ?uplinks,
            "kernel backend: ICE shares the WireGuard port"
        );
        Ok(Self {
            ice,
            steering,
            wg,
            peers: HashMap::new(),
            relays: HashMap::new(),
            relay_local,
        })
    }

    /// Steering counters summed over the uplinks.
    pub fn steering_counters(&self) -> Vec<(String, SteeringCounters)> {
        self.steering
            .iter()
            .filter_map(|s| Some((s.interface().to_owned(), s.counters().ok()?)))
            .collect()
    }

    /// The client's kernel peer (no endpoint until ICE finds a path) and
    /// its ICE-only connection, both or neither.
    pub fn add_peer(
        &mut self,
        client_id: ClientId,
        peer: &PeerConfig,
        local: IceCredentials,
        remote: IceCredentials,
    ) -> Result<(), WgError> {
        self.wg.upsert_peer(peer)?;
        let config = IceConnectionConfig {
            role: Role::Responder,
            local_credentials: local,
            remote_credentials: remote,
        };
        let r = self.ice.call(move |core, now| {
            core.remove_client(&client_id);
            core.node.add_ice_connection(now, client_id, config)
        });
        match r {
            Ok(Ok(())) => {
                self.peers.insert(client_id, peer.clone());
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = self.wg.remove_peer(&peer.public_key);
                Err(other(format!("ICE for peer {}: {e}", peer.public_key)))
            }
            Err(e) => {
                let _ = self.wg.remove_peer(&peer.public_key);
                Err(e)
            }
        }
    }

    pub fn remove_peer(
        &mut self,
        client_id: ClientId,
        key: &keyhole_proto::PublicKey,
    ) -> Result<(), WgError> {
        self.peers.remove(&client_id);
        let ice = self.ice.call(move |core, _| core.remove_client(&client_id));
        self.wg.remove_peer(key)?;
        ice
    }

    pub fn add_remote_candidates(
        &mut self,
        client_id: ClientId,
        candidates: Vec<IceCandidate>,
    ) -> Result<(), WgError> {
        self.ice.call(move |core, _| {
            for c in &candidates {
                if let Err(e) = core.node.add_remote_candidate(&client_id, c) {
                    tracing::debug!(client = %client_id, candidate = c.as_str(), error = %e, "remote candidate refused");
                }
            }
        })
    }

    /// Relays the portal announced (IPv4, UDP); the allocation is made from
    /// the WireGuard port, so its relayed and mapped addresses speak for it.
    pub fn add_relays(&mut self, relays: &[RelayInfo]) -> Result<(), WgError> {
        for r in relays {
            if self.relays.contains_key(&r.id) {
                continue;
            }
            let Some(server) = r.ipv4.map(SocketAddr::V4) else {
                continue;
            };
            let config = TurnConfig::new(
                server,
                r.credentials.username.clone(),
                r.credentials.password.clone(),
            );
            let local = self.relay_local;
            match self
                .ice
                .call(move |core, now| core.node.add_relay(now, local, config))?
            {
                Ok(()) => {
                    self.relays.insert(r.id, server);
                }
                Err(e) => tracing::warn!(relay = %r.id, error = %e, "relay not added"),
            }
        }
        Ok(())
    }

    pub fn remove_relays(&mut self, ids: &[RelayId]) -> Result<(), WgError> {
        for id in ids {
            if let Some(server) = self.relays.remove(id) {
                self.ice
                    .call(move |core, now| core.node.remove_relay(now, server))?;
            }
        }
        Ok(())
    }

    /// ICE events; a nominated path sets the client's kernel endpoint.
    pub fn poll_events(&mut self) -> Vec<TunnelEvent> {
        let mut out = Vec::new();
        for e in self.ice.poll_events() {
            match e {
                IceEvent::LocalCandidate {
                    client_id,
                    candidate,
                } => out.push(TunnelEvent::LocalCandidate {
                    client_id,
                    candidate,
                }),
                IceEvent::Endpoint {
                    client_id,
                    path,
                    endpoint,
                } => {
                    let Some(peer) = self.peers.get_mut(&client_id) else {
                        continue;
                    };
                    peer.endpoint = Some(endpoint);
                    let peer = peer.clone();
                    match self.wg.upsert_peer(&peer) {
                        Ok(()) => {
                            tracing::info!(client = %client_id, %endpoint, ?path, "kernel peer endpoint set")
                        }
                        Err(e) => {
                            tracing::error!(client = %client_id, error = %e, "setting the kernel peer endpoint")
                        }
                    }
                    out.push(TunnelEvent::Up { client_id, path });
                }
                IceEvent::Failed { client_id } => out.push(TunnelEvent::Failed { client_id }),
            }
        }
        out
    }
}
