//! Batched UDP through quinn-udp: recvmmsg with GRO in, sendmsg with GSO
//! out (equal-sized datagrams to one destination leave in one syscall).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// One GRO buffer can hold up to 64 KiB of coalesced datagrams.
const GRO_BUF: usize = 65_536;
/// Socket buffers big enough to ride out a burst (the kernel clamps to
/// net.core.{r,w}mem_max).
const SOCKET_BUFFER: usize = 8 << 20;

pub(crate) struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    /// Datagrams waiting for one GSO send: all to `gso_dest`, each
    /// `gso_size` long except possibly the last.
    gso: Vec<u8>,
    gso_dest: Option<SocketAddr>,
    gso_size: usize,
    gso_count: usize,
    gso_max: usize,
    pub(crate) sent: u64,
    pub(crate) send_errors: u64,
}

impl Udp {
    pub(crate) fn new(socket: UdpSocket, batch: usize) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        let batch = batch.clamp(1, quinn_udp::BATCH_SIZE);
        let gso_max = state.max_gso_segments().clamp(1, 64);
        Ok(Self {
            local: socket.local_addr()?,
            socket,
            state,
            bufs: (0..batch).map(|_| vec![0; GRO_BUF]).collect(),
            metas: vec![RecvMeta::default(); batch],
            gso: Vec::with_capacity(GRO_BUF),
            gso_dest: None,
            gso_size: 0,
            gso_count: 0,
            gso_max,
            sent: 0,
            send_errors: 0,
        })
    }

    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    /// One recvmmsg; calls `f(local, from, datagram)` for every datagram
    /// (GRO super-datagrams split by stride). Returns how many arrived.
    pub(crate) fn recv_batch(
        &mut self,
        mut f: impl FnMut(SocketAddr, SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> =
            self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match self
            .state
            .recv(UdpSockRef::from(&self.socket), &mut slices, &mut self.metas)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        drop(slices);
        let mut count = 0;
        for (meta, buf) in self.metas.iter().zip(&self.bufs).take(n) {
            let local = match meta.dst_ip {
                Some(ip) if self.local.ip().is_unspecified() => {
                    SocketAddr::new(ip, self.local.port())
                }
                _ => self.local,
            };
            let stride = meta.stride.max(1);
            for d in buf[..meta.len].chunks(stride) {
                f(local, meta.addr, d);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Queues a datagram; equal-sized ones to the same destination are
    /// coalesced into one GSO send.
    pub(crate) fn send(&mut self, dest: SocketAddr, payload: &[u8]) {
        let joins = self.gso_dest == Some(dest)
            && payload.len() <= self.gso_size
            && self.gso_count < self.gso_max
            && self.gso.len() + payload.len() <= GRO_BUF
            // Only the last segment may be shorter.
            && self.gso.len() == self.gso_size * self.gso_count;
        if !joins {
            self.flush();
            self.gso_dest = Some(dest);
            self.gso_size = payload.len();
        }
        self.gso.extend_from_slice(payload);
        self.gso_count += 1;
    }

    /// Sends what [`Udp::send`] coalesced.
    pub(crate) fn flush(&mut self) {
        let Some(dest) = self.gso_dest.take() else {
            return;
        };
        let t = Transmit {
            destination: dest,
            ecn: None,
            contents: &self.gso,
            segment_size: (self.gso_count > 1).then_some(self.gso_size),
            src_ip: None,
        };
        // quinn-udp's send waits for the socket to be writable when it is
        // full: backpressure reaches the TUN reader, nothing is dropped
        // here unless the kernel refuses the datagram.
        match self.send_blocking(&t) {
            Ok(()) => self.sent += self.gso_count as u64,
            Err(e) => {
                self.send_errors += 1;
                tracing::debug!(%dest, %e, "UDP send failed");
            }
        }
        self.gso.clear();
        self.gso_count = 0;
    }

    fn send_blocking(&self, t: &Transmit<'_>) -> io::Result<()> {
        loop {
            match self.state.try_send(UdpSockRef::from(&self.socket), t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd: self.fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                }
                other => return other,
            }
        }
    }
}
