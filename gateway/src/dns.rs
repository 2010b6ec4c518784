//! DNS resources: a client answers names under a DNS resource with proxy
//! IPs of its choosing; the gateway resolves the names itself and
//! translates, for that client only, proxy IP ↔ real IP (nftables DNAT with
//! a `client . proxy → real` map, see `nat::dns_rules`).
//!
//! [`DnsTable`] is the sans-IO core (assignments, answers, time →
//! translations and next lookup); [`Resolver`] is the thin shell around
//! hickory-resolver.

mod resolver;
mod table;

pub use resolver::Resolver;
pub use table::{Answer, Desired, DnsTable, MAX_TTL, MIN_TTL, Pair, RETRY_AFTER_ERROR};
