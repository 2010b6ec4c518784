//! TUN devices created inside a namespace with the TUNSETIFF ioctl.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// `_IOW('T', 202, int)` from <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// A layer-3 TUN device (`IFF_TUN | IFF_NO_PI`: packets start at the IP
/// header). The device exists while this value (its only fd) lives.
///
/// Reads and writes take `&self`, so a `Tun` can be shared between threads
/// (e.g. in an `Arc`). (`ip link add type tun` fails on this kind of
/// machine; the ioctl path does not.)
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    netns: String,
}

impl Tun {
    /// Creates TUN `name` in `ns` with these addresses (IPv4/IPv6 CIDRs), up.
    pub fn create(ns: &Netns, name: &str, cidrs: &[&str]) -> Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            bail!(
                "TUN name {name:?} must be 1 to {} bytes",
                libc::IFNAMSIZ - 1
            );
        }
        let c_name = CString::new(name).with_context(|| format!("TUN name {name:?}"))?;
        // Both the open and the ioctl must happen in the namespace: the
        // device lands in the namespace of whoever opened /dev/net/tun.
        let (fd, ifindex) = ns
            .enter(|| open_tun(&c_name))
            .with_context(|| format!("create TUN {name} in netns {}", ns.name()))?;
        let tun = Tun {
            fd,
            name: name.to_owned(),
            ifindex,
            netns: ns.name().to_owned(),
        };
        for cidr in cidrs {
            ns.add_addr(name, cidr)?;
        }
        ns.link_up(name)?;
        Ok(tun)
    }

    /// Like [`Tun::create`], then sets the MTU.
    pub fn create_with_mtu(ns: &Netns, name: &str, cidrs: &[&str], mtu: u32) -> Result<Tun> {
        let tun = Tun::create(ns, name, cidrs)?;
        ns.set_mtu(name, mtu)?;
        Ok(tun)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index inside its namespace (for TC/XDP attach).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The name of the namespace the device lives in.
    pub fn netns_name(&self) -> &str {
        &self.netns
    }

    /// Reads one packet into `buf`, waiting up to `timeout`.
    /// `Ok(None)` when none arrived in time.
    pub fn read_packet(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(err).with_context(|| format!("poll TUN {}", self.name));
        }
        if ready == 0 {
            return Ok(None);
        }
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) {
                return Ok(None);
            }
            return Err(err).with_context(|| format!("read TUN {}", self.name));
        }
        Ok(Some(n as usize))
    }

    /// Writes one IP packet: the kernel receives it as if it had arrived on
    /// this interface (ingress).
    pub fn write_packet(&self, packet: &[u8]) -> Result<()> {
        // SAFETY: packet is valid for packet.len() bytes of reads.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("write {} bytes to TUN {}", packet.len(), self.name));
        }
        if n as usize != packet.len() {
            bail!(
                "short write to TUN {}: {n} of {} bytes",
                self.name,
                packet.len()
            );
        }
        Ok(())
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Opens /dev/net/tun and attaches it to a new device; returns fd and ifindex.
fn open_tun(name: &CString) -> std::io::Result<(OwnedFd, u32)> {
    // SAFETY: the path is a valid C string; the result is checked.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a freshly opened fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: name is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fd, ifindex))
}
