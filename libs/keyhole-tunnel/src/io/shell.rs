//! The main loop: timers, UDP and TURN/TCP in, the first TUN queue, the
//! owner's commands and events.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    Connected, Core, Msg, ShellConfig, ShellStats, TcpRelay, Tun, Udp, connect_in_background,
    handle_network, lock, pollfd, send,
};
use crate::connection::ConnectionId;
use crate::turn::TurnConfig;
use crate::{Event, Input, Node, Output};

pub(super) struct Shell<K> {
    pub(super) core: Arc<Mutex<Core<K>>>,
    pub(super) udp: Udp,
    pub(super) tun: Tun,
    /// Writers for the further TUN queues (decrypted packets go to their
    /// flow's queue).
    pub(super) writers: Vec<Tun>,
    /// For reconnecting TURN/TCP streams: where connectors deliver, and
    /// how they wake the loop.
    pub(super) connector: (SyncSender<Msg<K>>, UnixDatagram),
    pub(super) config: ShellConfig,
    pub(super) commands: Receiver<Msg<K>>,
    pub(super) events: SyncSender<Event<K>>,
    pub(super) held_event: Option<Event<K>>,
    pub(super) wake_rx: UnixDatagram,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) stats: ShellStats,
    pub(super) buf: Vec<u8>,
    /// Replies to datagrams of one UDP batch (handshake responses,
    /// cookies), sent after it.
    pub(super) replies: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Threads of the further TUN queues.
    pub(super) queues: Vec<JoinHandle<ShellStats>>,
}

impl<K: ConnectionId + Send + 'static> Shell<K> {
    pub(super) fn run(&mut self) -> io::Result<ShellStats> {
        let result = self.run_loop();
        // Whatever ended the loop ends the queue threads too.
        self.stop.store(true, Ordering::Relaxed);
        self.tun.flush();
        let mut stats = self.stats.clone();
        for w in &mut self.writers {
            w.flush();
            stats.tun_out += w.written;
            stats.tun_write_errors += w.write_errors;
        }
        stats.udp_out = self.udp.sent;
        stats.udp_send_errors = self.udp.send_errors;
        stats.tun_out += self.tun.written;
        stats.tun_write_errors += self.tun.write_errors;
        stats.tun_read_errors = self.tun.read_errors;
        stats.tcp_relay_dropped += lock(&self.core).tcp.iter().map(|r| r.dropped).sum::<u64>();
        for q in self.queues.drain(..) {
            if let Ok(s) = q.join() {
                stats.tun_in += s.tun_in;
                stats.udp_out += s.udp_out;
                stats.udp_send_errors += s.udp_send_errors;
                stats.tun_read_errors += s.tun_read_errors;
            }
        }
        result.map(|()| stats)
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let shared = self.core.clone();
        let mut iterations = 0usize;
        let mut now = Instant::now();
        // The node's next timeout, re-armed after it fires and at every
        // yield: asking the node scans all its connections, too much for
        // every round of a busy loop (whose `now` only moves at yields).
        let mut deadline = lock(&shared).node.poll_timeout();
        while !self.stop.load(Ordering::Relaxed) {
            let events_blocked = {
                let mut core = lock(&shared);
                // 1. Flush local buffers.
                self.flush_transmits(&mut core);
                let blocked = self.flush_events(&mut core.node);
                // 2. Due timers.
                if deadline.is_some_and(|t| t <= now) {
                    core.node.handle_timeout(now);
                    self.flush_transmits(&mut core);
                    deadline = core.node.poll_timeout();
                }
                blocked
            };
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
                deadline = lock(&shared).node.poll_timeout();
            }
            if idle {
                self.wait(now, deadline, events_blocked)?;
                now = Instant::now();
            }
        }
        Ok(())
    }

    fn run_commands(&mut self, now: Instant) {
        while let Ok(msg) = self.commands.try_recv() {
            match msg {
                Msg::Command(cmd) => cmd(&mut lock(&self.core).node, now),
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
                return self.reconnect(config.backoff, config);
            }
        };
        let shared = self.core.clone();
        let mut core = lock(&shared);
        self.retire_tcp_relay(&mut core, now, server);
        match core.node.add_relay(now, relay.local, relay.config.clone()) {
            Ok(()) => {
                tracing::debug!(%server, local = %relay.local, "TURN/TCP stream up");
                self.stats.tcp_relay_connects += 1;
                core.tcp.push(relay);
            }
            Err(e) => tracing::warn!(%server, %e, "TURN/TCP relay refused by the node"),
        }
    }

    /// Drops the stream to `server` (if any) and its relay in the node.
    /// The allocation's release leaves through the old stream while it is
    /// still listed (a lost stream drops it), never over UDP.
    fn retire_tcp_relay(&mut self, core: &mut Core<K>, now: Instant, server: SocketAddr) {
        if !core.tcp.iter().any(|r| r.server() == server) {
            return;
        }
        core.node.remove_relay(now, server);
        self.flush_transmits(core);
        if let Some(i) = core.tcp.iter().position(|r| r.server() == server) {
            let mut r = core.tcp.swap_remove(i);
            r.flush();
            self.stats.tcp_relay_dropped += r.dropped;
        }
    }

    fn reconnect(&self, delay: Duration, config: TurnConfig) {
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
        let shared = self.core.clone();
        let mut core = lock(&shared);
        if core.tcp.is_empty() {
            return;
        }
        for r in &mut core.tcp {
            r.flush();
        }
        while let Some(i) = core.tcp.iter().position(|r| r.dead) {
            let config = core.tcp[i].config.clone();
            self.retire_tcp_relay(&mut core, now, config.server);
            self.reconnect(config.backoff, config);
        }
    }

    fn flush_transmits(&mut self, core: &mut Core<K>) {
        while let Some(t) = core.node.poll_transmit() {
            send(
                &mut self.udp,
                &mut core.tcp,
                t.source,
                t.destination,
                &t.payload,
            );
        }
        self.udp.flush();
    }

    /// Returns true when the owner is not taking events.
    fn flush_events(&mut self, node: &mut Node<K>) -> bool {
        loop {
            let Some(e) = self.held_event.take().or_else(|| node.poll_event()) else {
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
        let shared = self.core.clone();
        let n = {
            let mut core = lock(&shared);
            let Self {
                udp,
                tun,
                writers,
                stats,
                replies,
                ..
            } = self;
            udp.recv_batch(|local, from, datagram| {
                stats.udp_in += 1;
                handle_network(
                    &mut core.node,
                    tun,
                    writers,
                    replies,
                    now,
                    (local, from, datagram),
                );
            })?
        };
        self.after_network();
        Ok(n)
    }

    fn read_tcp(&mut self, now: Instant) -> usize {
        let shared = self.core.clone();
        let n = {
            let mut core = lock(&shared);
            if core.tcp.is_empty() {
                return 0;
            }
            let Core { node, tcp } = &mut *core;
            let Self {
                tun,
                writers,
                replies,
                ..
            } = self;
            let mut n = 0;
            for r in tcp.iter_mut() {
                n += r.recv(|local, from, frame| {
                    handle_network(node, tun, writers, replies, now, (local, from, frame));
                });
            }
            n
        };
        self.after_network();
        n
    }

    /// Writes the decrypted batch to TUN (outside the lock), then sends
    /// the replies.
    fn after_network(&mut self) {
        self.tun.flush();
        for w in &mut self.writers {
            w.flush();
        }
        if self.replies.is_empty() {
            return;
        }
        let mut core = lock(&self.core);
        for (source, dest, payload) in self.replies.drain(..) {
            send(&mut self.udp, &mut core.tcp, source, dest, &payload);
        }
    }

    fn read_tun(&mut self, now: Instant) -> io::Result<usize> {
        let mut n = 0;
        while n < self.config.tun_batch {
            // The read happens before the lock is taken.
            let got = self.tun.read()?;
            if got == 0 {
                break;
            }
            n += got;
            let mut core = lock(&self.core);
            let Core { node, tcp } = &mut *core;
            for packet in self.tun.packets() {
                if let Some(Output::Transmit(t)) =
                    node.handle_input(now, Input::Tun(packet), &mut self.buf)
                {
                    send(&mut self.udp, tcp, t.source, t.destination, t.payload);
                }
            }
        }
        self.stats.tun_in += n as u64;
        Ok(n)
    }

    /// Sleeps until a socket is readable, a command arrives or the node's
    /// next timeout.
    fn wait(
        &mut self,
        now: Instant,
        deadline: Option<Instant>,
        events_blocked: bool,
    ) -> io::Result<()> {
        let mut fds = vec![
            pollfd(self.udp.fd()),
            pollfd(self.tun.dev.as_raw_fd()),
            pollfd(self.wake_rx.as_raw_fd()),
        ];
        for r in &lock(&self.core).tcp {
            let mut p = pollfd(r.fd());
            if r.wants_write() {
                p.events |= libc::POLLOUT;
            }
            fds.push(p);
        }
        let mut timeout = deadline
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        if events_blocked {
            // Retry handing events over soon.
            timeout = timeout.min(Duration::from_millis(10));
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
