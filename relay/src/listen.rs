//! The listener's sockets. An IPv6 wildcard listens dual-stack (IPv4
//! clients arrive as v4-mapped addresses, which [`unmap`] turns back into
//! IPv4 ones so the core sees each client in its own family).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd as _, RawFd};

/// `addr` with a v4-mapped IPv6 address (`::ffff:a.b.c.d`) as plain IPv4.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Clears IPV6_V6ONLY so an IPv6 wildcard takes IPv4 too, whatever the
/// host's `net.ipv6.bindv6only` default.
fn dual_stack(fd: RawFd) -> io::Result<()> {
    crate::batch::set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)
}

fn is_v6_wildcard(addr: SocketAddr) -> bool {
    addr.is_ipv6() && addr.ip().is_unspecified()
}

/// The UDP listener on `addr`, non-blocking, for tokio.
pub fn bind_udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let domain = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket call; the fd is owned by the UdpSocket at once.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let socket = unsafe { <std::net::UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if is_v6_wildcard(addr) {
        dual_stack(socket.as_raw_fd())?;
    }
    let (ss, len) = crate::batch::to_storage(addr);
    // SAFETY: ss holds a sockaddr of `len` bytes.
    if unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// The TCP listener on `addr`.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    if is_v6_wildcard(addr) {
        dual_stack(socket.as_raw_fd())?;
    }
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds the UDP listener on `addr`. The IPv6 wildcard falls back to the
/// IPv4 one on a host without IPv6; returns the address actually used.
pub fn bind_udp_or_v4(addr: SocketAddr) -> io::Result<(tokio::net::UdpSocket, SocketAddr)> {
    match bind_udp(addr) {
        Err(e) if is_v6_wildcard(addr) && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            tracing::warn!(error = %e, %v4, "no IPv6 on this host: listening on IPv4 only");
            Ok((bind_udp(v4)?, v4))
        }
        other => other.map(|s| (s, addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let cases = [
            ("[::ffff:192.0.2.7]:3478", "192.0.2.7:3478"),
            ("[2001:db8::1]:3478", "[2001:db8::1]:3478"),
            ("192.0.2.7:9", "192.0.2.7:9"),
        ];
        for (from, to) in cases {
            assert_eq!(unmap(from.parse().unwrap()), to.parse().unwrap());
        }
    }

    #[tokio::test]
    async fn the_ipv6_wildcard_serves_both_families() {
        let (listener, used) = bind_udp_or_v4("[::]:0".parse().unwrap()).unwrap();
        if used.is_ipv4() {
            return; // no IPv6 here: the fallback is what there is to test
        }
        let port = listener.local_addr().unwrap().port();
        for client in ["127.0.0.1:0", "[::1]:0"] {
            let c = std::net::UdpSocket::bind(client).unwrap();
            let to = SocketAddr::new(c.local_addr().unwrap().ip(), port);
            c.send_to(b"hello", to).unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = listener.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hello");
            let from = unmap(from);
            assert_eq!(
                from,
                c.local_addr().unwrap(),
                "the client in its own family"
            );
            // Replies go to the unmapped address, through the same socket,
            // by batch too.
            assert_eq!(
                crate::batch::send_batch(listener.as_raw_fd(), &[(from, b"back")]),
                1
            );
            let (n, _) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"back");
        }
    }
}
