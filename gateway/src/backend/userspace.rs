//! The userspace backend: keyhole-tunnel's [`Node`] and IO shell on a TUN
//! device. Decrypted packets are written to the TUN, so they enter the
//! kernel through the TUN's ingress, where the policy filter sits, exactly
//! as they would from a kernel WireGuard link.
//!
//! Each client is one tunnel connection keyed by its [`ClientId`], with
//! routes for its tunnel /32 and /128 (cryptokey routing both ways).
//! Changes are commands run on the shell's thread between batches; a call
//! waits for the command's result, which takes at most one batch.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc::{TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use keyhole_proto::{ClientId, IceCandidate, IceCredentials, PublicKey, RelayId, RelayInfo};
use keyhole_tunnel::io::{Handle, ShellConfig, TunOptions, create_tun, spawn_multi};
use keyhole_tunnel::turn::TurnConfig;
use keyhole_tunnel::{ConnectionConfig, Event, Node, NodeConfig, Path, PathKind, Role};
use rand::RngCore;

use crate::wg::{
    BackendKind, InterfaceConfig, PeerConfig, PeerStats, PeerUpdate, WgBackend, WgError, link,
};

/// How long a command may wait for the shell (it runs between batches,
/// so this is only hit if the shell thread died).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What the tunnel reports to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    LocalCandidate {
        client_id: ClientId,
        candidate: IceCandidate,
    },
    Up {
        client_id: ClientId,
        path: Path,
    },
    Failed {
        client_id: ClientId,
    },
}

/// A TUN device driven by the tunnel core, owned by this process: the
/// device goes away with the shell on [`WgBackend::teardown`] or drop.
pub struct UserspaceWg {
    name: String,
    public_key: PublicKey,
    /// Source of relay allocations (a concrete host address).
    relay_local: SocketAddr,
    handle: Option<Handle<ClientId>>,
    keys: HashMap<PublicKey, ClientId>,
    relays: HashMap<RelayId, SocketAddr>,
}

impl std::fmt::Debug for UserspaceWg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceWg")
            .field("name", &self.name)
            .field("peers", &self.keys.len())
            .finish()
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WgError {
    let what = what.into();
    move |source| WgError::Io { what, source }
}

fn other(what: impl Into<String>) -> WgError {
    WgError::Io {
        what: what.into(),
        source: std::io::ErrorKind::Other.into(),
    }
}

impl UserspaceWg {
    /// Creates the TUN `cfg.name`, binds UDP `0.0.0.0:cfg.listen_port`,
    /// offers `host_candidates` to ICE and starts the shell; then sets
    /// addresses, MTU, up and routes over rtnetlink.
    pub async fn create(
        rtnl: &rtnetlink::Handle,
        cfg: &InterfaceConfig,
        host_candidates: &[SocketAddr],
    ) -> Result<Self, WgError> {
        let mtu = cfg.mtu.unwrap_or(1420);
        // GSO/GRO offloads where the kernel has them (a plain device
        // otherwise): several times the throughput of one packet per syscall.
        let tuns = create_tun(&TunOptions::new(cfg.name.clone(), mtu as u16))
            .map_err(io_err(format!("creating TUN {}", cfg.name)))?;
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, cfg.listen_port))
            .map_err(io_err(format!("binding UDP port {}", cfg.listen_port)))?;
        let port = udp
            .local_addr()
            .map_err(io_err("reading UDP address"))?
            .port();
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let mut node = Node::new(NodeConfig::new(*cfg.private_key.as_bytes(), seed));
        let mut relay_local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for (i, c) in host_candidates.iter().enumerate() {
            let c = SocketAddr::new(c.ip(), if c.port() == 0 { port } else { c.port() });
            if i == 0 {
                relay_local = c;
            }
            node.add_host_candidate(c)
                .map_err(|e| other(format!("host candidate {c}: {e}")))?;
        }
        let handle = spawn_multi(node, udp, tuns, ShellConfig::default())
            .map_err(io_err("starting the tunnel shell"))?;
        let wg = Self {
            name: cfg.name.clone(),
            public_key: cfg.private_key.public_key(),
            relay_local,
            handle: Some(handle),
            keys: HashMap::new(),
            relays: HashMap::new(),
        };
        let Some((index, _)) = link::find(rtnl, &cfg.name).await? else {
            return Err(other(format!("TUN {} vanished", cfg.name)));
        };
        link::configure(rtnl, index, &cfg.name, &cfg.addresses, mtu, &cfg.routes).await?;
        Ok(wg)
    }

    /// Runs `f` on the shell's thread and returns its result.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node<ClientId>, Instant) -> R + Send + 'static,
    ) -> Result<R, WgError> {
        let handle = self
            .handle
            .as_ref()
            .ok_or_else(|| WgError::TornDown(self.name.clone()))?;
        let (tx, rx) = sync_channel(1);
        if !handle.command(move |node, now| {
            let _ = tx.send(f(node, now));
        }) {
            return Err(other("the tunnel shell stopped"));
        }
        rx.recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| other("the tunnel shell did not answer"))
    }

    /// Adds (or replaces) the client's connection: responder side of ICE
    /// with the flow's credentials, WireGuard with the client's key and
    /// PSK, routes for the client's tunnel addresses.
    pub fn add_ice_peer(
        &mut self,
        client_id: ClientId,
        peer: &PeerConfig,
        local: IceCredentials,
        remote: IceCredentials,
    ) -> Result<(), WgError> {
        self.add_connection(client_id, peer, local, remote, None)
    }

    fn add_connection(
        &mut self,
        client_id: ClientId,
        peer: &PeerConfig,
        local: IceCredentials,
        remote: IceCredentials,
        static_path: Option<Path>,
    ) -> Result<(), WgError> {
        let config = ConnectionConfig {
            role: Role::Responder,
            peer_public_key: peer.public_key,
            preshared_key: peer.preshared_key.clone(),
            local_credentials: local,
            remote_credentials: remote,
            persistent_keepalive: peer.keepalive,
            static_path,
        };
        let nets = peer.allowed_ips();
        let old = self.keys.get(&peer.public_key).copied();
        self.call(move |node, now| {
            node.remove_connection(&client_id);
            if let Some(old) = old {
                node.remove_connection(&old);
            }
            node.add_connection(now, client_id, config)?;
            for net in nets {
                node.add_route(now, net, &client_id)?;
            }
            Ok::<_, keyhole_tunnel::Error>(())
        })?
        .map_err(|e| other(format!("adding peer {}: {e}", peer.public_key)))?;
        self.keys.retain(|_, c| *c != client_id);
        self.keys.insert(peer.public_key, client_id);
        Ok(())
    }

    pub fn remove_client(&mut self, client_id: ClientId) -> Result<(), WgError> {
        self.keys.retain(|_, c| *c != client_id);
        self.call(move |node, _| node.remove_connection(&client_id))?;
        Ok(())
    }

    /// Candidates the client signalled; bad ones are logged and skipped.
    pub fn add_remote_candidates(
        &mut self,
        client_id: ClientId,
        candidates: Vec<IceCandidate>,
    ) -> Result<(), WgError> {
        self.call(move |node, _| {
            for c in &candidates {
                if let Err(e) = node.add_remote_candidate(&client_id, c) {
                    tracing::debug!(client = %client_id, candidate = c.as_str(), error = %e, "remote candidate refused");
                }
            }
        })
    }

    /// Uses relays the portal announced. A relay already in use keeps its
    /// allocation (credentials are only read when allocating).
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
            match self.call(move |node, now| node.add_relay(now, local, config))? {
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
                self.call(move |node, now| node.remove_relay(now, server))?;
            }
        }
        Ok(())
    }

    /// Events the tunnel reported since the last call.
    pub fn poll_events(&mut self) -> Vec<TunnelEvent> {
        let Some(handle) = &self.handle else {
            return Vec::new();
        };
        let mut out = Vec::new();
        loop {
            match handle.events.try_recv() {
                Ok(Event::LocalCandidate { conn, candidate }) => {
                    out.push(TunnelEvent::LocalCandidate {
                        client_id: conn,
                        candidate,
                    })
                }
                Ok(Event::ConnectionUp { conn, path }) => out.push(TunnelEvent::Up {
                    client_id: conn,
                    path,
                }),
                Ok(Event::ConnectionFailed { conn }) => {
                    self.keys.retain(|_, c| *c != conn);
                    out.push(TunnelEvent::Failed { client_id: conn })
                }
                Ok(other) => tracing::debug!(event = ?other, "tunnel event"),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        out
    }
}

/// A client id for peers configured through the plain [`WgBackend`] API
/// (no session, no ICE): derived from the key so it is stable.
fn id_for_key(key: &PublicKey) -> ClientId {
    let mut b = [0u8; 16];
    b.copy_from_slice(&key.as_bytes()[..16]);
    ClientId::from_u128(u128::from_be_bytes(b))
}

impl WgBackend for UserspaceWg {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn interface(&self) -> &str {
        &self.name
    }

    fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Plain WireGuard peers: a peer with an endpoint gets a static path
    /// (ICE off, roaming like WireGuard); one without an endpoint cannot
    /// be reached without ICE, so it is refused: use
    /// [`UserspaceWg::add_ice_peer`].
    fn apply(&mut self, updates: &[PeerUpdate<'_>]) -> Result<(), WgError> {
        for u in updates {
            match u {
                PeerUpdate::Upsert(p) => {
                    let Some(remote) = p.endpoint else {
                        return Err(other(format!(
                            "userspace peer {} needs an endpoint or ICE",
                            p.public_key
                        )));
                    };
                    let id = self
                        .keys
                        .get(&p.public_key)
                        .copied()
                        .unwrap_or_else(|| id_for_key(&p.public_key));
                    let local = SocketAddr::new(self.relay_local.ip(), self.relay_local.port());
                    let creds = self
                        .call(|node, _| (node.new_ice_credentials(), node.new_ice_credentials()))?;
                    let path = Path {
                        local,
                        remote,
                        kind: PathKind::Direct,
                    };
                    self.add_connection(id, p, creds.0, creds.1, Some(path))?;
                }
                PeerUpdate::Remove(key) => {
                    if let Some(id) = self.keys.get(key).copied() {
                        self.remove_client(id)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The tunnel core keeps no byte counters per connection: rx/tx are 0
    /// and the handshake time unknown; the endpoint is the ICE path's.
    fn peer_stats(&self) -> Result<Vec<PeerStats>, WgError> {
        let keys: Vec<(PublicKey, ClientId)> = self.keys.iter().map(|(k, c)| (*k, *c)).collect();
        self.call(move |node, _| {
            keys.iter()
                .map(|(k, c)| {
                    let info = node.connection(c);
                    let info = info.as_ref();
                    PeerStats {
                        public_key: *k,
                        last_handshake: info
                            .and_then(|i| i.since_handshake)
                            .and_then(|d| std::time::SystemTime::now().checked_sub(d)),
                        rx_bytes: info.map_or(0, |i| i.rx_bytes),
                        tx_bytes: info.map_or(0, |i| i.tx_bytes),
                        endpoint: info.and_then(|i| i.path).map(|p| p.remote),
                    }
                })
                .collect()
        })
    }

    fn teardown(&mut self) -> Result<(), WgError> {
        if let Some(h) = self.handle.take() {
            // Closing the TUN fd deletes the (non-persistent) device.
            let stats = h.stop().map_err(io_err("stopping the tunnel shell"))?;
            tracing::info!(?stats, interface = %self.name, "userspace tunnel stopped");
        }
        Ok(())
    }
}

impl Drop for UserspaceWg {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "tearing down the userspace tunnel");
        }
    }
}

/// Routes a resource never needs: documented here so the shell adds the
/// whole client ranges to the TUN.
pub fn client_routes() -> [IpNet; 2] {
    [
        IpNet::V4(keyhole_proto::TUNNEL_IPV4_RANGE),
        IpNet::V6(keyhole_proto::TUNNEL_IPV6_RANGE),
    ]
}
