//! A further queue of a multi-queue TUN: its thread reads the queue and
//! sends what the node encrypts. Everything else (UDP in, timers,
//! commands) stays with the main loop, which this thread wakes when the
//! node kept a packet back (buffered for a connection that is not up,
//! held for an authorisation) so its events and flushes are not late.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Core, ShellStats, Tun, Udp, lock, pollfd, send};
use crate::connection::ConnectionId;
use crate::{Input, Output};

/// How long a quiet queue sleeps before it looks at the stop flag again.
const IDLE_POLL_MS: i32 = 100;

pub(super) struct Queue<K> {
    core: Arc<Mutex<Core<K>>>,
    udp: Udp,
    tun: Tun,
    stop: Arc<AtomicBool>,
    waker: UnixDatagram,
    batch: usize,
    buf: Vec<u8>,
    tun_in: u64,
}

impl<K: ConnectionId> Queue<K> {
    pub(super) fn new(
        core: Arc<Mutex<Core<K>>>,
        udp: Udp,
        tun: Tun,
        stop: Arc<AtomicBool>,
        waker: UnixDatagram,
        batch: usize,
    ) -> Self {
        Self {
            core,
            udp,
            tun,
            stop,
            waker,
            batch: batch.max(1),
            buf: vec![0; 65_536 + 256],
            tun_in: 0,
        }
    }

    pub(super) fn run(mut self) -> ShellStats {
        while !self.stop.load(Ordering::Relaxed) {
            match self.round() {
                Ok(0) => {
                    let mut fd = [pollfd(self.tun.dev.as_raw_fd())];
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(fd.as_mut_ptr(), 1, IDLE_POLL_MS) };
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%e, "TUN queue failed");
                    break;
                }
            }
        }
        ShellStats {
            tun_in: self.tun_in,
            udp_out: self.udp.sent,
            udp_send_errors: self.udp.send_errors,
            tun_read_errors: self.tun.read_errors,
            ..ShellStats::default()
        }
    }

    /// Up to `batch` packets: read outside the lock, encrypt under it,
    /// send after it.
    fn round(&mut self) -> std::io::Result<usize> {
        let mut n = 0;
        let mut kept_back = false;
        while n < self.batch {
            let got = self.tun.read()?;
            if got == 0 {
                break;
            }
            n += got;
            let now = Instant::now();
            let mut core = lock(&self.core);
            let Core { node, tcp } = &mut *core;
            for packet in self.tun.packets() {
                match node.handle_input(now, Input::Tun(packet), &mut self.buf) {
                    Some(Output::Transmit(t)) => {
                        send(&mut self.udp, tcp, t.source, t.destination, t.payload)
                    }
                    _ => kept_back = true,
                }
            }
        }
        self.udp.flush();
        // Frames for TURN/TCP streams leave now, not at the main loop's
        // next round (it may be asleep).
        let mut core = lock(&self.core);
        for r in &mut core.tcp {
            r.flush();
        }
        drop(core);
        if kept_back {
            let _ = self.waker.send(&[1]);
        }
        self.tun_in += n as u64;
        Ok(n)
    }
}
