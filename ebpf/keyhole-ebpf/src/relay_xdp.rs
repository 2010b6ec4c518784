//! The relay's XDP ChannelData fast path.
//!
//! Two kinds of UDP datagram are relayed here without waking userspace:
//! - ChannelData from a client to the listener on a channel userspace bound:
//!   the 4-byte header is stripped and the datagram leaves from the
//!   allocation's relayed address to the peer;
//! - a datagram from a peer to a relayed port with a channel bound to that
//!   peer: a ChannelData header is put in front and it leaves from the
//!   listener to the client.
//!
//! The maps hold only channels whose peer also has a live permission;
//! userspace mirrors the TURN core's events into them. Everything else
//! (STUN, unknown traffic, IP options, IPv6 extension headers, fragments,
//! length mismatches, a missing neighbour entry) goes to the kernel stack
//! with XDP_PASS and is counted by reason.
//!
//! IPv4 and IPv6 each have their own pair of maps; a channel whose client
//! and peer are of different families is never in them (userspace relays
//! it).
//!
//! Egress: `bpf_fib_lookup` picks the interface and both MAC addresses, so
//! the next hop is right even when it is not the sender; same interface →
//! XDP_TX, another → `bpf_redirect`. The helper needs forwarding enabled on
//! the ingress interface; without it, or without a neighbour entry, the
//! packet passes to userspace, which relays it the slow way.
//!
//! Checksums: the IPv4 header checksum is computed afresh (20 bytes); the
//! UDP checksum is updated incrementally (RFC 1624) for the changed
//! pseudo-header, header and ChannelData words, so the payload is never
//! read. IPv6 has no header checksum and a mandatory UDP checksum: a
//! datagram that arrives without one (zero) is left to userspace.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::{
            BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
            BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action,
        },
        helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_xdp_adjust_head},
        macros::{map, xdp},
        maps::{Array, HashMap, PerCpuArray},
        programs::XdpContext,
    };
    use core::mem::MaybeUninit;
    use keyhole_ebpf_common::relay::{
        Counter, DEFAULT_MAX_CHANNELS, RelayConfig, TX_TEMPLATE_WORDS, ToClientKeyV4,
        ToClientKeyV6, ToClientV4, ToClientV6, ToPeerKeyV4, ToPeerKeyV6, ToPeerV4, ToPeerV6, csum,
    };

    const ETH_LEN: usize = 14;
    const IP_LEN: usize = 20;
    const UDP_LEN: usize = 8;
    /// Ethernet + IPv4 without options + UDP.
    const HDRS: usize = ETH_LEN + IP_LEN + UDP_LEN;
    const CD_LEN: usize = 4;
    const ETH_P_IP: [u8; 2] = [0x08, 0x00];
    const IPPROTO_UDP: u8 = 17;
    const AF_INET: u8 = 2;
    /// TTL of datagrams the relay originates, as the kernel's default.
    const TTL: u8 = 64;

    #[map(name = "RELAY_TO_PEER_V4")]
    static TO_PEER_V4: HashMap<ToPeerKeyV4, ToPeerV4> =
        HashMap::with_max_entries(DEFAULT_MAX_CHANNELS, 0);

    #[map(name = "RELAY_TO_CLIENT_V4")]
    static TO_CLIENT_V4: HashMap<ToClientKeyV4, ToClientV4> =
        HashMap::with_max_entries(DEFAULT_MAX_CHANNELS, 0);

    #[map(name = "RELAY_TO_PEER_V6")]
    static TO_PEER_V6: HashMap<ToPeerKeyV6, ToPeerV6> =
        HashMap::with_max_entries(DEFAULT_MAX_CHANNELS, 0);

    #[map(name = "RELAY_TO_CLIENT_V6")]
    static TO_CLIENT_V6: HashMap<ToClientKeyV6, ToClientV6> =
        HashMap::with_max_entries(DEFAULT_MAX_CHANNELS, 0);

    #[map(name = "RELAY_CONFIG")]
    static CONFIG: Array<RelayConfig> = Array::with_max_entries(1, 0);

    #[map(name = "RELAY_COUNTERS")]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

    #[inline(always)]
    fn count(counter: Counter, n: u64) {
        if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
            // SAFETY: a per-CPU slot, only this CPU writes it while we run.
            unsafe { *c += n };
        }
    }

    #[xdp]
    pub fn keyhole_relay(ctx: XdpContext) -> u32 {
        match relay(&ctx) {
            Ok(action) => action,
            Err(reason) => {
                count(reason, 1);
                xdp_action::XDP_PASS
            }
        }
    }

    /// Passes everything: on the far end of a veth it makes native-mode
    /// XDP_TX/redirected frames receivable.
    #[xdp]
    pub fn keyhole_xdp_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    #[map(name = "RELAY_TX_TEMPLATE")]
    static TX_TEMPLATE: Array<[u64; TX_TEMPLATE_WORDS]> = Array::with_max_entries(1, 0);

    /// The benchmark's traffic source: run with BPF_PROG_TEST_RUN and
    /// `BPF_F_TEST_XDP_LIVE_FRAMES`, XDP_TX sends the test frame out of the
    /// device named in the context, as a NIC's receive path would deliver
    /// it to the far end, without a socket or skb per frame.
    ///
    /// The kernel writes a page's frame only when it first allocates it; a
    /// receiver that rewrote headers in place (the fast path does) hands
    /// the page back changed. So the headers are written afresh from the
    /// template every time, as each frame off a wire would be new.
    #[xdp]
    pub fn keyhole_xdp_tx(ctx: XdpContext) -> u32 {
        const LEN: usize = TX_TEMPLATE_WORDS * 8;
        let data = ctx.data();
        if data + LEN > ctx.data_end() {
            return xdp_action::XDP_ABORTED;
        }
        let Some(t) = TX_TEMPLATE.get(0) else {
            return xdp_action::XDP_ABORTED;
        };
        for (i, w) in t.iter().enumerate() {
            // SAFETY: bounds checked above for all LEN bytes.
            unsafe { core::ptr::write_unaligned((data + i * 8) as *mut u64, *w) };
        }
        xdp_action::XDP_TX
    }

    #[map(name = "RELAY_SINK_COUNTERS")]
    static SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

    /// The benchmark's traffic sink: counts UDP datagrams (slot 0) and
    /// their payload bytes (slot 1) and drops them, so no receiving socket
    /// or stack limits what a relay is measured at; all else passes.
    #[xdp]
    pub fn keyhole_xdp_sink(ctx: XdpContext) -> u32 {
        let data = ctx.data();
        let end = ctx.data_end();
        if data + ETH_LEN > end {
            return xdp_action::XDP_PASS;
        }
        // SAFETY: bounds checked above.
        let ethertype = unsafe { core::ptr::read_unaligned((data + 12) as *const [u8; 2]) };
        // Offset of the UDP header: IPv4 without options, or IPv6 without
        // extension headers.
        let (udp_at, proto_at) = if ethertype == ETH_P_IP {
            (ETH_LEN + IP_LEN, ETH_LEN + 9)
        } else if ethertype == v6::ETH_P_IPV6 {
            (ETH_LEN + 40, ETH_LEN + 6)
        } else {
            return xdp_action::XDP_PASS;
        };
        if data + udp_at + UDP_LEN > end {
            return xdp_action::XDP_PASS;
        }
        // SAFETY: bounds checked above (proto_at < udp_at).
        let proto = unsafe { *((data + proto_at) as *const u8) };
        if proto != IPPROTO_UDP {
            return xdp_action::XDP_PASS;
        }
        // STUN (first two bits 00) passes: a TURN client behind the sink
        // still gets its control answers; its ChannelData is counted.
        if data + udp_at + UDP_LEN + 1 <= end {
            // SAFETY: bounds checked just above.
            let first = unsafe { *((data + udp_at + UDP_LEN) as *const u8) };
            if first & 0xc0 == 0 {
                return xdp_action::XDP_PASS;
            }
        }
        // SAFETY: bounds checked above.
        let len = unsafe { core::ptr::read_unaligned((data + udp_at + 4) as *const [u8; 2]) };
        let payload = u64::from(u16::from_be_bytes(len).saturating_sub(UDP_LEN as u16));
        for (slot, n) in [(0u32, 1u64), (1, payload)] {
            if let Some(c) = SINK.get_ptr_mut(slot) {
                // SAFETY: a per-CPU slot, only this CPU writes it while we run.
                unsafe { *c += n };
            }
        }
        xdp_action::XDP_DROP
    }

    /// The fields of an Ethernet + IPv4 + UDP datagram the fast path uses.
    struct Udp4 {
        tos: u8,
        id: [u8; 2],
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        /// UDP length (header included), equal to the IP payload length.
        udp_len: u16,
        check: u16,
    }

    #[inline(always)]
    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    #[inline(always)]
    fn parse(ctx: &XdpContext) -> Result<Udp4, Counter> {
        let data = ctx.data();
        let end = ctx.data_end();
        if data + ETH_LEN > end {
            return Err(Counter::PassNotIpv4);
        }
        // SAFETY: bounds checked above.
        let ethertype = unsafe { core::ptr::read_unaligned((data + 12) as *const [u8; 2]) };
        if ethertype != ETH_P_IP {
            return Err(Counter::PassNotIpv4);
        }
        if data + HDRS > end {
            return Err(Counter::PassNotUdp);
        }
        // SAFETY: bounds checked above, whole headers at once.
        let h = unsafe { core::ptr::read_unaligned(data as *const [u8; HDRS]) };
        if h[14] >> 4 != 4 {
            return Err(Counter::PassNotIpv4);
        }
        if h[14] & 0x0f != 5 || be16(&h, 20) & 0x3fff != 0 {
            return Err(Counter::PassIpOptionsOrFragment);
        }
        if h[23] != IPPROTO_UDP {
            return Err(Counter::PassNotUdp);
        }
        let total = be16(&h, 16);
        let udp_len = be16(&h, 38);
        if usize::from(total) < IP_LEN + UDP_LEN
            || data + ETH_LEN + usize::from(total) > end
            || udp_len != total - IP_LEN as u16
        {
            return Err(Counter::PassNotUdp);
        }
        Ok(Udp4 {
            tos: h[15],
            id: [h[18], h[19]],
            src: [h[26], h[27], h[28], h[29]],
            dst: [h[30], h[31], h[32], h[33]],
            sport: be16(&h, 34),
            dport: be16(&h, 36),
            udp_len,
            check: be16(&h, 40),
        })
    }

    #[inline(always)]
    fn relay(ctx: &XdpContext) -> Result<u32, Counter> {
        let data = ctx.data();
        if data + ETH_LEN > ctx.data_end() {
            return Err(Counter::PassNotIpv4);
        }
        // SAFETY: bounds checked above.
        let ethertype = unsafe { core::ptr::read_unaligned((data + 12) as *const [u8; 2]) };
        if ethertype == v6::ETH_P_IPV6 {
            v6::relay(ctx)
        } else {
            relay4(ctx)
        }
    }

    // Each family in its own BPF subprogram, so the stack of one does not
    // add to the other's (the 512-byte limit).
    #[inline(never)]
    fn relay4(ctx: &XdpContext) -> Result<u32, Counter> {
        let pkt = parse(ctx)?;
        let cfg = CONFIG.get(0).ok_or(Counter::PassNotRelayed)?;
        if cfg.listen_port != 0
            && pkt.dport == cfg.listen_port
            && (cfg.listen_addr == [0; 4] || cfg.listen_addr == pkt.dst)
        {
            to_peer(ctx, &pkt)
        } else if cfg.listen_port != 0 {
            to_client(ctx, &pkt, cfg)
        } else {
            Err(Counter::PassNotRelayed)
        }
    }

    /// Zeroes lookup parameters in place, a word at a time: zeroed(), or a
    /// zeroed value moved into place, becomes a call to a byte-by-byte
    /// memset subprogram, measured at 3 % of the fast path's CPU time.
    #[inline(always)]
    fn fib_params(p: &mut FibParams) -> &mut bpf_fib_lookup {
        const WORDS: usize = core::mem::size_of::<bpf_fib_lookup>() / 8;
        let w = p.0.as_mut_ptr() as *mut u64;
        for i in 0..WORDS {
            // SAFETY: i < WORDS, inside p; volatile so that LLVM keeps the
            // stores instead of turning them back into a memset call.
            unsafe { core::ptr::write_volatile(w.add(i), 0) };
        }
        // SAFETY: a plain C struct of integers, every byte now zero (its
        // size is a multiple of 8: checked below).
        unsafe { p.0.assume_init_mut() }
    }

    /// Lookup parameters on an 8-byte boundary, for 8-byte stores (the
    /// verifier refuses misaligned stack access).
    #[repr(C, align(8))]
    struct FibParams(MaybeUninit<bpf_fib_lookup>);
    const _: () = assert!(core::mem::size_of::<bpf_fib_lookup>() % 8 == 0);

    /// Where a rewritten datagram leaves.
    struct Egress {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    }

    #[inline(always)]
    fn route(ctx: &XdpContext, src: [u8; 4], dst: [u8; 4], total: u16) -> Result<Egress, Counter> {
        let mut params = FibParams(MaybeUninit::uninit());
        let p = fib_params(&mut params);
        p.family = AF_INET;
        p.l4_protocol = IPPROTO_UDP;
        p.__bindgen_anon_1.tot_len = total;
        p.ifindex = ctx.ingress_ifindex() as u32;
        p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
        // SAFETY: the helper reads and writes `p`, whose size we pass.
        let rc = unsafe {
            fib_lookup(
                ctx.ctx as *mut _,
                p,
                core::mem::size_of::<bpf_fib_lookup>() as i32,
                0,
            )
        };
        if rc < 0 {
            return Err(Counter::PassNoRoute);
        }
        match rc as u32 {
            BPF_FIB_LKUP_RET_SUCCESS => Ok(Egress {
                ifindex: p.ifindex,
                smac: p.smac,
                dmac: p.dmac,
            }),
            BPF_FIB_LKUP_RET_NO_NEIGH => Err(Counter::PassNoNeighbour),
            BPF_FIB_LKUP_RET_FWD_DISABLED => Err(Counter::PassForwardingDisabled),
            BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Counter::PassFragNeeded),
            _ => Err(Counter::PassNoRoute),
        }
    }

    /// Ethernet + IPv4 + UDP headers of a datagram the relay sends; the UDP
    /// checksum is filled in by the caller.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn headers(
        eg: &Egress,
        tos: u8,
        id: [u8; 2],
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        udp_len: u16,
        check: u16,
    ) -> [u8; HDRS] {
        let total = (udp_len + IP_LEN as u16).to_be_bytes();
        let mut ip = [
            0x45,
            tos,
            total[0],
            total[1],
            id[0],
            id[1],
            0x40, // DF, as the kernel sends UDP with path MTU discovery on
            0,
            TTL,
            IPPROTO_UDP,
            0,
            0,
            src[0],
            src[1],
            src[2],
            src[3],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
        ];
        let ip_check = csum::ipv4_header(&ip).to_be_bytes();
        ip[10] = ip_check[0];
        ip[11] = ip_check[1];
        let mut h = [0u8; HDRS];
        h[0..6].copy_from_slice(&eg.dmac);
        h[6..12].copy_from_slice(&eg.smac);
        h[12..14].copy_from_slice(&ETH_P_IP);
        h[14..34].copy_from_slice(&ip);
        h[34..36].copy_from_slice(&sport.to_be_bytes());
        h[36..38].copy_from_slice(&dport.to_be_bytes());
        h[38..40].copy_from_slice(&udp_len.to_be_bytes());
        h[40..42].copy_from_slice(&check.to_be_bytes());
        h
    }

    /// The checksum-relevant words of a UDP datagram: pseudo-header
    /// addresses and length, then the header's ports and length.
    #[inline(always)]
    fn words(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, udp_len: u16) -> [u8; 16] {
        let l = udp_len.to_be_bytes();
        let s = sport.to_be_bytes();
        let d = dport.to_be_bytes();
        [
            src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], l[0], l[1], s[0], s[1],
            d[0], d[1], l[0], l[1],
        ]
    }

    #[inline(always)]
    fn send(ctx: &XdpContext, eg: &Egress) -> u32 {
        if eg.ifindex == ctx.ingress_ifindex() as u32 {
            count(Counter::Tx, 1);
            xdp_action::XDP_TX
        } else {
            count(Counter::Redirected, 1);
            // SAFETY: plain helper call; flags 0 is the only valid value.
            unsafe { bpf_redirect(eg.ifindex, 0) as u32 }
        }
    }

    /// Client → peer: strip the ChannelData header.
    #[inline(always)]
    fn to_peer(ctx: &XdpContext, pkt: &Udp4) -> Result<u32, Counter> {
        let data = ctx.data();
        if data + HDRS + CD_LEN > ctx.data_end() {
            return Err(Counter::PassNotChannelData);
        }
        // SAFETY: bounds checked above.
        let cd = unsafe { core::ptr::read_unaligned((data + HDRS) as *const [u8; CD_LEN]) };
        if cd[0] & 0xc0 != 0x40 {
            return Err(Counter::PassNotChannelData);
        }
        let channel = u16::from_be_bytes([cd[0], cd[1]]);
        let len = u16::from_be_bytes([cd[2], cd[3]]);
        // Over UDP the payload is exactly the channel data (RFC 8656 §12.5
        // makes padding optional there); anything else is userspace's call.
        if u32::from(pkt.udp_len) != (UDP_LEN + CD_LEN) as u32 + u32::from(len) {
            return Err(Counter::PassBadLength);
        }
        let key = ToPeerKeyV4 {
            client_addr: pkt.src,
            client_port: pkt.sport,
            channel,
        };
        // SAFETY: the value is copied out at once.
        let to = *unsafe { TO_PEER_V4.get(&key) }.ok_or(Counter::PassNoChannel)?;
        let src = if to.relay_addr == [0; 4] {
            pkt.dst
        } else {
            to.relay_addr
        };
        let udp_len = pkt.udp_len - CD_LEN as u16;
        let eg = route(ctx, src, to.peer_addr, udp_len + IP_LEN as u16)?;

        let old = words(pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.udp_len);
        let mut old_all = [0u8; 20];
        old_all[..16].copy_from_slice(&old);
        old_all[16..].copy_from_slice(&cd);
        let new = words(src, to.peer_addr, to.relay_port, to.peer_port, udp_len);
        let check = csum::udp_update(pkt.check, &old_all, &new);
        let h = headers(
            &eg,
            pkt.tos,
            pkt.id,
            src,
            to.peer_addr,
            to.relay_port,
            to.peer_port,
            udp_len,
            check,
        );
        // The new headers end where the payload starts, then the packet
        // start moves past the 4 bytes that are left over.
        // SAFETY: data + 4 + HDRS == data + HDRS + CD_LEN, checked above.
        unsafe { core::ptr::write_unaligned((data + CD_LEN) as *mut [u8; HDRS], h) };
        // SAFETY: shrinking the head by 4 bytes of a packet at least that long.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, CD_LEN as i32) } != 0 {
            return Err(Counter::PassError);
        }
        count(Counter::ToPeerPackets, 1);
        count(Counter::ToPeerBytes, u64::from(len));
        Ok(send(ctx, &eg))
    }

    /// Peer → client: put a ChannelData header in front.
    #[inline(always)]
    fn to_client(ctx: &XdpContext, pkt: &Udp4, cfg: &RelayConfig) -> Result<u32, Counter> {
        let key = ToClientKeyV4 {
            peer_addr: pkt.src,
            peer_port: pkt.sport,
            relay_port: pkt.dport,
        };
        // SAFETY: the value is copied out at once.
        let to = *unsafe { TO_CLIENT_V4.get(&key) }.ok_or(Counter::PassNotRelayed)?;
        if to.relay_addr != [0; 4] && to.relay_addr != pkt.dst {
            return Err(Counter::PassNotRelayed);
        }
        let payload = pkt.udp_len - UDP_LEN as u16;
        if pkt.udp_len > u16::MAX - (IP_LEN + CD_LEN) as u16 {
            return Err(Counter::PassFragNeeded);
        }
        let src = if to.listen_addr == [0; 4] {
            pkt.dst
        } else {
            to.listen_addr
        };
        let udp_len = pkt.udp_len + CD_LEN as u16;
        let eg = route(ctx, src, to.client_addr, udp_len + IP_LEN as u16)?;

        let old = words(pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.udp_len);
        let cd_hdr = {
            let c = to.channel.to_be_bytes();
            let l = payload.to_be_bytes();
            [c[0], c[1], l[0], l[1]]
        };
        let mut new_all = [0u8; 20];
        new_all[..16].copy_from_slice(&words(
            src,
            to.client_addr,
            cfg.listen_port,
            to.client_port,
            udp_len,
        ));
        new_all[16..].copy_from_slice(&cd_hdr);
        let check = csum::udp_update(pkt.check, &old, &new_all);
        let h = headers(
            &eg,
            pkt.tos,
            pkt.id,
            src,
            to.client_addr,
            cfg.listen_port,
            to.client_port,
            udp_len,
            check,
        );
        // SAFETY: grows the head by 4 bytes into the XDP headroom.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(CD_LEN as i32)) } != 0 {
            return Err(Counter::PassError);
        }
        let data = ctx.data();
        if data + HDRS + CD_LEN > ctx.data_end() {
            // Cannot happen (the packet only grew); the verifier wants it.
            return Ok(xdp_action::XDP_DROP);
        }
        // SAFETY: bounds checked above.
        unsafe {
            core::ptr::write_unaligned(data as *mut [u8; HDRS], h);
            core::ptr::write_unaligned((data + HDRS) as *mut [u8; CD_LEN], cd_hdr);
        }
        count(Counter::ToClientPackets, 1);
        count(Counter::ToClientBytes, u64::from(payload));
        Ok(send(ctx, &eg))
    }

    /// The IPv6 half: the same two rewrites over Ethernet + IPv6 (no
    /// extension headers) + UDP.
    ///
    /// Addresses are handled as four native-order `u32` words, never as
    /// byte arrays: LLVM splits a `[u8; 16]` into sixteen scalars and the
    /// spills overflow the 512-byte stack. The one's-complement sum is
    /// byte-order independent (RFC 1071 §2(B)), so checksum words are added
    /// in native order and the result swapped back once.
    mod v6 {
        use super::*;

        pub(super) const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
        const IP6_LEN: usize = 40;
        /// Ethernet + IPv6 without extension headers + UDP.
        const HDRS6: usize = ETH_LEN + IP6_LEN + UDP_LEN;
        const AF_INET6: u8 = 10;
        /// Hop limit of datagrams the relay originates, as the kernel's default.
        const HOP_LIMIT: u8 = 64;
        /// Next-header values of extension headers (hop-by-hop, routing,
        /// fragment, destination options).
        const EXT_HEADERS: [u8; 4] = [0, 43, 44, 60];

        /// An IPv6 address as it lies in memory, read as native `u32`s.
        type Addr = [u32; 4];

        /// The fields of an Ethernet + IPv6 + UDP datagram the fast path uses.
        struct Udp6 {
            /// First two bytes of the IPv6 header (version, traffic class).
            vtc: [u8; 2],
            src: Addr,
            dst: Addr,
            sport: u16,
            dport: u16,
            /// UDP length (header included), equal to the payload length.
            udp_len: u16,
            check: u16,
        }

        #[inline(always)]
        fn load(a: &[u8; 16]) -> Addr {
            // SAFETY: 16 readable bytes; unaligned read.
            unsafe { core::ptr::read_unaligned(a.as_ptr() as *const Addr) }
        }

        #[inline(always)]
        fn bytes(a: Addr) -> [u8; 16] {
            // SAFETY: same size, every bit pattern valid.
            unsafe { core::mem::transmute::<Addr, [u8; 16]>(a) }
        }

        #[inline(always)]
        fn eq(a: &Addr, b: &Addr) -> bool {
            a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
        }

        #[inline(always)]
        fn is_zero(a: &Addr) -> bool {
            a[0] | a[1] | a[2] | a[3] == 0
        }

        #[inline(always)]
        fn parse(ctx: &XdpContext) -> Result<Udp6, Counter> {
            let data = ctx.data();
            let end = ctx.data_end();
            if data + HDRS6 > end {
                return Err(Counter::PassNotUdp);
            }
            // SAFETY: bounds checked above, whole headers at once; read in
            // place rather than copied to the stack.
            let h = unsafe { &*(data as *const [u8; HDRS6]) };
            if h[14] >> 4 != 6 {
                return Err(Counter::PassNotIpv4);
            }
            let next = h[20];
            if next != IPPROTO_UDP {
                return Err(if EXT_HEADERS.contains(&next) {
                    Counter::PassIpOptionsOrFragment
                } else {
                    Counter::PassNotUdp
                });
            }
            let payload = be16(h, 18);
            let udp_len = be16(h, 58);
            let check = be16(h, 60);
            if usize::from(payload) < UDP_LEN
                || data + ETH_LEN + IP6_LEN + usize::from(payload) > end
                || udp_len != payload
                || check == 0
            {
                return Err(Counter::PassNotUdp);
            }
            // SAFETY: within the checked headers.
            let (src, dst) = unsafe {
                (
                    core::ptr::read_unaligned((data + 22) as *const Addr),
                    core::ptr::read_unaligned((data + 38) as *const Addr),
                )
            };
            Ok(Udp6 {
                vtc: [h[14], h[15]],
                src,
                dst,
                sport: be16(h, 54),
                dport: be16(h, 56),
                udp_len,
                check,
            })
        }

        #[inline(always)]
        pub(super) fn relay(ctx: &XdpContext) -> Result<u32, Counter> {
            let pkt = parse(ctx)?;
            let cfg = CONFIG.get(0).ok_or(Counter::PassNotRelayed)?;
            if cfg.listen_port == 0 {
                return Err(Counter::PassNotRelayed);
            }
            let listen = load(&cfg.listen_addr6);
            if cfg.listen_v6 != 0
                && pkt.dport == cfg.listen_port
                && (is_zero(&listen) || eq(&listen, &pkt.dst))
            {
                to_peer(ctx, &pkt)
            } else {
                to_client(ctx, &pkt, cfg.listen_port)
            }
        }

        #[inline(always)]
        fn route(ctx: &XdpContext, src: &Addr, dst: &Addr, total: u16) -> Result<Egress, Counter> {
            let mut params = FibParams(MaybeUninit::uninit());
            let p = super::fib_params(&mut params);
            p.family = AF_INET6;
            p.l4_protocol = IPPROTO_UDP;
            p.__bindgen_anon_1.tot_len = total;
            p.ifindex = ctx.ingress_ifindex() as u32;
            p.__bindgen_anon_3.ipv6_src = *src;
            p.__bindgen_anon_4.ipv6_dst = *dst;
            // SAFETY: the helper reads and writes `p`, whose size we pass.
            let rc = unsafe {
                fib_lookup(
                    ctx.ctx as *mut _,
                    p,
                    core::mem::size_of::<bpf_fib_lookup>() as i32,
                    0,
                )
            };
            if rc < 0 {
                return Err(Counter::PassNoRoute);
            }
            match rc as u32 {
                BPF_FIB_LKUP_RET_SUCCESS => Ok(Egress {
                    ifindex: p.ifindex,
                    smac: p.smac,
                    dmac: p.dmac,
                }),
                BPF_FIB_LKUP_RET_NO_NEIGH => Err(Counter::PassNoNeighbour),
                BPF_FIB_LKUP_RET_FWD_DISABLED => Err(Counter::PassForwardingDisabled),
                BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Counter::PassFragNeeded),
                _ => Err(Counter::PassNoRoute),
            }
        }

        /// A UDP datagram's addressing, as it leaves.
        struct Out {
            src: Addr,
            dst: Addr,
            sport: u16,
            dport: u16,
            udp_len: u16,
            check: u16,
        }

        /// Writes the Ethernet + IPv6 + UDP headers of a datagram the relay
        /// sends at `at`, in place. The traffic class is kept; the flow
        /// label is not (a new flow).
        ///
        /// # Safety
        /// `at..at + HDRS6` must be bounds-checked packet memory.
        #[inline(always)]
        unsafe fn put_headers(at: usize, eg: &Egress, vtc: [u8; 2], o: &Out) {
            let len = o.udp_len.to_be_bytes();
            let ip_start = [
                0x60 | (vtc[0] & 0x0f),
                vtc[1] & 0xf0,
                0,
                0,
                len[0],
                len[1],
                IPPROTO_UDP,
                HOP_LIMIT,
            ];
            let s = o.sport.to_be_bytes();
            let d = o.dport.to_be_bytes();
            let c = o.check.to_be_bytes();
            let udp = [s[0], s[1], d[0], d[1], len[0], len[1], c[0], c[1]];
            // SAFETY: within at..at + HDRS6, as the caller promises.
            unsafe {
                core::ptr::write_unaligned(at as *mut [u8; 6], eg.dmac);
                core::ptr::write_unaligned((at + 6) as *mut [u8; 6], eg.smac);
                core::ptr::write_unaligned((at + 12) as *mut [u8; 2], ETH_P_IPV6);
                core::ptr::write_unaligned((at + 14) as *mut [u8; 8], ip_start);
                core::ptr::write_unaligned((at + 22) as *mut Addr, o.src);
                core::ptr::write_unaligned((at + 38) as *mut Addr, o.dst);
                core::ptr::write_unaligned((at + 54) as *mut [u8; 8], udp);
            }
        }

        /// One 16-bit word in native (memory) order, or its complement.
        #[inline(always)]
        fn w(x: u16, neg: bool) -> u32 {
            u32::from(if neg { !x } else { x })
        }

        /// Adds (or with `neg`, removes) the words of an address.
        #[inline(always)]
        fn addr_words(mut sum: u32, a: &Addr, neg: bool) -> u32 {
            for x in a {
                sum += w(*x as u16, neg) + w((*x >> 16) as u16, neg);
            }
            sum
        }

        /// Adds (or removes) a datagram's checksum words other than its
        /// addresses and the constant next header: the pseudo-header and
        /// header lengths, the ports, and a ChannelData header's two words
        /// (zero when there is none). Host-order values are swapped into
        /// memory order.
        #[inline(always)]
        fn rest_words(sum: u32, o: &Out, cd: [u16; 2], neg: bool) -> u32 {
            let m = |x: u16| w(x.swap_bytes(), neg);
            sum + m(o.udp_len) + m(o.udp_len) + m(o.sport) + m(o.dport) + m(cd[0]) + m(cd[1])
        }

        /// RFC 1624 update of `check` from `old` (with ChannelData header
        /// `old_cd`) to `new` (with `new_cd`).
        #[inline(always)]
        fn update(check: u16, old: &Out, old_cd: [u16; 2], new: &Out, new_cd: [u16; 2]) -> u16 {
            let mut sum = u32::from(!check.swap_bytes());
            sum = addr_words(sum, &old.src, true);
            sum = addr_words(sum, &old.dst, true);
            sum = rest_words(sum, old, old_cd, true);
            sum = addr_words(sum, &new.src, false);
            sum = addr_words(sum, &new.dst, false);
            sum = rest_words(sum, new, new_cd, false);
            match (!csum::fold(sum)).swap_bytes() {
                0 => 0xffff,
                c => c,
            }
        }

        /// The incoming datagram's addressing.
        #[inline(always)]
        fn incoming(pkt: &Udp6) -> Out {
            Out {
                src: pkt.src,
                dst: pkt.dst,
                sport: pkt.sport,
                dport: pkt.dport,
                udp_len: pkt.udp_len,
                check: pkt.check,
            }
        }

        /// Client → peer: strip the ChannelData header.
        #[inline(never)]
        fn to_peer(ctx: &XdpContext, pkt: &Udp6) -> Result<u32, Counter> {
            let data = ctx.data();
            if data + HDRS6 + CD_LEN > ctx.data_end() {
                return Err(Counter::PassNotChannelData);
            }
            // SAFETY: bounds checked above.
            let cd = unsafe { core::ptr::read_unaligned((data + HDRS6) as *const [u8; CD_LEN]) };
            if cd[0] & 0xc0 != 0x40 {
                return Err(Counter::PassNotChannelData);
            }
            let channel = u16::from_be_bytes([cd[0], cd[1]]);
            let len = u16::from_be_bytes([cd[2], cd[3]]);
            // Over UDP the payload is exactly the channel data; anything
            // else is userspace's call.
            if u32::from(pkt.udp_len) != (UDP_LEN + CD_LEN) as u32 + u32::from(len) {
                return Err(Counter::PassBadLength);
            }
            let key = ToPeerKeyV6 {
                client_addr: bytes(pkt.src),
                client_port: pkt.sport,
                channel,
            };
            // SAFETY: a map value, valid for this run of the program.
            let to = unsafe { TO_PEER_V6.get(&key) }.ok_or(Counter::PassNoChannel)?;
            let relay_addr = load(&to.relay_addr);
            let mut out = Out {
                src: if is_zero(&relay_addr) {
                    pkt.dst
                } else {
                    relay_addr
                },
                dst: load(&to.peer_addr),
                sport: to.relay_port,
                dport: to.peer_port,
                udp_len: pkt.udp_len - CD_LEN as u16,
                check: 0,
            };
            let eg = route(ctx, &out.src, &out.dst, out.udp_len + IP6_LEN as u16)?;
            out.check = update(pkt.check, &incoming(pkt), [channel, len], &out, [0, 0]);
            // The new headers end where the payload starts, then the packet
            // start moves past the 4 bytes that are left over.
            // SAFETY: data + 4 + HDRS6 == data + HDRS6 + CD_LEN, checked above.
            unsafe { put_headers(data + CD_LEN, &eg, pkt.vtc, &out) };
            // SAFETY: shrinking the head by 4 bytes of a packet at least that long.
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, CD_LEN as i32) } != 0 {
                return Err(Counter::PassError);
            }
            count(Counter::ToPeerPackets, 1);
            count(Counter::ToPeerBytes, u64::from(len));
            Ok(send(ctx, &eg))
        }

        /// Peer → client: put a ChannelData header in front.
        #[inline(never)]
        fn to_client(ctx: &XdpContext, pkt: &Udp6, listen_port: u16) -> Result<u32, Counter> {
            let key = ToClientKeyV6 {
                peer_addr: bytes(pkt.src),
                peer_port: pkt.sport,
                relay_port: pkt.dport,
            };
            // SAFETY: a map value, valid for this run of the program.
            let to = unsafe { TO_CLIENT_V6.get(&key) }.ok_or(Counter::PassNotRelayed)?;
            let relay_addr = load(&to.relay_addr);
            if !is_zero(&relay_addr) && !eq(&relay_addr, &pkt.dst) {
                return Err(Counter::PassNotRelayed);
            }
            if pkt.udp_len > u16::MAX - CD_LEN as u16 {
                return Err(Counter::PassFragNeeded);
            }
            let payload = pkt.udp_len - UDP_LEN as u16;
            let listen_addr = load(&to.listen_addr);
            let mut out = Out {
                src: if is_zero(&listen_addr) {
                    pkt.dst
                } else {
                    listen_addr
                },
                dst: load(&to.client_addr),
                sport: listen_port,
                dport: to.client_port,
                udp_len: pkt.udp_len + CD_LEN as u16,
                check: 0,
            };
            let channel = to.channel;
            let eg = route(ctx, &out.src, &out.dst, out.udp_len + IP6_LEN as u16)?;
            out.check = update(pkt.check, &incoming(pkt), [0, 0], &out, [channel, payload]);
            let cd_hdr = {
                let c = channel.to_be_bytes();
                let l = payload.to_be_bytes();
                [c[0], c[1], l[0], l[1]]
            };
            // SAFETY: grows the head by 4 bytes into the XDP headroom.
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(CD_LEN as i32)) } != 0 {
                return Err(Counter::PassError);
            }
            let data = ctx.data();
            if data + HDRS6 + CD_LEN > ctx.data_end() {
                // Cannot happen (the packet only grew); the verifier wants it.
                return Ok(xdp_action::XDP_DROP);
            }
            // SAFETY: bounds checked above.
            unsafe {
                put_headers(data, &eg, pkt.vtc, &out);
                core::ptr::write_unaligned((data + HDRS6) as *mut [u8; CD_LEN], cd_hdr);
            }
            count(Counter::ToClientPackets, 1);
            count(Counter::ToClientBytes, u64::from(payload));
            Ok(send(ctx, &eg))
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// Host builds of this crate are empty: the program only exists for BPF.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
