//! Types of the gateway's policy filter maps.
//!
//! The filter holds two LPM tries, [`POLICY_V4_MAP`] and [`POLICY_V6_MAP`],
//! keyed by `client tunnel IP ++ destination prefix`: the key's prefix length
//! is the full client address length plus the destination prefix length, so
//! one lookup with a full-length key finds the most specific authorised
//! prefix of that client. Each entry's [`RuleSet`] carries the rules of its
//! own prefix followed by those of every covering prefix of the same client
//! (userspace "pushes them down"), so the single entry an LPM lookup returns
//! is enough to decide.

/// Name of the IPv4 LPM trie (`LpmTrie<PolicyKeyV4, RuleSet>`).
pub const POLICY_V4_MAP: &str = "POLICY_V4";
/// Name of the IPv6 LPM trie (`LpmTrie<PolicyKeyV6, RuleSet>`).
pub const POLICY_V6_MAP: &str = "POLICY_V6";
/// Name of the per-verdict counters (`PerCpuArray<u64>`, indexed by [`Verdict`]).
pub const VERDICT_COUNTERS_MAP: &str = "VERDICT_COUNTERS";
/// Name of the per-authorisation counters (`PerCpuArray<AuthCounter>`,
/// indexed by [`Rule::slot`]).
pub const AUTH_COUNTERS_MAP: &str = "AUTH_COUNTERS";
/// Name of the lease (`Array<u64>`, one entry): the `CLOCK_MONOTONIC`
/// time in ns (`bpf_ktime_get_ns`) until which the filter decides; after
/// it, everything is dropped. The gateway keeps pushing it forward, so a
/// dead gateway's pinned filter fails closed.
pub const LEASE_MAP: &str = "POLICY_LEASE";

/// Default capacity of each trie and of the counter slots; userspace may
/// resize the maps before loading.
pub const DEFAULT_MAX_ENTRIES: u32 = 131_072;

/// Rules one trie entry can hold (its own plus pushed-down ones).
pub const MAX_RULES: usize = 16;

/// [`Rule::proto`] matching TCP (IP protocol number).
pub const PROTO_TCP: u8 = 6;
/// [`Rule::proto`] matching UDP.
pub const PROTO_UDP: u8 = 17;
/// [`Rule::proto`] matching ICMP echo requests: ICMPv4 type 8 in the v4
/// trie, ICMPv6 type 128 in the v6 trie.
pub const PROTO_ICMP: u8 = 1;
/// [`Rule::proto`] matching every protocol and port (255 is reserved by IANA,
/// so it never appears in a packet).
pub const PROTO_ANY: u8 = 255;

/// Key data of the IPv4 trie: prefix length is `32 + destination prefix`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKeyV4 {
    /// The client's tunnel address, network byte order.
    pub client: [u8; 4],
    /// The destination prefix (host bits zero), network byte order.
    pub dst: [u8; 4],
}

/// Key data of the IPv6 trie: prefix length is `128 + destination prefix`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKeyV6 {
    /// The client's tunnel address, network byte order.
    pub client: [u8; 16],
    /// The destination prefix (host bits zero), network byte order.
    pub dst: [u8; 16],
}

/// One authorisation as the kernel sees it: 12 bytes, no padding holes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Index into the authorisation counters.
    pub slot: u32,
    /// First destination port allowed (TCP/UDP only), host byte order.
    pub port_lo: u16,
    /// Last destination port allowed, inclusive, host byte order.
    pub port_hi: u16,
    /// One of the `PROTO_*` constants.
    pub proto: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}

/// The value of a trie entry: `len` valid rules, most specific prefix first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleSet {
    /// Number of valid entries in `rules` (at most [`MAX_RULES`]).
    pub len: u32,
    /// The rules; entries past `len` are zero and ignored.
    pub rules: [Rule; MAX_RULES],
}

/// Per-authorisation traffic counters (one per CPU in the map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthCounter {
    /// Packets allowed by this authorisation.
    pub packets: u64,
    /// Bytes of those packets, IP header included.
    pub bytes: u64,
}

/// What the filter decided about a packet; the index of its counter in
/// [`VERDICT_COUNTERS_MAP`]. Every packet increments exactly one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Passed: a rule matched protocol and port (or ICMP echo request).
    Allowed = 0,
    /// Passed: a non-first fragment matching client, prefix and protocol
    /// (its ports are unknown).
    AllowedFragment = 1,
    /// Dropped: no authorisation for this client and destination.
    DeniedNoAuth = 2,
    /// Dropped: the client may reach the destination, but not with this
    /// protocol or port.
    DeniedPortOrProto = 3,
    /// Dropped: ICMP other than echo request, with no `any` rule.
    DeniedIcmpType = 4,
    /// Dropped: an IPv6 routing header, or more extension headers than the
    /// filter walks.
    DeniedIpv6ExtHeader = 5,
    /// Dropped: truncated or inconsistent IP or transport header.
    Malformed = 6,
    /// Dropped: not IPv4 or IPv6.
    NotIp = 7,
    /// Dropped: the lease ran out (the gateway stopped renewing it).
    DeniedLeaseExpired = 8,
}

impl Verdict {
    /// Number of verdicts (the length of the verdict counter map).
    pub const COUNT: u32 = 9;
    /// Every verdict, in counter-index order.
    pub const ALL: [Verdict; Self::COUNT as usize] = [
        Verdict::Allowed,
        Verdict::AllowedFragment,
        Verdict::DeniedNoAuth,
        Verdict::DeniedPortOrProto,
        Verdict::DeniedIcmpType,
        Verdict::DeniedIpv6ExtHeader,
        Verdict::Malformed,
        Verdict::NotIp,
        Verdict::DeniedLeaseExpired,
    ];

    /// Whether packets with this verdict pass.
    pub const fn passes(self) -> bool {
        matches!(self, Verdict::Allowed | Verdict::AllowedFragment)
    }
}

// The kernel and userspace must agree on these sizes byte for byte.
const _: () = assert!(core::mem::size_of::<Rule>() == 12);
const _: () = assert!(core::mem::size_of::<RuleSet>() == 4 + 12 * MAX_RULES);
const _: () = assert!(core::mem::size_of::<PolicyKeyV4>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyKeyV6>() == 32);
const _: () = assert!(core::mem::size_of::<AuthCounter>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)], Copy, made of integers and byte arrays
    // with no implicit padding (checked by the size asserts above), so every
    // bit pattern is valid.
    unsafe impl aya::Pod for PolicyKeyV4 {}
    unsafe impl aya::Pod for PolicyKeyV6 {}
    unsafe impl aya::Pod for Rule {}
    unsafe impl aya::Pod for RuleSet {}
    unsafe impl aya::Pod for AuthCounter {}
}

pub mod matching;
