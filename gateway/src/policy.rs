//! Userspace side of the eBPF policy filter.

/// The compiled eBPF object holding the gateway's programs.
pub static GATEWAY_EBPF: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keyhole-gateway-filter"));
