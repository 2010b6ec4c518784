//! The IO shell around the sans-IO TURN core: one task owns the core and
//! the listener; relay sockets and TCP connections feed it through a channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use keyhole_stun::server::{Event, Server, ServerConfig, Transmit, Transport};
use std::os::fd::AsRawFd as _;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::batch;
use crate::ports::SocketPorts;
use crate::stats::Stats;
use crate::xdp::{ChannelMirror, FastPath};

/// Work for the event loop from other tasks.
pub enum Inbound {
    /// Datagrams (peer, payload) that arrived on relay address `relay`.
    Peer {
        relay: SocketAddr,
        datagrams: Vec<(SocketAddr, Vec<u8>)>,
    },
    TcpOpened {
        client: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
    },
    TcpFrame {
        client: SocketAddr,
        frame: Vec<u8>,
    },
    TcpClosed {
        client: SocketAddr,
    },
}

/// The fast path (if attached) and the mirror that keeps its maps in step
/// with the core's channel events.
pub struct FastPathSync {
    pub fast_path: Option<FastPath>,
    pub mirror: ChannelMirror,
}

impl FastPathSync {
    fn on_event(&mut self, e: &Event, stats: &Stats) {
        let Some(fp) = self.fast_path.as_mut() else {
            return;
        };
        for op in self.mirror.handle(e) {
            if let Err(err) = fp.apply(&op) {
                // That channel's datagrams keep going through userspace.
                Stats::add(&stats.xdp_map_errors, 1);
                tracing::warn!(error = %err, ?op, "fast path map update failed");
            }
        }
        stats.xdp_channels.store(
            self.mirror.active_channels() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Inputs handled before yielding, so timers and other tasks keep running.
const BATCH: usize = 256;

pub async fn run(
    config: ServerConfig,
    listener: UdpSocket,
    // UDP GSO on sends and GRO on the listener (off: --no-udp-offload).
    offload: bool,
    ports: SocketPorts,
    mut inbound: mpsc::Receiver<Inbound>,
    stats: Arc<Stats>,
    mut fast: FastPathSync,
) -> anyhow::Result<()> {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    let mut server = Server::new(config, ports, Instant::now(), unix_now);
    let mut tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut recv = batch::RecvBatch::default();
    if !offload {
        batch::disable_gso();
    } else if let Err(e) = batch::enable_gro(listener.as_raw_fd()) {
        tracing::info!(error = %e, "UDP GRO unavailable on the listener");
    }
    let mut out = Outbox::default();
    let count_client = |data: &[u8]| {
        Stats::add(&stats.client_datagrams, 1);
        if matches!(data.first(), Some(0x40..=0x7f)) {
            Stats::add(&stats.client_channel_data, 1);
        }
    };
    loop {
        let deadline = server.poll_timeout();
        let sleep = tokio::time::sleep_until(deadline.map_or_else(
            || tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
            Into::into,
        ));
        tokio::select! {
            biased;
            () = sleep => server.handle_timeout(Instant::now()),
            r = listener.readable() => match r {
                Ok(()) => {
                    // Drain what is queued, a batch per syscall, without waiting.
                    for _ in 0..BATCH / batch::BATCH {
                        let n = match listener.try_io(Interest::READABLE, || recv.recv(listener.as_raw_fd())) {
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "listener receive error");
                                break;
                            }
                        };
                        let now = Instant::now();
                        for (from, data) in recv.datagrams(n) {
                            count_client(data);
                            server.handle_input(now, from, Transport::Udp, data);
                        }
                        if n < batch::BATCH {
                            break;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "listener readiness error"),
            },
            msg = inbound.recv() => {
                let Some(mut msg) = msg else { anyhow::bail!("all inbound senders closed") };
                let now = Instant::now();
                // What else is queued goes in the same send batch.
                let mut handled = 0;
                loop {
                    match msg {
                        Inbound::Peer { relay, datagrams } => {
                            handled += datagrams.len();
                            for (peer, data) in datagrams {
                                Stats::add(&stats.peer_datagrams, 1);
                                server.handle_peer_input(now, relay, peer, &data);
                                // Transmits now, while they are this datagram's.
                                drain(&mut server, &mut fast, &mut out, &tcp, &stats, Some(data.len()));
                            }
                        }
                        Inbound::TcpOpened { client, tx } => { tcp.insert(client, tx); }
                        Inbound::TcpFrame { client, frame } => server.handle_input(now, client, Transport::Tcp, &frame),
                        Inbound::TcpClosed { client } => {
                            tcp.remove(&client);
                            server.handle_connection_closed(client);
                        }
                    }
                    handled += 1;
                    if handled >= BATCH {
                        break;
                    }
                    match inbound.try_recv() {
                        Ok(next) => msg = next,
                        Err(_) => break,
                    }
                }
            }
        }
        drain(&mut server, &mut fast, &mut out, &tcp, &stats, None);
        out.flush(&listener).await;
        stats.allocations.store(
            server.allocation_count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Applies the core's events to the fast path, then queues its transmits.
/// `from_peer`: the size of the peer datagram the transmits relay, if any.
fn drain(
    server: &mut Server<SocketPorts>,
    fast: &mut FastPathSync,
    out: &mut Outbox,
    tcp: &HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    stats: &Stats,
    from_peer: Option<usize>,
) {
    // Map updates first: a client may send ChannelData as soon as it
    // reads the ChannelBind response, and it should take the fast path.
    while let Some(e) = server.poll_event() {
        log_event(&e);
        fast.on_event(&e, stats);
    }
    while let Some(t) = server.poll_transmit() {
        match &t {
            Transmit::ToPeer { payload, .. } => {
                Stats::add(&stats.to_peer_packets, 1);
                Stats::add(&stats.to_peer_bytes, payload.len() as u64);
            }
            Transmit::ToClient { .. } => {
                if let Some(n) = from_peer {
                    Stats::add(&stats.to_client_packets, 1);
                    Stats::add(&stats.to_client_bytes, n as u64);
                }
            }
        }
        match t {
            Transmit::ToClient {
                client,
                transport: Transport::Udp,
                payload,
            } => out.push(None, client, payload),
            Transmit::ToClient {
                client,
                transport: Transport::Tcp,
                payload,
            } => {
                if let Some(tx) = tcp.get(&client) {
                    // A full queue means a stalled reader: drop, like UDP would.
                    let _ = tx.try_send(payload);
                }
            }
            Transmit::ToPeer {
                relay,
                peer,
                payload,
            } => {
                if let Some(socket) = server.ports().socket(relay) {
                    out.push(Some(socket.clone()), peer, payload);
                }
            }
        }
    }
}

fn log_event(e: &Event) {
    match e {
        Event::AllocationCreated {
            client,
            relays,
            username,
            ..
        } => {
            tracing::info!(%client, ?relays, username, "allocation created")
        }
        Event::AllocationDeleted { client, reason, .. } => {
            tracing::info!(%client, ?reason, "allocation deleted")
        }
        other => tracing::debug!(event = ?other, "relay state"),
    }
}

/// UDP datagrams queued by one loop iteration, sent in batches per socket
/// (`None` is the listener).
#[derive(Default)]
struct Outbox {
    items: Vec<(Option<Arc<UdpSocket>>, SocketAddr, Vec<u8>)>,
}

impl Outbox {
    fn push(&mut self, socket: Option<Arc<UdpSocket>>, to: SocketAddr, payload: Vec<u8>) {
        self.items.push((socket, to, payload));
    }

    /// Sends everything: runs of the same socket go out with sendmmsg;
    /// whatever a full socket buffer refuses is sent waiting for it.
    async fn flush(&mut self, listener: &UdpSocket) {
        let items = std::mem::take(&mut self.items);
        let mut start = 0;
        while start < items.len() {
            let same = |(s, _, _): &(Option<Arc<UdpSocket>>, SocketAddr, Vec<u8>)| match (
                s,
                &items[start].0,
            ) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            let end = start + items[start..].iter().take_while(|i| same(i)).count();
            let socket: &UdpSocket = items[start].0.as_deref().unwrap_or(listener);
            let run: Vec<(SocketAddr, &[u8])> = items[start..end]
                .iter()
                .map(|(_, to, p)| (*to, p.as_slice()))
                .collect();
            let sent = socket
                .try_io(Interest::WRITABLE, || {
                    match batch::send_batch(socket.as_raw_fd(), &run) {
                        0 => Err(std::io::ErrorKind::WouldBlock.into()),
                        n => Ok(n),
                    }
                })
                .unwrap_or(0);
            for (to, payload) in &run[sent..] {
                if let Err(e) = socket.send_to(payload, *to).await {
                    tracing::debug!(%to, error = %e, "send failed");
                }
            }
            start = end;
        }
        self.items = items;
        self.items.clear();
    }
}
