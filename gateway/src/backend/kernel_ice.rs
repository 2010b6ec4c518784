//! ICE for the kernel backend: keyhole-tunnel's [`Node`] with ICE-only
//! connections on a userspace socket that shares the WireGuard port
//! through STUN steering ([`crate::steering`]), plus a local proxy per
//! relayed client.
//!
//! - **Sockets.** One UDP socket per advertised address, all on one port
//!   (the "ICE port"). The steering programs deliver STUN (and ChannelData)
//!   sent to `address:wg_port` there, and give what it sends the WireGuard
//!   port as source. The node is told the *advertised* address
//!   (`address:wg_port`) as local, so candidates, checks and the TURN
//!   allocation all speak for the WireGuard port.
//! - **Direct path.** On `ConnectionUp` the kernel peer's endpoint becomes
//!   the remote candidate (the session shell sets it over netlink).
//! - **Relayed path** (our relayed address is the path's local end): the
//!   kernel cannot speak TURN, so the client gets a proxy socket on
//!   `127.0.0.1:<ephemeral>` and the kernel peer that endpoint. What the
//!   kernel sends there is wrapped for the relay (`Node::send_on_path`);
//!   ChannelData from the relay comes out of the node unwrapped
//!   (`Output::Relayed`) and is sent from the proxy socket to
//!   `127.0.0.1:wg_port`. One socket per client, because the kernel tells
//!   peers apart by key but answers each at its last source address.
//!
//! Everything runs on one thread (`poll(2)` on the sockets and a waker);
//! changes are closures run on it between rounds, as in the userspace
//! backend.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyhole_proto::{ClientId, IceCandidate};
use keyhole_tunnel::{Event, Input, Node, Output, Path, Transmit};

use crate::wg::WgError;

/// Longest sleep of the loop (stop flag checks).
const MAX_WAIT: Duration = Duration::from_millis(500);
const BUF: usize = 65_536;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What the ICE thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceEvent {
    LocalCandidate {
        client_id: ClientId,
        candidate: IceCandidate,
    },
    /// ICE nominated `path`; the kernel peer must send to `endpoint`
    /// (`path.remote`, or the client's local proxy on a relayed path).
    Endpoint {
        client_id: ClientId,
        path: Path,
        endpoint: SocketAddr,
    },
    Failed {
        client_id: ClientId,
    },
}

type Command = Box<dyn FnOnce(&mut Core, Instant) + Send>;

/// The ICE thread's state.
pub struct Core {
    pub node: Node<ClientId>,
    /// (advertised `ip:wg_port`, socket bound to `ip:ice_port`).
    sockets: Vec<(SocketAddr, UdpSocket)>,
    proxies: HashMap<ClientId, UdpSocket>,
    wg_port: u16,
    events: SyncSender<IceEvent>,
    buf: Vec<u8>,
}

/// Handle on the ICE thread; dropping it stops the thread.
pub struct KernelIce {
    commands: SyncSender<Command>,
    events: Receiver<IceEvent>,
    waker: UdpSocket,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ice_port: u16,
}

impl std::fmt::Debug for KernelIce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelIce")
            .field("ice_port", &self.ice_port)
            .finish_non_exhaustive()
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WgError {
    let what = what.into();
    move |source| WgError::Io { what, source }
}

impl KernelIce {
    /// Binds one socket per advertised address (`ip:wg_port`, IPv4), all on
    /// one free port, offers them as host candidates and starts the thread.
    /// The steering programs must point at [`ice_port`](Self::ice_port).
    pub fn start(
        mut node: Node<ClientId>,
        advertised: &[SocketAddr],
        wg_port: u16,
    ) -> Result<Self, WgError> {
        let mut sockets = Vec::new();
        let mut ice_port = 0;
        for adv in advertised {
            let IpAddr::V4(ip) = adv.ip() else {
                tracing::warn!(%adv, "IPv6 host candidates are not used by the kernel backend yet");
                continue;
            };
            let sock = UdpSocket::bind((ip, ice_port))
                .map_err(io_err(format!("binding the ICE socket on {ip}:{ice_port}")))?;
            ice_port = sock
                .local_addr()
                .map_err(io_err("ICE socket address"))?
                .port();
            sock.set_nonblocking(true)
                .map_err(io_err("non-blocking ICE socket"))?;
            let local = SocketAddr::new(IpAddr::V4(ip), wg_port);
            node.add_host_candidate(local).map_err(|e| WgError::Io {
                what: format!("host candidate {local}: {e}"),
                source: std::io::ErrorKind::InvalidInput.into(),
            })?;
            sockets.push((local, sock));
        }
        if sockets.is_empty() {
            return Err(WgError::Io {
                what: "no IPv4 address to advertise for ICE".into(),
                source: std::io::ErrorKind::AddrNotAvailable.into(),
            });
        }
        let waker_rx =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("binding the waker"))?;
        waker_rx
            .set_nonblocking(true)
            .map_err(io_err("non-blocking waker"))?;
        let waker = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("waker"))?;
        waker
            .connect(waker_rx.local_addr().map_err(io_err("waker address"))?)
            .map_err(io_err("connecting the waker"))?;
        let (commands, commands_rx) = sync_channel::<Command>(64);
        let (events_tx, events) = sync_channel(4096);
        let stop = Arc::new(AtomicBool::new(false));
        let core = Core {
            node,
            sockets,
            proxies: HashMap::new(),
            wg_port,
            events: events_tx,
            buf: vec![0; BUF],
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kernel-ice".into())
            .spawn(move || run(core, commands_rx, waker_rx, thread_stop))
            .map_err(io_err("starting the ICE thread"))?;
        Ok(Self {
            commands,
            events,
            waker,
            stop,
            thread: Some(thread),
            ice_port,
        })
    }

    /// The port of the ICE sockets (where steering delivers STUN).
    pub fn ice_port(&self) -> u16 {
        self.ice_port
    }

    /// Runs `f` on the ICE thread and returns its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Instant) -> R + Send + 'static,
    ) -> Result<R, WgError> {
        let (tx, rx) = sync_channel(1);
        let command: Command = Box::new(move |core, now| {
            let _ = tx.send(f(core, now));
        });
        let stopped = || WgError::Io {
            what: "the ICE thread stopped".into(),
            source: std::io::ErrorKind::BrokenPipe.into(),
        };
        self.commands.send(command).map_err(|_| stopped())?;
        let _ = self.waker.send(&[1]);
        rx.recv_timeout(COMMAND_TIMEOUT).map_err(|_| stopped())
    }

    /// Events since the last call.
    pub fn poll_events(&mut self) -> Vec<IceEvent> {
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) => out.push(e),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }
}

impl Drop for KernelIce {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.send(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Core {
    /// Stops carrying `client_id`: its connection and proxy go.
    pub fn remove_client(&mut self, client_id: &ClientId) {
        self.node.remove_connection(client_id);
        self.proxies.remove(client_id);
    }

    /// The local proxy address of a relayed client, if it has one.
    pub fn proxy_of(&self, client_id: &ClientId) -> Option<SocketAddr> {
        self.proxies.get(client_id)?.local_addr().ok()
    }

    fn send(&self, t: &Transmit<&[u8]>) {
        let sock = self
            .sockets
            .iter()
            .find(|(adv, _)| *adv == t.source)
            .or_else(|| self.sockets.first());
        if let Some((_, s)) = sock
            && let Err(e) = s.send_to(t.payload, t.destination)
        {
            tracing::debug!(to = %t.destination, error = %e, "ICE send failed");
        }
    }

    /// Sends queued datagrams and turns node events into [`IceEvent`]s.
    fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.send(&Transmit {
                source: t.source,
                destination: t.destination,
                payload: &t.payload,
            });
        }
        while let Some(e) = self.node.poll_event() {
            let event = match e {
                Event::LocalCandidate { conn, candidate } => IceEvent::LocalCandidate {
                    client_id: conn,
                    candidate,
                },
                Event::ConnectionUp { conn, path } => match self.endpoint_for(conn, path) {
                    Some(endpoint) => IceEvent::Endpoint {
                        client_id: conn,
                        path,
                        endpoint,
                    },
                    None => continue,
                },
                Event::ConnectionFailed { conn } => {
                    self.proxies.remove(&conn);
                    IceEvent::Failed { client_id: conn }
                }
                other => {
                    tracing::debug!(event = ?other, "ICE event");
                    continue;
                }
            };
            if self.events.try_send(event).is_err() {
                tracing::warn!("ICE event queue full; event dropped");
            }
        }
    }

    /// Where the kernel must send for `path`: the remote candidate, or the
    /// client's proxy when our relayed address is the local end.
    fn endpoint_for(&mut self, conn: ClientId, path: Path) -> Option<SocketAddr> {
        if !self.node.is_relayed_address(path.local) {
            self.proxies.remove(&conn);
            return Some(path.remote);
        }
        if let Some(addr) = self.proxy_of(&conn) {
            return Some(addr);
        }
        let proxy = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(|s| {
                s.connect((Ipv4Addr::LOCALHOST, self.wg_port))?;
                Ok(s)
            });
        match proxy {
            Ok(s) => {
                let addr = s.local_addr().ok()?;
                tracing::info!(client = %conn, proxy = %addr, "relayed path: kernel peer goes through a local proxy");
                self.proxies.insert(conn, s);
                Some(addr)
            }
            Err(e) => {
                tracing::error!(client = %conn, error = %e, "cannot open the relay proxy socket");
                None
            }
        }
    }

    /// Reads every datagram waiting on ICE socket `i`.
    fn read_socket(&mut self, i: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut out = vec![0u8; BUF];
        loop {
            let (n, from) = match self.sockets[i].1.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "ICE socket read");
                    break;
                }
            };
            let local = self.sockets[i].0;
            let input = Input::Network {
                local,
                from,
                datagram: &buf[..n],
            };
            match self.node.handle_input(now, input, &mut out) {
                Some(Output::Transmit(t)) => self.send(&t),
                Some(Output::Relayed { conn, datagram }) => {
                    if let Some(p) = self.proxies.get(&conn)
                        && let Err(e) = p.send(datagram)
                    {
                        tracing::debug!(client = %conn, error = %e, "proxy to the kernel");
                    }
                }
                Some(Output::Tun { .. }) | None => {}
            }
        }
        self.buf = buf;
    }

    /// Datagrams the kernel sent to a relayed client's proxy.
    fn read_proxy(&mut self, client: ClientId, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut out = vec![0u8; BUF];
        while let Some(p) = self.proxies.get(&client) {
            let n = match p.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "proxy socket read");
                    break;
                }
            };
            match self.node.send_on_path(now, &client, &buf[..n], &mut out) {
                Ok(Some(t)) => self.send(&t),
                Ok(None) => {}
                Err(e) => tracing::debug!(client = %client, error = %e, "relayed datagram dropped"),
            }
        }
        self.buf = buf;
    }
}

fn run(mut core: Core, commands: Receiver<Command>, waker: UdpSocket, stop: Arc<AtomicBool>) {
    let mut scratch = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        loop {
            match commands.try_recv() {
                Ok(c) => c(&mut core, now),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if core.node.poll_timeout().is_some_and(|t| t <= now) {
            core.node.handle_timeout(now);
        }
        core.flush();

        let wait = core
            .node
            .poll_timeout()
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(Instant::now()))
            .min(MAX_WAIT);
        let proxies: Vec<ClientId> = core.proxies.keys().copied().collect();
        let mut fds: Vec<libc::pollfd> = std::iter::once(waker.as_raw_fd())
            .chain(core.sockets.iter().map(|(_, s)| s.as_raw_fd()))
            .chain(proxies.iter().map(|c| core.proxies[c].as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Round up so a timer due in under a millisecond does not spin.
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live, correctly sized array of pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "poll on the ICE sockets");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let now = Instant::now();
        if fds[0].revents != 0 {
            while waker.recv(&mut scratch).is_ok() {}
        }
        let n_sockets = core.sockets.len();
        for i in 0..n_sockets {
            if fds[1 + i].revents != 0 {
                core.read_socket(i, now);
            }
        }
        for (j, client) in proxies.iter().enumerate() {
            if fds[1 + n_sockets + j].revents != 0 {
                core.read_proxy(*client, now);
            }
        }
    }
}
