//! The policy engine: pure functions over an in-memory [`Snapshot`] of the
//! store. No IO and no clock reads: callers pass `now`.
//!
//! - [`evaluate`] decides whether an actor's client may reach a resource,
//!   and until when.
//! - [`select_gateway`] picks the gateway that will serve a new flow.

mod conditions;
mod decision;
mod evaluate;
mod gateway_select;
mod ids;
mod snapshot;

pub use conditions::{Conditions, Schedule, SignInMethod, TimeWindow, Weekdays};
pub use decision::{Decision, DenyReason};
pub use evaluate::{AccessRequest, evaluate};
pub use gateway_select::{GatewayStatus, select_gateway};
pub use ids::{ActorId, GroupId, PolicyId, ServiceAccountId, UserId};
pub use snapshot::{Actor, Client, Policy, Snapshot};

#[cfg(test)]
mod tests;
