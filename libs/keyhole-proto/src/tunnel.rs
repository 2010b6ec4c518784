//! Tunnel (overlay) addresses of clients and gateways.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// The IPv4 range tunnel addresses come from (RFC 6598 shared space).
pub const TUNNEL_IPV4_RANGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(n) => n,
    Err(_) => unreachable!(),
};

/// The lower half of [`TUNNEL_IPV4_RANGE`]: where the portal allocates
/// devices' tunnel addresses.
pub const TUNNEL_PEER_IPV4_RANGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 11) {
    Ok(n) => n,
    Err(_) => unreachable!(),
};

/// The upper half of [`TUNNEL_IPV4_RANGE`], never allocated to devices:
/// clients answer DNS resources with proxy IPs from it (and put their DNS
/// stub's sentinel address there).
pub const DNS_PROXY_IPV4_RANGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 96, 0, 0), 11) {
    Ok(n) => n,
    Err(_) => unreachable!(),
};

/// The unique-local range every deployment's tunnel IPv6 /48 lies in. Each
/// deployment picks its own random `fdXX:XXXX:XXXX::/48` inside it.
pub const TUNNEL_IPV6_RANGE: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8) {
        Ok(n) => n,
        Err(_) => unreachable!(),
    };

/// A device's addresses inside the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTunnelAddresses")]
pub struct TunnelAddresses {
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

#[derive(Deserialize)]
struct RawTunnelAddresses {
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

impl TryFrom<RawTunnelAddresses> for TunnelAddresses {
    type Error = String;
    fn try_from(r: RawTunnelAddresses) -> Result<Self, String> {
        Self::new(r.ipv4, r.ipv6)
    }
}

impl TunnelAddresses {
    pub fn new(ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> Result<Self, String> {
        if !TUNNEL_IPV4_RANGE.contains(&ipv4) {
            return Err(format!("tunnel IPv4 {ipv4} is outside {TUNNEL_IPV4_RANGE}"));
        }
        if !TUNNEL_IPV6_RANGE.contains(&ipv6) {
            return Err(format!("tunnel IPv6 {ipv6} is outside {TUNNEL_IPV6_RANGE}"));
        }
        Ok(Self { ipv4, ipv6 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced() {
        assert!(
            TunnelAddresses::new(
                "100.64.0.1".parse().unwrap(),
                "fd00:1:2::5".parse().unwrap()
            )
            .is_ok()
        );
        assert!(
            TunnelAddresses::new(
                "100.127.255.254".parse().unwrap(),
                "fdff::1".parse().unwrap()
            )
            .is_ok()
        );
        assert!(
            TunnelAddresses::new("100.128.0.1".parse().unwrap(), "fd00::1".parse().unwrap())
                .is_err()
        );
        assert!(
            TunnelAddresses::new("10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()).is_err()
        );
        assert!(
            TunnelAddresses::new("100.64.0.1".parse().unwrap(), "fc00::1".parse().unwrap())
                .is_err()
        );
        let e = serde_json::from_str::<TunnelAddresses>(r#"{"ipv4":"8.8.8.8","ipv6":"fd00::1"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("100.64.0.0/10"), "{e}");
    }
}
