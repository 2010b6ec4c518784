//! Hand-built IP packets for the cases real sockets can't produce on
//! demand: fragments, extension headers, truncated headers.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet. `frag` is the 16-bit flags+offset field; `options` is
/// appended to the header (a multiple of 4 bytes).
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 20 + options.len();
    let total = (ihl + payload.len()) as u16;
    let mut p = vec![0x40 | (ihl / 4) as u8, 0];
    p.extend(total.to_be_bytes());
    p.extend([0x12, 0x34]);
    p.extend(frag.to_be_bytes());
    p.extend([64, proto, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(options);
    let sum = checksum(&[&p]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend(payload);
    p
}

/// A UDP datagram for IPv4 (checksum 0: "none", legal on IPv4).
pub fn udp4(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(sport.to_be_bytes());
    u.extend(dport.to_be_bytes());
    u.extend(((8 + data.len()) as u16).to_be_bytes());
    u.extend([0, 0]);
    u.extend(data);
    u
}

/// A UDP datagram for IPv6, with its mandatory checksum.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = udp4(sport, dport, data);
    let sum = checksum(&[&pseudo6(src, dst, UDP, u.len()), &u]);
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    u
}

/// An ICMP (v4) message with a valid checksum.
pub fn icmp4(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0x4b, 0x48, 0, 1];
    m.extend(data);
    let sum = checksum(&[&m]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// An ICMPv6 message with a valid checksum.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0x4b, 0x48, 0, 1];
    m.extend(data);
    let sum = checksum(&[&pseudo6(src, dst, ICMPV6, m.len()), &m]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend((len as u32).to_be_bytes());
    p.extend([0, 0, 0, next]);
    p
}

/// An IPv6 packet: `next` is the first next-header, `rest` holds any
/// extension headers followed by the upper-layer message.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend((rest.len() as u16).to_be_bytes());
    p.extend([next, 64]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(rest);
    p
}

/// An 8-byte extension header of the options kind (hop-by-hop,
/// destination options) holding one PadN option.
pub fn ext_opts(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// A fragment header: `offset` in 8-byte units, `more` fragments flag.
pub fn ext_fragment(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let field = (offset << 3) | u16::from(more);
    let mut h = vec![next, 0];
    h.extend(field.to_be_bytes());
    h.extend([0, 0, 0x12, 0x34]);
    h
}

/// A segment-routing style routing header (type 4) with no segments left.
pub fn ext_routing(next: u8) -> Vec<u8> {
    vec![next, 0, 4, 0, 0, 0, 0, 0]
}
