//! The table against a model of the kernel: a map of entries looked up by
//! longest prefix and decided with the program's own `decide`.

use std::collections::HashMap;

use keyhole_ebpf_common::policy::{
    PROTO_TCP, PROTO_UDP, Verdict,
    matching::{Transport, decide},
};

use super::*;
use crate::policy::{PortRange, Protocol};

/// The kernel side as the program sees it.
#[derive(Clone, Debug, Default, PartialEq)]
struct ModelTrie(HashMap<EntryKey, RuleSet>);

impl ModelTrie {
    fn apply(&mut self, op: &MapOp) {
        match op {
            MapOp::Upsert {
                key,
                value,
                previous,
            } => {
                assert_eq!(
                    self.0.insert(*key, *value).as_ref(),
                    previous.as_ref(),
                    "{op:?}"
                );
            }
            MapOp::Delete { key, previous } => {
                assert_eq!(self.0.remove(key).as_ref(), Some(previous), "{op:?}");
            }
        }
    }

    fn verdict(&self, flow: &Flow) -> (Verdict, Option<u32>) {
        let max = if flow.dst.is_ipv4() { 32 } else { 128 };
        for len in (0..=max).rev() {
            let dst = IpNet::new(flow.dst, len).unwrap().trunc();
            if let Some(set) = self.0.get(&EntryKey {
                client: flow.client,
                dst,
            }) {
                return decide(set, flow.transport);
            }
        }
        (Verdict::DeniedNoAuth, None)
    }
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    client: IpAddr,
    dst: IpAddr,
    transport: Transport,
}

/// What the authorisations say, straight from their definition.
fn oracle(auths: &[Authorization], flow: &Flow) -> bool {
    auths.iter().any(|a| {
        a.client_ip == flow.client
            && a.dst.contains(&flow.dst)
            && match (a.proto, flow.transport) {
                (Protocol::Any, _) => true,
                (Protocol::Tcp, Transport::Port { proto, port })
                | (Protocol::Udp, Transport::Port { proto, port }) => {
                    proto == a.proto.to_kernel() && a.ports.lo() <= port && port <= a.ports.hi()
                }
                (Protocol::Icmp, Transport::IcmpEcho) => true,
                _ => false,
            }
    })
}

fn auth(id: u128, client: &str, dst: &str, proto: Protocol, ports: PortRange) -> Authorization {
    Authorization {
        id: AuthorizationId(id),
        client_ip: client.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        ports,
    }
}

fn tcp(port: u16) -> Transport {
    Transport::Port {
        proto: PROTO_TCP,
        port,
    }
}

fn udp(port: u16) -> Transport {
    Transport::Port {
        proto: PROTO_UDP,
        port,
    }
}

fn flow(client: &str, dst: &str, transport: Transport) -> Flow {
    Flow {
        client: client.parse().unwrap(),
        dst: dst.parse().unwrap(),
        transport,
    }
}

/// Plans, writes and commits.
fn add(table: &mut PolicyTable, trie: &mut ModelTrie, a: Authorization) {
    let change = table.plan_add(a).unwrap();
    change.ops.iter().for_each(|op| trie.apply(op));
    table.commit(change);
}

#[test]
fn covering_rules_are_pushed_down_most_specific_first() {
    let mut table = PolicyTable::new(100, 100);
    let mut trie = ModelTrie::default();
    let c = "100.64.0.2";
    add(
        &mut table,
        &mut trie,
        auth(1, c, "10.0.1.0/24", Protocol::Udp, PortRange::single(53)),
    );
    // The covering prefix arrives second: it must reach the /24 entry too.
    add(
        &mut table,
        &mut trie,
        auth(2, c, "10.0.0.0/16", Protocol::Tcp, PortRange::single(80)),
    );

    let key = |dst: &str| EntryKey {
        client: c.parse().unwrap(),
        dst: dst.parse().unwrap(),
    };
    let inner = trie.0[&key("10.0.1.0/24")];
    assert_eq!(inner.len, 2);
    assert_eq!((inner.rules[0].proto, inner.rules[0].slot), (PROTO_UDP, 0));
    assert_eq!((inner.rules[1].proto, inner.rules[1].slot), (PROTO_TCP, 1));
    assert_eq!(trie.0[&key("10.0.0.0/16")].len, 1);

    assert_eq!(
        trie.verdict(&flow(c, "10.0.1.9", tcp(80))),
        (Verdict::Allowed, Some(1))
    );
    assert_eq!(
        trie.verdict(&flow(c, "10.0.1.9", udp(53))),
        (Verdict::Allowed, Some(0))
    );
    assert_eq!(
        trie.verdict(&flow(c, "10.0.2.9", udp(53))),
        (Verdict::DeniedPortOrProto, None)
    );
    assert_eq!(
        trie.verdict(&flow("100.64.0.3", "10.0.1.9", tcp(80))),
        (Verdict::DeniedNoAuth, None)
    );
}

#[test]
fn removal_upserts_before_deleting() {
    let mut table = PolicyTable::new(100, 100);
    let mut trie = ModelTrie::default();
    let c = "100.64.0.2";
    add(
        &mut table,
        &mut trie,
        auth(1, c, "10.0.0.0/8", Protocol::Any, PortRange::ALL),
    );
    add(
        &mut table,
        &mut trie,
        auth(2, c, "10.1.0.0/16", Protocol::Tcp, PortRange::ALL),
    );
    add(
        &mut table,
        &mut trie,
        auth(3, c, "10.1.2.0/24", Protocol::Udp, PortRange::ALL),
    );

    let change = table.plan_remove(AuthorizationId(2)).unwrap();
    let kinds: Vec<_> = change
        .ops
        .iter()
        .map(|op| match op {
            MapOp::Upsert { key, .. } => ("upsert", key.dst.to_string()),
            MapOp::Delete { key, .. } => ("delete", key.dst.to_string()),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("upsert", "10.1.2.0/24".into()),
            ("delete", "10.1.0.0/16".into())
        ]
    );
    change.ops.iter().for_each(|op| trie.apply(op));
    table.commit(change);
    assert_eq!(table.entries(), (2, 0));
    assert_eq!(trie.0.len(), 2);
    // The slot of the removed authorisation is reused next.
    assert_eq!(
        table
            .plan_add(auth(4, c, "10.9.0.0/16", Protocol::Icmp, PortRange::ALL))
            .unwrap()
            .fresh_slot,
        Some(1)
    );
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let mut table = PolicyTable::new(2, 3);
    let mut trie = ModelTrie::default();
    let c = "100.64.0.2";
    add(
        &mut table,
        &mut trie,
        auth(1, c, "10.0.0.0/8", Protocol::Tcp, PortRange::ALL),
    );
    assert!(matches!(
        table.plan_add(auth(1, c, "10.0.0.0/9", Protocol::Tcp, PortRange::ALL)),
        Err(PolicyError::DuplicateId(AuthorizationId(1)))
    ));
    assert!(matches!(
        table.plan_remove(AuthorizationId(9)),
        Err(PolicyError::UnknownId(AuthorizationId(9)))
    ));
    assert!(matches!(
        table.plan_add(auth(2, c, "fd00::/64", Protocol::Tcp, PortRange::ALL)),
        Err(PolicyError::FamilyMismatch { .. })
    ));
    add(
        &mut table,
        &mut trie,
        auth(2, c, "10.1.0.0/16", Protocol::Tcp, PortRange::ALL),
    );
    assert!(matches!(
        table.plan_add(auth(3, c, "10.2.0.0/16", Protocol::Tcp, PortRange::ALL)),
        Err(PolicyError::TrieFull { capacity: 2, .. })
    ));
    // Same prefix: no new entry needed.
    add(
        &mut table,
        &mut trie,
        auth(3, c, "10.1.0.0/16", Protocol::Udp, PortRange::ALL),
    );
    assert!(matches!(
        table.plan_add(auth(4, c, "10.1.0.0/16", Protocol::Icmp, PortRange::ALL)),
        Err(PolicyError::NoFreeSlot { capacity: 3 })
    ));
    assert_eq!(table.len(), 3);
}

#[test]
fn too_many_pushed_down_rules_is_an_error() {
    let mut table = PolicyTable::new(100, 100);
    let mut trie = ModelTrie::default();
    let c = "100.64.0.2";
    for i in 0..MAX_RULES as u16 {
        add(
            &mut table,
            &mut trie,
            auth(
                i.into(),
                c,
                "10.0.0.0/8",
                Protocol::Tcp,
                PortRange::single(i),
            ),
        );
    }
    let err = table
        .plan_add(auth(100, c, "10.0.0.0/24", Protocol::Udp, PortRange::ALL))
        .unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::TooManyRules {
                count: 17,
                max: 16,
                ..
            }
        ),
        "{err}"
    );
    // A more specific entry added first is refused when the covering one overflows it.
    let d = "100.64.0.3";
    add(
        &mut table,
        &mut trie,
        auth(200, d, "10.0.0.0/24", Protocol::Udp, PortRange::ALL),
    );
    for i in 0..MAX_RULES as u16 - 1 {
        add(
            &mut table,
            &mut trie,
            auth(
                300 + u128::from(i),
                d,
                "10.0.0.0/8",
                Protocol::Tcp,
                PortRange::single(i),
            ),
        );
    }
    assert!(matches!(
        table.plan_add(auth(400, d, "0.0.0.0/0", Protocol::Tcp, PortRange::ALL)),
        Err(PolicyError::TooManyRules { count: 17, .. })
    ));
}

#[test]
fn rollback_restores_the_trie() {
    let mut table = PolicyTable::new(100, 100);
    let mut trie = ModelTrie::default();
    let c = "100.64.0.2";
    add(
        &mut table,
        &mut trie,
        auth(1, c, "10.1.0.0/16", Protocol::Tcp, PortRange::ALL),
    );
    add(
        &mut table,
        &mut trie,
        auth(2, c, "10.2.0.0/16", Protocol::Tcp, PortRange::ALL),
    );
    let before = trie.clone();
    let change = table
        .plan_add(auth(3, c, "10.0.0.0/8", Protocol::Udp, PortRange::ALL))
        .unwrap();
    assert_eq!(change.ops.len(), 3);
    for applied in 0..=change.ops.len() {
        let mut t = before.clone();
        change.ops[..applied].iter().for_each(|op| t.apply(op));
        change.rollback(applied).iter().for_each(|op| t.apply(op));
        assert_eq!(t, before, "rollback after {applied} ops");
    }
}

/// A tiny deterministic PRNG (xorshift64*), so the property test is repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Random adds and removes over nested prefixes: after every single write
/// of every plan, flows allowed both before and after the change are
/// allowed; after each plan the model agrees with the oracle on every flow.
#[test]
fn random_changes_never_drop_flows_allowed_on_both_sides() {
    let clients = ["100.64.0.2", "100.64.0.3", "fd00:64::2"];
    let v4_nets = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3/32",
        "10.1.3.0/24",
    ];
    let v6_nets = [
        "::/0",
        "fd00:1::/32",
        "fd00:1:2::/48",
        "fd00:1:2::3/128",
        "fd00:1:3::/48",
    ];
    let v4_dsts = ["10.1.2.3", "10.1.2.4", "10.1.3.1", "10.2.0.1", "192.0.2.1"];
    let v6_dsts = [
        "fd00:1:2::3",
        "fd00:1:2::4",
        "fd00:1:3::1",
        "fd00:2::1",
        "2001:db8::1",
    ];
    let transports = [
        tcp(80),
        tcp(443),
        udp(53),
        udp(80),
        Transport::IcmpEcho,
        Transport::IcmpOther,
        Transport::Other,
    ];
    let protos = [
        (Protocol::Tcp, PortRange::single(80)),
        (Protocol::Tcp, PortRange::new(400, 500).unwrap()),
        (Protocol::Udp, PortRange::single(53)),
        (Protocol::Icmp, PortRange::ALL),
        (Protocol::Any, PortRange::ALL),
    ];
    let mut flows = Vec::new();
    for client in clients {
        let dsts = if client.contains(':') {
            &v6_dsts
        } else {
            &v4_dsts
        };
        for dst in dsts {
            for t in transports {
                flows.push(flow(client, dst, t));
            }
        }
    }

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut table = PolicyTable::new(1000, 1000);
    let mut trie = ModelTrie::default();
    let mut live: Vec<Authorization> = Vec::new();
    let mut next_id = 0u128;
    for step in 0..1000 {
        let before = live.clone();
        let change = if live.is_empty() || !rng.next().is_multiple_of(3) {
            let client = rng.pick(&clients);
            let nets: &[&str] = if client.contains(':') {
                &v6_nets
            } else {
                &v4_nets
            };
            let (proto, ports) = rng.pick(&protos);
            next_id += 1;
            let a = auth(next_id, client, rng.pick(nets), proto, ports);
            match table.plan_add(a) {
                Ok(change) => {
                    live.push(a.normalized().unwrap());
                    change
                }
                Err(PolicyError::TooManyRules { .. }) => continue,
                Err(e) => panic!("step {step}: {e}"),
            }
        } else {
            let victim = live.remove((rng.next() % live.len() as u64) as usize);
            table.plan_remove(victim.id).unwrap()
        };
        for op in &change.ops {
            trie.apply(op);
            for f in &flows {
                if oracle(&before, f) && oracle(&live, f) {
                    assert!(
                        trie.verdict(f).0.passes(),
                        "step {step}: {f:?} dropped mid-update by {op:?}"
                    );
                }
            }
        }
        table.commit(change);
        for f in &flows {
            let (verdict, slot) = trie.verdict(f);
            assert_eq!(verdict.passes(), oracle(&live, f), "step {step}: {f:?}");
            if let Some(slot) = slot {
                // The counted authorisation really admits the flow.
                let a = live
                    .iter()
                    .find(|a| table.slot(a.id) == Some(slot))
                    .unwrap();
                assert!(oracle(&[*a], f), "step {step}: {f:?} counted on {a:?}");
            }
        }
        let entries = trie.0.keys().filter(|k| k.dst.addr().is_ipv4()).count() as u32;
        assert_eq!(table.entries(), (entries, trie.0.len() as u32 - entries));
    }
    assert!(next_id > 500, "the test made too few changes: {next_id}");
}
