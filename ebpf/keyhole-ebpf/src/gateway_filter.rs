//! The gateway's policy filter: a TC classifier on the tunnel interface's
//! ingress (decrypted client traffic heading to resources).
//!
//! The tunnel is an L3 device (TUN or WireGuard), so packets start at the IP
//! header. A packet passes only if its (source tunnel IP, destination IP,
//! protocol, destination port) matches a rule in the LPM tries; everything
//! else is dropped. Every packet increments exactly one verdict counter, and
//! an admitted one also its authorisation's counter.
//!
//! Headers are read with `bpf_skb_load_bytes`, whole header at a time: it
//! works on non-linear skbs and keeps the verifier out of variable-offset
//! packet pointer arithmetic (IPv4 options, IPv6 extension headers).
//!
//! Fragments: an IPv4 or IPv6 non-first fragment has no transport header; it
//! passes if the client may reach the destination with its protocol on any
//! port (`AllowedFragment`). The first fragment carries the ports and is
//! checked like any packet; a first fragment too short to hold them is
//! `Malformed`.
//!
//! IPv6 extension headers: hop-by-hop and destination options are skipped,
//! the fragment header is handled as above, up to [`MAX_EXT_HEADERS`]
//! headers. A routing header (it could steer the packet past the checked
//! destination) or a longer chain is dropped as `DeniedIpv6ExtHeader`.
//!
//! Lease: before anything else, a packet is dropped as `DeniedLeaseExpired`
//! once `bpf_ktime_get_ns` passes the deadline in `POLICY_LEASE`, which the
//! gateway keeps renewing. The program outlives a killed gateway (its link
//! is pinned); the lease makes it then drop everything (fail closed).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_SHOT},
        helpers::bpf_ktime_get_ns,
        macros::{classifier, map},
        maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
        programs::TcContext,
    };
    use keyhole_ebpf_common::policy::{
        AuthCounter, DEFAULT_MAX_ENTRIES, PROTO_ICMP, PolicyKeyV4, PolicyKeyV6, RuleSet, Verdict,
        matching::{Transport, decide},
    };

    /// IPv6 extension headers walked before giving up.
    const MAX_EXT_HEADERS: usize = 4;

    const ETH_P_IP: u16 = 0x0800;
    const ETH_P_IPV6: u16 = 0x86DD;
    const IPPROTO_TCP: u8 = 6;
    const IPPROTO_UDP: u8 = 17;
    const IPPROTO_ICMP: u8 = 1;
    const IPPROTO_ICMPV6: u8 = 58;
    const IPV6_HOPOPTS: u8 = 0;
    const IPV6_ROUTING: u8 = 43;
    const IPV6_FRAGMENT: u8 = 44;
    const IPV6_DSTOPTS: u8 = 60;

    #[map(name = "POLICY_V4")]
    static POLICY_V4: LpmTrie<PolicyKeyV4, RuleSet> =
        LpmTrie::with_max_entries(DEFAULT_MAX_ENTRIES, 0);

    #[map(name = "POLICY_V6")]
    static POLICY_V6: LpmTrie<PolicyKeyV6, RuleSet> =
        LpmTrie::with_max_entries(DEFAULT_MAX_ENTRIES, 0);

    #[map(name = "VERDICT_COUNTERS")]
    static VERDICT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Verdict::COUNT, 0);

    #[map(name = "AUTH_COUNTERS")]
    static AUTH_COUNTERS: PerCpuArray<AuthCounter> =
        PerCpuArray::with_max_entries(DEFAULT_MAX_ENTRIES, 0);

    #[map(name = "POLICY_LEASE")]
    static POLICY_LEASE: Array<u64> = Array::with_max_entries(1, 0);

    #[classifier]
    pub fn keyhole_policy(ctx: TcContext) -> i32 {
        let (verdict, slot) = if lease_expired() {
            (Verdict::DeniedLeaseExpired, None)
        } else {
            match classify(&ctx) {
                Ok(decision) => decision,
                Err(verdict) => (verdict, None),
            }
        };
        if let Some(counter) = VERDICT_COUNTERS.get_ptr_mut(verdict as u32) {
            // SAFETY: a per-CPU slot, only this CPU writes it while we run.
            unsafe { *counter += 1 };
        }
        if let Some(slot) = slot
            && let Some(counter) = AUTH_COUNTERS.get_ptr_mut(slot)
        {
            // SAFETY: as above.
            unsafe {
                (*counter).packets += 1;
                (*counter).bytes += u64::from(ctx.len());
            }
        }
        if verdict.passes() {
            TC_ACT_OK
        } else {
            TC_ACT_SHOT
        }
    }

    /// True once the gateway stopped renewing the lease (or never set it).
    #[inline(always)]
    fn lease_expired() -> bool {
        let deadline = POLICY_LEASE.get(0).copied().unwrap_or(0);
        // SAFETY: a helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        now > deadline
    }

    type Decision = Result<(Verdict, Option<u32>), Verdict>;

    #[inline(always)]
    fn classify(ctx: &TcContext) -> Decision {
        let proto = u16::from_be(ctx.skb.protocol() as u16);
        match proto {
            ETH_P_IP => classify_v4(ctx),
            ETH_P_IPV6 => classify_v6(ctx),
            _ => Err(Verdict::NotIp),
        }
    }

    #[inline(always)]
    fn classify_v4(ctx: &TcContext) -> Decision {
        let hdr: [u8; 20] = ctx.load(0).map_err(|_| Verdict::Malformed)?;
        if hdr[0] >> 4 != 4 {
            return Err(Verdict::Malformed);
        }
        let ihl = usize::from(hdr[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        if ihl < 20 || total < ihl || total > ctx.len() as usize {
            return Err(Verdict::Malformed);
        }
        let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
        let proto = hdr[9];
        let transport = if frag_offset != 0 {
            Transport::Fragment { proto }
        } else {
            match proto {
                IPPROTO_TCP | IPPROTO_UDP => ports(ctx, ihl, total, proto)?,
                IPPROTO_ICMP => icmp(ctx, ihl, total, 8)?,
                _ => Transport::Other,
            }
        };
        let key = Key::new(
            64,
            PolicyKeyV4 {
                client: [hdr[12], hdr[13], hdr[14], hdr[15]],
                dst: [hdr[16], hdr[17], hdr[18], hdr[19]],
            },
        );
        let set = POLICY_V4.get(&key).ok_or(Verdict::DeniedNoAuth)?;
        Ok(decide(set, transport))
    }

    #[inline(always)]
    fn classify_v6(ctx: &TcContext) -> Decision {
        let hdr: [u8; 40] = ctx.load(0).map_err(|_| Verdict::Malformed)?;
        if hdr[0] >> 4 != 6 {
            return Err(Verdict::Malformed);
        }
        let total = 40 + usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
        if total > ctx.len() as usize {
            return Err(Verdict::Malformed);
        }
        let mut next = hdr[6];
        let mut off = 40usize;
        let mut fragment = false;
        for _ in 0..MAX_EXT_HEADERS {
            match next {
                IPV6_HOPOPTS | IPV6_DSTOPTS => {
                    let ext: [u8; 2] = ctx.load(off).map_err(|_| Verdict::Malformed)?;
                    next = ext[0];
                    off += (usize::from(ext[1]) + 1) * 8;
                }
                IPV6_FRAGMENT => {
                    let frag: [u8; 4] = ctx.load(off).map_err(|_| Verdict::Malformed)?;
                    next = frag[0];
                    off += 8;
                    if u16::from_be_bytes([frag[2], frag[3]]) >> 3 != 0 {
                        fragment = true;
                        break;
                    }
                }
                IPV6_ROUTING => return Err(Verdict::DeniedIpv6ExtHeader),
                _ => break,
            }
        }
        let transport = if fragment {
            // Only ICMPv6 counts as ICMP here; ICMPv4 inside IPv6 is nonsense.
            let proto = match next {
                IPPROTO_ICMPV6 => PROTO_ICMP,
                IPPROTO_ICMP => 0,
                p => p,
            };
            Transport::Fragment { proto }
        } else {
            match next {
                IPPROTO_TCP | IPPROTO_UDP => ports(ctx, off, total, next)?,
                IPPROTO_ICMPV6 => icmp(ctx, off, total, 128)?,
                IPV6_HOPOPTS | IPV6_DSTOPTS | IPV6_ROUTING | IPV6_FRAGMENT => {
                    return Err(Verdict::DeniedIpv6ExtHeader);
                }
                _ => Transport::Other,
            }
        };
        let mut client = [0u8; 16];
        let mut dst = [0u8; 16];
        client.copy_from_slice(&hdr[8..24]);
        dst.copy_from_slice(&hdr[24..40]);
        let key = Key::new(256, PolicyKeyV6 { client, dst });
        let set = POLICY_V6.get(&key).ok_or(Verdict::DeniedNoAuth)?;
        Ok(decide(set, transport))
    }

    /// TCP and UDP both start with source and destination port.
    #[inline(always)]
    fn ports(ctx: &TcContext, off: usize, total: usize, proto: u8) -> Result<Transport, Verdict> {
        if off + 4 > total {
            return Err(Verdict::Malformed);
        }
        let p: [u8; 4] = ctx.load(off).map_err(|_| Verdict::Malformed)?;
        Ok(Transport::Port {
            proto,
            port: u16::from_be_bytes([p[2], p[3]]),
        })
    }

    #[inline(always)]
    fn icmp(ctx: &TcContext, off: usize, total: usize, echo: u8) -> Result<Transport, Verdict> {
        if off + 4 > total {
            return Err(Verdict::Malformed);
        }
        let h: [u8; 4] = ctx.load(off).map_err(|_| Verdict::Malformed)?;
        Ok(if h[0] == echo {
            Transport::IcmpEcho
        } else {
            Transport::IcmpOther
        })
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
