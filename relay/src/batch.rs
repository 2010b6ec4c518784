//! recvmmsg/sendmmsg on the shell's UDP sockets: one syscall per batch
//! instead of per datagram, the relay's main userspace cost.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams one recvmmsg/sendmmsg call moves at most.
pub const BATCH: usize = 32;
/// Largest datagram read (UDP's maximum payload).
const MAX_DATAGRAM: usize = 65536;

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
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
    lens: Vec<usize>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            // SAFETY: all-zero sockaddr_storage is valid.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            lens: vec![0; BATCH],
        }
    }
}

impl RecvBatch {
    /// Reads up to [`BATCH`] datagrams without blocking; returns how many.
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
            .map(|(iov, addr)| {
                // SAFETY: all-zero mmsghdr is valid; fields set below.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
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
        for (len, m) in self.lens.iter_mut().zip(&msgs).take(n) {
            *len = m.msg_len as usize;
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let from = from_storage(self.addrs.get(i)?)?;
        Some((from, &self.bufs[i][..self.lens[i]]))
    }
}

/// Sends `items` (destination, payload) from `fd` with sendmmsg, without
/// blocking. Returns how many went out; a datagram the kernel refuses
/// outright (e.g. no route) is skipped and counted as sent, so one bad
/// destination does not hold up the rest. Stops early on EAGAIN.
pub fn send_batch(fd: RawFd, items: &[(SocketAddr, &[u8])]) -> usize {
    let mut done = 0;
    while done < items.len() {
        let chunk = &items[done..items.len().min(done + BATCH)];
        let mut names: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
            chunk.iter().map(|(a, _)| to_storage(*a)).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(_, p)| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = names
            .iter_mut()
            .zip(iovs.iter_mut())
            .map(|((ss, len), iov)| {
                // SAFETY: all-zero mmsghdr is valid; fields set below.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_name = (ss as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = *len;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs points at names and payloads that outlive the call.
        let n =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, libc::MSG_DONTWAIT) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock || err.kind() == io::ErrorKind::Interrupted {
            return done;
        }
        tracing::debug!(to = %chunk[0].0, error = %err, "send failed, datagram dropped");
        done += 1;
    }
    done
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

    #[test]
    fn batches_move_datagrams_both_ways() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![i; 1 + usize::from(i) * 10])
            .collect();
        let items: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_slice())).collect();
        assert_eq!(send_batch(tx.as_raw_fd(), &items), 40);
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        while got.len() < 40 {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                let (from, data) = batch.get(i).unwrap();
                assert_eq!(from, tx.local_addr().unwrap());
                got.push(data.to_vec());
            }
        }
        assert_eq!(got, payloads);
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
