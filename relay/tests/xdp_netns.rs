//! The XDP fast path in a real topology: client ns — relay ns — peer ns
//! over veth, native XDP on the relay's two interfaces, a TURN client that
//! allocates, binds a channel and exchanges data both ways with a UDP peer.
//!
//! With XDP on, the fast path's counters move by exactly the exchanged
//! packets and bytes and userspace sees none of the data; with XDP off the
//! same exchange goes through userspace and delivers the same bytes.
//! Needs root (network namespaces, XDP).

#[path = "support/topology.rs"]
mod topology;
#[path = "support/turn_client.rs"]
mod turn_client;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use topology::*;
use turn_client::TurnClient;

const CHANNEL: u16 = 0x4001;
const ROUNDS: usize = 200;
const PEER_PORT: u16 = 9000;

/// Payload `i`: sizes 1..=1200 cycling, contents derived from `i`.
fn payload(i: usize, dir: u8) -> Vec<u8> {
    let len = 1 + (i * 97) % 1200;
    (0..len)
        .map(|j| (i as u8) ^ (j as u8).wrapping_mul(31) ^ dir)
        .collect()
}

struct Exchange {
    /// What the peer received, in order.
    at_peer: Vec<Vec<u8>>,
    /// What the client received, in order.
    at_client: Vec<Vec<u8>>,
    before: BTreeMap<String, u64>,
    after: BTreeMap<String, u64>,
}

/// Allocates, binds, then ROUNDS ping-pongs: client → peer over the channel,
/// peer answers to the relayed address.
fn exchange(topo: &Topology) -> Exchange {
    exchange_with(topo, &topo.peer, PEER_IP)
}

/// As [`exchange`], with the peer in namespace `peer_ns` at `peer_ip`.
fn exchange_with(topo: &Topology, peer_ns: &keyhole_tests_netns::Netns, peer_ip: &str) -> Exchange {
    let server: SocketAddr = LISTEN.parse().unwrap();
    let peer_addr: SocketAddr = format!("{peer_ip}:{PEER_PORT}").parse().unwrap();
    let mut client = topo
        .client
        .enter(|| TurnClient::allocate(format!("{CLIENT_IP}:0").parse().unwrap(), server, SECRET))
        .expect("allocate");
    let peer = peer_ns
        .enter(|| UdpSocket::bind(peer_addr))
        .expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client
        .channel_bind(CHANNEL, peer_addr)
        .expect("channel bind");

    let before = topo.metrics().expect("metrics");
    let mut at_peer = Vec::new();
    let mut at_client = Vec::new();
    let mut buf = vec![0u8; 65536];
    for i in 0..ROUNDS {
        client.send_channel_data(CHANNEL, &payload(i, 0)).unwrap();
        let (n, from) = peer.recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "peer receives {i}: {e}: {:#?}\n{}\n{}",
                topo.metrics(),
                topo.peer.run("cat", ["/proc/net/snmp"]).unwrap_or_default(),
                topo.peer
                    .ip(["-s", "link", "show", "eth0"])
                    .unwrap_or_default()
            )
        });
        assert_eq!(from, client.relayed, "peer sees the relayed address");
        at_peer.push(buf[..n].to_vec());
        peer.send_to(&payload(i, 0xff), client.relayed).unwrap();
        let (channel, data) = client
            .recv_channel_data()
            .unwrap_or_else(|e| panic!("client receives {i}: {e}: {:#?}", topo.metrics()));
        assert_eq!(channel, CHANNEL);
        at_client.push(data);
    }
    let after = topo.metrics().expect("metrics");
    Exchange {
        at_peer,
        at_client,
        before,
        after,
    }
}

fn expected_bytes(dir: u8) -> u64 {
    (0..ROUNDS).map(|i| payload(i, dir).len() as u64).sum()
}

fn assert_payloads(x: &Exchange) {
    for i in 0..ROUNDS {
        assert_eq!(x.at_peer[i], payload(i, 0), "client → peer payload {i}");
        assert_eq!(
            x.at_client[i],
            payload(i, 0xff),
            "peer → client payload {i}"
        );
    }
}

#[test]
fn fast_path_carries_channel_data_and_userspace_sees_none() {
    let topo = Topology::new().expect("topology");
    let relay = topo.start_keyhole("native").expect("relay");
    let x = exchange(&topo);
    let m = |name: &str| delta(&x.before, &x.after, name);
    let log = relay.output_so_far();
    assert_eq!(x.after["keyhole_relay_xdp_attached"], 1, "{log}");
    assert_eq!(x.after["keyhole_relay_xdp_channels"], 1, "{log}");
    assert_payloads(&x);

    // Every data packet took the fast path, in both directions…
    assert_eq!(
        m("keyhole_relay_xdp_packets_total{direction=\"to_peer\"}"),
        ROUNDS as u64,
        "{:#?}",
        x.after
    );
    assert_eq!(
        m("keyhole_relay_xdp_packets_total{direction=\"to_client\"}"),
        ROUNDS as u64,
        "{:#?}",
        x.after
    );
    assert_eq!(
        m("keyhole_relay_xdp_bytes_total{direction=\"to_peer\"}"),
        expected_bytes(0)
    );
    assert_eq!(
        m("keyhole_relay_xdp_bytes_total{direction=\"to_client\"}"),
        expected_bytes(0xff)
    );
    // …out of the other interface (client and peer sit on different links).
    assert_eq!(
        m("keyhole_relay_xdp_sent_total{how=\"redirect\"}"),
        2 * ROUNDS as u64
    );
    // …and userspace saw none of it.
    assert_eq!(
        m("keyhole_relay_userspace_datagrams_total{source=\"client_channel_data\"}"),
        0
    );
    assert_eq!(
        m("keyhole_relay_userspace_datagrams_total{source=\"peer\"}"),
        0
    );
    assert_eq!(
        m("keyhole_relay_userspace_relayed_packets_total{direction=\"to_peer\"}"),
        0
    );
    assert_eq!(
        m("keyhole_relay_userspace_relayed_packets_total{direction=\"to_client\"}"),
        0
    );
    // Control traffic (the STUN of the allocation) went to userspace.
    assert!(x.after["keyhole_relay_xdp_passed_total{reason=\"not_channel_data\"}"] >= 2);
}

#[test]
fn fast_path_sends_back_out_of_the_same_link_with_xdp_tx() {
    // The peer sits on the client's link: both directions leave through the
    // interface they came in on.
    let topo = Topology::new().expect("topology");
    let relay = topo.start_keyhole("native").expect("relay");
    let x = exchange_with(&topo, &topo.client, CLIENT_IP);
    let m = |name: &str| delta(&x.before, &x.after, name);
    assert_payloads(&x);
    let log = relay.output_so_far();
    assert_eq!(
        m("keyhole_relay_xdp_packets_total{direction=\"to_peer\"}"),
        ROUNDS as u64,
        "{log}"
    );
    assert_eq!(
        m("keyhole_relay_xdp_packets_total{direction=\"to_client\"}"),
        ROUNDS as u64
    );
    assert_eq!(
        m("keyhole_relay_xdp_sent_total{how=\"tx\"}"),
        2 * ROUNDS as u64
    );
    assert_eq!(m("keyhole_relay_xdp_sent_total{how=\"redirect\"}"), 0);
    assert_eq!(
        m("keyhole_relay_userspace_datagrams_total{source=\"peer\"}"),
        0
    );
    assert_eq!(
        m("keyhole_relay_userspace_datagrams_total{source=\"client_channel_data\"}"),
        0
    );
}

#[test]
fn fast_path_works_in_generic_mode() {
    let topo = Topology::new().expect("topology");
    let relay = topo.start_keyhole("generic").expect("relay");
    let x = exchange(&topo);
    let m = |name: &str| delta(&x.before, &x.after, name);
    assert_payloads(&x);
    let log = relay.output_so_far();
    assert!(
        log.lines()
            .any(|l| l.contains("XDP fast path attached") && l.contains("generic")),
        "{log}"
    );
    assert_eq!(
        m("keyhole_relay_xdp_packets_total{direction=\"to_peer\"}"),
        ROUNDS as u64,
        "{log}"
    );
    assert_eq!(
        m("keyhole_relay_xdp_packets_total{direction=\"to_client\"}"),
        ROUNDS as u64
    );
    assert_eq!(
        m("keyhole_relay_userspace_relayed_packets_total{direction=\"to_peer\"}"),
        0
    );
}

#[test]
fn unattachable_xdp_falls_back_to_userspace() {
    // No such interface: the relay says so and relays in userspace.
    let topo = Topology::new().expect("topology");
    let relay = topo
        .start_keyhole_listening(LISTEN, "nosuch0", "native", None, &[])
        .expect("relay");
    assert!(
        relay
            .output_so_far()
            .contains("XDP fast path could not attach")
    );
    let x = exchange(&topo);
    assert_payloads(&x);
    assert_eq!(x.after["keyhole_relay_xdp_attached"], 0);
    assert_eq!(
        delta(
            &x.before,
            &x.after,
            "keyhole_relay_userspace_relayed_packets_total{direction=\"to_peer\"}"
        ),
        ROUNDS as u64
    );
}

#[test]
fn userspace_path_gives_the_same_bytes_with_xdp_off() {
    let topo = Topology::new().expect("topology");
    let relay = topo.start_keyhole("off").expect("relay");
    let x = exchange(&topo);
    let m = |name: &str| delta(&x.before, &x.after, name);
    assert_eq!(
        x.after["keyhole_relay_xdp_attached"],
        0,
        "{}",
        relay.output_so_far()
    );
    assert_payloads(&x);
    assert_eq!(
        m("keyhole_relay_userspace_relayed_packets_total{direction=\"to_peer\"}"),
        ROUNDS as u64
    );
    assert_eq!(
        m("keyhole_relay_userspace_relayed_packets_total{direction=\"to_client\"}"),
        ROUNDS as u64
    );
    assert_eq!(
        m("keyhole_relay_userspace_relayed_bytes_total{direction=\"to_peer\"}"),
        expected_bytes(0)
    );
    assert_eq!(
        m("keyhole_relay_userspace_relayed_bytes_total{direction=\"to_client\"}"),
        expected_bytes(0xff)
    );
    assert_eq!(
        m("keyhole_relay_userspace_datagrams_total{source=\"client_channel_data\"}"),
        ROUNDS as u64
    );
}

#[test]
fn fast_path_entries_go_with_the_allocation() {
    let topo = Topology::new().expect("topology");
    let relay = topo.start_keyhole("native").expect("relay");
    let server: SocketAddr = LISTEN.parse().unwrap();
    let peer_addr: SocketAddr = format!("{PEER_IP}:{PEER_PORT}").parse().unwrap();
    let mut client = topo
        .client
        .enter(|| TurnClient::allocate(format!("{CLIENT_IP}:0").parse().unwrap(), server, SECRET))
        .expect("allocate");
    client
        .channel_bind(CHANNEL, peer_addr)
        .expect("channel bind");
    assert_eq!(topo.metrics().unwrap()["keyhole_relay_xdp_channels"], 1);
    // Refresh with lifetime 0 deletes the allocation: the entries must go,
    // so later ChannelData is not relayed by anyone.
    client.refresh(0).expect("release");
    let m = topo.metrics().unwrap();
    assert_eq!(
        m["keyhole_relay_xdp_channels"],
        0,
        "{}",
        relay.output_so_far()
    );
    let peer = topo.peer.enter(|| UdpSocket::bind(peer_addr)).unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let before = topo.metrics().unwrap();
    client.send_channel_data(CHANNEL, b"after release").unwrap();
    let mut buf = [0u8; 64];
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "nothing relayed after release"
    );
    let after = topo.metrics().unwrap();
    assert_eq!(
        delta(
            &before,
            &after,
            "keyhole_relay_xdp_packets_total{direction=\"to_peer\"}"
        ),
        0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "keyhole_relay_xdp_passed_total{reason=\"no_channel\"}"
        ),
        1
    );
}

/// IPv6 on every leg: the same topology with IPv6 addresses added, a
/// listener on the relay's client-side IPv6 address, and allocations that
/// ask for an IPv6 relayed address.
mod ipv6 {
    use super::*;
    use anyhow::{Context as _, bail};
    use keyhole_relay::xdp::Counter;
    use keyhole_stun::auth::{long_term_key, rest_password, rest_username};
    use keyhole_stun::{
        AddressFamily, Attribute, ChannelData, Class, Message, MessageBuilder, MessageType, Method,
        PROTOCOL_UDP, TransactionId,
    };

    const CLIENT6: &str = "fd77:1::2";
    const RELAY6_CLIENT_SIDE: &str = "fd77:1::1";
    const RELAY6_PEER_SIDE: &str = "fd77:2::1";
    const PEER6: &str = "fd77:2::2";
    const LISTEN6: &str = "[fd77:1::1]:3478";

    /// Adds the IPv6 addresses (no duplicate address detection, so they
    /// are usable at once), routes and neighbour entries.
    fn topology() -> Topology {
        let topo = Topology::new().expect("topology");
        let add = |ns: &keyhole_tests_netns::Netns, dev: &str, ip: &str| {
            ns.ip([
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                dev,
                "nodad",
            ])
            .expect("ip -6 addr add");
        };
        add(&topo.client, "eth0", CLIENT6);
        add(&topo.relay, "c0", RELAY6_CLIENT_SIDE);
        add(&topo.relay, "p0", RELAY6_PEER_SIDE);
        add(&topo.peer, "eth0", PEER6);
        topo.client.default_route(RELAY6_CLIENT_SIDE).unwrap();
        topo.peer.default_route(RELAY6_PEER_SIDE).unwrap();
        for ip in [CLIENT6, PEER6] {
            topo.relay
                .ping(ip.parse().unwrap(), Duration::from_secs(5))
                .expect("ping6");
        }
        topo
    }

    fn start(topo: &Topology, mode: &str) -> keyhole_tests_netns::Proc {
        topo.start_keyhole_listening(LISTEN6, "c0,p0", mode, None, &[])
            .expect("relay")
    }

    /// A minimal TURN client that asks for an IPv6 relayed address
    /// (REQUESTED-ADDRESS-FAMILY), which the shared test client does not.
    struct Client6 {
        socket: UdpSocket,
        username: String,
        realm: String,
        nonce: String,
        key: [u8; 16],
        relayed: SocketAddr,
        counter: u64,
    }

    impl Client6 {
        fn tid(&mut self) -> TransactionId {
            self.counter += 1;
            let mut t = [0u8; 12];
            t[..4].copy_from_slice(b"kh6t");
            t[4..].copy_from_slice(&self.counter.to_be_bytes());
            TransactionId(t)
        }

        fn transact(&self, req: &[u8]) -> anyhow::Result<Vec<u8>> {
            let mut buf = vec![0u8; 2048];
            for _ in 0..5 {
                self.socket.send(req)?;
                while let Ok(n) = self.socket.recv(&mut buf) {
                    if n >= 20 && buf[0] < 4 && buf[8..20] == req[8..20] {
                        return Ok(buf[..n].to_vec());
                    }
                }
            }
            bail!("no response")
        }

        fn request(
            &mut self,
            method: Method,
            attrs: &[Attribute<'_>],
        ) -> anyhow::Result<Message<'static>> {
            let tid = self.tid();
            let mut b = MessageBuilder::new(MessageType::new(Class::Request, method), tid);
            for a in attrs {
                b.add(a)?;
            }
            if !self.realm.is_empty() {
                b.add(&Attribute::Username(&self.username))?;
                b.add(&Attribute::Realm(&self.realm))?;
                b.add(&Attribute::Nonce(&self.nonce))?;
                b.add_message_integrity(&self.key)?;
            }
            let resp: &'static [u8] = self.transact(&b.finish())?.leak();
            Ok(Message::parse(resp)?)
        }

        fn allocate(local: SocketAddr, server: SocketAddr) -> anyhow::Result<Self> {
            let socket = UdpSocket::bind(local)?;
            socket.connect(server)?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            let username = rest_username(u64::MAX / 2, "v6");
            let password = rest_password(SECRET.as_bytes(), &username);
            let mut c = Client6 {
                socket,
                username,
                realm: String::new(),
                nonce: String::new(),
                key: [0; 16],
                relayed: server,
                counter: 0,
            };
            let attrs = [
                Attribute::RequestedTransport(PROTOCOL_UDP),
                Attribute::RequestedAddressFamily(AddressFamily::V6),
            ];
            let msg = c.request(Method::ALLOCATE, &attrs)?;
            if msg.error_code().map(|e| e.0) != Some(401) {
                bail!("expected 401, got {:?}", msg.error_code());
            }
            c.realm = msg.realm().context("no REALM")?.to_string();
            c.nonce = msg.nonce().context("no NONCE")?.to_string();
            c.key = long_term_key(&c.username, &c.realm, &password);
            let msg = c.request(Method::ALLOCATE, &attrs)?;
            if msg.class() != Class::Success {
                bail!("allocate: {:?}", msg.error_code());
            }
            c.relayed = msg
                .xor_relayed_addresses()
                .next()
                .context("no XOR-RELAYED-ADDRESS")?;
            Ok(c)
        }

        fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
            let msg = self.request(
                Method::CHANNEL_BIND,
                &[
                    Attribute::ChannelNumber(channel),
                    Attribute::XorPeerAddress(peer),
                ],
            )?;
            if msg.class() != Class::Success {
                bail!("channel bind: {:?}", msg.error_code());
            }
            Ok(())
        }

        fn send(&self, data: &[u8]) -> anyhow::Result<()> {
            self.socket.send(
                &ChannelData {
                    channel: CHANNEL,
                    data,
                }
                .encode(false)?,
            )?;
            Ok(())
        }

        fn recv(&self) -> anyhow::Result<(u16, Vec<u8>)> {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = self.socket.recv(&mut buf)?;
                if let Ok(cd) = ChannelData::parse(&buf[..n]) {
                    return Ok((cd.channel, cd.data.to_vec()));
                }
            }
        }
    }

    fn exchange6(topo: &Topology) -> Exchange {
        let server: SocketAddr = LISTEN6.parse().unwrap();
        let peer_addr: SocketAddr = format!("[{PEER6}]:{PEER_PORT}").parse().unwrap();
        let mut client = topo
            .client
            .enter(|| Client6::allocate(format!("[{CLIENT6}]:0").parse().unwrap(), server))
            .expect("allocate IPv6");
        assert!(client.relayed.is_ipv6(), "{}", client.relayed);
        let peer = topo
            .peer
            .enter(|| UdpSocket::bind(peer_addr))
            .expect("peer socket");
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client
            .channel_bind(CHANNEL, peer_addr)
            .expect("channel bind");
        let before = topo.metrics().expect("metrics");
        let (mut at_peer, mut at_client) = (Vec::new(), Vec::new());
        let mut buf = vec![0u8; 65536];
        for i in 0..ROUNDS {
            client.send(&payload(i, 0)).unwrap();
            let (n, from) = peer
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("peer receives {i}: {e}: {:#?}", topo.metrics()));
            assert_eq!(from, client.relayed, "peer sees the relayed address");
            at_peer.push(buf[..n].to_vec());
            peer.send_to(&payload(i, 0xff), client.relayed).unwrap();
            let (channel, data) = client
                .recv()
                .unwrap_or_else(|e| panic!("client receives {i}: {e}: {:#?}", topo.metrics()));
            assert_eq!(channel, CHANNEL);
            at_client.push(data);
        }
        let after = topo.metrics().expect("metrics");
        Exchange {
            at_peer,
            at_client,
            before,
            after,
        }
    }

    #[test]
    fn ipv6_fast_path_carries_channel_data_and_userspace_sees_none() {
        let topo = topology();
        let relay = start(&topo, "native");
        let x = exchange6(&topo);
        let m = |name: &str| delta(&x.before, &x.after, name);
        let log = relay.output_so_far();
        assert_eq!(x.after["keyhole_relay_xdp_attached"], 1, "{log}");
        assert_eq!(x.after["keyhole_relay_xdp_channels"], 1, "{log}");
        assert_payloads(&x);
        for (dir, bytes) in [
            ("to_peer", expected_bytes(0)),
            ("to_client", expected_bytes(0xff)),
        ] {
            assert_eq!(
                m(&format!(
                    "keyhole_relay_xdp_packets_total{{direction=\"{dir}\"}}"
                )),
                ROUNDS as u64,
                "{dir}: {:#?}",
                x.after
            );
            assert_eq!(
                m(&format!(
                    "keyhole_relay_xdp_bytes_total{{direction=\"{dir}\"}}"
                )),
                bytes
            );
            assert_eq!(
                m(&format!(
                    "keyhole_relay_userspace_relayed_packets_total{{direction=\"{dir}\"}}"
                )),
                0
            );
        }
        assert_eq!(
            m("keyhole_relay_xdp_sent_total{how=\"redirect\"}"),
            2 * ROUNDS as u64
        );
        assert_eq!(
            m("keyhole_relay_userspace_datagrams_total{source=\"client_channel_data\"}"),
            0
        );
        assert_eq!(
            m("keyhole_relay_userspace_datagrams_total{source=\"peer\"}"),
            0
        );
        // The allocation's STUN went to userspace through the IPv6 parser.
        let passed = format!(
            "keyhole_relay_xdp_passed_total{{reason=\"{}\"}}",
            Counter::PassNotChannelData.name()
        );
        assert!(x.after[&passed] >= 2, "{:#?}", x.after);
    }

    #[test]
    fn ipv6_userspace_path_gives_the_same_bytes_with_xdp_off() {
        let topo = topology();
        let relay = start(&topo, "off");
        let x = exchange6(&topo);
        let m = |name: &str| delta(&x.before, &x.after, name);
        assert_eq!(
            x.after["keyhole_relay_xdp_attached"],
            0,
            "{}",
            relay.output_so_far()
        );
        assert_payloads(&x);
        for (dir, bytes) in [
            ("to_peer", expected_bytes(0)),
            ("to_client", expected_bytes(0xff)),
        ] {
            assert_eq!(
                m(&format!(
                    "keyhole_relay_userspace_relayed_packets_total{{direction=\"{dir}\"}}"
                )),
                ROUNDS as u64
            );
            assert_eq!(
                m(&format!(
                    "keyhole_relay_userspace_relayed_bytes_total{{direction=\"{dir}\"}}"
                )),
                bytes
            );
        }
    }
}
