//! TURN over TCP for networks that block UDP (RFC 8656 §6.2, the framing
//! RFC 6062 also uses): STUN messages and padded ChannelData back to back
//! on one stream to the relay. The node sees the stream's local address
//! as the relay's local socket; the shell routes datagrams from that
//! address to the server into the stream and feeds frames it reads back
//! in as datagrams from the server.
//!
//! Connections are made on short-lived helper threads (a connect may take
//! seconds) and handed to the shell; a lost stream is reconnected with
//! backoff, and the node's relay is replaced (its local address changes).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use crate::turn::{StreamFramer, TurnConfig};

/// Bytes waiting for the stream before further frames are dropped
/// (the tunnel's datagrams may be lost; the loop must not block).
const MAX_PENDING: usize = 1 << 20;
const READ_CHUNK: usize = 65_536;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) struct TcpRelay {
    stream: TcpStream,
    pub(crate) local: SocketAddr,
    pub(crate) config: TurnConfig,
    framer: StreamFramer,
    pending: Vec<u8>,
    pending_start: usize,
    read_buf: Vec<u8>,
    pub(crate) dead: bool,
    pub(crate) dropped: u64,
}

impl TcpRelay {
    pub(crate) fn new(stream: TcpStream, config: TurnConfig) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            local: stream.local_addr()?,
            stream,
            config,
            framer: StreamFramer::new(),
            pending: Vec::new(),
            pending_start: 0,
            read_buf: vec![0; READ_CHUNK],
            dead: false,
            dropped: 0,
        })
    }

    pub(crate) fn server(&self) -> SocketAddr {
        self.config.server
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub(crate) fn wants_write(&self) -> bool {
        self.pending_start < self.pending.len()
    }

    /// Queues one whole frame for the next [`TcpRelay::flush`] (the loop
    /// flushes once per round, so a batch of frames is one write);
    /// dropped (counted) when too much is waiting.
    pub(crate) fn send(&mut self, frame: &[u8]) {
        if self.dead || self.pending.len() - self.pending_start + frame.len() > MAX_PENDING {
            self.dropped += 1;
            return;
        }
        if self.pending_start > 0 && self.pending_start >= self.pending.len() / 2 {
            self.pending.drain(..self.pending_start);
            self.pending_start = 0;
        }
        self.pending.extend_from_slice(frame);
    }

    /// Writes what is queued, as far as the socket takes it.
    pub(crate) fn flush(&mut self) {
        while !self.dead && self.wants_write() {
            match self.stream.write(&self.pending[self.pending_start..]) {
                Ok(0) => self.fail(&io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pending_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(&e),
            }
        }
        if !self.wants_write() {
            self.pending.clear();
            self.pending_start = 0;
        }
    }

    /// Reads what has arrived and calls `f` for every whole frame.
    /// Returns how many frames.
    pub(crate) fn recv(&mut self, mut f: impl FnMut(SocketAddr, SocketAddr, &[u8])) -> usize {
        if self.dead {
            return 0;
        }
        let n = match self.stream.read(&mut self.read_buf) {
            Ok(0) => {
                self.fail(&io::ErrorKind::UnexpectedEof.into());
                return 0;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
            Err(e) => {
                self.fail(&e);
                return 0;
            }
        };
        if let Err(e) = self.framer.push(&self.read_buf[..n]) {
            self.fail(&io::Error::other(e));
            return 0;
        }
        let (local, server) = (self.local, self.config.server);
        let mut frames = 0;
        loop {
            match self.framer.next_frame() {
                Ok(Some(frame)) => {
                    f(local, server, frame);
                    frames += 1;
                }
                Ok(None) => return frames,
                Err(e) => {
                    self.fail(&io::Error::other(e));
                    return frames;
                }
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        tracing::info!(server = %self.config.server, %e, "TURN/TCP stream lost");
        self.dead = true;
    }
}

/// What a connector thread hands the shell.
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) config: TurnConfig,
}

/// Connects to `config.server` on a helper thread, retrying with backoff
/// (starting at `delay`) until it succeeds or the shell stops; then sends
/// the stream through `deliver` and wakes the shell.
pub(crate) fn connect_in_background<M: Send + 'static>(
    config: TurnConfig,
    mut delay: Duration,
    stop: Arc<AtomicBool>,
    deliver: SyncSender<M>,
    wrap: fn(Connected) -> M,
    waker: UnixDatagram,
) {
    let spawned = std::thread::Builder::new()
        .name("keyhole-turn-tcp".into())
        .spawn(move || {
            let mut backoff = config.backoff.max(Duration::from_millis(100));
            loop {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match TcpStream::connect_timeout(&config.server, CONNECT_TIMEOUT) {
                    Ok(stream) => {
                        let _ = deliver.send(wrap(Connected { stream, config }));
                        let _ = waker.send(&[1]);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(server = %config.server, %e, "TURN/TCP connect failed");
                        delay = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(%e, "cannot start the TURN/TCP connector");
    }
}
