//! The gateway's eBPF policy filter: a TC classifier on the tunnel
//! interface's ingress that passes a client's packet only if an
//! authorisation admits it (default deny).
//!
//! [`PolicyTable`] is the sans-IO core (push-down of covering prefixes into
//! LPM trie entries, counter slots, validation); [`PolicyFilter`] loads the
//! program, attaches it and writes the table's plans to the kernel maps.

mod authorization;
mod counters;
mod error;
mod filter;
mod keys;
mod lease;
mod pin;
mod slots;
mod table;

pub use authorization::{Authorization, AuthorizationId, PortRange, Protocol};
pub use counters::{AuthorizationCounters, VerdictCounters};
pub use error::PolicyError;
pub use filter::PolicyFilter;
pub use keyhole_ebpf_common::policy::Verdict;
pub use lease::{LEASE, RENEW_EVERY};
pub use pin::DEFAULT_PIN_DIR;
pub use table::{Change, EntryKey, MapOp, PolicyTable};

/// The compiled eBPF object holding the gateway's programs.
pub static GATEWAY_EBPF: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keyhole-gateway-filter"));
