//! Drives the sans-IO TURN server with a fuzzer-chosen sequence of raw
//! datagrams, signed requests (so the fuzzer gets past authentication),
//! peer datagrams, clock jumps and TCP closes. Nothing may panic, and
//! everything the server sends to a client must be well-formed.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keyhole_stun::auth::{long_term_key, rest_password, rest_username};
use keyhole_stun::server::{Event, PortRange, Server, ServerConfig, Transmit, Transport};
use keyhole_stun::{
    AddressFamily, Attribute, ChannelData, Class, Message, MessageBuilder, MessageType, Method,
    PacketKind, TransactionId, classify,
};
use libfuzzer_sys::fuzz_target;

const UNIX0: u64 = 1_800_000_000;
const SECRET: &[u8] = b"fuzz-secret";
const REALM: &str = "fuzz.test";

const CLIENTS: [&str; 4] = [
    "198.51.100.1:1000",
    "198.51.100.1:1001",
    "[2001:db8::1]:1000",
    "198.51.100.2:1000",
];
const PEERS: [&str; 6] = [
    "192.0.2.1:7000",
    "192.0.2.1:7001",
    "192.0.2.2:7000",
    "[2001:db8:1::1]:7000",
    "127.0.0.1:7000",
    "203.0.113.1:7000",
];

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (c, rest) = self.0.split_at(n);
        self.0 = rest;
        c
    }
}

fn check_transmit(t: &Transmit) {
    if let Transmit::ToClient { payload, transport, .. } = t {
        match classify(payload) {
            PacketKind::Stun => {
                Message::parse(payload).expect("server sent an unparsable message");
            }
            PacketKind::ChannelData => {
                let cd = ChannelData::parse(payload).expect("server sent bad ChannelData");
                if *transport == Transport::Tcp {
                    assert_eq!(payload.len() % 4, 0);
                }
                let _ = cd;
            }
            PacketKind::Other => panic!("server sent something that is neither STUN nor ChannelData"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut config = ServerConfig::new(REALM, SECRET, [3; 32]);
    config.relay_ipv4 = Some("203.0.113.1".parse().unwrap());
    config.relay_ipv6 = Some("2001:db8::100".parse().unwrap());
    config.user_quota = 2;
    config.total_quota = 3;
    config.rate_limit.burst = 1000;
    let t0 = Instant::now();
    let mut now = t0;
    let mut server = Server::new(config, PortRange::new(50000..=50003), now, UNIX0);
    let username = rest_username(UNIX0 + 5000, "fuzz");
    let key = long_term_key(&username, REALM, &rest_password(SECRET, &username));
    let mut relays: Vec<SocketAddr> = Vec::new();
    let mut channels: Vec<u16> = Vec::new();
    let mut nonce = String::new();
    let mut tid = 0u64;

    while let Some(op) = input.byte() {
        let client: SocketAddr = CLIENTS[usize::from(op >> 4) % CLIENTS.len()].parse().unwrap();
        let transport = if op & 0x08 != 0 { Transport::Tcp } else { Transport::Udp };
        tid += 1;
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&tid.to_be_bytes());
        let tid = TransactionId(t);
        match op & 0x07 {
            0 => server.handle_input(now, client, transport, input.chunk()),
            1 | 2 => {
                // A signed request: fuzzer picks method and a few attributes.
                let method = match input.byte().unwrap_or(0) % 6 {
                    0 => Method::BINDING,
                    1 => Method::ALLOCATE,
                    2 => Method::REFRESH,
                    3 => Method::CREATE_PERMISSION,
                    4 => Method::CHANNEL_BIND,
                    _ => Method::new(input.u16().unwrap_or(0)),
                };
                let mut b = MessageBuilder::new(MessageType::new(Class::Request, method), tid);
                let flags = input.byte().unwrap_or(0);
                let peer: SocketAddr = PEERS[usize::from(flags) % PEERS.len()].parse().unwrap();
                if flags & 0x08 != 0 {
                    let _ = b.add(&Attribute::RequestedTransport(if flags & 0x10 != 0 { 17 } else { 6 }));
                }
                if flags & 0x20 != 0 {
                    let _ = b.add(&Attribute::Lifetime(u32::from(input.u16().unwrap_or(0))));
                }
                if flags & 0x40 != 0 {
                    let _ = b.add(&Attribute::XorPeerAddress(peer));
                    let _ = b.add(&Attribute::ChannelNumber(input.u16().unwrap_or(0x4000)));
                }
                if flags & 0x80 != 0 {
                    let fam = if flags & 1 != 0 { AddressFamily::V6 } else { AddressFamily::V4 };
                    let _ = b.add(&Attribute::RequestedAddressFamily(fam));
                }
                let extra = input.chunk();
                if !extra.is_empty() {
                    let _ = b.add(&Attribute::Other { typ: u16::from(extra[0]) << 4, value: &extra[1..] });
                }
                let _ = b.add(&Attribute::Username(&username));
                let _ = b.add(&Attribute::Realm(REALM));
                let _ = b.add(&Attribute::Nonce(&nonce));
                if op & 0x07 == 1 {
                    let _ = b.add_message_integrity(&key);
                } else {
                    let _ = b.add_message_integrity_sha256(&key);
                }
                let _ = b.add_fingerprint();
                server.handle_input(now, client, transport, &b.finish());
            }
            3 => {
                // ChannelData on a channel some allocation bound (or any number).
                let sel = input.byte().unwrap_or(0);
                let channel = channels
                    .get(usize::from(sel) % channels.len().max(1))
                    .copied()
                    .unwrap_or(0x4000 | u16::from(sel));
                let data = input.chunk();
                if let Ok(frame) = (ChannelData { channel, data }).encode(transport == Transport::Tcp) {
                    server.handle_input(now, client, transport, &frame);
                }
            }
            4 if op & 0x80 != 0 => {
                // Send indication toward one of the peers.
                let sel = input.byte().unwrap_or(0);
                let peer: SocketAddr = PEERS[usize::from(sel) % PEERS.len()].parse().unwrap();
                let mut b = MessageBuilder::new(MessageType::new(Class::Indication, Method::SEND), tid);
                let _ = b.add(&Attribute::XorPeerAddress(peer));
                let _ = b.add(&Attribute::Data(input.chunk()));
                server.handle_input(now, client, transport, &b.finish());
            }
            4 => {
                let sel = input.byte().unwrap_or(0);
                let peer: SocketAddr = PEERS[usize::from(sel) % PEERS.len()].parse().unwrap();
                let relay = relays
                    .get(usize::from(sel >> 4) % relays.len().max(1))
                    .copied()
                    .unwrap_or_else(|| "203.0.113.1:50000".parse().unwrap());
                server.handle_peer_input(now, relay, peer, input.chunk());
            }
            5 => {
                let secs = u64::from(input.u16().unwrap_or(0));
                now += Duration::from_secs(secs);
                // Fire every deadline up to `now`, as a shell would.
                while let Some(t) = server.poll_timeout() {
                    if t > now {
                        break;
                    }
                    server.handle_timeout(t);
                    if server.poll_timeout().is_some_and(|n| n <= t) {
                        break;
                    }
                }
                server.handle_timeout(now);
            }
            6 => server.handle_connection_closed(client),
            _ => {
                // Fetch a nonce with an unauthenticated Allocate.
                let mut b = MessageBuilder::new(MessageType::new(Class::Request, Method::ALLOCATE), tid);
                let _ = b.add(&Attribute::RequestedTransport(17));
                server.handle_input(now, client, transport, &b.finish());
            }
        }
        while let Some(t) = server.poll_transmit() {
            check_transmit(&t);
            if let Transmit::ToClient { payload, .. } = &t
                && let Ok(m) = Message::parse(payload)
                && let Some(n) = m.nonce()
            {
                nonce = n.to_string();
            }
        }
        while let Some(e) = server.poll_event() {
            match e {
                Event::AllocationCreated { relays: r, .. } => relays.extend(r),
                Event::AllocationDeleted { relays: r, .. } => relays.retain(|x| !r.contains(x)),
                Event::ChannelBound { channel, .. } => channels.push(channel),
                _ => {}
            }
        }
        assert!(server.allocation_count() <= 3, "total quota exceeded");
        if let Some(t) = server.poll_timeout() {
            assert!(t > t0 || server.allocation_count() == 0 || t >= t0);
        }
    }
});
