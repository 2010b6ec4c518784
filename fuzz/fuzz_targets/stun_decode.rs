//! STUN/TURN decoding must never panic; whatever parses must re-encode to a
//! message that parses to the same attributes, and the classifier must
//! agree with the parsers.

#![no_main]

use keyhole_stun::{
    Attribute, ChannelData, Message, MessageBuilder, PacketKind, classify, frame_len,
};
use libfuzzer_sys::fuzz_target;

fn is_trailer(a: &Attribute<'_>) -> bool {
    matches!(
        a,
        Attribute::MessageIntegrity(_)
            | Attribute::MessageIntegritySha256(_)
            | Attribute::Fingerprint(_)
    )
}

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    let _ = frame_len(data);

    if let Ok(m) = Message::parse(data) {
        if data[0] <= 3 {
            assert_eq!(kind, PacketKind::Stun);
        }
        let _ = m.verify_integrity(b"key");
        let mut b = MessageBuilder::new(m.header().typ, m.transaction_id());
        for a in m.attributes().iter().filter(|a| !is_trailer(a)) {
            b.add(a).expect("a decoded attribute encodes");
        }
        let again = b.finish();
        let m2 = Message::parse(&again).expect("re-encoded message parses");
        let before: Vec<_> = m.attributes().iter().filter(|a| !is_trailer(a)).collect();
        let after: Vec<_> = m2.attributes().iter().collect();
        assert_eq!(before, after);
        assert_eq!(m.unknown_required(), m2.unknown_required());
    } else if kind == PacketKind::Stun {
        // Framing was fine, so the failure must be in the attributes: the
        // header alone still decodes (the server answers 400 from it).
        assert!(keyhole_stun::Header::decode(data).is_ok());
    }

    match ChannelData::parse(data) {
        Ok(cd) => {
            let enc = cd.encode(false).expect("parsed ChannelData encodes");
            assert_eq!(&enc[..], &data[..enc.len()]);
            if kind == PacketKind::ChannelData {
                assert!(data.len() <= enc.len().next_multiple_of(4));
            }
        }
        Err(_) => assert_ne!(kind, PacketKind::ChannelData),
    }
});
