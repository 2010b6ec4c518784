//! Codec edge cases and property tests.

use std::net::{IpAddr, SocketAddr};

use keyhole_stun::{
    AddressFamily, Attribute, ChannelData, Class, DecodeError, EncodeError, Message,
    MessageBuilder, MessageType, Method, PacketKind, TransactionId, classify, frame_len, types,
};
use proptest::prelude::*;

const TID: TransactionId = TransactionId([7; 12]);

fn builder() -> MessageBuilder {
    MessageBuilder::new(MessageType::new(Class::Request, Method::ALLOCATE), TID)
}

fn with(attrs: &[Attribute<'_>]) -> Vec<u8> {
    let mut b = builder();
    for a in attrs {
        b.add(a).unwrap();
    }
    b.finish()
}

#[test]
fn header_errors() {
    let good = with(&[Attribute::Lifetime(1)]);
    assert!(matches!(
        Message::parse(&good[..10]),
        Err(DecodeError::Truncated { .. })
    ));
    let mut b = good.clone();
    b[4] = 0;
    assert!(matches!(
        Message::parse(&b),
        Err(DecodeError::BadMagicCookie(_))
    ));
    let mut b = good.clone();
    b[0] |= 0x80;
    assert_eq!(Message::parse(&b).unwrap_err(), DecodeError::NotStun);
    let mut b = good.clone();
    b[3] = 6;
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        DecodeError::UnalignedLength(6)
    );
    assert!(matches!(
        Message::parse(&good[..good.len() - 4]),
        Err(DecodeError::LengthMismatch { .. })
    ));
}

#[test]
fn attribute_errors() {
    // Attribute length runs past the end.
    let mut b = with(&[Attribute::Lifetime(1)]);
    b[23] = 8;
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        DecodeError::AttributeOverrun {
            typ: types::LIFETIME
        }
    );
    // Wrong fixed length.
    let mut b = with(&[Attribute::Lifetime(1)]);
    b[23] = 2;
    assert!(matches!(
        Message::parse(&b),
        Err(DecodeError::InvalidAttribute {
            typ: types::LIFETIME,
            ..
        })
    ));
    // Unknown address family.
    let mut b = with(&[Attribute::XorPeerAddress("1.2.3.4:5".parse().unwrap())]);
    b[25] = 9;
    assert!(matches!(
        Message::parse(&b),
        Err(DecodeError::InvalidAttribute {
            typ: types::XOR_PEER_ADDRESS,
            ..
        })
    ));
    // Non-UTF-8 username.
    let b = with(&[Attribute::Other {
        typ: types::USERNAME,
        value: &[0xff, 0xfe],
    }]);
    assert!(matches!(
        Message::parse(&b),
        Err(DecodeError::InvalidAttribute {
            typ: types::USERNAME,
            ..
        })
    ));
    // Error code class out of range.
    let b = with(&[Attribute::Other {
        typ: types::ERROR_CODE,
        value: &[0, 0, 7, 0],
    }]);
    assert!(Message::parse(&b).is_err());
}

#[test]
fn fingerprint_must_be_last_and_correct() {
    let mut b = builder();
    b.add(&Attribute::Lifetime(1)).unwrap();
    b.add_fingerprint().unwrap();
    b.add(&Attribute::Software("x")).unwrap();
    let bytes = b.finish();
    // The trailing attribute changed the length the fingerprint covered.
    assert!(Message::parse(&bytes).is_err());
    let mut b = builder();
    b.add_fingerprint().unwrap();
    let mut bytes = b.finish();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        Message::parse(&bytes).unwrap_err(),
        DecodeError::FingerprintMismatch
    );
}

#[test]
fn unknown_attributes_are_reported_only_when_comprehension_required() {
    let b = with(&[
        Attribute::Other {
            typ: 0x7abc,
            value: b"x",
        },
        Attribute::Other {
            typ: 0xfabc,
            value: b"y",
        },
        Attribute::Other {
            typ: 0x7abc,
            value: b"z",
        },
        Attribute::Other {
            typ: types::PASSWORD_ALGORITHMS,
            value: &[0, 1, 0, 0],
        },
    ]);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.unknown_required(), &[0x7abc]);
    assert_eq!(
        m.get(0x7abc),
        Some(&Attribute::Other {
            typ: 0x7abc,
            value: b"x"
        }),
        "first occurrence wins"
    );
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let mut b = builder();
    b.add(&Attribute::Lifetime(1)).unwrap();
    b.add_message_integrity(b"key").unwrap();
    b.add(&Attribute::Lifetime(2)).unwrap();
    b.add(&Attribute::Other {
        typ: 0x7abc,
        value: b"x",
    })
    .unwrap();
    b.add_fingerprint().unwrap();
    let bytes = b.finish();
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.lifetime(), Some(1));
    assert!(m.unknown_required().is_empty());
    assert!(m.has_fingerprint());
    assert!(m.verify_integrity(b"key").is_ok());
    assert!(m.verify_integrity(b"other").is_err());
}

#[test]
fn both_integrities_prefer_sha256() {
    let mut b = builder();
    b.add(&Attribute::Lifetime(1)).unwrap();
    b.add_message_integrity(b"key").unwrap();
    b.add_message_integrity_sha256(b"key").unwrap();
    b.add_fingerprint().unwrap();
    let bytes = b.finish();
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        m.verify_integrity(b"key"),
        Ok(keyhole_stun::IntegrityKind::Sha256)
    );
}

#[test]
fn builder_rolls_back_a_bad_attribute() {
    let mut b = builder();
    b.add(&Attribute::Lifetime(1)).unwrap();
    let long = "u".repeat(600);
    assert!(matches!(
        b.add(&Attribute::Username(&long)),
        Err(EncodeError::InvalidValue { .. })
    ));
    assert!(
        b.add(&Attribute::ErrorCode {
            code: 999,
            reason: ""
        })
        .is_err()
    );
    let big = vec![0u8; 70_000];
    assert!(b.add(&Attribute::Data(&big)).is_err());
    let bytes = b.finish();
    assert_eq!(
        Message::parse(&bytes).unwrap().attributes(),
        &[Attribute::Lifetime(1)]
    );
}

#[test]
fn channel_data_framing() {
    let cd = ChannelData {
        channel: 0x4001,
        data: b"hello",
    };
    let udp = cd.encode(false).unwrap();
    let tcp = cd.encode(true).unwrap();
    assert_eq!(udp.len(), 9);
    assert_eq!(tcp.len(), 12);
    assert_eq!(ChannelData::parse(&udp).unwrap(), cd);
    assert_eq!(ChannelData::parse(&tcp).unwrap(), cd);
    assert_eq!(classify(&udp), PacketKind::ChannelData);
    assert_eq!(classify(&tcp), PacketKind::ChannelData);
    assert_eq!(frame_len(&tcp), Ok(Some(12)));
    assert_eq!(frame_len(&tcp[..2]), Ok(None));
    assert!(matches!(
        ChannelData::parse(&udp[..8]),
        Err(DecodeError::Truncated { .. })
    ));
    assert_eq!(
        ChannelData::parse(&[0x80, 0, 0, 0]).unwrap_err(),
        DecodeError::BadChannelNumber(0x8000)
    );
    assert_eq!(
        ChannelData::parse(&[0x55, 0xa4, 0, 0]).unwrap().channel,
        0x55a4,
        "RFC 5766 range"
    );
    assert_eq!(
        ChannelData {
            channel: 0x3fff,
            data: b""
        }
        .encode(false)
        .unwrap_err(),
        EncodeError::BadChannelNumber(0x3fff)
    );
    // A datagram longer than header + padded length is not ChannelData.
    let mut long = tcp.clone();
    long.extend_from_slice(&[0; 4]);
    assert_eq!(classify(&long), PacketKind::Other);
}

#[test]
fn classifier() {
    let stun = with(&[Attribute::Lifetime(1)]);
    assert_eq!(classify(&stun), PacketKind::Stun);
    assert_eq!(frame_len(&stun), Ok(Some(stun.len())));
    assert_eq!(frame_len(&stun[..7]), Ok(None));
    assert_eq!(classify(&stun[..stun.len() - 1]), PacketKind::Other);
    let mut no_cookie = stun.clone();
    no_cookie[5] = 0;
    assert_eq!(classify(&no_cookie), PacketKind::Other);
    assert!(frame_len(&no_cookie).is_err());
    // A WireGuard handshake initiation starts with 0x01 but has no cookie.
    let mut wg = vec![1u8, 0, 0, 0];
    wg.resize(148, 0xaa);
    assert_eq!(classify(&wg), PacketKind::Other);
    assert_eq!(classify(&[]), PacketKind::Other);
    assert_eq!(classify(&[0x17, 3, 3, 0, 5]), PacketKind::Other);
    assert_eq!(frame_len(&[0x17]), Err(DecodeError::NotStun));
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

/// Owned attribute descriptions (proptest values must be 'static).
#[derive(Debug, Clone)]
enum Owned {
    Addr(u8, SocketAddr),
    Text(u8, String),
    Error(u16, String),
    Lifetime(u32),
    Channel(u16),
    Data(Vec<u8>),
    Transport(u8),
    Family(bool, AddressFamily),
    DontFragment,
    EvenPort(bool),
    Token([u8; 8]),
    Unknown(Vec<u16>),
    Other(u16, Vec<u8>),
}

impl Owned {
    fn view(&self) -> Attribute<'_> {
        match self {
            Owned::Addr(0, a) => Attribute::MappedAddress(*a),
            Owned::Addr(1, a) => Attribute::XorMappedAddress(*a),
            Owned::Addr(2, a) => Attribute::XorPeerAddress(*a),
            Owned::Addr(_, a) => Attribute::XorRelayedAddress(*a),
            Owned::Text(0, s) => Attribute::Username(s),
            Owned::Text(1, s) => Attribute::Realm(s),
            Owned::Text(2, s) => Attribute::Nonce(s),
            Owned::Text(_, s) => Attribute::Software(s),
            Owned::Error(code, reason) => Attribute::ErrorCode {
                code: *code,
                reason,
            },
            Owned::Lifetime(l) => Attribute::Lifetime(*l),
            Owned::Channel(c) => Attribute::ChannelNumber(*c),
            Owned::Data(d) => Attribute::Data(d),
            Owned::Transport(p) => Attribute::RequestedTransport(*p),
            Owned::Family(false, f) => Attribute::RequestedAddressFamily(*f),
            Owned::Family(true, f) => Attribute::AdditionalAddressFamily(*f),
            Owned::DontFragment => Attribute::DontFragment,
            Owned::EvenPort(r) => Attribute::EvenPort(*r),
            Owned::Token(t) => Attribute::ReservationToken(*t),
            Owned::Unknown(l) => Attribute::UnknownAttributesList(l),
            Owned::Other(t, v) => Attribute::Other { typ: *t, value: v },
        }
    }
}

fn attribute() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (0u8..4, socket_addr()).prop_map(|(k, a)| Owned::Addr(k, a)),
        (0u8..4, "\\PC{0,40}").prop_map(|(k, s)| Owned::Text(k, s)),
        (300u16..700, "[a-zA-Z ]{0,30}").prop_map(|(c, r)| Owned::Error(c, r)),
        any::<u32>().prop_map(Owned::Lifetime),
        any::<u16>().prop_map(Owned::Channel),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Owned::Data),
        any::<u8>().prop_map(Owned::Transport),
        (any::<bool>(), family()).prop_map(|(a, f)| Owned::Family(a, f)),
        Just(Owned::DontFragment),
        any::<bool>().prop_map(Owned::EvenPort),
        any::<[u8; 8]>().prop_map(Owned::Token),
        proptest::collection::vec(any::<u16>(), 0..6).prop_map(Owned::Unknown),
        // Unassigned types in both comprehension ranges.
        (
            prop_oneof![0x0100u16..0x7000, 0xC100u16..0xFFFF],
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, v)| Owned::Other(t, v)),
    ]
}

proptest! {
    #[test]
    fn build_then_parse_round_trips(
        attrs in proptest::collection::vec(attribute(), 0..12),
        tid in any::<[u8; 12]>(),
        method in 0u16..0x1000,
        key in proptest::collection::vec(any::<u8>(), 0..40),
        integrity in 0u8..3,
        fingerprint in any::<bool>(),
        padding in any::<u8>(),
    ) {
        let typ = MessageType::new(Class::Indication, Method::new(method));
        let mut b = MessageBuilder::new(typ, TransactionId(tid)).padding_byte(padding);
        for a in &attrs {
            b.add(&a.view()).unwrap();
        }
        match integrity {
            1 => { b.add_message_integrity(&key).unwrap(); }
            2 => { b.add_message_integrity_sha256(&key).unwrap(); }
            _ => {}
        }
        if fingerprint {
            b.add_fingerprint().unwrap();
        }
        let bytes = b.finish();
        // RFC 7983 demultiplexing only knows first bytes 0..=3 (methods < 0x100).
        let kind = if method < 0x100 { PacketKind::Stun } else { PacketKind::Other };
        prop_assert_eq!(classify(&bytes), kind);
        let m = Message::parse(&bytes).unwrap();
        prop_assert_eq!(m.header().typ, typ);
        prop_assert_eq!(m.transaction_id(), TransactionId(tid));
        prop_assert_eq!(m.has_fingerprint(), fingerprint);
        prop_assert_eq!(m.verify_integrity(&key).is_ok(), integrity != 0);
        let parsed: Vec<_> = m.attributes().iter()
            .filter(|a| !matches!(a, Attribute::MessageIntegrity(_) | Attribute::MessageIntegritySha256(_) | Attribute::Fingerprint(_)))
            .collect();
        prop_assert_eq!(parsed.len(), attrs.len());
        for (p, o) in parsed.iter().zip(&attrs) {
            match (p, o.view()) {
                (Attribute::UnknownAttributes(l), Attribute::UnknownAttributesList(want)) => {
                    prop_assert_eq!(l.iter().collect::<Vec<_>>(), want.to_vec())
                }
                (p, want) => prop_assert_eq!(*p, &want),
            }
        }
        let required: Vec<u16> = attrs.iter().filter_map(|a| match a {
            Owned::Other(t, _) if *t < 0x8000 => Some(*t),
            _ => None,
        }).fold(Vec::new(), |mut v, t| { if !v.contains(&t) { v.push(t) } v });
        prop_assert_eq!(m.unknown_required(), &required[..]);
    }

    #[test]
    fn channel_data_round_trips(channel in 0x4000u16..=0x7FFF, data in proptest::collection::vec(any::<u8>(), 0..300), pad in any::<bool>()) {
        let bytes = ChannelData { channel, data: &data }.encode(pad).unwrap();
        prop_assert_eq!(classify(&bytes), PacketKind::ChannelData);
        let cd = ChannelData::parse(&bytes).unwrap();
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &data[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = classify(&bytes);
        let _ = frame_len(&bytes);
        let _ = ChannelData::parse(&bytes);
        if let Ok(m) = Message::parse(&bytes) {
            let _ = m.verify_integrity(b"k");
        }
    }

    #[test]
    fn mutated_messages_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = with(&[
            Attribute::XorPeerAddress("[2001:db8::1]:80".parse().unwrap()),
            Attribute::Username("user"),
            Attribute::Lifetime(9),
        ]);
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        if let Ok(m) = Message::parse(&bytes) {
            let _ = m.verify_integrity(b"k");
        }
    }
}
