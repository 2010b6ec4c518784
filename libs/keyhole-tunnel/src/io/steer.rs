//! Which TUN queue a decrypted packet is written to. Linux learns a flow's
//! queue from the queue its packets are written on (tun's automatic flow
//! steering, keyed by a symmetric hash) and hands the flow's outgoing
//! packets to that queue. Writing everything on one queue would steer
//! every flow there; spreading writes by a symmetric hash of the flow
//! spreads the reads, one flow per queue, so its order is kept.

/// The queue of `packet` among `queues`: the same for both directions of
/// a TCP/UDP flow (addresses and ports sorted), 0 for what is not IP.
pub(crate) fn queue_of(packet: &[u8], queues: usize) -> usize {
    if queues <= 1 {
        return 0;
    }
    let Some(&first) = packet.first() else {
        return 0;
    };
    let (src, dst, proto, l4) = match first >> 4 {
        4 if packet.len() >= 20 => {
            let ihl = usize::from(first & 0x0F) * 4;
            (&packet[12..16], &packet[16..20], packet[9], ihl)
        }
        6 if packet.len() >= 40 => (&packet[8..24], &packet[24..40], packet[6], 40),
        _ => return 0,
    };
    let (a, b) = if src <= dst { (src, dst) } else { (dst, src) };
    let mut h = fnv(fnv(FNV_OFFSET, a), b);
    h = fnv(h, &[proto]);
    // TCP and UDP ports, sorted like the addresses.
    if (proto == 6 || proto == 17) && packet.len() >= l4 + 4 {
        let (p, q) = (&packet[l4..l4 + 2], &packet[l4 + 2..l4 + 4]);
        let (p, q) = if p <= q { (p, q) } else { (q, p) };
        h = fnv(fnv(h, p), q);
    }
    (h % queues as u64) as usize
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn both_directions_of_a_flow_share_a_queue_and_flows_spread() {
        let mut used = [false; 4];
        for port in 40_000..40_064 {
            let there = tcp4([10, 0, 0, 1], [10, 0, 0, 2], port, 5201);
            let back = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 5201, port);
            let q = queue_of(&there, 4);
            assert_eq!(q, queue_of(&back, 4), "port {port}");
            used[q] = true;
        }
        assert_eq!(used, [true; 4], "64 flows over 4 queues use them all");
        assert_eq!(queue_of(&[], 4), 0);
        assert_eq!(queue_of(&[0x45, 0, 0], 4), 0);
        assert_eq!(queue_of(&tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2), 1), 0);
    }
}
