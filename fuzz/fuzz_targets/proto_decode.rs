//! Control-protocol decoding must never panic, and whatever decodes must
//! re-encode to a frame that decodes to the same message.

#![no_main]

use keyhole_proto::{
    DnsPattern, Decoded, Message, decode,
    messages::{
        ClientToPortal, GatewayToPortal, PortalToClient, PortalToGateway, PortalToRelay,
        RelayToPortal,
    },
};
use libfuzzer_sys::fuzz_target;

fn check<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(Decoded::Known(env)) = decode::<M>(data) {
        let text = env.encode().expect("a decoded message encodes");
        match decode::<M>(text.as_bytes()) {
            Ok(Decoded::Known(again)) => assert_eq!(again, env, "{text}"),
            other => panic!("re-encoded {text} decoded as {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<PortalToGateway>(data);
    check::<GatewayToPortal>(data);
    check::<PortalToClient>(data);
    check::<ClientToPortal>(data);
    check::<PortalToRelay>(data);
    check::<RelayToPortal>(data);

    // DNS patterns: split the input into a pattern and a name.
    if let Ok(s) = std::str::from_utf8(data) {
        let (pattern, name) = s.split_once('\n').unwrap_or((s, s));
        if let Ok(p) = DnsPattern::parse(pattern) {
            let _ = p.matches(name);
            // The canonical form parses back to the same pattern.
            assert_eq!(DnsPattern::parse(&p.to_string()).as_ref(), Ok(&p));
            // A pattern's base is always matched by `**.`/exact patterns.
            let _ = p.matches(p.base());
        }
    }
});
