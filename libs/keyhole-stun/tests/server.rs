//! TURN server state machine, driven with a simulated clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keyhole_stun::auth::{long_term_key, rest_password, rest_username};
use keyhole_stun::server::{
    DeleteReason, Event, PortRange, Server, ServerConfig, Transmit, Transport,
};
use keyhole_stun::{
    AddressFamily, Attribute, ChannelData, Class, Message, MessageBuilder, MessageType, Method,
    TransactionId, types,
};

const SECRET: &str = "shared-secret";
const REALM: &str = "keyhole.test";
const UNIX0: u64 = 1_800_000_000;
const RELAY4: &str = "203.0.113.1";
const RELAY6: &str = "2001:db8::1";

fn client() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}
fn peer() -> SocketAddr {
    "192.0.2.50:7000".parse().unwrap()
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::new(REALM, SECRET, [9; 32]);
    c.relay_ipv4 = Some(RELAY4.parse().unwrap());
    c.relay_ipv6 = Some(RELAY6.parse().unwrap());
    c
}

struct Creds {
    username: String,
    password: String,
    realm: String,
}

impl Creds {
    fn valid_for(user: &str, secs: u64) -> Self {
        let username = rest_username(UNIX0 + secs, user);
        Creds {
            password: rest_password(SECRET.as_bytes(), &username),
            username,
            realm: REALM.into(),
        }
    }
    fn key(&self) -> [u8; 16] {
        long_term_key(&self.username, &self.realm, &self.password)
    }
}

/// The parts of a response a test looks at.
#[derive(Debug)]
struct Resp {
    bytes: Vec<u8>,
}

impl Resp {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).unwrap()
    }
    fn class(&self) -> Class {
        self.msg().class()
    }
    fn code(&self) -> Option<u16> {
        self.msg().error_code().map(|(c, _)| c)
    }
    fn nonce(&self) -> String {
        self.msg().nonce().expect("nonce").to_string()
    }
}

struct Harness {
    server: Server<PortRange>,
    t0: Instant,
    now: Instant,
    tid: u64,
    nonce: Option<String>,
    /// Retry once with the fresh nonce on 438, as real clients do.
    renew_stale_nonce: bool,
}

impl Harness {
    fn new() -> Self {
        Self::with(config(), 49152..=49160)
    }
    fn with(config: ServerConfig, ports: std::ops::RangeInclusive<u16>) -> Self {
        let t0 = Instant::now();
        Harness {
            server: Server::new(config, PortRange::new(ports), t0, UNIX0),
            t0,
            now: t0,
            tid: 0,
            nonce: None,
            renew_stale_nonce: true,
        }
    }

    fn at(&mut self, secs: u64) {
        self.now = self.t0 + Duration::from_secs(secs);
        while let Some(t) = self.server.poll_timeout() {
            if t > self.now {
                break;
            }
            self.server.handle_timeout(t.max(self.t0));
            if self.server.poll_timeout() == Some(t) {
                break;
            }
        }
        self.server.handle_timeout(self.now);
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId(t)
    }

    fn build(
        &mut self,
        class: Class,
        method: Method,
        attrs: &[Attribute<'_>],
        creds: Option<&Creds>,
        tid: TransactionId,
    ) -> Vec<u8> {
        let mut b = MessageBuilder::new(MessageType::new(class, method), tid);
        for a in attrs {
            b.add(a).unwrap();
        }
        if let Some(c) = creds {
            b.add(&Attribute::Username(&c.username)).unwrap();
            b.add(&Attribute::Realm(&c.realm)).unwrap();
            b.add(&Attribute::Nonce(self.nonce.as_deref().unwrap_or("none")))
                .unwrap();
            b.add_message_integrity(&c.key()).unwrap();
        }
        b.add_fingerprint().unwrap();
        b.finish()
    }

    fn input(&mut self, from: SocketAddr, transport: Transport, bytes: &[u8]) -> Vec<Transmit> {
        self.server.handle_input(self.now, from, transport, bytes);
        std::iter::from_fn(|| self.server.poll_transmit()).collect()
    }

    fn only_response(out: Vec<Transmit>) -> Resp {
        assert_eq!(out.len(), 1, "expected exactly one transmit: {out:?}");
        match out.into_iter().next().unwrap() {
            Transmit::ToClient { payload, .. } => Resp { bytes: payload },
            t => panic!("expected a response, got {t:?}"),
        }
    }

    /// Sends a request (authenticating first if no nonce yet) and returns the response.
    fn request_from(
        &mut self,
        from: SocketAddr,
        transport: Transport,
        method: Method,
        attrs: &[Attribute<'_>],
        creds: Option<&Creds>,
    ) -> Resp {
        if creds.is_some() && self.nonce.is_none() {
            let tid = self.next_tid();
            let bytes = self.build(Class::Request, method, attrs, None, tid);
            let r = Self::only_response(self.input(from, transport, &bytes));
            assert_eq!(r.code(), Some(401));
            self.nonce = Some(r.nonce());
        }
        let tid = self.next_tid();
        let bytes = self.build(Class::Request, method, attrs, creds, tid);
        let r = Self::only_response(self.input(from, transport, &bytes));
        assert_eq!(r.msg().transaction_id(), tid);
        if creds.is_some() && self.renew_stale_nonce && r.code() == Some(438) {
            self.nonce = Some(r.nonce());
            let tid = self.next_tid();
            let bytes = self.build(Class::Request, method, attrs, creds, tid);
            return Self::only_response(self.input(from, transport, &bytes));
        }
        r
    }

    fn request(&mut self, method: Method, attrs: &[Attribute<'_>], creds: &Creds) -> Resp {
        self.request_from(client(), Transport::Udp, method, attrs, Some(creds))
    }

    fn allocate(&mut self, creds: &Creds) -> SocketAddr {
        let r = self.request(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(17)],
            creds,
        );
        assert_eq!(r.class(), Class::Success, "{:?}", r.code());
        r.msg().xor_relayed_addresses().next().unwrap()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn peer_input(&mut self, relay: SocketAddr, from: SocketAddr, data: &[u8]) -> Vec<Transmit> {
        self.server.handle_peer_input(self.now, relay, from, data);
        std::iter::from_fn(|| self.server.poll_transmit()).collect()
    }

    fn send_indication(&mut self, to: SocketAddr, data: &[u8]) -> Vec<Transmit> {
        let tid = self.next_tid();
        let bytes = self.build(
            Class::Indication,
            Method::SEND,
            &[Attribute::XorPeerAddress(to), Attribute::Data(data)],
            None,
            tid,
        );
        self.input(client(), Transport::Udp, &bytes)
    }

    fn channel_data(&mut self, channel: u16, data: &[u8]) -> Vec<Transmit> {
        let bytes = ChannelData { channel, data }.encode(false).unwrap();
        self.input(client(), Transport::Udp, &bytes)
    }
}

fn to_peer(out: &[Transmit]) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
    match out {
        [
            Transmit::ToPeer {
                relay,
                peer,
                payload,
            },
        ] => Some((*relay, *peer, payload.clone())),
        _ => None,
    }
}

fn to_client(out: &[Transmit]) -> Option<Vec<u8>> {
    match out {
        [Transmit::ToClient { payload, .. }] => Some(payload.clone()),
        _ => None,
    }
}

#[test]
fn binding_answers_with_xor_mapped_address() {
    let mut h = Harness::new();
    for from in [client(), "[2001:db8::77]:5555".parse().unwrap()] {
        let r = h.request_from(from, Transport::Udp, Method::BINDING, &[], None);
        assert_eq!(r.class(), Class::Success);
        assert_eq!(r.msg().xor_mapped_address(), Some(from));
        assert!(r.msg().has_fingerprint(), "fingerprint mirrors the request");
        assert!(!r.msg().has_integrity());
    }
}

#[test]
fn allocate_without_credentials_gets_401_with_realm_and_nonce() {
    let mut h = Harness::new();
    let r = h.request_from(
        client(),
        Transport::Udp,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        None,
    );
    assert_eq!(r.code(), Some(401));
    assert_eq!(r.msg().realm(), Some(REALM));
    assert!(!r.nonce().is_empty());
    assert!(!r.msg().has_integrity());
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn allocate_succeeds_with_signed_response_and_event() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    let r = h.request(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        &creds,
    );
    let msg = r.msg();
    assert_eq!(msg.class(), Class::Success);
    let relay = msg.xor_relayed_addresses().next().unwrap();
    assert_eq!(relay.ip().to_string(), RELAY4);
    assert!((49152..=49160).contains(&relay.port()));
    assert_eq!(msg.lifetime(), Some(600));
    assert_eq!(msg.xor_mapped_address(), Some(client()));
    assert!(msg.verify_integrity(&creds.key()).is_ok());
    assert_eq!(
        h.events(),
        vec![Event::AllocationCreated {
            client: client(),
            transport: Transport::Udp,
            relays: vec![relay],
            username: creds.username.clone(),
        }]
    );
}

#[test]
fn wrong_password_expired_username_and_wrong_realm_get_401() {
    let mut h = Harness::new();
    let mut bad = Creds::valid_for("alice", 3600);
    bad.password = rest_password(b"other-secret", &bad.username);
    assert_eq!(
        h.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], &bad)
            .code(),
        Some(401)
    );

    let expired = Creds::valid_for("alice", 0);
    assert_eq!(
        h.request(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(17)],
            &expired
        )
        .code(),
        Some(401)
    );

    // Valid at t=0 for 100 s, refused once the clock passes its expiry.
    let short = Creds::valid_for("alice", 100);
    h.at(101);
    let r = h.request(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        &short,
    );
    assert_eq!(r.code(), Some(401));
    assert_eq!(
        r.msg().realm(),
        Some(REALM),
        "401 offers realm and a fresh nonce"
    );

    let mut realm = Creds::valid_for("alice", 3600);
    realm.realm = "other.realm".into();
    assert_eq!(
        h.request(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(17)],
            &realm
        )
        .code(),
        Some(401)
    );

    let mut no_user = Creds::valid_for("alice", 3600);
    no_user.username = "alice".into();
    no_user.password = rest_password(SECRET.as_bytes(), "alice");
    assert_eq!(
        h.request(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(17)],
            &no_user
        )
        .code(),
        Some(401)
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn stale_nonce_gets_438_and_a_fresh_nonce_works() {
    let mut h = Harness::new();
    h.renew_stale_nonce = false;
    let creds = Creds::valid_for("alice", 7200);
    let r = h.request(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17), Attribute::Lifetime(3600)],
        &creds,
    );
    assert_eq!(r.msg().lifetime(), Some(3600));
    h.at(601);
    let r = h.request(Method::REFRESH, &[], &creds);
    assert_eq!(r.code(), Some(438));
    let fresh = r.nonce();
    assert_ne!(Some(fresh.clone()), h.nonce);
    h.nonce = Some(fresh);
    assert_eq!(
        h.request(Method::REFRESH, &[], &creds).class(),
        Class::Success
    );

    h.nonce = Some("khn1forged".into());
    assert_eq!(h.request(Method::REFRESH, &[], &creds).code(), Some(438));
}

#[test]
fn retransmitted_allocate_gets_the_same_response_and_a_new_one_gets_437() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    h.request(Method::ALLOCATE, &[], &creds); // 400, gets the nonce
    let tid = h.next_tid();
    let req = h.build(
        Class::Request,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        Some(&creds),
        tid,
    );
    let first = to_client(&h.input(client(), Transport::Udp, &req)).unwrap();
    let again = to_client(&h.input(client(), Transport::Udp, &req)).unwrap();
    assert_eq!(first, again);
    assert_eq!(h.server.allocation_count(), 1);
    let r = h.request(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        &creds,
    );
    assert_eq!(r.code(), Some(437));
    assert!(
        r.msg().verify_integrity(&creds.key()).is_ok(),
        "authenticated errors are signed"
    );
}

#[test]
fn allocate_transport_errors() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    assert_eq!(h.request(Method::ALLOCATE, &[], &creds).code(), Some(400));
    assert_eq!(
        h.request(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(6)],
            &creds
        )
        .code(),
        Some(442)
    );
    let r = h.request(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::Other {
                typ: 0x7ff0,
                value: b"??",
            },
        ],
        &creds,
    );
    assert_eq!(r.code(), Some(420));
    assert_eq!(
        r.msg().get(types::UNKNOWN_ATTRIBUTES).map(|a| match a {
            Attribute::UnknownAttributes(l) => l.iter().collect::<Vec<_>>(),
            _ => vec![],
        }),
        Some(vec![0x7ff0])
    );
    assert_eq!(
        h.request(
            Method::ALLOCATE,
            &[
                Attribute::RequestedTransport(17),
                Attribute::ReservationToken([1; 8])
            ],
            &creds
        )
        .code(),
        Some(508)
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn refresh_and_permission_without_allocation_get_437() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    assert_eq!(h.request(Method::REFRESH, &[], &creds).code(), Some(437));
    assert_eq!(
        h.request(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(peer())],
            &creds
        )
        .code(),
        Some(437)
    );
    assert_eq!(
        h.request(
            Method::CHANNEL_BIND,
            &[
                Attribute::ChannelNumber(0x4000),
                Attribute::XorPeerAddress(peer())
            ],
            &creds
        )
        .code(),
        Some(437)
    );
}

#[test]
fn other_users_credentials_on_an_allocation_get_441() {
    let mut h = Harness::new();
    h.allocate(&Creds::valid_for("alice", 3600));
    let bob = Creds::valid_for("bob", 3600);
    assert_eq!(h.request(Method::REFRESH, &[], &bob).code(), Some(441));
    assert_eq!(
        h.request(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(peer())],
            &bob
        )
        .code(),
        Some(441)
    );
}

#[test]
fn per_user_quota_gives_486_and_port_exhaustion_508() {
    let mut cfg = config();
    cfg.user_quota = 1;
    let mut h = Harness::with(cfg, 50000..=50001);
    let alice = Creds::valid_for("alice", 3600);
    h.allocate(&alice);
    let second: SocketAddr = "198.51.100.7:40001".parse().unwrap();
    let r = h.request_from(
        second,
        Transport::Udp,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        Some(&alice),
    );
    assert_eq!(r.code(), Some(486));
    let bob = Creds::valid_for("bob", 3600);
    let r = h.request_from(
        second,
        Transport::Udp,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        Some(&bob),
    );
    assert_eq!(r.class(), Class::Success);
    let carol = Creds::valid_for("carol", 3600);
    let third: SocketAddr = "198.51.100.7:40002".parse().unwrap();
    let r = h.request_from(
        third,
        Transport::Udp,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        Some(&carol),
    );
    assert_eq!(r.code(), Some(508));
}

#[test]
fn refresh_extends_and_lifetime_zero_deletes() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 7200);
    let relay = h.allocate(&creds);
    h.events();
    h.at(500);
    let r = h.request(Method::REFRESH, &[Attribute::Lifetime(600)], &creds);
    assert_eq!(r.msg().lifetime(), Some(600));
    h.at(1000);
    assert_eq!(
        h.server.allocation_count(),
        1,
        "refreshed at 500 s for 600 s"
    );
    let r = h.request(Method::REFRESH, &[Attribute::Lifetime(99999)], &creds);
    assert_eq!(r.msg().lifetime(), Some(3600), "capped at the maximum");
    let r = h.request(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.msg().lifetime(), Some(0));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(
        h.server.ports().in_use(AddressFamily::V4),
        0,
        "port released"
    );
    assert_eq!(
        h.events(),
        vec![Event::AllocationDeleted {
            client: client(),
            transport: Transport::Udp,
            relays: vec![relay],
            reason: DeleteReason::Released,
        }]
    );
    assert_eq!(h.request(Method::REFRESH, &[], &creds).code(), Some(437));
}

#[test]
fn allocation_expires_after_its_lifetime() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 7200);
    h.allocate(&creds);
    h.events();
    // The rate limiter's sweep may come first; the expiry is never later.
    assert!(h.server.poll_timeout().unwrap() <= h.t0 + Duration::from_secs(600));
    h.at(100);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.t0 + Duration::from_secs(600)),
        "only the allocation is left to time out"
    );
    h.at(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.at(600);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(matches!(
        h.events().as_slice(),
        [Event::AllocationDeleted {
            reason: DeleteReason::Expired,
            ..
        }]
    ));
}

#[test]
fn permission_gates_send_and_data_and_expires_after_300_s() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 7200);
    let relay = h.allocate(&creds);
    // No permission yet: both directions dropped.
    assert!(h.send_indication(peer(), b"hello").is_empty());
    assert!(h.peer_input(relay, peer(), b"back").is_empty());

    let r = h.request(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer())],
        &creds,
    );
    assert_eq!(r.class(), Class::Success);
    assert!(h.events().contains(&Event::PermissionCreated {
        client: client(),
        transport: Transport::Udp,
        peer: peer().ip(),
    }));
    assert_eq!(
        to_peer(&h.send_indication(peer(), b"hello")),
        Some((relay, peer(), b"hello".to_vec()))
    );

    // Any port of the permitted IP may answer; it arrives as a Data indication.
    let other_port: SocketAddr = "192.0.2.50:9999".parse().unwrap();
    let ind = to_client(&h.peer_input(relay, other_port, b"back")).unwrap();
    let msg = Message::parse(&ind).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, Method::DATA)
    );
    assert_eq!(msg.xor_peer_addresses().next(), Some(other_port));
    assert_eq!(msg.data(), Some(&b"back"[..]));

    h.at(299);
    assert!(to_peer(&h.send_indication(peer(), b"x")).is_some());
    h.at(300);
    assert!(h.send_indication(peer(), b"x").is_empty());
    assert!(h.peer_input(relay, peer(), b"x").is_empty());
    assert!(h.events().contains(&Event::PermissionExpired {
        client: client(),
        transport: Transport::Udp,
        peer: peer().ip(),
    }));
}

#[test]
fn channel_bind_carries_data_both_ways_and_expires_after_600_s() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 7200);
    let relay = h.allocate(&creds);
    h.request(Method::REFRESH, &[Attribute::Lifetime(3600)], &creds);
    h.events();
    let bind = [
        Attribute::ChannelNumber(0x4001),
        Attribute::XorPeerAddress(peer()),
    ];
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind, &creds).class(),
        Class::Success
    );
    let ev = h.events();
    assert!(ev.contains(&Event::ChannelBound {
        client: client(),
        transport: Transport::Udp,
        relay,
        peer: peer(),
        channel: 0x4001,
    }));
    assert_eq!(
        to_peer(&h.channel_data(0x4001, b"ping")),
        Some((relay, peer(), b"ping".to_vec()))
    );
    let back = to_client(&h.peer_input(relay, peer(), b"pong")).unwrap();
    assert_eq!(
        ChannelData::parse(&back).unwrap(),
        ChannelData {
            channel: 0x4001,
            data: b"pong"
        }
    );
    // Unbound channel numbers are dropped.
    assert!(h.channel_data(0x4002, b"ping").is_empty());

    // The bind installed a 300 s permission; the channel itself lives 600 s.
    h.at(300);
    assert!(
        h.channel_data(0x4001, b"ping").is_empty(),
        "permission expired"
    );
    h.at(450);
    h.request(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer())],
        &creds,
    );
    assert!(to_peer(&h.channel_data(0x4001, b"ping")).is_some());
    h.events();
    h.at(600);
    assert!(
        h.channel_data(0x4001, b"ping").is_empty(),
        "channel expired"
    );
    assert!(h.events().contains(&Event::ChannelUnbound {
        client: client(),
        transport: Transport::Udp,
        relay,
        peer: peer(),
        channel: 0x4001,
    }));
    // Peer traffic falls back to Data indications while the permission lasts.
    let ind = to_client(&h.peer_input(relay, peer(), b"pong")).unwrap();
    assert_eq!(Message::parse(&ind).unwrap().method(), Method::DATA);
}

#[test]
fn channel_bind_uniqueness_rules_and_cooldown() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 7200);
    h.allocate(&creds);
    let other: SocketAddr = "192.0.2.51:7000".parse().unwrap();
    let bind =
        |ch: u16, p: SocketAddr| [Attribute::ChannelNumber(ch), Attribute::XorPeerAddress(p)];
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x4000, peer()), &creds)
            .class(),
        Class::Success
    );
    h.events();
    // Rebinding the same pair refreshes without a new event.
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x4000, peer()), &creds)
            .class(),
        Class::Success
    );
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::ChannelBound { .. }))
    );
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x4000, other), &creds)
            .code(),
        Some(400)
    );
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x4001, peer()), &creds)
            .code(),
        Some(400)
    );
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x3FFF, other), &creds)
            .code(),
        Some(400)
    );
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x8000, other), &creds)
            .code(),
        Some(400)
    );
    assert_eq!(
        h.request(
            Method::CHANNEL_BIND,
            &[Attribute::ChannelNumber(0x4005)],
            &creds
        )
        .code(),
        Some(400)
    );
    // Keep the allocation alive across the cooldown.
    h.request(Method::REFRESH, &[Attribute::Lifetime(3600)], &creds);
    h.at(700);
    // Expired at 600 s but cooling down until 900 s.
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x4000, other), &creds)
            .code(),
        Some(400)
    );
    h.at(901);
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind(0x4000, other), &creds)
            .class(),
        Class::Success
    );
}

#[test]
fn forbidden_peers_get_403_unless_allowed() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    h.allocate(&creds);
    for p in ["127.0.0.1:9", "0.0.0.0:9", "224.0.0.1:9", "203.0.113.1:9"] {
        let r = h.request(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(p.parse().unwrap())],
            &creds,
        );
        assert_eq!(r.code(), Some(403), "{p}");
    }
    // All or nothing: a good peer next to a bad one installs nothing.
    let r = h.request(
        Method::CREATE_PERMISSION,
        &[
            Attribute::XorPeerAddress(peer()),
            Attribute::XorPeerAddress("127.0.0.1:9".parse().unwrap()),
        ],
        &creds,
    );
    assert_eq!(r.code(), Some(403));
    assert!(h.send_indication(peer(), b"x").is_empty());

    let mut cfg = config();
    cfg.allow_loopback_peers = true;
    let mut h = Harness::with(cfg, 49152..=49160);
    h.allocate(&creds);
    let r = h.request(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress("127.0.0.1:9".parse().unwrap())],
        &creds,
    );
    assert_eq!(r.class(), Class::Success);
}

#[test]
fn address_families() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    h.allocate(&creds);
    let v6peer: SocketAddr = "[2001:db8:5::1]:7000".parse().unwrap();
    assert_eq!(
        h.request(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(v6peer)],
            &creds
        )
        .code(),
        Some(443)
    );

    // IPv6 allocation on request.
    let c2: SocketAddr = "198.51.100.7:40001".parse().unwrap();
    let r = h.request_from(
        c2,
        Transport::Udp,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
        ],
        Some(&creds),
    );
    let relays: Vec<_> = r.msg().xor_relayed_addresses().collect();
    assert_eq!(relays.len(), 1);
    assert_eq!(relays[0].ip().to_string(), RELAY6);

    // Dual stack with ADDITIONAL-ADDRESS-FAMILY.
    let c3: SocketAddr = "198.51.100.7:40002".parse().unwrap();
    let r = h.request_from(
        c3,
        Transport::Udp,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        Some(&creds),
    );
    let relays: Vec<_> = r.msg().xor_relayed_addresses().collect();
    assert_eq!(relays.len(), 2);
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());

    // Both family attributes at once is a bad request.
    let c4: SocketAddr = "198.51.100.7:40003".parse().unwrap();
    let r = h.request_from(
        c4,
        Transport::Udp,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::RequestedAddressFamily(AddressFamily::V4),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        Some(&creds),
    );
    assert_eq!(r.code(), Some(400));

    // No IPv6 relay address configured: 440.
    let mut cfg = config();
    cfg.relay_ipv6 = None;
    let mut h = Harness::with(cfg, 49152..=49160);
    let r = h.request(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
        ],
        &creds,
    );
    assert_eq!(r.code(), Some(440));
}

#[test]
fn unauthenticated_floods_are_rate_limited_per_source() {
    let mut cfg = config();
    cfg.rate_limit.burst = 5;
    cfg.rate_limit.per_second = 1.0;
    let mut h = Harness::with(cfg, 49152..=49160);
    let tid = h.next_tid();
    let req = h.build(
        Class::Request,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        None,
        tid,
    );
    let answered: usize = (0..100)
        .map(|_| h.input(client(), Transport::Udp, &req).len())
        .sum();
    assert_eq!(answered, 5);
    let binding = h.build(Class::Request, Method::BINDING, &[], None, tid);
    assert!(
        h.input(client(), Transport::Udp, &binding).is_empty(),
        "bindings share the bucket"
    );
    let other: SocketAddr = "198.51.100.8:40000".parse().unwrap();
    assert_eq!(
        h.input(other, Transport::Udp, &req).len(),
        1,
        "other sources unaffected"
    );
    h.at(2);
    let answered: usize = (0..10)
        .map(|_| h.input(client(), Transport::Udp, &req).len())
        .sum();
    assert_eq!(answered, 2, "refilled at 1 token per second");
}

#[test]
fn malformed_requests_get_400_and_garbage_is_dropped() {
    let mut h = Harness::new();
    let tid = h.next_tid();
    let mut req = h.build(
        Class::Request,
        Method::ALLOCATE,
        &[Attribute::Lifetime(5)],
        None,
        tid,
    );
    // Break the LIFETIME attribute's length (4 → 3) but keep the framing valid.
    req[23] = 3;
    let r = Harness::only_response(h.input(client(), Transport::Udp, &req));
    assert_eq!(r.code(), Some(400));
    assert_eq!(r.msg().transaction_id(), tid);
    assert!(
        h.input(client(), Transport::Udp, b"\x17\x03\x03garbage")
            .is_empty()
    );
    assert!(
        h.input(client(), Transport::Udp, &[0x40, 0x00, 0xff, 0xff, 1])
            .is_empty()
    );
    assert!(h.input(client(), Transport::Udp, &[]).is_empty());
    // Unknown methods get 400.
    let tid = h.next_tid();
    let req = h.build(Class::Request, Method::new(0x0ab), &[], None, tid);
    assert_eq!(
        Harness::only_response(h.input(client(), Transport::Udp, &req)).code(),
        Some(400)
    );
}

#[test]
fn sha256_integrity_is_accepted_and_mirrored() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    h.request(Method::ALLOCATE, &[], &creds); // learn a nonce
    let tid = h.next_tid();
    let mut b = MessageBuilder::new(MessageType::new(Class::Request, Method::ALLOCATE), tid);
    b.add(&Attribute::RequestedTransport(17)).unwrap();
    b.add(&Attribute::Username(&creds.username)).unwrap();
    b.add(&Attribute::Realm(REALM)).unwrap();
    b.add(&Attribute::Nonce(h.nonce.as_deref().unwrap()))
        .unwrap();
    b.add_message_integrity_sha256(&creds.key()).unwrap();
    let r = Harness::only_response(h.input(client(), Transport::Udp, &b.finish()));
    assert_eq!(r.class(), Class::Success);
    assert!(r.msg().get(types::MESSAGE_INTEGRITY_SHA256).is_some());
    assert_eq!(
        r.msg().verify_integrity(&creds.key()),
        Ok(keyhole_stun::IntegrityKind::Sha256)
    );
}

#[test]
fn tcp_channel_data_is_padded_and_close_deletes_the_allocation() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    let r = h.request_from(
        client(),
        Transport::Tcp,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        Some(&creds),
    );
    let relay = r.msg().xor_relayed_addresses().next().unwrap();
    let bind = [
        Attribute::ChannelNumber(0x4000),
        Attribute::XorPeerAddress(peer()),
    ];
    let r = h.request_from(
        client(),
        Transport::Tcp,
        Method::CHANNEL_BIND,
        &bind,
        Some(&creds),
    );
    assert_eq!(r.class(), Class::Success);
    let out = h.peer_input(relay, peer(), b"abcde");
    let frame = to_client(&out).unwrap();
    assert_eq!(frame.len(), 12, "4 header + 5 data padded to 12");
    assert_eq!(keyhole_stun::frame_len(&frame), Ok(Some(12)));
    // The UDP 5-tuple from the same address is a different allocation.
    assert!(h.channel_data(0x4000, b"x").is_empty());
    h.events();
    h.server.handle_connection_closed(client());
    assert_eq!(h.server.allocation_count(), 0);
    assert!(matches!(
        h.events().as_slice(),
        [Event::AllocationDeleted {
            reason: DeleteReason::ConnectionClosed,
            ..
        }]
    ));
}

#[test]
fn legacy_channel_numbers_are_configurable() {
    let creds = Creds::valid_for("alice", 3600);
    let bind = [
        Attribute::ChannelNumber(0x55a4),
        Attribute::XorPeerAddress(peer()),
    ];
    let mut h = Harness::new();
    h.allocate(&creds);
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind, &creds).class(),
        Class::Success
    );
    assert!(to_peer(&h.channel_data(0x55a4, b"x")).is_some());

    let mut cfg = config();
    cfg.legacy_channel_numbers = false;
    let mut h = Harness::with(cfg, 49152..=49160);
    h.allocate(&creds);
    assert_eq!(
        h.request(Method::CHANNEL_BIND, &bind, &creds).code(),
        Some(400)
    );
}

#[test]
fn even_port_reservation_token_gives_the_next_port() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    let r = h.request(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17), Attribute::EvenPort(true)],
        &creds,
    );
    assert_eq!(r.class(), Class::Success);
    let rtp = r.msg().xor_relayed_addresses().next().unwrap();
    assert_eq!(rtp.port() % 2, 0);
    let token = match r.msg().get(types::RESERVATION_TOKEN) {
        Some(Attribute::ReservationToken(t)) => *t,
        other => panic!("no token: {other:?}"),
    };
    assert_eq!(
        h.server.ports().in_use(AddressFamily::V4),
        2,
        "next port held"
    );

    let c2: SocketAddr = "198.51.100.7:40001".parse().unwrap();
    let with_token = [
        Attribute::RequestedTransport(17),
        Attribute::ReservationToken(token),
    ];
    let r = h.request_from(
        c2,
        Transport::Udp,
        Method::ALLOCATE,
        &with_token,
        Some(&creds),
    );
    assert_eq!(r.class(), Class::Success);
    assert_eq!(
        r.msg().xor_relayed_addresses().next().unwrap().port(),
        rtp.port() + 1
    );
    // A token is good once.
    let c3: SocketAddr = "198.51.100.7:40002".parse().unwrap();
    let r = h.request_from(
        c3,
        Transport::Udp,
        Method::ALLOCATE,
        &with_token,
        Some(&creds),
    );
    assert_eq!(r.code(), Some(508));
    // Token together with EVEN-PORT is a bad request.
    let r = h.request_from(
        c3,
        Transport::Udp,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
            Attribute::EvenPort(false),
        ],
        Some(&creds),
    );
    assert_eq!(r.code(), Some(400));
}

#[test]
fn unused_reservations_expire_and_free_their_port() {
    let mut h = Harness::new();
    let creds = Creds::valid_for("alice", 3600);
    let r = h.request(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17), Attribute::EvenPort(true)],
        &creds,
    );
    let token = match r.msg().get(types::RESERVATION_TOKEN) {
        Some(Attribute::ReservationToken(t)) => *t,
        other => panic!("no token: {other:?}"),
    };
    h.at(30);
    assert_eq!(h.server.ports().in_use(AddressFamily::V4), 1);
    let c2: SocketAddr = "198.51.100.7:40001".parse().unwrap();
    let r = h.request_from(
        c2,
        Transport::Udp,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        Some(&creds),
    );
    assert_eq!(r.code(), Some(508));
}

#[test]
fn rate_limit_state_is_swept_on_a_timer() {
    let mut h = Harness::new();
    assert_eq!(h.server.poll_timeout(), None);
    h.request_from(client(), Transport::Udp, Method::BINDING, &[], None);
    let t = h.server.poll_timeout().expect("a sweep is scheduled");
    assert!(t > h.now && t <= h.now + Duration::from_secs(60));
    h.at(120);
    assert_eq!(h.server.poll_timeout(), None, "nothing left to sweep");
}
