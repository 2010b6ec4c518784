//! Types of the gateway's STUN steering programs (TC on the uplink), which
//! let ICE share the kernel WireGuard listen port.
//!
//! Ingress: a UDP datagram to the WireGuard port whose payload is STUN
//! (magic cookie at offset 4, type's top two bits zero) or TURN ChannelData
//! (first byte 0x40..=0x4F) gets its destination port rewritten to the local
//! ICE socket's port. Egress: UDP from the ICE socket's port leaves with the
//! WireGuard port as its source. Everything else passes untouched.

/// Name of the config map (`Array<SteeringConfig>`, one entry).
pub const STEERING_CONFIG_MAP: &str = "STEERING_CONFIG";
/// Name of the local addresses steering applies to (`HashMap<[u8; 16], u8>`,
/// keys from [`addr_key`]): ingress only to them, egress only from them, so
/// traffic the host forwards (a client behind it using the same port) is
/// never touched.
pub const STEERING_ADDRS_MAP: &str = "STEERING_ADDRS";
/// Capacity of [`STEERING_ADDRS_MAP`].
pub const MAX_STEERING_ADDRS: u32 = 64;
/// Name of the counters (`PerCpuArray<u64>`, indexed by [`SteeringCounter`]).
pub const STEERING_COUNTERS_MAP: &str = "STEERING_COUNTERS";

/// STUN magic cookie (RFC 8489 §5), bytes 4..8 of every STUN message.
pub const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// [`SteeringConfig::flags`]: steer ChannelData too (relayed peers whose
/// TURN allocation was made from the WireGuard port).
pub const STEER_CHANNEL_DATA: u32 = 1;

/// What the programs steer; all zero (the initial map value) steers nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteeringConfig {
    /// The WireGuard listen port, host byte order.
    pub wg_port: u16,
    /// The userspace ICE socket's port, host byte order.
    pub ice_port: u16,
    /// `STEER_*` bits.
    pub flags: u32,
}

/// One per-CPU counter slot per event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SteeringCounter {
    /// Ingress STUN to the WireGuard port, sent to the ICE socket.
    IngressStun = 0,
    /// Ingress ChannelData to the WireGuard port, sent to the ICE socket.
    IngressChannelData = 1,
    /// Ingress UDP to the WireGuard port left for WireGuard.
    IngressWireGuard = 2,
    /// Egress UDP from the ICE socket, source port set to the WireGuard port.
    EgressRewritten = 3,
    /// A header that could not be read or rewritten (passed unchanged).
    Error = 4,
}

impl SteeringCounter {
    /// Number of counters (the length of the counter map).
    pub const COUNT: u32 = 5;
    /// Every counter, in index order.
    pub const ALL: [SteeringCounter; Self::COUNT as usize] = [
        SteeringCounter::IngressStun,
        SteeringCounter::IngressChannelData,
        SteeringCounter::IngressWireGuard,
        SteeringCounter::EgressRewritten,
        SteeringCounter::Error,
    ];
}

/// The address map's key: IPv6 as is, IPv4 as `::ffff:a.b.c.d`.
#[inline(always)]
pub fn addr_key_v4(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// What an ingress datagram to the WireGuard port is, from the first 8
/// bytes of its UDP payload and the payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    Stun,
    ChannelData,
    /// WireGuard or anything else: the kernel's WireGuard decides.
    Other,
}

/// Classifies a payload of `len` bytes starting with `head` (only the first
/// `min(len, 8)` bytes of `head` are meaningful). A STUN header is 20
/// bytes, a ChannelData header 4; WireGuard messages start with type 1..=4,
/// so neither test can take a WireGuard datagram.
#[inline(always)]
pub fn classify_payload(head: &[u8; 8], len: usize, flags: u32) -> PayloadKind {
    if len >= 20
        && head[0] & 0xC0 == 0
        && head[4] == STUN_MAGIC[0]
        && head[5] == STUN_MAGIC[1]
        && head[6] == STUN_MAGIC[2]
        && head[7] == STUN_MAGIC[3]
    {
        return PayloadKind::Stun;
    }
    if flags & STEER_CHANNEL_DATA != 0 && len >= 4 && head[0] & 0xF0 == 0x40 {
        return PayloadKind::ChannelData;
    }
    PayloadKind::Other
}

const _: () = assert!(core::mem::size_of::<SteeringConfig>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, no padding (size asserted).
    unsafe impl aya::Pod for super::SteeringConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(b: &[u8]) -> [u8; 8] {
        let mut h = [0u8; 8];
        h[..b.len()].copy_from_slice(b);
        h
    }

    #[test]
    fn stun_needs_cookie_top_bits_and_length() {
        let binding = head(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(classify_payload(&binding, 20, 0), PayloadKind::Stun);
        // Success response 0x0101.
        let resp = head(&[0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(classify_payload(&resp, 32, 0), PayloadKind::Stun);
        // Shorter than a STUN header.
        assert_eq!(classify_payload(&binding, 19, 0), PayloadKind::Other);
        // Top bits set.
        let bad = head(&[0x80, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(classify_payload(&bad, 20, 0), PayloadKind::Other);
        // Wrong cookie.
        let bad = head(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x43]);
        assert_eq!(classify_payload(&bad, 20, 0), PayloadKind::Other);
    }

    #[test]
    fn wireguard_is_never_steered() {
        for t in 1..=4u8 {
            let wg = head(&[t, 0, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
            // Even with the cookie bytes by chance in the sender index.
            let kind = classify_payload(&wg, 148, STEER_CHANNEL_DATA);
            assert_ne!(kind, PayloadKind::ChannelData);
            let wg = head(&[t, 0, 0, 0, 9, 9, 9, 9]);
            assert_eq!(
                classify_payload(&wg, 148, STEER_CHANNEL_DATA),
                PayloadKind::Other
            );
        }
    }

    #[test]
    fn channel_data_only_when_enabled() {
        let cd = head(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]);
        assert_eq!(
            classify_payload(&cd, 8, STEER_CHANNEL_DATA),
            PayloadKind::ChannelData
        );
        assert_eq!(classify_payload(&cd, 8, 0), PayloadKind::Other);
        assert_eq!(
            classify_payload(&cd, 3, STEER_CHANNEL_DATA),
            PayloadKind::Other
        );
        let beyond = head(&[0x50, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(
            classify_payload(&beyond, 8, STEER_CHANNEL_DATA),
            PayloadKind::Other
        );
    }
}
