//! [`Node`]: every connection of one client or gateway, behind one sans-IO
//! interface.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey as X25519Public, StaticSecret};
use ipnet::IpNet;
use is::stun::{StunMessage, StunPacket};
use is::{Candidate, IceAgent, Protocol};
use keyhole_proto::{IceCandidate, IceCredentials, PublicKey};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::buffer::PacketBuffer;
use crate::connection::{Connection, ConnectionId, SCRATCH_LEN, Shared, ice_creds, push_candidate};
use crate::packet::{self, DatagramKind};
use crate::relay::Relay;
use crate::routes::RouteTable;
use crate::turn::{Client as TurnClient, Transport, TurnConfig, TurnEvent};
use crate::types::{
    ConnectionConfig, ConnectionInfo, Error, Event, IceConnectionConfig, Input, NodeConfig, Output,
    Role, Stats, Transmit,
};

/// WireGuard adds 32 bytes to a packet; handshake messages need 148.
const WG_OVERHEAD: usize = 32;
/// ChannelData header plus TCP padding, for relayed paths.
const CHANNEL_OVERHEAD: usize = 4 + 3;
const WG_MIN_BUFFER: usize = 148;
/// boringtun's rate limiter wants a reset about once a second.
const RATE_LIMIT_PERIOD: Duration = Duration::from_secs(1);

/// Packets to a destination that has no route yet.
struct Pending {
    packets: PacketBuffer,
    since: Instant,
    asked_at: Instant,
}

/// The sans-IO tunnel core: owns many connections keyed by `K`, demuxes
/// incoming UDP between ICE (STUN) and WireGuard, routes TUN packets by
/// destination, and reports what the owner must signal or do.
///
/// Drive it like str0m or quinn-proto: feed [`Node::handle_input`], send
/// what [`Node::poll_transmit`] yields, act on [`Node::poll_event`], and
/// call [`Node::handle_timeout`] at [`Node::poll_timeout`]. Poll all three
/// after every call that changes state.
pub struct Node<K> {
    secret: StaticSecret,
    public: X25519Public,
    rate_limiter: Arc<RateLimiter>,
    rate_reset_at: Option<Instant>,
    connections: HashMap<K, Connection>,
    /// boringtun local index (without its low 8 session bits) → connection.
    by_index: HashMap<u32, K>,
    by_peer_key: HashMap<[u8; 32], K>,
    /// Our ICE ufrag of each connection, for binding requests.
    by_ufrag: HashMap<String, K>,
    routes: RouteTable<Target<K>>,
    pending: HashMap<IpAddr, Pending>,
    host_candidates: Vec<Candidate>,
    srflx_candidates: Vec<Candidate>,
    relays: Vec<Relay>,
    /// The latest `now` the owner gave; `poll_transmit` hands datagrams to
    /// TURN clients at this time.
    now: Option<Instant>,
    next_index: u32,
    shared: Shared<K>,
}

impl<K: ConnectionId> Node<K> {
    pub fn new(config: NodeConfig) -> Self {
        let secret = StaticSecret::from(config.private_key);
        let public = X25519Public::from(&secret);
        let mut rng = StdRng::from_seed(config.rng_seed);
        let next_index = rng.next_u32() & 0x00FF_FFFF;
        let rate_limiter = Arc::new(RateLimiter::new(&public, config.handshake_rate_limit));
        Self {
            secret,
            public,
            rate_limiter,
            rate_reset_at: None,
            connections: HashMap::new(),
            by_index: HashMap::new(),
            by_peer_key: HashMap::new(),
            by_ufrag: HashMap::new(),
            routes: RouteTable::new(),
            pending: HashMap::new(),
            host_candidates: Vec::new(),
            srflx_candidates: Vec::new(),
            relays: Vec::new(),
            now: None,
            next_index,
            shared: Shared {
                config,
                rng,
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                stats: Stats::default(),
                scratch: vec![0; SCRATCH_LEN],
                relayed_path_lost: false,
            },
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.public.to_bytes())
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn connection(&self, id: &K) -> Option<ConnectionInfo> {
        let c = self.connections.get(id)?;
        let (since_handshake, tx, rx) = c.tunn.as_ref().map_or((None, 0, 0), |t| {
            let (since, tx, rx, _, _) = t.stats();
            (since, tx, rx)
        });
        Some(ConnectionInfo {
            up: c.is_up(),
            path: c.path,
            wireguard_established: c.established,
            buffered: c.buffer.len(),
            buffer_dropped: c.buffer.dropped(),
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
            since_handshake,
        })
    }

    pub fn connection_ids(&self) -> impl Iterator<Item = &K> {
        self.connections.keys()
    }

    /// Fresh random ICE credentials from the node's RNG, e.g. for a
    /// connection this side proposes.
    pub fn new_ice_credentials(&mut self) -> IceCredentials {
        self.shared.new_credentials()
    }

    // ---- local candidates -------------------------------------------------

    /// A local socket address every connection may use.
    pub fn add_host_candidate(&mut self, addr: SocketAddr) -> Result<(), Error> {
        let c = Candidate::host(addr, "udp").map_err(|e| Error::BadCandidate(e.to_string()))?;
        if self.host_candidates.iter().any(|h| h.addr() == addr) {
            return Ok(());
        }
        for (id, conn) in &mut self.connections {
            if let Some(added) = conn.agent.add_local_candidate(c.clone()) {
                push_candidate(id, added, &mut self.shared);
            }
        }
        self.host_candidates.push(c);
        Ok(())
    }

    /// Our public address `addr` as a STUN server saw it from the local
    /// socket `base` (a host candidate).
    pub fn add_server_reflexive_candidate(
        &mut self,
        addr: SocketAddr,
        base: SocketAddr,
    ) -> Result<(), Error> {
        let c = Candidate::server_reflexive(addr, base, "udp")
            .map_err(|e| Error::BadCandidate(e.to_string()))?;
        if self.srflx_candidates.iter().any(|s| s.addr() == addr) {
            return Ok(());
        }
        for (id, conn) in &self.connections {
            let mut c = c.clone();
            c.set_ufrag(&conn.agent.local_credentials().ufrag);
            push_candidate(id, &c, &mut self.shared);
        }
        self.srflx_candidates.push(c);
        Ok(())
    }

    // ---- connections ------------------------------------------------------

    /// Starts a connection as the authorisation describes it. Its local
    /// candidates come out as events; routes are added separately.
    pub fn add_connection(
        &mut self,
        now: Instant,
        id: K,
        config: ConnectionConfig,
    ) -> Result<(), Error> {
        if self.connections.contains_key(&id) {
            return Err(Error::DuplicateConnection);
        }
        let peer_key = *config.peer_public_key.as_bytes();
        if self.by_peer_key.contains_key(&peer_key) {
            return Err(Error::DuplicatePeerKey);
        }
        let index = self.allocate_index();
        let tunn = Tunn::new(
            self.secret.clone(),
            X25519Public::from(peer_key),
            config.preshared_key.as_ref().map(|k| *k.as_bytes()),
            config.persistent_keepalive,
            index,
            Some(self.rate_limiter.clone()),
        );

        let mut agent = IceAgent::new(ice_creds(&config.local_credentials));
        agent.set_controlling(config.role == Role::Initiator);
        agent.set_control_tie_breaker(self.shared.rng.next_u64());
        agent.set_remote_credentials(ice_creds(&config.remote_credentials));
        for c in &self.host_candidates {
            agent.add_local_candidate(c.clone());
        }
        for c in self.relays.iter().filter_map(|r| r.candidate.as_ref()) {
            agent.add_local_candidate(c.clone());
        }
        // Starts the agent's clock so poll_timeout answers.
        agent.handle_timeout(now);

        let mut conn = Connection {
            role: config.role,
            agent,
            tunn: Some(tunn),
            peer_key,
            index,
            established: false,
            handshake_at: None,
            path: None,
            reported: None,
            buffer: PacketBuffer::new(self.shared.config.buffer_packets),
            fail_at: Some(now + self.shared.config.failure_timeout),
            restart_at: None,
            awaiting_remote_credentials: false,
            wireguard_tick_at: now + self.shared.config.wireguard_tick,
            is_static: config.static_path.is_some(),
        };
        if let Some(path) = config.static_path {
            conn.path = Some(path);
            if conn.role == Role::Initiator {
                conn.start_handshake(&id, now, false, &mut self.shared);
            }
        } else {
            conn.signal_candidates(&id, &self.srflx_candidates, &mut self.shared);
        }
        conn.drain_ice(&id, now, &mut self.shared);

        self.by_index.insert(index, id.clone());
        self.by_peer_key.insert(peer_key, id.clone());
        self.by_ufrag
            .insert(config.local_credentials.username.clone(), id.clone());
        self.connections.insert(id, conn);
        Ok(())
    }

    /// Starts an ICE-only connection: candidates, checks, nomination,
    /// restarts and failure as for [`add_connection`](Self::add_connection),
    /// but no WireGuard. `ConnectionUp { path }` comes once ICE nominates
    /// a path (and again when it changes); the owner carries the traffic.
    /// Such a connection takes no routes. If the path's local end is a
    /// relayed address, the peer's datagrams come out of `handle_input` as
    /// [`Output::Relayed`] and go back through [`send_on_path`](Self::send_on_path).
    pub fn add_ice_connection(
        &mut self,
        now: Instant,
        id: K,
        config: IceConnectionConfig,
    ) -> Result<(), Error> {
        if self.connections.contains_key(&id) {
            return Err(Error::DuplicateConnection);
        }
        let mut agent = IceAgent::new(ice_creds(&config.local_credentials));
        agent.set_controlling(config.role == Role::Initiator);
        agent.set_control_tie_breaker(self.shared.rng.next_u64());
        agent.set_remote_credentials(ice_creds(&config.remote_credentials));
        for c in &self.host_candidates {
            agent.add_local_candidate(c.clone());
        }
        for c in self.relays.iter().filter_map(|r| r.candidate.as_ref()) {
            agent.add_local_candidate(c.clone());
        }
        agent.handle_timeout(now);
        let mut conn = Connection {
            role: config.role,
            agent,
            tunn: None,
            peer_key: [0; 32],
            index: 0,
            established: false,
            handshake_at: None,
            path: None,
            reported: None,
            buffer: PacketBuffer::new(0),
            fail_at: Some(now + self.shared.config.failure_timeout),
            restart_at: None,
            awaiting_remote_credentials: false,
            wireguard_tick_at: now,
            is_static: false,
        };
        conn.signal_candidates(&id, &self.srflx_candidates, &mut self.shared);
        conn.drain_ice(&id, now, &mut self.shared);
        self.by_ufrag
            .insert(config.local_credentials.username.clone(), id.clone());
        self.connections.insert(id, conn);
        Ok(())
    }

    /// Sends `datagram` to the peer of connection `id` over its nominated
    /// path: as it is on a direct path, wrapped for the relay (ChannelData,
    /// or a Send indication while the channel is pending: then queued for
    /// `poll_transmit` and `Ok(None)`) when the path's local end is one of
    /// our relayed addresses. `buf` needs the datagram's length plus 7.
    pub fn send_on_path<'b>(
        &mut self,
        now: Instant,
        id: &K,
        datagram: &[u8],
        buf: &'b mut [u8],
    ) -> Result<Option<Transmit<&'b [u8]>>, Error> {
        self.now = Some(now);
        let conn = self.connections.get(id).ok_or(Error::UnknownConnection)?;
        let path = conn.path.ok_or(Error::NoPath)?;
        let n = datagram.len();
        if buf.len() < n + CHANNEL_OVERHEAD {
            self.shared.stats.short_buffer += 1;
            return Ok(None);
        }
        let Some(relay) = self.relays.iter_mut().find(|r| r.relays_for(path.local)) else {
            buf[..n].copy_from_slice(datagram);
            return Ok(Some(Transmit {
                source: path.local,
                destination: path.remote,
                payload: &buf[..n],
            }));
        };
        let Some(channel) = relay.client.channel_to(path.remote) else {
            relay.client.send_to(now, path.remote, datagram);
            return Ok(None);
        };
        let (header, pad) = relay.client.channel_header(channel, n);
        buf[..4].copy_from_slice(&header);
        buf[4..4 + n].copy_from_slice(datagram);
        let end = 4 + n + pad;
        buf[4 + n..end].fill(0);
        Ok(Some(Transmit {
            source: relay.local,
            destination: relay.client.server(),
            payload: &buf[..end],
        }))
    }

    /// Whether `addr` is the relayed address of one of our allocations.
    pub fn is_relayed_address(&self, addr: SocketAddr) -> bool {
        self.relays.iter().any(|r| r.relays_for(addr))
    }

    /// Removes a connection at once (revocation or failure): its routes,
    /// buffered packets and queued datagrams go; later datagrams for it
    /// are dropped as unknown.
    pub fn remove_connection(&mut self, id: &K) -> bool {
        let Some(conn) = self.connections.remove(id) else {
            return false;
        };
        if conn.tunn.is_some() {
            self.by_index.remove(&conn.index);
            self.by_peer_key.remove(&conn.peer_key);
        }
        self.by_ufrag.retain(|_, k| k != id);
        self.routes.remove_owner(&Target::Conn(id.clone()));
        self.shared
            .transmits
            .retain(|(owner, _)| owner.as_ref() != Some(id));
        true
    }

    /// A candidate the peer signalled.
    pub fn add_remote_candidate(&mut self, id: &K, candidate: &IceCandidate) -> Result<(), Error> {
        let conn = self
            .connections
            .get_mut(id)
            .ok_or(Error::UnknownConnection)?;
        let c = Candidate::from_sdp_string(candidate.as_str())
            .map_err(|e| Error::BadCandidate(e.to_string()))?;
        conn.agent.add_remote_candidate(c);
        Ok(())
    }

    /// New ICE credentials the peer signalled (it restarted ICE). If this
    /// side did not start the restart, it restarts too and signals its own
    /// new credentials and candidates.
    pub fn set_remote_credentials(
        &mut self,
        now: Instant,
        id: &K,
        credentials: &IceCredentials,
    ) -> Result<(), Error> {
        let conn = self.connections.get(id).ok_or(Error::UnknownConnection)?;
        let creds = ice_creds(credentials);
        if conn.agent.remote_credentials() == Some(&creds) {
            return Ok(());
        }
        if !conn.awaiting_remote_credentials {
            self.restart_ice(now, id);
        }
        let conn = self
            .connections
            .get_mut(id)
            .ok_or(Error::UnknownConnection)?;
        conn.agent.set_remote_credentials(creds);
        conn.awaiting_remote_credentials = false;
        Ok(())
    }

    fn restart_ice(&mut self, now: Instant, id: &K) {
        let credentials = self.shared.new_credentials();
        let Some(conn) = self.connections.get_mut(id) else {
            return;
        };
        tracing::debug!(conn = ?id, "restarting ICE");
        let old = conn.agent.local_credentials().ufrag.clone();
        self.by_ufrag.remove(&old);
        self.by_ufrag
            .insert(credentials.username.clone(), id.clone());
        conn.agent.ice_restart(ice_creds(&credentials), true);
        conn.awaiting_remote_credentials = true;
        // The old pairs are gone with the restart; the path is whatever
        // ICE nominates next. Until then packets are buffered.
        conn.path = None;
        conn.update_up(id, now, &mut self.shared);
        conn.agent.handle_timeout(now);
        self.shared.events.push_back(Event::IceRestart {
            conn: id.clone(),
            credentials,
        });
        conn.signal_candidates(id, &self.srflx_candidates, &mut self.shared);
        conn.drain_ice(id, now, &mut self.shared);
    }

    fn allocate_index(&mut self) -> u32 {
        loop {
            let i = self.next_index;
            self.next_index = (self.next_index + 1) & 0x00FF_FFFF;
            if !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    // ---- routes -----------------------------------------------------------

    /// Routes `net` to connection `id` (longest prefix wins). Packets held
    /// for destinations in `net` move to the connection. Returns the
    /// connection that owned exactly `net` before, if any.
    pub fn add_route(&mut self, now: Instant, net: IpNet, id: &K) -> Result<Option<K>, Error> {
        match self.connections.get(id) {
            None => return Err(Error::UnknownConnection),
            Some(c) if c.tunn.is_none() => return Err(Error::IceOnly),
            Some(_) => {}
        }
        let target = Target::Conn(id.clone());
        let old = self
            .routes
            .insert(net, target.clone())
            .and_then(Target::conn);
        let moved: Vec<IpAddr> = self
            .pending
            .keys()
            .filter(|dst| self.routes.lookup(**dst) == Some(&target))
            .copied()
            .collect();
        if let Some(conn) = self.connections.get_mut(id) {
            for dst in moved {
                let Some(mut p) = self.pending.remove(&dst) else {
                    continue;
                };
                while let Some(packet) = p.packets.pop() {
                    if conn.buffer.push(&packet) {
                        self.shared.stats.buffer_dropped += 1;
                    }
                }
            }
            conn.update_up(id, now, &mut self.shared);
        }
        Ok(old)
    }

    /// Removes the route of exactly `net` (routed or held); returns the
    /// connection it went to, if any.
    pub fn remove_route(&mut self, net: IpNet) -> Option<K> {
        self.routes.remove(net).and_then(Target::conn)
    }

    /// Holds `net`: packets to it wait and raise `NeedAuthorization`, as
    /// for a destination without a route, even where a shorter route would
    /// take them. A client routing everything to one connection (a full
    /// tunnel's `0.0.0.0/0`) holds its other resources this way, so their
    /// first packets still ask for their own flows. Does nothing and
    /// returns false if `net` is routed or held already.
    pub fn hold_route(&mut self, net: IpNet) -> bool {
        if self.routes.get(net).is_some() {
            return false;
        }
        self.routes.insert(net, Target::Hold);
        true
    }

    /// Removes `net` if it is held; a route to a connection stays.
    pub fn release_hold(&mut self, net: IpNet) -> bool {
        if self.routes.get(net) != Some(&Target::Hold) {
            return false;
        }
        self.routes.remove(net);
        true
    }

    /// The networks routed to `id`.
    pub fn routes_of(&self, id: &K) -> Vec<IpNet> {
        self.routes.nets_of(&Target::Conn(id.clone())).collect()
    }

    // ---- data path ----------------------------------------------------------

    /// Handles one datagram or TUN packet. What must go out at once is
    /// written into `buf` and returned; `buf` should hold the largest
    /// packet plus 32 bytes (and at least 148). Everything else (ICE
    /// checks, handshakes, flushed buffers) is queued for `poll_transmit`.
    pub fn handle_input<'b>(
        &mut self,
        now: Instant,
        input: Input<'_>,
        buf: &'b mut [u8],
    ) -> Option<Output<'b, K>> {
        self.now = Some(now);
        match input {
            Input::Tun(packet) => self.handle_tun(now, packet, buf),
            Input::Network {
                local,
                from,
                datagram,
            } => {
                if let Some(i) = self.relays.iter().position(|r| r.is_server(local, from)) {
                    return self.handle_from_relay(now, i, datagram, buf);
                }
                self.handle_datagram(now, local, from, datagram, buf)
            }
        }
    }

    fn handle_datagram<'b>(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        datagram: &[u8],
        buf: &'b mut [u8],
    ) -> Option<Output<'b, K>> {
        match packet::classify(datagram) {
            DatagramKind::Stun => {
                self.handle_stun(now, local, from, datagram);
                None
            }
            DatagramKind::WireGuard => {
                let out = self.handle_wireguard(now, local, from, datagram, buf);
                self.through_relay(now, out)
            }
            DatagramKind::ChannelData => {
                self.shared.stats.unhandled_channel_data += 1;
                None
            }
            DatagramKind::Unknown => {
                self.shared.stats.unknown_datagrams += 1;
                None
            }
        }
    }

    /// A datagram from relay `i`'s listener: TURN control for its client,
    /// or a peer's datagram to our relayed address, unwrapped and handled
    /// as if it had arrived there.
    fn handle_from_relay<'b>(
        &mut self,
        now: Instant,
        i: usize,
        datagram: &[u8],
        buf: &'b mut [u8],
    ) -> Option<Output<'b, K>> {
        let relay = &mut self.relays[i];
        let inner = relay.client.handle_input(now, datagram);
        let relayed = relay.client.relayed();
        self.drain_relay_events(now);
        let ((peer, data), relayed) = inner.zip(relayed)?;
        match packet::classify(data) {
            DatagramKind::ChannelData => {
                self.shared.stats.unknown_datagrams += 1;
                return None;
            }
            DatagramKind::Stun => {}
            _ => {
                // The peer's traffic on an ICE-only connection's relayed
                // path goes to the owner (a scan: relayed ICE-only paths
                // are few, and direct ones never come through here).
                let id = self.connections.iter().find_map(|(id, c)| {
                    let on_path = c
                        .path
                        .is_some_and(|p| p.local == relayed && p.remote == peer);
                    (c.tunn.is_none() && on_path).then(|| id.clone())
                });
                if let Some(conn) = id {
                    if buf.len() < data.len() {
                        self.shared.stats.short_buffer += 1;
                        return None;
                    }
                    buf[..data.len()].copy_from_slice(data);
                    return Some(Output::Relayed {
                        conn,
                        datagram: &buf[..data.len()],
                    });
                }
            }
        }
        self.handle_datagram(now, relayed, peer, data, buf)
    }

    /// Replies that must leave from a relayed address go through its TURN
    /// client (rare: handshake responses, cookies).
    fn through_relay<'b>(
        &mut self,
        now: Instant,
        out: Option<Output<'b, K>>,
    ) -> Option<Output<'b, K>> {
        if let Some(Output::Transmit(t)) = &out
            && let Some(r) = self.relays.iter_mut().find(|r| r.relays_for(t.source))
        {
            r.client.send_to(now, t.destination, t.payload);
            return None;
        }
        out
    }

    // ---- relays -------------------------------------------------------------

    /// Uses a TURN relay, reached from the local socket `local`: its
    /// relayed address becomes a candidate of every connection once
    /// allocated, and the address it sees us from a server-reflexive one.
    /// For a relay over TCP the owner carries the transmits to
    /// `config.server` over its stream and feeds frames back as
    /// `Input::Network { local, from: config.server, .. }`.
    pub fn add_relay(
        &mut self,
        now: Instant,
        local: SocketAddr,
        config: TurnConfig,
    ) -> Result<(), Error> {
        self.now = Some(now);
        if self
            .relays
            .iter()
            .any(|r| r.client.server() == config.server)
        {
            return Err(Error::DuplicateRelay);
        }
        let seed = self.shared.rng.next_u64();
        self.relays.push(Relay {
            local,
            client: TurnClient::new(config, now, seed),
            candidate: None,
        });
        Ok(())
    }

    /// Stops using the relay at `server`: its allocation is released and
    /// its candidate withdrawn from every connection.
    pub fn remove_relay(&mut self, now: Instant, server: SocketAddr) -> bool {
        let Some(i) = self.relays.iter().position(|r| r.client.server() == server) else {
            return false;
        };
        let mut relay = self.relays.remove(i);
        if let Some(c) = relay.candidate.take() {
            for conn in self.connections.values_mut() {
                conn.agent.invalidate_candidate(&c);
            }
        }
        relay.client.release(now);
        // The release goes out now; the client is dropped after.
        while let Some(b) = relay.client.poll_transmit() {
            self.shared.transmits.push_back((
                None,
                Transmit {
                    source: relay.local,
                    destination: server,
                    payload: b,
                },
            ));
        }
        true
    }

    /// Relays in use: (server, transport, relayed address if allocated).
    pub fn relays(
        &self,
    ) -> impl Iterator<Item = (SocketAddr, crate::turn::Transport, Option<SocketAddr>)> + '_ {
        self.relays.iter().map(|r| {
            (
                r.client.server(),
                r.client.config().transport,
                r.client.relayed(),
            )
        })
    }

    /// Turns TURN client events into candidate changes.
    fn drain_relay_events(&mut self, now: Instant) {
        for i in 0..self.relays.len() {
            while let Some(e) = self.relays[i].client.poll_event() {
                match e {
                    TurnEvent::Allocated {
                        relayed, mapped, ..
                    } => {
                        let local = self.relays[i].local;
                        self.withdraw_relayed(i);
                        let c = match Candidate::relayed(relayed, local, "udp") {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::warn!(%relayed, %e, "relayed address is no candidate");
                                continue;
                            }
                        };
                        for (id, conn) in &mut self.connections {
                            if let Some(added) = conn.agent.add_local_candidate(c.clone()) {
                                push_candidate(id, added, &mut self.shared);
                            }
                            conn.drain_ice(id, now, &mut self.shared);
                        }
                        self.relays[i].candidate = Some(c);
                        // Over TCP the mapped address is a TCP one: no UDP
                        // candidate.
                        let udp = self.relays[i].client.config().transport == Transport::Udp;
                        if udp && mapped != local {
                            let _ = self.add_server_reflexive_candidate(mapped, local);
                        }
                    }
                    TurnEvent::AllocationLost { relayed } => {
                        tracing::debug!(%relayed, "relayed candidate withdrawn");
                        self.withdraw_relayed(i);
                    }
                    other => tracing::debug!(?other, "TURN"),
                }
            }
        }
    }

    fn withdraw_relayed(&mut self, i: usize) {
        if let Some(c) = self.relays[i].candidate.take() {
            for conn in self.connections.values_mut() {
                conn.agent.invalidate_candidate(&c);
            }
        }
    }

    fn handle_tun<'b>(
        &mut self,
        now: Instant,
        packet: &[u8],
        buf: &'b mut [u8],
    ) -> Option<Output<'b, K>> {
        let Some(dst) = packet::destination(packet) else {
            self.shared.stats.malformed_ip += 1;
            return None;
        };
        let Some(Target::Conn(id)) = self.routes.lookup(dst) else {
            self.hold_pending(now, dst, packet);
            return None;
        };
        let conn = self.connections.get_mut(id)?;
        let Some(path) = conn.path.filter(|_| conn.established) else {
            if conn.buffer.push(packet) {
                self.shared.stats.buffer_dropped += 1;
            }
            return None;
        };
        // ICE-only connections have no routes (`add_route` refuses them).
        let tunn = conn.tunn.as_mut()?;
        if buf.len() < (packet.len() + WG_OVERHEAD + CHANNEL_OVERHEAD).max(WG_MIN_BUFFER) {
            self.shared.stats.short_buffer += 1;
            return None;
        }
        if let Some(relay) = self.relays.iter_mut().find(|r| r.relays_for(path.local)) {
            let Some(channel) = relay.client.channel_to(path.remote) else {
                // No channel yet: the client sends a Send indication or
                // holds the datagram until its permission is installed.
                if let TunnResult::WriteToNetwork(d) =
                    tunn.encapsulate(packet, &mut self.shared.scratch)
                {
                    relay.client.send_to(now, path.remote, d);
                }
                return None;
            };
            // ChannelData in place: encrypt behind a 4-byte header.
            let n = match tunn.encapsulate(packet, &mut buf[4..]) {
                TunnResult::WriteToNetwork(d) => d.len(),
                _ => {
                    self.shared.stats.wireguard_errors += 1;
                    return None;
                }
            };
            let (header, pad) = relay.client.channel_header(channel, n);
            buf[..4].copy_from_slice(&header);
            let end = 4 + n + pad;
            buf[4 + n..end].fill(0);
            return Some(Output::Transmit(Transmit {
                source: relay.local,
                destination: relay.client.server(),
                payload: &buf[..end],
            }));
        }
        match tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(d) => Some(Output::Transmit(Transmit {
                source: path.local,
                destination: path.remote,
                payload: d,
            })),
            TunnResult::Err(e) => {
                self.shared.stats.wireguard_errors += 1;
                tracing::debug!(?e, "encapsulate failed");
                None
            }
            _ => None,
        }
    }

    fn hold_pending(&mut self, now: Instant, dst: IpAddr, packet: &[u8]) {
        let config = &self.shared.config;
        if let Some(p) = self.pending.get_mut(&dst) {
            if p.packets.push(packet) {
                self.shared.stats.pending_dropped += 1;
            }
            if now >= p.asked_at + config.authorization_retry {
                p.asked_at = now;
                self.shared
                    .events
                    .push_back(Event::NeedAuthorization { dst });
            }
            return;
        }
        if self.pending.len() >= config.pending_destinations {
            self.shared.stats.pending_dropped += 1;
            return;
        }
        let mut packets = PacketBuffer::new(config.pending_packets);
        if packets.push(packet) {
            self.shared.stats.pending_dropped += 1;
        }
        self.pending.insert(
            dst,
            Pending {
                packets,
                since: now,
                asked_at: now,
            },
        );
        self.shared
            .events
            .push_back(Event::NeedAuthorization { dst });
    }

    fn handle_stun(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, d: &[u8]) {
        let Ok(message) = StunMessage::parse(d) else {
            self.shared.stats.unmatched_stun += 1;
            return;
        };
        let id = if message.is_binding_request() {
            message
                .split_username()
                .and_then(|(ours, _)| self.by_ufrag.get(ours))
                .cloned()
        } else {
            // Responses carry no username: the transaction id (checked
            // first, before any HMAC) finds the agent that sent the check.
            self.connections
                .iter()
                .find(|(_, c)| c.agent.accepts_message(&message))
                .map(|(k, _)| k.clone())
        };
        let Some((id, conn)) = id.and_then(|id| {
            let conn = self.connections.get_mut(&id)?;
            Some((id, conn))
        }) else {
            self.shared.stats.unmatched_stun += 1;
            return;
        };
        let accepted = conn.agent.handle_packet(
            now,
            StunPacket {
                proto: Protocol::Udp,
                source: from,
                destination: local,
                message,
            },
        );
        if !accepted {
            self.shared.stats.unmatched_stun += 1;
        }
        conn.drain_ice(&id, now, &mut self.shared);
    }

    fn handle_wireguard<'b>(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        d: &[u8],
        buf: &'b mut [u8],
    ) -> Option<Output<'b, K>> {
        let Ok(parsed) = Tunn::parse_incoming_packet(d) else {
            self.shared.stats.wireguard_errors += 1;
            return None;
        };
        let (id, is_response, is_data) = match &parsed {
            Packet::HandshakeInit(init) => (
                parse_handshake_anon(&self.secret, &self.public, init)
                    .ok()
                    .and_then(|h| self.by_peer_key.get(&h.peer_static_public)),
                false,
                false,
            ),
            Packet::HandshakeResponse(r) => {
                (self.by_index.get(&(r.receiver_idx >> 8)), true, false)
            }
            Packet::PacketCookieReply(c) => {
                (self.by_index.get(&(c.receiver_idx >> 8)), false, false)
            }
            Packet::PacketData(p) => (self.by_index.get(&(p.receiver_idx >> 8)), false, true),
        };
        let Some(id) = id.cloned() else {
            self.shared.stats.unknown_peer += 1;
            return None;
        };
        let conn = self.connections.get_mut(&id)?;
        if buf.len() < d.len().max(WG_MIN_BUFFER) {
            self.shared.stats.short_buffer += 1;
            return None;
        }
        // Only WireGuard connections are in the index and key maps.
        let tunn = conn.tunn.as_mut()?;
        let was_established = conn.established;
        let output = match tunn.decapsulate(Some(from.ip()), d, buf) {
            TunnResult::WriteToNetwork(reply) => {
                // The initiator's keepalive after a handshake response
                // confirms the session on our side.
                conn.established |= is_response;
                // Replies go back the way the datagram came.
                Some(Output::Transmit(Transmit {
                    source: local,
                    destination: from,
                    payload: &*reply,
                }))
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                conn.established = true;
                deliver(&self.routes, &mut self.shared.stats, &id, p, src.into())
            }
            TunnResult::WriteToTunnelV6(p, src) => {
                conn.established = true;
                deliver(&self.routes, &mut self.shared.stats, &id, p, src.into())
            }
            TunnResult::Done => {
                // A keepalive: the peer has the session.
                conn.established |= is_data;
                None
            }
            TunnResult::Err(e) => {
                self.shared.stats.wireguard_errors += 1;
                tracing::debug!(?e, "decapsulate failed");
                None
            }
        };
        if conn.is_static
            && output.is_some()
            && conn
                .path
                .is_some_and(|p| p.remote != from || p.local != local)
        {
            // Roaming, as WireGuard does: answer where authenticated
            // packets come from.
            conn.path = Some(crate::types::Path {
                local,
                remote: from,
                kind: crate::types::PathKind::Direct,
            });
        }
        if is_response {
            // Packets boringtun itself queued while it had no session.
            while let TunnResult::WriteToNetwork(q) =
                tunn.decapsulate(None, &[], &mut self.shared.scratch)
            {
                let q = q.to_vec();
                self.shared.queue(&id, local, from, q);
            }
        }
        if conn.established && !was_established {
            tracing::debug!(conn = ?id, "WireGuard session established");
            conn.adopt_initiator_path(local, from);
        }
        conn.update_up(&id, now, &mut self.shared);
        output
    }

    // ---- time ---------------------------------------------------------------

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let config = &self.shared.config;
        let pending = self
            .pending
            .values()
            .map(|p| p.since + config.pending_timeout)
            .min();
        let conns = self
            .connections
            .values_mut()
            .filter_map(|c| c.next_timeout(config))
            .min();
        let relays = self
            .relays
            .iter()
            .filter_map(|r| r.client.poll_timeout())
            .min();
        [pending, conns, self.rate_reset_at, relays]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        for r in &mut self.relays {
            if r.client.poll_timeout().is_some_and(|t| t <= now) {
                r.client.handle_timeout(now);
            }
        }
        self.drain_relay_events(now);
        if self.rate_reset_at.is_none_or(|t| now >= t) {
            self.rate_limiter.reset_count();
            self.rate_reset_at = (!self.connections.is_empty()).then_some(now + RATE_LIMIT_PERIOD);
        }

        let timeout = self.shared.config.pending_timeout;
        let stats = &mut self.shared.stats;
        self.pending.retain(|_, p| {
            let keep = now < p.since + timeout;
            if !keep {
                stats.pending_dropped += p.packets.len() as u64;
            }
            keep
        });

        let mut failed = Vec::new();
        let mut restart = Vec::new();
        for (id, conn) in &mut self.connections {
            let out = &mut self.shared;
            if conn.agent.poll_timeout().is_some_and(|t| t <= now) {
                conn.agent.handle_timeout(now);
            }
            conn.drain_ice(id, now, out);

            if conn.role == Role::Initiator
                && !conn.established
                && conn
                    .handshake_at
                    .is_some_and(|t| now >= t + out.config.handshake_retry)
            {
                conn.start_handshake(id, now, true, out);
            }
            if now >= conn.wireguard_tick_at {
                conn.wireguard_tick_at = now + out.config.wireguard_tick;
                if !conn.wireguard_tick(id, out) {
                    failed.push(id.clone());
                    continue;
                }
            }
            if conn.restart_at.is_some_and(|t| now >= t) {
                if conn.agent.state().is_connected() {
                    conn.restart_at = None;
                } else {
                    conn.restart_at = Some(now + out.config.ice_restart_interval);
                    restart.push(id.clone());
                }
            }
            if conn.fail_at.is_some_and(|t| now >= t) && !conn.is_up() {
                failed.push(id.clone());
            }
        }
        for id in restart {
            self.restart_ice(now, &id);
        }
        if std::mem::take(&mut self.shared.relayed_path_lost) {
            for r in &mut self.relays {
                r.client.check_allocation(now);
            }
        }
        for id in failed {
            if self.remove_connection(&id) {
                tracing::debug!(conn = ?id, "connection failed");
                self.shared
                    .events
                    .push_back(Event::ConnectionFailed { conn: id });
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<Vec<u8>>> {
        loop {
            for r in &mut self.relays {
                if let Some(payload) = r.client.poll_transmit() {
                    return Some(Transmit {
                        source: r.local,
                        destination: r.client.server(),
                        payload,
                    });
                }
            }
            let (_, t) = self.shared.transmits.pop_front()?;
            // Datagrams from a relayed address go to the peer through the
            // relay (ChannelData, or a Send indication).
            match (
                self.relays.iter_mut().find(|r| r.relays_for(t.source)),
                self.now,
            ) {
                (Some(r), Some(now)) => {
                    r.client.send_to(now, t.destination, &t.payload);
                }
                _ => return Some(t),
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<Event<K>> {
        self.shared.events.pop_front()
    }
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target<K> {
    Conn(K),
    /// Held until a connection is routed there ([`Node::hold_route`]).
    Hold,
}

impl<K> Target<K> {
    fn conn(self) -> Option<K> {
        match self {
            Target::Conn(k) => Some(k),
            Target::Hold => None,
        }
    }
}

/// Cryptokey routing: a decrypted packet is accepted only if its source
/// routes back to the connection it arrived on.
fn deliver<'b, K: ConnectionId>(
    routes: &RouteTable<Target<K>>,
    stats: &mut Stats,
    id: &K,
    packet: &'b mut [u8],
    src: IpAddr,
) -> Option<Output<'b, K>> {
    if !matches!(routes.lookup(src), Some(Target::Conn(owner)) if owner == id) {
        stats.bad_source += 1;
        return None;
    }
    Some(Output::Tun {
        conn: id.clone(),
        packet: &*packet,
    })
}
