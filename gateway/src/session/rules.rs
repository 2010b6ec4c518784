//! A resource's address and filters as policy-filter authorisations.

use std::net::IpAddr;

use ipnet::IpNet;
use keyhole_proto::{DnsProxyAssignment, Resource, ResourceAddress, TunnelAddresses, resource};

use crate::policy::{Authorization, AuthorizationId, PortRange, Protocol};

/// Why a resource cannot be enforced by this gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("a DNS resource's flow needs proxy-IP assignments")]
    NoDnsAssignments,
}

/// The destinations of a resource (both families for `Internet`); for a
/// DNS resource, the client's proxy IPs: the filter runs on the tunnel's
/// ingress, before nftables translates them to real addresses.
fn destinations(
    address: &ResourceAddress,
    dns: &[DnsProxyAssignment],
) -> Result<Vec<IpNet>, RuleError> {
    match address {
        ResourceAddress::Ip { ip } => Ok(vec![IpNet::from(*ip)]),
        ResourceAddress::Cidr { cidr } => Ok(vec![*cidr]),
        ResourceAddress::Internet => Ok(vec![
            IpNet::new(IpAddr::from([0u8; 4]), 0).expect("prefix 0 is valid"),
            IpNet::new(IpAddr::from([0u16; 8]), 0).expect("prefix 0 is valid"),
        ]),
        ResourceAddress::Dns { .. } => {
            let proxies: Vec<IpNet> = dns
                .iter()
                .flat_map(|a| a.proxy_ips.iter().map(|ip| IpNet::from(*ip)))
                .collect();
            if proxies.is_empty() {
                Err(RuleError::NoDnsAssignments)
            } else {
                Ok(proxies)
            }
        }
    }
}

/// The (protocol, ports) pairs a resource's filters allow; no filters
/// means everything.
fn rules(resource: &Resource) -> Vec<(Protocol, PortRange)> {
    if resource.filters.is_empty() {
        return vec![(Protocol::Any, PortRange::ALL)];
    }
    resource
        .filters
        .iter()
        .map(|f| {
            let ports = f
                .ports
                .map(|p| PortRange::new(p.start(), p.end()).unwrap_or(PortRange::ALL))
                .unwrap_or(PortRange::ALL);
            match f.protocol {
                resource::Protocol::Tcp => (Protocol::Tcp, ports),
                resource::Protocol::Udp => (Protocol::Udp, ports),
                resource::Protocol::Icmp => (Protocol::Icmp, PortRange::ALL),
            }
        })
        .collect()
}

/// Every authorisation that lets `client` reach `resource` (through the
/// proxy IPs in `dns` for a DNS resource), with ids drawn from `next_id`.
pub fn authorizations(
    resource: &Resource,
    client: TunnelAddresses,
    dns: &[DnsProxyAssignment],
    next_id: &mut u128,
) -> Result<Vec<Authorization>, RuleError> {
    let dsts = destinations(&resource.address, dns)?;
    let rules = rules(resource);
    let mut out = Vec::with_capacity(dsts.len() * rules.len());
    for dst in dsts {
        let client_ip = match dst {
            IpNet::V4(_) => IpAddr::V4(client.ipv4),
            IpNet::V6(_) => IpAddr::V6(client.ipv6),
        };
        for &(proto, ports) in &rules {
            *next_id += 1;
            out.push(Authorization {
                id: AuthorizationId(*next_id),
                client_ip,
                dst,
                proto,
                ports,
            });
        }
    }
    Ok(out)
}
