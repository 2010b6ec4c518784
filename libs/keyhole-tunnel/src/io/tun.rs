//! TUN reads and writes in batches. With the virtio-net header offloads
//! (`IFF_VNET_HDR` + `TUNSETOFFLOAD`, tun-rs `offload(true)`) one read
//! returns a TCP/UDP GSO super-packet that tun-rs splits into MTU-sized
//! packets (checksums filled in), and decrypted packets of one batch are
//! GRO-coalesced per flow before they are written, so the kernel's TCP
//! stack sees a few large segments instead of many small ones. Without the
//! offloads (a device built without them, or a kernel that refused them)
//! every read and write is one packet.

use std::io;
use std::sync::Arc;

use tun_rs::{SyncDevice, VIRTIO_NET_HDR_LEN};

use super::gro::Coalescer;

/// Largest packet the kernel hands us in one read (a GSO super-packet).
const MAX_READ: usize = 65_536;
/// Segments of one super-packet: 64 KiB at the smallest sensible MSS.
const MAX_SEGMENTS: usize = 128;
/// Room for a segment: the MTU plus headroom for WireGuard's overhead
/// when the same buffer is reused for a reply.
const SEGMENT_SLACK: usize = 256;

pub(crate) struct Tun {
    /// Shared between the queue's reader and the main loop's writer.
    pub(crate) dev: Arc<SyncDevice>,
    offload: bool,
    /// One raw read (virtio header + super-packet).
    raw: Vec<u8>,
    segments: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Packets in `segments` from the last read.
    got: usize,
    /// Decrypted packets waiting for one batched write; each starts with
    /// `VIRTIO_NET_HDR_LEN` bytes of room for the header.
    out: Vec<Vec<u8>>,
    out_len: usize,
    gro: Coalescer,
    pub(crate) written: u64,
    pub(crate) write_errors: u64,
    pub(crate) read_errors: u64,
}

impl Tun {
    pub(crate) fn new(dev: Arc<SyncDevice>, write_batch: usize) -> io::Result<Self> {
        dev.set_nonblocking(true)?;
        let offload = dev.tcp_gso();
        let mtu = usize::from(dev.mtu().unwrap_or(1500));
        let segments = if offload { MAX_SEGMENTS } else { 1 };
        let segment_len = if offload {
            mtu + SEGMENT_SLACK
        } else {
            MAX_READ
        };
        Ok(Self {
            dev,
            offload,
            raw: if offload {
                vec![0; VIRTIO_NET_HDR_LEN + MAX_READ]
            } else {
                Vec::new()
            },
            segments: (0..segments).map(|_| vec![0; segment_len]).collect(),
            sizes: vec![0; segments],
            got: 0,
            // A flow's packets are coalesced into the first one's buffer:
            // room for 64 KiB up front, so it never reallocates.
            out: (0..write_batch.max(1))
                .map(|_| {
                    if offload {
                        Vec::with_capacity(2 * VIRTIO_NET_HDR_LEN + MAX_READ)
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            out_len: 0,
            gro: Coalescer::default(),
            written: 0,
            write_errors: 0,
            read_errors: 0,
        })
    }

    /// Whether the device runs with the virtio-net header offloads.
    pub(crate) fn offload(&self) -> bool {
        self.offload
    }

    /// One read into the shell's buffers; [`Tun::packets`] yields what
    /// it got. Returns how many packets, 0 when nothing is waiting (or a
    /// malformed super-packet was dropped: `read_errors` counts those).
    pub(crate) fn read(&mut self) -> io::Result<usize> {
        self.got = 0;
        let r = if self.offload {
            self.dev
                .recv_multiple(&mut self.raw, &mut self.segments, &mut self.sizes, 0)
        } else {
            self.dev.recv(&mut self.segments[0]).map(|len| {
                self.sizes[0] = len;
                1
            })
        };
        match r {
            Ok(n) => {
                self.got = n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            // The device itself failed.
            Err(e) if e.raw_os_error().is_some() => Err(e),
            // tun-rs could not split what it read: drop that one.
            Err(e) => {
                self.read_errors += 1;
                tracing::debug!(%e, "bad GSO packet from TUN");
                Ok(0)
            }
        }
    }

    /// The packets of the last [`Tun::read`].
    pub(crate) fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.segments
            .iter()
            .zip(&self.sizes)
            .take(self.got)
            .map(|(buf, &len)| &buf[..len])
    }

    /// A buffer for the next decrypted packet, at least `len` bytes long.
    /// [`Tun::commit`] keeps what was written to it; otherwise it is reused.
    pub(crate) fn slot(&mut self, len: usize) -> &mut [u8] {
        if self.out_len == self.out.len() {
            self.flush();
        }
        let buf = &mut self.out[self.out_len];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN + len, 0);
        &mut buf[VIRTIO_NET_HDR_LEN..]
    }

    /// What was written at `offset` of the last [`Tun::slot`].
    pub(crate) fn slot_packet(&self, offset: usize, len: usize) -> &[u8] {
        let start = VIRTIO_NET_HDR_LEN + offset;
        &self.out[self.out_len][start..start + len]
    }

    /// Keeps `len` bytes at `offset` of the last [`Tun::slot`] for the
    /// next batched write.
    pub(crate) fn commit(&mut self, offset: usize, len: usize) {
        let buf = &mut self.out[self.out_len];
        let start = VIRTIO_NET_HDR_LEN + offset;
        if offset != 0 {
            buf.copy_within(start..start + len, VIRTIO_NET_HDR_LEN);
        }
        buf.truncate(VIRTIO_NET_HDR_LEN + len);
        self.out_len += 1;
    }

    /// Writes the batch: coalesced per flow with the offloads, one write
    /// per packet without.
    pub(crate) fn flush(&mut self) {
        if self.out_len == 0 {
            return;
        }
        let batch = &mut self.out[..self.out_len];
        let n = batch.len() as u64;
        if self.offload {
            self.gro.run(batch);
            for &i in &self.gro.order {
                match self.dev.send(&batch[i]) {
                    Ok(_) => {}
                    Err(e) => {
                        self.write_errors += 1;
                        tracing::debug!(%e, "TUN write failed");
                    }
                }
            }
            self.written += n;
        } else {
            for buf in batch.iter() {
                match self.dev.send(&buf[VIRTIO_NET_HDR_LEN..]) {
                    Ok(_) => self.written += 1,
                    Err(e) => {
                        self.write_errors += 1;
                        tracing::debug!(%e, "TUN write failed");
                    }
                }
            }
        }
        self.out_len = 0;
    }
}
