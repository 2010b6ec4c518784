//! IO shell (feature `io`): one thread drives the node, a UDP socket and a
//! TUN device in the design's priority order so nothing starves:
//!
//! 1. flush local buffers: queued datagrams (`poll_transmit`) and events
//!    (to a bounded channel; when it is full the event waits, never lost);
//! 2. due timers (`handle_timeout`);
//! 3. UDP in: one recvmmsg batch (GRO super-datagrams split), then the
//!    TURN/TCP streams; decrypted packets are coalesced per TCP flow and
//!    written to TUN once per batch;
//! 4. TUN in: up to `tun_batch` packets (GSO super-packets split),
//!    encrypted datagrams coalesced into GSO sends.
//!
//! Every `yield_every` iterations of continuous work, and whenever idle,
//! the loop runs the owner's commands (closures over the node), re-reads
//! the clock and re-arms the node's timer. Idle waits are one `poll(2)` on
//! UDP, TUN, the TURN/TCP streams and a waker socket, bounded by the
//! node's next timeout.
//!
//! With a multi-queue TUN ([`spawn_multi`], [`create_tun`] with `queues`)
//! every further queue gets a thread of its own that reads it and sends
//! what the node encrypts. Decrypted packets are written on the queue of
//! their flow (a symmetric hash), which is where Linux then delivers the
//! flow's outgoing packets, so a flow stays on one queue and in order. The
//! node sits behind one mutex, taken per batch: crypto is serialised, the
//! syscalls of the threads overlap.

mod device;
mod gro;
mod queue;
mod shell;
mod steer;
mod tcp_relay;
mod tun;
mod udp;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use device::{TunOptions, create_tun};
pub use tun_rs::SyncDevice;

use crate::connection::ConnectionId;
use crate::turn::{Transport, TurnConfig};
use crate::{Event, Input, Node, Output};

use shell::Shell;
use tcp_relay::{Connected, TcpRelay, connect_in_background};
use tun::Tun;
use udp::Udp;

/// boringtun wants room for a handshake message even for tiny datagrams.
const WG_MIN_BUFFER: usize = 148;

/// A change to the node, run on the shell's thread between batches.
pub type Command<K> = Box<dyn FnOnce(&mut Node<K>, Instant) + Send>;

/// What the shell's threads share: the node, and the TURN/TCP streams
/// its datagrams may leave through.
struct Core<K> {
    node: Node<K>,
    tcp: Vec<TcpRelay>,
}

/// A poisoned lock only means another shell thread panicked; the node's
/// state is still consistent between calls.
fn lock<K>(core: &Mutex<Core<K>>) -> MutexGuard<'_, Core<K>> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

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
    /// TUN queues read, one thread each.
    pub tun_queues: usize,
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
    spawn_multi(node, udp, vec![tun], config)
}

/// [`spawn`] over the queues of one multi-queue TUN device (as
/// [`create_tun`] returns them): the first is the main loop's, each
/// further one gets a thread that reads it and sends what the node
/// encrypts through a clone of the UDP socket.
pub fn spawn_multi<K: ConnectionId + Send + 'static>(
    node: Node<K>,
    udp: UdpSocket,
    tuns: Vec<SyncDevice>,
    config: ShellConfig,
) -> io::Result<Handle<K>> {
    let mut tuns = tuns.into_iter();
    let tun = tuns
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no TUN queue"))?;
    let (commands, command_rx) = mpsc::sync_channel(config.command_queue);
    let (event_tx, events) = mpsc::sync_channel(config.event_queue);
    let (waker, wake_rx) = UnixDatagram::pair()?;
    wake_rx.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let core = Arc::new(Mutex::new(Core {
        node,
        tcp: Vec::new(),
    }));
    // Everything that can fail comes before the first thread starts.
    let mut workers = Vec::new();
    let mut writers = Vec::new();
    for dev in tuns {
        let dev = Arc::new(dev);
        writers.push(Tun::new(dev.clone(), config.tun_write_batch)?);
        workers.push(queue::Queue::new(
            core.clone(),
            Udp::new(udp.try_clone()?, 1)?,
            Tun::new(dev, 1)?,
            stop.clone(),
            waker.try_clone()?,
            config.tun_batch,
        ));
    }
    let udp = Udp::new(udp, config.udp_batch)?;
    let tun = Tun::new(Arc::new(tun), config.tun_write_batch)?;
    let connector = (commands.clone(), waker.try_clone()?);
    let mut queues = Vec::new();
    for (i, worker) in workers.into_iter().enumerate() {
        let spawned = std::thread::Builder::new()
            .name(format!("keyhole-tun-q{}", i + 1))
            .spawn(move || worker.run());
        match spawned {
            Ok(t) => queues.push(t),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    let mut shell = Shell {
        core,
        udp,
        connector,
        config,
        commands: command_rx,
        events: event_tx,
        held_event: None,
        wake_rx,
        stop: stop.clone(),
        stats: ShellStats {
            tun_offload: tun.offload(),
            tun_queues: 1 + queues.len(),
            ..ShellStats::default()
        },
        tun,
        writers,
        buf: vec![0; 65_536 + 256],
        replies: Vec::new(),
        queues,
    };
    let thread = std::thread::Builder::new()
        .name("keyhole-tunnel".into())
        .spawn(move || shell.run())
        .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
    Ok(Handle {
        commands,
        waker,
        stop,
        thread: Some(thread),
        events,
    })
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
    writers: &mut [Tun],
    replies: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    now: Instant,
    (local, from, datagram): (SocketAddr, SocketAddr, &[u8]),
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
        // The shell runs WireGuard connections only.
        Some(Output::Relayed { .. }) | None => None,
    };
    let Some((offset, len)) = kept else { return };
    match steer::queue_of(tun.slot_packet(offset, len), writers.len() + 1) {
        0 => tun.commit(offset, len),
        q => {
            // Written on the flow's own queue, so its reads land there.
            let packet = tun.slot_packet(offset, len);
            let other = &mut writers[q - 1];
            other.slot(len).copy_from_slice(packet);
            other.commit(0, len);
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
