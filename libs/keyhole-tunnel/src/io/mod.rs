//! IO shell (feature `io`): one thread owns the node, a UDP socket and a
//! TUN device, and runs them in the design's priority order so nothing
//! starves:
//!
//! 1. flush local buffers: queued datagrams (`poll_transmit`) and events
//!    (to a bounded channel; when it is full the event waits, never lost);
//! 2. due timers (`handle_timeout`);
//! 3. UDP in: one recvmmsg batch (GRO super-datagrams split), decrypted
//!    packets written to TUN;
//! 4. TUN in: up to `tun_batch` packets, encrypted datagrams coalesced into
//!    GSO sends.
//!
//! Every `yield_every` iterations of continuous work, and whenever idle,
//! the loop runs the owner's commands (closures over the node) and re-reads
//! the clock. Idle waits are one `poll(2)` on UDP, TUN and a waker socket,
//! bounded by the node's next timeout.

mod device;
mod tcp_relay;
mod tun;
mod udp;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use device::{TunOptions, create_tun};
pub use tun_rs::SyncDevice;

use crate::connection::ConnectionId;
use crate::turn::{Transport, TurnConfig};
use crate::{Event, Input, Node, Output};

/// boringtun wants room for a handshake message even for tiny datagrams.
const WG_MIN_BUFFER: usize = 148;
use tcp_relay::{Connected, TcpRelay, connect_in_background};
use tun::Tun;
use udp::Udp;

/// A change to the node, run on the shell's thread between batches.
pub type Command<K> = Box<dyn FnOnce(&mut Node<K>, Instant) + Send>;

/// What reaches the shell's thread from outside.
enum Msg<K> {
    Command(Command<K>),
    /// A TURN/TCP stream a connector thread opened.
    TcpRelay(Connected),
}

#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// Datagrams per recvmmsg (at most quinn-udp's batch size).
    pub udp_batch: usize,
    /// TUN packets read per round before UDP gets its turn again (a GSO
    /// super-packet counts as its segments; at least one read happens).
    pub tun_batch: usize,
    /// Decrypted packets gathered for one batched TUN write (GRO-coalesced
    /// per flow when the device has the offloads).
    pub tun_write_batch: usize,
    /// Iterations of continuous work before commands run and the clock is
    /// re-read.
    pub yield_every: usize,
    /// Events held for the owner before the loop stops draining them.
    pub event_queue: usize,
    /// Commands the owner may queue.
    pub command_queue: usize,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            udp_batch: 32,
            tun_batch: 128,
            tun_write_batch: 128,
            yield_every: 4096,
            event_queue: 1024,
            command_queue: 256,
        }
    }
}

/// Counters of the shell itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellStats {
    pub udp_in: u64,
    pub udp_out: u64,
    pub udp_send_errors: u64,
    pub tun_in: u64,
    pub tun_out: u64,
    pub tun_write_errors: u64,
    /// Super-packets tun-rs could not split (dropped).
    pub tun_read_errors: u64,
    pub yields: u64,
    /// Frames dropped because a TURN/TCP stream was full or lost.
    pub tcp_relay_dropped: u64,
    /// TURN/TCP streams (re)connected.
    pub tcp_relay_connects: u64,
    /// Whether the TUN device ran with the virtio-net header offloads.
    pub tun_offload: bool,
}

/// The owner's side of a running shell.
pub struct Handle<K> {
    commands: SyncSender<Msg<K>>,
    waker: UnixDatagram,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<ShellStats>>>,
    /// What the node reports (candidates to signal, connection up/down).
    pub events: Receiver<Event<K>>,
}

impl<K> Handle<K> {
    /// Runs `f` on the node between batches. Blocks if the command queue is
    /// full (the loop drains it at least every `yield_every` iterations).
    pub fn command(&self, f: impl FnOnce(&mut Node<K>, Instant) + Send + 'static) -> bool {
        let ok = self.commands.send(Msg::Command(Box::new(f))).is_ok();
        let _ = self.waker.send(&[1]);
        ok
    }
}

impl<K: Send + 'static> Handle<K> {
    /// Uses a TURN relay over TCP (for networks that block UDP): the shell
    /// connects in the background, adds the relay to the node once the
    /// stream is up, and reconnects (replacing the relay) when it is lost.
    pub fn add_tcp_relay(&self, mut config: TurnConfig) -> io::Result<()> {
        config.transport = Transport::Tcp;
        connect_in_background(
            config,
            Duration::ZERO,
            self.stop.clone(),
            self.commands.clone(),
            Msg::TcpRelay,
            self.waker.try_clone()?,
        );
        Ok(())
    }

    /// Stops the loop and returns its counters.
    pub fn stop(mut self) -> io::Result<ShellStats> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.send(&[1]);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("shell thread panicked")),
        }
    }
}

impl<K> Drop for Handle<K> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.send(&[1]);
    }
}

/// Starts the loop on its own thread. The UDP socket must be bound; its
/// local address should be a host candidate of the node (or the local
/// address of its static paths).
pub fn spawn<K: ConnectionId + Send + 'static>(
    node: Node<K>,
    udp: UdpSocket,
    tun: SyncDevice,
    config: ShellConfig,
) -> io::Result<Handle<K>> {
    let (commands, command_rx) = mpsc::sync_channel(config.command_queue);
    let (event_tx, events) = mpsc::sync_channel(config.event_queue);
    let (waker, wake_rx) = UnixDatagram::pair()?;
    wake_rx.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let udp = Udp::new(udp, config.udp_batch)?;
    let tun = Tun::new(tun, config.tun_write_batch)?;
    let mut shell = Shell {
        node,
        udp,
        tcp: Vec::new(),
        connector: (commands.clone(), waker.try_clone()?),
        config,
        commands: command_rx,
        events: event_tx,
        held_event: None,
        wake_rx,
        stop: stop.clone(),
        stats: ShellStats {
            tun_offload: tun.offload(),
            ..ShellStats::default()
        },
        tun,
        buf: vec![0; 65_536 + 256],
        replies: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("keyhole-tunnel".into())
        .spawn(move || shell.run())?;
    Ok(Handle {
        commands,
        waker,
        stop,
        thread: Some(thread),
        events,
    })
}

struct Shell<K> {
    node: Node<K>,
    udp: Udp,
    tun: Tun,
    tcp: Vec<TcpRelay>,
    /// For reconnecting TURN/TCP streams: where connectors deliver, and
    /// how they wake the loop.
    connector: (SyncSender<Msg<K>>, UnixDatagram),
    config: ShellConfig,
    commands: Receiver<Msg<K>>,
    events: SyncSender<Event<K>>,
    held_event: Option<Event<K>>,
    wake_rx: UnixDatagram,
    stop: Arc<AtomicBool>,
    stats: ShellStats,
    buf: Vec<u8>,
    /// Replies to datagrams of one UDP batch (handshake responses,
    /// cookies), sent after it.
    replies: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl<K: ConnectionId + Send + 'static> Shell<K> {
    fn run(&mut self) -> io::Result<ShellStats> {
        let mut iterations = 0usize;
        let mut now = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            // 1. Flush local buffers.
            self.flush_transmits();
            let events_blocked = self.flush_events();
            // 2. Due timers.
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
                self.flush_transmits();
            }
            // 3. UDP in (and TURN/TCP streams).
            let udp = self.read_udp(now)? + self.read_tcp(now);
            // 4. TUN in.
            let tun = self.read_tun(now)?;
            self.udp.flush();
            self.flush_tcp(now);

            iterations += 1;
            let idle = udp == 0 && tun == 0;
            if idle || iterations >= self.config.yield_every {
                // Forced yield: the owner's commands run, time advances.
                iterations = 0;
                self.stats.yields += 1;
                now = Instant::now();
                self.run_commands(now);
            }
            if idle {
                self.wait(now, events_blocked)?;
                now = Instant::now();
            }
        }
        self.tun.flush();
        self.stats.udp_out = self.udp.sent;
        self.stats.udp_send_errors = self.udp.send_errors;
        self.stats.tun_out = self.tun.written;
        self.stats.tun_write_errors = self.tun.write_errors;
        self.stats.tun_read_errors = self.tun.read_errors;
        self.stats.tcp_relay_dropped += self.tcp.iter().map(|r| r.dropped).sum::<u64>();
        Ok(self.stats.clone())
    }

    fn run_commands(&mut self, now: Instant) {
        while let Ok(msg) = self.commands.try_recv() {
            match msg {
                Msg::Command(cmd) => cmd(&mut self.node, now),
                Msg::TcpRelay(c) => self.add_tcp_relay(now, c),
            }
        }
    }

    fn add_tcp_relay(&mut self, now: Instant, c: Connected) {
        let server = c.config.server;
        let config = c.config.clone();
        let relay = match TcpRelay::new(c.stream, c.config) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%server, %e, "TURN/TCP stream unusable");
                return self.reconnect(config.backoff, Some(config));
            }
        };
        self.retire_tcp_relay(now, server);
        match self.node.add_relay(now, relay.local, relay.config.clone()) {
            Ok(()) => {
                tracing::debug!(%server, local = %relay.local, "TURN/TCP stream up");
                self.stats.tcp_relay_connects += 1;
                self.tcp.push(relay);
            }
            Err(e) => tracing::warn!(%server, %e, "TURN/TCP relay refused by the node"),
        }
    }

    /// Drops the stream to `server` (if any) and its relay in the node.
    fn retire_tcp_relay(&mut self, now: Instant, server: SocketAddr) {
        if let Some(i) = self.tcp.iter().position(|r| r.server() == server) {
            let r = self.tcp.swap_remove(i);
            self.stats.tcp_relay_dropped += r.dropped;
            self.node.remove_relay(now, server);
        }
    }

    fn reconnect(&self, delay: Duration, config: Option<TurnConfig>) {
        let Some(config) = config else { return };
        let Ok(waker) = self.connector.1.try_clone() else {
            return;
        };
        connect_in_background(
            config,
            delay,
            self.stop.clone(),
            self.connector.0.clone(),
            Msg::TcpRelay,
            waker,
        );
    }

    /// Writes queued stream bytes; lost streams are replaced.
    fn flush_tcp(&mut self, now: Instant) {
        for r in &mut self.tcp {
            r.flush();
        }
        while let Some(i) = self.tcp.iter().position(|r| r.dead) {
            let config = self.tcp[i].config.clone();
            self.retire_tcp_relay(now, config.server);
            // The release the node just queued has nowhere to go.
            self.flush_transmits();
            self.reconnect(config.backoff, Some(config));
        }
    }

    fn flush_transmits(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            send(
                &mut self.udp,
                &mut self.tcp,
                t.source,
                t.destination,
                &t.payload,
            );
        }
        self.udp.flush();
    }

    /// Returns true when the owner is not taking events.
    fn flush_events(&mut self) -> bool {
        loop {
            let Some(e) = self.held_event.take().or_else(|| self.node.poll_event()) else {
                return false;
            };
            match self.events.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    self.held_event = Some(e);
                    return true;
                }
                // Nobody listens: the events are of no use to anyone.
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    fn read_udp(&mut self, now: Instant) -> io::Result<usize> {
        let Self {
            node,
            udp,
            tun,
            stats,
            replies,
            ..
        } = self;
        let n = udp.recv_batch(|local, from, datagram| {
            stats.udp_in += 1;
            handle_network(node, tun, replies, now, local, from, datagram);
        })?;
        self.after_network();
        Ok(n)
    }

    fn read_tcp(&mut self, now: Instant) -> usize {
        if self.tcp.is_empty() {
            return 0;
        }
        let Self {
            node,
            tcp,
            tun,
            replies,
            ..
        } = self;
        let mut n = 0;
        for r in tcp.iter_mut() {
            n += r.recv(|local, from, frame| {
                handle_network(node, tun, replies, now, local, from, frame);
            });
        }
        self.after_network();
        n
    }

    /// Writes the decrypted batch to TUN, then sends the replies.
    fn after_network(&mut self) {
        self.tun.flush();
        for (source, dest, payload) in self.replies.drain(..) {
            send(&mut self.udp, &mut self.tcp, source, dest, &payload);
        }
    }

    fn read_tun(&mut self, now: Instant) -> io::Result<usize> {
        let Self {
            node,
            udp,
            tcp,
            tun,
            buf,
            stats,
            config,
            ..
        } = self;
        let mut n = 0;
        while n < config.tun_batch {
            let got = tun.recv(|packet| {
                if let Some(Output::Transmit(t)) = node.handle_input(now, Input::Tun(packet), buf) {
                    send(udp, tcp, t.source, t.destination, t.payload);
                }
            })?;
            if got == 0 {
                break;
            }
            n += got;
        }
        stats.tun_in += n as u64;
        Ok(n)
    }

    /// Sleeps until a socket is readable, a command arrives or the node's
    /// next timeout.
    fn wait(&mut self, now: Instant, events_blocked: bool) -> io::Result<()> {
        let mut timeout = self
            .node
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        if events_blocked {
            // Retry handing events over soon.
            timeout = timeout.min(Duration::from_millis(10));
        }
        let mut fds = vec![
            pollfd(self.udp.fd()),
            pollfd(self.tun.dev.as_raw_fd()),
            pollfd(self.wake_rx.as_raw_fd()),
        ];
        for r in &self.tcp {
            let mut p = pollfd(r.fd());
            if r.wants_write() {
                p.events |= libc::POLLOUT;
            }
            fds.push(p);
        }
        // Round up so a timer due in 0.3 ms does not spin.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd for the whole call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut drain = [0u8; 64];
        while self.wake_rx.recv(&mut drain).is_ok() {}
        Ok(())
    }
}

/// Sends a datagram the node produced: into a TURN/TCP stream when it
/// leaves from that stream's local address to its server, else over UDP.
fn send(udp: &mut Udp, tcp: &mut [TcpRelay], source: SocketAddr, dest: SocketAddr, payload: &[u8]) {
    match tcp
        .iter_mut()
        .find(|r| r.local == source && r.server() == dest)
    {
        Some(r) => r.send(payload),
        None => udp.send(dest, payload),
    }
}

/// One datagram (or TURN/TCP frame) into the node: decrypted packets go to
/// the next slot of the TUN write batch, replies are kept for after it.
fn handle_network<K: ConnectionId>(
    node: &mut Node<K>,
    tun: &mut Tun,
    replies: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    now: Instant,
    local: SocketAddr,
    from: SocketAddr,
    datagram: &[u8],
) {
    let input = Input::Network {
        local,
        from,
        datagram,
    };
    // Decrypt straight into the next slot of the TUN write batch.
    let slot = tun.slot(datagram.len().max(WG_MIN_BUFFER));
    let base = slot.as_ptr() as usize;
    let kept = match node.handle_input(now, input, slot) {
        Some(Output::Tun { packet, .. }) => Some((packet.as_ptr() as usize - base, packet.len())),
        Some(Output::Transmit(t)) => {
            replies.push((t.source, t.destination, t.payload.to_vec()));
            None
        }
        None => None,
    };
    if let Some((offset, len)) = kept {
        tun.commit(offset, len);
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
