//! Datagram demultiplexing and the few IP header fields routing needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// STUN magic cookie (RFC 8489 §5), bytes 4..8 of every STUN message.
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// What an incoming UDP datagram is, decided from its first bytes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatagramKind {
    /// STUN: top two bits zero and the magic cookie (ICE checks, TURN control).
    Stun,
    /// TURN ChannelData: first byte 0x40..=0x4F (channels 0x4000..=0x4FFF).
    ChannelData,
    /// WireGuard: message type 1..=4 followed by three zero bytes.
    WireGuard,
    Unknown,
}

pub(crate) fn classify(d: &[u8]) -> DatagramKind {
    // STUN first: a STUN success response starts 0x01 0x01, which the
    // WireGuard test below would reject anyway, but the cookie is decisive.
    if d.len() >= 20 && d[0] & 0xC0 == 0 && d[4..8] == STUN_MAGIC {
        return DatagramKind::Stun;
    }
    if d.len() >= 4 && (0x40..=0x4F).contains(&d[0]) {
        return DatagramKind::ChannelData;
    }
    if d.len() >= 4 && (1..=4).contains(&d[0]) && d[1..4] == [0, 0, 0] {
        return DatagramKind::WireGuard;
    }
    DatagramKind::Unknown
}

/// Destination address of an IPv4/IPv6 packet, `None` if it is not one.
pub(crate) fn destination(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?).into()),
        6 if p.len() >= 40 => Some(Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_first_bytes() {
        let mut stun = [0u8; 20];
        stun[1] = 1;
        stun[4..8].copy_from_slice(&STUN_MAGIC);
        assert_eq!(classify(&stun), DatagramKind::Stun);
        // A binding success response (0x0101) is still STUN.
        stun[0] = 1;
        assert_eq!(classify(&stun), DatagramKind::Stun);
        assert_eq!(classify(&[1, 0, 0, 0, 9, 9]), DatagramKind::WireGuard);
        assert_eq!(classify(&[4, 0, 0, 0]), DatagramKind::WireGuard);
        assert_eq!(classify(&[5, 0, 0, 0]), DatagramKind::Unknown);
        assert_eq!(classify(&[1, 0, 1, 0]), DatagramKind::Unknown);
        assert_eq!(
            classify(&[0x40, 0, 0, 4, 1, 2, 3, 4]),
            DatagramKind::ChannelData
        );
        assert_eq!(classify(&[]), DatagramKind::Unknown);
        assert_eq!(classify(&[1]), DatagramKind::Unknown);
    }

    #[test]
    fn reads_ip_addresses_and_rejects_short_packets() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[10, 0, 0, 9]);
        assert_eq!(destination(&v4), Some("10.0.0.9".parse().unwrap()));
        assert_eq!(destination(&v4[..19]), None);
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[39] = 1;
        assert_eq!(destination(&v6), Some("::1".parse().unwrap()));
        assert_eq!(destination(&v6[..39]), None);
        assert_eq!(destination(&[0x50; 40]), None);
        assert_eq!(destination(&[]), None);
    }
}
