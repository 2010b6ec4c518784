//! Proxy addresses for DNS resources.
//!
//! A client answers a query for a name under a DNS resource with proxy IPs
//! of its own choosing (stable per name) and tells the gateway, through the
//! portal's `request_flow` → `authorize_flow`, which proxy IPs stand for
//! which name. The gateway resolves the name itself and translates proxy IP
//! ↔ real IP for that client only.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::DnsPattern;

/// At most this many proxy IPs per name (one or two per family is usual).
pub const MAX_PROXY_IPS_PER_NAME: usize = 4;
/// At most this many names in one request.
pub const MAX_DNS_ASSIGNMENTS: usize = 64;

/// The proxy IPs a client assigned to one name of a DNS resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DnsProxyAssignment {
    /// The queried name, lowercase, without the trailing dot.
    pub name: String,
    pub proxy_ips: Vec<IpAddr>,
}

/// Why a set of assignments was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsProxyError {
    #[error("proxy IPs are only for DNS resources")]
    NotADnsResource,
    #[error("{0} DNS assignments in one request, the limit is {MAX_DNS_ASSIGNMENTS}")]
    TooManyNames(usize),
    #[error("`{0}` is not covered by the resource's pattern")]
    NameOutsidePattern(String),
    #[error("`{0}` has no proxy IPs")]
    NoProxyIps(String),
    #[error("`{name}` has {count} proxy IPs, the limit is {MAX_PROXY_IPS_PER_NAME}")]
    TooManyProxyIps { name: String, count: usize },
    #[error("proxy IP {0} is assigned to more than one name")]
    DuplicateProxyIp(IpAddr),
}

/// Checks a client's assignments against the resource's pattern (`None`
/// when the resource is not a DNS resource): every name under the pattern,
/// 1..=MAX_PROXY_IPS_PER_NAME proxy IPs each, no proxy IP used twice.
pub fn check_dns_assignments(
    pattern: Option<&DnsPattern>,
    assignments: &[DnsProxyAssignment],
) -> Result<(), DnsProxyError> {
    if assignments.is_empty() {
        return Ok(());
    }
    let pattern = pattern.ok_or(DnsProxyError::NotADnsResource)?;
    if assignments.len() > MAX_DNS_ASSIGNMENTS {
        return Err(DnsProxyError::TooManyNames(assignments.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for a in assignments {
        if !pattern.matches(&a.name) {
            return Err(DnsProxyError::NameOutsidePattern(a.name.clone()));
        }
        match a.proxy_ips.len() {
            0 => return Err(DnsProxyError::NoProxyIps(a.name.clone())),
            n if n > MAX_PROXY_IPS_PER_NAME => {
                return Err(DnsProxyError::TooManyProxyIps {
                    name: a.name.clone(),
                    count: n,
                });
            }
            _ => {}
        }
        for ip in &a.proxy_ips {
            if !seen.insert(*ip) {
                return Err(DnsProxyError::DuplicateProxyIp(*ip));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, ips: &[&str]) -> DnsProxyAssignment {
        DnsProxyAssignment {
            name: name.into(),
            proxy_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn names_under_the_pattern_with_proxy_ips_pass() {
        let p = DnsPattern::parse("**.wiki.corp").unwrap();
        let ok = [
            a("wiki.corp", &["100.96.0.1"]),
            a("x.wiki.corp", &["100.96.0.2", "fd00:6b68::2"]),
        ];
        assert_eq!(check_dns_assignments(Some(&p), &ok), Ok(()));
        assert_eq!(check_dns_assignments(None, &[]), Ok(()));
    }

    #[test]
    fn bad_assignments_say_why() {
        let p = DnsPattern::parse("*.wiki.corp").unwrap();
        let e = |v: &[DnsProxyAssignment]| check_dns_assignments(Some(&p), v).unwrap_err();
        assert_eq!(
            check_dns_assignments(None, &[a("x.wiki.corp", &["100.96.0.1"])]),
            Err(DnsProxyError::NotADnsResource)
        );
        assert!(matches!(
            e(&[a("a.b.wiki.corp", &["100.96.0.1"])]),
            DnsProxyError::NameOutsidePattern(_)
        ));
        assert!(matches!(
            e(&[a("x.wiki.corp", &[])]),
            DnsProxyError::NoProxyIps(_)
        ));
        let five = [
            "100.96.0.1",
            "100.96.0.2",
            "100.96.0.3",
            "100.96.0.4",
            "100.96.0.5",
        ];
        assert!(matches!(
            e(&[a("x.wiki.corp", &five)]),
            DnsProxyError::TooManyProxyIps { count: 5, .. }
        ));
        assert!(matches!(
            e(&[
                a("x.wiki.corp", &["100.96.0.1"]),
                a("y.wiki.corp", &["100.96.0.1"])
            ]),
            DnsProxyError::DuplicateProxyIp(_)
        ));
        let many: Vec<_> = (0..65)
            .map(|i| a(&format!("n{i}.wiki.corp"), &["100.96.0.1"]))
            .collect();
        assert_eq!(e(&many), DnsProxyError::TooManyNames(65));
    }
}
