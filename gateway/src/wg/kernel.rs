//! Kernel WireGuard: the link over rtnetlink ([`super::link`]), keys, port
//! and peers over WireGuard's generic-netlink family (wireguard-control).

use std::net::IpAddr;

use keyhole_proto::PublicKey;
use wireguard_control::{Backend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use super::{
    BackendKind, InterfaceConfig, PeerConfig, PeerStats, PeerUpdate, WgBackend, WgError, link,
};

/// WireGuard's usual MTU: 1500 less the IPv6 + UDP + WireGuard overhead.
pub const DEFAULT_MTU: u32 = 1420;

/// A kernel WireGuard interface owned by this process: made by
/// [`KernelWg::create`], deleted by [`WgBackend::teardown`] or on drop.
#[derive(Debug)]
pub struct KernelWg {
    name: String,
    iface: InterfaceName,
    public_key: PublicKey,
    torn_down: bool,
}

impl KernelWg {
    /// Creates (or replaces a stale) WireGuard link `cfg.name` and
    /// configures key, port, addresses, MTU and routes, with no peers.
    /// Runs in the caller's network namespace. Anything half-made is
    /// deleted again on failure.
    pub async fn create(rtnl: &rtnetlink::Handle, cfg: &InterfaceConfig) -> Result<Self, WgError> {
        link::check_name(&cfg.name)?;
        let iface: InterfaceName = cfg
            .name
            .parse()
            .map_err(|_| WgError::InvalidName(cfg.name.clone()))?;
        let index = link::create_wireguard(rtnl, &cfg.name).await?;
        let wg = KernelWg {
            name: cfg.name.clone(),
            iface,
            public_key: cfg.private_key.public_key(),
            torn_down: false,
        };
        // `wg` dropped on error deletes the link.
        DeviceUpdate::new()
            .set_private_key(Key(*cfg.private_key.as_bytes()))
            .set_listen_port(cfg.listen_port)
            .replace_peers()
            .apply(&wg.iface, Backend::Kernel)
            .map_err(WgError::genl(format!("configuring {}", cfg.name)))?;
        link::configure(
            rtnl,
            index,
            &cfg.name,
            &cfg.addresses,
            cfg.mtu.unwrap_or(DEFAULT_MTU),
            &cfg.routes,
        )
        .await?;
        Ok(wg)
    }

    /// The port WireGuard listens on (the kernel's pick if 0 was asked).
    pub fn listen_port(&self) -> Result<u16, WgError> {
        self.check_alive()?;
        let dev = Device::get(&self.iface, Backend::Kernel)
            .map_err(WgError::genl(format!("reading {}", self.name)))?;
        Ok(dev.listen_port.unwrap_or(0))
    }

    fn check_alive(&self) -> Result<(), WgError> {
        if self.torn_down {
            Err(WgError::TornDown(self.name.clone()))
        } else {
            Ok(())
        }
    }
}

fn peer_builder(p: &PeerConfig) -> PeerConfigBuilder {
    let psk = p
        .preshared_key
        .as_ref()
        .map_or_else(Key::zero, |k| Key(*k.as_bytes()));
    let mut b = PeerConfigBuilder::new(&Key(*p.public_key.as_bytes()))
        .replace_allowed_ips()
        .add_allowed_ip(IpAddr::V4(p.tunnel.ipv4), 32)
        .add_allowed_ip(IpAddr::V6(p.tunnel.ipv6), 128)
        // All zeros is "no preshared key" to the kernel, 0 "no keepalive":
        // an upsert must not keep a value the new config leaves out.
        .set_preshared_key(psk)
        .set_persistent_keepalive_interval(p.keepalive.unwrap_or(0));
    if let Some(ep) = p.endpoint {
        b = b.set_endpoint(ep);
    }
    b
}

impl WgBackend for KernelWg {
    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    fn interface(&self) -> &str {
        &self.name
    }

    fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// One SET_DEVICE request (split by wireguard-control only when it
    /// outgrows a netlink message) carrying just these peers: the kernel
    /// updates them in place and leaves every other peer alone.
    fn apply(&mut self, updates: &[PeerUpdate<'_>]) -> Result<(), WgError> {
        // wireguard-control's apply creates the link if it is missing;
        // after teardown that would resurrect a blank interface.
        self.check_alive()?;
        if updates.is_empty() {
            return Ok(());
        }
        let mut update = DeviceUpdate::new();
        for u in updates {
            update = match u {
                PeerUpdate::Upsert(p) => update.add_peer(peer_builder(p)),
                PeerUpdate::Remove(k) => update.remove_peer_by_key(&Key(*k.as_bytes())),
            };
        }
        update
            .apply(&self.iface, Backend::Kernel)
            .map_err(WgError::genl(format!(
                "applying {} peer update(s) to {}",
                updates.len(),
                self.name
            )))
    }

    fn peer_stats(&self) -> Result<Vec<PeerStats>, WgError> {
        self.check_alive()?;
        let dev = Device::get(&self.iface, Backend::Kernel)
            .map_err(WgError::genl(format!("reading {}", self.name)))?;
        Ok(dev
            .peers
            .into_iter()
            .map(|p| PeerStats {
                public_key: PublicKey::from_bytes(p.config.public_key.0),
                last_handshake: p.stats.last_handshake_time,
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
                endpoint: p.config.endpoint,
            })
            .collect())
    }

    fn teardown(&mut self) -> Result<(), WgError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        // Device is non-exhaustive: `delete` needs one read back first.
        let gone = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENODEV);
        let dev = match Device::get(&self.iface, Backend::Kernel) {
            Ok(dev) => dev,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(WgError::genl(format!("reading {}", self.name))(e)),
        };
        match dev.delete() {
            Ok(()) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(WgError::genl(format!("deleting {}", self.name))(e)),
        }
    }
}

impl Drop for KernelWg {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(interface = %self.name, error = %e, "tearing down WireGuard interface");
        }
    }
}
