//! The client against keyhole-stun's sans-IO TURN server, wired by a tiny
//! loop with a simulated clock (UDP datagrams, or TCP byte streams cut into
//! frames by [`StreamFramer`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keyhole_stun::auth::{rest_password, rest_username};
use keyhole_stun::server::{PortRange, Server, ServerConfig, Transmit};

use super::*;

const SECRET: &[u8] = b"relay-shared-secret";
const UNIX0: u64 = 1_800_000_000;

fn client_addr() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}
fn server_addr() -> SocketAddr {
    "203.0.113.1:3478".parse().unwrap()
}
fn peer() -> SocketAddr {
    "192.0.2.50:7000".parse().unwrap()
}

fn server_config(nonce_secret: u8) -> ServerConfig {
    let mut c = ServerConfig::new("keyhole.test", SECRET, [nonce_secret; 32]);
    c.relay_ipv4 = Some("203.0.113.1".parse().unwrap());
    c
}

fn turn_config(transport: Transport, valid: bool) -> TurnConfig {
    let username = rest_username(UNIX0 + 24 * 3600, "client-1");
    let password = if valid {
        rest_password(SECRET, &username)
    } else {
        "not-the-password".into()
    };
    let mut c = TurnConfig::new(server_addr(), username, password);
    c.transport = transport;
    c
}

struct Net {
    t0: Instant,
    now: Instant,
    server: Server<PortRange>,
    client: Client,
    transport: Transport,
    /// Everything the client sent, as the relay got it.
    to_server: Vec<Vec<u8>>,
    /// Datagrams the relay sent to peers: (relayed address, peer, payload).
    to_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Peer data the client handed out.
    received: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<TurnEvent>,
    /// Drop everything between client and relay.
    cut: bool,
    up: StreamFramer,
    down: StreamFramer,
}

impl Net {
    fn new(transport: Transport, valid: bool) -> Self {
        let t0 = Instant::now();
        let server = Server::new(server_config(1), PortRange::new(50_000..=50_100), t0, UNIX0);
        let client = Client::new(turn_config(transport, valid), t0, 7);
        let mut n = Net {
            t0,
            now: t0,
            server,
            client,
            transport,
            to_server: Vec::new(),
            to_peers: Vec::new(),
            received: Vec::new(),
            events: Vec::new(),
            cut: false,
            up: StreamFramer::new(),
            down: StreamFramer::new(),
        };
        n.pump();
        n
    }

    fn restart_server(&mut self, nonce_secret: u8) {
        let unix = UNIX0 + (self.now - self.t0).as_secs();
        self.server = Server::new(
            server_config(nonce_secret),
            PortRange::new(50_200..=50_300),
            self.now,
            unix,
        );
    }

    /// Moves messages until both sides are quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(b) = self.client.poll_transmit() {
                moved = true;
                self.to_server.push(b.clone());
                if self.cut {
                    continue;
                }
                match self.transport {
                    Transport::Udp => {
                        self.server
                            .handle_input(self.now, client_addr(), Transport::Udp, &b)
                    }
                    Transport::Tcp => {
                        self.up.push(&b).unwrap();
                        while let Some(f) = self.up.next_frame().unwrap() {
                            self.server
                                .handle_input(self.now, client_addr(), Transport::Tcp, f);
                        }
                    }
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                match t {
                    Transmit::ToClient { payload, .. } if !self.cut => match self.transport {
                        Transport::Udp => {
                            if let Some((p, d)) = self.client.handle_input(self.now, &payload) {
                                self.received.push((p, d.to_vec()));
                            }
                        }
                        Transport::Tcp => {
                            self.down.push(&payload).unwrap();
                            while let Some(f) = self.down.next_frame().unwrap() {
                                if let Some((p, d)) = self.client.handle_input(self.now, f) {
                                    self.received.push((p, d.to_vec()));
                                }
                            }
                        }
                    },
                    Transmit::ToClient { .. } => {}
                    Transmit::ToPeer {
                        relay,
                        peer,
                        payload,
                    } => self.to_peers.push((relay, peer, payload)),
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.server.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn send(&mut self, peer: SocketAddr, data: &[u8]) -> bool {
        let ok = self.client.send_to(self.now, peer, data);
        self.pump();
        ok
    }

    /// A datagram from `peer` to our relayed address.
    fn peer_sends(&mut self, peer: SocketAddr, data: &[u8]) {
        let relay = self.client.relayed().unwrap();
        self.server.handle_peer_input(self.now, relay, peer, data);
        self.pump();
    }

    fn allocated(&self) -> Vec<SocketAddr> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::Allocated { relayed, .. } => Some(*relayed),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn allocates_after_401_with_long_term_credentials() {
    let n = Net::new(Transport::Udp, true);
    // Unauthenticated Allocate, then the authenticated retry.
    assert_eq!(n.to_server.len(), 2);
    assert!(
        Message::parse(&n.to_server[0])
            .unwrap()
            .username()
            .is_none()
    );
    let second = Message::parse(&n.to_server[1]).unwrap();
    assert_eq!(second.realm(), Some("keyhole.test"));
    assert!(second.has_integrity());
    let relayed = n.client.relayed().expect("allocated");
    assert_eq!(relayed.ip().to_string(), "203.0.113.1");
    assert!((50_000..=50_100).contains(&relayed.port()));
    assert_eq!(n.client.mapped(), Some(client_addr()));
    assert_eq!(n.allocated(), vec![relayed]);
    assert_eq!(n.server.allocation_count(), 1);
}

#[test]
fn wrong_password_fails_then_retries_with_backoff() {
    let mut n = Net::new(Transport::Udp, false);
    assert_eq!(n.client.relayed(), None);
    assert_eq!(n.events, vec![TurnEvent::AllocationFailed { code: 401 }]);
    assert_eq!(n.server.allocation_count(), 0);
    let sent = n.to_server.len();
    n.advance(Duration::from_millis(900));
    assert_eq!(n.to_server.len(), sent, "waits out the backoff");
    n.advance(Duration::from_millis(200));
    assert!(n.to_server.len() > sent, "tries again after 1 s");
    // Renewed credentials from the portal fix it.
    let good = turn_config(Transport::Udp, true);
    n.client.set_credentials(good.username, good.password);
    n.advance(Duration::from_secs(5));
    assert!(n.client.relayed().is_some());
}

#[test]
fn data_goes_by_permission_then_channel_both_ways() {
    let mut n = Net::new(Transport::Udp, true);
    let relayed = n.client.relayed().unwrap();
    let before = n.to_server.len();
    assert!(n.send(peer(), b"first"));
    // CreatePermission and ChannelBind went out; the datagram waited for
    // the permission and then left as a Send indication or ChannelData.
    let methods: Vec<Method> = n.to_server[before..]
        .iter()
        .filter_map(|b| Message::parse(b).ok())
        .filter(|m| m.class() == Class::Request)
        .map(|m| m.method())
        .collect();
    assert_eq!(
        methods,
        vec![Method::CREATE_PERMISSION, Method::CHANNEL_BIND]
    );
    assert_eq!(n.to_peers, vec![(relayed, peer(), b"first".to_vec())]);
    // Now the channel is bound: ChannelData, 4 bytes of overhead.
    let ch = n.client.channel_to(peer()).expect("channel bound");
    assert_eq!(ch, 0x4000);
    assert!(n.send(peer(), b"second"));
    let last = n.to_server.last().unwrap();
    assert_eq!(&last[..4], &[0x40, 0x00, 0, 6]);
    assert_eq!(n.to_peers.last().unwrap().2, b"second");
    // And back: the relay uses the channel too.
    n.peer_sends(peer(), b"reply");
    assert_eq!(n.received, vec![(peer(), b"reply".to_vec())]);
    // A peer with only a permission (same IP, other port) arrives as a
    // Data indication.
    let other: SocketAddr = "192.0.2.50:7001".parse().unwrap();
    n.peer_sends(other, b"by-indication");
    assert_eq!(
        n.received.last().unwrap(),
        &(other, b"by-indication".to_vec())
    );
    // A peer without permission never reaches us.
    n.peer_sends("192.0.2.99:1".parse().unwrap(), b"stranger");
    assert_eq!(n.received.len(), 2);
}

#[test]
fn header_for_in_place_channel_data() {
    let n = Net::new(Transport::Udp, true);
    assert_eq!(n.client.channel_header(0x4001, 5), ([0x40, 1, 0, 5], 0));
    let t = Net::new(Transport::Tcp, true);
    assert_eq!(t.client.channel_header(0x4001, 5), ([0x40, 1, 0, 5], 3));
}

#[test]
fn refreshes_keep_allocation_permission_and_channel_alive_for_hours() {
    let mut n = Net::new(Transport::Udp, true);
    n.send(peer(), b"x");
    let relayed = n.client.relayed().unwrap();
    // Server nonces go stale after 10 min: refreshes meet 438 and retry.
    n.advance(Duration::from_secs(3 * 3600));
    assert_eq!(n.client.relayed(), Some(relayed));
    assert_eq!(n.allocated(), vec![relayed], "never re-allocated");
    assert!(
        n.to_server
            .iter()
            .filter_map(|b| Message::parse(b).ok())
            .any(|m| m.method() == Method::REFRESH)
    );
    // Channel and permission still installed on the relay: data flows
    // without any new request.
    n.peer_sends(peer(), b"still here");
    assert_eq!(n.received, vec![(peer(), b"still here".to_vec())]);
    let sent = n.to_server.len();
    assert!(n.send(peer(), b"and back"));
    assert_eq!(n.to_server.len(), sent + 1);
    assert_eq!(n.to_server.last().unwrap()[0], 0x40);
    assert_eq!(n.to_peers.last().unwrap().2, b"and back");
    assert!(
        !n.events
            .iter()
            .any(|e| matches!(e, TurnEvent::AllocationLost { .. }))
    );
}

#[test]
fn relay_restart_loses_the_allocation_and_allocates_again() {
    let mut n = Net::new(Transport::Udp, true);
    n.send(peer(), b"x");
    let first = n.client.relayed().unwrap();
    n.restart_server(2);
    // The next refresh meets an unknown nonce (438, retried) and then no
    // allocation (437): lost, and a new one after the backoff.
    n.advance(Duration::from_secs(310));
    assert!(
        n.events
            .contains(&TurnEvent::AllocationLost { relayed: first }),
        "{:?}",
        n.events
    );
    let all = n.allocated();
    assert_eq!(all.len(), 2, "{:?}", n.events);
    assert_ne!(all[1], first);
    assert_eq!(n.client.relayed(), Some(all[1]));
    assert_eq!(n.client.channel_to(peer()), None, "bindings died with it");
    // Sending again binds anew on the new allocation.
    n.send(peer(), b"again");
    assert_eq!(
        n.to_peers.last().unwrap(),
        &(all[1], peer(), b"again".to_vec())
    );
}

#[test]
fn unreachable_relay_is_detected_and_retried() {
    let mut n = Net::new(Transport::Udp, true);
    let first = n.client.relayed().unwrap();
    n.cut = true;
    // Refresh at 300 s, five transmissions over 15.5 s, then lost.
    n.advance(Duration::from_secs(300 + 20));
    assert!(
        n.events
            .contains(&TurnEvent::AllocationLost { relayed: first })
    );
    assert!(n.client.stats().retransmits >= 4);
    assert_eq!(n.client.relayed(), None);
    assert!(!n.send(peer(), b"dropped"), "no allocation, no relaying");
    // The relay comes back (its allocation expired meanwhile).
    n.cut = false;
    n.advance(Duration::from_secs(400));
    assert!(n.client.relayed().is_some());
}

#[test]
fn refused_permission_is_reported_and_queue_dropped() {
    let mut n = Net::new(Transport::Udp, true);
    let looped: SocketAddr = "127.0.0.1:9".parse().unwrap();
    n.send(looped, b"a");
    n.send(looped, b"b");
    assert!(n.events.contains(&TurnEvent::PermissionRefused {
        peer: looped.ip(),
        code: 403
    }));
    assert!(n.to_peers.is_empty());
    assert!(!n.send(looped, b"c"));
    assert!(n.client.stats().send_dropped >= 2);
}

#[test]
fn unsigned_or_unknown_responses_are_ignored() {
    let mut n = Net::new(Transport::Udp, true);
    let relayed = n.client.relayed().unwrap();
    // A forged 437 for a transaction we never sent, and one unsigned.
    let mut b = MessageBuilder::new(
        MessageType::new(Class::Error, Method::REFRESH),
        TransactionId([1; 12]),
    );
    b.add(&Attribute::ErrorCode {
        code: 437,
        reason: "x",
    })
    .unwrap();
    let forged = b.finish();
    let ignored = n.client.stats().ignored;
    assert_eq!(n.client.handle_input(n.now, &forged), None);
    assert_eq!(n.client.handle_input(n.now, b"\x40\x00\x00\x09short"), None);
    assert_eq!(n.client.handle_input(n.now, &[0xFF; 30]), None);
    assert_eq!(n.client.stats().ignored, ignored + 3);
    assert_eq!(n.client.relayed(), Some(relayed));
}

#[test]
fn works_over_tcp_with_padded_frames() {
    let mut n = Net::new(Transport::Tcp, true);
    let relayed = n.client.relayed().expect("allocated over TCP");
    n.send(peer(), b"hello");
    n.send(peer(), b"over-tcp!");
    assert_eq!(
        n.to_peers
            .iter()
            .map(|(r, _, d)| (*r, d.clone()))
            .collect::<Vec<_>>(),
        vec![
            (relayed, b"hello".to_vec()),
            (relayed, b"over-tcp!".to_vec())
        ]
    );
    let last = n.to_server.last().unwrap();
    assert_eq!(last.len() % 4, 0, "ChannelData padded over TCP");
    n.peer_sends(peer(), b"odd");
    assert_eq!(n.received, vec![(peer(), b"odd".to_vec())]);
    // Nothing is retransmitted over TCP.
    n.advance(Duration::from_secs(3600));
    assert_eq!(n.client.stats().retransmits, 0);
    assert_eq!(n.client.relayed(), Some(relayed));
}
