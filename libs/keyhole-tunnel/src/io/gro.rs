//! TCP receive coalescing for the TUN write batch (what the kernel's GRO
//! does for a NIC): consecutive segments of one TCP flow become one GSO
//! packet with a virtio-net header, so the kernel's TCP stack runs once per
//! up to 64 KiB. tun-rs has the same (`send_multiple`), but copies and
//! allocates every packet; this works in the batch's own buffers.
//!
//! Segments only join when nothing the receiver would act on differs: same
//! addresses, ports, ACK, window, options, TOS/TTL (flow label/hop limit),
//! only ACK (and PSH on the last) set, contiguous sequence numbers, equal
//! sizes but the last. Anything else, and any non-TCP packet, is written
//! as it is, and a flow's open group is closed before one of its packets
//! is written alone, so a flow's bytes keep their order. The checksums of
//! joined segments are not verified: they come out of WireGuard, which
//! authenticated them, and the kernel checksums the merged packet anew.

use tun_rs::VIRTIO_NET_HDR_LEN;

/// One GSO packet may not exceed an IP packet's 64 KiB.
const MAX_GSO_LEN: usize = 65_535;
const MAX_SEGMENTS: u16 = 64;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;

/// A TCP segment's layout in its packet.
#[derive(Clone, Copy)]
struct Segment {
    v6: bool,
    iph: usize,
    tcph: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// A group being built: the packet everything is appended to.
struct Group {
    head: usize,
    seg: Segment,
    next_seq: u32,
    count: u16,
    open: bool,
}

#[derive(Default)]
pub(crate) struct Coalescer {
    groups: Vec<Group>,
    /// Indices of the batch to write, in order.
    pub(crate) order: Vec<usize>,
}

impl Coalescer {
    /// Coalesces `bufs` (each: room for the virtio-net header, then an IP
    /// packet) in place and fills every written packet's header;
    /// [`Coalescer::order`] lists what to write.
    pub(crate) fn run(&mut self, bufs: &mut [Vec<u8>]) {
        self.groups.clear();
        self.order.clear();
        for i in 0..bufs.len() {
            let pkt = &bufs[i][VIRTIO_NET_HDR_LEN..];
            let Some((seg, candidate)) = parse(pkt) else {
                // Not TCP: it cannot reorder a TCP flow.
                self.alone(bufs, i);
                continue;
            };
            let found = self
                .groups
                .iter()
                .rposition(|g| same_flow(&bufs[g.head][VIRTIO_NET_HDR_LEN..], pkt, &seg, &g.seg));
            if !candidate {
                if let Some(g) = found {
                    self.groups[g].open = false;
                }
                self.alone(bufs, i);
                continue;
            }
            if let Some(g) = found
                && self.groups[g].open
                && self.try_append(bufs, g, i, &seg)
            {
                continue;
            }
            if let Some(g) = found {
                self.groups[g].open = false;
            }
            self.groups.push(Group {
                head: i,
                seg,
                next_seq: seg.seq.wrapping_add(seg.payload as u32),
                count: 1,
                // A short or pushed segment ends its group at once.
                open: seg.flags & TCP_PSH == 0,
            });
            self.order.push(i);
        }
        for g in &self.groups {
            finish(&mut bufs[g.head], g);
        }
    }

    fn alone(&mut self, bufs: &mut [Vec<u8>], i: usize) {
        bufs[i][..VIRTIO_NET_HDR_LEN].fill(0);
        self.order.push(i);
    }

    /// Appends packet `i` to group `g` if it continues it.
    fn try_append(&mut self, bufs: &mut [Vec<u8>], g: usize, i: usize, seg: &Segment) -> bool {
        let group = &mut self.groups[g];
        let head_len = bufs[group.head].len() - VIRTIO_NET_HDR_LEN;
        if seg.seq != group.next_seq
            || seg.payload > group.seg.payload
            || group.count >= MAX_SEGMENTS
            || head_len + seg.payload > MAX_GSO_LEN
            || !headers_match(
                &bufs[group.head][VIRTIO_NET_HDR_LEN..],
                &bufs[i][VIRTIO_NET_HDR_LEN..],
                seg,
            )
        {
            return false;
        }
        let (head, pkt) = two(bufs, group.head, i);
        let start = VIRTIO_NET_HDR_LEN + seg.iph + seg.tcph;
        head.extend_from_slice(&pkt[start..start + seg.payload]);
        if seg.flags & TCP_PSH != 0 {
            head[VIRTIO_NET_HDR_LEN + seg.iph + 13] |= TCP_PSH;
        }
        group.next_seq = group.next_seq.wrapping_add(seg.payload as u32);
        group.count += 1;
        // Only the last segment may be shorter; PSH ends the group too.
        group.open = seg.payload == group.seg.payload && seg.flags & TCP_PSH == 0;
        true
    }
}

/// `bufs[a]` mutably and `bufs[b]` shared, `a != b`.
fn two(bufs: &mut [Vec<u8>], a: usize, b: usize) -> (&mut Vec<u8>, &Vec<u8>) {
    if a < b {
        let (x, y) = bufs.split_at_mut(b);
        (&mut x[a], &y[0])
    } else {
        let (x, y) = bufs.split_at_mut(a);
        (&mut y[0], &x[b])
    }
}

/// The TCP layout of `pkt`, and whether it may join a group (only ACK or
/// ACK|PSH, some payload); `None` for anything but a plain TCP packet.
fn parse(pkt: &[u8]) -> Option<(Segment, bool)> {
    let (v6, iph) = match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0F) * 4;
            let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
            // No options, no fragments, the length as the header says.
            if ihl != 20 || pkt.len() < 20 || total != pkt.len() || pkt[9] != 6 {
                return None;
            }
            if pkt[6] & 0x3F != 0 || pkt[7] != 0 {
                return None;
            }
            (false, 20)
        }
        6 => {
            if pkt.len() < 40 || pkt[6] != 6 {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if payload + 40 != pkt.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let tcp = pkt.get(iph..iph + 20)?;
    let tcph = usize::from(tcp[12] >> 4) * 4;
    if tcph < 20 || pkt.len() < iph + tcph {
        return None;
    }
    let seg = Segment {
        v6,
        iph,
        tcph,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags: tcp[13],
        payload: pkt.len() - iph - tcph,
    };
    let candidate = (seg.flags == TCP_ACK || seg.flags == TCP_ACK | TCP_PSH) && seg.payload > 0;
    Some((seg, candidate))
}

/// Same addresses and ports.
fn same_flow(a: &[u8], b: &[u8], sa: &Segment, sb: &Segment) -> bool {
    if sa.v6 != sb.v6 {
        return false;
    }
    let addrs = if sa.v6 { 8..40 } else { 12..20 };
    a[addrs.clone()] == b[addrs] && a[sa.iph..sa.iph + 4] == b[sb.iph..sb.iph + 4]
}

/// Everything but length, ID, checksums, sequence number and PSH agrees.
fn headers_match(head: &[u8], pkt: &[u8], seg: &Segment) -> bool {
    let ip_same = if seg.v6 {
        head[..4] == pkt[..4] && head[7] == pkt[7]
    } else {
        // TOS, DF, TTL.
        head[1] == pkt[1] && head[6] == pkt[6] && head[8] == pkt[8]
    };
    let (h, p) = (&head[seg.iph..], &pkt[seg.iph..]);
    let tcph = usize::from(h[12] >> 4) * 4;
    ip_same
        && tcph == seg.tcph
        // ACK number, data offset.
        && h[8..13] == p[8..13]
        // Window, urgent pointer, options.
        && h[14..16] == p[14..16]
        && h[18..tcph] == p[18..tcph]
}

/// Fixes up a group's head packet and writes its virtio-net header: a
/// plain packet (count 1) goes as it is; a merged one gets its lengths,
/// IPv4 header checksum, the TCP pseudo-header sum (the kernel finishes
/// the checksum) and GSO fields.
fn finish(buf: &mut [u8], g: &Group) {
    let (hdr, pkt) = buf.split_at_mut(VIRTIO_NET_HDR_LEN);
    if g.count == 1 {
        hdr.fill(0);
        return;
    }
    let s = &g.seg;
    let len = pkt.len();
    let tcp_len = len - s.iph;
    let mut sum: u32 = 0;
    if s.v6 {
        pkt[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        sum += words(&pkt[8..40]);
    } else {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let ip_sum = !fold(words(&pkt[..20]));
        pkt[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        sum += words(&pkt[12..20]);
    }
    sum += 6 + tcp_len as u32;
    pkt[s.iph + 16..s.iph + 18].copy_from_slice(&fold(sum).to_be_bytes());
    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    hdr[1] = if s.v6 {
        VIRTIO_NET_HDR_GSO_TCPV6
    } else {
        VIRTIO_NET_HDR_GSO_TCPV4
    };
    let fields = [
        (s.iph + s.tcph) as u16,
        s.payload as u16,
        s.iph as u16,
        16, // TCP checksum offset
    ];
    for (k, v) in fields.iter().enumerate() {
        hdr[2 + 2 * k..4 + 2 * k].copy_from_slice(&v.to_ne_bytes());
    }
}

/// Sum of big-endian 16-bit words (`b` has even length here).
fn words(b: &[u8]) -> u32 {
    b.chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP segment with a correct checksum, behind header room.
    fn seg(sport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = 40 + payload.len();
        let mut p = vec![0u8; VIRTIO_NET_HDR_LEN + len];
        let ip = &mut p[VIRTIO_NET_HDR_LEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let s = !fold(words(&ip[..20]));
        ip[10..12].copy_from_slice(&s.to_be_bytes());
        ip[20..22].copy_from_slice(&sport.to_be_bytes());
        ip[22..24].copy_from_slice(&5201u16.to_be_bytes());
        ip[24..28].copy_from_slice(&seq.to_be_bytes());
        ip[28..32].copy_from_slice(&77u32.to_be_bytes());
        ip[32] = 5 << 4;
        ip[33] = flags;
        ip[34..36].copy_from_slice(&512u16.to_be_bytes());
        ip[40..].copy_from_slice(payload);
        let sum = words(&ip[12..20]) + 6 + (len - 20) as u32 + tcp_words(&ip[20..]);
        ip[36..38].copy_from_slice(&(!fold(sum)).to_be_bytes());
        p
    }

    fn tcp_words(b: &[u8]) -> u32 {
        let mut v = b.to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        words(&v)
    }

    fn hdr(buf: &[u8]) -> (u8, u8, u16, u16, u16, u16) {
        let f = |k: usize| u16::from_ne_bytes([buf[2 + 2 * k], buf[3 + 2 * k]]);
        (buf[0], buf[1], f(0), f(1), f(2), f(3))
    }

    #[test]
    fn contiguous_segments_of_a_flow_merge_and_the_rest_stays_in_order() {
        let mut c = Coalescer::default();
        let mut bufs = vec![
            seg(1000, 0, TCP_ACK, &[1; 100]),
            seg(1000, 100, TCP_ACK, &[2; 100]),
            seg(2000, 0, TCP_ACK, &[9; 100]),
            seg(1000, 200, TCP_ACK | TCP_PSH, &[3; 60]),
            // After the push the group is closed: a new one starts.
            seg(1000, 260, TCP_ACK, &[4; 100]),
            // A gap in sequence numbers starts another.
            seg(1000, 999, TCP_ACK, &[5; 100]),
            vec![0; VIRTIO_NET_HDR_LEN + 1], // not IP
        ];
        c.run(&mut bufs);
        assert_eq!(c.order, vec![0, 2, 4, 5, 6]);
        let head = &bufs[0];
        assert_eq!(head.len(), VIRTIO_NET_HDR_LEN + 40 + 260);
        assert_eq!(
            hdr(head),
            (
                VIRTIO_NET_HDR_F_NEEDS_CSUM,
                VIRTIO_NET_HDR_GSO_TCPV4,
                40,
                100,
                20,
                16
            )
        );
        let ip = &head[VIRTIO_NET_HDR_LEN..];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 300);
        assert_eq!(fold(words(&ip[..20])), 0xFFFF, "IPv4 header checksum");
        assert_eq!(ip[33], TCP_ACK | TCP_PSH, "the push carried over");
        assert_eq!(&ip[40..140], &[1; 100][..]);
        assert_eq!(&ip[140..240], &[2; 100][..]);
        assert_eq!(&ip[240..300], &[3; 60][..]);
        // The kernel adds the segment sums to the pseudo-header sum left
        // in the checksum field: the result must verify.
        let mut t = ip[20..].to_vec();
        let partial = u16::from_be_bytes([t[16], t[17]]);
        t[16..18].fill(0);
        let full = !fold(u32::from(partial) + tcp_words(&t));
        t[16..18].copy_from_slice(&full.to_be_bytes());
        let check = words(&ip[12..20]) + 6 + 280 + tcp_words(&t);
        assert_eq!(fold(check), 0xFFFF, "TCP checksum once completed");
        // Single packets go without GSO.
        for i in [2, 4, 5, 6] {
            assert_eq!(hdr(&bufs[i]), (0, 0, 0, 0, 0, 0), "packet {i}");
        }
    }

    /// An IPv6 TCP segment with a correct checksum, behind header room.
    fn seg6(seq: u32, payload: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + payload.len();
        let mut p = vec![0u8; VIRTIO_NET_HDR_LEN + 40 + tcp_len];
        let ip = &mut p[VIRTIO_NET_HDR_LEN..];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        ip[40..42].copy_from_slice(&4000u16.to_be_bytes());
        ip[42..44].copy_from_slice(&443u16.to_be_bytes());
        ip[44..48].copy_from_slice(&seq.to_be_bytes());
        ip[52] = 5 << 4;
        ip[53] = TCP_ACK;
        ip[54..56].copy_from_slice(&512u16.to_be_bytes());
        ip[60..].copy_from_slice(payload);
        let sum = words(&ip[8..40]) + 6 + tcp_len as u32 + tcp_words(&ip[40..]);
        ip[56..58].copy_from_slice(&(!fold(sum)).to_be_bytes());
        p
    }

    #[test]
    fn ipv6_segments_merge_with_a_valid_partial_checksum() {
        let mut c = Coalescer::default();
        let mut bufs = vec![seg6(5, &[1; 64]), seg6(69, &[2; 64]), seg6(133, &[3; 10])];
        c.run(&mut bufs);
        assert_eq!(c.order, vec![0]);
        let head = &bufs[0];
        assert_eq!(
            hdr(head),
            (
                VIRTIO_NET_HDR_F_NEEDS_CSUM,
                VIRTIO_NET_HDR_GSO_TCPV6,
                60,
                64,
                40,
                16
            )
        );
        let ip = &head[VIRTIO_NET_HDR_LEN..];
        assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), 20 + 138);
        let mut t = ip[40..].to_vec();
        let partial = u16::from_be_bytes([t[16], t[17]]);
        t[16..18].fill(0);
        let full = !fold(u32::from(partial) + tcp_words(&t));
        t[16..18].copy_from_slice(&full.to_be_bytes());
        let check = words(&ip[8..40]) + 6 + t.len() as u32 + tcp_words(&t);
        assert_eq!(fold(check), 0xFFFF);
    }

    #[test]
    fn a_lone_packet_of_a_flow_closes_its_group() {
        let mut c = Coalescer::default();
        let mut bufs = vec![
            seg(1000, 0, TCP_ACK, &[1; 100]),
            // FIN: written alone, after the group; later data must not
            // join the group written before it.
            seg(1000, 100, TCP_ACK | 0x01, &[2; 100]),
            seg(1000, 200, TCP_ACK, &[3; 100]),
        ];
        c.run(&mut bufs);
        assert_eq!(c.order, vec![0, 1, 2]);
        assert_eq!(bufs[0].len(), VIRTIO_NET_HDR_LEN + 140);
    }

    #[test]
    fn differing_ack_or_window_does_not_merge() {
        let mut c = Coalescer::default();
        let mut a = seg(1000, 100, TCP_ACK, &[2; 100]);
        a[VIRTIO_NET_HDR_LEN + 31] = 78; // another ACK number
        let mut w = seg(1000, 100, TCP_ACK, &[2; 100]);
        w[VIRTIO_NET_HDR_LEN + 35] = 1; // another window
        for other in [a, w] {
            let mut bufs = vec![seg(1000, 0, TCP_ACK, &[1; 100]), other];
            c.run(&mut bufs);
            assert_eq!(c.order, vec![0, 1]);
        }
    }
}
