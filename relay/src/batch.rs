//! recvmmsg/sendmmsg on the shell's UDP sockets: one syscall per batch
//! instead of per datagram, the relay's main userspace cost. Where the
//! kernel offers it, runs of equal-size datagrams to one destination also
//! go down the stack as one (UDP GSO), and the listener reads runs from one
//! client as one (UDP GRO): a bulk flow through the relay (a WireGuard
//! tunnel's full-size packets) then costs the stack once per run.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Datagrams (or GRO runs) one recvmmsg call moves at most, and messages
/// one sendmmsg call sends at most.
pub const BATCH: usize = 32;
/// Largest datagram (or GRO run) read: UDP's maximum payload.
const MAX_DATAGRAM: usize = 65536;
/// Most datagrams one GSO send carries (UDP_MAX_SEGMENTS on older kernels).
const MAX_SEGMENTS: usize = 64;
/// Most payload bytes one GSO send carries: under an IPv4 datagram's limit.
const MAX_GSO_BYTES: usize = 65000;
/// Control buffer per message: room for one int-sized cmsg, 8-aligned.
const CONTROL_WORDS: usize = 4;

/// Whether sends may use UDP_SEGMENT; cleared for good the first time the
/// kernel refuses it as unsupported.
static GSO: AtomicBool = AtomicBool::new(true);

/// Sends datagram by datagram from now on.
pub fn disable_gso() {
    GSO.store(false, Ordering::Relaxed);
}

/// Asks the kernel to coalesce runs of datagrams from one sender (UDP GRO);
/// [`RecvBatch::datagrams`] splits them again. An error leaves the socket
/// as it was: datagrams then arrive one by one.
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// setsockopt of an int-valued option.
pub(crate) fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a correctly sized int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `addr` as a sockaddr for the kernel, with its length.
pub(crate) fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero sockaddr_storage is valid; we write a sockaddr_in or
    // sockaddr_in6 into it, both smaller than the storage.
    unsafe {
        let mut ss: libc::sockaddr_storage = zeroed();
        match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (ss, size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                (ss, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    }
}

fn from_storage(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field says which struct the kernel wrote.
    unsafe {
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                let sin = &*(ss as *const _ as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = &*(ss as *const _ as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// Buffers for one recvmmsg call.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    lens: Vec<usize>,
    /// GRO segment size of each message (0: one datagram).
    segments: Vec<usize>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            // SAFETY: all-zero sockaddr_storage is valid.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            controls: vec![[0; CONTROL_WORDS]; BATCH],
            lens: vec![0; BATCH],
            segments: vec![0; BATCH],
        }
    }
}

impl RecvBatch {
    /// Reads up to [`BATCH`] messages without blocking; returns how many.
    /// With GRO on, one message can hold a run of datagrams.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .zip(self.controls.iter_mut())
            .map(|((iov, addr), control)| {
                // SAFETY: all-zero mmsghdr is valid; fields set below.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_control = control.as_mut_ptr().cast();
                m.msg_hdr.msg_controllen = size_of::<[u64; CONTROL_WORDS]>();
                m
            })
            .collect();
        // SAFETY: msgs points at buffers that live until the call returns.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().enumerate().take(n) {
            self.lens[i] = m.msg_len as usize;
            self.segments[i] = gro_segment(&m.msg_hdr);
        }
        Ok(n)
    }

    /// The datagrams of the last [`recv`](Self::recv)'s first `n`
    /// messages, GRO runs split back into their datagrams.
    pub fn datagrams(&self, n: usize) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..n.min(BATCH)).flat_map(move |i| {
            // A dual-stack listener's IPv4 clients in their own family.
            let from = from_storage(&self.addrs[i]).map(crate::listen::unmap);
            let data = &self.bufs[i][..self.lens[i]];
            // Every datagram of a run has the segment size but the last.
            let stride = match self.segments[i] {
                0 => data.len(),
                s => s.min(data.len()),
            };
            // An empty datagram has no chunks but is still one datagram.
            let empty = data.is_empty().then_some(data);
            data.chunks(stride.max(1))
                .chain(empty)
                .filter_map(move |d| Some((from?, d)))
        })
    }
}

/// The UDP_GRO segment size in a received message's control data (0: none).
fn gro_segment(hdr: &libc::msghdr) -> usize {
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG
    // macros stay within it, and a UDP_GRO cmsg carries an int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
}

/// How many datagrams from `items[0]` on can go as one GSO send: same
/// destination, the same size but for a possibly shorter last one.
fn gso_run(items: &[(SocketAddr, &[u8])]) -> usize {
    let Some(((to, first), rest)) = items.split_first() else {
        return 0;
    };
    let size = first.len();
    if size == 0 || !GSO.load(Ordering::Relaxed) {
        return 1;
    }
    let mut n = 1;
    let mut bytes = size;
    for (t, p) in rest {
        if n == MAX_SEGMENTS || t != to || p.is_empty() || p.len() > size {
            break;
        }
        if bytes + p.len() > MAX_GSO_BYTES {
            break;
        }
        n += 1;
        bytes += p.len();
        if p.len() < size {
            break;
        }
    }
    n
}

/// Sends `items` (destination, payload) from `fd` with sendmmsg, without
/// blocking. Returns how many went out; a datagram the kernel refuses
/// outright (e.g. no route) is skipped and counted as sent, so one bad
/// destination does not hold up the rest. Stops early on EAGAIN.
pub fn send_batch(fd: RawFd, items: &[(SocketAddr, &[u8])]) -> usize {
    let mut done = 0;
    // Items before this index go one per message (a GSO send of them failed).
    let mut plain_until = 0;
    while done < items.len() {
        // Messages: (first item, item count); GSO where a run allows.
        let mut groups: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
        let mut at = done;
        while at < items.len() && groups.len() < BATCH {
            let n = if at < plain_until {
                1
            } else {
                gso_run(&items[at..])
            };
            groups.push((at, n));
            at += n;
        }
        let mut names: Vec<(libc::sockaddr_storage, libc::socklen_t)> = groups
            .iter()
            .map(|&(first, _)| to_storage(items[first].0))
            .collect();
        let mut iovs: Vec<libc::iovec> = items[done..at]
            .iter()
            .map(|(_, p)| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut controls: Vec<[u64; CONTROL_WORDS]> = vec![[0; CONTROL_WORDS]; groups.len()];
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(groups.len());
        for ((&(first, n), (ss, len)), control) in
            groups.iter().zip(names.iter_mut()).zip(controls.iter_mut())
        {
            // SAFETY: all-zero mmsghdr is valid; fields set below point at
            // names, iovs and controls, which outlive the call.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_name = (ss as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = *len;
            m.msg_hdr.msg_iov = iovs[first - done..].as_mut_ptr();
            m.msg_hdr.msg_iovlen = n;
            if n > 1 {
                put_gso_segment(&mut m.msg_hdr, control, items[first].1.len());
            }
            msgs.push(m);
        }
        // SAFETY: msgs points at names, payloads and controls that outlive
        // the call.
        let sent =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, libc::MSG_DONTWAIT) };
        if sent > 0 {
            done = groups.get(sent as usize).map_or(at, |&(first, _)| first);
            continue;
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock || err.kind() == io::ErrorKind::Interrupted {
            return done;
        }
        let (first, n) = groups[0];
        if n > 1 {
            // The device or route cannot take this GSO send (no checksum
            // offload: EIO; segments over the MTU: EINVAL): send its
            // datagrams one by one instead.
            if err.raw_os_error() == Some(libc::EIO) && GSO.swap(false, Ordering::Relaxed) {
                tracing::info!(error = %err, "UDP GSO unavailable, sending datagram by datagram");
            }
            plain_until = first + n;
            continue;
        }
        tracing::debug!(to = %items[first].0, error = %err, "send failed, datagram dropped");
        done += 1;
    }
    done
}

/// Writes a UDP_SEGMENT cmsg of `size` into `control` and points `hdr` at it.
fn put_gso_segment(hdr: &mut libc::msghdr, control: &mut [u64; CONTROL_WORDS], size: usize) {
    hdr.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE of a u16 fits the control buffer; the cmsg is
    // written inside it.
    unsafe {
        hdr.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_round_trip() {
        for a in ["192.0.2.1:3478", "[2001:db8::1]:50000"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(from_storage(&to_storage(a).0), Some(a));
        }
    }

    /// Sends `payloads` from a fresh socket to one that reads them back with
    /// or without GRO; returns what arrived, in order, and in how many
    /// messages.
    fn round_trip(payloads: &[Vec<u8>], gro: bool) -> (Vec<Vec<u8>>, usize) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Room for every datagram at once: nothing reads while they arrive.
        set_int_option(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            8 << 20,
        )
        .unwrap();
        if gro {
            enable_gro(rx.as_raw_fd()).unwrap();
        }
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let items: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_slice())).collect();
        assert_eq!(send_batch(tx.as_raw_fd(), &items), payloads.len());
        let mut batch = RecvBatch::default();
        let (mut got, mut messages) = (Vec::new(), 0);
        while got.len() < payloads.len() {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            messages += n;
            for (from, data) in batch.datagrams(n) {
                assert_eq!(from, tx.local_addr().unwrap());
                got.push(data.to_vec());
            }
        }
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        (got, messages)
    }

    #[test]
    fn batches_move_datagrams_both_ways() {
        let payloads: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![i; 1 + usize::from(i) * 10])
            .collect();
        assert_eq!(round_trip(&payloads, false).0, payloads);
    }

    #[test]
    fn equal_sized_runs_keep_their_boundaries_through_gso_and_gro() {
        // Runs of equal sizes (GSO sends), a shorter tail, odd sizes between,
        // and more datagrams than one GSO send or one batch carries.
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for i in 0..150u32 {
            payloads.push(vec![i as u8; 1200]);
        }
        payloads.push(vec![0xee; 700]);
        payloads.push(vec![0xdd; 1300]);
        for i in 0..70u32 {
            payloads.push(vec![i as u8; 100]);
        }
        payloads.push(vec![]);
        payloads.push(vec![1]);
        for gro in [false, true] {
            let (got, messages) = round_trip(&payloads, gro);
            // An empty datagram is not a datagram a relay acts on; GRO
            // hands it over as one, without GRO it reads as zero bytes.
            let want: Vec<&Vec<u8>> = payloads.iter().filter(|p| !p.is_empty()).collect();
            let got: Vec<&Vec<u8>> = got.iter().filter(|p| !p.is_empty()).collect();
            assert_eq!(got, want, "gro {gro}");
            // Loopback keeps a GSO send whole up to a GRO socket.
            if gro {
                assert!(
                    messages < 20,
                    "{messages} messages: runs were not kept whole"
                );
            } else {
                assert_eq!(messages, payloads.len());
            }
        }
    }

    #[test]
    fn runs_group_by_destination_and_size() {
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        let big = [0u8; 1000];
        let small = [0u8; 10];
        let items = [(a, &big[..]), (a, &big[..]), (a, &small[..]), (a, &big[..])];
        assert_eq!(gso_run(&items), 3, "a shorter datagram ends a run");
        let items = [(a, &big[..]), (b, &big[..])];
        assert_eq!(gso_run(&items), 1, "another destination ends a run");
        let items = [(a, &small[..]), (a, &big[..])];
        assert_eq!(gso_run(&items), 1, "a longer datagram cannot follow");
        let many: Vec<(SocketAddr, &[u8])> = (0..100).map(|_| (a, &big[..])).collect();
        assert_eq!(gso_run(&many), 64, "segments per send are bounded");
        let huge = [0u8; 30000];
        let items = [(a, &huge[..]), (a, &huge[..]), (a, &huge[..])];
        assert_eq!(gso_run(&items), 2, "bytes per send are bounded");
        assert_eq!(gso_run(&[]), 0);
    }
}
