//! Everything the client asks of the operating system besides the TUN
//! itself, behind one small trait so other platforms can plug in.

use std::net::IpAddr;

use anyhow::Result;
use ipnet::IpNet;
use keyhole_proto::TunnelAddresses;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(target_os = "linux"))]
mod unsupported;

#[cfg(target_os = "linux")]
pub use linux::Linux as Native;
#[cfg(not(target_os = "linux"))]
pub use unsupported::Unsupported as Native;

pub trait Platform {
    /// Puts the client's tunnel addresses on the TUN and brings it up.
    fn set_addresses(&mut self, tun: &str, addresses: TunnelAddresses) -> Result<()>;
    /// Puts the stub resolver's address on the TUN.
    fn add_dns_address(&mut self, tun: &str, ip: IpAddr) -> Result<()>;
    /// Routes `net` into the TUN, from `src` where given.
    fn add_route(&mut self, tun: &str, net: IpNet, src: Option<IpAddr>) -> Result<()>;
    fn remove_route(&mut self, tun: &str, net: IpNet) -> Result<()>;
    /// Removes a TUN left behind by a killed `keyhole up` (its routes go
    /// with it). Ok if it does not exist.
    fn remove_tun(&mut self, tun: &str) -> Result<()>;
    /// Whether the TUN exists.
    fn tun_exists(&self, tun: &str) -> bool;
    /// The internet resource: everything the OS has no more specific
    /// route for goes into the TUN, per family, from `src`. Traffic to
    /// `exclude` (the portal, the relays) and from sockets passed to
    /// [`Platform::bypass_tunnel`] keeps the routes it had. Calling it
    /// again updates the exclusions.
    fn set_full_tunnel(&mut self, tun: &str, full: &FullTunnel) -> Result<()>;
    /// Undoes [`Platform::set_full_tunnel`], also one left by a killed run.
    /// Ok if there is nothing to undo.
    fn clear_full_tunnel(&mut self) -> Result<()>;
    /// Lets this socket's traffic bypass the full tunnel (the client's own
    /// WireGuard/ICE socket must not loop into its own TUN).
    fn bypass_tunnel(&self, socket: &std::net::UdpSocket) -> Result<()>;
}

/// What [`Platform::set_full_tunnel`] routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullTunnel {
    pub v4: Option<std::net::Ipv4Addr>,
    pub v6: Option<std::net::Ipv6Addr>,
    pub exclude: std::collections::BTreeSet<IpAddr>,
}
