//! ICMP echo from inside a namespace, in-process (raw sockets, as root), so
//! tests need no `ping` binary (iputils-ping is not installed here).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrLike, SockaddrStorage, bind,
    recvfrom, sendto, socket,
};

use crate::netns::Netns;

/// Echo requests are resent this often until a reply or the deadline.
const RESEND: Duration = Duration::from_millis(200);

static PING_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Sends ICMP/ICMPv6 echo requests to `dst` from this namespace until one
    /// is answered; returns that round-trip time. Fails after `timeout`.
    pub fn ping(&self, dst: IpAddr, timeout: Duration) -> Result<Duration> {
        self.ping_from(None, dst, timeout)
    }

    /// [`Netns::ping`] with the requests' source address fixed to `src`
    /// (which must be an address of this namespace).
    pub fn ping_from(
        &self,
        src: Option<IpAddr>,
        dst: IpAddr,
        timeout: Duration,
    ) -> Result<Duration> {
        self.enter(|| ping_here(src, dst, timeout))
            .with_context(|| match src {
                Some(src) => format!("ping {dst} from {src} in netns {}", self.name()),
                None => format!("ping {dst} in netns {}", self.name()),
            })
    }
}

fn ping_here(src: Option<IpAddr>, dst: IpAddr, timeout: Duration) -> Result<Duration> {
    let (family, protocol) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6),
    };
    let fd = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)
        .context("raw ICMP socket")?;
    if let Some(src) = src {
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(src, 0)),
        )
        .with_context(|| format!("bind {src}"))?;
    }
    // Raw sockets see every ICMP message of the namespace: the id and a
    // per-call token in the payload pick out our replies.
    let n = PING_COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = (std::process::id() as u16) ^ (n as u16).rotate_left(8);
    let token = (u64::from(std::process::id()) << 32) | u64::from(n);
    let dst_sa = SockaddrStorage::from(SocketAddr::new(dst, 0));
    let deadline = Instant::now() + timeout;
    let mut sent = Vec::new();
    loop {
        let seq = sent.len() as u16;
        let request = echo_request(dst.is_ipv6(), id, seq, token);
        sent.push(Instant::now());
        sendto(fd.as_raw_fd(), &request, &dst_sa, MsgFlags::empty())
            .context("send echo request")?;
        let resend_at = (Instant::now() + RESEND).min(deadline);
        if let Some(seq) = await_reply(&fd, dst, id, token, resend_at)? {
            return Ok(sent[usize::from(seq)].elapsed());
        }
        if Instant::now() >= deadline {
            bail!(
                "no echo reply to {} requests within {timeout:?}",
                sent.len()
            );
        }
    }
}

/// Reads ICMP messages until our echo reply (returns its sequence number)
/// or `until`.
fn await_reply(
    fd: &OwnedFd,
    dst: IpAddr,
    id: u16,
    token: u64,
    until: Instant,
) -> Result<Option<u16>> {
    let mut buf = [0u8; 2048];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if ready <= 0 {
            continue;
        }
        let (len, from) =
            recvfrom::<SockaddrStorage>(fd.as_raw_fd(), &mut buf).context("receive ICMP")?;
        if from.as_ref().and_then(sockaddr_ip) != Some(dst) {
            continue;
        }
        if let Some(seq) = parse_echo_reply(&buf[..len], dst.is_ipv6(), id, token) {
            return Ok(Some(seq));
        }
    }
}

fn sockaddr_ip(sa: &SockaddrStorage) -> Option<IpAddr> {
    match sa.family()? {
        AddressFamily::Inet => Some(IpAddr::V4(sa.as_sockaddr_in()?.ip())),
        AddressFamily::Inet6 => Some(IpAddr::V6(sa.as_sockaddr_in6()?.ip())),
        _ => None,
    }
}

fn echo_request(v6: bool, id: u16, seq: u16, token: u64) -> Vec<u8> {
    let mut msg = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(&token.to_be_bytes());
    // The kernel fills in the ICMPv6 checksum (it covers a pseudo-header).
    if !v6 {
        let sum = checksum(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    msg
}

/// The sequence number if `packet` is our echo reply. IPv4 raw sockets
/// deliver the IP header too; IPv6 ones only the ICMPv6 message.
fn parse_echo_reply(packet: &[u8], v6: bool, id: u16, token: u64) -> Option<u16> {
    let icmp = if v6 {
        packet
    } else {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(ihl..)?
    };
    let reply_type = if v6 { 129 } else { 0 };
    if icmp.len() < 16 || icmp[0] != reply_type || icmp[1] != 0 {
        return None;
    }
    let got_id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let got_token = u64::from_be_bytes(icmp[8..16].try_into().ok()?);
    (got_id == id && got_token == token).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksum_verifies_and_reply_parses() {
        let req = echo_request(false, 0x1234, 7, 42);
        assert_eq!(checksum(&req), 0, "a correct checksum sums to zero");
        let mut reply = vec![0x45u8; 20];
        reply[0] = 0x45;
        let mut icmp = req.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert_eq!(parse_echo_reply(&reply, false, 0x1234, 42), Some(7));
        assert_eq!(parse_echo_reply(&reply, false, 0x1234, 43), None);
        assert_eq!(parse_echo_reply(&reply[..25], false, 0x1234, 42), None);
        assert_eq!(parse_echo_reply(&[], false, 0x1234, 42), None);
    }
}
