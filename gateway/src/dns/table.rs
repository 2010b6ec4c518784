//! The sans-IO core of DNS resources: which (client, proxy IP) pairs exist,
//! what their names resolved to, and so which translations the data plane
//! should hold and when to resolve again. No sockets, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use keyhole_proto::{DnsProxyAssignment, FlowId, TunnelAddresses};

/// Shortest and longest time an answer is used before asking again; the
/// floor keeps a TTL of 0 from turning into a query loop.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Wait after a failed lookup (the previous answer, if any, stays in use).
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// One lookup's result: every A and AAAA address, and the lowest TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addresses: Vec<IpAddr>,
    pub ttl: Duration,
}

/// A translation pair: traffic from `client` to `proxy` goes to the real
/// address instead. Ordered, so the data plane gets a stable listing.
pub type Pair = (IpAddr, IpAddr);

/// What the data plane should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// (client, proxy) → real address, same family.
    pub translations: BTreeMap<Pair, IpAddr>,
    /// Every assigned (client, proxy) pair, translated or not: traffic to
    /// one that has no translation (name unresolved, or no address of the
    /// proxy IP's family) is dropped rather than routed to the proxy IP.
    pub assigned: BTreeSet<Pair>,
}

#[derive(Debug, Clone)]
struct FlowSet {
    /// Insertion order: on a conflict the newer flow's name wins.
    seq: u64,
    client: TunnelAddresses,
    assignments: Vec<DnsProxyAssignment>,
}

#[derive(Debug, Clone, Default)]
struct NameState {
    /// Last good answer (kept through lookup errors).
    addresses: Vec<IpAddr>,
    /// When to look up next; `None` while a lookup is in flight.
    due: Option<Instant>,
}

/// Assignments per flow, resolution state per name.
#[derive(Debug, Default)]
pub struct DnsTable {
    flows: HashMap<FlowId, FlowSet>,
    names: HashMap<String, NameState>,
    /// The address chosen per pair, kept while the name still resolves to
    /// it so that new connections do not hop between a name's addresses.
    picks: HashMap<Pair, IpAddr>,
    next_seq: u64,
}

impl DnsTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the assignments of `flow` (replacing any it had). New names are
    /// due for lookup at once.
    pub fn set(
        &mut self,
        flow: FlowId,
        client: TunnelAddresses,
        assignments: Vec<DnsProxyAssignment>,
        now: Instant,
    ) {
        for a in &assignments {
            self.names.entry(a.name.clone()).or_insert(NameState {
                addresses: Vec::new(),
                due: Some(now),
            });
        }
        self.next_seq += 1;
        self.flows.insert(
            flow,
            FlowSet {
                seq: self.next_seq,
                client,
                assignments,
            },
        );
        self.gc();
    }

    /// Forgets `flow`'s assignments (revoked or expired). True if it had any.
    pub fn remove(&mut self, flow: FlowId) -> bool {
        let had = self.flows.remove(&flow).is_some();
        self.gc();
        had
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Names to look up now; each is marked in flight until
    /// [`resolved`](Self::resolved) reports on it.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .names
            .iter_mut()
            .filter(|(_, s)| s.due.is_some_and(|d| d <= now))
            .map(|(n, s)| {
                s.due = None;
                n.clone()
            })
            .collect();
        out.sort();
        out
    }

    /// The result of looking up `name`. `Err` keeps the previous addresses
    /// and retries after [`RETRY_AFTER_ERROR`]; an answer (also an empty
    /// one: NXDOMAIN / no data) replaces them and is refreshed at its TTL.
    /// Returns whether the addresses changed.
    pub fn resolved(&mut self, name: &str, result: Result<Answer, ()>, now: Instant) -> bool {
        let Some(state) = self.names.get_mut(name) else {
            // Nobody assigns it any more.
            return false;
        };
        match result {
            Ok(mut answer) => {
                answer.addresses.sort();
                answer.addresses.dedup();
                state.due = Some(now + answer.ttl.clamp(MIN_TTL, MAX_TTL));
                let changed = state.addresses != answer.addresses;
                state.addresses = answer.addresses;
                changed
            }
            Err(()) => {
                state.due = Some(now + RETRY_AFTER_ERROR);
                false
            }
        }
    }

    /// When the next lookup is due (`None`: nothing to do, or all in flight).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.names.values().filter_map(|s| s.due).min()
    }

    /// The translations to install now. A pair keeps its previous address
    /// while the name still has it; otherwise it takes the lowest address of
    /// the proxy IP's family. A proxy IP assigned by two flows of the same
    /// client follows the newer flow.
    pub fn desired(&mut self) -> Desired {
        let mut flows: Vec<&FlowSet> = self.flows.values().collect();
        flows.sort_by_key(|f| f.seq);
        let mut names_of: BTreeMap<Pair, &str> = BTreeMap::new();
        for f in flows {
            for a in &f.assignments {
                for proxy in &a.proxy_ips {
                    let client = match proxy {
                        IpAddr::V4(_) => IpAddr::V4(f.client.ipv4),
                        IpAddr::V6(_) => IpAddr::V6(f.client.ipv6),
                    };
                    names_of.insert((client, *proxy), &a.name);
                }
            }
        }
        let mut out = Desired::default();
        let mut picks = HashMap::new();
        for (pair, name) in names_of {
            out.assigned.insert(pair);
            let addrs = self
                .names
                .get(name)
                .map(|s| s.addresses.as_slice())
                .unwrap_or_default();
            let same_family = |ip: &&IpAddr| ip.is_ipv4() == pair.1.is_ipv4();
            let pick = self
                .picks
                .get(&pair)
                .filter(|p| addrs.contains(p))
                .copied()
                .or_else(|| addrs.iter().find(same_family).copied());
            if let Some(real) = pick {
                out.translations.insert(pair, real);
                picks.insert(pair, real);
            }
        }
        self.picks = picks;
        out
    }

    /// Drops names no flow assigns any more.
    fn gc(&mut self) {
        let live: BTreeSet<&str> = self
            .flows
            .values()
            .flat_map(|f| f.assignments.iter().map(|a| a.name.as_str()))
            .collect();
        self.names.retain(|n, _| live.contains(n.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(n: u8) -> TunnelAddresses {
        TunnelAddresses::new(
            format!("100.64.0.{n}").parse().unwrap(),
            format!("fd00::{n}").parse().unwrap(),
        )
        .unwrap()
    }

    fn assign(name: &str, ips: &[&str]) -> DnsProxyAssignment {
        DnsProxyAssignment {
            name: name.into(),
            proxy_ips: ips.iter().map(|s| ip(s)).collect(),
        }
    }

    fn answer(addrs: &[&str], ttl: u64) -> Result<Answer, ()> {
        Ok(Answer {
            addresses: addrs.iter().map(|s| ip(s)).collect(),
            ttl: Duration::from_secs(ttl),
        })
    }

    #[test]
    fn names_resolve_into_per_client_translations_by_family() {
        let t0 = Instant::now();
        let mut t = DnsTable::new();
        let f = FlowId::from_u128(1);
        t.set(
            f,
            client(5),
            vec![assign("wiki.corp", &["100.96.0.1", "fd00:6b68::1"])],
            t0,
        );
        assert_eq!(t.poll_timeout(), Some(t0));
        assert_eq!(t.take_due(t0), vec!["wiki.corp".to_string()]);
        assert_eq!(t.poll_timeout(), None, "in flight");
        // Unresolved yet: assigned (so dropped), not translated.
        let d = t.desired();
        assert!(d.translations.is_empty());
        assert_eq!(d.assigned.len(), 2);

        assert!(t.resolved("wiki.corp", answer(&["10.0.0.9", "fd10::9"], 60), t0));
        let d = t.desired();
        assert_eq!(
            d.translations,
            BTreeMap::from([
                ((ip("100.64.0.5"), ip("100.96.0.1")), ip("10.0.0.9")),
                ((ip("fd00::5"), ip("fd00:6b68::1")), ip("fd10::9")),
            ])
        );
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_name_without_the_proxy_family_stays_untranslated() {
        let t0 = Instant::now();
        let mut t = DnsTable::new();
        t.set(
            FlowId::from_u128(1),
            client(5),
            vec![assign("v6only.corp", &["100.96.0.1"])],
            t0,
        );
        t.take_due(t0);
        t.resolved("v6only.corp", answer(&["fd10::9"], 60), t0);
        let d = t.desired();
        assert!(d.translations.is_empty());
        assert!(d.assigned.contains(&(ip("100.64.0.5"), ip("100.96.0.1"))));
    }

    #[test]
    fn the_pick_is_stable_while_the_name_keeps_the_address() {
        let t0 = Instant::now();
        let mut t = DnsTable::new();
        t.set(
            FlowId::from_u128(1),
            client(5),
            vec![assign("lb.corp", &["100.96.0.1"])],
            t0,
        );
        t.take_due(t0);
        t.resolved("lb.corp", answer(&["10.0.0.3", "10.0.0.2"], 5), t0);
        let pair = (ip("100.64.0.5"), ip("100.96.0.1"));
        assert_eq!(t.desired().translations[&pair], ip("10.0.0.2"), "lowest");
        // Refresh: a new lowest address appears, the old pick is still there.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(t.take_due(t1), vec!["lb.corp".to_string()]);
        t.resolved("lb.corp", answer(&["10.0.0.1", "10.0.0.2"], 5), t1);
        assert_eq!(t.desired().translations[&pair], ip("10.0.0.2"));
        // The picked address goes: move to the lowest remaining.
        t.resolved("lb.corp", answer(&["10.0.0.7", "10.0.0.1"], 5), t1);
        assert_eq!(t.desired().translations[&pair], ip("10.0.0.1"));
    }

    #[test]
    fn ttl_is_clamped_and_errors_keep_the_last_answer() {
        let t0 = Instant::now();
        let mut t = DnsTable::new();
        t.set(
            FlowId::from_u128(1),
            client(5),
            vec![assign("a.corp", &["100.96.0.1"])],
            t0,
        );
        t.take_due(t0);
        t.resolved("a.corp", answer(&["10.0.0.1"], 0), t0);
        assert_eq!(t.poll_timeout(), Some(t0 + MIN_TTL));
        t.take_due(t0 + MIN_TTL);
        t.resolved("a.corp", answer(&["10.0.0.1"], 1 << 40), t0);
        assert_eq!(t.poll_timeout(), Some(t0 + MAX_TTL));
        t.take_due(t0 + MAX_TTL);
        assert!(!t.resolved("a.corp", Err(()), t0));
        assert_eq!(t.poll_timeout(), Some(t0 + RETRY_AFTER_ERROR));
        assert_eq!(t.desired().translations.len(), 1, "kept through the error");
        // NXDOMAIN (an empty answer) does clear it.
        assert!(t.resolved("a.corp", answer(&[], 30), t0));
        assert!(t.desired().translations.is_empty());
    }

    #[test]
    fn translations_are_per_client_and_go_with_their_flow() {
        let t0 = Instant::now();
        let mut t = DnsTable::new();
        let (f1, f2) = (FlowId::from_u128(1), FlowId::from_u128(2));
        t.set(f1, client(5), vec![assign("a.corp", &["100.96.0.1"])], t0);
        t.set(f2, client(6), vec![assign("b.corp", &["100.96.0.1"])], t0);
        assert_eq!(t.take_due(t0), vec!["a.corp".to_string(), "b.corp".into()]);
        t.resolved("a.corp", answer(&["10.0.0.1"], 60), t0);
        t.resolved("b.corp", answer(&["10.0.0.2"], 60), t0);
        let d = t.desired();
        // The same proxy IP means different things to different clients.
        assert_eq!(
            d.translations[&(ip("100.64.0.5"), ip("100.96.0.1"))],
            ip("10.0.0.1")
        );
        assert_eq!(
            d.translations[&(ip("100.64.0.6"), ip("100.96.0.1"))],
            ip("10.0.0.2")
        );
        assert!(t.remove(f1));
        assert!(!t.remove(f1));
        let d = t.desired();
        assert_eq!(d.translations.len(), 1);
        assert_eq!(d.assigned.len(), 1);
        // a.corp is forgotten: a late answer for it changes nothing.
        assert!(!t.resolved("a.corp", answer(&["10.0.0.9"], 60), t0));
        t.remove(f2);
        assert!(t.is_empty());
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.desired(), Desired::default());
    }

    #[test]
    fn a_newer_flow_replaces_the_set_and_wins_conflicts() {
        let t0 = Instant::now();
        let mut t = DnsTable::new();
        let (old, new) = (FlowId::from_u128(1), FlowId::from_u128(2));
        t.set(old, client(5), vec![assign("a.corp", &["100.96.0.1"])], t0);
        t.set(new, client(5), vec![assign("b.corp", &["100.96.0.1"])], t0);
        t.take_due(t0);
        t.resolved("a.corp", answer(&["10.0.0.1"], 60), t0);
        t.resolved("b.corp", answer(&["10.0.0.2"], 60), t0);
        let pair = (ip("100.64.0.5"), ip("100.96.0.1"));
        assert_eq!(t.desired().translations[&pair], ip("10.0.0.2"));
        // Setting a flow again replaces its assignments.
        t.set(new, client(5), vec![assign("b.corp", &["100.96.0.2"])], t0);
        let d = t.desired();
        assert_eq!(d.translations[&pair], ip("10.0.0.1"), "old flow's again");
        assert_eq!(
            d.translations[&(ip("100.64.0.5"), ip("100.96.0.2"))],
            ip("10.0.0.2")
        );
    }
}
