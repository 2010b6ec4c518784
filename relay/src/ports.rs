//! Relay sockets: the port allocator the TURN core asks binds a real UDP
//! socket per relayed address and starts a task reading it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;

use keyhole_stun::AddressFamily;
use keyhole_stun::server::{PortRange, RelayPortAllocator};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::event_loop::Inbound;

struct RelaySocket {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

pub struct SocketPorts {
    range: PortRange,
    bind_v4: IpAddr,
    bind_v6: IpAddr,
    public_v4: Option<IpAddr>,
    public_v6: Option<IpAddr>,
    sockets: HashMap<(AddressFamily, u16), RelaySocket>,
    inbound: mpsc::Sender<Inbound>,
}

impl SocketPorts {
    pub fn new(
        range: RangeInclusive<u16>,
        bind: &[IpAddr],
        public_v4: Option<IpAddr>,
        public_v6: Option<IpAddr>,
        inbound: mpsc::Sender<Inbound>,
    ) -> Self {
        let bind_v4 = bind
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .unwrap_or(Ipv4Addr::UNSPECIFIED.into());
        let bind_v6 = bind
            .iter()
            .copied()
            .find(IpAddr::is_ipv6)
            .unwrap_or(Ipv6Addr::UNSPECIFIED.into());
        SocketPorts {
            range: PortRange::new(range),
            bind_v4,
            bind_v6,
            public_v4,
            public_v6,
            sockets: HashMap::new(),
            inbound,
        }
    }

    /// The socket of the relayed address `relay` (the core's public address).
    pub fn socket(&self, relay: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.sockets
            .get(&(AddressFamily::of(relay.ip()), relay.port()))
            .map(|s| &s.socket)
    }

    fn bind(&self, family: AddressFamily, port: u16) -> std::io::Result<UdpSocket> {
        let ip = match family {
            AddressFamily::V4 => self.bind_v4,
            AddressFamily::V6 => self.bind_v6,
        };
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        std_socket.set_nonblocking(true)?;
        UdpSocket::from_std(std_socket)
    }
}

impl SocketPorts {
    fn public(&self, family: AddressFamily) -> Option<IpAddr> {
        match family {
            AddressFamily::V4 => self.public_v4,
            AddressFamily::V6 => self.public_v6,
        }
    }

    /// Starts reading a bound relay socket and remembers it.
    fn open(&mut self, family: AddressFamily, public: IpAddr, port: u16, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let relay = SocketAddr::new(public, port);
        let reader = tokio::spawn(read_relay(socket.clone(), relay, self.inbound.clone()));
        self.sockets
            .insert((family, port), RelaySocket { socket, reader });
    }
}

impl RelayPortAllocator for SocketPorts {
    fn allocate(&mut self, family: AddressFamily, even: bool) -> Option<u16> {
        let public = self.public(family)?;
        // Ports someone else holds stay marked until we give up, so the
        // range allocator offers new ones; then they go back to the pool.
        let mut busy = Vec::new();
        let found = loop {
            let Some(port) = self.range.allocate(family, even) else {
                break None;
            };
            match self.bind(family, port) {
                Ok(socket) => break Some((port, socket)),
                Err(e) => {
                    tracing::debug!(port, error = %e, "relay port unavailable");
                    busy.push(port);
                }
            }
        };
        for port in busy {
            self.range.release(family, port);
        }
        let (port, socket) = found?;
        self.open(family, public, port, socket);
        Some(port)
    }

    fn allocate_pair(&mut self, family: AddressFamily) -> Option<u16> {
        let public = self.public(family)?;
        let mut busy = Vec::new();
        let found = loop {
            let Some(port) = self.range.allocate_pair(family) else {
                break None;
            };
            match (self.bind(family, port), self.bind(family, port + 1)) {
                (Ok(a), Ok(b)) => break Some((port, a, b)),
                _ => busy.push(port),
            }
        };
        for port in busy {
            self.range.release(family, port);
            self.range.release(family, port + 1);
        }
        let (port, a, b) = found?;
        self.open(family, public, port, a);
        self.open(family, public, port + 1, b);
        Some(port)
    }

    fn release(&mut self, family: AddressFamily, port: u16) {
        if let Some(s) = self.sockets.remove(&(family, port)) {
            s.reader.abort();
        }
        self.range.release(family, port);
    }
}

/// Datagrams one relay socket hands the event loop per message at most.
const PEER_BATCH: usize = 32;

/// Reads a relay socket: waits for a datagram, then takes what else is
/// queued without waiting, and hands them over as one message (one channel
/// send and one event-loop wakeup per burst instead of per datagram).
async fn read_relay(socket: Arc<UdpSocket>, relay: SocketAddr, inbound: mpsc::Sender<Inbound>) {
    let mut buf = vec![0u8; 65536];
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(%relay, error = %e, "relay socket readiness error");
            continue;
        }
        let mut datagrams = Vec::new();
        while datagrams.len() < PEER_BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((n, peer)) => datagrams.push((peer, buf[..n].to_vec())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors surface as recv errors on Linux: hand over
                // what came before, then keep reading.
                Err(e) => {
                    tracing::debug!(%relay, error = %e, "relay socket receive error");
                    break;
                }
            }
        }
        if datagrams.is_empty() {
            continue;
        }
        if inbound
            .send(Inbound::Peer { relay, datagrams })
            .await
            .is_err()
        {
            return;
        }
    }
}
