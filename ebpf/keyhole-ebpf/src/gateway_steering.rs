//! The gateway's STUN steering: two TC programs on the uplink that let a
//! userspace ICE agent share the port the kernel's WireGuard owns.
//!
//! - `keyhole_steer_in` (ingress): UDP to the WireGuard port whose payload
//!   is STUN (or, if enabled, TURN ChannelData) gets the ICE socket's port
//!   as its destination, so the socket layer delivers it there.
//! - `keyhole_steer_out` (egress): UDP from the ICE socket's port leaves
//!   with the WireGuard port as its source, so peers, NATs and TURN servers
//!   see one 5-tuple for ICE and WireGuard.
//!
//! The uplink is an Ethernet device: the IP header starts at offset 14.
//! IPv4 (any IHL, first fragments included: they carry the UDP header) and
//! IPv6 with UDP as the first next header. The UDP checksum is updated
//! incrementally (`bpf_l4_csum_replace`; a zero IPv4 checksum stays zero);
//! with CHECKSUM_PARTIAL the helper leaves the field to the offload, which
//! is correct since the port is part of the summed data.
//!
//! Only packets to (ingress) or from (egress) an address in
//! `STEERING_ADDRS` are touched: a router forwarding a client that uses the
//! same port keeps that client's traffic intact.
//!
//! Both return `TC_ACT_UNSPEC` (TCX: next program), never drop: whatever
//! else is attached to the uplink still sees every packet.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        macros::{classifier, map},
        maps::{Array, HashMap, PerCpuArray},
        programs::TcContext,
    };
    use keyhole_ebpf_common::steering::{
        MAX_STEERING_ADDRS, PayloadKind, SteeringConfig, SteeringCounter, addr_key_v4,
        classify_payload,
    };

    const TC_ACT_UNSPEC: i32 = -1;
    const ETH_HLEN: usize = 14;
    const ETH_P_IP: u16 = 0x0800;
    const ETH_P_IPV6: u16 = 0x86DD;
    const IPPROTO_UDP: u8 = 17;
    /// `bpf_l4_csum_replace`: a 2-byte field; leave a zero (absent IPv4)
    /// checksum alone and never write a zero one.
    const CSUM_FLAGS: u64 = 2 | 0x20;

    #[map(name = "STEERING_CONFIG")]
    static STEERING_CONFIG: Array<SteeringConfig> = Array::with_max_entries(1, 0);

    #[map(name = "STEERING_ADDRS")]
    static STEERING_ADDRS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_STEERING_ADDRS, 0);

    #[map(name = "STEERING_COUNTERS")]
    static STEERING_COUNTERS: PerCpuArray<u64> =
        PerCpuArray::with_max_entries(SteeringCounter::COUNT, 0);

    #[classifier]
    pub fn keyhole_steer_in(ctx: TcContext) -> i32 {
        if let Some(counter) = steer(&ctx, Direction::In) {
            count(counter);
        }
        TC_ACT_UNSPEC
    }

    #[classifier]
    pub fn keyhole_steer_out(ctx: TcContext) -> i32 {
        if let Some(counter) = steer(&ctx, Direction::Out) {
            count(counter);
        }
        TC_ACT_UNSPEC
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Direction {
        In,
        Out,
    }

    #[inline(always)]
    fn count(c: SteeringCounter) {
        if let Some(slot) = STEERING_COUNTERS.get_ptr_mut(c as u32) {
            // SAFETY: a per-CPU slot, only this CPU writes it while we run.
            unsafe { *slot += 1 };
        }
    }

    /// Rewrites the packet if it is ours to steer; returns what to count
    /// (`None`: not UDP on a configured port, nothing to count).
    #[inline(always)]
    fn steer(ctx: &TcContext, dir: Direction) -> Option<SteeringCounter> {
        let config = *STEERING_CONFIG.get(0)?;
        if config.wg_port == 0 || config.ice_port == 0 {
            return None;
        }
        let (l4, src, dst) = udp_offset(ctx)?;
        // Only our own addresses: forwarded traffic keeps its ports.
        let ours = match dir {
            Direction::In => dst,
            Direction::Out => src,
        };
        // SAFETY: a plain lookup; the value is not kept.
        if unsafe { STEERING_ADDRS.get(&ours) }.is_none() {
            return None;
        }
        let udp: [u8; 8] = ctx.load(l4).ok()?;
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        match dir {
            Direction::In => {
                if dport != config.wg_port {
                    return None;
                }
                let len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).saturating_sub(8);
                if len < 8 {
                    return Some(SteeringCounter::IngressWireGuard);
                }
                let head: [u8; 8] = match ctx.load(l4 + 8) {
                    Ok(h) => h,
                    Err(_) => return Some(SteeringCounter::Error),
                };
                let counter = match classify_payload(&head, len, config.flags) {
                    PayloadKind::Stun => SteeringCounter::IngressStun,
                    PayloadKind::ChannelData => SteeringCounter::IngressChannelData,
                    PayloadKind::Other => return Some(SteeringCounter::IngressWireGuard),
                };
                Some(
                    match rewrite_port(ctx, l4, 2, config.wg_port, config.ice_port) {
                        Ok(()) => counter,
                        Err(()) => SteeringCounter::Error,
                    },
                )
            }
            Direction::Out => {
                if sport != config.ice_port {
                    return None;
                }
                Some(
                    match rewrite_port(ctx, l4, 0, config.ice_port, config.wg_port) {
                        Ok(()) => SteeringCounter::EgressRewritten,
                        Err(()) => SteeringCounter::Error,
                    },
                )
            }
        }
    }

    /// The UDP header's offset and the source and destination addresses
    /// (map keys), if this is IPv4/IPv6 UDP with a header.
    #[inline(always)]
    fn udp_offset(ctx: &TcContext) -> Option<(usize, [u8; 16], [u8; 16])> {
        match u16::from_be(ctx.skb.protocol() as u16) {
            ETH_P_IP => {
                let hdr: [u8; 20] = ctx.load(ETH_HLEN).ok()?;
                if hdr[0] >> 4 != 4 || hdr[9] != IPPROTO_UDP {
                    return None;
                }
                // Non-first fragments carry no UDP header.
                if u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff != 0 {
                    return None;
                }
                let ihl = usize::from(hdr[0] & 0x0f) * 4;
                if ihl < 20 {
                    return None;
                }
                let src = addr_key_v4([hdr[12], hdr[13], hdr[14], hdr[15]]);
                let dst = addr_key_v4([hdr[16], hdr[17], hdr[18], hdr[19]]);
                Some((ETH_HLEN + ihl, src, dst))
            }
            ETH_P_IPV6 => {
                let hdr: [u8; 40] = ctx.load(ETH_HLEN).ok()?;
                if hdr[0] >> 4 != 6 || hdr[6] != IPPROTO_UDP {
                    return None;
                }
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src.copy_from_slice(&hdr[8..24]);
                dst.copy_from_slice(&hdr[24..40]);
                Some((ETH_HLEN + 40, src, dst))
            }
            _ => None,
        }
    }

    /// Replaces the port `field` bytes into the UDP header at `l4` (`from`
    /// → `to`, host order) and fixes the UDP checksum (header offset 6).
    #[inline(always)]
    fn rewrite_port(
        ctx: &TcContext,
        l4: usize,
        field: usize,
        from: u16,
        to: u16,
    ) -> Result<(), ()> {
        let to_be = to.to_be_bytes();
        // The helper sums the raw (network order) 16-bit values.
        let old = u64::from(u16::from_ne_bytes(from.to_be_bytes()));
        let new = u64::from(u16::from_ne_bytes(to_be));
        ctx.l4_csum_replace(l4 + 6, old, new, CSUM_FLAGS)
            .map_err(|_| ())?;
        ctx.store(l4 + field, &to_be, 0).map_err(|_| ())
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// Host builds of this crate are empty: the programs only exist for BPF.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
