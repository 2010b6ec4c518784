//! The outcome of a policy evaluation.

use std::fmt;

use chrono::{DateTime, Utc};

use super::PolicyId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Access granted by `policy_id` until `expires_at` (`None`: until
    /// revoked; the caller caps it with its own maximum flow lifetime).
    Allow {
        policy_id: PolicyId,
        expires_at: Option<DateTime<Utc>>,
    },
    Deny {
        reason: DenyReason,
    },
}

/// Why access was denied: the first check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No such resource (deleted or never existed).
    ResourceUnknown,
    /// No such user or service account (deleted or never existed).
    ActorUnknown,
    ActorDisabled,
    /// No such client (deleted or never existed).
    ClientUnknown,
    ClientDisabled,
    /// The client belongs to someone else.
    ClientNotOwned,
    /// The session's token has expired.
    TokenExpired,
    /// No policy grants the resource to any of the actor's groups.
    NoPolicy,
    /// Policies exist, but all are disabled.
    PolicyDisabled {
        policy_id: PolicyId,
    },
    /// Enabled policies exist; the first one's (by id) failed condition:
    OutsideTimeWindow {
        policy_id: PolicyId,
    },
    SourceIpNotAllowed {
        policy_id: PolicyId,
    },
    SignInMethodNotAllowed {
        policy_id: PolicyId,
    },
}

impl DenyReason {
    /// A stable snake_case name for logs, metrics and the flow log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ResourceUnknown => "resource_unknown",
            Self::ActorUnknown => "actor_unknown",
            Self::ActorDisabled => "actor_disabled",
            Self::ClientUnknown => "client_unknown",
            Self::ClientDisabled => "client_disabled",
            Self::ClientNotOwned => "client_not_owned",
            Self::TokenExpired => "token_expired",
            Self::NoPolicy => "no_policy",
            Self::PolicyDisabled { .. } => "policy_disabled",
            Self::OutsideTimeWindow { .. } => "outside_time_window",
            Self::SourceIpNotAllowed { .. } => "source_ip_not_allowed",
            Self::SignInMethodNotAllowed { .. } => "sign_in_method_not_allowed",
        }
    }

    /// The policy whose condition failed, if the reason is about one.
    pub fn policy_id(&self) -> Option<PolicyId> {
        match self {
            Self::PolicyDisabled { policy_id }
            | Self::OutsideTimeWindow { policy_id }
            | Self::SourceIpNotAllowed { policy_id }
            | Self::SignInMethodNotAllowed { policy_id } => Some(*policy_id),
            _ => None,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())?;
        if let Some(p) = self.policy_id() {
            write!(f, " (policy {p})")?;
        }
        Ok(())
    }
}
