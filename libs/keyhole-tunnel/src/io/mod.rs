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
mod tun;
mod udp;

use std::io;
use std::net::UdpSocket;
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
use crate::{Event, Input, Node, Output};

/// boringtun wants room for a handshake message even for tiny datagrams.
const WG_MIN_BUFFER: usize = 148;
use tun::Tun;
use udp::Udp;

/// A change to the node, run on the shell's thread between batches.
pub type Command<K> = Box<dyn FnOnce(&mut Node<K>, Instant) + Send>;

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
    /// Whether the TUN device ran with the virtio-net header offloads.
    pub tun_offload: bool,
}

/// The owner's side of a running shell.
pub struct Handle<K> {
    commands: SyncSender<Command<K>>,
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
        let ok = self.commands.send(Box::new(f)).is_ok();
        let _ = self.waker.send(&[1]);
        ok
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
    config: ShellConfig,
    commands: Receiver<Command<K>>,
    events: SyncSender<Event<K>>,
    held_event: Option<Event<K>>,
    wake_rx: UnixDatagram,
    stop: Arc<AtomicBool>,
    stats: ShellStats,
    buf: Vec<u8>,
    /// Replies to datagrams of one UDP batch (handshake responses,
    /// cookies), sent after it.
    replies: Vec<(std::net::SocketAddr, Vec<u8>)>,
}

impl<K: ConnectionId> Shell<K> {
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
            // 3. UDP in.
            let udp = self.read_udp(now)?;
            // 4. TUN in.
            let tun = self.read_tun(now)?;
            self.udp.flush();

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
        Ok(self.stats.clone())
    }

    fn run_commands(&mut self, now: Instant) {
        while let Ok(cmd) = self.commands.try_recv() {
            cmd(&mut self.node, now);
        }
    }

    fn flush_transmits(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.udp.send(t.destination, &t.payload);
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
            let input = Input::Network {
                local,
                from,
                datagram,
            };
            // Decrypt straight into the next slot of the TUN write batch.
            let slot = tun.slot(datagram.len().max(WG_MIN_BUFFER));
            let base = slot.as_ptr() as usize;
            let kept = match node.handle_input(now, input, slot) {
                Some(Output::Tun { packet, .. }) => {
                    Some((packet.as_ptr() as usize - base, packet.len()))
                }
                Some(Output::Transmit(t)) => {
                    replies.push((t.destination, t.payload.to_vec()));
                    None
                }
                None => None,
            };
            if let Some((offset, len)) = kept {
                tun.commit(offset, len);
            }
        })?;
        self.tun.flush();
        for (dest, payload) in self.replies.drain(..) {
            self.udp.send(dest, &payload);
        }
        Ok(n)
    }

    fn read_tun(&mut self, now: Instant) -> io::Result<usize> {
        let Self {
            node,
            udp,
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
                    udp.send(t.destination, t.payload);
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
        let mut fds = [
            pollfd(self.udp.fd()),
            pollfd(self.tun.dev.as_raw_fd()),
            pollfd(self.wake_rx.as_raw_fd()),
        ];
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

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
