//! Destination IP → connection, longest prefix wins.
//!
//! One hash map keyed by the (truncated) network plus the set of prefix
//! lengths in use per family: a lookup probes only lengths that exist,
//! longest first, so a table of host routes and a few CIDRs costs a few
//! hash lookups per packet whatever its size.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug)]
pub(crate) struct RouteTable<K> {
    routes: HashMap<IpNet, K>,
    /// Prefix length → number of routes with it, per family.
    v4_lens: BTreeMap<u8, usize>,
    v6_lens: BTreeMap<u8, usize>,
}

impl<K: Clone + Eq + Hash> RouteTable<K> {
    pub(crate) fn new() -> Self {
        Self {
            routes: HashMap::new(),
            v4_lens: BTreeMap::new(),
            v6_lens: BTreeMap::new(),
        }
    }

    fn lens_mut(&mut self, net: &IpNet) -> &mut BTreeMap<u8, usize> {
        match net {
            IpNet::V4(_) => &mut self.v4_lens,
            IpNet::V6(_) => &mut self.v6_lens,
        }
    }

    /// Routes `net` to `owner`; returns the previous owner of that exact
    /// network, if any.
    pub(crate) fn insert(&mut self, net: IpNet, owner: K) -> Option<K> {
        let net = net.trunc();
        let old = self.routes.insert(net, owner);
        if old.is_none() {
            *self.lens_mut(&net).entry(net.prefix_len()).or_default() += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, net: IpNet) -> Option<K> {
        let net = net.trunc();
        let old = self.routes.remove(&net)?;
        let lens = self.lens_mut(&net);
        if let Some(n) = lens.get_mut(&net.prefix_len()) {
            *n -= 1;
            if *n == 0 {
                lens.remove(&net.prefix_len());
            }
        }
        Some(old)
    }

    /// Removes every route of `owner`.
    pub(crate) fn remove_owner(&mut self, owner: &K) {
        let nets: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|(_, o)| *o == owner)
            .map(|(n, _)| *n)
            .collect();
        for n in nets {
            self.remove(n);
        }
    }

    /// The owner of exactly `net`.
    pub(crate) fn get(&self, net: IpNet) -> Option<&K> {
        self.routes.get(&net.trunc())
    }

    pub(crate) fn lookup(&self, ip: IpAddr) -> Option<&K> {
        let lens = match ip {
            IpAddr::V4(_) => &self.v4_lens,
            IpAddr::V6(_) => &self.v6_lens,
        };
        lens.keys().rev().find_map(|&len| {
            let net = IpNet::new(ip, len).ok()?.trunc();
            self.routes.get(&net)
        })
    }

    pub(crate) fn nets_of<'a>(&'a self, owner: &'a K) -> impl Iterator<Item = IpNet> + 'a {
        self.routes
            .iter()
            .filter(move |(_, o)| *o == owner)
            .map(|(n, _)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::new();
        t.insert(net("10.0.0.0/8"), 'a');
        t.insert(net("10.1.0.0/16"), 'b');
        t.insert(net("10.1.2.3/32"), 'c');
        t.insert(net("0.0.0.0/0"), 'd');
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&'c'));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&'b'));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(&'a'));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&'d'));
        assert_eq!(t.lookup(ip("fd00::1")), None);
        t.remove(net("10.1.0.0/16"));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&'a'));
    }

    #[test]
    fn host_bits_are_ignored_and_v6_works() {
        let mut t = RouteTable::new();
        assert_eq!(t.insert(net("10.1.2.3/16"), 1), None);
        assert_eq!(t.insert(net("10.1.0.0/16"), 2), Some(1));
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(&2));
        t.insert(net("fd00:1::/32"), 3);
        t.insert(net("fd00:1:2::5/128"), 4);
        assert_eq!(t.lookup(ip("fd00:1:2::5")), Some(&4));
        assert_eq!(t.lookup(ip("fd00:1:2::6")), Some(&3));
        assert_eq!(t.lookup(ip("10.2.0.1")), None);
    }

    #[test]
    fn removing_an_owner_removes_all_its_routes() {
        let mut t = RouteTable::new();
        t.insert(net("10.0.0.0/8"), 'a');
        t.insert(net("10.1.0.0/16"), 'b');
        t.insert(net("fd00::/8"), 'b');
        t.remove_owner(&'b');
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(&'a'));
        assert_eq!(t.lookup(ip("fd00::1")), None);
        assert_eq!(t.nets_of(&'b').count(), 0);
        assert!(t.v6_lens.is_empty());
    }
}
