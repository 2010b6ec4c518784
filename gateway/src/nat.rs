//! Source NAT toward resources with nftables: authorised clients' traffic
//! leaves the gateway with the gateway's address, so resources need no
//! route back to the tunnel ranges.
//!
//! The gateway owns exactly one table (`inet keyhole_gw` by default) and
//! touches nothing else in the ruleset. [`ruleset`] builds the nftables
//! JSON batches (pure, unit-tested); [`GatewayNat`] applies them through
//! `nft -j -f -` (the `nftables` crate) and keeps the set of NATed clients.

pub mod dns_rules;
mod gateway_nat;
pub mod ruleset;

pub use gateway_nat::{GatewayNat, NatError, NftCommand};
pub use ruleset::NatConfig;
