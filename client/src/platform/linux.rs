//! Linux: addresses and routes through iproute2's `ip`.

use std::net::IpAddr;
use std::process::Command;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use keyhole_proto::TunnelAddresses;

use super::{FullTunnel, Platform};

#[path = "linux_full_tunnel.rs"]
mod full_tunnel;

#[derive(Debug, Default)]
pub struct Linux;

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_cmd_addr(tun: &str, addr: IpAddr) -> Result<()> {
    ip(&["link", "set", tun, "up"])?;
    let host = if addr.is_ipv4() { 32 } else { 128 };
    ip(&["addr", "replace", &format!("{addr}/{host}"), "dev", tun])
}

impl Platform for Linux {
    fn set_addresses(&mut self, tun: &str, t: TunnelAddresses) -> Result<()> {
        ip(&["link", "set", tun, "up"])?;
        ip(&["addr", "replace", &format!("{}/32", t.ipv4), "dev", tun])?;
        // IPv6 may be disabled on the host; IPv4 still works then.
        if let Err(e) = ip(&[
            "-6",
            "addr",
            "replace",
            &format!("{}/128", t.ipv6),
            "dev",
            tun,
            "nodad",
        ]) {
            tracing::warn!(error = %format!("{e:#}"), "no IPv6 tunnel address");
        }
        Ok(())
    }

    fn add_dns_address(&mut self, tun: &str, ip: IpAddr) -> Result<()> {
        ip_cmd_addr(tun, ip)
    }

    fn add_route(&mut self, tun: &str, net: IpNet, src: Option<IpAddr>) -> Result<()> {
        let net_s = net.to_string();
        let src_s = src.map(|s| s.to_string());
        let mut args = vec!["route", "replace", &net_s, "dev", tun];
        if let Some(s) = &src_s {
            args.extend(["src", s.as_str()]);
        }
        ip(&args)
    }

    fn remove_route(&mut self, tun: &str, net: IpNet) -> Result<()> {
        ip(&["route", "del", &net.to_string(), "dev", tun])
    }

    fn remove_tun(&mut self, tun: &str) -> Result<()> {
        if self.tun_exists(tun) {
            ip(&["link", "del", tun])?;
        }
        Ok(())
    }

    fn tun_exists(&self, tun: &str) -> bool {
        std::path::Path::new("/sys/class/net").join(tun).exists()
    }

    fn set_full_tunnel(&mut self, tun: &str, full: &FullTunnel) -> Result<()> {
        full_tunnel::apply(tun, full)
    }

    fn clear_full_tunnel(&mut self) -> Result<()> {
        full_tunnel::clear();
        Ok(())
    }

    fn bypass_tunnel(&self, socket: &std::net::UdpSocket) -> Result<()> {
        full_tunnel::bypass(socket)
    }
}
