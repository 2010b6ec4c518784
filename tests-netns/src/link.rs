//! Links, addresses, routes and forwarding.

use anyhow::{Context, Result};

use crate::command::run_host;
use crate::netns::Netns;

/// Creates a veth pair straight inside the two namespaces (never in the root
/// namespace), assigns the addresses and brings both ends up. `a_cidr` /
/// `b_cidr` are IPv4 or IPv6 CIDRs such as `"10.0.0.1/24"` or `"fd00::1/64"`;
/// an empty string assigns none. Add more with [`Netns::add_addr`].
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_cidr: &str,
    b: &Netns,
    b_if: &str,
    b_cidr: &str,
) -> Result<()> {
    run_host(
        "ip",
        [
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ],
    )
    .with_context(|| format!("create veth {}:{a_if} <-> {}:{b_if}", a.name(), b.name()))?;
    for (ns, dev, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        if !cidr.is_empty() {
            ns.add_addr(dev, cidr)?;
        }
        ns.link_up(dev)?;
    }
    Ok(())
}

fn is_v6(addr: &str) -> bool {
    addr.contains(':')
}

impl Netns {
    /// Adds an IPv4 or IPv6 address (CIDR) to `dev`. IPv6 addresses skip
    /// duplicate address detection so they are usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if is_v6(cidr) {
            args.push("nodad");
        }
        self.ip(args)?;
        Ok(())
    }

    /// Brings `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(["link", "set", dev, "up"])?;
        Ok(())
    }

    /// Sets the MTU of `dev`.
    pub fn set_mtu(&self, dev: &str, mtu: u32) -> Result<()> {
        self.ip(["link", "set", dev, "mtu", &mtu.to_string()])?;
        Ok(())
    }

    /// Adds an address to `lo`: a local "resource" address of this
    /// namespace. (The `dummy` link type is not available on this kind of
    /// machine.)
    pub fn add_loopback_addr(&self, cidr: &str) -> Result<()> {
        self.add_addr("lo", cidr)
    }

    /// `ip route add <dst_cidr> via <via>` (family taken from the addresses).
    pub fn add_route(&self, dst_cidr: &str, via: &str) -> Result<()> {
        self.ip(["route", "add", dst_cidr, "via", via])?;
        Ok(())
    }

    /// `ip route add <dst_cidr> dev <dev>`: on-link or point-to-point (TUN).
    pub fn add_route_dev(&self, dst_cidr: &str, dev: &str) -> Result<()> {
        self.ip(["route", "add", dst_cidr, "dev", dev])?;
        Ok(())
    }

    /// Default route via `via` (IPv4 or IPv6 by the address).
    pub fn default_route(&self, via: &str) -> Result<()> {
        let family = if is_v6(via) { "-6" } else { "-4" };
        self.ip([family, "route", "add", "default", "via", via])?;
        Ok(())
    }

    /// Turns on IPv4 and IPv6 forwarding in this namespace.
    pub fn enable_forwarding(&self) -> Result<()> {
        self.sysctl("net.ipv4.ip_forward", "1")?;
        self.sysctl("net.ipv6.conf.all.forwarding", "1")
    }

    /// Turns TX checksum offload off on `dev` (`ethtool -K dev tx off`),
    /// so packets this namespace sends carry full checksums. A veth
    /// otherwise hands them on with a partial checksum (CHECKSUM_PARTIAL,
    /// kept across forwarding), which an XDP program further on cannot
    /// update incrementally.
    pub fn tx_checksum_off(&self, dev: &str) -> Result<()> {
        self.enter(|| tx_checksum_off(dev))
            .with_context(|| format!("tx checksum off on {dev} in netns {}", self.name()))
    }
}

/// ETHTOOL_STXCSUM 0 on `dev` in the calling thread's namespace.
fn tx_checksum_off(dev: &str) -> Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    if dev.len() >= 16 {
        anyhow::bail!("interface name too long: {dev}");
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: (&mut value as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: a plain socket and one ioctl with a properly sized ifreq
    // whose data pointer outlives the call; the fd is closed right after.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err.into());
        }
    }
    Ok(())
}
