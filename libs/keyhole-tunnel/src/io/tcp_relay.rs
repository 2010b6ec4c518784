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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Instant;

    use keyhole_stun::ChannelData;

    use super::*;

    fn frame(channel: u16, data: &[u8]) -> Vec<u8> {
        ChannelData { channel, data }.encode(true).unwrap()
    }

    /// A relay stream to a local listener, and the listener's side of it.
    fn pair() -> (TcpRelay, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let stream = TcpStream::connect(server).unwrap();
        let (peer, _) = listener.accept().unwrap();
        let config = TurnConfig::new(server, "u".into(), "p".into());
        (TcpRelay::new(stream, config).unwrap(), peer)
    }

    /// Frames read until `want` arrived, the stream died or `wait` passed.
    fn recv_until(
        relay: &mut TcpRelay,
        want: usize,
        wait: Duration,
    ) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + wait;
        while got.len() < want && Instant::now() < deadline && !relay.dead {
            relay.recv(|l, f, d| got.push((l, f, d.to_vec())));
        }
        got
    }

    #[test]
    fn frames_go_out_in_one_write_and_come_back_whole() {
        let (mut relay, mut peer) = pair();
        let (a, b) = (frame(0x4001, b"hello"), frame(0x4002, b"tunnel!"));
        relay.send(&a);
        relay.send(&b);
        assert!(relay.wants_write(), "queued until the flush");
        relay.flush();
        assert!(!relay.wants_write());
        let mut out = vec![0; a.len() + b.len()];
        peer.read_exact(&mut out).unwrap();
        assert_eq!(out, [a.clone(), b.clone()].concat());

        // The relay's answer arrives cut in odd places.
        let stream = [b.clone(), a.clone()].concat();
        peer.write_all(&stream[..3]).unwrap();
        peer.flush().unwrap();
        assert!(recv_until(&mut relay, 1, Duration::from_millis(50)).is_empty());
        peer.write_all(&stream[3..]).unwrap();
        let got = recv_until(&mut relay, 2, Duration::from_secs(5));
        let server = relay.server();
        assert_eq!(
            got,
            vec![(relay.local, server, b), (relay.local, server, a)],
            "frames, tagged as datagrams from the relay"
        );
    }

    #[test]
    fn a_full_stream_drops_frames_instead_of_growing() {
        let (mut relay, _peer) = pair();
        let f = frame(0x4001, &[7; 1200]);
        // The peer never reads: the socket buffers fill, then the queue.
        for _ in 0..(MAX_PENDING / f.len()) * 8 {
            relay.send(&f);
            relay.flush();
        }
        assert!(relay.dropped > 0);
        assert!(relay.pending.len() - relay.pending_start <= MAX_PENDING);
        assert!(!relay.dead);
    }

    #[test]
    fn a_closed_or_garbled_stream_is_dead() {
        let (mut relay, peer) = pair();
        drop(peer);
        assert!(recv_until(&mut relay, 1, Duration::from_secs(5)).is_empty());
        assert!(relay.dead);
        relay.send(&frame(0x4001, b"x"));
        assert_eq!(relay.dropped, 1);

        let (mut relay, mut peer) = pair();
        // A TLS ClientHello is neither STUN nor ChannelData.
        peer.write_all(&[0x16, 3, 1, 0, 0xF4, 1, 0, 0]).unwrap();
        assert!(recv_until(&mut relay, 1, Duration::from_secs(5)).is_empty());
        assert!(relay.dead);
    }
}
