//! The gateway's NAT table (gateway/src/nat) against real nftables:
//!
//! client (100.64.0.2, a tunnel address) --tun0-- gateway --eth1-- resource
//!
//! The veth `tun0` stands in for the tunnel interface. The resource has no
//! route back to the tunnel ranges, so only masqueraded traffic can be
//! answered, and the source address it sees tells whether NAT applied.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use keyhole_gateway::nat::{GatewayNat, NatConfig, NftCommand};
use keyhole_tests_netns::{Netns, veth};

const T: Duration = Duration::from_secs(3);
/// Long enough for a forwarded echo on veth, short enough to keep the
/// "must not answer" checks quick.
const NO_ANSWER: Duration = Duration::from_millis(700);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Net {
    client: Netns,
    gw: Netns,
    resource: Netns,
}

fn net() -> Net {
    let client = Netns::new("nat-client").unwrap();
    let gw = Netns::new("nat-gw").unwrap();
    let resource = Netns::new("nat-res").unwrap();
    veth(
        &client,
        "eth0",
        "100.64.0.2/24",
        &gw,
        "tun0",
        "100.64.0.1/24",
    )
    .unwrap();
    client.add_addr("eth0", "100.64.0.3/24").unwrap();
    client.add_addr("eth0", "fd00:6b68::2/64").unwrap();
    gw.add_addr("tun0", "fd00:6b68::1/64").unwrap();
    veth(
        &gw,
        "eth1",
        "192.0.2.1/24",
        &resource,
        "eth0",
        "192.0.2.10/24",
    )
    .unwrap();
    gw.add_addr("eth1", "2001:db8::1/64").unwrap();
    resource.add_addr("eth0", "2001:db8::10/64").unwrap();
    client.default_route("100.64.0.1").unwrap();
    client
        .ip(["-6", "route", "add", "default", "via", "fd00:6b68::1"])
        .unwrap();
    gw.enable_forwarding().unwrap();
    Net {
        client,
        gw,
        resource,
    }
}

fn nat_cfg() -> NatConfig {
    NatConfig::new("tun0")
}

fn start(n: &Net) -> GatewayNat {
    GatewayNat::start(nat_cfg(), NftCommand::in_netns(n.gw.name())).unwrap()
}

/// The source address the resource sees for one UDP datagram the client
/// sends from `src` (fresh socket, so a fresh conntrack entry), or `None`
/// if nothing arrived.
fn source_seen(n: &Net, src: IpAddr, dst: IpAddr) -> Option<IpAddr> {
    let rx = n
        .resource
        .enter(|| UdpSocket::bind(SocketAddr::new(dst, 0)))
        .unwrap();
    let port = rx.local_addr().unwrap().port();
    rx.set_read_timeout(Some(NO_ANSWER)).unwrap();
    n.client
        .enter(|| {
            let tx = UdpSocket::bind(SocketAddr::new(src, 0))?;
            tx.send_to(b"hello", SocketAddr::new(dst, port))
        })
        .unwrap();
    let mut buf = [0u8; 16];
    rx.recv_from(&mut buf).ok().map(|(_, from)| from.ip())
}

fn answered(n: &Net, src: &str, dst: &str) -> bool {
    n.client
        .ping_from(Some(ip(src)), ip(dst), NO_ANSWER)
        .is_ok()
}

fn list_table(ns: &Netns) -> Option<String> {
    ns.run("nft", ["list", "table", "inet", "keyhole_gw"]).ok()
}

#[test]
fn masquerades_exactly_the_clients_in_the_set() {
    let n = net();
    // No NAT yet: the resource sees the tunnel address and cannot answer.
    assert_ne!(
        source_seen(&n, ip("100.64.0.2"), ip("192.0.2.10")),
        Some(ip("192.0.2.1"))
    );
    assert!(!answered(&n, "100.64.0.2", "192.0.2.10"));

    let mut nat = start(&n);
    // The table exists but holds no client: still no NAT.
    assert!(!answered(&n, "100.64.0.2", "192.0.2.10"));

    let t = Instant::now();
    nat.acquire(&[ip("100.64.0.2"), ip("fd00:6b68::2")])
        .unwrap();
    eprintln!("acquire (one nft transaction): {:?}", t.elapsed());
    assert_eq!(
        source_seen(&n, ip("100.64.0.2"), ip("192.0.2.10")),
        Some(ip("192.0.2.1"))
    );
    assert_eq!(
        source_seen(&n, ip("fd00:6b68::2"), ip("2001:db8::10")),
        Some(ip("2001:db8::1"))
    );
    n.client
        .ping_from(Some(ip("100.64.0.2")), ip("192.0.2.10"), T)
        .unwrap();
    n.client
        .ping_from(Some(ip("fd00:6b68::2")), ip("2001:db8::10"), T)
        .unwrap();
    // Another tunnel address of the same host is not authorised.
    assert_ne!(
        source_seen(&n, ip("100.64.0.3"), ip("192.0.2.10")),
        Some(ip("192.0.2.1"))
    );
    assert!(!answered(&n, "100.64.0.3", "192.0.2.10"));

    // Two authorisations hold the client; releasing one keeps the NAT.
    nat.acquire(&[ip("100.64.0.2")]).unwrap();
    nat.release(&[ip("100.64.0.2")]).unwrap();
    assert!(answered(&n, "100.64.0.2", "192.0.2.10"));

    // The last release stops NAT for new flows.
    let t = Instant::now();
    nat.release(&[ip("100.64.0.2"), ip("fd00:6b68::2")])
        .unwrap();
    eprintln!("release (one nft transaction): {:?}", t.elapsed());
    assert_ne!(
        source_seen(&n, ip("100.64.0.2"), ip("192.0.2.10")),
        Some(ip("192.0.2.1"))
    );
    assert!(!answered(&n, "100.64.0.2", "192.0.2.10"));
    assert!(!answered(&n, "fd00:6b68::2", "2001:db8::10"));
    // Releasing what is not held is a no-op, not an nft error.
    nat.release(&[ip("100.64.0.9")]).unwrap();
    assert_eq!(nat.clients().count(), 0);
}

#[test]
fn a_foreign_table_survives_start_and_stop() {
    let n = net();
    let foreign = "table ip other_app {\n\
                   \tset blocked { type ipv4_addr; elements = { 198.51.100.7 } }\n\
                   \tchain input { type filter hook input priority 0; policy accept; \
                   ip saddr @blocked drop; }\n\
                   }\n";
    n.gw.run_with_stdin("nft", ["-f", "-"], foreign.as_bytes())
        .unwrap();
    let before =
        n.gw.run("nft", ["list", "table", "ip", "other_app"])
            .unwrap();

    let mut nat = start(&n);
    nat.acquire(&[ip("100.64.0.2")]).unwrap();
    assert_eq!(
        n.gw.run("nft", ["list", "table", "ip", "other_app"])
            .unwrap(),
        before
    );
    nat.stop().unwrap();

    assert_eq!(
        n.gw.run("nft", ["list", "table", "ip", "other_app"])
            .unwrap(),
        before
    );
    assert!(list_table(&n.gw).is_none(), "keyhole table left behind");
}

#[test]
fn a_stale_table_is_replaced() {
    let n = net();
    // What a crashed gateway might leave: old elements, a chain we no
    // longer make, a rule NATing everything.
    let stale = "table inet keyhole_gw {\n\
                 \tset clients_v4 { type ipv4_addr; elements = { 100.64.0.3 } }\n\
                 \tchain leftover { type nat hook postrouting priority srcnat; policy accept; \
                 masquerade; }\n\
                 }\n";
    n.gw.run_with_stdin("nft", ["-f", "-"], stale.as_bytes())
        .unwrap();
    assert!(
        answered(&n, "100.64.0.3", "192.0.2.10"),
        "stale table not effective"
    );

    let mut nat = start(&n);
    let table = list_table(&n.gw).unwrap();
    assert!(!table.contains("leftover"), "{table}");
    assert!(!table.contains("100.64.0.3"), "{table}");
    assert!(!answered(&n, "100.64.0.3", "192.0.2.10"));

    nat.acquire(&[ip("100.64.0.2")]).unwrap();
    assert!(answered(&n, "100.64.0.2", "192.0.2.10"));
    // A second start over a live table (a restart) replaces it the same way.
    let again = start(&n);
    assert!(!list_table(&n.gw).unwrap().contains("100.64.0.2"));
    drop(again);
    // Its drop removed the shared name; ours finds nothing to delete.
    nat.stop().unwrap();
    assert!(list_table(&n.gw).is_none());
}

#[test]
fn drop_removes_the_table() {
    let n = net();
    {
        let mut nat = start(&n);
        nat.acquire(&[ip("100.64.0.2")]).unwrap();
        assert!(list_table(&n.gw).is_some());
        assert!(answered(&n, "100.64.0.2", "192.0.2.10"));
    }
    assert!(list_table(&n.gw).is_none());
    let tables = n.gw.run("nft", ["list", "tables"]).unwrap();
    assert!(!tables.contains("keyhole"), "{tables}");
    assert!(!answered(&n, "100.64.0.2", "192.0.2.10"));
}

/// A set, not a rule per client: 500 clients still mean two rules, and an
/// update costs one small transaction whatever the set holds.
#[test]
fn many_clients_are_set_elements_not_rules() {
    let n = net();
    let mut nat = start(&n);
    let many: Vec<IpAddr> = (0..500u32)
        .map(|i| {
            IpAddr::from(std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(100, 65, 0, 0)) + i,
            ))
        })
        .collect();
    let t = Instant::now();
    nat.acquire(&many).unwrap();
    eprintln!("acquire 500 in one transaction: {:?}", t.elapsed());
    let t = Instant::now();
    nat.acquire(&[ip("100.64.0.2")]).unwrap();
    eprintln!("acquire 1 with 500 present: {:?}", t.elapsed());
    let table = list_table(&n.gw).unwrap();
    assert_eq!(table.matches("masquerade").count(), 2, "{table}");
    assert!(table.contains("100.65.1.243"), "{table}");
    assert!(answered(&n, "100.64.0.2", "192.0.2.10"));
    assert_eq!(nat.clients().count(), 501);
    nat.release(&many).unwrap();
    assert!(!list_table(&n.gw).unwrap().contains("100.65.0.1"));
    assert!(answered(&n, "100.64.0.2", "192.0.2.10"));
}

#[test]
fn bad_config_is_refused_before_touching_nft() {
    let n = net();
    let mut cfg = nat_cfg();
    cfg.tunnel_interface = "this-name-is-too-long".into();
    assert!(GatewayNat::start(cfg, NftCommand::in_netns(n.gw.name())).is_err());
    let mut cfg = nat_cfg();
    cfg.table = "bad name".into();
    assert!(GatewayNat::start(cfg, NftCommand::in_netns(n.gw.name())).is_err());
    assert!(list_table(&n.gw).is_none());
}
