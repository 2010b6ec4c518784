//! Portal ↔ relay messages.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::ErrorReply;
use crate::{RelayId, TurnSecret, envelope::messages};

/// How busy a relay is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLoad {
    pub allocations: u32,
}

/// The relay announces where it can be reached. A request; answered by
/// `init`. At least one address is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRelayRegister")]
pub struct RelayRegister {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ipv4: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ipv6: Option<Ipv6Addr>,
    /// The STUN/TURN UDP port.
    pub port: u16,
    pub load: RelayLoad,
}

#[derive(Deserialize)]
struct RawRelayRegister {
    #[serde(default)]
    public_ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    public_ipv6: Option<Ipv6Addr>,
    port: u16,
    #[serde(default)]
    load: RelayLoad,
}

impl TryFrom<RawRelayRegister> for RelayRegister {
    type Error = &'static str;
    fn try_from(r: RawRelayRegister) -> Result<Self, Self::Error> {
        if r.public_ipv4.is_none() && r.public_ipv6.is_none() {
            return Err("a relay needs public_ipv4, public_ipv6 or both");
        }
        if r.port == 0 {
            return Err("relay port must not be 0");
        }
        Ok(Self {
            public_ipv4: r.public_ipv4,
            public_ipv6: r.public_ipv6,
            port: r.port,
            load: r.load,
        })
    }
}

/// Reply to `register`: the relay's id and the secret TURN credentials are
/// derived from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInit {
    pub relay_id: RelayId,
    pub turn_secret: TurnSecret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHeartbeat {
    pub load: RelayLoad,
}

messages! {
    /// Portal → relay.
    pub enum PortalToRelay {
        "init" => Init(RelayInit),
        "error" => Error(ErrorReply),
    }
}

messages! {
    /// Relay → portal.
    pub enum RelayToPortal {
        "register" => Register(RelayRegister),
        "heartbeat" => Heartbeat(RelayHeartbeat),
    }
}
