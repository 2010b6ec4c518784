//! Probes: real client traffic whose outcome is checked, and whose packets
//! (counted by nft on the client) the filter's counters must match exactly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use keyhole_gateway::policy::{
    Authorization, AuthorizationCounters, AuthorizationId, PolicyError, PortRange, Protocol,
    Verdict, VerdictCounters,
};

use super::net::*;

pub fn auth(id: u128, client: &str, dst: &str, proto: Protocol, ports: PortRange) -> Authorization {
    Authorization {
        id: AuthorizationId(id),
        client_ip: ip(client),
        dst: dst.parse().unwrap(),
        proto,
        ports,
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Tcp(u16),
    Udp(u16),
    Ping,
}

#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Admitted and counted on this authorisation.
    Allow(u128),
    Deny(Verdict),
}

/// Runs probes, checks each one's outcome, and accumulates what the filter
/// must have counted, from nft counters of what the client really sent.
pub struct Probes<'a> {
    topo: &'a mut Topology,
    servers: &'a Servers,
    next: u32,
    verdicts: BTreeMap<u32, u64>,
    auths: BTreeMap<u128, AuthorizationCounters>,
}

impl<'a> Probes<'a> {
    pub fn new(topo: &'a mut Topology, servers: &'a Servers) -> Self {
        Probes {
            topo,
            servers,
            next: 0,
            verdicts: BTreeMap::new(),
            auths: BTreeMap::new(),
        }
    }

    /// Sends one probe's traffic and checks it got through or not.
    pub fn run(&mut self, src: &str, dst: &str, kind: Kind, expect: Expect) {
        let c = &self.topo.client;
        let (src, dst) = (ip(src), ip(dst));
        self.next += 1;
        let name = format!("p{}", self.next);
        let family = if src.is_ipv4() { "ip" } else { "ip6" };
        let addrs = format!("{family} saddr {src} {family} daddr {dst}");
        let expr = match kind {
            Kind::Tcp(p) => format!("{addrs} meta l4proto tcp th dport {p}"),
            Kind::Udp(p) => format!("{addrs} meta l4proto udp th dport {p}"),
            Kind::Ping if src.is_ipv4() => format!("{addrs} icmp type echo-request"),
            Kind::Ping => format!("{addrs} icmpv6 type echo-request"),
        };
        add_counter(c, &name, &expr).unwrap();

        let allowed = matches!(expect, Expect::Allow(_));
        let payload = format!("{name} {src} -> {dst} {kind:?}").into_bytes();
        let what = format!("{name}: {kind:?} {src} -> {dst}, expecting {expect:?}");
        match kind {
            Kind::Tcp(port) => {
                // A denied SYN is dropped at once; an allowed one may be slow
                // on a loaded machine.
                let wait = if allowed { 5 } else { 1 };
                let got = tcp_echo(c, src, SocketAddr::new(dst, port), &payload, wait);
                match (allowed, got) {
                    (true, Ok(echo)) => assert_eq!(echo, payload, "{what}"),
                    (false, Err(_)) => {}
                    (_, got) => panic!("{what}: got {got:?}"),
                }
            }
            Kind::Udp(port) => udp_send(c, src, SocketAddr::new(dst, port), &payload).unwrap(),
            Kind::Ping => assert_eq!(ping(c, src, dst, 3).unwrap(), allowed, "{what}"),
        }

        if let Kind::Udp(_) = kind {
            // Give the datagram time to cross (or not) before looking.
            std::thread::sleep(Duration::from_millis(200));
        }
        // What the filter must count for this probe: every packet it sent.
        let (packets, bytes) = read_counter(c, &name).unwrap();
        match kind {
            Kind::Tcp(_) => assert!(packets > 0, "{what}: sent nothing"),
            Kind::Udp(_) => assert_eq!(packets, 1, "{what}"),
            Kind::Ping => assert_eq!(packets, 3, "{what}"),
        }
        let verdict = match expect {
            Expect::Allow(id) => {
                let a = self.auths.entry(id).or_default();
                a.packets += packets;
                a.bytes += bytes;
                Verdict::Allowed
            }
            Expect::Deny(v) => v,
        };
        *self.verdicts.entry(verdict as u32).or_default() += packets;

        // Exactly the allowed TCP/UDP payloads reach the servers.
        let arrivals = self.servers.take();
        match (kind, allowed) {
            (Kind::Tcp(port) | Kind::Udp(port), true) => {
                assert_eq!(arrivals.len(), 1, "{what}: {arrivals:?}");
                let got = &arrivals[0];
                assert_eq!(
                    (got.from, got.to, &got.payload),
                    (src, SocketAddr::new(dst, port), &payload),
                    "{what}"
                );
            }
            _ => assert!(arrivals.is_empty(), "{what}: leaked {arrivals:?}"),
        }
    }

    /// Starts a phase: verdict expectations count from here.
    pub fn phase(&mut self) -> (VerdictCounters, u64) {
        self.verdicts.clear();
        (self.topo.filter.counters().unwrap(), self.topo.piped())
    }

    pub fn add(&mut self, a: Authorization) {
        self.topo.filter.add_authorization(a).unwrap();
    }

    pub fn remove(&mut self, id: u128) {
        self.topo
            .filter
            .remove_authorization(AuthorizationId(id))
            .unwrap();
        self.auths.remove(&id);
        assert!(matches!(
            self.topo.filter.authorization_counters(AuthorizationId(id)),
            Err(PolicyError::UnknownId(_))
        ));
    }

    /// Asserts the filter's counters moved by exactly what the probes sent
    /// since `phase`, and the authorisations' by what they admitted.
    pub fn check(&self, (before, piped_before): (VerdictCounters, u64)) {
        let before = &before;
        let topo = &*self.topo;
        topo.settle(piped_before, before.total()).unwrap();
        let delta = topo.filter.counters().unwrap().since(before);
        for (verdict, count) in delta.iter() {
            let want = self.verdicts.get(&(verdict as u32)).copied().unwrap_or(0);
            assert_eq!(
                count, want,
                "{verdict:?}: all deltas {delta:?}, want {:?}",
                self.verdicts
            );
        }
        assert_eq!(
            delta.total(),
            topo.piped() - piped_before,
            "one verdict per piped packet"
        );
        for (id, want) in &self.auths {
            let got = topo
                .filter
                .authorization_counters(AuthorizationId(*id))
                .unwrap();
            assert_eq!(got, *want, "authorisation {id}");
        }
    }
}
