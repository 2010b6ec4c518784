//! The DNS side of DNS resources, sans IO: proxy IPs that stay the same
//! for a name while the client runs, and answers for the stub resolver.
//! Names matching a DNS resource get their proxy IPs; every other query
//! goes to the original upstream resolvers unchanged.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use ipnet::{Ipv4Net, Ipv6Net};

/// Where proxy IPs come from: the half of the tunnel range the portal
/// never gives to devices.
pub const PROXY_V4: Ipv4Net = keyhole_proto::DNS_PROXY_IPV4_RANGE;
pub const PROXY_V6: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x6b68, 0, 0, 0, 0, 0, 0), 32) {
        Ok(n) => n,
        Err(_) => unreachable!(),
    };
/// The stub resolver's address, kept out of the proxy pool.
pub const SENTINEL: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
/// Proxy IPs never change while the client runs; a short TTL still lets
/// resolvers notice a `keyhole down`.
pub const TTL: u32 = 30;

/// Proxy IPs by name and the other way round.
#[derive(Debug, Default)]
pub struct ProxyIps {
    by_name: HashMap<String, (Ipv4Addr, Ipv6Addr)>,
    by_ip: HashMap<IpAddr, String>,
    next: u32,
}

impl ProxyIps {
    /// The name's proxy IPs, assigned on first use (names are compared
    /// lower-case, without the trailing dot). `None` once the pool is spent.
    /// `avoid` are addresses of this client (the portal hands out tunnel
    /// addresses from the whole tunnel range, proxy range included).
    pub fn assign(&mut self, name: &str, avoid: &[IpAddr]) -> Option<(Ipv4Addr, Ipv6Addr)> {
        let name = normalise(name);
        if let Some(p) = self.by_name.get(&name) {
            return Some(*p);
        }
        let (v4, v6) = loop {
            self.next = self.next.checked_add(1)?;
            if self.next >= 1 << (32 - PROXY_V4.prefix_len()) {
                return None;
            }
            let v4 = Ipv4Addr::from(u32::from(PROXY_V4.network()) + self.next);
            let v6 = Ipv6Addr::from(u128::from(PROXY_V6.network()) + u128::from(self.next));
            if v4 != SENTINEL && !avoid.contains(&v4.into()) && !avoid.contains(&v6.into()) {
                break (v4, v6);
            }
        };
        self.by_name.insert(name.clone(), (v4, v6));
        self.by_ip.insert(IpAddr::V4(v4), name.clone());
        self.by_ip.insert(IpAddr::V6(v6), name);
        Some((v4, v6))
    }

    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        self.by_ip.get(&ip).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &(Ipv4Addr, Ipv6Addr))> {
        self.by_name.iter()
    }
}

pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

pub fn is_proxy_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => PROXY_V4.contains(&v4) && v4 != SENTINEL,
        IpAddr::V6(v6) => PROXY_V6.contains(&v6),
    }
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this answer back.
    Answer(Vec<u8>),
    /// Not ours: pass it to the upstream resolver unchanged.
    Forward,
    /// Unparseable: drop it (resolvers retry or give up).
    Drop,
}

/// The single question of a standard query, lower-cased, if it is one.
pub fn question(query: &[u8]) -> Option<(String, RecordType)> {
    let m = Message::from_vec(query).ok()?;
    if m.message_type() != MessageType::Query || m.op_code() != OpCode::Query {
        return None;
    }
    let [q] = m.queries() else { return None };
    Some((normalise(&q.name().to_ascii()), q.query_type()))
}

/// Answers `query` for a name covered by a DNS resource with `ips`:
/// A and AAAA get the proxy IPs, other types an empty NOERROR.
pub fn answer(query: &[u8], ips: (Ipv4Addr, Ipv6Addr)) -> Reply {
    let Ok(q) = Message::from_vec(query) else {
        return Reply::Drop;
    };
    let Some(question) = q.queries().first().cloned() else {
        return Reply::Drop;
    };
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(question.clone());
    let name = question.name().clone();
    match question.query_type() {
        RecordType::A => {
            m.add_answer(Record::from_rdata(name, TTL, RData::A(A(ips.0))));
        }
        RecordType::AAAA => {
            m.add_answer(Record::from_rdata(name, TTL, RData::AAAA(AAAA(ips.1))));
        }
        _ => {}
    }
    match m.to_vec() {
        Ok(v) => Reply::Answer(v),
        Err(_) => Reply::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn proxy_ips_are_stable_per_name_and_map_back() {
        let mut p = ProxyIps::default();
        let own: IpAddr = "100.96.0.1".parse().unwrap();
        let a = p.assign("Wiki.Corp.", &[own]).unwrap();
        assert_eq!(
            a.0,
            "100.96.0.2".parse::<Ipv4Addr>().unwrap(),
            "own address skipped"
        );
        let b = p.assign("git.corp", &[]).unwrap();
        assert_ne!(a, b);
        assert_eq!(p.assign("wiki.corp", &[]), Some(a));
        assert!(PROXY_V4.contains(&a.0) && PROXY_V6.contains(&a.1));
        assert_eq!(p.name_of(IpAddr::V4(a.0)), Some("wiki.corp"));
        assert_eq!(p.name_of(IpAddr::V6(b.1)), Some("git.corp"));
        assert!(is_proxy_ip(IpAddr::V4(a.0)));
        assert!(!is_proxy_ip(IpAddr::V4(SENTINEL)));
        assert!(!is_proxy_ip("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_pool_skips_the_sentinel_and_ends() {
        let mut p = ProxyIps {
            next: u32::from(SENTINEL) - u32::from(PROXY_V4.network()) - 1,
            ..Default::default()
        };
        let (v4, _) = p.assign("x.corp", &[]).unwrap();
        assert_eq!(u32::from(v4), u32::from(SENTINEL) + 1);
        p.next = (1 << 21) - 2;
        assert!(p.assign("last.corp", &[]).is_some());
        assert_eq!(p.assign("none.corp", &[]), None);
    }

    #[test]
    fn answers_carry_the_proxy_ips() {
        let ips = (
            "100.96.0.7".parse().unwrap(),
            "fd00:6b68::7".parse().unwrap(),
        );
        let q = query("wiki.corp.", RecordType::A);
        assert_eq!(question(&q), Some(("wiki.corp".into(), RecordType::A)));
        let Reply::Answer(a) = answer(&q, ips) else {
            panic!()
        };
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.answers().len(), 1);
        assert_eq!(
            m.answers()[0].data(),
            &RData::A(A("100.96.0.7".parse().unwrap()))
        );
        let Reply::Answer(a) = answer(&query("wiki.corp.", RecordType::AAAA), ips) else {
            panic!()
        };
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(
            m.answers()[0].data(),
            &RData::AAAA(AAAA("fd00:6b68::7".parse().unwrap()))
        );
        let Reply::Answer(a) = answer(&query("wiki.corp.", RecordType::MX), ips) else {
            panic!()
        };
        assert!(Message::from_vec(&a).unwrap().answers().is_empty());
        assert_eq!(answer(b"\x00\x01garbage", ips), Reply::Drop);
        assert_eq!(question(b"\x00"), None);
    }
}
