//! Resources and their traffic filters.
//!
//! Wire form:
//! ```json
//! {"id":"…","name":"wiki","address":{"kind":"dns","pattern":"**.wiki.corp"},
//!  "filters":[{"protocol":"tcp","ports":{"start":443,"end":443}}],
//!  "site_ids":["…"]}
//! ```
//! An empty filter list allows all traffic to the resource.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{DnsPattern, ResourceId, SiteId};

/// Longest resource name accepted.
pub const MAX_RESOURCE_NAME_LEN: usize = 255;

/// A published resource as the portal describes it to gateways and clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub id: ResourceId,
    pub name: ResourceName,
    pub address: ResourceAddress,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub site_ids: Vec<SiteId>,
}

impl Resource {
    /// Whether traffic with this protocol and destination port is allowed
    /// by the filters (no filters: everything is).
    pub fn allows(&self, protocol: Protocol, port: Option<u16>) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| f.allows(protocol, port))
    }
}

/// A display name: 1–255 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

impl ResourceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("resource name is empty".into());
        }
        if s.chars().count() > MAX_RESOURCE_NAME_LEN {
            return Err(format!(
                "resource name is longer than {MAX_RESOURCE_NAME_LEN} characters"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("resource name contains control characters".into());
        }
        Ok(Self(s))
    }
}

impl From<ResourceName> for String {
    fn from(n: ResourceName) -> String {
        n.0
    }
}

/// What a resource points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResourceAddress {
    /// A DNS name or wildcard pattern.
    Dns { pattern: DnsPattern },
    /// One IP address.
    Ip { ip: IpAddr },
    /// A network; host bits must be zero (`10.0.0.0/24`, not `10.0.0.1/24`).
    Cidr {
        #[serde(deserialize_with = "canonical_cidr")]
        cidr: IpNet,
    },
    /// Everything not covered by a more specific resource.
    Internet,
}

fn canonical_cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let net = IpNet::deserialize(d)?;
    if net.trunc() != net {
        return Err(serde::de::Error::custom(format!(
            "CIDR {net} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Transport protocol of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

/// Allow `protocol`, optionally only to `ports` (TCP/UDP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawFilter")]
pub struct Filter {
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

#[derive(Deserialize)]
struct RawFilter {
    protocol: Protocol,
    #[serde(default)]
    ports: Option<PortRange>,
}

impl TryFrom<RawFilter> for Filter {
    type Error = &'static str;
    fn try_from(r: RawFilter) -> Result<Self, Self::Error> {
        if r.protocol == Protocol::Icmp && r.ports.is_some() {
            return Err("ICMP filters cannot have ports");
        }
        Ok(Self {
            protocol: r.protocol,
            ports: r.ports,
        })
    }
}

impl Filter {
    pub fn allows(&self, protocol: Protocol, port: Option<u16>) -> bool {
        if self.protocol != protocol {
            return false;
        }
        match (self.ports, port) {
            (None, _) => true,
            (Some(range), Some(p)) => range.contains(p),
            (Some(_), None) => false,
        }
    }
}

/// An inclusive port range, `1 <= start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawPortRange")]
pub struct PortRange {
    start: u16,
    end: u16,
}

#[derive(Deserialize)]
struct RawPortRange {
    start: u16,
    end: u16,
}

impl TryFrom<RawPortRange> for PortRange {
    type Error = String;
    fn try_from(r: RawPortRange) -> Result<Self, String> {
        Self::new(r.start, r.end)
    }
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Result<Self, String> {
        if start == 0 {
            return Err("port 0 is not a valid destination port".into());
        }
        if start > end {
            return Err(format!("port range start {start} is after its end {end}"));
        }
        Ok(Self { start, end })
    }

    pub fn single(port: u16) -> Result<Self, String> {
        Self::new(port, port)
    }

    pub fn start(&self) -> u16 {
        self.start
    }

    pub fn end(&self) -> u16 {
        self.end
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_have_a_kind_tag() {
        let a: ResourceAddress =
            serde_json::from_str(r#"{"kind":"cidr","cidr":"10.1.0.0/16"}"#).unwrap();
        assert_eq!(
            a,
            ResourceAddress::Cidr {
                cidr: "10.1.0.0/16".parse().unwrap()
            }
        );
        let i: ResourceAddress = serde_json::from_str(r#"{"kind":"internet"}"#).unwrap();
        assert_eq!(serde_json::to_string(&i).unwrap(), r#"{"kind":"internet"}"#);
        let ip: ResourceAddress = serde_json::from_str(r#"{"kind":"ip","ip":"fd00::1"}"#).unwrap();
        assert!(matches!(ip, ResourceAddress::Ip { ip } if ip.is_ipv6()));
    }

    #[test]
    fn non_canonical_cidr_and_unknown_kinds_are_rejected() {
        let e = serde_json::from_str::<ResourceAddress>(r#"{"kind":"cidr","cidr":"10.1.2.3/16"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("10.1.0.0/16"), "{e}");
        assert!(
            serde_json::from_str::<ResourceAddress>(r#"{"kind":"cidr","cidr":"10.1.0.0/33"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<ResourceAddress>(r#"{"kind":"mac"}"#).is_err());
        assert!(
            serde_json::from_str::<ResourceAddress>(r#"{"kind":"dns","pattern":"*"}"#).is_err()
        );
    }

    #[test]
    fn filters_validate_ports() {
        let f: Filter =
            serde_json::from_str(r#"{"protocol":"tcp","ports":{"start":80,"end":90}}"#).unwrap();
        assert!(f.allows(Protocol::Tcp, Some(80)));
        assert!(f.allows(Protocol::Tcp, Some(90)));
        assert!(!f.allows(Protocol::Tcp, Some(91)));
        assert!(!f.allows(Protocol::Udp, Some(80)));
        assert!(!f.allows(Protocol::Tcp, None));
        for bad in [
            r#"{"protocol":"tcp","ports":{"start":90,"end":80}}"#,
            r#"{"protocol":"tcp","ports":{"start":0,"end":80}}"#,
            r#"{"protocol":"tcp","ports":{"start":1,"end":70000}}"#,
            r#"{"protocol":"icmp","ports":{"start":1,"end":2}}"#,
            r#"{"protocol":"sctp"}"#,
        ] {
            assert!(serde_json::from_str::<Filter>(bad).is_err(), "{bad}");
        }
        let icmp: Filter = serde_json::from_str(r#"{"protocol":"icmp"}"#).unwrap();
        assert!(icmp.allows(Protocol::Icmp, None));
        assert_eq!(
            serde_json::to_string(&icmp).unwrap(),
            r#"{"protocol":"icmp"}"#
        );
    }

    #[test]
    fn empty_filter_list_allows_everything() {
        let r: Resource = serde_json::from_str(
            r#"{"id":"00000000-0000-0000-0000-000000000001","name":"db","address":{"kind":"ip","ip":"10.0.0.5"}}"#,
        )
        .unwrap();
        assert!(r.allows(Protocol::Udp, Some(53)));
        assert!(r.allows(Protocol::Icmp, None));
    }

    #[test]
    fn names_are_validated() {
        assert!(ResourceName::try_from(" ".to_owned()).is_err());
        assert!(ResourceName::try_from("a\nb".to_owned()).is_err());
        assert!(ResourceName::try_from("x".repeat(256)).is_err());
        assert!(ResourceName::try_from("Wiki ✓".to_owned()).is_ok());
    }
}
