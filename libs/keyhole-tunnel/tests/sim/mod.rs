//! Deterministic network simulation: two Nodes, a simulated clock, NATs,
//! latency, seeded loss, a signalling channel standing in for the portal.
//!
//! Host 0 is the client (initiator), host 1 the gateway (responder). The
//! connection id on each side is the peer's host number.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey as X25519Public, StaticSecret};
use keyhole_proto::{IceCandidate, IceCredentials, PresharedKey};
use keyhole_stun::auth::{rest_password, rest_username};
use keyhole_stun::server::{PortRange, Server, ServerConfig, Transmit, Transport};
use keyhole_tunnel::turn::TurnConfig;
use keyhole_tunnel::{
    ConnectionConfig, Event, IceConnectionConfig, Input, Node, NodeConfig, Output, Role,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

pub type Id = usize;

pub const CLIENT: usize = 0;
pub const GATEWAY: usize = 1;
pub const CLIENT_TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
pub const GATEWAY_TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// A resource network behind the gateway.
pub const RESOURCE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);
/// The relay: STUN/TURN listener; relayed addresses are on the same IP.
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const STUN_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(RELAY_IP), 3478);
const RELAY_SECRET: &[u8] = b"sim-relay-secret";
const UNIX0: u64 = 1_800_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping, address-dependent filtering
    /// ("restricted cone").
    EndpointIndependent,
    /// A new public port per destination; replies only from it.
    Symmetric,
}

struct Nat {
    kind: NatKind,
    public_ip: Ipv4Addr,
    next_port: u16,
    /// (internal, remote or None for EIM) → public port.
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// public port → internal socket.
    reverse: HashMap<u16, SocketAddr>,
    /// public port → remotes it may hear from (IPs for EIM, sockets for
    /// symmetric).
    allowed_ips: HashMap<u16, HashSet<IpAddr>>,
    allowed_socks: HashMap<u16, HashSet<SocketAddr>>,
}

impl Nat {
    fn new(kind: NatKind, public_ip: Ipv4Addr) -> Self {
        Self {
            kind,
            public_ip,
            next_port: 40_000,
            mappings: HashMap::new(),
            reverse: HashMap::new(),
            allowed_ips: HashMap::new(),
            allowed_socks: HashMap::new(),
        }
    }

    fn outbound(&mut self, internal: SocketAddr, remote: SocketAddr) -> SocketAddr {
        let key = match self.kind {
            NatKind::EndpointIndependent => (internal, None),
            NatKind::Symmetric => (internal, Some(remote)),
        };
        let port = *self.mappings.entry(key).or_insert_with(|| {
            self.next_port += 1;
            self.next_port
        });
        self.reverse.insert(port, internal);
        self.allowed_ips
            .entry(port)
            .or_default()
            .insert(remote.ip());
        self.allowed_socks.entry(port).or_default().insert(remote);
        SocketAddr::new(self.public_ip.into(), port)
    }

    fn inbound(&self, port: u16, from: SocketAddr) -> Option<SocketAddr> {
        let allowed = match self.kind {
            NatKind::EndpointIndependent => self.allowed_ips.get(&port)?.contains(&from.ip()),
            NatKind::Symmetric => self.allowed_socks.get(&port)?.contains(&from),
        };
        allowed.then(|| self.reverse[&port])
    }
}

pub struct Host {
    pub node: Node<Id>,
    pub private: SocketAddr,
    nat: Option<Nat>,
    /// Packets the node handed to TUN, with the connection they came on.
    pub tun_rx: Vec<(Id, Vec<u8>)>,
    pub events: Vec<(Duration, Event<Id>)>,
    /// Every IP packet this host's app gave to the node.
    pub tun_tx: Vec<Vec<u8>>,
    /// Datagrams the node handed out as `Output::Relayed`.
    pub relayed_rx: Vec<(Id, Vec<u8>)>,
    /// This host's WireGuard static key.
    pub private_key: [u8; 32],
    /// A stand-in for kernel WireGuard beside an ICE-only node.
    pub kernel_wg: Option<KernelWg>,
}

/// Kernel WireGuard as the gateway's kernel backend uses it: it owns the
/// host's socket for WireGuard datagrams (steering leaves them to it), its
/// peer endpoint is what `ConnectionUp` says, or a local proxy into the
/// node (`send_on_path`) when the path's local end is a relayed address.
pub struct KernelWg {
    pub tunn: Tunn,
    pub endpoint: Option<KernelEndpoint>,
    /// Decrypted packets.
    pub rx: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelEndpoint {
    Direct(SocketAddr),
    Proxy,
}

/// WireGuard message types 1..=4 followed by three zero bytes.
fn is_wireguard(d: &[u8]) -> bool {
    d.len() >= 4 && (1..=4).contains(&d[0]) && d[1..4] == [0, 0, 0]
}

enum Signal {
    Candidate(IceCandidate),
    Credentials(IceCredentials),
}

struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub hosts: Vec<Host>,
    rng: StdRng,
    /// Probability that any datagram is lost.
    pub loss: f64,
    pub latency: Duration,
    pub signal_latency: Duration,
    /// While true every datagram is dropped.
    pub blackhole: bool,
    /// While true datagrams between the two hosts are dropped (the relay
    /// still works).
    pub direct_blocked: bool,
    /// While true datagrams to and from the relay are dropped.
    pub relay_down: bool,
    /// keyhole-stun's TURN server core, if the hosts use a relay.
    pub relay: Option<Server<PortRange>>,
    /// Changes each side's connection config in `authorize`.
    #[allow(clippy::type_complexity)]
    pub connection_tweak: Option<Box<dyn Fn(usize, &mut ConnectionConfig)>>,
    in_flight: BinaryHeap<Reverse<(Instant, u64)>>,
    datagrams: HashMap<u64, Datagram>,
    /// (deliver at, to host, from host, signal)
    signals: VecDeque<(Instant, usize, usize, Signal)>,
    seq: u64,
    /// Every datagram that crossed the network.
    pub wire: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

fn seed32(seed: u64, salt: u8) -> [u8; 32] {
    let mut s = [salt; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s
}

impl Sim {
    /// Two hosts: `nats[i]` puts host i behind a NAT.
    pub fn new(seed: u64, nats: [Option<NatKind>; 2], tweak: impl Fn(&mut NodeConfig)) -> Self {
        // str0m's agent draws STUN transaction ids from fastrand.
        fastrand::seed(seed);
        let start = Instant::now();
        let mut hosts = Vec::new();
        for (i, nat) in nats.into_iter().enumerate() {
            let mut key = [0u8; 32];
            StdRng::from_seed(seed32(seed, 10 + i as u8)).fill_bytes(&mut key);
            let mut config = NodeConfig::new(key, seed32(seed, 20 + i as u8));
            tweak(&mut config);
            let private = match nat {
                Some(_) => SocketAddr::new(Ipv4Addr::new(10, i as u8, 0, 2).into(), 51820),
                None => SocketAddr::new(Ipv4Addr::new(192, 0, 2, 10 + i as u8).into(), 51820),
            };
            let mut node = Node::new(config);
            node.add_host_candidate(private).unwrap();
            let mut nat = nat.map(|k| Nat::new(k, Ipv4Addr::new(203, 0, 113, 1 + i as u8)));
            if let Some(nat) = &mut nat {
                let public = nat.outbound(private, STUN_SERVER);
                node.add_server_reflexive_candidate(public, private)
                    .unwrap();
            }
            hosts.push(Host {
                node,
                private,
                nat,
                tun_rx: Vec::new(),
                events: Vec::new(),
                tun_tx: Vec::new(),
                relayed_rx: Vec::new(),
                private_key: key,
                kernel_wg: None,
            });
        }
        Self {
            start,
            now: start,
            hosts,
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            latency: Duration::from_millis(15),
            signal_latency: Duration::from_millis(40),
            blackhole: false,
            direct_blocked: false,
            relay_down: false,
            relay: None,
            connection_tweak: None,
            in_flight: BinaryHeap::new(),
            datagrams: HashMap::new(),
            signals: VecDeque::new(),
            seq: 0,
            wire: Vec::new(),
            buf: vec![0; 70_000],
        }
    }

    /// Like [`Sim::new`], with a TURN relay both hosts use.
    pub fn with_relay(
        seed: u64,
        nats: [Option<NatKind>; 2],
        tweak: impl Fn(&mut NodeConfig),
    ) -> Self {
        let mut s = Self::new(seed, nats, tweak);
        let mut config = ServerConfig::new("keyhole.sim", RELAY_SECRET, seed32(seed, 30));
        config.relay_ipv4 = Some(RELAY_IP);
        s.relay = Some(Server::new(
            config,
            PortRange::new(50_000..=50_999),
            s.now,
            UNIX0,
        ));
        for h in 0..s.hosts.len() {
            let username = rest_username(UNIX0 + 24 * 3600, &format!("host-{h}"));
            let password = rest_password(RELAY_SECRET, &username);
            let private = s.hosts[h].private;
            let now = s.now;
            s.hosts[h]
                .node
                .add_relay(
                    now,
                    private,
                    TurnConfig::new(STUN_SERVER, username, password),
                )
                .unwrap();
            s.drain(h);
        }
        s
    }

    /// The relay loses every allocation (a restart).
    pub fn restart_relay(&mut self) {
        let Some(old) = self.relay.take() else { return };
        let mut config = old.config().clone();
        config.nonce_secret[0] ^= 0xFF;
        let unix = UNIX0 + self.elapsed().as_secs();
        self.relay = Some(Server::new(
            config,
            PortRange::new(51_000..=51_999),
            self.now,
            unix,
        ));
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Hook for tests to change a side's connection config before it is
    /// added (set through `connection_tweak`).
    fn tweak_connection(&self, i: usize, config: &mut ConnectionConfig) {
        if let Some(f) = &self.connection_tweak {
            f(i, config);
        }
    }

    /// What the portal does on authorisation: both sides get a connection
    /// and routes (client: the resource network and the gateway's tunnel
    /// address; gateway: the client's tunnel address).
    pub fn authorize(&mut self) {
        let mut psk = [0u8; 32];
        self.rng.fill_bytes(&mut psk);
        let creds: Vec<IceCredentials> = self
            .hosts
            .iter_mut()
            .map(|h| h.node.new_ice_credentials())
            .collect();
        let keys: Vec<_> = self.hosts.iter().map(|h| h.node.public_key()).collect();
        for i in 0..2 {
            let peer = 1 - i;
            let mut config = ConnectionConfig {
                role: if i == CLIENT {
                    Role::Initiator
                } else {
                    Role::Responder
                },
                peer_public_key: keys[peer],
                preshared_key: Some(PresharedKey::from_bytes(psk)),
                local_credentials: creds[i].clone(),
                remote_credentials: creds[peer].clone(),
                persistent_keepalive: None,
                static_path: None,
            };
            self.tweak_connection(i, &mut config);
            let now = self.now;
            self.hosts[i]
                .node
                .add_connection(now, peer, config)
                .unwrap();
        }
        let now = self.now;
        let client = &mut self.hosts[CLIENT].node;
        client
            .add_route(now, "10.99.0.0/24".parse().unwrap(), &GATEWAY)
            .unwrap();
        client
            .add_route(now, "100.64.0.2/32".parse().unwrap(), &GATEWAY)
            .unwrap();
        self.hosts[GATEWAY]
            .node
            .add_route(now, "100.64.0.1/32".parse().unwrap(), &CLIENT)
            .unwrap();
    }

    /// Like [`Sim::authorize`], but the gateway runs an ICE-only connection
    /// and its WireGuard is a [`KernelWg`] (the kernel backend).
    pub fn authorize_ice_only_gateway(&mut self) {
        let mut psk = [0u8; 32];
        self.rng.fill_bytes(&mut psk);
        let creds: Vec<IceCredentials> = self
            .hosts
            .iter_mut()
            .map(|h| h.node.new_ice_credentials())
            .collect();
        let now = self.now;
        let gateway_key = self.hosts[GATEWAY].node.public_key();
        let client_key = self.hosts[CLIENT].node.public_key();
        let client = ConnectionConfig {
            role: Role::Initiator,
            peer_public_key: gateway_key,
            preshared_key: Some(PresharedKey::from_bytes(psk)),
            local_credentials: creds[CLIENT].clone(),
            remote_credentials: creds[GATEWAY].clone(),
            persistent_keepalive: None,
            static_path: None,
        };
        self.hosts[CLIENT]
            .node
            .add_connection(now, GATEWAY, client)
            .unwrap();
        let client_node = &mut self.hosts[CLIENT].node;
        client_node
            .add_route(now, "10.99.0.0/24".parse().unwrap(), &GATEWAY)
            .unwrap();
        let gw = &mut self.hosts[GATEWAY];
        gw.node
            .add_ice_connection(
                now,
                CLIENT,
                IceConnectionConfig {
                    role: Role::Responder,
                    local_credentials: creds[GATEWAY].clone(),
                    remote_credentials: creds[CLIENT].clone(),
                },
            )
            .unwrap();
        gw.kernel_wg = Some(KernelWg {
            tunn: Tunn::new(
                StaticSecret::from(gw.private_key),
                X25519Public::from(*client_key.as_bytes()),
                Some(psk),
                None,
                7,
                None,
            ),
            endpoint: None,
            rx: Vec::new(),
        });
    }

    /// The gateway's kernel WireGuard sends an IP packet to the client.
    pub fn kernel_send_ip(&mut self, h: usize, packet: Vec<u8>) {
        let mut buf = vec![0u8; packet.len() + 64];
        self.hosts[h].tun_tx.push(packet.clone());
        let wg = self.hosts[h].kernel_wg.as_mut().expect("kernel WireGuard");
        if let TunnResult::WriteToNetwork(d) = wg.tunn.encapsulate(&packet, &mut buf) {
            let d = d.to_vec();
            self.kernel_wg_send(h, d);
        }
    }

    /// A WireGuard datagram reaches the host's kernel WireGuard.
    fn kernel_wg_input(&mut self, h: usize, from: SocketAddr, datagram: &[u8]) {
        let mut buf = vec![0u8; datagram.len().max(148) + 64];
        let mut out = Vec::new();
        {
            let wg = self.hosts[h].kernel_wg.as_mut().expect("kernel WireGuard");
            match wg.tunn.decapsulate(Some(from.ip()), datagram, &mut buf) {
                TunnResult::WriteToNetwork(d) => {
                    out.push(d.to_vec());
                    let mut more = vec![0u8; 2048];
                    while let TunnResult::WriteToNetwork(q) =
                        wg.tunn.decapsulate(None, &[], &mut more)
                    {
                        out.push(q.to_vec());
                    }
                }
                TunnResult::WriteToTunnelV4(p, _) => wg.rx.push(p.to_vec()),
                _ => {}
            }
        }
        for d in out {
            self.kernel_wg_send(h, d);
        }
    }

    fn kernel_wg_send(&mut self, h: usize, datagram: Vec<u8>) {
        let wg = self.hosts[h].kernel_wg.as_ref().expect("kernel WireGuard");
        match wg.endpoint {
            None => {}
            Some(KernelEndpoint::Direct(to)) => {
                let private = self.hosts[h].private;
                self.send_datagram(h, private, to, datagram);
            }
            Some(KernelEndpoint::Proxy) => {
                let mut buf = vec![0u8; datagram.len() + 16];
                let now = self.now;
                let t = self.hosts[h]
                    .node
                    .send_on_path(now, &(1 - h), &datagram, &mut buf)
                    .expect("the ICE-only connection has a path");
                if let Some(t) = t {
                    let payload = t.payload.to_vec();
                    self.send_datagram(h, t.source, t.destination, payload);
                }
                self.drain(h);
            }
        }
    }

    /// The app on host `h` writes an IP packet to TUN.
    pub fn send_ip(&mut self, h: usize, packet: Vec<u8>) {
        let mut buf = std::mem::take(&mut self.buf);
        let now = self.now;
        let out = self.hosts[h]
            .node
            .handle_input(now, Input::Tun(&packet), &mut buf);
        self.hosts[h].tun_tx.push(packet);
        self.output(h, out);
        self.buf = buf;
        self.drain(h);
    }

    fn output(&mut self, h: usize, out: Option<Output<'_, Id>>) {
        match out {
            Some(Output::Transmit(t)) => {
                let payload = t.payload.to_vec();
                self.send_datagram(h, t.source, t.destination, payload)
            }
            Some(Output::Tun { conn, packet }) => {
                self.hosts[h].tun_rx.push((conn, packet.to_vec()));
            }
            Some(Output::Relayed { conn, datagram }) => {
                let datagram = datagram.to_vec();
                self.hosts[h].relayed_rx.push((conn, datagram.clone()));
                if self.hosts[h].kernel_wg.is_some() {
                    // Through the local proxy: its address is the source.
                    let proxy = SocketAddr::from(([127, 0, 0, 1], 40_000));
                    self.kernel_wg_input(h, proxy, &datagram);
                }
            }
            None => {}
        }
    }

    fn send_datagram(&mut self, h: usize, source: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        assert_eq!(
            source, self.hosts[h].private,
            "sent from a socket the host lacks"
        );
        let from = match &mut self.hosts[h].nat {
            Some(nat) => nat.outbound(source, to),
            None => source,
        };
        self.put_on_wire(from, to, payload);
    }

    fn put_on_wire(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        self.wire.push(payload.clone());
        let relayed = from.ip() == IpAddr::V4(RELAY_IP) || to.ip() == IpAddr::V4(RELAY_IP);
        if self.blackhole
            || (relayed && self.relay_down)
            || (!relayed && self.direct_blocked)
            || self.rng.random_bool(self.loss)
        {
            return;
        }
        self.seq += 1;
        self.datagrams
            .insert(self.seq, Datagram { from, to, payload });
        self.in_flight
            .push(Reverse((self.now + self.latency, self.seq)));
    }

    fn deliver(&mut self, d: Datagram) {
        if self.blackhole {
            return;
        }
        if d.to.ip() == IpAddr::V4(RELAY_IP) {
            let now = self.now;
            let Some(relay) = &mut self.relay else { return };
            if d.to == STUN_SERVER {
                relay.handle_input(now, d.from, Transport::Udp, &d.payload);
            } else {
                relay.handle_peer_input(now, d.to, d.from, &d.payload);
            }
            self.drain_relay();
            return;
        }
        let target = self.hosts.iter().position(|h| match &h.nat {
            Some(nat) => IpAddr::V4(nat.public_ip) == d.to.ip(),
            None => h.private == d.to,
        });
        let Some(h) = target else { return };
        let local = match &self.hosts[h].nat {
            Some(nat) => match nat.inbound(d.to.port(), d.from) {
                Some(internal) => internal,
                None => return,
            },
            None => d.to,
        };
        if self.hosts[h].kernel_wg.is_some() && is_wireguard(&d.payload) {
            // Steering leaves WireGuard datagrams to the kernel.
            self.kernel_wg_input(h, d.from, &d.payload);
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let now = self.now;
        let out = self.hosts[h].node.handle_input(
            now,
            Input::Network {
                local,
                from: d.from,
                datagram: &d.payload,
            },
            &mut buf,
        );
        self.output(h, out);
        self.buf = buf;
        self.drain(h);
    }

    /// Sends what host `h` queued and acts on its events.
    fn drain(&mut self, h: usize) {
        while let Some(t) = self.hosts[h].node.poll_transmit() {
            self.send_datagram(h, t.source, t.destination, t.payload);
        }
        while let Some(e) = self.hosts[h].node.poll_event() {
            if let (Event::ConnectionUp { path, .. }, true) =
                (&e, self.hosts[h].kernel_wg.is_some())
            {
                // What the gateway sets over netlink.
                let endpoint = if self.hosts[h].node.is_relayed_address(path.local) {
                    KernelEndpoint::Proxy
                } else {
                    KernelEndpoint::Direct(path.remote)
                };
                if let Some(wg) = &mut self.hosts[h].kernel_wg {
                    wg.endpoint = Some(endpoint);
                }
            }
            let at = self.now + self.signal_latency;
            match &e {
                Event::LocalCandidate { conn, candidate } => {
                    self.signals
                        .push_back((at, *conn, h, Signal::Candidate(candidate.clone())))
                }
                Event::IceRestart { conn, credentials } => {
                    self.signals
                        .push_back((at, *conn, h, Signal::Credentials(credentials.clone())))
                }
                _ => {}
            }
            let elapsed = self.elapsed();
            self.hosts[h].events.push((elapsed, e));
        }
    }

    fn drain_relay(&mut self) {
        while let Some(t) = self.relay.as_mut().and_then(|r| r.poll_transmit()) {
            match t {
                Transmit::ToClient {
                    client, payload, ..
                } => self.put_on_wire(STUN_SERVER, client, payload),
                Transmit::ToPeer {
                    relay,
                    peer,
                    payload,
                } => self.put_on_wire(relay, peer, payload),
            }
        }
    }

    fn next_time(&mut self) -> Option<Instant> {
        let net = self.in_flight.peek().map(|Reverse((t, _))| *t);
        let sig = self.signals.front().map(|s| s.0);
        let nodes = self
            .hosts
            .iter_mut()
            .filter_map(|h| h.node.poll_timeout())
            .min();
        let relay = self.relay.as_ref().and_then(|r| r.poll_timeout());
        [net, sig, nodes, relay].into_iter().flatten().min()
    }

    /// Advances to the next thing that happens, if it is before `until`.
    fn step(&mut self, until: Instant) -> bool {
        for h in 0..self.hosts.len() {
            self.drain(h);
        }
        let Some(next) = self.next_time() else {
            self.now = until;
            return false;
        };
        if next > until {
            self.now = until;
            return false;
        }
        self.now = self.now.max(next);
        while let Some(Reverse((t, seq))) = self.in_flight.peek().copied() {
            if t > self.now {
                break;
            }
            self.in_flight.pop();
            if let Some(d) = self.datagrams.remove(&seq) {
                self.deliver(d);
            }
        }
        while self.signals.front().is_some_and(|s| s.0 <= self.now) {
            let (_, to, from, signal) = self.signals.pop_front().unwrap();
            let now = self.now;
            let node = &mut self.hosts[to].node;
            // The connection may be gone (failed or revoked): like the
            // portal's late messages, these are then ignored.
            let _ = match signal {
                Signal::Candidate(c) => node.add_remote_candidate(&from, &c),
                Signal::Credentials(c) => node.set_remote_credentials(now, &from, &c),
            };
            self.drain(to);
        }
        if let Some(r) = &mut self.relay
            && r.poll_timeout().is_some_and(|t| t <= self.now)
        {
            r.handle_timeout(self.now);
            self.drain_relay();
        }
        for h in 0..self.hosts.len() {
            if self.hosts[h]
                .node
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                let now = self.now;
                self.hosts[h].node.handle_timeout(now);
                self.drain(h);
            }
        }
        true
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
    }

    /// Runs until `pred` holds or `limit` of simulated time passed; returns
    /// whether it held.
    pub fn run_until(&mut self, limit: Duration, pred: impl Fn(&Sim) -> bool) -> bool {
        let until = self.now + limit;
        loop {
            if pred(self) {
                return true;
            }
            if !self.step(until) {
                return pred(self);
            }
        }
    }

    pub fn is_up(&self, h: usize) -> bool {
        let peer = 1 - h;
        self.hosts[h].node.connection(&peer).is_some_and(|c| c.up)
    }

    pub fn both_up(&self) -> bool {
        self.is_up(0) && self.is_up(1)
    }

    /// The events of host `h` without candidates, one per line.
    pub fn timeline(&self, h: usize) -> String {
        self.hosts[h]
            .events
            .iter()
            .filter(|(_, e)| !matches!(e, Event::LocalCandidate { .. }))
            .map(|(t, e)| format!("{t:?} {e:?}\n"))
            .collect()
    }

    pub fn events_of(&self, h: usize) -> impl Iterator<Item = &Event<Id>> {
        self.hosts[h].events.iter().map(|(_, e)| e)
    }
}

/// A minimal IPv4 packet (protocol 253, "experimentation") whose payload
/// is a marker, the sequence number and some filler.
pub fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut payload = b"KEYHOLE-PLAINTEXT".to_vec();
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(&[0xAB; 40]);
    let total = 20 + payload.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p.extend_from_slice(&payload);
    p
}

/// Sequence number of a packet made by [`ip_packet`].
pub fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[37..41].try_into().unwrap())
}
