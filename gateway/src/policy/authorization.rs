//! What the gateway is told a client may reach.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use keyhole_ebpf_common::policy::{PROTO_ANY, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use super::PolicyError;

/// Identifies an authorisation (the portal's id for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthorizationId(pub u128);

impl fmt::Display for AuthorizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Transport protocols a rule can admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP to a destination port in the rule's range.
    Tcp,
    /// UDP to a destination port in the rule's range.
    Udp,
    /// ICMP (v4) / ICMPv6 echo requests only; ports are ignored.
    Icmp,
    /// Every protocol, port and ICMP type; ports are ignored.
    Any,
}

impl Protocol {
    pub(crate) fn to_kernel(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
            Protocol::Icmp => PROTO_ICMP,
            Protocol::Any => PROTO_ANY,
        }
    }

    fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// An inclusive destination port range, `lo <= hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ALL: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// `lo..=hi`; an empty range is an error.
    pub fn new(lo: u16, hi: u16) -> Result<Self, PolicyError> {
        if lo > hi {
            return Err(PolicyError::EmptyPortRange { lo, hi });
        }
        Ok(Self { lo, hi })
    }

    /// Just `port`.
    pub const fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    pub const fn lo(&self) -> u16 {
        self.lo
    }

    pub const fn hi(&self) -> u16 {
        self.hi
    }
}

/// Client `client_ip` may reach `dst` with `proto` on `ports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Authorization {
    pub id: AuthorizationId,
    /// The client's tunnel address (the packets' source).
    pub client_ip: IpAddr,
    /// Destination prefix; host bits are cleared (10.0.1.7/24 is 10.0.1.0/24).
    pub dst: IpNet,
    pub proto: Protocol,
    /// Destination ports (TCP and UDP); ignored for ICMP and Any.
    pub ports: PortRange,
}

impl Authorization {
    /// Checks the families agree and returns the authorisation with its
    /// destination in canonical form (and full port range where ports are
    /// ignored, so equal rules compare equal).
    pub(crate) fn normalized(mut self) -> Result<Self, PolicyError> {
        if self.client_ip.is_ipv4() != self.dst.addr().is_ipv4() {
            return Err(PolicyError::FamilyMismatch {
                id: self.id,
                client: self.client_ip,
                dst: self.dst,
            });
        }
        self.dst = self.dst.trunc();
        if !self.proto.has_ports() {
            self.ports = PortRange::ALL;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_port_range_is_rejected() {
        assert!(matches!(
            PortRange::new(10, 9),
            Err(PolicyError::EmptyPortRange { lo: 10, hi: 9 })
        ));
        assert_eq!(PortRange::new(9, 9).unwrap(), PortRange::single(9));
    }

    #[test]
    fn normalization_truncates_prefix_and_checks_family() {
        let auth = Authorization {
            id: AuthorizationId(1),
            client_ip: "100.64.0.2".parse().unwrap(),
            dst: "10.0.1.7/24".parse().unwrap(),
            proto: Protocol::Icmp,
            ports: PortRange::single(5),
        };
        let n = auth.normalized().unwrap();
        assert_eq!(n.dst, "10.0.1.0/24".parse::<IpNet>().unwrap());
        assert_eq!(n.ports, PortRange::ALL);

        let mixed = Authorization {
            dst: "fd00::/64".parse().unwrap(),
            ..auth
        };
        assert!(matches!(
            mixed.normalized(),
            Err(PolicyError::FamilyMismatch { .. })
        ));
    }
}
