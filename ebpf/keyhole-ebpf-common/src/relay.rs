//! Types of the relay's XDP ChannelData fast path maps.
//!
//! Two hash maps mirror the TURN core's bound channels, one per direction:
//! - [`TO_PEER_V4_MAP`]: `(client addr, client port, channel)` →
//!   where the client's ChannelData goes (peer, and the relayed address it
//!   leaves from);
//! - [`TO_CLIENT_V4_MAP`]: `(peer addr, peer port, relayed port)` → the
//!   client it goes to and the channel number to put in front.
//!
//! IPv6 has the same pair ([`TO_PEER_V6_MAP`], [`TO_CLIENT_V6_MAP`]) with
//! 16-byte addresses; a channel is in the IPv6 maps only when its client
//! and peer are both IPv6 (mixed families stay in userspace).
//!
//! Addresses are network byte order byte arrays; ports and channel numbers
//! are host-order integers (the program converts). A zero address in a
//! value means "the address the packet arrived on", which is right on a
//! single-address host and when the relay binds the wildcard address.

/// Name of the client → peer map (`HashMap<ToPeerKeyV4, ToPeerV4>`).
pub const TO_PEER_V4_MAP: &str = "RELAY_TO_PEER_V4";
/// Name of the peer → client map (`HashMap<ToClientKeyV4, ToClientV4>`).
pub const TO_CLIENT_V4_MAP: &str = "RELAY_TO_CLIENT_V4";
/// Name of the IPv6 client → peer map (`HashMap<ToPeerKeyV6, ToPeerV6>`).
pub const TO_PEER_V6_MAP: &str = "RELAY_TO_PEER_V6";
/// Name of the IPv6 peer → client map (`HashMap<ToClientKeyV6, ToClientV6>`).
pub const TO_CLIENT_V6_MAP: &str = "RELAY_TO_CLIENT_V6";
/// Name of the one-entry configuration array (`Array<RelayConfig>`).
pub const CONFIG_MAP: &str = "RELAY_CONFIG";
/// Name of the per-CPU counters (`PerCpuArray<u64>`, indexed by [`Counter`]).
pub const COUNTERS_MAP: &str = "RELAY_COUNTERS";

/// Name of the fast-path program in the object.
pub const PROGRAM: &str = "keyhole_relay";
/// Name of a program that passes everything: the far end of a veth needs
/// an XDP program for frames sent to it with XDP_TX or a redirect to be
/// received in native mode (tests and benchmarks attach it there).
pub const PASS_PROGRAM: &str = "keyhole_xdp_pass";
/// Benchmark traffic source: XDP_TX, run with live-frame BPF_PROG_TEST_RUN.
pub const TX_PROGRAM: &str = "keyhole_xdp_tx";
/// The source's template: the first `TX_TEMPLATE_WORDS` × 8 bytes of its
/// frame, rewritten into every frame it sends.
pub const TX_TEMPLATE_MAP: &str = "RELAY_TX_TEMPLATE";
pub const TX_TEMPLATE_WORDS: usize = 8;
/// Benchmark traffic sink: counts and drops UDP.
pub const SINK_PROGRAM: &str = "keyhole_xdp_sink";
/// The sink's per-CPU counters: slot 0 datagrams, slot 1 payload bytes.
pub const SINK_COUNTERS_MAP: &str = "RELAY_SINK_COUNTERS";

/// Default capacity of each direction's map (channels relayed at once).
pub const DEFAULT_MAX_CHANNELS: u32 = 65_536;

/// Length of the ChannelData header the fast path strips or adds.
pub const CHANNEL_HEADER_LEN: u16 = 4;

/// Key of the client → peer map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToPeerKeyV4 {
    pub client_addr: [u8; 4],
    pub client_port: u16,
    pub channel: u16,
}

/// Where a client's ChannelData on a channel goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToPeerV4 {
    pub peer_addr: [u8; 4],
    /// Local address of the relay socket (zero: the address the client's
    /// packet was sent to).
    pub relay_addr: [u8; 4],
    pub peer_port: u16,
    pub relay_port: u16,
}

/// Key of the peer → client map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToClientKeyV4 {
    pub peer_addr: [u8; 4],
    pub peer_port: u16,
    /// The relayed (allocation) port the peer sent to.
    pub relay_port: u16,
}

/// Which client a peer's datagram to a relayed port goes to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToClientV4 {
    pub client_addr: [u8; 4],
    /// Local address of the listener (zero: the address the peer's packet
    /// was sent to).
    pub listen_addr: [u8; 4],
    /// Local address of the relay socket the peer must have sent to (zero:
    /// any local address).
    pub relay_addr: [u8; 4],
    pub client_port: u16,
    pub channel: u16,
}

/// Key of the IPv6 client → peer map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToPeerKeyV6 {
    pub client_addr: [u8; 16],
    pub client_port: u16,
    pub channel: u16,
}

/// Where an IPv6 client's ChannelData on a channel goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToPeerV6 {
    pub peer_addr: [u8; 16],
    /// Local address of the relay socket (zero: the address the client's
    /// packet was sent to).
    pub relay_addr: [u8; 16],
    pub peer_port: u16,
    pub relay_port: u16,
}

/// Key of the IPv6 peer → client map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToClientKeyV6 {
    pub peer_addr: [u8; 16],
    pub peer_port: u16,
    /// The relayed (allocation) port the peer sent to.
    pub relay_port: u16,
}

/// Which IPv6 client a peer's datagram to a relayed port goes to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToClientV6 {
    pub client_addr: [u8; 16],
    /// Local address of the listener (zero: the address the peer's packet
    /// was sent to).
    pub listen_addr: [u8; 16],
    /// Local address of the relay socket the peer must have sent to (zero:
    /// any local address).
    pub relay_addr: [u8; 16],
    pub client_port: u16,
    pub channel: u16,
}

/// What the program needs to know about the listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RelayConfig {
    /// The listener's IPv4 address (zero: any).
    pub listen_addr: [u8; 4],
    /// The listener's UDP port; zero disables the fast path.
    pub listen_port: u16,
    /// Non-zero when the listener takes IPv6 (bound to an IPv6 address).
    pub listen_v6: u16,
    /// The listener's IPv6 address (zero: any).
    pub listen_addr6: [u8; 16],
}

/// Per-CPU counters. Fast-path byte counts are relayed application bytes
/// (the ChannelData payload), the same figure userspace counts.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// ChannelData from a client sent on to its peer.
    ToPeerPackets = 0,
    ToPeerBytes,
    /// Peer datagrams sent on to a client as ChannelData.
    ToClientPackets,
    ToClientBytes,
    /// Sent back out of the interface it came in on (XDP_TX).
    Tx,
    /// Sent out of another interface (bpf_redirect).
    Redirected,
    /// Passed: not Ethernet + IPv4 or IPv6 (ARP, VLAN …).
    PassNotIpv4,
    /// Passed: IPv4 with options, IPv6 with extension headers, or a
    /// fragment.
    PassIpOptionsOrFragment,
    /// Passed: not UDP, a truncated/inconsistent UDP header, or IPv6 UDP
    /// without a checksum.
    PassNotUdp,
    /// Passed: UDP neither to the listener nor from a peer with a channel.
    PassNotRelayed,
    /// Passed: to the listener but not ChannelData (STUN, junk).
    PassNotChannelData,
    /// Passed: ChannelData on a channel the map does not hold.
    PassNoChannel,
    /// Passed: ChannelData whose length disagrees with the datagram
    /// (padding, truncation).
    PassBadLength,
    /// Passed: the FIB lookup found no neighbour yet (userspace's send
    /// resolves it).
    PassNoNeighbour,
    /// Passed: forwarding is disabled on the interface (the FIB helper
    /// needs `net.ipv4.conf.IFACE.forwarding=1`, for IPv6
    /// `net.ipv6.conf.IFACE.forwarding=1`).
    PassForwardingDisabled,
    /// Passed: the packet would exceed the egress MTU.
    PassFragNeeded,
    /// Passed: any other FIB lookup failure (no route, local destination …).
    PassNoRoute,
    /// Passed: the packet could not be resized or the redirect failed.
    PassError,
}

impl Counter {
    /// Number of counters (the length of the counter map).
    pub const COUNT: u32 = 18;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::ToPeerPackets,
        Counter::ToPeerBytes,
        Counter::ToClientPackets,
        Counter::ToClientBytes,
        Counter::Tx,
        Counter::Redirected,
        Counter::PassNotIpv4,
        Counter::PassIpOptionsOrFragment,
        Counter::PassNotUdp,
        Counter::PassNotRelayed,
        Counter::PassNotChannelData,
        Counter::PassNoChannel,
        Counter::PassBadLength,
        Counter::PassNoNeighbour,
        Counter::PassForwardingDisabled,
        Counter::PassFragNeeded,
        Counter::PassNoRoute,
        Counter::PassError,
    ];

    /// A stable snake_case name (metric labels).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::ToPeerPackets => "to_peer_packets",
            Counter::ToPeerBytes => "to_peer_bytes",
            Counter::ToClientPackets => "to_client_packets",
            Counter::ToClientBytes => "to_client_bytes",
            Counter::Tx => "tx",
            Counter::Redirected => "redirected",
            Counter::PassNotIpv4 => "not_ipv4",
            Counter::PassIpOptionsOrFragment => "ip_options_or_fragment",
            Counter::PassNotUdp => "not_udp",
            Counter::PassNotRelayed => "not_relayed",
            Counter::PassNotChannelData => "not_channel_data",
            Counter::PassNoChannel => "no_channel",
            Counter::PassBadLength => "bad_length",
            Counter::PassNoNeighbour => "no_neighbour",
            Counter::PassForwardingDisabled => "forwarding_disabled",
            Counter::PassFragNeeded => "frag_needed",
            Counter::PassNoRoute => "no_route",
            Counter::PassError => "error",
        }
    }

    /// Whether this counts a packet handed to the kernel stack, by reason.
    pub const fn is_pass(self) -> bool {
        (self as u32) >= (Counter::PassNotIpv4 as u32)
    }
}

/// RFC 1071 one's-complement arithmetic for incremental checksum updates
/// (RFC 1624), shared so host tests can check what the program does.
pub mod csum {
    /// Adds 16-bit words of `bytes` (big-endian, even length) to `sum`.
    #[inline(always)]
    pub fn add_words(mut sum: u32, bytes: &[u8]) -> u32 {
        let mut i = 0;
        while i + 1 < bytes.len() {
            sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
            i += 2;
        }
        sum
    }

    /// Adds the one's complement of each 16-bit word (removes them).
    #[inline(always)]
    pub fn sub_words(mut sum: u32, bytes: &[u8]) -> u32 {
        let mut i = 0;
        while i + 1 < bytes.len() {
            sum += u32::from(!u16::from_be_bytes([bytes[i], bytes[i + 1]]));
            i += 2;
        }
        sum
    }

    /// Folds carries into 16 bits.
    #[inline(always)]
    pub fn fold(mut sum: u32) -> u16 {
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum as u16
    }

    /// The IPv4 header checksum of a 20-byte header whose checksum field
    /// (bytes 10..12) is zero.
    #[inline(always)]
    pub fn ipv4_header(hdr: &[u8; 20]) -> u16 {
        !fold(add_words(0, hdr))
    }

    /// Updates a UDP checksum for changed pseudo-header/header words:
    /// `old` words out, `new` words in. A zero checksum (none, IPv4) stays
    /// zero; a computed zero is sent as 0xffff.
    #[inline(always)]
    pub fn udp_update(check: u16, old: &[u8], new: &[u8]) -> u16 {
        if check == 0 {
            return 0;
        }
        let sum = sub_words(u32::from(!check), old);
        let sum = add_words(sum, new);
        match !fold(sum) {
            0 => 0xffff,
            c => c,
        }
    }
}

// The kernel and userspace must agree on these sizes byte for byte.
const _: () = assert!(core::mem::size_of::<ToPeerKeyV4>() == 8);
const _: () = assert!(core::mem::size_of::<ToPeerV4>() == 12);
const _: () = assert!(core::mem::size_of::<ToClientKeyV4>() == 8);
const _: () = assert!(core::mem::size_of::<ToClientV4>() == 16);
const _: () = assert!(core::mem::size_of::<RelayConfig>() == 24);
const _: () = assert!(core::mem::size_of::<ToPeerKeyV6>() == 20);
const _: () = assert!(core::mem::size_of::<ToPeerV6>() == 36);
const _: () = assert!(core::mem::size_of::<ToClientKeyV6>() == 20);
const _: () = assert!(core::mem::size_of::<ToClientV6>() == 52);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)], Copy, made of integers and byte arrays
    // with no implicit padding (checked by the size asserts above), so every
    // bit pattern is valid.
    unsafe impl aya::Pod for ToPeerKeyV4 {}
    unsafe impl aya::Pod for ToPeerV4 {}
    unsafe impl aya::Pod for ToClientKeyV4 {}
    unsafe impl aya::Pod for ToClientV4 {}
    unsafe impl aya::Pod for RelayConfig {}
    unsafe impl aya::Pod for ToPeerKeyV6 {}
    unsafe impl aya::Pod for ToPeerV6 {}
    unsafe impl aya::Pod for ToClientKeyV6 {}
    unsafe impl aya::Pod for ToClientV6 {}
}

#[cfg(test)]
mod tests {
    use super::csum::*;
    use super::*;

    /// The checksum words of a UDP datagram other than its payload, in
    /// wire order: pseudo-header addresses and length, then the header's
    /// ports and length (the constant protocol word, and IPv6's zero upper
    /// length half, are the same on both sides of an update and left out).
    /// The program's IPv6 update swaps these words, summed in native order.
    fn udp_words<const A: usize, const N: usize>(
        src: [u8; A],
        dst: [u8; A],
        sport: u16,
        dport: u16,
        udp_len: u16,
    ) -> [u8; N] {
        let mut w = [0u8; N];
        let l = udp_len.to_be_bytes();
        let s = sport.to_be_bytes();
        let d = dport.to_be_bytes();
        let mut i = 0;
        while i < A {
            w[i] = src[i];
            w[A + i] = dst[i];
            i += 1;
        }
        let tail = [l[0], l[1], s[0], s[1], d[0], d[1], l[0], l[1]];
        let mut j = 0;
        while j < 8 {
            w[2 * A + j] = tail[j];
            j += 1;
        }
        w
    }

    /// Full UDP checksum over pseudo-header, header and payload.
    fn udp_full(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> u16 {
        let len = (8 + payload.len()) as u16;
        let mut b = Vec::new();
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&[0, 17]);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(payload);
        if b.len() % 2 == 1 {
            b.push(0);
        }
        match !fold(add_words(0, &b)) {
            0 => 0xffff,
            c => c,
        }
    }

    #[test]
    fn incremental_strip_and_prepend_match_full_checksums() {
        for data_len in [0usize, 1, 2, 3, 7, 100, 1371] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 37 + 11) as u8).collect();
            let mut cd = vec![0x40, 0x01];
            cd.extend_from_slice(&(data_len as u16).to_be_bytes());
            cd.extend_from_slice(&data);
            let (client, listen, relay, peer) =
                ([10, 0, 0, 2], [10, 0, 0, 1], [10, 1, 0, 1], [10, 1, 0, 2]);
            let with_cd = udp_full(client, listen, 40000, 3478, &cd);
            let plain = udp_full(relay, peer, 50000, 9000, &data);
            let l_cd = (8 + cd.len()) as u16;
            let l_plain = (8 + data.len()) as u16;

            // Strip: what the program feeds udp_update, client → peer.
            let mut old = Vec::new();
            old.extend_from_slice(&client);
            old.extend_from_slice(&listen);
            old.extend_from_slice(&l_cd.to_be_bytes());
            old.extend_from_slice(&40000u16.to_be_bytes());
            old.extend_from_slice(&3478u16.to_be_bytes());
            old.extend_from_slice(&l_cd.to_be_bytes());
            old.extend_from_slice(&cd[..4]);
            let mut new = Vec::new();
            new.extend_from_slice(&relay);
            new.extend_from_slice(&peer);
            new.extend_from_slice(&l_plain.to_be_bytes());
            new.extend_from_slice(&50000u16.to_be_bytes());
            new.extend_from_slice(&9000u16.to_be_bytes());
            new.extend_from_slice(&l_plain.to_be_bytes());
            assert_eq!(udp_update(with_cd, &old, &new), plain, "strip {data_len}");

            // Prepend: peer → client is the same change the other way.
            assert_eq!(udp_update(plain, &new, &old), with_cd, "prepend {data_len}");
        }
    }

    /// Full IPv6 UDP checksum (RFC 8200 §8.1 pseudo-header).
    fn udp6_full(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> u16 {
        let len = (8 + payload.len()) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 17]);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&(len as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(payload);
        if b.len() % 2 == 1 {
            b.push(0);
        }
        match !fold(add_words(0, &b)) {
            0 => 0xffff,
            c => c,
        }
    }

    #[test]
    fn ipv6_incremental_strip_and_prepend_match_full_checksums() {
        let client = [0xfd, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let listen = [0xfd, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let relay = [0xfd, 0x77, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let peer = [
            0xfd, 0x77, 0, 2, 0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 2,
        ];
        for data_len in [0usize, 1, 2, 3, 7, 100, 1371] {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 53 + 7) as u8).collect();
            let mut cd = vec![0x7f, 0xfe];
            cd.extend_from_slice(&(data_len as u16).to_be_bytes());
            cd.extend_from_slice(&data);
            let with_cd = udp6_full(client, listen, 40000, 3478, &cd);
            let plain = udp6_full(relay, peer, 50000, 9000, &data);
            let l_cd = (8 + cd.len()) as u16;
            let l_plain = (8 + data.len()) as u16;
            let mut old = udp_words::<16, 40>(client, listen, 40000, 3478, l_cd).to_vec();
            old.extend_from_slice(&cd[..4]);
            let new = udp_words::<16, 40>(relay, peer, 50000, 9000, l_plain);
            assert_eq!(udp_update(with_cd, &old, &new), plain, "strip {data_len}");
            assert_eq!(udp_update(plain, &new, &old), with_cd, "prepend {data_len}");
        }
    }

    #[test]
    fn ipv4_words_match_the_hand_written_layout() {
        let w = udp_words::<4, 16>([1, 2, 3, 4], [5, 6, 7, 8], 0x0a0b, 0x0c0d, 0x0e0f);
        assert_eq!(
            w,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 0x0e, 0x0f, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f
            ]
        );
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        assert_eq!(udp_update(0, &[1, 2], &[3, 4]), 0);
    }

    #[test]
    fn ipv4_header_checksum_known_vector() {
        // From RFC 1071 discussions / Wikipedia's worked example.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&hdr), 0xb861);
    }

    #[test]
    fn counters_are_in_index_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert!(!Counter::Redirected.is_pass());
        assert!(Counter::PassNotIpv4.is_pass());
    }
}
