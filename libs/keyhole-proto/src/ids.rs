//! Identifiers shared by every component: UUIDs with a type per entity so
//! that a gateway id can never be passed where a client id is expected.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            pub const fn from_u128(v: u128) -> Self {
                Self(Uuid::from_u128(v))
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A published Resource (DNS name/pattern, IP, CIDR or the Internet).
    ResourceId
);
uuid_id!(
    /// A Client device.
    ClientId
);
uuid_id!(
    /// A Gateway instance.
    GatewayId
);
uuid_id!(
    /// A Site: a network location with Gateways and Resources.
    SiteId
);
uuid_id!(
    /// One authorised (client, resource, gateway) flow.
    FlowId
);
uuid_id!(
    /// A Relay (STUN/TURN server).
    RelayId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_serializes_as_plain_uuid_string() {
        let id = ClientId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"01234567-89ab-cdef-0123-456789abcdef\"");
        assert_eq!(serde_json::from_str::<ClientId>(&json).unwrap(), id);
        assert_eq!(json.trim_matches('"').parse::<ClientId>().unwrap(), id);
    }

    #[test]
    fn bad_uuid_is_an_error() {
        assert!(serde_json::from_str::<ClientId>("\"not-a-uuid\"").is_err());
        assert!(serde_json::from_str::<ClientId>("42").is_err());
    }
}
