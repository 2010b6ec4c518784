//! Platforms without a data plane yet: every call says so.

use std::net::IpAddr;

use anyhow::{Result, bail};
use ipnet::IpNet;
use keyhole_proto::TunnelAddresses;

use super::Platform;

#[derive(Debug, Default)]
pub struct Unsupported;

impl Platform for Unsupported {
    fn set_addresses(&mut self, _: &str, _: TunnelAddresses) -> Result<()> {
        bail!("tunnel addresses are not implemented on this platform yet")
    }
    fn add_dns_address(&mut self, _: &str, _: IpAddr) -> Result<()> {
        bail!("DNS is not implemented on this platform yet")
    }
    fn add_route(&mut self, _: &str, _: IpNet, _: Option<IpAddr>) -> Result<()> {
        bail!("routes are not implemented on this platform yet")
    }
    fn remove_route(&mut self, _: &str, _: IpNet) -> Result<()> {
        bail!("routes are not implemented on this platform yet")
    }
    fn remove_tun(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    fn tun_exists(&self, _: &str) -> bool {
        false
    }
    fn set_full_tunnel(&mut self, _: &str, _: &super::FullTunnel) -> Result<()> {
        bail!("the internet resource is not implemented on this platform yet")
    }
    fn clear_full_tunnel(&mut self) -> Result<()> {
        Ok(())
    }
    fn bypass_tunnel(&self, _: &std::net::UdpSocket) -> Result<()> {
        Ok(())
    }
}
