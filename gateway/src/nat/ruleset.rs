//! The gateway's nftables table as JSON batches (`nft -j`):
//!
//! ```text
//! table inet keyhole_gw {
//!     set clients_v4 { type ipv4_addr; }     # authorised clients' tunnel IPs
//!     set clients_v6 { type ipv6_addr; }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @clients_v4 oifname != "keyhole0" counter masquerade
//!         ip6 saddr @clients_v6 oifname != "keyhole0" counter masquerade
//!     }
//! }
//! ```
//!
//! With `out_interfaces` set, `oifname != tunnel` becomes `oifname { … }`.
//! Two rules whatever the number of clients: adding or removing a client is
//! one set element, an O(1) hash-set update in the kernel.

use std::{borrow::Cow, net::IpAddr};

use nftables::{
    batch::Batch,
    expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem},
    schema::{Chain, Element, NfListObject, Nftables, Rule, Set, SetType, SetTypeValue, Table},
    stmt::{Counter, Match, Operator, Statement},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};

pub const DEFAULT_TABLE: &str = "keyhole_gw";
pub const SET_V4: &str = "clients_v4";
pub const SET_V6: &str = "clients_v6";
pub const CHAIN: &str = "postrouting";
/// `srcnat`, the standard priority of source NAT in the postrouting hook.
const SRCNAT_PRIORITY: i32 = 100;

/// Where the gateway's NAT applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// The one table the gateway owns (family `inet`).
    pub table: String,
    /// The tunnel interface (WireGuard link or TUN): traffic going back
    /// into it is never NATed.
    pub tunnel_interface: String,
    /// Resource-facing interfaces; empty means every interface but the
    /// tunnel.
    pub out_interfaces: Vec<String>,
}

impl NatConfig {
    pub fn new(tunnel_interface: impl Into<String>) -> Self {
        Self {
            table: DEFAULT_TABLE.into(),
            tunnel_interface: tunnel_interface.into(),
            out_interfaces: Vec::new(),
        }
    }
}

fn table(cfg: &NatConfig) -> Table<'_> {
    Table {
        family: NfFamily::INet,
        name: Cow::Borrowed(&cfg.table),
        handle: None,
    }
}

fn set<'a>(cfg: &'a NatConfig, name: &'a str, ty: SetType) -> Set<'a> {
    Set {
        family: NfFamily::INet,
        table: Cow::Borrowed(&cfg.table),
        name: Cow::Borrowed(name),
        handle: None,
        set_type: SetTypeValue::Single(ty),
        policy: None,
        flags: None,
        elem: None,
        timeout: None,
        gc_interval: None,
        size: None,
        comment: Some(Cow::Borrowed(
            "keyhole gateway: tunnel IPs of clients with a live authorisation",
        )),
    }
}

fn masquerade_rule<'a>(cfg: &'a NatConfig, proto: &'a str, set: &'a str) -> Rule<'a> {
    let saddr = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: Cow::Borrowed(proto),
                field: Cow::Borrowed("saddr"),
            },
        ))),
        right: Expression::String(Cow::Owned(format!("@{set}"))),
        op: Operator::EQ,
    });
    let oifname = Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::Oifname,
    }));
    let out = if cfg.out_interfaces.is_empty() {
        Statement::Match(Match {
            left: oifname,
            right: Expression::String(Cow::Borrowed(&cfg.tunnel_interface)),
            op: Operator::NEQ,
        })
    } else {
        Statement::Match(Match {
            left: oifname,
            right: Expression::Named(NamedExpression::Set(
                cfg.out_interfaces
                    .iter()
                    .map(|i| SetItem::Element(Expression::String(Cow::Borrowed(i))))
                    .collect(),
            )),
            op: Operator::EQ,
        })
    };
    Rule {
        family: NfFamily::INet,
        table: Cow::Borrowed(&cfg.table),
        chain: Cow::Borrowed(CHAIN),
        expr: Cow::Owned(vec![
            saddr,
            out,
            Statement::Counter(Counter::Anonymous(None)),
            Statement::Masquerade(None),
        ]),
        handle: None,
        index: None,
        comment: None,
    }
}

/// One transaction that replaces any table of that name (a crashed
/// gateway's) with a fresh, empty one: `add` makes the `delete` safe when
/// none exists, and nft applies the batch atomically.
pub fn create(cfg: &NatConfig) -> Nftables<'_> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(cfg)));
    b.delete(NfListObject::Table(table(cfg)));
    b.add(NfListObject::Table(table(cfg)));
    b.add(NfListObject::Set(Box::new(set(
        cfg,
        SET_V4,
        SetType::Ipv4Addr,
    ))));
    b.add(NfListObject::Set(Box::new(set(
        cfg,
        SET_V6,
        SetType::Ipv6Addr,
    ))));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(&cfg.table),
        name: Cow::Borrowed(CHAIN),
        newname: None,
        handle: None,
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(SRCNAT_PRIORITY),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    }));
    b.add(NfListObject::Rule(masquerade_rule(cfg, "ip", SET_V4)));
    b.add(NfListObject::Rule(masquerade_rule(cfg, "ip6", SET_V6)));
    b.to_nftables()
}

/// Deletes the table if it exists (and does nothing otherwise).
pub fn delete(cfg: &NatConfig) -> Nftables<'_> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(cfg)));
    b.delete(NfListObject::Table(table(cfg)));
    b.to_nftables()
}

fn elements<'a>(cfg: &'a NatConfig, name: &'a str, ips: &[IpAddr]) -> Element<'a> {
    Element {
        family: NfFamily::INet,
        table: Cow::Borrowed(&cfg.table),
        name: Cow::Borrowed(name),
        elem: Cow::Owned(
            ips.iter()
                .map(|ip| Expression::String(Cow::Owned(ip.to_string())))
                .collect(),
        ),
    }
}

/// One transaction adding and removing set elements. `remove` must hold
/// only present addresses (deleting an absent element fails the batch).
/// `None` when there is nothing to do.
pub fn update<'a>(cfg: &'a NatConfig, add: &[IpAddr], remove: &[IpAddr]) -> Option<Nftables<'a>> {
    let mut b = Batch::new();
    let mut any = false;
    for (ips, del) in [(add, false), (remove, true)] {
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| ip.is_ipv4());
        for (name, list) in [(SET_V4, v4), (SET_V6, v6)] {
            if list.is_empty() {
                continue;
            }
            any = true;
            let obj = NfListObject::Element(elements(cfg, name, &list));
            if del {
                b.delete(obj);
            } else {
                b.add(obj);
            }
        }
    }
    any.then(|| b.to_nftables())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(n: &Nftables<'_>) -> serde_json::Value {
        serde_json::to_value(n).unwrap()
    }

    #[test]
    fn create_replaces_and_builds_two_rules() {
        let cfg = NatConfig::new("keyhole0");
        let v = json(&create(&cfg));
        let cmds = v["nftables"].as_array().unwrap();
        // add table, delete table, add table: the replace idiom, in order.
        assert_eq!(cmds[0]["add"]["table"]["name"], "keyhole_gw");
        assert_eq!(cmds[1]["delete"]["table"]["name"], "keyhole_gw");
        assert_eq!(cmds[2]["add"]["table"]["family"], "inet");
        let rules: Vec<_> = cmds
            .iter()
            .filter(|c| c["add"]["rule"].is_object())
            .collect();
        assert_eq!(rules.len(), 2);
        let r4 = &rules[0]["add"]["rule"]["expr"];
        assert_eq!(r4[0]["match"]["left"]["payload"]["protocol"], "ip");
        assert_eq!(r4[0]["match"]["right"], "@clients_v4");
        assert_eq!(r4[1]["match"]["op"], "!=");
        assert_eq!(r4[1]["match"]["right"], "keyhole0");
        assert!(r4[3].get("masquerade").is_some());
        let chain = cmds.iter().find(|c| c["add"]["chain"].is_object()).unwrap();
        assert_eq!(chain["add"]["chain"]["hook"], "postrouting");
        assert_eq!(chain["add"]["chain"]["type"], "nat");
    }

    #[test]
    fn out_interfaces_become_an_anonymous_set() {
        let mut cfg = NatConfig::new("keyhole0");
        cfg.out_interfaces = vec!["eth1".into(), "eth2".into()];
        let v = json(&create(&cfg));
        let rule = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["add"]["rule"].is_object())
            .unwrap();
        let m = &rule["add"]["rule"]["expr"][1]["match"];
        assert_eq!(m["op"], "==");
        assert_eq!(m["right"]["set"], serde_json::json!(["eth1", "eth2"]));
    }

    #[test]
    fn update_splits_families_and_skips_empty_work() {
        let cfg = NatConfig::new("keyhole0");
        assert!(update(&cfg, &[], &[]).is_none());
        let add: Vec<IpAddr> = vec!["100.64.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let rm: Vec<IpAddr> = vec!["100.64.0.3".parse().unwrap()];
        let v = json(&update(&cfg, &add, &rm).unwrap());
        let cmds = v["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0]["add"]["element"]["name"], "clients_v4");
        assert_eq!(
            cmds[0]["add"]["element"]["elem"],
            serde_json::json!(["100.64.0.2"])
        );
        assert_eq!(cmds[1]["add"]["element"]["name"], "clients_v6");
        assert_eq!(
            cmds[2]["delete"]["element"]["elem"],
            serde_json::json!(["100.64.0.3"])
        );
    }
}
