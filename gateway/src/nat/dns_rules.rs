//! The DNS-resource part of the gateway's table, as raw nft JSON (the
//! `nftables` crate has no typed form for a concatenated-key `dnat … map`):
//!
//! ```text
//! map dns_v4 { type ipv4_addr . ipv4_addr : ipv4_addr; }  # client . proxy : real
//! map dns_v6 { type ipv6_addr . ipv6_addr : ipv6_addr; }
//! set dns_proxy_v4 { type ipv4_addr . ipv4_addr; }        # every assigned client . proxy
//! set dns_proxy_v6 { type ipv6_addr . ipv6_addr; }
//! chain prerouting {
//!     type nat hook prerouting priority dstnat; policy accept;
//!     iifname "keyhole0" dnat ip to ip saddr . ip daddr map @dns_v4
//!     iifname "keyhole0" dnat ip6 to ip6 saddr . ip6 daddr map @dns_v6
//! }
//! chain forward {
//!     type filter hook forward priority filter; policy accept;
//!     iifname "keyhole0" ip saddr . ip daddr @dns_proxy_v4 counter drop
//!     iifname "keyhole0" ip6 saddr . ip6 daddr @dns_proxy_v6 counter drop
//! }
//! ```
//!
//! The dnat only sees a connection's first packet; conntrack translates
//! the rest and reverses replies. A translated packet reaches `forward`
//! with the real address, so the drop rule catches only assigned pairs
//! without a translation (unresolved name, no address of that family).

use std::net::IpAddr;

use serde_json::{Value, json};

use super::NatConfig;
use crate::dns::Desired;

pub const MAP_V4: &str = "dns_v4";
pub const MAP_V6: &str = "dns_v6";
pub const PROXY_V4: &str = "dns_proxy_v4";
pub const PROXY_V6: &str = "dns_proxy_v6";
pub const PREROUTING: &str = "prerouting";
pub const FORWARD: &str = "forward";
const DSTNAT_PRIORITY: i32 = -100;
const FILTER_PRIORITY: i32 = 0;

fn concat(proto: &str) -> Value {
    json!({"concat": [
        {"payload": {"protocol": proto, "field": "saddr"}},
        {"payload": {"protocol": proto, "field": "daddr"}},
    ]})
}

fn iifname(cfg: &NatConfig) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": cfg.tunnel_interface}})
}

/// Commands adding the maps, sets, chains and rules to a fresh table.
pub fn create(cfg: &NatConfig) -> Vec<Value> {
    let t = &cfg.table;
    let mut out = Vec::new();
    for (name, ty) in [(MAP_V4, "ipv4_addr"), (MAP_V6, "ipv6_addr")] {
        out.push(json!({"add": {"map": {
            "family": "inet", "table": t, "name": name, "type": [ty, ty], "map": ty,
            "comment": "keyhole gateway: client . proxy IP -> real IP of a DNS resource",
        }}}));
    }
    for (name, ty) in [(PROXY_V4, "ipv4_addr"), (PROXY_V6, "ipv6_addr")] {
        out.push(json!({"add": {"set": {
            "family": "inet", "table": t, "name": name, "type": [ty, ty],
            "comment": "keyhole gateway: every assigned client . proxy IP",
        }}}));
    }
    out.push(json!({"add": {"chain": {
        "family": "inet", "table": t, "name": PREROUTING,
        "type": "nat", "hook": "prerouting", "prio": DSTNAT_PRIORITY, "policy": "accept",
    }}}));
    out.push(json!({"add": {"chain": {
        "family": "inet", "table": t, "name": FORWARD,
        "type": "filter", "hook": "forward", "prio": FILTER_PRIORITY, "policy": "accept",
    }}}));
    for (proto, map, set) in [("ip", MAP_V4, PROXY_V4), ("ip6", MAP_V6, PROXY_V6)] {
        out.push(json!({"add": {"rule": {
            "family": "inet", "table": t, "chain": PREROUTING,
            "expr": [
                iifname(cfg),
                {"dnat": {"family": proto, "addr": {"map": {"key": concat(proto), "data": format!("@{map}")}}}},
            ],
        }}}));
        out.push(json!({"add": {"rule": {
            "family": "inet", "table": t, "chain": FORWARD,
            "expr": [
                iifname(cfg),
                {"match": {"op": "==", "left": concat(proto), "right": format!("@{set}")}},
                {"counter": null},
                {"drop": null},
            ],
        }}}));
    }
    out
}

/// One transaction replacing the maps' and sets' contents with `d`.
pub fn replace(cfg: &NatConfig, d: &Desired) -> Value {
    let t = &cfg.table;
    let mut cmds = Vec::new();
    for name in [MAP_V4, MAP_V6] {
        cmds.push(json!({"flush": {"map": {"family": "inet", "table": t, "name": name}}}));
    }
    for name in [PROXY_V4, PROXY_V6] {
        cmds.push(json!({"flush": {"set": {"family": "inet", "table": t, "name": name}}}));
    }
    for (v4, map, set) in [(true, MAP_V4, PROXY_V4), (false, MAP_V6, PROXY_V6)] {
        let fam = |ip: &IpAddr| ip.is_ipv4() == v4;
        let elems: Vec<Value> = d
            .translations
            .iter()
            .filter(|((c, _), _)| fam(c))
            .map(|((c, p), r)| json!([{"concat": [c.to_string(), p.to_string()]}, r.to_string()]))
            .collect();
        if !elems.is_empty() {
            cmds.push(json!({"add": {"element": {"family": "inet", "table": t, "name": map, "elem": elems}}}));
        }
        let elems: Vec<Value> = d
            .assigned
            .iter()
            .filter(|(c, _)| fam(c))
            .map(|(c, p)| json!({"concat": [c.to_string(), p.to_string()]}))
            .collect();
        if !elems.is_empty() {
            cmds.push(json!({"add": {"element": {"family": "inet", "table": t, "name": set, "elem": elems}}}));
        }
    }
    json!({ "nftables": cmds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn create_has_the_dnat_map_rule_and_the_drop_rule_per_family() {
        let cfg = NatConfig::new("keyhole0");
        let cmds = create(&cfg);
        let rules: Vec<&Value> = cmds
            .iter()
            .filter(|c| c["add"]["rule"].is_object())
            .collect();
        assert_eq!(rules.len(), 4);
        let dnat = &rules[0]["add"]["rule"]["expr"][1]["dnat"];
        assert_eq!(dnat["family"], "ip");
        assert_eq!(dnat["addr"]["map"]["data"], "@dns_v4");
        assert_eq!(
            rules[0]["add"]["rule"]["expr"][0]["match"]["right"],
            "keyhole0"
        );
        assert_eq!(rules[1]["add"]["rule"]["chain"], "forward");
        assert_eq!(
            rules[3]["add"]["rule"]["expr"][1]["match"]["right"],
            "@dns_proxy_v6"
        );
    }

    #[test]
    fn replace_flushes_then_adds_by_family() {
        let cfg = NatConfig::new("keyhole0");
        let mut d = Desired::default();
        let p4 = (ip("100.64.0.5"), ip("100.96.0.1"));
        let p6 = (ip("fd00::5"), ip("fd00:6b68::1"));
        d.translations.insert(p4, ip("10.0.0.9"));
        d.assigned.insert(p4);
        d.assigned.insert(p6);
        let v = replace(&cfg, &d);
        let cmds = v["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 4 + 3, "4 flushes, v4 map + v4 set + v6 set");
        assert_eq!(
            cmds[4]["add"]["element"]["elem"],
            json!([[{"concat": ["100.64.0.5", "100.96.0.1"]}, "10.0.0.9"]])
        );
        assert_eq!(cmds[6]["add"]["element"]["name"], "dns_proxy_v6");
        // Empty: only the flushes.
        let v = replace(&cfg, &Desired::default());
        assert_eq!(v["nftables"].as_array().unwrap().len(), 4);
    }
}
