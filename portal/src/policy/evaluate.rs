//! Policy evaluation: default deny; allow if any enabled policy of any of
//! the actor's groups grants the resource and all its conditions hold.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use keyhole_proto::{ClientId, ResourceId};

use super::{ActorId, Decision, DenyReason, Policy, SignInMethod, Snapshot};

/// Everything a decision depends on besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest {
    pub actor: ActorId,
    pub client: ClientId,
    pub resource: ResourceId,
    pub now: DateTime<Utc>,
    /// The client's address as the portal sees it.
    pub remote_ip: IpAddr,
    pub sign_in_method: SignInMethod,
    /// When the session's token expires (`None`: it does not).
    pub token_expiry: Option<DateTime<Utc>>,
}

/// Decide `req` against `snapshot`.
///
/// When several policies are satisfied, the one giving the latest expiry
/// wins (ties: lowest id). When none is, the reason names the first failing
/// condition of the first enabled policy in id order, checking sign-in
/// method, then source address, then time window.
pub fn evaluate(snapshot: &Snapshot, req: &AccessRequest) -> Decision {
    match check(snapshot, req) {
        Ok((policy_id, expires_at)) => Decision::Allow {
            policy_id,
            expires_at,
        },
        Err(reason) => Decision::Deny { reason },
    }
}

type Grant = (super::PolicyId, Option<DateTime<Utc>>);

fn check(snapshot: &Snapshot, req: &AccessRequest) -> Result<Grant, DenyReason> {
    snapshot
        .resource(req.resource)
        .ok_or(DenyReason::ResourceUnknown)?;
    let actor = snapshot.actor(req.actor).ok_or(DenyReason::ActorUnknown)?;
    if actor.disabled {
        return Err(DenyReason::ActorDisabled);
    }
    let client = snapshot
        .client(req.client)
        .ok_or(DenyReason::ClientUnknown)?;
    if client.owner != req.actor {
        return Err(DenyReason::ClientNotOwned);
    }
    if client.disabled {
        return Err(DenyReason::ClientDisabled);
    }
    if req.token_expiry.is_some_and(|t| t <= req.now) {
        return Err(DenyReason::TokenExpired);
    }

    let mut best: Option<Grant> = None;
    let mut first_violation: Option<DenyReason> = None;
    let mut first_disabled: Option<DenyReason> = None;
    for policy in snapshot.policies_for(req.actor, req.resource) {
        if !policy.enabled {
            first_disabled.get_or_insert(DenyReason::PolicyDisabled {
                policy_id: policy.id,
            });
            continue;
        }
        match conditions_hold(policy, req) {
            Ok(window_end) => {
                let expiry = earliest(req.token_expiry, window_end);
                if best.is_none_or(|(_, b)| later(expiry, b)) {
                    best = Some((policy.id, expiry));
                }
            }
            Err(reason) => {
                first_violation.get_or_insert(reason);
            }
        }
    }
    if let Some(grant) = best {
        return Ok(grant);
    }
    Err(first_violation
        .or(first_disabled)
        .unwrap_or(DenyReason::NoPolicy))
}

/// `Ok(window end)` if all conditions hold.
fn conditions_hold(
    policy: &Policy,
    req: &AccessRequest,
) -> Result<Option<DateTime<Utc>>, DenyReason> {
    let c = &policy.conditions;
    let policy_id = policy.id;
    if !c.sign_in_allowed(req.sign_in_method) {
        return Err(DenyReason::SignInMethodNotAllowed { policy_id });
    }
    if !c.source_allowed(req.remote_ip) {
        return Err(DenyReason::SourceIpNotAllowed { policy_id });
    }
    match &c.schedule {
        None => Ok(None),
        Some(s) => s
            .window_end(req.now)
            .map(Some)
            .ok_or(DenyReason::OutsideTimeWindow { policy_id }),
    }
}

/// The earlier of two optional deadlines (`None` is "never").
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Whether deadline `a` is strictly later than `b` (`None` is "never").
fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        (_, None) => false,
    }
}
